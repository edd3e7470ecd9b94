"""Quasi-Newton acceleration with ``q`` secant pairs (Zhou, Alexander & Lange 2011).

EM's fixed point solves ``G(x) = x - F(x) = 0``. Newton's step from ``x`` is
``x - (I - dF)^-1 (x - F(x))``; near the fixed point ``dF`` is unknown, but
every two consecutive EM steps give a secant pair: ``u = F(y) - y`` and
``v = F(F(y)) - F(y)`` satisfy ``dF u ~ v``. With the last ``q`` pairs as the
columns of ``U`` and ``V``, the smallest (Frobenius) ``M`` with ``M U = V`` is
``V (U^T U)^-1 U^T``, and by the Woodbury identity ``(I - M)^-1 = I +
V (U^T U - U^T V)^-1 U^T``, so the step is

    x' = F(b) + V (U^T (U - V))^-1 U^T (F(b) - b),

from a base point ``b`` (Zhou, Alexander & Lange 2011, eq. 5; the ``qn`` method
of the R package turboEM, which uses the same formula). It is the EM point
``F(b)`` plus a correction, which vanishes when ``V = 0``; for one linear
direction with rate ``lambda`` it lands on the fixed point exactly. Unlike
SQUAREM's one step length it extrapolates along ``q`` directions at once, each
at its own rate.

Safeguard and passes, as :mod:`~fastem._em.squarem` (see
:mod:`fastem._em.fixed_point`): from the current point ``x`` (its pass done, so
``F(x)`` known) a cycle visits ``F(x)``, which gives ``F(F(x))`` and a new pair;
with ``reference="x1"`` (the default) the base is ``b = x`` and ``x'`` replaces
``F(x)``: it is kept only if feasible and ``l(x') >= l(F(x))``, otherwise the
cycle ends at ``F(x)``, whose pass is done. Two passes per cycle. With
``reference="x2"`` the cycle also visits ``F(F(x))`` (a second pair), the base
is ``F(x)``, and ``x'`` replaces ``F(F(x))``: three passes, the comparison
turboEM makes (it keeps the better of ``x'`` and ``F(F(x))``). In both the
proposal generalizes the EM point it is compared with. Every run of consecutive
EM points (fallbacks and pauses included) adds its pairs; a kept ``x'`` starts
a new run. The small system is solved by least squares, dropping directions
whose singular value is below ``1e-8`` of the largest (nearly parallel pairs);
a non-finite one gives no proposal: the cycle is plain EM. So does, with
``guard`` (the default), a secant model that does not contract: the rates it
implies, the eigenvalues of ``(U^T U)^-1 U^T V`` (``dF`` on the pairs' span),
must have real part below 1. Where EM speeds up (leaving a saddle region, rates
above 1) Newton's step points backwards and every proposal would be rejected,
a pass each: on the sweep's mid-D2-K4-tied problem, 4 pairs without the guard
took 961 passes to the maximum, with it 108 (plain EM 1,310). After a rejection,
``max_backoff`` (0 by default) plain EM steps may follow, doubling while
rejections continue, as in SQUAREM here.

``GaussianMixture(acceleration="qn")`` runs it with these defaults (4 pairs,
``x1``, the guard), as do the HMMs (in a probability frame, docs/hmm.md) and
the CLI. On the
convergence sweep (docs/acceleration.md) it reached plain EM's best value on
27 of 28 problems with a median 5.3x fewer passes (SQUAREM's default: 28,
3.7x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fixed_point import Evaluation, Run

__all__ = ["QuasiNewtonOptions", "qn_step", "run_qn"]

RCOND = 1e-8


@dataclass(frozen=True)
class QuasiNewtonOptions:
    """Number of secant pairs and safeguard options.

    Attributes
    ----------
    q : int
        Secant pairs kept (the newest ``q``).
    reference : {'x1', 'x2'}
        The EM point the proposal replaces and must match: ``F(x)`` (two
        passes per cycle) or ``F(F(x))`` (three).
    max_backoff : int
        Most plain EM steps after a rejected proposal before the next one
        (1 after a first rejection, doubling while they continue; 0: none).
    restart : bool
        After a rejected proposal keep only the newest pair.
    guard : bool
        Propose only while the secant model contracts (see the module docs).
    """

    q: int = 4
    reference: str = "x1"
    max_backoff: int = 0
    restart: bool = False
    guard: bool = True

    def __post_init__(self) -> None:
        if int(self.q) < 1:
            raise ValueError(f"need q >= 1, got {self.q!r}")
        if self.reference not in ("x1", "x2"):
            raise ValueError(f"reference must be 'x1' or 'x2', got {self.reference!r}")
        if int(self.max_backoff) < 0:
            raise ValueError("need max_backoff >= 0")


def qn_step(U: np.ndarray, V: np.ndarray, base: np.ndarray, image: np.ndarray) -> np.ndarray | None:
    """The quasi-Newton point ``image + V (U^T (U - V))^-1 U^T (image - base)``.

    Parameters
    ----------
    U, V : ndarray of shape (n_params, m)
        Secant pairs as columns: ``U[:, i] = F(y_i) - y_i``, ``V[:, i] =
        F(F(y_i)) - F(y_i)``.
    base, image : ndarray of shape (n_params,)
        ``b`` and ``F(b)``.

    Returns
    -------
    ndarray or None
        None where the pairs are degenerate or the result is not finite.
    """
    # Each pair scaled to a unit u: the same secant relation, a better conditioned
    # m x m system (the pairs' norms shrink geometrically along the fit).
    norms = np.sqrt(np.einsum("ij,ij->j", U, U))
    if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
        return None
    Us, Vs = U / norms, V / norms
    system = Us.T @ (Us - Vs)
    rhs = Us.T @ (image - base)
    if not (np.all(np.isfinite(system)) and np.all(np.isfinite(rhs))):
        return None
    with np.errstate(all="ignore"):
        # Least squares with singular values below RCOND of the largest dropped: the
        # pairs become nearly parallel as the slowest direction takes over (and are
        # dependent when q exceeds the parameters), where a plain solve blows up.
        try:
            coef = np.linalg.lstsq(system, rhs, rcond=RCOND)[0]
        except np.linalg.LinAlgError:  # the SVD did not converge
            return None
        x = image + Vs @ coef
    return x if np.all(np.isfinite(x)) else None


def _contracting(U: np.ndarray, V: np.ndarray) -> bool:
    """The secant model's rates, the eigenvalues of ``(U^T U)^-1 U^T V`` (dF on the
    pairs' span), all have real part below 1: Newton's step then goes forward."""
    with np.errstate(all="ignore"):
        try:
            rates = np.linalg.eigvals(np.linalg.lstsq(U, V, rcond=None)[0])
        except (np.linalg.LinAlgError, ValueError):  # no convergence, or non-finite pairs
            return False
    return bool(np.all(np.isfinite(rates)) and np.all(rates.real < 1.0))


def run_qn(run: Run, x0: np.ndarray, opts: QuasiNewtonOptions) -> None:
    """Safeguarded quasi-Newton cycles until ``run`` is finished (see the module docs)."""
    q = int(opts.q)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def add_pair(y: Evaluation, fy: Evaluation) -> None:
        # y and fy = its EM image, both passed: (F(y) - y, F(F(y)) - F(y))
        pairs.append((fy.x - y.x, fy.image - fy.x))
        if len(pairs) > q:
            del pairs[0]

    def step(prev: Evaluation) -> tuple[Evaluation, Evaluation | None]:
        """One plain EM pass from ``prev``, adding its pair; ``(prev, F(prev))``, or
        after a retraction (:meth:`Run.advance`) the point it went back to and its
        image, the pairs starting again there."""
        back, nxt = run.advance(prev)
        if nxt is not None:
            run.em_step(nxt)
            if back is not prev:
                pairs.clear()
            add_pair(back, nxt)
        return back, nxt

    cur = run.evaluate(x0)
    if cur is None:
        return
    run.em_step(cur)
    backoff = wait = 0
    while not run.finished:
        cur, e1 = step(cur)
        if e1 is None:
            return
        if wait > 0:  # plain EM steps after rejections
            wait -= 1
            cur = e1
            continue
        base, ref = cur, e1
        if opts.reference == "x2":
            if run.finished:
                return
            back, e2 = step(e1)
            if e2 is None:
                return
            if back is not e1:  # retracted: on from there (the pairs restart)
                cur = e2
                continue
            base, ref = e1, e2
        if run.finished:
            return
        U = np.stack([u for u, _ in pairs], axis=1)
        V = np.stack([v for _, v in pairs], axis=1)
        x = qn_step(U, V, base.x, ref.x)
        if x is not None and opts.guard and not _contracting(U, V):
            x = None
        proposal = None if x is None else run.propose(x, ref)
        if proposal is not None:
            cur = proposal
            backoff = 0
        else:
            cur = ref
            if opts.restart:  # the pairs mislead here: start again from the newest
                del pairs[:-1]
            if x is not None and opts.max_backoff:
                backoff = min(2 * backoff or 1, opts.max_backoff)
                wait = backoff
