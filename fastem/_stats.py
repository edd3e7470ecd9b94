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
        ``sum_i r_ik (x_i - shift_k)(x_i - shift_k)^T``, or its diagonal.
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
            cov = scatter.sum(axis=0) / nk.sum()
            cov[np.arange(d), np.arange(d)] += reg_covar
    else:
        scatter = stats.sxx - 2.0 * stats.sx * delta + nk_raw[:, None] * delta**2
        cov = scatter / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(axis=1)
    return weights, means, cov, precision_cholesky(cov, covariance_type, reg_covar)
