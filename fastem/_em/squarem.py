"""SQUAREM: squared extrapolation of a fixed-point map (Varadhan & Roland 2008).

From the current point ``x0`` and two EM steps ``x1 = F(x0)``, ``x2 = F(x1)``,
with ``r = x1 - x0`` and ``v = x2 - 2 x1 + x0``, the squared extrapolation is

    x' = x0 + 2 a r + a^2 v,

which is ``x2`` for step length ``a = 1`` and moves further along the EM path
for ``a > 1``. The step length follows one of the paper's three schemes
(``-r.v / v.v``, ``-r.r / r.v``, or the default ``|r| / |v|``), clamped to
``[step_min, step_max]``. As in R's SQUAREM, ``step_min`` starts at
``step_min0 = 1`` (EM's map is a contraction with positive eigenvalues) and
``step_max`` at ``step_max0 = 1``; a cycle that used ``a = step_max`` multiplies
``step_max`` by ``mstep`` (4), and a rejected one at ``step_max`` divides it by
``mstep`` (not below ``step_max0``). A negative ``step_min0`` grows the same way.

Safeguard and passes (see :mod:`fastem._em.fixed_point`). ``x'`` replaces the
EM point ``x2``, so a cycle visits ``x1``, ``x2`` and ``x'``: three passes,
as R's ``squarem1`` (three map evaluations per cycle; here the objective of
each point comes with its pass). ``x'`` is kept only if it is feasible and
``l(x') >= l(x2)`` -- R's ``objfn.inc`` set to 0, and against the EM point
rather than the cycle's start. Otherwise the cycle ends at ``x2``, whose pass
(and image) is already done. Instead of R's separate stabilization step
``F(x')``, the next cycle starts at ``x'``: its pass gives ``F(x')``, so that
step costs nothing extra. A step length within 0.01 of 1 is plain EM
(``x' ~ x2``) and costs no extra pass.

A rejected cycle is followed by plain EM steps (1, then doubling while cycles
keep failing, at most ``max_backoff`` = 2; none after an acceptance): with the
exact comparison rejections come in runs where EM is strongly nonlinear, each
costing a pass, and on the benchmark the pause cut the passes to the maximum
(428 to 242 on one problem, 160 to 143 on another) more often than it added
(93 to 96). This is not in R's SQUAREM.

The stopping rule sees ``l(x0), l(x1), l(x2)``: three consecutive EM
objectives per cycle, which is also what the Aitken rule needs.

``reference="x1"`` skips the pass at ``x2``: ``x'`` is kept if ``l(x') >= l(x1)``,
the objective of the cycle's first EM step, and a rejected cycle continues from
``x1`` (its image ``x2`` is the next pass). A cycle is then two passes instead
of three. The path stays monotone (``l(x0) <= l(x1) <= l(x')``), but the
guarantee is weaker: ``x'`` beats one EM step from the cycle's start, not the
two steps ``x2`` it stands for. ``GaussianMixture`` uses it, with the means
extrapolated in the precision factor's frame: on the 28-problem sweep
(docs/acceleration.md) a median 3.9x fewer passes to the maximum than plain EM
against 2.8x for ``x2`` with means in data units, and no problem ending below
plain EM (against 2). The driver's default, which the HMMs use, stays ``x2``.
R's SQUAREM and DAAREM are looser still (they compare with the cycle's start,
with a tolerance).

The 5 HMM driver tests that failed with ``x1`` as the default are not a
safeguard bug: those fits use a regularized M-step (``reg_covar``,
``covars_prior``), which is not an ascent map of the likelihood the driver
records, so the image of the best point can score below it; the exact ``x2``
and plain Baum-Welch fail the same check on other data (docs/acceleration.md).

Tried and dropped (measured on the same sweep): Varadhan & Roland's
backtracking on a rejection (``a <- (a + 1) / 2``, one pass per try, or once to
``a / 4``), shrinking ``step_max`` below every rejected step length or capping
only the next proposal, ``mstep = 2``, resetting ``step_max`` after 2 or 3
rejections in a row, and the step length from the later triplet ``x1, x2,
x3``: each wins on some problems and loses on more. On the slow problems the
step length rarely reaches ``step_max`` (2-6% of cycles): rejections happen
below it, where R's adaptation does not act.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fixed_point import Run

__all__ = ["SquaremOptions", "run_squarem", "step_length"]

#: The largest |step length| the global safeguard grows to (R's SQUAREM has none).
STEP_LIMIT = 2.0**40


@dataclass(frozen=True)
class SquaremOptions:
    """Step-length scheme and global safeguards (R SQUAREM's names and defaults).

    Attributes
    ----------
    scheme : {1, 2, 3}
        1: ``-r.v / v.v``, 2: ``-r.r / r.v``, 3: ``sqrt(r.r / v.v)``.
    step_min0, step_max0 : float
        Initial bounds of the step length.
    mstep : float
        Factor by which ``step_max`` grows after a step at the bound (and
        shrinks after a rejected one).
    max_backoff : int
        Most plain EM steps taken after a rejected cycle before the next one
        (1 after a first rejection, doubling while they continue; 0: none).
    reference : {'x2', 'x1'}
        The EM point an extrapolation must match: ``x2 = F(F(x0))``, the
        point it generalizes (exact, three passes per cycle), or
        ``x1 = F(x0)`` (two passes per cycle; see the module docs).
    """

    scheme: int = 3
    step_min0: float = 1.0
    step_max0: float = 1.0
    mstep: float = 4.0
    max_backoff: int = 2
    reference: str = "x2"

    def __post_init__(self) -> None:
        if self.scheme not in (1, 2, 3):
            raise ValueError(f"scheme must be 1, 2 or 3, got {self.scheme!r}")
        if not self.step_max0 >= max(self.step_min0, 1.0) or not self.mstep >= 1.0:
            raise ValueError("need step_max0 >= max(step_min0, 1) and mstep >= 1")
        if int(self.max_backoff) < 0:
            raise ValueError("need max_backoff >= 0")
        if self.reference not in ("x2", "x1"):
            raise ValueError(f"reference must be 'x2' or 'x1', got {self.reference!r}")


def step_length(r: np.ndarray, v: np.ndarray, scheme: int) -> float:
    """The unclamped step length of ``scheme`` (may be inf or nan; the caller clamps)."""
    rr = float(r @ r)
    vv = float(v @ v)
    rv = float(r @ v)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scheme == 1:
            return -rv / vv if vv > 0 else math.inf
        if scheme == 2:
            return -rr / rv if rv != 0 else math.inf
        return math.sqrt(rr / vv) if vv > 0 else math.inf


def run_squarem(run: Run, x0: np.ndarray, opts: SquaremOptions) -> None:
    """SQUAREM cycles until ``run`` is finished (see the module docs)."""
    step_min, step_max = opts.step_min0, opts.step_max0
    cur = run.evaluate(x0)
    if cur is None:
        return
    run.em_step(cur)
    backoff = wait = 0
    while not run.finished:
        if wait > 0:  # plain EM steps after rejections
            wait -= 1
            back, nxt = run.advance(cur)
            if nxt is None:
                return
            run.em_step(nxt)
            if back is not cur:  # a kept step retracted (Run.advance): pause again
                backoff = min(2 * backoff or 1, opts.max_backoff)
                wait = backoff - 1  # this pass is one of the steps
            cur = nxt
            continue
        back, e1 = run.advance(cur)
        if e1 is None:
            return
        run.em_step(e1)
        if back is not cur:  # as above
            backoff = min(2 * backoff or 1, opts.max_backoff)
            wait = backoff - 1
            cur = e1
            continue
        if run.finished:
            return
        x0, x1, x2 = cur.x, cur.image, e1.image
        r = x1 - x0
        v = (x2 - x1) - r
        alpha = step_length(r, v, opts.scheme)
        if math.isnan(alpha):
            alpha = step_min
        alpha = max(step_min, min(step_max, alpha))
        if opts.reference == "x2":
            back, e2 = run.advance(e1)
            if e2 is None:
                return
            run.em_step(e2)
            if back is not e1:  # as above
                backoff = min(2 * backoff or 1, opts.max_backoff)
                wait = backoff - 1
                cur = e2
                continue
        else:  # compare with x1; a fallback continues from x1, so x2 is the next pass
            e2 = e1
        if abs(alpha - 1.0) <= 0.01:
            cur = e2  # plain EM
        else:
            if run.finished:
                return
            proposal = run.propose(x0 + (2.0 * alpha) * r + (alpha * alpha) * v, e2)
            if proposal is not None:
                cur = proposal
                backoff = 0
            else:
                cur = e2
                backoff = min(2 * backoff or 1, opts.max_backoff)
                wait = backoff
                if alpha == step_max:
                    step_max = max(opts.step_max0, step_max / opts.mstep)
                alpha = 1.0
        # Bounded: at a fixed point v ~ 0 puts every step at the bound, and 4**512
        # overflowed to inf after ~500 such cycles (alpha = inf, then inf * 0 = nan
        # in the proposal: a RuntimeWarning from a long fit at tol = 0).
        if alpha == step_max:
            step_max = min(step_max * opts.mstep, STEP_LIMIT)
        if step_min < 0 and alpha == step_min:
            step_min = max(step_min * opts.mstep, -STEP_LIMIT)
