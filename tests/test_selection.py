"""select_model: the right K on clear data, a full table, exact criteria, failures, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES

import fastem
from fastem import ConvergenceWarning, GaussianMixture, ModelSelection, select_model
from fastem import selection as selection_module
from fastem.datasets import make_mixture

KEYS = {
    "n_components", "covariance_type", "bic", "aic", "icl", "log_likelihood",
    "n_parameters", "converged", "n_iter", "error",
}  # fmt: skip


@pytest.fixture(scope="module")
def three():
    """Three well-separated components in 2-D."""
    return make_mixture(1500, 2, 3, random_state=2)[0]


@pytest.fixture(scope="module")
def grid(three):
    return select_model(three, range(1, 7), random_state=0)


@pytest.fixture
def degenerate():
    """A Gaussian blob plus one point repeated: with reg_covar=0 that component is singular."""
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(size=(50, 2)), np.tile([[5.0, 5.0]], (20, 1))])


def _row(selection: ModelSelection, k: int, ct: str) -> dict:
    (row,) = [r for r in selection.table if r["n_components"] == k and r["covariance_type"] == ct]
    return row


def test_bic_picks_three_components(grid):
    assert grid.best_params_["n_components"] == 3
    assert isinstance(grid.best_, GaussianMixture) and grid.best_.n_components == 3
    assert grid.best_.covariance_type == grid.best_params_["covariance_type"]
    assert grid.criterion == "bic"
    best = grid.table[grid.best_index_]
    assert best["bic"] == min(r["bic"] for r in grid.table)


def test_table_has_every_candidate(grid):
    assert [(r["n_components"], r["covariance_type"]) for r in grid.table] == [
        (k, ct) for k in range(1, 7) for ct in COVARIANCE_TYPES
    ]
    for row in grid.table:
        assert set(row) == KEYS
        assert row["error"] is None
        assert isinstance(row["converged"], bool) and row["n_iter"] >= 1
        model = grid.models_[(row["n_components"], row["covariance_type"])]
        assert row["n_parameters"] == model._n_parameters()


def test_bic_equals_the_models_bic_and_a_refit_from_the_same_start(three, grid):
    for row in grid.table:
        model = grid.models_[(row["n_components"], row["covariance_type"])]
        assert row["bic"] == model.bic(three)
        assert row["aic"] == model.aic(three)
        # The candidate carries its start as *_init parameters: a refit reproduces it exactly.
        refit = GaussianMixture(**model.get_params()).fit(three)
        assert refit.bic(three) == row["bic"]
    assert grid.best_.bic(three) == grid.table[grid.best_index_]["bic"]


def test_log_likelihood_is_the_total_over_rows(three, grid):
    for row in grid.table[:8]:
        model = grid.models_[(row["n_components"], row["covariance_type"])]
        assert math.isclose(row["log_likelihood"], model.score_samples(three).sum(), rel_tol=1e-12)


def test_icl_is_at_least_bic(grid):
    for row in grid.table:
        assert row["icl"] >= row["bic"]
        if row["n_components"] == 1:
            assert row["icl"] == row["bic"]  # one component: no assignment uncertainty


def _map_icl(model: GaussianMixture, X: np.ndarray, w=None) -> float:
    """mclust's ICL, lower-is-better: BIC - 2 sum_i w_i log z_{i, argmax_k z_ik}."""
    z = model.predict_proba(X).astype(np.float64)
    w = np.ones(X.shape[0]) if w is None else w
    return model.bic(X) - 2.0 * float(w @ np.log(z.max(axis=1)))


def test_icl_is_mclusts_map_classification_likelihood(three, grid):
    for row in grid.table:
        model = grid.models_[(row["n_components"], row["covariance_type"])]
        assert math.isclose(row["icl"], _map_icl(model, three), rel_tol=1e-12)


def test_icl_finds_the_true_k_where_entropy_icl_does_not():
    # Four components, two of them overlapping: the soft entropy penalty (ICL-BIC of
    # McLachlan & Peel) merges them into three; the MAP classification term does not.
    X = make_mixture(1500, 2, 4, random_state=3)[0]
    selection = select_model(X, range(1, 7), ["full", "diag"], criterion="icl", random_state=0)
    assert selection.best_params_ == {"n_components": 4, "covariance_type": "full"}

    def entropy_icl(row):
        z = selection.models_[(row["n_components"], row["covariance_type"])].predict_proba(X)
        return row["bic"] - 2.0 * float(np.sum(z * np.log(np.where(z > 0, z, 1.0))))

    by_entropy = min(selection.table, key=entropy_icl)
    assert (by_entropy["n_components"], by_entropy["covariance_type"]) == (3, "full")


