"""Additive sufficient statistics of one EM pass, and the M-step on them.

A pass over any set of rows yields a :class:`Stats`; statistics of disjoint
row sets with the same ``shift`` add. The M-step needs nothing but the sum,
which is what lets the same kernels serve batch, chunked, streaming and
distributed fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._covariance import (
    COVARIANCE_TYPES,
    check_covariance_type,
    engine_type,
    layout,
    precision_cholesky,
)

#: Orientation sweeps of EVE/VVE per EM iteration: a generalized M-step
#: warm-started from the previous orientation. Each sweep raises ``Q``, so any cap
#: keeps EM monotone. One sweep, measured by ``benchmarks/mclust_grid.py`` (one
#: thread, loaded machine): ~6 ms at d = 16, K = 8 (1.1 E-step passes over 20k
#: rows, 0.2 over 100k), ~50 ms at d = 64, K = 16 (0.25 passes over 20k rows);
#: the exact M-step from the same warm start took 95-856 sweeps at d = 16. On the
#: 100k x 8 grid, caps of 4 and 20 sweeps cost 1.3x and 2-2.5x the CPU time of 1
#: for EVE/VVE, with about as many EM iterations.
_GEM_SWEEPS = 1


def gem_sweeps(n_features: int) -> int:
    """Orientation sweeps per EM iteration for EVE and VVE (see :func:`m_step`)."""
    return _GEM_SWEEPS


@dataclass
class Stats:
    """Weighted sufficient statistics of a Gaussian mixture over some rows.

    Attributes
    ----------
    loglik : float
        ``sum_i w_i log p(x_i)`` under the parameters of the pass.
    weight_sum : float
        ``sum_i w_i``.
    nk : ndarray of shape (k,)
        Sum of weighted responsibilities per component.
    sx : ndarray of shape (k, d)
        ``sum_i r_ik (x_i - shift_k)``.
    sxx : ndarray of shape (k, d, d) or (k, d)
        ``sum_i r_ik (x_i - shift_k)(x_i - shift_k)^T``, or its diagonal. For
        'tied' covariances only the sum over components is used (the tied M-step
        pools them), so a pass may put the pooled moments in ``sxx[0]`` and leave
        the rest zero, as the tied kernels do; every operation here is linear per
        component, so sums, re-centring and blends keep that sum exact.
    shift : ndarray of shape (k, d)
        The centres the moments were taken about (the means of the pass):
        centring keeps ``sxx`` free of cancellation for data far from 0.
    """

    loglik: float
    weight_sum: float
    nk: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    shift: np.ndarray

    @classmethod
    def zeros(cls, n_components: int, n_features: int, full: bool, shift: np.ndarray) -> Stats:
        """Empty statistics, ready to be filled by a kernel."""
        k, d = n_components, n_features
        return cls(
            loglik=0.0,
            weight_sum=0.0,
            nk=np.zeros(k),
            sx=np.zeros((k, d)),
            sxx=np.zeros((k, d, d) if full else (k, d)),
            shift=np.array(shift, dtype=np.float64),
        )

    def __add__(self, other: Stats) -> Stats:
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("only statistics taken about the same shift can be added")
        return Stats(
            self.loglik + other.loglik,
            self.weight_sum + other.weight_sum,
            self.nk + other.nk,
            self.sx + other.sx,
            self.sxx + other.sxx,
            self.shift,
        )

    @property
    def full(self) -> bool:
        """Whether ``sxx`` holds full (k, d, d) second moments (else their diagonals)."""
        return self.sxx.ndim == 3

    def recentred(self, shift: np.ndarray) -> Stats:
        """The same statistics taken about another ``shift`` (exact algebra).

        With ``e = self.shift - shift``: ``sum r (x - shift) = sx + nk e`` and
        ``sum r (x - shift)(x - shift)^T = sxx + sx e^T + e sx^T + nk e e^T``
        (its diagonal for diagonal moments). Re-centring on a nearby shift (the
        next pass's means) adds only small terms, so no precision is lost.

        Parameters
        ----------
        shift : ndarray of shape (k, d)

        Returns
        -------
        Stats
            New arrays; ``self`` is unchanged.
        """
        shift = np.array(shift, dtype=np.float64)
        if shift.shape != self.shift.shape:
            raise ValueError(f"shift must have shape {self.shift.shape}, got {shift.shape}")
        e = self.shift - shift
        nk = self.nk
        sx = self.sx + nk[:, None] * e
        if self.full:
            outer = self.sx[:, :, None] * e[:, None, :]
            sxx = (
                self.sxx
                + outer
                + np.swapaxes(outer, 1, 2)
                + nk[:, None, None] * e[:, :, None] * e[:, None, :]
            )
        else:
            sxx = self.sxx + 2.0 * self.sx * e + nk[:, None] * e * e
        return Stats(self.loglik, self.weight_sum, nk.copy(), sx, sxx, shift)

    def scaled(self, factor: float) -> Stats:
        """Every additive statistic (``loglik`` and ``weight_sum`` included)
        multiplied by ``factor``; the shift is kept."""
        f = float(factor)
        return Stats(
            self.loglik * f,
            self.weight_sum * f,
            self.nk * f,
            self.sx * f,
            self.sxx * f,
            self.shift.copy(),
        )

    def blended(self, other: Stats, step: float) -> Stats:
        """``(1 - step) * self + step * other``, about ``other``'s shift.

        The convex combination of stepwise online EM: ``self`` is re-centred
        exactly on ``other.shift`` first, so statistics of any two shifts blend.

        Parameters
        ----------
        other : Stats
            Statistics of the same model shape.
        step : float
            Weight of ``other``, in [0, 1].

        Returns
        -------
        Stats
        """
        step = float(step)
        if not 0.0 <= step <= 1.0:
            raise ValueError(f"step must lie in [0, 1], got {step!r}")
        if self.sxx.shape != other.sxx.shape:
            raise ValueError(
                f"cannot blend statistics of shapes {self.sxx.shape} and {other.sxx.shape}"
            )
        here = self.recentred(other.shift)
        keep = 1.0 - step
        return Stats(
            keep * here.loglik + step * other.loglik,
            keep * here.weight_sum + step * other.weight_sum,
            keep * here.nk + step * other.nk,
            keep * here.sx + step * other.sx,
            keep * here.sxx + step * other.sxx,
            here.shift,
        )


def to_public_layout(
    covariance_type: str,
    covariances: np.ndarray,
    prec_chol: np.ndarray,
    n_components: int,
    n_features: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Covariances and precision factors from the engine's layout to the model's.

    Only VII and EEE differ: their engines ('spherical', 'tied') hold (k,) and
    (d, d) arrays, the mclust layouts (k, d) and (k, d, d) (repeated exactly).
    """
    cov, pc = np.asarray(covariances), np.asarray(prec_chol)
    k, d = n_components, n_features
    if covariance_type == "VII" and cov.ndim == 1:
        return np.repeat(cov[:, None], d, axis=1), np.repeat(pc[:, None], d, axis=1)
    if covariance_type == "EEE" and cov.ndim == 2:
        return np.broadcast_to(cov, (k, d, d)).copy(), np.broadcast_to(pc, (k, d, d)).copy()
    return cov, pc


def to_engine_layout(
    covariance_type: str, covariances: np.ndarray, prec_chol: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_public_layout` (VII: column 0; EEE: component 0)."""
    ct = check_covariance_type(covariance_type)
    if ct == "VII":
        return np.asarray(covariances)[:, 0].copy(), np.asarray(prec_chol)[:, 0].copy()
    if ct == "EEE":
        return np.asarray(covariances)[0].copy(), np.asarray(prec_chol)[0].copy()
    return covariances, prec_chol


def m_step(
    stats: Stats,
    covariance_type: str,
    reg_covar: float,
    eps: float,
    *,
    state: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maximize the expected complete-data log-likelihood given ``stats``.

    The four scikit-learn types (and the mclust models equal to them: VII,
    VVI, EEE, VVV) mirror scikit-learn's estimates, including its ``10 * eps``
    added to each component's weight so an empty component yields finite
    parameters. The other mclust models run :func:`fastem._mclust.m_step`
    (exact, iterated to its tolerance), except EVE and VVE when ``state`` is
    given: then the orientation update is warm-started from
    ``state["orientation"]`` and runs at most :func:`gem_sweeps` sweeps, a
    generalized M-step (``Q`` never decreases from the previous parameters, so
    the log-likelihood never decreases), and the new orientation is written
    back to ``state``.

    Parameters
    ----------
    stats : Stats
    covariance_type : str
        A canonical covariance type (:func:`fastem._covariance.check_covariance_type`).
    reg_covar : float
        Added to the diagonal of each empirical covariance (before the
        structured fit, for the mclust models).
    eps : float
        Machine epsilon of the data's dtype.
    state : dict, optional
        EVE/VVE's orientation carried from one EM iteration to the next.

    Returns
    -------
    weights, means, covariances, precisions_cholesky : ndarray (float64)
        In the layout of ``covariance_type`` (:func:`fastem._covariance.layout`).
    """
    engine = engine_type(covariance_type)
    if engine in COVARIANCE_TYPES:
        weights, means, cov, prec_chol = _sklearn_m_step(stats, engine, reg_covar, eps)
        if engine != covariance_type:
            cov, prec_chol = to_public_layout(covariance_type, cov, prec_chol, *means.shape)
        return weights, means, cov, prec_chol
    from ._mclust import DEFAULT_MAX_ITER
    from ._mclust import m_step as structured_m_step

    options: dict = {"decompose": False}
    if state is not None and covariance_type in ("EVE", "VVE"):
        options["orientation_init"] = state.get("orientation")
        options["max_iter"] = gem_sweeps(stats.sx.shape[1])
    else:
        options["max_iter"] = DEFAULT_MAX_ITER
    res = structured_m_step(stats, covariance_type, reg_covar, eps, **options)
    if state is not None and res.orientation is not None and covariance_type in ("EVE", "VVE"):
        state["orientation"] = res.orientation[0].copy()
    return res.weights, res.means, res.covariances, res.precisions_cholesky


def project(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
    eps: float,
    state: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The maximum-likelihood projection of a mixture onto a covariance structure.

    One M-step (``reg_covar = 0``) on the statistics of the mixture itself:
    weight ``w_k``, mean ``mu_k`` and scatter ``w_k Sigma_k``. The weights and
    means come back unchanged (up to the M-step's ``10 eps``), the covariances
    are the structured ones closest in the Kullback-Leibler sense that the
    M-step maximizes. ``covariances`` is in the layout of the model's kernel
    family ((k, d) diagonals or (k, d, d)).

    Returns
    -------
    weights, means, covariances, precisions_cholesky : ndarray (float64)
    """
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    cov = np.asarray(covariances, dtype=np.float64)
    k, d = mu.shape
    if cov.shape not in ((k, d), (k, d, d)):
        raise ValueError(f"covariances must have shape {(k, d)} or {(k, d, d)}, got {cov.shape}")
    if cov.ndim == 3 and layout(engine_type(covariance_type)) in ("diag", "spherical"):
        cov = np.diagonal(cov, axis1=1, axis2=2)
    sxx = (w[:, None, None] if cov.ndim == 3 else w[:, None]) * cov
    stats = Stats(0.0, 1.0, w.copy(), np.zeros((k, d)), np.ascontiguousarray(sxx), mu.copy())
    return m_step(stats, covariance_type, 0.0, eps, state=state)


def empty_component_floor(stats: Stats, eps: float) -> float:
    """What the M-step adds to each ``n_k``: scikit-learn's ``10 * eps``, times the
    total weight where that is below 1.

    The floor keeps an empty component's parameters finite. scikit-learn adds
    ``10 * eps`` to counts of rows (totals >= 1); against sample weights that sum
    to ``1e-12`` the same constant would be ``1e-3`` of the data's weight and
    bias every estimate (``1e-200`` per row: the means never move). Scaled with
    a total below 1, the fit does not depend on the scale of ``sample_weight``;
    with unit weights (or any total >= 1) it is scikit-learn's constant, bit
    for bit.

    Parameters
    ----------
    stats : Stats
    eps : float
        Machine epsilon of the data's dtype.

    Returns
    -------
    float
    """
    total = float(stats.weight_sum)
    scale = total if 0.0 < total < 1.0 else 1.0  # 0 or not finite: the plain constant
    return 10.0 * eps * scale


# A pass's second moments are taken about its shift (the current means); the
# M-step centres them on the new means, which cancels about log10(raw / var)
# digits. Past FAR_SHIFT_RATIO (8 of float64's ~16 digits) the covariance has
# lost too much to be trusted (a start ~1e4+ sd from the data: at 1e8 sd it is
# noise or not positive definite).
FAR_SHIFT_RATIO = 1e8


def lost_to_a_far_shift(stats: Stats, tied: bool, reg_covar: float) -> bool:
    """Whether centring ``stats`` on their new means would lose more than 8 digits.

    Per component (pooled for 'tied', whose pooled moments are in ``sxx[0]``),
    compares the diagonal second moments about the shift, ``sxx_jj / n_k``,
    with the variance they leave, ``max(sxx_jj / n_k - delta_j**2, 0)`` (or the
    components' pooled variance, if larger) plus ``reg_covar``. Ordinary EM
    steps move means by a few standard deviations (a ratio of ~10 to 1e3);
    nothing is changed for them. Cost: O(k d).
    """
    nk = np.asarray(stats.nk, dtype=np.float64)
    if not (nk > 0).any():
        return False
    sq = stats.sxx if stats.sxx.ndim == 2 else np.diagonal(stats.sxx, axis1=1, axis2=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = stats.sx / nk[:, None]
        if tied:
            n = nk.sum()
            raw = sq.sum(axis=0, keepdims=True) / n
            # an empty component (nk = 0: delta is NaN) moves no weight; its NaN
            # made the pooled check blind to a far start (the tied fit raised)
            moved = np.where(nk[:, None] > 0, nk[:, None] * delta**2, 0.0)
            moved = moved.sum(axis=0, keepdims=True) / n
        else:
            raw = sq / nk[:, None]
            moved = delta**2
        var = np.maximum(raw - moved, 0.0)
        # against the larger of the component's variance and the pooled one: a
        # component collapsing onto a row (reg_covar = 0) has a variance of 0 that
        # no re-centring changes; the far start's pooled variance is lost as well
        pooled = (nk[:, None] * np.nan_to_num(var)).sum(axis=0) / nk.sum()
        far = raw > FAR_SHIFT_RATIO * (np.maximum(var, pooled) + reg_covar)
    return bool(np.any(far & np.isfinite(raw)))


def _sklearn_m_step(
    stats: Stats, covariance_type: str, reg_covar: float, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's M-step for its four covariance types."""
    nk_raw = stats.nk
    nk = nk_raw + empty_component_floor(stats, eps)
    delta = stats.sx / nk[:, None]  # new mean minus shift
    means = stats.shift + delta
    weights = nk / nk.sum()
    if covariance_type in ("full", "tied"):
        # sum r (x - m)(x - m)^T = sxx - sx d^T - d sx^T + nk d d^T, with d = m - shift
        outer_sx_d = stats.sx[:, :, None] * delta[:, None, :]
        scatter = (
            stats.sxx
            - outer_sx_d
            - np.swapaxes(outer_sx_d, 1, 2)
            + nk_raw[:, None, None] * delta[:, :, None] * delta[:, None, :]
        )
        d = means.shape[1]
        if covariance_type == "full":
            cov = scatter / nk[:, None, None]
            cov[:, np.arange(d), np.arange(d)] += reg_covar
        else:
            cov = scatter.sum(axis=0) / nk.sum()  # only the pooled sxx counts (see Stats)
            cov[np.arange(d), np.arange(d)] += reg_covar
    else:
        # A sum of squares, never negative: about a distant shift it can round
        # below 0 (by more than reg_covar), which must not look like a vanished one.
        scatter = np.maximum(stats.sxx - 2.0 * stats.sx * delta + nk_raw[:, None] * delta**2, 0.0)
        cov = scatter / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(axis=1)
        cov = _floor_vanished_variances(cov, means, eps)
    return weights, means, cov, precision_cholesky(cov, covariance_type, reg_covar)


def _floor_vanished_variances(cov: np.ndarray, means: np.ndarray, eps: float) -> np.ndarray:
    """'diag'/'spherical' variances that come out ``<= 0`` set to ``eps * mean**2``.

    Only with ``reg_covar = 0``: a component collapsed onto one row (or left
    empty) has a zero variance, which the centred moments give as 0 or a
    rounding residue of either sign (-4e-48 in scikit-learn's #18216 test).
    scikit-learn's uncentred ``E[x^2] - E[x]^2`` leaves a residue of about
    ``eps * mean**2`` there and fits through when it is positive; this is that
    resolution, deterministically, so such a fit goes on instead of raising.
    A component at the origin has no such scale (the floor is 0) and still
    raises the ill-defined-covariance error, as scikit-learn's exact 0 does.
    Positive variances are returned untouched (bit for bit).
    """
    vanished = cov <= 0.0
    if not vanished.any():
        return cov
    floor = eps * means**2
    if cov.ndim == 1:  # spherical: one variance per component
        floor = floor.mean(axis=1)
    return np.where(vanished, floor, cov)
