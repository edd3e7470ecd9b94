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
