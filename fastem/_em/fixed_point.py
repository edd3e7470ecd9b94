"""The model-agnostic EM driver: a fixed-point map over a flat parameter vector.

A model hands the driver a :class:`FixedPointProblem`: given a parameter vector
``x`` it runs **one pass** over the data and returns the objective at ``x``
(the log-likelihood, say) together with the EM map's image ``F(x)`` (the
M-step on that pass's statistics). Nothing here knows what the vector means;
the mixture and the hidden Markov models pack their parameters into it.

Pass accounting
---------------
A pass yields the objective of its *input* and the map at that input, so every
point the driver visits costs exactly one pass, whatever the scheme:

- plain EM visits ``x, F(x), F(F(x)), ...``;
- an accelerated scheme (:mod:`~fastem._em.squarem`, :mod:`~fastem._em.anderson`,
  :mod:`~fastem._em.qn`) also visits extrapolated points. Each extrapolation
  ``x'`` is judged against one plain EM point ``e`` from the same start (the one
  it generalizes, which the scheme gives back for step length 0 or 1, or with
  SQUAREM's ``reference="x1"`` the cycle's first EM step), and both are
  visited, so both objectives are exact. The safeguard keeps ``x'``
  only if it is feasible and ``l(x') >= l(e)``; otherwise the iterate is ``e``,
  whose pass is already done. An infeasible ``x'`` costs no pass at all.

So the objective never decreases along the accepted iterates, an accepted
extrapolation is never below the EM point it is judged against, and ``n_passes`` counts
every pass, rejected extrapolations included. :class:`FixedPointResult` records,
per pass, the best objective seen so far (a lower bound on the objective of the
returned point) and the raw objective of that pass.

The result is the best accepted point ``x`` with its image ``F(x)``: a model
returns the image (the parameters after the last M-step) with ``l(x)`` as its
lower bound, as scikit-learn's EM does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .stopping import StoppingRule

__all__ = [
    "ACCELERATIONS",
    "METHODS",
    "Evaluation",
    "FixedPointProblem",
    "FixedPointResult",
    "run_fixed_point",
]

ACCELERATIONS = (None, "squarem", "anderson")
# Every scheme the driver runs, all offered by GaussianMixture, the HMMs and
# the CLI; ACCELERATIONS are the older three (docs/acceleration.md).
METHODS = (*ACCELERATIONS, "qn", "mpe")


@dataclass
class Evaluation:
    """What one pass at a point returns.

    Attributes
    ----------
    x : ndarray
        The point (parameter vector) the pass was run at.
    objective : float
        The objective at ``x``.
    image : ndarray or None
        The EM map at ``x``; None if the M-step failed there (only allowed for
        an extrapolated point: the driver then rejects it).
    payload : object
        Whatever the problem wants back with the image if ``x`` ends up the
        returned point (a mixture keeps its exact M-step parameters here).
    """

    x: np.ndarray
    objective: float
    image: np.ndarray | None
    payload: Any = None


class FixedPointProblem(Protocol):
    """The model side of the driver."""

    def evaluate(self, x: np.ndarray, extrapolated: bool) -> Evaluation | None:
        """One pass at ``x``.

        Return None, without running a pass, when ``extrapolated`` is true and
        ``x`` is outside the parameter space (the driver falls back to the EM
        point). Points the driver did not extrapolate are images of the map:
        errors there are the model's to raise.
        """
        ...


@dataclass
class FixedPointResult:
    """The outcome of :func:`run_fixed_point`.

    Attributes
    ----------
    x : ndarray or None
        The best accepted point visited (None if no pass ran).
    objective : float
        Its objective (``-inf`` if no pass ran).
    image : ndarray or None
        ``F(x)``: the parameters to return.
    payload : object
        The problem's payload for ``image``.
    lower_bounds : list of float
        One per pass: the best objective so far, non-decreasing.
    objectives : list of float
        One per pass: the objective at that pass's point (a rejected
        extrapolation's may be lower).
    kinds : list of str
        One per pass: ``"em"`` (a point of the EM map), ``"accepted"`` or
        ``"rejected"`` (an extrapolation), ``"abandoned"`` (the passes after a
        kept extrapolation from which EM failed, the failed one with objective
        NaN: that extrapolation is then ``"rejected"``, see :meth:`Run.advance`).
        The objectives of the ``"em"`` and ``"accepted"`` passes are the path
        the scheme follows: non-decreasing.
    n_passes : int
    converged : bool
        The stopping rule fired before the pass budget ran out.
    n_accepted, n_rejected : int
        Extrapolations kept, and those that fell back to the EM point
        (infeasible ones included).
    """

    x: np.ndarray | None = None
    objective: float = -math.inf
    image: np.ndarray | None = None
    payload: Any = None
    lower_bounds: list[float] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    n_passes: int = 0
    converged: bool = False
    n_accepted: int = 0
    n_rejected: int = 0


class Run:
    """Book-keeping shared by the schemes: passes, budget, best point, stopping.

    Parameters
    ----------
    problem : FixedPointProblem
    max_passes : int
    rule : StoppingRule
    previous_objective : float or None
        The objective of the point whose image the start is (a warm start),
        so the first EM step can already be judged.
    on_pass : callable or None
        ``on_pass(n_passes, lower_bound, change)`` after every pass.
    follow_path : bool
        For a map that is no ascent of the objective (see :func:`run_fixed_point`).
    """

    def __init__(
        self,
        problem: FixedPointProblem,
        max_passes: int,
        rule: StoppingRule,
        previous_objective: float | None = None,
        on_pass: Callable[[int, float, float], None] | None = None,
        follow_path: bool = False,
    ) -> None:
        self.problem = problem
        self.follow_path = bool(follow_path)
        self.max_passes = int(max_passes)
        self.rule = rule
        self.on_pass = on_pass
        self.result = FixedPointResult()
        self.exhausted = self.max_passes <= 0
        # The EM points the last kept extrapolations replaced, and those
        # extrapolations' pass indices (see advance).
        self._kept: list[tuple[Evaluation, int]] = []
        #: After a retraction the fit goes on as plain EM: ``propose`` refuses
        #: every extrapolation (no pass, not counted).
        self.retracted = False
        rule.reset(previous_objective)
        self._previous = -math.inf if previous_objective is None else float(previous_objective)

    @property
    def finished(self) -> bool:
        """Converged or out of passes: the scheme must stop."""
        return self.result.converged or self.exhausted

    def evaluate(self, x: np.ndarray) -> Evaluation | None:
        """One pass at a plain EM point ``x`` (None: out of passes)."""
        if self.exhausted:
            return None
        ev = self.problem.evaluate(x, False)
        if ev is None:
            raise RuntimeError("the problem refused a point of the EM map")
        res = self.result
        # A plain EM point is the next iterate (a fallback at worst); it becomes
        # the *returned* point if it is the best: rounding can make an EM step
        # lose ~1e-16, and the returned point must match its bound. With
        # follow_path, a larger loss (no rounding: the map does not ascend the
        # objective) makes it the returned point too, as plain EM returns its
        # last iterate; without, the fit returns the best point, maybe an early one.
        if ev.image is not None and (res.x is None or self._follows(ev.objective)):
            self._set_best(ev)
        self._record(ev, "em")
        return ev

    def propose(self, x: np.ndarray, reference: Evaluation) -> Evaluation | None:
        """The safeguard: one pass at the extrapolation ``x``, which replaces the
        EM point ``reference``; return its evaluation if it is kept, else None.

        ``x`` is kept only if it is feasible (an infeasible point costs no pass),
        its map is defined, and its objective is at least ``reference``'s.
        """
        res = self.result
        if self.exhausted or self.retracted:
            return None
        ev = self.problem.evaluate(x, True)
        ok = (
            ev is not None
            and ev.image is not None
            and math.isfinite(ev.objective)
            and ev.objective >= reference.objective
        )
        if ok:
            res.n_accepted += 1
            if self._follows(ev.objective):
                self._set_best(ev)
            self.rule.reset(ev.objective)  # a jump: EM steps are judged afresh from here
        else:
            res.n_rejected += 1
        if ev is not None:
            self._record(ev, "accepted" if ok else "rejected")
        if ok:  # where advance can step back to (no payload: only its image is needed)
            kept = Evaluation(reference.x, reference.objective, reference.image)
            self._kept = [*self._kept[1 - self.MAX_RETRACTIONS :], (kept, res.n_passes - 1)]
        return ev if ok else None

    #: What a model raises where its EM map is undefined (a collapsed component,
    #: a singular covariance, a non-finite value); ``LinAlgError`` is a ValueError.
    FAILURES = (ValueError, ArithmeticError)
    #: How many kept extrapolations :meth:`advance` can step back over.
    MAX_RETRACTIONS = 64

    def advance(self, cur: Evaluation) -> tuple[Evaluation, Evaluation | None]:
        """One pass at the next EM point ``F(cur)``: ``(cur, evaluation)``.

        Where the model fails there (EM cannot go on: with ``reg_covar=0`` a
        long step can take a component into the basin of a collapse, whose
        M-step a few EM steps later is singular, where plain EM from the same
        start fits) and an extrapolation was kept on the way, the last one is
        retracted: counted as rejected, the passes since then no longer part of
        the path (kind ``"abandoned"``; the failed pass counts, objective NaN),
        and the chain goes on from the EM point that extrapolation replaced,
        ``reference``: ``(reference, evaluation of F(reference))``, stepping
        back further if that fails too. From then on the fit is plain EM
        (:meth:`propose` refuses every extrapolation), so an accelerated fit
        fails only where plain EM from the same start does (or after more than
        :attr:`MAX_RETRACTIONS` kept steps). The best point is left as it is
        (every point visited has an exact objective and image). A failure with
        no kept extrapolation to step back over is the model's to raise.
        """
        try:
            return cur, self.evaluate(cur.image)
        except self.FAILURES:
            if not self._kept:
                raise
        reference, index = self._kept.pop()
        res = self.result
        res.kinds[index] = "rejected"
        res.n_accepted -= 1
        res.n_rejected += 1
        res.kinds[index + 1 :] = ["abandoned"] * (len(res.kinds) - index - 1)
        self._record(Evaluation(cur.image, math.nan, None), "abandoned")
        self.rule.reset(reference.objective)  # the chain resumes at reference
        self.retracted = True
        return self.advance(reference)

    def _record(self, ev: Evaluation, kind: str) -> None:
        res = self.result
        previous = res.lower_bounds[-1] if res.lower_bounds else self._previous
        res.n_passes += 1
        res.objectives.append(ev.objective)
        res.kinds.append(kind)
        res.lower_bounds.append(res.objective)
        if res.n_passes >= self.max_passes:
            self.exhausted = True
        if self.on_pass is not None:
            self.on_pass(res.n_passes, res.objective, res.objective - previous)

    #: A loss of the path's objective above ``ROUNDING * (1 + |l|)`` is not
    #: rounding (the stopping rules' ``noise``; float32 fits lose ~2e-8 relative).
    ROUNDING = 1e-7

    def _follows(self, objective: float) -> bool:
        """Whether a point of the path with ``objective`` becomes the returned one:
        at least the best so far, or (``follow_path``) below it by more than rounding."""
        best = self.result.objective
        if objective >= best:
            return True
        return self.follow_path and best - objective > self.ROUNDING * (1.0 + abs(best))

    def _set_best(self, ev: Evaluation) -> None:
        res = self.result
        res.x, res.objective, res.image, res.payload = ev.x, ev.objective, ev.image, ev.payload

    def em_step(self, ev: Evaluation) -> None:
        """``ev`` is the next plain EM step of the current chain: test convergence."""
        if self.rule.update(ev.objective):
            self.result.converged = True


def run_plain(run: Run, x0: np.ndarray) -> None:
    """Plain EM: ``x, F(x), F(F(x)), ...`` until the rule fires or passes run out."""
    x = x0
    while not run.finished:
        ev = run.evaluate(x)
        if ev is None:
            break
        run.em_step(ev)
        x = ev.image


def run_fixed_point(
    problem: FixedPointProblem,
    x0: np.ndarray,
    *,
    method: str | None,
    max_passes: int,
    rule: StoppingRule,
    previous_objective: float | None = None,
    on_pass: Callable[[int, float, float], None] | None = None,
    options: dict | None = None,
    follow_path: bool = False,
) -> FixedPointResult:
    """Iterate the EM map of ``problem`` from ``x0``, plain or accelerated.

    Parameters
    ----------
    problem : FixedPointProblem
    x0 : ndarray of shape (n_params,)
        The start (float64); its pass is the first.
    method : {None, 'squarem', 'anderson', 'qn', 'mpe'}
        None: plain EM. See :mod:`fastem._em.squarem`, :mod:`fastem._em.anderson`,
        :mod:`fastem._em.qn` and :mod:`fastem._em.vector`.
    max_passes : int
        Budget of passes (each visited point costs one).
    rule : StoppingRule
    previous_objective : float or None
        See :class:`Run`.
    on_pass : callable or None
        ``on_pass(n_passes, lower_bound, change)`` after every pass.
    options : dict or None
        Keyword options of the scheme (its ``Options`` dataclass).
    follow_path : bool, default=False
        False: the result is the best point visited, and ``lower_bounds`` never
        decrease. True: a point of the path (an EM point, a kept extrapolation)
        that is below the best by more than rounding (``1e-7 (1 + |l|)``) becomes
        the current result all the same, so that a map that is no ascent of the
        objective (EM under a ``reg_covar`` that matters next to the data's
        variances) returns the end of its path, as plain EM does, and not an
        early point with a higher objective (with the default, an accelerated
        mixture on data in units of 2e-3 returned its first M-step after 15
        passes); ``lower_bounds`` then fall where the path does. For an ascent
        map the two agree: its losses are rounding.

    Returns
    -------
    FixedPointResult
    """
    if method not in METHODS:
        raise ValueError(
            f"Invalid value for 'acceleration': {method!r}; expected one of {METHODS}."
        )
    run = Run(problem, max_passes, rule, previous_objective, on_pass, follow_path)
    x0 = np.asarray(x0, dtype=np.float64)
    if method is None:
        run_plain(run, x0)
    elif method == "squarem":
        from .squarem import SquaremOptions, run_squarem

        run_squarem(run, x0, SquaremOptions(**(options or {})))
    elif method == "qn":
        from .qn import QuasiNewtonOptions, run_qn

        run_qn(run, x0, QuasiNewtonOptions(**(options or {})))
    elif method == "mpe":
        from .vector import VectorOptions, run_vector

        run_vector(run, x0, VectorOptions(**(options or {})))
    else:
        from .anderson import AndersonOptions, run_anderson

        run_anderson(run, x0, AndersonOptions(**(options or {})))
    return run.result
