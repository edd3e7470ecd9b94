"""Regressions found by the R5 bug hunt in the EM driver (fastem._em)."""

from __future__ import annotations

import math

import pytest

from fastem._em import STOPPING_RULES, make_stopping_rule
from fastem._em import stopping as stopping_module


@pytest.mark.parametrize("name", STOPPING_RULES)
def test_a_step_from_minus_inf_is_not_convergence(name):
    """ℓ = -inf, then finite values still gaining 5, then 2.5: no rule may stop.

    Before the fixes Aitken stopped at the third value: its rate 5 / inf = 0
    predicted no gain left (criterion 0) after a step that gained 5."""
    rule = make_stopping_rule(name, 1e-6)
    assert not rule.update(-math.inf)
    assert not rule.update(-10.0)
    assert not rule.update(-5.0)
    assert not rule.update(-2.5)
    assert rule.criterion > 1e-6
    # once finite, a geometric sequence converges as from a fresh start
    values = [-2.5 + 2.5 * (1 - 0.5**t) for t in range(1, 60)]
    assert any(rule.update(v) for v in values)


@pytest.mark.parametrize("name", STOPPING_RULES)
@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_a_non_finite_value_mid_chain_neither_stops_nor_poisons_the_rule(name, bad):
    rule = make_stopping_rule(name, 1e-3)
    for v in (-10.0, -9.0, -8.5):
        assert not rule.update(v)
    assert not rule.update(bad)  # Aitken: a "decrease" to -inf is not a fixed point
    assert rule.criterion == math.inf
    # the chain restarts: the rule works again on the values that follow
    assert not rule.update(-8.0)
    assert not rule.update(-7.9)
    stop = next(v for v in (-7.85, -7.825, -7.8125, -7.8124, -7.81239) if rule.update(v))
    assert stop == -7.8124  # gain 1e-4 at a rate of at most 0.5: < 1e-3 left
    assert math.isfinite(rule.criterion)


def test_negative_control_without_the_guard_aitken_calls_a_drop_to_minus_inf_converged(
    monkeypatch,
):
    """The guard is what makes the mid-chain test pass: the unguarded update (the
    previous code) takes a pass at -inf for "no gain, a fixed point" and stops."""

    def unguarded(self, value):
        h = self._history
        h.append(float(value))
        if len(h) > 4:
            del h[0]
        if len(h) < 2:
            return False
        change = h[-1] - h[-2]
        self.criterion = self._aitken_remaining()
        return change <= 0.0 or self.criterion < self.tol

    monkeypatch.setattr(stopping_module.StoppingRule, "update", unguarded)
    rule = make_stopping_rule("aitken", 1e-6)
    stops = [rule.update(v) for v in (-10.0, -9.0, -8.5, -math.inf)]
    assert stops == [False, False, False, True]


# -- Aitken's first rate: the jump from the initialization is not a linear rate


def _old_aitken_remaining(self):
    """The previous rule (a three-value chain trusted its one rate), for the controls."""
    h = self._history
    gains = [b - a for a, b in zip(h[:-1], h[1:], strict=True)]
    if gains[-1] <= 0.0:
        return 0.0
    if len(gains) < 2 or gains[-2] <= 0.0:
        return math.inf
    rate = gains[-1] / gains[-2]
    if rate >= 1.0:
        return math.inf
    self._max_rate = max(self._max_rate, rate)
    if len(gains) == 3 and gains[-3] > 0.0:
        if rate - gains[-2] / gains[-3] > 0.1 * (1.0 - rate):
            return math.inf
    a = self._max_rate
    return gains[-1] * a / (1.0 - a)


# a k-means++ start (covariances reg_covar): the first pass is ~-4.5e6, then EM
# gains 0.04, 0.02, ... at a rate near 0.5 (make_mixture(1000, 5, 5, seed 28))
START = [-4.50295719e06, -8.66686, -8.62509, -8.60382, -8.59300, -8.58750]


