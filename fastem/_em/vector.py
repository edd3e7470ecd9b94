"""Vector extrapolation over the last EM iterates: RRE and MPE, cycled (Smith, Ford & Sidi 1987).

A chain of consecutive EM points ``x_0, ..., x_m`` (each passed, so each image
``x_{i+1} = F(x_i)`` is known, ``x_{m+1}`` included) has residuals ``u_i =
x_{i+1} - x_i``. Near the fixed point ``x*`` the residuals are ``u_i ~ (dF -
I) (x_i - x*)``; if the error lives in the span of ``m`` eigenvectors of
``dF``, a combination ``sum c_i u_i = 0`` with ``sum c_i = 1`` exists, and
``sum c_i x_{i+1}`` is ``x*`` exactly. Reduced rank extrapolation (RRE)
takes the ``c`` of smallest ``|sum c_i u_i|``; minimal polynomial
extrapolation (MPE) fixes ``c_m`` and fits the others by least squares, then
normalizes. Both remove ``m`` slow directions at once, each at its own rate,
where SQUAREM's one step length removes one; a cycle is ``m`` EM steps and a
proposal (Sidi's cycling mode: the next chain starts at the accepted point).

Safeguard and passes, as :mod:`~fastem._em.qn` with ``reference="x1"`` (see
:mod:`fastem._em.fixed_point`): the proposal ``x'`` uses the chain up to
``x_{m+1}`` (the image of the last passed point, not passed) and replaces the
last passed EM point ``x_m``; it is kept only if feasible and ``l(x') >=
l(x_m)``, and a kept ``x'`` starts a new chain. Otherwise the chain goes on
(its next pass is ``x_{m+1}``) and the window slides: the next proposal, from
the newest ``m + 1`` points, comes after ``1, 2, ..., max_backoff`` more EM
steps (doubling while rejections continue). A cycle is ``m + 1`` passes. The
least-squares problem (``m`` unknowns) is solved on unit-scaled columns
(the residuals' norms shrink geometrically), singular values below ``1e-10``
of the largest dropped; a degenerate or non-finite one gives no proposal (the
chain goes on as plain EM). With ``guard`` (the default) the chain's rates,
the eigenvalues of ``dF`` on the residuals' span (``(U_0^T U_0)^-1 U_0^T
U_1`` with ``U_0 = [u_0 .. u_{m-1}]``, ``U_1 = [u_1 .. u_m]``), must have real
part below 1, as in the quasi-Newton guard: where EM speeds up the
extrapolation points backwards.

``GaussianMixture(acceleration="mpe")`` runs it with these defaults (MPE,
``m = 3``, the guard; ``kind="rre"`` in :class:`VectorOptions` for RRE),
extrapolating the means in the natural frame. The defaults are the best of
the variants measured on the convergence sweep's slowest quarter (RRE and MPE,
``m`` 2 to 8, without the guard, shorter pauses): docs/acceleration.md,
"Session 9: the slowest quarter".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fixed_point import Evaluation, Run
from .qn import _contracting as _secant_contracting

__all__ = ["VectorOptions", "extrapolate", "run_vector"]

RCOND = 1e-10


@dataclass(frozen=True)
class VectorOptions:
    """Polynomial, chain length and safeguard options.

    Attributes
    ----------
    order : int
        ``m``: EM steps per cycle (the proposal combines ``m + 1`` residuals).
    kind : {'rre', 'mpe'}
        Reduced rank or minimal polynomial extrapolation.
    max_backoff : int
        Most EM steps after a rejected proposal before the next one from the
        slid window (1 after a first rejection, doubling while they continue).
    guard : bool
        Propose only while the chain's rates are below 1 (see the module docs).
    """

    order: int = 3
    kind: str = "mpe"
    max_backoff: int = 2
    guard: bool = True

    def __post_init__(self) -> None:
        if int(self.order) < 1:
            raise ValueError(f"need order >= 1, got {self.order!r}")
        if self.kind not in ("rre", "mpe"):
            raise ValueError(f"kind must be 'rre' or 'mpe', got {self.kind!r}")
        if int(self.max_backoff) < 1:
            raise ValueError("need max_backoff >= 1")


def extrapolate(points: np.ndarray, images: np.ndarray, kind: str = "mpe") -> np.ndarray | None:
    """The RRE or MPE point ``sum c_i F(x_i)`` of a chain.

    Parameters
    ----------
    points, images : ndarray of shape (n_params, m + 1)
        ``x_i`` and ``F(x_i)`` as columns (consecutive EM points: ``images[:, i]``
        is ``points[:, i + 1]`` for ``i < m``).
    kind : {'rre', 'mpe'}

    Returns
    -------
    ndarray or None
        None where the residuals are degenerate or the result is not finite.
    """
    U = images - points
    norms = np.sqrt(np.einsum("ij,ij->j", U, U))
    if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
        return None
    Us = U / norms
    with np.errstate(all="ignore"):
        try:
            if kind == "rre":
                # min |U c| with sum c = 1, as c_i = g_i (i < m), c_m = 1 - sum g:
                # min |u_m + (U_{<m} - u_m) g|; columns scaled to unit length
                D = U[:, :-1] - U[:, -1:]
                scale = np.sqrt(np.einsum("ij,ij->j", D, D))
                if not np.all(scale > 0):
                    return None
                g = np.linalg.lstsq(D / scale, -U[:, -1], rcond=RCOND)[0] / scale
                c = np.append(g, 1.0 - np.sum(g))
            else:
                # c_m = 1, the others by least squares: min |U_{<m} c + u_m|, normalized
                head = np.linalg.lstsq(Us[:, :-1], -Us[:, -1], rcond=RCOND)[0]
                d = np.append(head / norms[:-1], 1.0 / norms[-1])
                total = float(np.sum(d))
                if not np.isfinite(total) or abs(total) < 1e-300:
                    return None
                c = d / total
        except np.linalg.LinAlgError:  # the SVD did not converge
            return None
        x = images @ c
    return x if np.all(np.isfinite(x)) else None


def _contracting(U: np.ndarray) -> bool:
    """The rates of ``dF`` on the chain's span (``u_{i+1} = dF u_i``), all with
    real part below 1: quasi-Newton's guard with consecutive residuals as pairs."""
    return _secant_contracting(U[:, :-1], U[:, 1:])


