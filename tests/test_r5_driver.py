"""Regressions found by the R5 bug hunt in the EM driver (fastem._em)."""

from __future__ import annotations

import math

import pytest

from fastem._em import STOPPING_RULES, make_stopping_rule
from fastem._em import stopping as stopping_module


@pytest.mark.parametrize("name", STOPPING_RULES)
def test_a_step_from_minus_inf_is_not_convergence(name):
    """ℓ = -inf, then finite values still gaining 5, then 2.5: no rule may stop.

    Before the fix Aitken stopped at the third value: its rate 5 / inf = 0
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


def test_negative_control_without_the_guard_aitken_stops_after_minus_inf(monkeypatch):
    """The guard is what makes the first test pass: the unguarded update (the
    previous code) stops right after the first finite gain."""

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
    stops = [rule.update(v) for v in (-math.inf, -10.0, -5.0)]
    assert stops == [False, False, True]
