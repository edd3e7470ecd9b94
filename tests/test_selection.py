"""select_model: the right K on clear data, a full table, exact criteria, failures, bad input."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES

import fastem
from fastem import ConvergenceWarning, GaussianMixture, ModelSelection, select_model
from fastem import selection as selection_module
from fastem.datasets import make_mixture

KEYS = {
    "n_components", "covariance_type", "bic", "aic", "icl", "log_likelihood",
    "n_parameters", "converged", "n_iter", "init", "error", "refined", "degenerate",
}  # fmt: skip


@pytest.fixture(scope="module")
def three():
    """Three well-separated components in 2-D."""
    return make_mixture(1500, 2, 3, random_state=2)[0]


@pytest.fixture(scope="module")
def grid(three):
    return select_model(three, range(1, 6), COVARIANCE_TYPES, init_params=HC, random_state=0)


@pytest.fixture
def degenerate():
    """A Gaussian blob plus one point repeated: with reg_covar=0 that component is singular."""
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(size=(50, 2)), np.tile([[5.0, 5.0]], (20, 1))])


# Tests of other things than the default start use the hc tree alone (cheaper than 'best').
HC = "hc"


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
        (k, ct) for k in range(1, 6) for ct in COVARIANCE_TYPES
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
        # The candidate carries its start as *_init parameters: a refit reproduces a
        # screened candidate exactly, and a refined one (continued warm from its
        # screened fit) reaches the same maximum.
        refit = GaussianMixture(**model.get_params()).fit(three)
        if row["refined"]:
            # Aitken at tol=1e-8 per row: both within ~1e-8 per row of the maximum
            gap = 20 * three.shape[0] * model.tol
            assert refit.bic(three) == pytest.approx(row["bic"], rel=0, abs=gap)
        else:
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
    selection = select_model(
        X, range(1, 7), ["full", "diag"], criterion="icl", init_params=HC, random_state=0
    )
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
    selection = select_model(
        three, [1, 2, 3, 4], COVARIANCE_TYPES, criterion=criterion, init_params=HC, random_state=0
    )
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
    selection = select_model(three, [2, 3], COVARIANCE_TYPES, n_init=2, init_params="kmeans",
                             random_state=0)  # fmt: skip
    assert calls == [2, 2, 3, 3]  # once per K and restart, not per covariance type
    for k in (2, 3):
        models = [selection.models_[(k, ct)] for ct in COVARIANCE_TYPES]
        for model in models[1:]:  # weights and means come from the same partition
            np.testing.assert_array_equal(model.weights_init, models[0].weights_init)
            np.testing.assert_array_equal(model.means_init, models[0].means_init)


def test_n_init_keeps_the_best_restart(three):
    one = select_model(three, [4], ["full"], init_params="kmeans", random_state=3)
    five = select_model(three, [4], ["full"], init_params="kmeans", n_init=5, random_state=3)
    assert five.best_.lower_bound_ >= one.best_.lower_bound_ - 1e-12


def test_same_seed_same_table(three):
    a = select_model(three, [2, 3], ["full", "spherical"], init_params=HC, random_state=5)
    b = select_model(three, [2, 3], ["full", "spherical"], init_params=HC, random_state=5)
    assert a.table == b.table


def test_failed_candidates_are_reported(degenerate):
    selection = select_model(
        degenerate, [1, 2, 3], COVARIANCE_TYPES, reg_covar=0.0, init_params=HC, random_state=0
    )
    failed = [r for r in selection.table if r["error"] is not None]
    assert failed, "expected singular candidates"
    for row in failed:
        assert "ill-defined covariance" in row["error"]
        assert row["bic"] is None and row["icl"] is None and row["converged"] is None
        assert (row["n_components"], row["covariance_type"]) not in selection.models_
    assert selection.table[selection.best_index_]["error"] is None
    assert len(selection.table) == 12
    text = selection.to_text(layout="table")
    assert "ill-define" in text
    grid_text = selection.to_text()  # mclust's NA in the grid, the reasons below it
    assert "NA" in grid_text and "candidate(s) failed" in grid_text
    assert "ill-define" in grid_text


def test_all_candidates_failing_raises(degenerate):
    with pytest.raises(ValueError, match="all 2 candidates failed"):
        select_model(degenerate, [2, 3], ["full"], reg_covar=0.0, init_params=HC, random_state=0)


def test_sample_weight_counts_rows(three):
    w = np.random.default_rng(0).integers(1, 4, size=three.shape[0])
    weighted = select_model(
        three, [2, 3], ["full", "diag"], sample_weight=w, init_params=HC, random_state=0
    )
    repeated = select_model(
        np.repeat(three, w, axis=0), [2, 3], ["full", "diag"], init_params=HC, random_state=0
    )
    for a, b in zip(weighted.table, repeated.table, strict=True):
        for key in ("bic", "aic", "icl", "log_likelihood"):
            assert math.isclose(a[key], b[key], rel_tol=1e-6), key


def test_float32_data(three):
    selection = select_model(
        three.astype(np.float32), [2, 3], ["full", "VEI"], init_params=HC, random_state=0
    )
    assert selection.best_.means_.dtype == np.float32
    assert selection.best_params_["n_components"] == 3


def test_single_values_and_params_are_passed_on(three):
    selection = select_model(
        three, 3, "diag", tol=1e-6, max_iter=500, backend="numpy", init_params=HC
    )
    assert [(r["n_components"], r["covariance_type"]) for r in selection.table] == [(3, "diag")]
    assert selection.best_.tol == 1e-6 and selection.best_.backend == "numpy"


def test_best_model_not_converged_warns(three):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        selection = select_model(three, [3], ["full"], max_iter=1, init_params=HC, random_state=0)
    assert selection.table[0]["converged"] is False


def test_missing_values_share_starts_from_the_filled_copy(three, monkeypatch):
    X = three.copy()
    X[::7, 0] = np.nan
    calls = []
    original = selection_module.initial_stats
    monkeypatch.setattr(
        selection_module, "initial_stats", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    # The numpy backend is the reference for missing-data kernels.
    selection = select_model(
        X, [2, 3], ["full", "diag"], random_state=0, backend="numpy", tol=1e-4, max_iter=200,
        init_params="kmeans",
    )  # fmt: skip
    # One shared start per K, from X with NaN filled by column means (as GaussianMixture does).
    assert [a[2] for a in calls] == [2, 3]
    filled = calls[0][0]
    assert not np.isnan(filled).any()
    np.testing.assert_allclose(filled[::7, 0], np.nanmean(X[:, 0]), rtol=1e-12)
    assert all(r["error"] is None for r in selection.table)
    for row in selection.table:
        model = selection.models_[(row["n_components"], row["covariance_type"])]
        assert row["bic"] == model.bic(X) and np.isfinite(row["icl"])
        assert row["icl"] >= row["bic"]
    assert selection.best_params_["n_components"] == 3
    hc = select_model(
        X, [2, 3], ["VVV"], init_params="hc", random_state=0, backend="numpy", max_iter=5
    )
    assert hc.best_params_["n_components"] == 3 and hc.best_.init_params == "hc"


def test_icl_with_missing_values_and_empty_rows(three):
    X = three.copy()
    X[::7, 0] = np.nan
    X[3::11, 1] = np.nan
    X[[5, 500, 900]] = np.nan  # nothing observed: responsibilities are the weights
    w = np.random.default_rng(1).integers(1, 4, size=X.shape[0]).astype(float)
    with pytest.warns(UserWarning, match="every value missing"):
        light = {"random_state": 0, "backend": "numpy", "tol": 1e-4, "max_iter": 200,
                 "init_params": HC}  # fmt: skip
        plain = select_model(X, [2, 3], ["full", "diag"], **light)
        weighted = select_model(X, [2, 3], ["diag"], sample_weight=w, **light)
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


def test_long_table_and_repr(grid):
    text = grid.to_text(layout="table")
    lines = text.splitlines()
    assert len(lines) == 1 + len(grid.table) + 1
    assert lines[0].split()[:3] == ["K", "covariance", "BIC"]
    marked = [line for line in lines[1:-1] if line.startswith("*")]
    assert len(marked) == 1 and grid.best_params_["covariance_type"] in marked[0]
    assert len({len(line) for line in lines[1:-1]}) <= 2  # aligned columns (rstripped)
    assert "best_params_" in repr(grid) and "n_candidates=20" in repr(grid)
    assert "n_components=3" in lines[-1]


def _grid_cells(text: str) -> dict[tuple[int, str], str]:
    """(K, model) -> printed cell of a to_text() grid (every block of columns)."""
    cells: dict[tuple[int, str], str] = {}
    models: list[str] = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            models = []
            continue
        if line.startswith("Top "):
            break
        if not models:
            models = line.split()
            continue
        k, rest = line.split(maxsplit=1)
        values = re.findall(r"NA|-?\d+\.\d+(?: \(\d+\))?", rest)
        assert len(values) == len(models), line
        cells.update({(int(k), m): v for m, v in zip(models, values, strict=True)})
    return cells


def test_grid_text_is_mclusts_summary(grid):
    text = grid.to_text()
    assert str(grid) == text
    assert text.splitlines()[0].startswith("Bayesian Information Criterion (BIC")
    cells = _grid_cells(text)
    assert set(cells) == {(r["n_components"], r["covariance_type"]) for r in grid.table}
    ranking = grid.ranking()
    for row in grid.table:
        cell = cells[(row["n_components"], row["covariance_type"])]
        assert float(cell.split()[0]) == pytest.approx(row["bic"], abs=1e-3)
    # Exactly the best three are marked, in rank order; the same three are listed below.
    marked = {key: int(c.split("(")[1][:-1]) for key, c in cells.items() if "(" in c}
    expected = {(grid.table[i]["n_components"], grid.table[i]["covariance_type"]): r + 1
                for r, i in enumerate(ranking[:3])}  # fmt: skip
    assert marked == expected
    assert marked[(3, grid.best_params_["covariance_type"])] == 1
    top = text.split("Top 3 models based on the BIC criterion:")[1].split()
    assert top[:2] == ["(1)", f"{grid.best_params_['covariance_type']},3"]
    # A different criterion marks its own best three.
    icl = _grid_cells(grid.to_text(criterion="icl", top=2))
    assert sum("(" in c for c in icl.values()) == 2


def test_mclust_sign_negates_and_keeps_the_ranking(grid):
    ours = _grid_cells(grid.to_text())
    theirs = _grid_cells(grid.to_text(sign="mclust"))
    for key, cell in ours.items():
        assert float(theirs[key].split()[0]) == pytest.approx(-float(cell.split()[0]), abs=2e-3)
        assert ("(" in cell) == ("(" in theirs[key]) and cell[-3:] == theirs[key][-3:]
    assert "2 log L - p log n; larger is better" in grid.to_text(sign="mclust")
    ks, models, values = grid.grid(sign="mclust")
    row = grid.table[0]
    assert (
        values[ks.index(row["n_components"]), models.index(row["covariance_type"])] == -row["bic"]
    )
    with pytest.raises(ValueError, match="sign"):
        grid.to_text(sign="R")
    with pytest.raises(ValueError, match="layout"):
        grid.to_text(layout="wide")


def test_wide_grids_wrap_into_blocks(grid):
    narrow = grid.to_text(width=40)
    assert max(len(line) for line in narrow.split("Top")[0].splitlines()[1:]) <= 40
    assert _grid_cells(narrow) == _grid_cells(grid.to_text(width=None))


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


# ------------------------------------------------------- shared hc starts, names, defaults
@pytest.fixture(scope="module")
def small():
    return make_mixture(240, 2, 3, random_state=4)[0]


def _partition_start(X: np.ndarray, labels: np.ndarray, rows: np.ndarray, k: int):
    """Weights and means of a hard partition of X[rows]."""
    weights = np.bincount(labels, minlength=k) / labels.shape[0]
    means = np.array([X[rows][labels == g].mean(axis=0) for g in range(k)])
    return weights, means


def test_every_model_at_k_starts_from_the_hc_trees_cut(small):
    from fastem._hc import hc_tree

    models = ["EII", "VVI", "EEE", "VEV", "full"]
    selection = select_model(small, [2, 3, 4], models, init_params="hc", random_state=0, max_iter=5)
    tree = hc_tree(small)  # on 240 rows: every row, deterministic
    for k in (2, 3, 4):
        weights, means = _partition_start(small, tree.labels(k), tree.rows, k)
        for ct in models:
            model = selection.models_[(k, ct)]
            assert model.init_params == "hc"
            np.testing.assert_allclose(model.weights_init, weights, rtol=1e-6)
            np.testing.assert_allclose(model.means_init, means, rtol=1e-9, atol=1e-9)
    # Negative control: the comparison tells starts apart. K-means starts, and the tree's
    # cut at another K, are not this partition.
    weights, means = _partition_start(small, tree.labels(3), tree.rows, 3)
    kmeans = select_model(small, [3], ["VVV"], init_params="kmeans", random_state=0, max_iter=5)
    assert not np.allclose(np.sort(kmeans.best_.means_init, axis=0), np.sort(means, axis=0))
    w4, _ = _partition_start(small, tree.labels(4), tree.rows, 4)
    assert w4.shape != weights.shape


def test_one_hc_tree_serves_every_k_model_and_restart(small, monkeypatch):
    from fastem import _init

    trees = []
    original = _init.hc_tree
    monkeypatch.setattr(_init, "hc_tree", lambda *a, **k: trees.append(1) or original(*a, **k))
    select_model(
        small, [1, 2, 3, 4], ["EEI", "VVV"], n_init=3, init_params=HC, random_state=0, max_iter=3
    )
    assert len(trees) == 1  # 240 rows: the tree is deterministic, built once
    # More weight than the tree's 2,000 rows: a new subsample, so a new tree, per restart.
    heavy = np.full(small.shape[0], 10.0)
    plan = selection_module._start_plan(("hc", "emem"), 3, heavy)
    assert plan == [(0, "hc"), (0, "emem"), (1, "hc"), (1, "emem"), (2, "hc"), (2, "emem")]
    light = np.ones(small.shape[0])
    assert selection_module._start_plan(("hc", "emem"), 3, light) == [
        (0, "hc"), (0, "emem"), (1, "emem"), (2, "emem"),
    ]  # fmt: skip


def test_combined_starts_keep_the_better_fit(small):
    kw = {"random_state": 1, "max_iter": 200}
    both = select_model(small, [3, 4], ["VVV", "EEI"], init_params="hc+emem", **kw)
    hc = select_model(small, [3, 4], ["VVV", "EEI"], init_params="hc", **kw)
    emem = select_model(small, [3, 4], ["VVV", "EEI"], init_params="emem", **kw)
    for key, model in both.models_.items():
        bounds = {"hc": hc.models_[key].lower_bound_, "emem": emem.models_[key].lower_bound_}
        assert model.lower_bound_ == max(bounds.values())
        assert model.init_params in bounds
        assert bounds[model.init_params] == model.lower_bound_
    assert {r["init"] for r in both.table} <= {"hc", "emem"}


@pytest.mark.parametrize(
    "given, expected",
    [
        ("hc", ("hc",)),
        ("hc+emem", ("hc", "emem")),
        ("k-means++", ("k-means++",)),
        ("hc+k-means++", ("hc", "k-means++")),
        ("k-means+++kmeans", ("k-means++", "kmeans")),
        (["emem", "hc"], ("emem", "hc")),
    ],
)
def test_init_params_combinations(given, expected):
    assert selection_module.check_init(given) == expected


@pytest.mark.parametrize("bad", ["hc+", "+hc", "hc+hc", "hcemem", "", "HC", [], ["hc", 3], 5])
def test_bad_init_params(bad):
    with pytest.raises(ValueError, match="init_params"):
        selection_module.check_init(bad)


def test_covariance_names():
    check = selection_module.check_covariance_types
    assert check("all") == list(selection_module.ALL_MODELS)
    assert len(check("ALL")) == 14
    assert check("all", n_features=1) == ["EII", "VII"]  # one feature: mclust's E and V
    assert check(["vvv", "Eei", "Full", "DIAG"]) == ["VVV", "EEI", "diag"]  # full is VVV
    assert check(["full", "VVV", "spherical", "vii"]) == ["full", "spherical"]
    assert check(["EII", "all"])[:2] == ["EII", "VII"]
    for bad in (["VVX"], ["full", 3], [], 7):
        with pytest.raises(ValueError, match="covariance"):
            check(bad)


def test_all_fits_the_14_models_with_mclusts_counts(small):
    from fastem._mclust import n_parameters as nmclust

    selection = select_model(
        small, [1, 2], init_params=HC, random_state=0, max_iter=20
    )  # default: "all"
    assert [r["covariance_type"] for r in selection.table[:14]] == list(selection_module.ALL_MODELS)
    for row in selection.table:
        assert row["n_parameters"] == nmclust(row["covariance_type"], row["n_components"], 2)
        if row["error"] is None:
            model = selection.models_[(row["n_components"], row["covariance_type"])]
            assert model.covariance_type == row["covariance_type"]
            assert row["bic"] == model.bic(small)
    # At K = 1 every model with the same diagonal-or-not structure and free variances agrees.
    k1 = {r["covariance_type"]: r["log_likelihood"] for r in selection.table[:14]}
    assert k1["VVV"] == pytest.approx(k1["EEE"], rel=1e-9)
    assert k1["VVI"] == pytest.approx(k1["EEI"], rel=1e-9)


def test_aliases_equal_their_mclust_models(small):
    a = select_model(small, [2, 3], ["full", "diag"], init_params=HC, random_state=0)
    b = select_model(small, [2, 3], ["VVV", "VVI"], init_params=HC, random_state=0)
    for ra, rb in zip(a.table, b.table, strict=True):
        assert ra["bic"] == pytest.approx(rb["bic"], rel=1e-12)
        assert ra["n_parameters"] == rb["n_parameters"]


def test_default_and_scikit_learn_settings(small):
    default = select_model(small, [3], ["VVV"], random_state=0)
    model = default.best_
    assert (model.tol, model.stopping, model.acceleration, model.max_iter) == (
        1e-8, "aitken", "squarem", 1000,
    )  # fmt: skip
    assert model.init_params == "hc"
    old = select_model(
        small, [3], ["VVV"], random_state=0, **selection_module.SCIKIT_LEARN_SETTINGS
    )
    model = old.best_
    assert (model.tol, model.stopping, model.acceleration, model.max_iter) == (
        1e-3, "absolute", None, 100,
    )  # fmt: skip
    assert model.init_params == "kmeans"
    override = select_model(small, [3], ["VVV"], random_state=0, tol=1e-4, acceleration=None)
    assert override.best_.tol == 1e-4 and override.best_.acceleration is None
    assert override.best_.stopping == "aitken"


def test_default_fits_reach_their_maximum(three):
    """Each candidate ends where a long plain EM run from its start ends (SQUAREM, Aitken
    stopping at 1e-8); scikit-learn's settings (negative control) stop measurably short."""
    models = ["VVV", "EEE", "VVI"]
    default = select_model(three, [4], models, init_params=HC, random_state=0)
    early = select_model(three, [4], models, random_state=0, init_params="hc",
                         tol=1e-3, stopping="absolute", acceleration=None)  # fmt: skip
    gaps = []
    for key, model in default.models_.items():
        params = {**model.get_params(), "tol": 1e-11, "max_iter": 3000, "acceleration": None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a plateau: max_iter may end it
            long = GaussianMixture(**params).fit(three)
        assert model.lower_bound_ >= long.lower_bound_ - 1e-6, key
        gaps.append(long.lower_bound_ - early.models_[key].lower_bound_)
    assert max(gaps) > 1e-5


def test_degenerate_fits_are_recognized(degenerate):
    var = degenerate.var(axis=0)
    collapsed = GaussianMixture(2, covariance_type="VVV", reg_covar=1e-6, random_state=0)
    collapsed.fit(degenerate)  # one component on the 20 copies of (5, 5): variance ~1e-6
    assert selection_module.degenerate_fit(collapsed, degenerate.shape[0], var)
    proper = GaussianMixture(2, covariance_type="VVV", reg_covar=1.0, random_state=0)
    proper.fit(degenerate)  # negative control: a floor of one unit keeps it proper
    assert not selection_module.degenerate_fit(proper, degenerate.shape[0], var)
    # Too few rows for a free covariance (d + 1 = 3), enough for a shared one.
    assert selection_module.degenerate_fit(proper, 2.0 / proper.weights_.min(), var)


@pytest.mark.parametrize("flagged, kept", [("emem", "hc"), ("hc", "emem")])
def test_a_degenerate_fit_loses_to_a_proper_one(small, monkeypatch, flagged, kept):
    original = selection_module.degenerate_fit
    monkeypatch.setattr(
        selection_module, "degenerate_fit", lambda m, n, v: m.init_params == flagged
    )
    sel = select_model(small, [3, 4], ["VVV", "EEI"], init_params="hc+emem", random_state=1,
                       max_iter=50)  # fmt: skip
    assert {row["init"] for row in sel.table} == {kept}
    monkeypatch.setattr(selection_module, "degenerate_fit", original)
    free = select_model(small, [3, 4], ["VVV", "EEI"], init_params="hc+emem", random_state=1,
                        max_iter=50)  # fmt: skip
    for key, model in free.models_.items():  # unflagged: the higher lower bound wins
        assert model.lower_bound_ >= sel.models_[key].lower_bound_


def test_summary_counts_the_candidates_not_converged_not_max_iter():
    # The line read "Not converged within max_iter (1): VII,3" with max_iter=5: the number
    # in brackets is how many candidates hit the cap, and says so.
    from fastem import select_model
    from fastem.datasets import make_mixture

    X, _ = make_mixture(300, 2, 3, random_state=0)
    sel = select_model(
        X, n_components=[3], covariance_types=["VII", "EII"], max_iter=2, backend="numpy"
    )
    text = sel.to_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("Not converged"))
    count = len(line.split(": ", 1)[1].split(", "))
    noun = "candidate" if count == 1 else "candidates"
    assert line.startswith(f"Not converged within max_iter ({count} {noun}): "), line
