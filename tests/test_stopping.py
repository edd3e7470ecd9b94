"""Stopping rules: scikit-learn's absolute rule (the default, unchanged), mclust's
relative rule, and Aitken's estimate of the gain still to come."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from _helpers import initial_parameters

from fastem import GaussianMixture
from fastem._em import STOPPING_RULES, make_stopping_rule
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning


def _first_stop(rule, values):
    """Index of the value at which ``rule`` stops, or None."""
    for i, v in enumerate(values):
        if rule.update(v):
            return i
    return None


def test_absolute_and_relative_rules():
    values = [-10.0, -9.0, -8.5, -8.4999, -8.49989]
    assert _first_stop(make_stopping_rule("absolute", 1e-3), values) == 3
    # relative: |change| / (1 + |l|): 1e-4 / 9.4999 ~ 1.05e-5 at index 3
    assert _first_stop(make_stopping_rule("relative", 1.1e-5), values) == 3
    assert _first_stop(make_stopping_rule("relative", 1.0e-5), values) == 4
    with pytest.raises(ValueError, match="stopping"):
        make_stopping_rule("never", 1e-3)


def test_aitken_predicts_the_remaining_gain_of_a_linear_sequence():
    limit, c, rate = -3.0, 2.0, 0.9
    values = [limit - c * rate**t for t in range(400)]
    for tol in (1e-3, 1e-6, 1e-9):
        stop = _first_stop(make_stopping_rule("aitken", tol), values)
        # the estimate is exact for a geometric sequence: it stops at the first t
        # whose remaining gain c rate^t is below tol (up to rounding at the boundary)
        first = next(t for t in range(400) if c * rate**t < tol)
        assert stop in (first, first + 1)
        # whereas the absolute rule stops with 9x tol still to gain
        absolute = _first_stop(make_stopping_rule("absolute", tol), values)
        assert values[-1] - values[absolute] > 5 * tol
        assert values[-1] - values[stop] <= tol


def test_aitken_edge_cases():
    rule = make_stopping_rule("aitken", 1e-3)
    assert not rule.update(-5.0) and not rule.update(-4.0)  # two values: no rate yet
    assert not rule.update(-3.5)  # rate 0.5: 0.5 still to come
    assert not rule.update(-3.0)  # rate 1: not converging linearly, never stops
    assert rule.update(-3.0)  # no gain at all: a fixed point
    rule.reset(-math.inf)  # a start at -inf is no history
    assert not rule.update(-1.0) and rule.criterion == math.inf


def test_aitken_stops_on_a_step_without_gain_even_at_tol_zero():
    """tol = 0 never stops, except Aitken on a step that gains nothing (the rule's
    documented contract); before, "0 < 0" kept it running to max_iter, e.g. K = 1,
    whose EM reaches its fixed point in one step."""
    for tol in (0.0, 1e-8):
        rule = make_stopping_rule("aitken", tol)
        assert [rule.update(v) for v in (-5.0, -4.0, -4.0)] == [False, False, True]
        rule = make_stopping_rule("aitken", tol)
        assert [rule.update(v) for v in (-5.0, -4.0, -4.0 - 1e-15)] == [False, False, True]
    for name in ("absolute", "relative"):  # tol = 0: never
        rule = make_stopping_rule(name, 0.0)
        assert not any(rule.update(v) for v in (-5.0, -4.0, -4.0, -4.0))
    X = np.random.default_rng(0).normal(size=(200, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = GaussianMixture(1, stopping="aitken", tol=0.0, max_iter=50).fit(X)
    assert fit.converged_ and fit.n_iter_ <= 3


@pytest.fixture(scope="module")
def problem():
    X, _ = make_mixture(2000, 2, 4, random_state=5)
    return X * 2.5, initial_parameters(X * 2.5, 4, "full", 0)


def _fit(X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(backend="numpy", max_iter=5000, **kwargs).fit(X)


def test_absolute_is_the_default_and_unchanged(problem):
    X, init = problem
    a = _fit(X, tol=1e-6, **init)
    b = _fit(X, tol=1e-6, stopping="absolute", **init)
    assert a.lower_bounds_ == b.lower_bounds_
    bounds = a.lower_bounds_
    # scikit-learn's rule: stop at the first iteration that gains less than tol
    gains = np.abs(np.diff(bounds))
    assert gains[-1] < 1e-6 and (gains[:-1] >= 1e-6).all()


@pytest.mark.parametrize("stopping", STOPPING_RULES)
def test_plain_em_stops_where_the_rule_says(problem, stopping):
    X, init = problem
    gm = _fit(X, tol=1e-7, stopping=stopping, **init)
    rule = make_stopping_rule(stopping, 1e-7)
    assert gm.converged_
    assert _first_stop(rule, gm.lower_bounds_) == gm.n_iter_ - 1


def test_aitken_reaches_closer_to_the_maximum(problem):
    X, init = problem
    best = _fit(X, tol=1e-15, stopping="aitken", **init).lower_bound_
    tol = 1e-6
    absolute = _fit(X, tol=tol, **init)
    aitken = _fit(X, tol=tol, stopping="aitken", **init)
    assert best - aitken.lower_bound_ < tol < best - absolute.lower_bound_
    for acceleration in ("squarem", "anderson"):
        fast = _fit(X, tol=tol, stopping="aitken", acceleration=acceleration, **init)
        assert fast.converged_ and best - fast.lower_bound_ < tol
        assert fast.n_iter_ < aitken.n_iter_