def test_aitken_does_not_stop_on_the_first_rate_of_a_fit():
    rule = make_stopping_rule("aitken", 1e-8)
    stops = [rule.update(v) for v in START]
    assert not any(stops)
    # the previous rule: rate 0.04 / 4.5e6 ~ 1e-8 predicted ~1e-10 left at pass 3
    old = make_stopping_rule("aitken", 1e-8)
    old._aitken_remaining = _old_aitken_remaining.__get__(old)
    assert [old.update(v) for v in START[:3]] == [False, False, True]


def test_aitken_three_value_chains_stop_once_a_rate_is_known():
    """An accelerated driver's chains (reset at each jump) are three values long:
    once the fit has a rate, they are compared with it and can stop."""
    rule = make_stopping_rule("aitken", 1e-3)
    for v in (-10.0, -9.0, -8.5, -8.25):  # rate 0.5, settled: 0.25 still to come
        assert not rule.update(v)
    rule.reset(-8.0)  # an accepted extrapolation
    assert not rule.update(-7.9996)
    assert rule.update(-7.9994)  # rate 0.5 again: 2e-4 * 0.5 / 0.5 = 2e-4 left
    assert math.isclose(rule.criterion, 2e-4, rel_tol=1e-6)
    # the same chain at the start of a fit (no rate known yet) does not stop
    fresh = make_stopping_rule("aitken", 1e-3)
    assert not any(fresh.update(v) for v in (-8.0, -7.9996, -7.9994))


def test_aitken_fit_from_a_k_means_plus_plus_start_reaches_the_maximum(monkeypatch):
    import warnings

    import numpy as np

    from fastem import GaussianMixture
    from fastem.datasets import make_mixture

    X, _ = make_mixture(1000, 5, 5, random_state=28)
    kw = dict(init_params="k-means++", random_state=28, stopping="aitken", tol=1e-8)

    def fit(**more):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return GaussianMixture(5, backend="numpy", **{**kw, **more}).fit(X)

    gm = fit(max_iter=2000)
    assert gm.converged_ and gm.n_iter_ > 3
    # plain EM continued from the fitted model to its limit gains less than a few tol
    more = GaussianMixture(5, backend="numpy", warm_start=True, tol=0.0, max_iter=2000)
    more.set_params(stopping="aitken", init_params="k-means++")
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "n_features_in_"):
        setattr(more, name, getattr(gm, name))
    more.lower_bound_, more.converged_ = -np.inf, True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        more.fit(X)
    assert more.lower_bound_ - gm.lower_bound_ < 10 * 1e-8
    # negative control: the previous rule called pass 3 converged, 8e-2 below
    monkeypatch.setattr(stopping_module.StoppingRule, "_aitken_remaining", _old_aitken_remaining)
    early = fit(max_iter=2000)
    assert early.converged_ and early.n_iter_ == 3
    assert more.lower_bound_ - early.lower_bound_ > 1e-2


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    given = None

if given is not None:

    @settings(max_examples=200, deadline=None)
    @given(
        jump=st.floats(1e-3, 1e7),
        first=st.floats(1e-4, 1.0),
        rate=st.floats(0.02, 0.98),
        tol_exp=st.integers(3, 10),
    )
    def test_aitken_stops_only_near_the_limit_after_any_first_jump(jump, first, rate, tol_exp):
        """A start ``jump`` below, then EM's linear regime (gains ``first * rate**t``):
        when Aitken stops, what is left to gain is at most ~tol (the estimate is
        exact on the geometric tail; the first rate, from the jump, is not used
        alone). The previous rule stopped at the third value whenever
        ``first * first / jump`` was below tol."""
        tol = 10.0**-tol_exp
        limit = -1.0
        values = [limit - first / (1 - rate) - jump]
        values += [limit - first * rate**t / (1 - rate) for t in range(3000)]
        rule = make_stopping_rule("aitken", tol)
        for i, v in enumerate(values):
            if rule.update(v):
                # rounding of values near -1 is ~1e-16 a value: allow it
                assert limit - v <= 1.2 * tol + 1e-13, (i, limit - v)
                break


# -- Aitken on a falling objective: EM under a reg_covar that matters


