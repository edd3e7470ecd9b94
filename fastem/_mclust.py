"""mclust's 14 covariance structures: exact M-steps on sufficient statistics, and
parameter counts.

Each component covariance is ``Sigma_k = lambda_k D_k A_k D_k^T``: volume
``lambda_k = det(Sigma_k)^(1/d)`` (mclust's ``scale``), shape ``A_k`` diagonal with
determinant 1, orientation ``D_k`` orthogonal. A model name gives, in that order,
whether volume, shape and orientation are Equal across components, Variable, or
the Identity (Celeux & Govaert 1995, "Gaussian parsimonious clustering models",
Pattern Recognition 28(5)).

Given a pass's :class:`~fastem._stats.Stats`, the weights and means are the usual
weighted averages (they do not depend on the covariance structure), and with
``W_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T`` the covariances maximize

    Q = -1/2 sum_k [ n_k log det Sigma_k + tr(W_k Sigma_k^-1) ]

over the structure (:func:`covariance_objective`). Closed forms exist for EII, VII,
EEI, EVI, VVI, EEE, EEV, EVV and VVV. VEI, VEE and VEV alternate the two closed-form
block updates of Celeux & Govaert (volumes given the shape, shape given the volumes).
EVE and VVE alternate the closed-form volumes and shapes given the common
orientation with an update of the orientation: by default a sweep of exact plane
(Jacobi) rotations, or, with ``orientation_method="mm"``, the majorize-minimize step
of Browne & McNicholas (2014, "Estimating common principal components in high
dimensions", ADAC 8), which is cheaper per step but needs thousands of steps at
d = 64. Every update maximizes ``Q`` over its block exactly (the MM step decreases a
majorizer touching ``-Q``), so ``Q`` never decreases across inner iterations: the
iterative models are generalized M-steps whatever ``max_iter`` is, and exact M-steps
when iterated to ``tol`` (the default).

``reg_covar`` is added to each component's empirical covariance ``W_k / n_k``
*before* the structured fit, i.e. ``W_k`` is replaced by ``W_k + n_k reg I``. That is
the exact maximizer of ``Q - reg/2 sum_k n_k tr(Sigma_k^-1)`` (a ridge on the
precisions), so the result keeps its structure, is positive definite whenever
``reg > 0``, and for VVV, VVI, VII and EEE equals scikit-learn's "covariance plus
``reg`` on the diagonal". Adding ``reg`` to the fitted covariances instead would
break equal shapes for VEI, VEE and VEV (``lambda_k A + reg I`` has a shape that
depends on ``lambda_k``).

Diagonal models (the first six) need only diagonal second moments and run on the
diag kernels; the others need full moments and run on the full kernels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._covariance import DIAGONAL_MODELS as _DIAGONAL_MODELS
from ._covariance import MCLUST_MODELS, SKLEARN_ALIASES, _singular_error, precision_cholesky

if TYPE_CHECKING:  # _stats will dispatch here: no import cycle at run time
    from ._stats import Stats

MODEL_NAMES = MCLUST_MODELS
DIAGONAL_MODELS = _DIAGONAL_MODELS
ALIASES = SKLEARN_ALIASES
ITERATIVE_MODELS = ("VEI", "VEE", "VEV", "EVE", "VVE")

DEFAULT_TOL = 1e-10
_PLANE_ITERATIONS = 8
DEFAULT_MAX_ITER = 10_000


def canonical_model(name: str) -> str:
    """The mclust name of a covariance structure (scikit-learn aliases mapped).

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES` (any case) or a key of :data:`ALIASES`.

    Returns
    -------
    str
    """
    if not isinstance(name, str):
        raise ValueError(f"covariance_type must be a string, got {name!r}")
    if name in ALIASES:
        return ALIASES[name]
    upper = name.upper()
    if upper in MODEL_NAMES:
        return upper
    raise ValueError(
        f"unknown covariance_type {name!r}: expected one of {', '.join(MODEL_NAMES)} "
        f"or {', '.join(ALIASES)}"
    )


def is_diagonal(model: str) -> bool:
    """Whether a model's covariances are diagonal (diag kernels, diagonal moments)."""
    return canonical_model(model) in DIAGONAL_MODELS


def n_covariance_parameters(model: str, n_components: int, n_features: int) -> int:
    """Free covariance parameters, as mclust's ``nVarParams(modelName, d, G)``.

    Counted as volume (1 or G) + shape (0, d-1 or G(d-1)) + orientation (0,
    d(d-1)/2 or G d(d-1)/2); VVV and EEE reduce to G d(d+1)/2 and d(d+1)/2.

    Parameters
    ----------
    model : str
    n_components, n_features : int

    Returns
    -------
    int
    """
    m = canonical_model(model)
    g, d = int(n_components), int(n_features)
    volume = {"E": 1, "V": g}[m[0]]
    shape = {"I": 0, "E": d - 1, "V": g * (d - 1)}[m[1]]
    orientation = {"I": 0, "E": d * (d - 1) // 2, "V": g * d * (d - 1) // 2}[m[2]]
    return volume + shape + orientation


def n_parameters(model: str, n_components: int, n_features: int) -> int:
    """Free parameters of the mixture, as mclust's ``nMclustParams`` (unequal
    proportions, no noise): ``G - 1`` weights, ``G d`` means, and the covariances."""
    g, d = int(n_components), int(n_features)
    return n_covariance_parameters(model, g, d) + g * d + g - 1


@dataclass(frozen=True)
class MStepResult:
    """Parameters from one M-step of a structured Gaussian mixture.

    Attributes
    ----------
    model : str
        The mclust name.
    weights : ndarray of shape (k,)
    means : ndarray of shape (k, d)
    covariances : ndarray of shape (k, d) for diagonal models, else (k, d, d)
        Diagonals for the diagonal models (the diag kernels' layout), full
        matrices otherwise; components of an "E" part share it exactly.
    precisions_cholesky : ndarray, same shape as ``covariances``
        fastem's convention (``_covariance``): inverse standard deviations, or
        upper ``U`` with ``U U^T`` the precision.
    scale : ndarray of shape (k,)
        Volumes ``det(Sigma_k)^(1/d)``.
    shape : ndarray of shape (k, d)
        Diagonal of ``A_k`` (product 1), in the order of ``orientation``'s columns.
    orientation : ndarray of shape (k, d, d)
        ``D_k`` (the identity for diagonal models); ``Sigma_k = scale_k D_k
        diag(shape_k) D_k^T``. The three are None for EEE, VEE, EVV and VVV when
        ``m_step(..., decompose=False)``.
    n_iter : int
        Inner iterations (0 for closed forms).
    converged : bool
        Whether the inner iterations met ``tol`` (always True for closed forms).
    objective : tuple of float
        ``Q`` after each inner iteration (with ``reg_covar`` in the scatter), for
        the iterative models; empty for closed forms.
    """

    model: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    scale: np.ndarray | None
    shape: np.ndarray | None
    orientation: np.ndarray | None
    n_iter: int
    converged: bool
    objective: tuple[float, ...]


def weights_means_scatter(
    stats: Stats, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means, divisors ``n_k`` and scatter matrices from statistics.

    The same algebra and rounding as :func:`fastem._stats.m_step`: ``n_k`` is
    ``nk + 10 eps`` (an empty component stays finite), and the scatter about the
    new means is ``sxx - sx d^T - d sx^T + nk d d^T`` with ``d = mean - shift``.

    Returns
    -------
    weights : (k,), means : (k, d), nk : (k,), scatter : (k, d, d) or (k, d)
    """
    nk_raw = stats.nk
    from ._stats import empty_component_floor  # (_stats imports this module lazily)

    nk = nk_raw + empty_component_floor(stats, eps)
    delta = stats.sx / nk[:, None]
    means = stats.shift + delta
    weights = nk / nk.sum()
    if stats.full:
        outer_sx_d = stats.sx[:, :, None] * delta[:, None, :]
        scatter = (
            stats.sxx
            - outer_sx_d
            - np.swapaxes(outer_sx_d, 1, 2)
            + nk_raw[:, None, None] * delta[:, :, None] * delta[:, None, :]
        )
    else:
        scatter = stats.sxx - 2.0 * stats.sx * delta + nk_raw[:, None] * delta**2
    return weights, means, nk, scatter


def covariance_objective(covariances: np.ndarray, scatter: np.ndarray, nk: np.ndarray) -> float:
    """``Q = -1/2 sum_k [n_k log det Sigma_k + tr(W_k Sigma_k^-1)]``.

    The covariance part of the expected complete-data log-likelihood (the terms
    in weights, means and ``2 pi`` do not depend on the covariances).

    Parameters
    ----------
    covariances : ndarray of shape (k, d) (diagonals) or (k, d, d)
    scatter : ndarray of shape (k, d) (diagonals) or (k, d, d)
        ``W_k``; for a diagonal ``covariances`` only its diagonal matters.
    nk : ndarray of shape (k,)

    Returns
    -------
    float
        ``-inf`` if some covariance is not positive definite.
    """
    cov = np.asarray(covariances, dtype=np.float64)
    w = np.asarray(scatter, dtype=np.float64)
    if cov.ndim == 2:
        if not (cov > 0).all():
            return -np.inf
        wd = w if w.ndim == 2 else np.diagonal(w, axis1=1, axis2=2)
        return float(-0.5 * np.sum(nk[:, None] * np.log(cov) + wd / cov))
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return -np.inf
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    trace = np.trace(np.linalg.solve(cov, w), axis1=1, axis2=2)
    return float(-0.5 * np.sum(nk * logdet + trace))


def _geometric_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(np.mean(np.log(x), axis=axis))


def _descending_eigh(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of a stack of symmetric matrices."""
    values, vectors = np.linalg.eigh(w)
    return values[..., ::-1], vectors[..., ::-1]


def _check_positive(values: np.ndarray, reg_covar: float, shared: bool = False) -> None:
    """A clear error (fastem's wording) if some volume/variance is not positive."""
    values = np.asarray(values)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        if shared:
            raise _singular_error(None, reg_covar)
        raise _singular_error(int(np.argwhere(bad)[0][0]), reg_covar)


def _stalled(history: list[float]) -> bool:
    """``Q`` did not increase: in exact arithmetic it cannot decrease, so the iterates
    are at the resolution of floating point and further iterations only cycle."""
    return len(history) > 1 and history[-1] <= history[-2]


def _relative_change(new: np.ndarray, old: np.ndarray) -> float:
    """Largest relative change of positive quantities (volumes, shapes, variances)."""
    return float(np.max(np.abs(new / old - 1.0)))


def _common_shape(
    omega: np.ndarray, nk: np.ndarray, reg_covar: float, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int, bool, list[float]]:
    """Variable volumes, equal shape on fixed axes: the VEI/VEV fixed point.

    Maximizes ``-1/2 sum_k [n_k d log l_k + sum_j omega_kj / (l_k a_j)]`` with
    ``prod_j a_j = 1``, alternating its two exact block maximizers
    ``a ~ sum_k omega_k / l_k`` and ``l_k = sum_j omega_kj / a_j / (d n_k)``. In
    ``(log l, log a)`` the problem is convex, so the fixed point is the optimum.
    """
    k, d = omega.shape
    _check_positive(omega.sum(axis=1), reg_covar)
    lam = omega.sum(axis=1) / (d * nk)  # the optimum for a = 1
    a = np.ones(d)
    history: list[float] = []
    for it in range(1, max_iter + 1):
        a_raw = (omega / lam[:, None]).sum(axis=0)
        _check_positive(a_raw, reg_covar, shared=True)
        a_new = a_raw / _geometric_mean(a_raw)
        lam_new = (omega / a_new).sum(axis=1) / (d * nk)
        _check_positive(lam_new, reg_covar)
        # after the volume update sum_j omega_kj / (l_k a_j) = d n_k
        history.append(float(-0.5 * d * np.sum(nk * (np.log(lam_new) + 1.0))))
        change = max(_relative_change(lam_new, lam), _relative_change(a_new, a))
        lam, a = lam_new, a_new
        if change <= tol or _stalled(history):
            return lam, a, it, True, history
    return lam, a, max_iter, False, history


def _vee(
    w: np.ndarray, nk: np.ndarray, reg_covar: float, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int, bool, list[float]]:
    """Variable volumes, one shared det-1 matrix ``C``: the VEE fixed point.

    Alternates ``C ~ sum_k W_k / l_k`` (scaled to det 1) and
    ``l_k = tr(W_k C^-1) / (d n_k)``, each the exact maximizer of ``Q`` over its block.
    """
    k, d = w.shape[:2]
    lam = np.trace(w, axis1=1, axis2=2) / (d * nk)  # the optimum for C = I
    _check_positive(lam, reg_covar)
    c = np.eye(d)
    history: list[float] = []
    for it in range(1, max_iter + 1):
        m = np.einsum("kij,k->ij", w, 1.0 / lam)
        m = 0.5 * (m + m.T)
        try:
            chol = np.linalg.cholesky(m)
        except np.linalg.LinAlgError:
            raise _singular_error(None, reg_covar) from None
        c_new = m / np.exp(2.0 * np.log(np.diagonal(chol)).sum() / d)
        lam_new = np.einsum("kij,ji->k", w, np.linalg.inv(c_new)) / (d * nk)
        _check_positive(lam_new, reg_covar)
        history.append(float(-0.5 * d * np.sum(nk * (np.log(lam_new) + 1.0))))
        c_change = float(np.max(np.abs(c_new - c)) / np.max(np.abs(c_new)))
        change = max(_relative_change(lam_new, lam), c_change)
        lam, c = lam_new, c_new
        if change <= tol or _stalled(history):
            return lam, c, it, True, history
    return lam, c, max_iter, False, history


def _round_robin(d: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rounds of disjoint index pairs that together meet every pair once (the
    circle method): ``d - 1`` rounds for even ``d``, ``d`` for odd."""
    n = d + d % 2
    players = list(range(n))
    rounds = []
    for _ in range(n - 1):
        pairs = [(players[i], players[n - 1 - i]) for i in range(n // 2)]
        pairs = [(min(a, b), max(a, b)) for a, b in pairs if max(a, b) < d]
        if not pairs:  # d = 1
            break
        rounds.append(
            (np.array([a for a, _ in pairs], np.intp), np.array([b for _, b in pairs], np.intp))
        )
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


@functools.lru_cache(maxsize=32)
def _flat_rounds(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_round_robin` as flat arrays for the compiled sweep: ``pair_i``,
    ``pair_j`` round after round, and each round's start (one more than rounds)."""
    rounds = _round_robin(d)
    pair_i = np.concatenate([i for i, _ in rounds]) if rounds else np.zeros(0, np.int64)
    pair_j = np.concatenate([j for _, j in rounds]) if rounds else np.zeros(0, np.int64)
    start = np.cumsum([0] + [len(i) for i, _ in rounds])
    out = (pair_i.astype(np.int64), pair_j.astype(np.int64), start.astype(np.int64))
    for a in out:
        a.setflags(write=False)  # cached: shared by every call
    return out