def test_criteria_do_not_depend_on_the_block_size(three, grid, monkeypatch):
    from fastem import mixture

    monkeypatch.setattr(mixture, "_PREDICT_BLOCK_ELEMENTS", 3)  # 1024-row blocks: two of them
    ones = np.ones(three.shape[0])
    for row in grid.table[8:14]:
        model = grid.models_[(row["n_components"], row["covariance_type"])]
        blocked = selection_module._criteria(model, three, ones, weighted=False)
        assert blocked["bic"] == row["bic"] and blocked["aic"] == row["aic"]
        assert math.isclose(blocked["icl"], row["icl"], rel_tol=1e-12)
        assert math.isclose(blocked["log_likelihood"], row["log_likelihood"], rel_tol=1e-12)


def test_criteria_compute_the_log_probabilities_once(three, grid, monkeypatch):
    model = grid.models_[(3, "full")]
    passes = []
    original = GaussianMixture._log_prob_blocks

    def counting(self, X):
        passes.append(X.shape[0])
        return original(self, X)

    monkeypatch.setattr(GaussianMixture, "_log_prob_blocks", counting)
    selection_module._criteria(model, three, np.ones(three.shape[0]), weighted=False)
    assert passes == [three.shape[0]]


@pytest.mark.parametrize("criterion", ["aic", "icl"])
def test_other_criteria_rank_by_their_column(three, criterion):
    selection = select_model(three, [1, 2, 3, 4], criterion=criterion, random_state=0)
    assert selection.criterion == criterion
    best = selection.table[selection.best_index_]
    assert best[criterion] == min(r[criterion] for r in selection.table)
    assert selection.best_params_["n_components"] == best["n_components"]


def test_covariance_types_share_one_initialization_per_k(three, monkeypatch):
    calls = []
    original = selection_module.initial_stats

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(selection_module, "initial_stats", counting)
    selection = select_model(three, [2, 3], n_init=2, random_state=0)
    assert calls == [2, 2, 3, 3]  # once per K and restart, not per covariance type
    for k in (2, 3):
        models = [selection.models_[(k, ct)] for ct in COVARIANCE_TYPES]
        for model in models[1:]:  # weights and means come from the same partition
            np.testing.assert_array_equal(model.weights_init, models[0].weights_init)
            np.testing.assert_array_equal(model.means_init, models[0].means_init)


def test_n_init_keeps_the_best_restart(three):
    one = select_model(three, [4], ["full"], random_state=3)
    five = select_model(three, [4], ["full"], n_init=5, random_state=3)
    assert five.best_.lower_bound_ >= one.best_.lower_bound_ - 1e-12


def test_same_seed_same_table(three):
    a = select_model(three, [2, 3], ["full", "spherical"], random_state=5)
    b = select_model(three, [2, 3], ["full", "spherical"], random_state=5)
    assert a.table == b.table


def test_failed_candidates_are_reported(degenerate):
    selection = select_model(degenerate, [1, 2, 3], reg_covar=0.0, random_state=0)
    failed = [r for r in selection.table if r["error"] is not None]
    assert failed, "expected singular candidates"
    for row in failed:
        assert "ill-defined covariance" in row["error"]
        assert row["bic"] is None and row["icl"] is None and row["converged"] is None
        assert (row["n_components"], row["covariance_type"]) not in selection.models_
    assert selection.table[selection.best_index_]["error"] is None
    assert len(selection.table) == 12
    text = selection.to_text()
    assert "ill-define" in text


def test_all_candidates_failing_raises(degenerate):
    with pytest.raises(ValueError, match="all 2 candidates failed"):
        select_model(degenerate, [2, 3], ["full"], reg_covar=0.0, random_state=0)


def test_sample_weight_counts_rows(three):
    w = np.random.default_rng(0).integers(1, 4, size=three.shape[0])
    weighted = select_model(three, [2, 3], ["full", "diag"], sample_weight=w, random_state=0)
    repeated = select_model(np.repeat(three, w, axis=0), [2, 3], ["full", "diag"], random_state=0)
    for a, b in zip(weighted.table, repeated.table, strict=True):
        for key in ("bic", "aic", "icl", "log_likelihood"):
            assert math.isclose(a[key], b[key], rel_tol=1e-6), key


def test_float32_data(three):
    selection = select_model(three.astype(np.float32), [2, 3], random_state=0)
    assert selection.best_.means_.dtype == np.float32
    assert selection.best_params_["n_components"] == 3


def test_single_values_and_params_are_passed_on(three):
    selection = select_model(three, 3, "diag", tol=1e-6, max_iter=500, backend="numpy")
    assert [(r["n_components"], r["covariance_type"]) for r in selection.table] == [(3, "diag")]
    assert selection.best_.tol == 1e-6 and selection.best_.backend == "numpy"


def test_best_model_not_converged_warns(three):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        selection = select_model(three, [3], ["full"], max_iter=1, random_state=0)
    assert selection.table[0]["converged"] is False