def test_aitken_does_not_take_a_real_loss_for_a_fixed_point():
    """A map that is no ascent of l (reg_covar next to the data's variances)
    lowers it towards its fixed point: l = -1 + 0.01 * 0.6**t. Only a loss at
    the rounding level stops at once; this one is judged on its losses."""
    values = [-1.0 + 0.01 * 0.6**t for t in range(200)]
    rule = make_stopping_rule("aitken", 1e-5)
    stop = next(i for i, v in enumerate(values) if rule.update(v))
    assert stop > 5
    assert values[stop] - (-1.0) <= 1.2e-5
    # below tol = 1e-8 a loss under noise * (1 + |l|) = 2e-7 counts as rounding
    rule = make_stopping_rule("aitken", 1e-8)
    stop = next(i for i, v in enumerate(values) if rule.update(v))
    assert values[stop] - (-1.0) <= 2 * rule.noise * 2
    # a rounding-level loss after gains is still a fixed point, at tol = 0 too
    rule = make_stopping_rule("aitken", 0.0)
    assert [rule.update(v) for v in (-5.0, -4.0, -4.0 - 1e-12)] == [False, False, True]


def test_aitken_fit_on_data_in_small_units_runs_to_the_fixed_point(monkeypatch):
    """Data in units of 2e-3 (variances ~1e-5, reg_covar 1e-6): the first EM step
    lowers l by 1.4e-3 and the previous rule stopped there, converged_ at pass 2."""
    import warnings

    import numpy as np

    from fastem import GaussianMixture
    from fastem.datasets import make_mixture

    X = make_mixture(2000, 3, 4, random_state=3)[0] * 2e-3

    def fit(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return GaussianMixture(4, random_state=0, backend="numpy", **kw).fit(X)

    limit = fit(tol=0.0, max_iter=400)
    gm = fit(stopping="aitken", tol=1e-8, max_iter=400)
    assert gm.converged_ and gm.n_iter_ > 10
    np.testing.assert_allclose(gm.means_, limit.means_, atol=1e-5)
    # negative control: a loss of any size stopped the previous rule
    original = stopping_module.StoppingRule.update

    def stop_on_any_loss(self, value):
        h = self._history
        if self.name == "aitken" and h and value <= h[-1]:
            self._history.append(value)
            return True
        return original(self, value)

    monkeypatch.setattr(stopping_module.StoppingRule, "update", stop_on_any_loss)
    early = fit(stopping="aitken", tol=1e-8, max_iter=400)
    assert early.n_iter_ == 2
    assert np.abs(early.means_ - limit.means_).max() > 1e-4


# -- follow_path: a map that is no ascent of the objective returns its path's end


def test_follow_path_returns_the_fixed_point_of_a_map_that_lowers_the_objective():
    """PenalizedPoisson's M-step (a Gamma prior on the rates) lowers the plain
    log-likelihood the driver judges by. With follow_path every scheme ends at
    the map's fixed point, as plain EM does; the default returns the best point
    by the objective, an early one (the negative control)."""
    import numpy as np
    from test_acceleration import PenalizedPoisson

    from fastem._em import METHODS, run_fixed_point

    def run(method, follow_path, passes=3000):
        return run_fixed_point(
            PenalizedPoisson(),
            np.array([0.3, 1.0, 2.5]),
            method=method,
            max_passes=passes,
            rule=make_stopping_rule("absolute", 0.0),
            follow_path=follow_path,
        )

    fixed = run(None, True, passes=20_000).image
    plain = run(None, True)
    np.testing.assert_allclose(plain.image, fixed, rtol=1e-6)
    for method in METHODS:
        res = run(method, True)
        np.testing.assert_allclose(res.image, fixed, rtol=1e-5, err_msg=str(method))
        # the default: the best objective, far from the fixed point
        best = run(method, False)
        assert np.abs(best.image - fixed).max() > 1e-2
        assert np.all(np.diff(best.lower_bounds) >= 0)


def test_follow_path_changes_nothing_for_an_ascent_map():
    import numpy as np
    from test_acceleration import PoissonMixture

    from fastem._em import METHODS, run_fixed_point

    for method in METHODS:
        a, b = (
            run_fixed_point(
                PoissonMixture(),
                np.array([0.3, 1.0, 2.5]),
                method=method,
                max_passes=500,
                rule=make_stopping_rule("absolute", 1e-12),
                follow_path=follow,
            )
            for follow in (False, True)
        )
        assert a.lower_bounds == b.lower_bounds and np.array_equal(a.image, b.image)


def test_follow_path_on_the_mixture_in_small_units():
    """The Gaussian mixture's map on data in units of 2e-3 (reg_covar 1e-6 next to
    variances ~1e-5): plain EM lowers l from its first step on. Accelerated with
    follow_path the fit ends at plain EM's fixed point; without, it returned its
    first M-step (GaussianMixture passes follow_path once mixture.py opts in)."""
    import warnings

    import numpy as np

    from fastem import GaussianMixture
    from fastem._em import run_fixed_point
    from fastem.backends import get_backend
    from fastem.datasets import make_mixture
    from fastem.mixture import _MixtureMap

    X = make_mixture(2000, 3, 4, random_state=3)[0] * 2e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        limit = GaussianMixture(4, random_state=0, tol=0.0, max_iter=400, backend="numpy").fit(X)
        start = GaussianMixture(4, random_state=0, max_iter=0, backend="numpy").fit(X)
    from fastem._data import ArrayData

    data = ArrayData(np.asarray(X), np.ones(len(X)))
    params = (
        start.weights_.astype(float),
        start.means_.astype(float),
        start.covariances_.astype(float),
        start.precisions_cholesky_.astype(float),
    )
    for method in ("squarem", "qn"):
        ends = {}
        for follow in (False, True):
            problem = _MixtureMap(data, get_backend("numpy"), "full", 1e-6)
            x0 = problem.start(params)
            res = run_fixed_point(
                problem,
                x0,
                method=method,
                max_passes=300,
                rule=make_stopping_rule("aitken", 1e-8),
                options={"reference": "x1"} if method == "squarem" else None,
                follow_path=follow,
            )
            ends[follow] = res.payload[0][1]  # the returned means
        assert np.abs(ends[True] - limit.means_).max() < 1e-5, method
        assert np.abs(ends[False] - limit.means_).max() > 1e-4, method  # the control


def test_squarem_step_bound_stays_finite_on_a_long_run_at_a_fixed_point():
    """At a fixed point every cycle's step is at the bound, which grew by 4 each
    time: after ~500 cycles inf, then nan proposals and a RuntimeWarning."""
    import warnings

    import numpy as np
    from test_acceleration import PenalizedPoisson

    from fastem._em import run_fixed_point

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = run_fixed_point(
            PenalizedPoisson(),
            np.array([0.3, 1.0, 2.5]),
            method="squarem",
            max_passes=3000,
            rule=make_stopping_rule("absolute", 0.0),
        )
    assert res.n_passes == 3000 and np.isfinite(res.image).all()


def test_accelerated_mixture_in_small_units_ends_at_plain_ems_fixed_point():
    """GaussianMixture opts in to follow_path: on data in units of 2e-3 every scheme's
    fit ends at plain EM's fixed point; before, each returned its first M-step (the
    best l it saw), 2e-4 from it, with converged_ True."""
    import warnings

    import numpy as np

    from fastem import GaussianMixture
    from fastem.datasets import make_mixture

    X = make_mixture(2000, 3, 4, random_state=3)[0] * 2e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = GaussianMixture(4, random_state=0, tol=0.0, max_iter=400, backend="numpy").fit(X)
        for method in ("squarem", "anderson", "qn"):
            gm = GaussianMixture(
                4, random_state=0, acceleration=method, stopping="aitken", tol=1e-10,
                max_iter=400, backend="numpy",
            ).fit(X)  # fmt: skip
            order = [int(np.argmin(((plain.means_ - m) ** 2).sum(1))) for m in gm.means_]
            np.testing.assert_allclose(gm.means_, plain.means_[order], atol=2e-5, err_msg=method)
