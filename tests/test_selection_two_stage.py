"""select_model's two-stage search: screened candidates, the contenders refined.

The default (``refine="contenders"``) must choose what fitting every candidate
to the maximum (``refine="all"``) chooses, with the best three fitted to the
final settings; a stage 2 that refines nothing must be caught by the same check.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fastem import ConvergenceWarning, select_model
from fastem import selection as selection_module
from fastem.datasets import make_mixture

MODELS = ["EII", "VVI", "EEE", "VEV", "VVV"]
KS = range(1, 5)


def _top(selection, n: int | None = 3):
    return [
        (selection.table[i]["n_components"], selection.table[i]["covariance_type"])
        for i in selection.ranking()[:n]
    ]


def _check_same_choice(two, full, n_rows, tol=1e-8):
    """The two-stage search chose as refine='all' did: its best three are fitted to
    the final settings and are the best three of the full search, with the same BIC
    to within what two Aitken stops at ``tol`` per row leave (a warm continuation
    against one fit); so candidates tied to that slack (one component of EEE and
    VVV, say) may swap places, nothing else."""
    slack = 20.0 * n_rows * tol
    full_bic = {
        key: full.table[i]["bic"] for i, key in zip(full.ranking(), _top(full, None), strict=True)
    }
    ranked = full.ranking()
    for r, (i, key) in enumerate(zip(two.ranking()[:3], _top(two), strict=True)):
        assert two.table[i]["refined"] is True
        assert two.table[i]["bic"] == pytest.approx(full_bic[key], rel=0, abs=slack)
        assert two.table[i]["bic"] == pytest.approx(full.table[ranked[r]]["bic"], rel=0, abs=slack)
    if two.best_params_ != full.best_params_:
        best = (two.best_params_["n_components"], two.best_params_["covariance_type"])
        assert full_bic[best] <= full.table[full.best_index_]["bic"] + slack


def _fit_both(X, **kw):
    common = dict(init_params="hc", random_state=0, **kw)
    two = select_model(X, KS, MODELS, **common)
    full = select_model(X, KS, MODELS, refine="all", **common)
    return two, full


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is two grids
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n=st.integers(150, 500),
    d=st.sampled_from([2, 3]),
    k=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_two_stages_choose_as_every_candidate_to_the_maximum(n, d, k, seed):
    X, _ = make_mixture(n, d, k, random_state=seed)
    two, full = _fit_both(X)
    _check_same_choice(two, full, n)
    assert all(row["refined"] for row in full.table)


@pytest.fixture(scope="module")
def four():
    return make_mixture(600, 2, 4, random_state=5)[0]


def test_crude_screen_still_chooses_right_and_no_refinement_is_caught(four, monkeypatch):
    """Screens cut at 3 passes leave every candidate far from its maximum: the bound
    (recent gain times the passes left) still refines the right ones. The negative
    control, a stage 2 that refines nothing, fails the same check."""
    monkeypatch.setattr(selection_module, "SCREEN_MAX_ITER", 3)
    two, full = _fit_both(four)
    _check_same_choice(two, full, four.shape[0])
    monkeypatch.setattr(selection_module, "_refine_contenders", lambda *args, **kw: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # its best is a 3-pass screen
        lazy = select_model(four, KS, MODELS, init_params="hc", random_state=0)
    with pytest.raises(AssertionError):
        _check_same_choice(lazy, full, four.shape[0])


def test_table_text_and_the_rule(four):
    two, full = _fit_both(four)
    screened = [row for row in two.table if not row["refined"]]
    assert screened and len(screened) < len(two.table)  # the rule left some, not all
    for row in screened:  # the screen's settings stay on the candidate: a refit is exact
        model = two.models_[(row["n_components"], row["covariance_type"])]
        assert (model.tol, model.max_iter) == (
            selection_module.SCREEN_TOL,
            selection_module.SCREEN_MAX_ITER,
        )
    # Every screened candidate's lower bound is above the third best final value.
    third = sorted(row["bic"] for row in two.table)[2]
    for row in screened:
        model = two.models_[(row["n_components"], row["covariance_type"])]
        gain = selection_module._gain_bound(model, four.shape[0], set(), model.max_iter)
        # the screened candidates here all stopped by Aitken: the bound is the tolerance's
        assert row["bic"] - 2.0 * gain > third
    refined = [row for row in two.table if row["refined"]]
    for row in refined:
        model = two.models_[(row["n_components"], row["covariance_type"])]
        assert model.tol == 1e-8 and model.max_iter == 1000 and not model.warm_start
    text = two.to_text()
    assert text.count("~") == len(screened) + 1  # one per screened cell, one footnote
    assert f"~: {len(screened)} candidate(s) only screened" in text
    assert "~" not in full.to_text()
    long = two.to_text(layout="table")
    assert long.splitlines()[0].split()[9:11] == ["refined", "degenerate"]
    assert sum(line.split()[-3] == "no" for line in long.splitlines()[1:-1]) == len(screened)


def test_icl_and_aic_choose_as_every_candidate_to_the_maximum(four):
    for criterion in ("icl", "aic"):
        two, full = _fit_both(four, criterion=criterion)
        assert two.best_params_ == full.best_params_
        assert _top(two) == _top(full)
        for i, j in zip(two.ranking()[:3], full.ranking()[:3], strict=True):
            assert two.table[i]["refined"] is True
            slack = 20.0 * four.shape[0] * 1e-8
            assert two.table[i][criterion] == pytest.approx(full.table[j][criterion], abs=slack)


def test_one_stage_where_the_screen_is_not_looser(four):
    """scikit-learn's settings, a tol at or above the screen's, or another stopping
    rule: every candidate is fitted once to the given settings."""
    for kw in (
        selection_module.SCIKIT_LEARN_SETTINGS,
        {"tol": 1e-4},
        {"stopping": "relative"},
    ):
        sel = select_model(four, [2, 3], ["VVV", "EII"], random_state=0, **kw)
        assert all(row["refined"] for row in sel.table)


def test_bad_refine(four):
    with pytest.raises(ValueError, match="refine must be one of"):
        select_model(four, [2], ["VVV"], refine="some")


def test_the_floor_catches_a_component_collapsing_after_the_screen(monkeypatch):
    """iris, VEE with K = 9: after its screen a component collapses onto one row and
    the likelihood jumps (35 units, far beyond Aitken's prediction), to a degenerate
    optimum whose BIC beats VEV,2's. The 50-unit floor refines it, so the two-stage
    row is refine='all''s (same value, flagged degenerate, so neither chooses it);
    without the floor (negative control) it stays screened short of that optimum."""
    datasets = pytest.importorskip("sklearn.datasets")
    X = datasets.load_iris().data
    kw = dict(n_components=range(1, 10), covariance_types=["VEE", "VEV"], random_state=0)
    full = select_model(X, refine="all", **kw)
    assert full.best_params_ == {"n_components": 2, "covariance_type": "VEV"}
    vee9 = full.table[-2]
    assert (vee9["n_components"], vee9["covariance_type"], vee9["degenerate"]) == (9, "VEE", True)
    assert vee9["bic"] < full.table[full.best_index_]["bic"]  # it would win on BIC
    two = select_model(X, **kw)
    _check_same_choice(two, full, X.shape[0])
    assert two.table[-2]["refined"] and two.table[-2]["degenerate"]
    assert two.table[-2]["bic"] == pytest.approx(vee9["bic"], rel=0, abs=1e-4)
    monkeypatch.setattr(selection_module, "SCREEN_MIN_GAIN", 0.0)
    unfloored = select_model(X, **kw)
    assert unfloored.best_params_ == {"n_components": 2, "covariance_type": "VEV"}
    assert not unfloored.table[-2]["refined"]
    assert unfloored.table[-2]["bic"] > vee9["bic"] + 50.0
