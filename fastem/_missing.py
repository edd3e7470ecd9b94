"""Missing values (NaN): grouping rows by missingness pattern, and imputation.

EM on incomplete data (Ghahramani & Jordan, 1994) needs, per pattern and
component, the marginal of the observed coordinates and the regression of the
missing ones on them. Grouping rows by pattern lets the kernels compute those
once per pattern rather than once per row; the kernel contract is documented in
:mod:`fastem.backends._numpy`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .backends._numpy import logsumexp_rows

# Rows per block when scanning X for NaN: bounds the (block, d) mask.
_SCAN_BLOCK = 16384


@dataclass
class MissingPatterns:
    """Rows of X grouped by which coordinates are NaN.

    Attributes
    ----------
    rows : ndarray of int64
        Row indices sorted so rows of one pattern are adjacent.
    pattern_ptr : ndarray of int64 of shape (n_patterns + 1,)
        ``rows[pattern_ptr[p]:pattern_ptr[p + 1]]`` share pattern ``p``.
    n_empty : int
        Rows with every coordinate missing (left out of ``rows`` unless the
        patterns were built with ``include_empty=True``).
    n_missing : int
        NaN entries in X.
    observed_per_feature : ndarray of int64 of shape (n_features,)
        Rows in which each feature is observed (only rows of positive weight
        when the patterns were found with ``sample_weight``).
    """

    rows: np.ndarray
    pattern_ptr: np.ndarray
    n_empty: int
    n_missing: int
    observed_per_feature: np.ndarray

    @property
    def n_patterns(self) -> int:
        return self.pattern_ptr.shape[0] - 1


def check_fit_coverage(
    *,
    n_rows: int,
    n_empty: int,
    observed_per_feature: np.ndarray | None,
    n_informative: int,
    n_components: int,
    stacklevel: int,
) -> None:
    """The checks every fit (in memory, in blocks, on Dask) runs on its data's counts.

    Nothing observed at all, or a feature never observed, is an error; rows with
    nothing observed are left out with a warning (``stacklevel`` is the caller's);
    fewer informative rows (positive weight, something observed) than components
    is an error.
    """
    if n_empty == n_rows:
        raise ValueError(
            "X has no observed value: every entry is NaN (missing). There is nothing to fit."
        )
    if observed_per_feature is not None:
        never = np.flatnonzero(observed_per_feature == 0)
        if never.size:
            raise ValueError(
                f"Feature(s) {never.tolist()} of X are never observed (NaN in every "
                "row with a positive sample_weight): their distribution cannot be "
                "estimated. Drop those columns."
            )
    if n_empty:
        warnings.warn(
            f"{n_empty} row(s) of X have every value missing (NaN); they "
            "carry no information and are left out of the fit.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    if n_informative < n_components:
        raise ValueError(
            f"Only {n_informative} rows have a positive sample_weight and an observed "
            f"value, fewer than n_components = {n_components}."
        )


def _pattern_keys(
    X: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """One integer key per row identifying its NaN pattern (blockwise scan),
    the per-feature observed counts (in rows of positive weight, if weights
    are given), and the number of NaN entries."""
    n, d = X.shape
    n_bytes = (d + 7) // 8
    packed = np.empty((n, max(n_bytes, 1)), dtype=np.uint8)
    observed = np.zeros(d, dtype=np.int64)
    n_missing = 0
    for start in range(0, n, _SCAN_BLOCK):
        nan = np.isnan(X[start : start + _SCAN_BLOCK])
        n_nan = nan.sum(axis=0)
        n_missing += int(n_nan.sum())
        if sample_weight is None:
            observed += nan.shape[0] - n_nan
        else:
            positive = sample_weight[start : start + _SCAN_BLOCK] > 0
            observed += positive @ ~nan
        packed[start : start + _SCAN_BLOCK] = np.packbits(nan, axis=1)
    if n_bytes <= 8:  # fast path: the pattern fits one uint64
        wide = np.zeros((n, 8), dtype=np.uint8)
        wide[:, :n_bytes] = packed
        keys = wide.view(np.uint64).ravel()
        _, inverse = np.unique(keys, return_inverse=True)
    else:
        _, inverse = np.unique(packed, axis=0, return_inverse=True)
    return inverse.ravel().astype(np.int64), observed, n_missing


def find_patterns(
    X: np.ndarray, *, include_empty: bool = False, sample_weight: np.ndarray | None = None
) -> MissingPatterns:
    """Group the rows of ``X`` by missingness pattern.

    With ``sample_weight``, ``observed_per_feature`` counts only rows of
    positive weight (a feature seen only in rows of weight 0 is never observed
    as far as the fit goes). Memory: one byte per 8 features per row for the
    packed patterns plus the (n,) index arrays; no (n, d) temporary beyond a
    scan block.
    """
    n, d = X.shape
    inverse, observed, n_missing = _pattern_keys(X, sample_weight)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    ptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    # Which pattern is "everything missing"? Check the first row of each.
    first_rows = order[ptr[:-1]]
    empty = np.array([bool(np.isnan(X[i]).all()) for i in first_rows], dtype=bool)
    n_empty = int(counts[empty].sum())
    if n_empty and not include_empty:
        keep = ~empty
        segments = [order[ptr[p] : ptr[p + 1]] for p in np.flatnonzero(keep)]
        order = np.concatenate(segments) if segments else np.empty(0, dtype=np.int64)
        ptr = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(counts[keep], out=ptr[1:])
    return MissingPatterns(
        rows=np.ascontiguousarray(order, dtype=np.int64),
        pattern_ptr=ptr,
        n_empty=n_empty,
        n_missing=n_missing,
        observed_per_feature=observed,
    )


def has_nan(X: np.ndarray) -> bool:
    """Whether X has a NaN, scanning in blocks (no (n, d) temporary)."""
    return any(
        np.isnan(X[start : start + _SCAN_BLOCK]).any()
        for start in range(0, X.shape[0], _SCAN_BLOCK)
    )


def impute_rows(kernels: ModuleType, X: np.ndarray, params) -> np.ndarray:
    """A copy of the block X with each NaN replaced by its conditional expectation.

    ``E[x_m | x_o] = sum_k p(k | x_o) (mu_km + B_k (x_o - mu_ko))``: the
    responsibility-weighted conditional means (``B_k = 0`` for diagonal
    covariances), responsibilities from the observed values alone. ``params``
    is the model's :class:`~fastem._passes.PassParams`. A row with nothing
    observed gets the mixture mean; observed values are copied unchanged.
    Temporaries are (rows of X, k) and (rows of X, d): callers pass blocks.
    """
    out = np.array(X, copy=True)
    if not has_nan(X):
        return out
    patterns = find_patterns(X, include_empty=True)
    rows, ptr = _without_complete_rows(X, patterns)
    p = params
    k = p.means.shape[0]
    logp = np.zeros((X.shape[0], k))
    if p.tied_chol is not None:  # one factorization per pattern, not k
        kernels.log_prob_missing_tied(X, rows, ptr, p.means, p.tied_chol, p.comp_const, logp)
    elif p.full:
        kernels.log_prob_missing_full(
            X, rows, ptr, p.means, p.prec_chol, p.precisions, p.comp_const, logp
        )
    else:
        kernels.log_prob_missing_diag(X, rows, ptr, p.means, p.prec_chol, p.comp_const, logp)
    with np.errstate(under="ignore"):
        resp = np.exp(logp - logsumexp_rows(logp)[:, None])
    if p.full:
        kernels.impute_missing_full(X, rows, ptr, p.shift, p.precisions, resp, out)
    else:  # within a diagonal component the missing values do not depend on the observed
        missing = np.isnan(X)
        out[missing] = (resp @ p.shift)[missing]
    return out


def _without_complete_rows(X: np.ndarray, patterns: MissingPatterns):
    """``rows``/``pattern_ptr`` of the patterns that have a missing value."""
    ptr = patterns.pattern_ptr
    keep = np.isnan(X[patterns.rows[ptr[:-1]]]).any(axis=1)  # from each pattern's first row
    if keep.all():
        return patterns.rows, ptr
    counts = np.diff(ptr)
    new_ptr = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    np.cumsum(counts[keep], out=new_ptr[1:])
    return np.ascontiguousarray(patterns.rows[np.repeat(keep, counts)]), new_ptr