def test_missing_values_go_to_the_estimator(three, monkeypatch):
    X = three.copy()
    X[::7, 0] = np.nan
    calls = []
    original = selection_module.initial_stats
    monkeypatch.setattr(
        selection_module, "initial_stats", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    # The numpy backend is the reference for missing-data kernels.
    selection = select_model(X, [2, 3], ["full", "diag"], random_state=0, backend="numpy")
    assert calls == []  # no shared k-means start on data with missing values
    assert all(r["error"] is None for r in selection.table)
    for row in selection.table:
        model = selection.models_[(row["n_components"], row["covariance_type"])]
        assert row["bic"] == model.bic(X) and np.isfinite(row["icl"])
        assert row["icl"] >= row["bic"]
    assert selection.best_params_["n_components"] == 3


def test_icl_with_missing_values_and_empty_rows(three):
    X = three.copy()
    X[::7, 0] = np.nan
    X[3::11, 1] = np.nan
    X[[5, 500, 900]] = np.nan  # nothing observed: responsibilities are the weights
    w = np.random.default_rng(1).integers(1, 4, size=X.shape[0]).astype(float)
    with pytest.warns(UserWarning, match="every value missing"):
        plain = select_model(X, [2, 3], ["full", "diag"], random_state=0, backend="numpy")
        weighted = select_model(
            X, [2, 3], ["diag"], sample_weight=w, random_state=0, backend="numpy"
        )
    for row in plain.table:
        model = plain.models_[(row["n_components"], row["covariance_type"])]
        assert row["bic"] == model.bic(X)
        assert math.isclose(row["icl"], _map_icl(model, X), rel_tol=1e-12)
    for row in weighted.table:
        model = weighted.models_[(row["n_components"], row["covariance_type"])]
        z = model.predict_proba(X)
        log_l = float(w @ model.score_samples(X))
        bic = -2.0 * log_l + model._n_parameters() * math.log(w.sum())
        assert math.isclose(row["bic"], bic, rel_tol=1e-12)
        assert math.isclose(row["icl"], bic - 2.0 * float(w @ np.log(z.max(axis=1))), rel_tol=1e-12)


def test_text_and_repr(grid):
    text = grid.to_text()
    lines = text.splitlines()
    assert len(lines) == 1 + len(grid.table) + 1
    assert lines[0].split()[:3] == ["K", "covariance", "BIC"]
    marked = [line for line in lines[1:-1] if line.startswith("*")]
    assert len(marked) == 1 and grid.best_params_["covariance_type"] in marked[0]
    assert len({len(line) for line in lines[1:-1]}) <= 2  # aligned columns (rstripped)
    assert str(grid) == text
    assert "best_params_" in repr(grid) and "n_candidates=24" in repr(grid)
    assert "n_components=3" in lines[-1]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_components": 0}, "n_components must be an integer >= 1"),
        ({"n_components": [1, -2]}, "n_components must be an integer >= 1"),
        ({"n_components": [2.5]}, "n_components must be an integer >= 1"),
        ({"n_components": [True]}, "n_components must be an integer >= 1"),
        ({"n_components": []}, "n_components is empty"),
        ({"n_components": "3"}, "n_components must be a positive integer or an iterable"),
        ({"n_components": [2, 40]}, r"n_components \[40\] exceed n_samples = 30"),
        ({"covariance_types": ["full", "banana"]}, "Invalid covariance type 'banana'"),
        ({"covariance_types": []}, "covariance_types is empty"),
        ({"criterion": "BIC?"}, "Invalid criterion"),
        ({"n_init": 0}, "n_init must be an integer >= 1"),
        ({"covariance_type": "full"}, "pass covariance_types"),
        ({"means_init": np.zeros((2, 2))}, "computes the initializations"),
        ({"warm_start": True}, "warm_start"),
        ({"reg_covar": -1.0}, "reg_covar"),
        ({"init_params": "magic"}, "init_params"),
        ({"backend": "gpu"}, "unknown backend"),
        ({"sample_weight": np.ones(3)}, "sample_weight"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_input(kwargs, match):
    X = np.random.default_rng(0).normal(size=(30, 2))
    kwargs = {"n_components": [1, 2], **kwargs}
    with pytest.raises(ValueError, match=match):
        select_model(X, **kwargs)


def test_k_above_positive_weights_is_rejected():
    X = np.random.default_rng(0).normal(size=(30, 2))
    w = np.zeros(30)
    w[:3] = 1.0
    with pytest.raises(ValueError, match=r"n_components \[4\] exceed the 3 rows"):
        select_model(X, [2, 4], sample_weight=w)


def test_bad_data_and_unknown_parameter():
    with pytest.raises(ValueError, match="Expected 2D array"):
        select_model(np.arange(10.0), [1])
    with pytest.raises(ValueError, match="infinity"):
        select_model(np.array([[1.0, np.inf], [2.0, 3.0], [0.0, 1.0]]), [1])
    with pytest.raises(TypeError, match="bogus"):
        select_model(np.random.default_rng(0).normal(size=(30, 2)), [1], bogus=3)


def test_exported():
    assert fastem.select_model is select_model and fastem.ModelSelection is ModelSelection
    assert {"select_model", "ModelSelection", "load"} <= set(fastem.__all__)
