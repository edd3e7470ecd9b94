"""Stopping rules of the EM driver: when is a sequence of objective values converged?

Each rule watches the objectives of consecutive plain EM steps, ``l(x)``,
``l(F(x))``, ``l(F(F(x)))``, ... (``F`` the EM map, ``l`` the objective, in
fastem's mixtures the average log-likelihood), and says when to stop:

``"absolute"`` (scikit-learn's rule, the default)
    ``|l_t - l_{t-1}| < tol``: one EM step gains less than ``tol``.
``"relative"`` (mclust's rule)
    ``|l_t - l_{t-1}| / (1 + |l_t|) < tol``: the gain relative to the objective.
    mclust applies it to the total log-likelihood; here it applies to the same
    objective ``tol`` does (fastem's average log-likelihood).
``"aitken"`` (Aitken's estimate of the limit; Bohning et al. 1994, McNicholas et al. 2010)
    Near a fixed point EM converges linearly, ``l_t - l_{t-1} ~ a (l_{t-1} - l_{t-2})``
    with rate ``0 <= a < 1``, so what is left to gain after ``l_t`` is the
    geometric tail ``(l_t - l_{t-1}) a / (1 - a)``. Stop when that predicted
    distance to the limit is below ``tol``. Two safeguards against stopping
    early: before the linear regime the rate estimate still rises (a slower mode
    takes over from faster ones) and the tail is underestimated, so the rule
    waits until the rate has settled: risen by less than ``(1 - a) / 10`` since
    the rate estimated before it, which keeps the estimate within ~10% (in a
    chain of four or more consecutive values, the rate one step earlier; in a
    chain of three, as an accelerated driver's are, the rate estimated last in
    the fit, so the fit's first rate, whose first gain is the jump from the
    initialization, never stops it alone); and ``a`` is the largest rate
    estimated so far in the fit, not only the latest. A step that gains
    nothing (``l_t <= l_{t-1}`` by at most ``noise * (1 + |l_t|)``, 1e-7: EM
    has reached a fixed point to rounding) stops; a rate ``a >= 1`` never does.
    A sequence that falls (EM's map ascends a regularized objective, not ``l``:
    a ``reg_covar`` that matters next to the data's variances) is judged the
    same way on its losses: its limit is the map's fixed point.

An accelerated driver feeds a rule only objectives of genuine EM steps and
calls :meth:`StoppingRule.reset` when it jumps (an accepted extrapolation): the
rules then keep their meaning, "plain EM from here would gain less than tol",
whatever scheme produced the current point.
"""

from __future__ import annotations

import math

__all__ = ["STOPPING_RULES", "StoppingRule", "make_stopping_rule"]

STOPPING_RULES = ("absolute", "relative", "aitken")


class StoppingRule:
    """Decide convergence from the objectives of consecutive EM steps.

    Parameters
    ----------
    name : {'absolute', 'relative', 'aitken'}
    tol : float
        Non-negative threshold; 0 never stops (except Aitken on a step that
        gains nothing).
    """

    def __init__(self, name: str, tol: float) -> None:
        if name not in STOPPING_RULES:
            raise ValueError(
                f"Invalid value for 'stopping': {name!r}; expected one of {STOPPING_RULES}."
            )
        self.name = name
        self.tol = float(tol)
        self._history: list[float] = []
        #: The last quantity compared with ``tol`` (gain, relative gain or
        #: predicted remaining gain); ``inf`` until a rule can be evaluated.
        self.criterion = math.inf

    def reset(self, value: float | None = None) -> None:
        """Start a new chain of EM steps (at ``value``, if given and finite:
        a start at ``-inf`` says nothing about the gains to come)."""
        finite = value is not None and math.isfinite(value)
        self._history = [float(value)] if finite else []
        self.criterion = math.inf

    def update(self, value: float) -> bool:
        """Add the objective of the next EM step; return whether to stop.

        A value that is not finite (``-inf``: a point the data cannot come
        from; ``nan``) never stops and starts the chain afresh, as a start at
        ``-inf`` does in :meth:`reset`: a gain from ``-inf`` is infinite, and
        Aitken's rate ``gain / inf = 0`` would otherwise predict that nothing
        is left to gain after any finite step.
        """
        value = float(value)
        if not math.isfinite(value):
            self.reset()
            return False
        h = self._history
        h.append(value)
        if len(h) > 4:
            del h[0]
        if len(h) < 2:
            return False
        change = h[-1] - h[-2]
        if self.name == "absolute":
            self.criterion = abs(change)
        elif self.name == "relative":
            self.criterion = abs(change) / (1.0 + abs(h[-1]))
        else:
            self.criterion = self._aitken_remaining()
            if change <= 0.0 and -change <= self.noise * (1.0 + abs(h[-1])):
                # No gain at all: a fixed point to rounding; stops whatever tol
                # (tol = 0 included, where "criterion < tol" alone never holds).
                # A larger loss is not a fixed point: a map that is no ascent of
                # the objective (a reg_covar that matters, data in small units)
                # lowers it for many steps, towards its own fixed point.
                return True
        return self.criterion < self.tol

    #: Aitken: a loss of at most ``noise * (1 + |l|)`` is rounding (a fixed point
    #: reached); float32 fits lose up to ~2e-8 relative there.
    noise = 1e-7

    _max_rate = 0.0
    # The rate estimated before the latest one in this fit (None: none yet). Kept
    # across reset(): EM's rate near a fixed point does not change with a jump.
    _last_rate: float | None = None

    def _aitken_remaining(self) -> float:
        h = self._history
        gains = [b - a for a, b in zip(h[:-1], h[1:], strict=True)]
        if gains[-1] == 0.0:
            return 0.0  # no gain at all: a fixed point, up to rounding
        if len(gains) < 2 or gains[-2] == 0.0 or (gains[-1] > 0.0) != (gains[-2] > 0.0):
            return math.inf  # no rate, or the objective turned (rounding, or not yet)
        # The rate of a sequence moving one way: up (EM's ascent) or down (a map
        # that lowers the objective, as EM under a reg_covar that matters does
        # towards its fixed point); the tail is the distance to its limit.
        rate = gains[-1] / gains[-2]
        if len(gains) == 3 and gains[-3] != 0.0 and (gains[-3] > 0.0) == (gains[-2] > 0.0):
            previous = gains[-2] / gains[-3]
        else:
            # Three values (or a window whose first gain is not positive): the
            # rate is compared with the one estimated before it in the fit, and
            # the fit's first rate is never trusted on its own. Its first gain is
            # the step from the initialization, out of the linear regime: a
            # k-means++ start gains ~1e5 and then 0.02, a "rate" of 1e-7 that
            # predicted nothing left (converged_ at pass 3, 1e-2 below the maximum).
            previous = self._last_rate
        self._last_rate = rate
        if rate >= 1.0:
            return math.inf
        self._max_rate = max(self._max_rate, rate)
        if previous is None or rate - previous > 0.1 * (1.0 - rate):
            return math.inf  # the rate is still rising (or unknown): not yet linear
        a = self._max_rate
        return abs(gains[-1]) * a / (1.0 - a)


def make_stopping_rule(name: str, tol: float) -> StoppingRule:
    """The rule called ``name`` with threshold ``tol`` (see the module docs)."""
    return StoppingRule(name, tol)
