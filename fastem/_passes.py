"""One EM pass (or log-density pass) over an in-memory block of rows, on any
backend, with or without missing values.

This is the unit every way of feeding data builds on: a whole array, the
blocks of a memory map, a minibatch of ``partial_fit``, a Dask partition. Each
returns additive :class:`~fastem._stats.Stats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ._covariance import kernel_arguments
from ._missing import MissingPatterns, find_patterns, has_nan
from ._stats import Stats
from .backends import _tied


@dataclass(frozen=True)
class PassParams:
    """Model parameters in the form the kernels take.

    Attributes
    ----------
    full : bool
        Whether the full-covariance kernel family applies ('full', 'tied').
    means, prec_chol : ndarray
        In the data's dtype; tied/spherical factors broadcast to full/diag.
    comp_const : ndarray of shape (k,)
        ``log w_k + log det U_k - d/2 log(2 pi)``.
    precisions : ndarray of shape (k, d, d) or None
        float64 ``U U^T``, for the missing-data full kernels.
    shift : ndarray of shape (k, d)
        float64 means: the centre of the pass's second moments.
    tied_chol : ndarray of shape (d, d) or None
        'tied' only: the one shared factor, in the data's dtype, for the tied
        kernels (``d^2`` per row where the broadcast full factors cost ``k d^2``);
        None where the means are too far apart for their one centre
        (:func:`fastem.backends._tied.means_too_far_apart`).
    """

    full: bool
    means: np.ndarray
    prec_chol: np.ndarray
    comp_const: np.ndarray
    precisions: np.ndarray | None
    shift: np.ndarray
    tied_chol: np.ndarray | None = None

    @classmethod
    def from_model(
        cls, weights, means, prec_chol, covariance_type: str, dtype: np.dtype
    ) -> PassParams:
        full, m, pc, cc = kernel_arguments(weights, means, prec_chol, covariance_type, dtype)
        precisions = None
        if full:
            pc64 = pc.astype(np.float64)
            precisions = np.ascontiguousarray(pc64 @ np.swapaxes(pc64, 1, 2))
        tied = None
        # means too far apart for the tied kernels' one centre: the full ones
        if covariance_type == "tied" and not _tied.means_too_far_apart(means, prec_chol, cc):
            tied = np.ascontiguousarray(prec_chol, dtype=dtype)
        return cls(full, m, pc, cc, precisions, np.asarray(means, dtype=np.float64), tied)


def em_stats(
    kernels: ModuleType,
    X: np.ndarray,
    sample_weight: np.ndarray,
    params: PassParams,
    patterns: MissingPatterns | None = None,
    *,
    check_nan: bool = True,
    weight_sum: float | None = None,
) -> Stats:
    """Sufficient statistics of one EM pass over the rows of ``X``.

    Rows with NaN use the missing-data kernels (their patterns are found here
    unless given); a complete block takes the complete-data kernels. Rows with
    nothing observed contribute nothing, not even to ``weight_sum``, which a
    caller that iterates over the same rows can pass in once computed (it
    saves an (n,) gather per pass).
    """
    k, d = params.means.shape
    stats = Stats.zeros(k, d, params.full, params.shift)
    if patterns is None and check_nan and has_nan(X):
        patterns = find_patterns(X)
    p = params
    if patterns is None:
        if p.tied_chol is not None:  # the pooled second moments go to sxx[0] (see Stats)
            stats.loglik = kernels.em_pass_tied(
                X, sample_weight, p.means, p.tied_chol, p.comp_const,
                stats.nk, stats.sx, stats.sxx[0],
            )  # fmt: skip
        else:
            em_pass = kernels.em_pass_full if p.full else kernels.em_pass_diag
            stats.loglik = em_pass(
                X, sample_weight, p.means, p.prec_chol, p.comp_const,
                stats.nk, stats.sx, stats.sxx,
            )  # fmt: skip
        stats.weight_sum = float(sample_weight.sum()) if weight_sum is None else weight_sum
        return stats
    rows, ptr = patterns.rows, patterns.pattern_ptr
    if p.tied_chol is not None:  # one factorization per pattern; pooled sxx in sxx[0]
        stats.loglik = kernels.em_pass_missing_tied(
            X, sample_weight, rows, ptr, p.means, p.tied_chol, p.comp_const,
            stats.nk, stats.sx, stats.sxx[0],
        )  # fmt: skip
    elif p.full:
        stats.loglik = kernels.em_pass_missing_full(
            X, sample_weight, rows, ptr, p.means, p.prec_chol, p.precisions, p.comp_const,
            stats.nk, stats.sx, stats.sxx,
        )  # fmt: skip
    else:
        stats.loglik = kernels.em_pass_missing_diag(
            X, sample_weight, rows, ptr, p.means, p.prec_chol, p.comp_const,
            stats.nk, stats.sx, stats.sxx,
        )  # fmt: skip
    stats.weight_sum = float(sample_weight[rows].sum()) if weight_sum is None else weight_sum
    return stats


def log_prob(
    kernels: ModuleType,
    X: np.ndarray,
    params: PassParams,
    out: np.ndarray,
    *,
    check_nan: bool = True,
) -> None:
    """Weighted log-densities (n, k) of the rows of X into ``out``; a row with
    NaN gets the marginal density of its observed coordinates.
    ``check_nan=False``: the caller knows X has no NaN (no scan).

    Raises
    ------
    ValueError
        If ``out`` is not (n, k) for X's n rows and the model's k components, or X
        has not the model's features (the numba kernels would write, or read,
        out of bounds without a word).
    """
    p = params
    k, d = p.means.shape
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X has shape {X.shape}, expected (n_samples, {d}) for the model")
    if out.shape != (X.shape[0], k):
        raise ValueError(f"out has shape {out.shape}, expected {(X.shape[0], k)}")
    if not (check_nan and has_nan(X)):
        if p.tied_chol is not None:
            kernels.log_prob_tied(X, p.means, p.tied_chol, p.comp_const, out)
            return
        fn = kernels.log_prob_full if p.full else kernels.log_prob_diag
        fn(X, p.means, p.prec_chol, p.comp_const, out)
        return
    patterns = find_patterns(X, include_empty=True)
    rows, ptr = patterns.rows, patterns.pattern_ptr
    if p.tied_chol is not None:
        kernels.log_prob_missing_tied(X, rows, ptr, p.means, p.tied_chol, p.comp_const, out)
    elif p.full:
        kernels.log_prob_missing_full(
            X, rows, ptr, p.means, p.prec_chol, p.precisions, p.comp_const, out
        )
    else:
        kernels.log_prob_missing_diag(X, rows, ptr, p.means, p.prec_chol, p.comp_const, out)
