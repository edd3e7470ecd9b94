"""Additive sufficient statistics of one EM pass, and the M-step on them.

A pass over any set of rows yields a :class:`Stats`; statistics of disjoint
row sets with the same ``shift`` add. The M-step needs nothing but the sum,
which is what lets the same kernels serve batch, chunked, streaming and
distributed fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._covariance import precision_cholesky


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


def m_step(
    stats: Stats, covariance_type: str, reg_covar: float, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maximize the expected complete-data log-likelihood given ``stats``.

    Mirrors scikit-learn's estimates, including its ``10 * eps`` added to each
    component's weight so an empty component yields finite parameters.

    Parameters
    ----------
    stats : Stats
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    reg_covar : float
        Added to the diagonal of each covariance.
    eps : float
        Machine epsilon of the data's dtype.

    Returns
    -------
    weights, means, covariances, precisions_cholesky : ndarray (float64)
    """
    nk_raw = stats.nk
    nk = nk_raw + 10.0 * eps
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
        scatter = stats.sxx - 2.0 * stats.sx * delta + nk_raw[:, None] * delta**2
        cov = scatter / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(axis=1)
    return weights, means, cov, precision_cholesky(cov, covariance_type, reg_covar)