def run_vector(run: Run, x0: np.ndarray, opts: VectorOptions) -> None:
    """Safeguarded cycled RRE / MPE until ``run`` is finished (see the module docs)."""
    m = int(opts.order)
    cur = run.evaluate(x0)
    if cur is None:
        return
    run.em_step(cur)
    chain: list[Evaluation] = [cur]  # consecutive EM points since the last jump
    backoff = wait = 0
    while not run.finished:
        back, nxt = run.advance(cur)
        if nxt is None:
            return
        if back is not cur:  # a kept proposal was retracted: the chain resumes at back
            chain = [back]
        run.em_step(nxt)
        cur = nxt
        chain.append(cur)
        if len(chain) > m + 1:
            del chain[0]
        if wait > 0:
            wait -= 1
            continue
        if len(chain) < m + 1 or run.finished:
            continue
        points = np.stack([e.x for e in chain], axis=1)
        images = np.stack([e.image for e in chain], axis=1)
        x = extrapolate(points, images, opts.kind)
        if x is not None and opts.guard and not _contracting(images - points):
            x = None
        if x is None:
            continue
        proposal = run.propose(x, cur)
        if proposal is not None:
            cur = proposal
            chain = [cur]
            backoff = 0
        else:
            backoff = min(2 * backoff or 1, opts.max_backoff)
            wait = backoff - 1  # the next pass is already one EM step