def _compiled_sweep(implementation: str):
    """The Numba sweep, or None for the NumPy one (``"auto"``: Numba if importable)."""
    if implementation not in ("auto", "numba", "numpy"):
        raise ValueError(
            f"implementation must be 'auto', 'numba' or 'numpy', got {implementation!r}"
        )
    if implementation == "numpy":
        return None
    try:
        from .backends._numba_mclust import jacobi_sweep
    except ImportError:
        if implementation == "numba":
            raise
        return None
    return jacobi_sweep


def _orientation_diagonals(
    v: np.ndarray, nk: np.ndarray, equal_volume: bool, reg_covar: float
) -> np.ndarray:
    """``delta_k`` given ``v_k = diag(D^T W_k D)``: VVE ``v_k / n_k``; EVE ``lambda A_k``
    with ``A_k = v_k / gm(v_k)``, ``lambda = sum_k gm(v_k) / n`` (``gm`` geometric mean)."""
    if equal_volume:
        _check_positive(v, reg_covar)
        g = _geometric_mean(v)
        return (g.sum() / nk.sum()) * (v / g[:, None])
    delta = v / nk[:, None]
    _check_positive(delta, reg_covar)
    return delta


def _jacobi_sweep(
    g: np.ndarray,
    orient: np.ndarray,
    nk: np.ndarray,
    equal_volume: bool,
    reg_covar: float,
    rounds: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """One sweep of exact plane rotations of the common orientation.

    For columns ``i, j`` rotated by ``t``, ``f = sum_k tr(G_k M_k)`` (``G_k = D^T W_k
    D``, ``M_k = diag(1/delta_k)``) changes by ``P cos 2t + R sin 2t + const`` with
    ``P = sum_k (m_ki - m_kj)(G_kii - G_kjj)/2`` and ``R = sum_k (m_ki - m_kj) G_kij``,
    minimized at ``2t = atan2(-R, -P)``. Disjoint pairs do not interact, so a round
    rotates them all at once. Within a round the angles and the diagonals (their
    closed form, which a plane rotation changes only in entries ``i, j``) are
    alternated up to ``_PLANE_ITERATIONS`` times on the 2 x 2 blocks alone, before
    one dense rotation of ``G``: each step is exact for its block, so ``Q`` never
    decreases, and solving each plane's profile problem this way cuts the sweeps
    several-fold (d = 64: 162 -> 46). ``R = 0`` for all pairs is exactly the
    stationarity condition on the orthogonal group (``D^T sum_k W_k D M_k``
    symmetric).
    """
    d = orient.shape[0]
    eye = np.eye(d)
    n = nk.sum()
    for i, j in rounds:
        a, e, b = g[:, i, i], g[:, j, j], g[:, i, j]
        mid, amp = 0.5 * (a + e), 0.5 * (a - e)
        if equal_volume:  # log-sum of the diagonal entries outside the rotated pairs
            v0 = np.diagonal(g, axis1=1, axis2=2)
            _check_positive(v0, reg_covar)
            rest = np.log(v0).sum(axis=1) - np.log(a * e).sum(axis=1)
        half = np.zeros(len(i))
        # alternate the diagonals given the angles and the angles given the diagonals
        # (each exact) on the pairs' 2 x 2 blocks only: cheap, and it solves each
        # plane's profile problem, as Flury & Gautschi's inner iteration does
        for _ in range(_PLANE_ITERATIONS):
            cos2, sin2 = np.cos(2.0 * half), np.sin(2.0 * half)
            xi = mid + amp * cos2 + b * sin2
            xj = mid - amp * cos2 - b * sin2
            _check_positive(np.minimum(xi, xj), reg_covar)
            if equal_volume:  # m = 1 / (lambda v / gm(v))
                gm = np.exp((rest + np.log(xi * xj).sum(axis=1)) / d)
                scale = gm / (gm.sum() / n)
                dm = scale[:, None] * (1.0 / xi - 1.0 / xj)
            else:  # m = n_k / v
                dm = nk[:, None] * (1.0 / xi - 1.0 / xj)
            p = np.sum(dm * amp, axis=0)
            r = np.sum(dm * b, axis=0)
            new = 0.5 * np.arctan2(-r, -p)
            # where P and R are both rounding noise the two axes are interchangeable (D
            # is not identified): rotating would only spin D around, so stay put
            size = np.sum(np.abs(dm) * (np.abs(a) + np.abs(e)), axis=0)
            new[np.hypot(p, r) <= 1e-12 * size] = 0.0
            done = np.max(np.abs(new - half)) <= 1e-13
            half = new
            if done:
                break
        c, s = np.cos(half), np.sin(half)
        rot = eye.copy()
        rot[i, i] = c
        rot[j, j] = c
        rot[j, i] = s
        rot[i, j] = -s
        g = rot.T @ g @ rot  # dense products: BLAS beats sparse updates in NumPy
        orient = orient @ rot
    return orient


def _common_orientation(
    w: np.ndarray,
    nk: np.ndarray,
    equal_volume: bool,
    reg_covar: float,
    tol: float,
    max_iter: int,
    init: np.ndarray | None,
    method: str,
    implementation: str = "auto",
) -> tuple[np.ndarray, np.ndarray, int, bool, list[float]]:
    """One orientation ``D`` shared by all components: EVE and VVE.

    ``Sigma_k = D diag(delta_k) D^T``. Given ``D``, the diagonals are closed form
    (:func:`_orientation_diagonals`). Given the diagonals, ``D`` decreases
    ``f(D) = sum_k tr(W_k D M_k D^T)`` (``M_k = diag(1/delta_k)``), by

    - ``"jacobi"`` (default): one sweep of exact plane rotations
      (:func:`_jacobi_sweep`), re-fitting the diagonals between rounds;
    - ``"mm"``: one majorize-minimize step (Browne & McNicholas 2014): with
      ``W_k - alpha_k I`` or ``M_k - beta_k I`` negative semidefinite (``alpha_k``,
      ``beta_k`` the largest eigenvalues), ``f`` is a constant plus a concave
      function of ``D``, so its tangent plane at the current ``D`` majorizes it,
      and the orthogonal minimizer of that plane is ``-U V^T`` from the SVD of its
      gradient. The two majorizers alternate. Each step is cheap but the rate
      degrades with the spread of the eigenvalues: at d = 64 it needs thousands.

    Both never decrease ``Q``. One iteration is one sweep or one MM step, after
    which the diagonals are re-fitted to the new ``D``. ``implementation`` picks the
    sweep: the Numba kernel (:mod:`fastem.backends._numba_mclust`, ``"auto"`` when
    Numba is installed) or :func:`_jacobi_sweep` (``"numpy"``); they differ only in
    rounding.

    Returns ``(D, delta (k, d), n_iter, converged, objective history)``.
    """
    k, d = w.shape[:2]
    if method not in ("jacobi", "mm"):
        raise ValueError(f"orientation_method must be 'jacobi' or 'mm', got {method!r}")
    if init is None:
        _, orient = _descending_eigh(w.sum(axis=0))
    else:
        orient = np.array(init, dtype=np.float64)
        if orient.shape != (d, d):
            raise ValueError(f"orientation_init must have shape {(d, d)}, got {orient.shape}")
    alpha = np.linalg.eigvalsh(w)[:, -1] if method == "mm" else None
    compiled = _compiled_sweep(implementation) if method == "jacobi" else None
    if compiled is not None:
        flat = _flat_rounds(d)
        rounds = None
    else:
        rounds = _round_robin(d) if method == "jacobi" else None
    history: list[float] = []
    delta = prev = None
    for it in range(0, max_iter + 1):
        g = np.swapaxes(orient, 0, 1) @ w @ orient  # D^T W_k D, afresh (no drift)
        v = np.diagonal(g, axis1=1, axis2=2)
        delta_new = _orientation_diagonals(v, nk, equal_volume, reg_covar)
        history.append(float(-0.5 * np.sum(nk[:, None] * np.log(delta_new) + v / delta_new)))
        if delta is not None:
            change = max(_relative_change(delta_new, delta), float(np.max(np.abs(orient - prev))))
            # no stall rule here: along weakly identified orientations Q changes below
            # its rounding while D still moves towards the stationary point
            if change <= tol:
                return orient, delta_new, it, True, history
        delta = delta_new
        if it == max_iter:
            break
        prev = orient
        if compiled is not None:
            orient = np.array(orient, dtype=np.float64, order="C")  # rotated in place
            bad = compiled(g, orient, nk, equal_volume, *flat, _PLANE_ITERATIONS)
            if bad >= 0:
                raise _singular_error(int(bad), reg_covar)
            continue
        if method == "jacobi":
            orient = _jacobi_sweep(g, orient, nk, equal_volume, reg_covar, rounds)
            continue
        wd = w @ orient  # W_k D
        m = 1.0 / delta
        if it % 2 == 0:
            grad = np.einsum("kij,kj->ij", wd - alpha[:, None, None] * orient, m)
        else:
            grad = np.einsum("kij,kj->ij", wd, m - m.max(axis=1)[:, None])
        u, _, vt = np.linalg.svd(grad)
        orient = -(u @ vt)
    return orient, delta, max_iter, False, history


def _from_decomposition(
    scale: np.ndarray, shape: np.ndarray, orientation: np.ndarray
) -> np.ndarray:
    # (D_k diag(delta_k)) D_k^T as a batched product: BLAS, ~7x a 3-operand einsum at d=64
    cov = (orientation * (scale[:, None] * shape)[:, None, :]) @ np.swapaxes(orientation, 1, 2)
    return 0.5 * (cov + np.swapaxes(cov, 1, 2))


def _decompose(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mclust's (scale, shape, orientation) of full covariances, eigenvalues descending."""
    values, vectors = _descending_eigh(cov)
    scale = _geometric_mean(values)
    return scale, values / scale[:, None], vectors


def m_step(
    stats: Stats,
    model: str,
    reg_covar: float,
    eps: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    orientation_init: np.ndarray | None = None,
    orientation_method: str = "jacobi",
    decompose: bool = True,
    implementation: str = "auto",
) -> MStepResult:
    """Maximize the expected complete-data log-likelihood of a structured mixture.

    Parameters
    ----------
    stats : Stats
        A pass's statistics: diagonal moments suffice for the diagonal models;
        the others need full ones.
    model : str
        An mclust name or a scikit-learn alias (:func:`canonical_model`).
    reg_covar : float
        Added to each component's empirical covariance before the structured fit
        (see the module docstring).
    eps : float
        Machine epsilon of the data's dtype (``10 eps`` is added to each ``n_k``,
        as in :func:`fastem._stats.m_step`).
    tol : float, default 1e-10
        Iterative models stop when no volume, shape or variance changes by more
        than ``tol`` relatively, and no orientation entry by more than ``tol`` (VEE:
        no entry of the shared matrix relatively to its largest); VEI, VEE and VEV
        also stop when ``Q`` stops increasing (rounding: the iterates can only cycle
        from there).
    max_iter : int, default 10000
        Inner iteration cap. A small value (say 1-5, with ``orientation_init``
        the previous M-step's orientation) gives a generalized M-step: ``Q`` still
        never decreases.
    orientation_init : ndarray of shape (d, d), optional
        Starting common orientation for EVE and VVE (default: eigenvectors of the
        pooled scatter). Warm-starting from the previous EM iteration's
        orientation makes the inner loop short.

    Returns
    -------
    MStepResult

    Raises
    ------
    ValueError
        Unknown model, full model on diagonal statistics, or an ill-defined
        covariance (fastem's singular-covariance message, naming the component).
    """
    m = canonical_model(model)
    if m not in DIAGONAL_MODELS and not stats.full:
        raise ValueError(f"covariance_type {m!r} needs full second moments (a full-kernel pass)")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")
    weights, means, nk, scatter = weights_means_scatter(stats, eps)
    k, d = means.shape
    reg = float(reg_covar)
    n_iter, converged, history = 0, True, []
    if m in DIAGONAL_MODELS:
        wdiag = scatter if scatter.ndim == 2 else np.diagonal(scatter, axis1=1, axis2=2)
        s = wdiag / nk[:, None] + reg  # regularized per-component variances (fastem's order)
        if m == "VVI":
            cov = s
        elif m == "VII":
            cov = np.repeat(s.mean(axis=1)[:, None], d, axis=1)
        else:
            wreg = nk[:, None] * s  # W_k + n_k reg I, diagonal
            n = nk.sum()
            if m == "EII":
                cov = np.full((k, d), wreg.sum() / (n * d))
            elif m == "EEI":
                cov = np.repeat((wreg.sum(axis=0) / n)[None, :], k, axis=0)
            elif m == "EVI":
                _check_positive(wreg, reg)
                g = _geometric_mean(wreg)
                cov = (g.sum() / n) * (wreg / g[:, None])  # divide first: no overflow at 1e150
            else:  # VEI
                lam, a, n_iter, converged, history = _common_shape(wreg, nk, reg, tol, max_iter)
                cov = lam[:, None] * a[None, :]
        _check_positive(cov, reg, shared=m in ("EII", "EEI"))
        prec_chol = precision_cholesky(cov, "diag", reg)
        scale = _geometric_mean(cov)
        shape = cov / scale[:, None]
        orientation = np.broadcast_to(np.eye(d), (k, d, d)).copy()
    else:
        ar = np.arange(d)
        s = scatter / nk[:, None, None]
        s[:, ar, ar] += reg
        wreg = nk[:, None, None] * s  # W_k + n_k reg I
        wreg = 0.5 * (wreg + np.swapaxes(wreg, 1, 2))
        n = nk.sum()
        if m == "VVV":
            cov = s
        elif m == "EEE":
            shared = scatter.sum(axis=0) / n
            shared[ar, ar] += reg
            cov = np.broadcast_to(shared, (k, d, d)).copy()
        elif m == "EVV":
            sign, logdet = np.linalg.slogdet(wreg)
            _check_positive(np.where(sign > 0, 1.0, 0.0), reg)
            g = np.exp(logdet / d)
            cov = (g.sum() / n) * (wreg / g[:, None, None])  # divide first, as above
        elif m in ("EEV", "VEV"):
            omega, vectors = _descending_eigh(wreg)
            omega = np.maximum(omega, 0.0)  # W_k is semidefinite: drop rounding below 0
            if m == "EEV":
                total = omega.sum(axis=0)
                _check_positive(total, reg, shared=True)
                gm = _geometric_mean(total)
                lam, a = np.full(k, gm / n), total / gm
            else:
                lam, a, n_iter, converged, history = _common_shape(omega, nk, reg, tol, max_iter)
            cov = _from_decomposition(lam, np.broadcast_to(a, (k, d)), vectors)
        elif m == "VEE":
            lam, c, n_iter, converged, history = _vee(wreg, nk, reg, tol, max_iter)
            cov = lam[:, None, None] * (0.5 * (c + c.T))[None]
        else:  # EVE, VVE
            orient, delta, n_iter, converged, history = _common_orientation(
                wreg,
                nk,
                m == "EVE",
                reg,
                tol,
                max_iter,
                orientation_init,
                orientation_method,
                implementation,
            )
            scale = _geometric_mean(delta)
            cov = _from_decomposition(
                scale, delta / scale[:, None], np.broadcast_to(orient, (k, d, d))
            )
        if not np.isfinite(cov).all():
            raise _singular_error(int(np.argwhere(~np.isfinite(cov))[0][0]), reg)
        if m == "EEE":
            # one factorization of the shared matrix, as fastem's 'tied'
            prec_chol = np.broadcast_to(precision_cholesky(cov[0], "tied", reg), (k, d, d)).copy()
        else:
            prec_chol = precision_cholesky(cov, "full", reg)
        if m in ("EVE", "VVE"):
            shape = delta / scale[:, None]
            orientation = np.broadcast_to(orient, (k, d, d)).copy()
        elif m in ("EEV", "VEV"):
            scale, shape, orientation = lam, np.broadcast_to(a, (k, d)).copy(), vectors
        elif decompose:
            scale, shape, orientation = _decompose(cov[:1] if m == "EEE" else cov)
            if m == "EEE":  # one matrix: decompose it once
                scale = np.repeat(scale, k)
                shape = np.repeat(shape, k, axis=0)
                orientation = np.repeat(orientation, k, axis=0)
        else:
            scale = shape = orientation = None
    return MStepResult(
        model=m,
        weights=weights,
        means=means,
        covariances=cov,
        precisions_cholesky=prec_chol,
        scale=scale,
        shape=shape,
        orientation=orientation,
        n_iter=n_iter,
        converged=converged,
        objective=tuple(history),
    )


def decomposition(
    model: str, covariances: np.ndarray, orientation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mclust's ``(scale, shape, orientation)`` of a fitted model's covariances.

    ``Sigma_k = scale_k D_k diag(shape_k) D_k^T`` with ``prod(shape_k) = 1``.

    - Diagonal models: ``D_k`` the identity, ``shape_k`` in the features' order.
    - EVE, VVE with ``orientation`` (their common ``D`` from the M-step): ``D_k = D``,
      ``shape_k`` the diagonal of ``D^T Sigma_k D`` normalized, in ``D``'s column order.
    - EEE, VEE (one shared matrix up to volume): the eigendecomposition of
      component 0's, shared, eigenvalues in decreasing order.
    - Otherwise each component's eigendecomposition, eigenvalues in decreasing order
      (equal shapes or volumes then agree to rounding).

    Parameters
    ----------
    model : str
        An mclust name (or a scikit-learn alias).
    covariances : ndarray of shape (k, d) (diagonal models) or (k, d, d)
    orientation : ndarray of shape (d, d), optional

    Returns
    -------
    scale : (k,), shape : (k, d), orientation : (k, d, d)
    """
    m = canonical_model(model)
    cov = np.asarray(covariances, dtype=np.float64)
    k, d = cov.shape[0], cov.shape[-1]
    if m in DIAGONAL_MODELS:
        diag = cov if cov.ndim == 2 else np.diagonal(cov, axis1=1, axis2=2)
        scale = _geometric_mean(diag)
        return scale, diag / scale[:, None], np.broadcast_to(np.eye(d), (k, d, d)).copy()
    if m in ("EVE", "VVE") and orientation is not None:
        orient = np.asarray(orientation, dtype=np.float64)
        diag = np.einsum("ji,kjl,li->ki", orient, cov, orient)
        scale = _geometric_mean(diag)
        return scale, diag / scale[:, None], np.broadcast_to(orient, (k, d, d)).copy()
    if m in ("EEE", "VEE"):
        values, vectors = _descending_eigh(cov[:1])
        shape = values / _geometric_mean(values)[:, None]
        scale = np.exp(np.linalg.slogdet(cov)[1] / d)
        return (
            scale,
            np.repeat(shape, k, axis=0),
            np.repeat(vectors, k, axis=0),
        )
    return _decompose(cov)


def alias_covariances(covariances: np.ndarray, alias: str) -> np.ndarray:
    """scikit-learn's ``covariances_`` layout for an alias's structured result.

    'full' and 'diag' keep (k, d, d) and (k, d); 'tied' takes the shared (d, d);
    'spherical' the (k,) variances.
    """
    if alias == "tied":
        return covariances[0]
    if alias == "spherical":
        return covariances[:, 0]
    if alias in ("full", "diag"):
        return covariances
    raise ValueError(f"not a scikit-learn covariance type: {alias!r}")
