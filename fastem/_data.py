"""What a fit iterates over: the data behind the EM loop.

The EM loop in :mod:`fastem.mixture` needs only three things from the data:
its shape and dtype, one pass of sufficient statistics for given parameters,
and an in-memory array (with weights) to initialize from. :class:`ArrayData`
serves an in-memory array; memory maps and Dask arrays have their own
classes with the same attributes and methods.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ._missing import _SCAN_BLOCK, find_patterns, has_nan
from ._passes import PassParams, em_stats
from ._stats import Stats


def fill_with_column_means(X: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """A copy of X with each NaN replaced by its column's weighted observed mean.

    Used only to initialize on incomplete data (k-means needs complete rows);
    EM itself never fills in values. Memory: the copy plus (block, d)
    temporaries. A column with no observed value of positive weight (which the
    fit's checks reject before this runs) would be filled with 0.
    """
    d = X.shape[1]
    sums = np.zeros(d)
    weights = np.zeros(d)
    for start in range(0, X.shape[0], _SCAN_BLOCK):
        xb = X[start : start + _SCAN_BLOCK]
        wb = sample_weight[start : start + _SCAN_BLOCK]
        observed = ~np.isnan(xb)
        sums += wb @ np.where(observed, xb, 0.0).astype(np.float64)
        weights += wb @ observed
    with np.errstate(invalid="ignore", divide="ignore"):
        col_mean = np.nan_to_num(sums / weights, nan=0.0).astype(X.dtype)
    filled = np.array(X, dtype=X.dtype, order="C", copy=True)
    for start in range(0, X.shape[0], _SCAN_BLOCK):
        fb = filled[start : start + _SCAN_BLOCK]
        missing = np.isnan(fb)
        fb[missing] = col_mean[np.nonzero(missing)[1]]
    return filled


class ArrayData:
    """An in-memory array; NaN entries are missing values.

    The missingness patterns are found once, when the fit starts; rows with
    nothing observed are left out (they carry no information).
    """

    def __init__(self, X: np.ndarray, sample_weight: np.ndarray) -> None:
        self.X = X
        self.sample_weight = sample_weight
        self.patterns = find_patterns(X, sample_weight=sample_weight) if has_nan(X) else None
        if self.patterns is None:
            self.n_empty_rows = 0
            self.weight_sum = float(sample_weight.sum())
        else:
            self.n_empty_rows = self.patterns.n_empty
            self.weight_sum = float(sample_weight[self.patterns.rows].sum())

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    def em_stats(self, kernels: ModuleType, params: PassParams) -> Stats:
        """One EM pass over every row."""
        return em_stats(
            kernels, self.X, self.sample_weight, params, self.patterns,
            check_nan=False, weight_sum=self.weight_sum,
        )  # fmt: skip

    def init_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Complete rows and weights to initialize from (NaN filled by column
        means, rows with nothing observed weighted 0)."""
        if self.patterns is None:
            return self.X, self.sample_weight
        sw = np.zeros_like(self.sample_weight)
        sw[self.patterns.rows] = self.sample_weight[self.patterns.rows]
        return fill_with_column_means(self.X, self.sample_weight), sw
