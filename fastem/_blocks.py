"""Out-of-core fitting: data read block by block from a memory map or an
array-like that is sliced rather than loaded (h5py, zarr, ...).

:func:`block_fit_data` validates ``X`` in one blockwise pass and returns a
:class:`BlockData`, which serves the EM loop of :mod:`fastem.mixture` exactly
as :class:`fastem._data.ArrayData` does, holding one block of rows at a time:

- Blocks have a fixed number of rows (about ``BLOCK_BYTES`` of the fit's
  dtype, set by the shape alone). Each block is a zero-copy view where X is a
  C-ordered memory map of the fit's dtype, else it is copied (and cast) into
  one reused buffer. Every pass runs :func:`fastem._passes.em_stats` on each
  block and adds the statistics in block order: the model does not depend on
  the thread count.
- After a block of a ``numpy.memmap`` is used, its pages are released with
  ``madvise(MADV_DONTNEED)`` (where the platform has it; never for a
  copy-on-write map, whose pages may hold the caller's changes), so the
  resident set stays near one block plus the model, whatever the OS caches.
- With NaN in X, each block's missingness patterns are found on the first EM
  pass and kept for the later ones while all kept patterns take at most
  ``PATTERN_CACHE_BYTES`` (about 8 bytes per row); blocks beyond that budget
  are regrouped on every pass. A block without NaN is remembered as such
  (no rescan).
- Initialization (``init_params``) runs in memory on a uniform random sample
  of the rows that carry information (a positive weight and an observed
  value): ``max(10_000, 1000 * n_components)`` rows, drawn during the
  validation pass by keeping the rows with the smallest random keys (seeded by
  ``random_state``), with their weights. X with no more rows than that is
  taken whole, in order (rows with nothing observed weighted 0), as the
  in-memory fit takes it: the same start for every ``init_params``. Missing
  values of the sample are filled with the column means of all of X. With ``weights_init``,
  ``means_init`` and ``precisions_init`` all given, no sample is drawn, and
  the fit matches the in-memory fit from the same parameters up to the order
  of floating-point sums.
"""

from __future__ import annotations

import mmap
import numbers
from types import ModuleType

import numpy as np

from ._missing import MissingPatterns, check_fit_coverage, find_patterns, has_nan
from ._passes import PassParams, em_stats
from ._stats import Stats
from ._validation import check_positive_int, raise_not_2d

__all__ = [
    "BLOCK_BYTES",
    "PATTERN_CACHE_BYTES",
    "BlockData",
    "BlockReader",
    "block_fit_data",
    "init_sample_size",
]

#: Target size of one block of rows, in bytes of the fit's dtype.
BLOCK_BYTES = 16 << 20
# The float32 full-covariance kernels sum statistics in blocks of this many rows.
FLOAT32_ROW_GRID = 512
#: Most bytes of per-block missingness patterns kept between EM passes.
PATTERN_CACHE_BYTES = 16 << 20


def init_sample_size(n_samples: int, n_components: int) -> int:
    """Rows drawn to initialize an out-of-core fit."""
    return min(n_samples, max(10_000, 1000 * n_components))


def _random_generator(random_state) -> np.random.Generator:
    """A Generator for the initialization sample, seeded by ``random_state``."""
    if random_state is None or random_state is np.random:
        return np.random.default_rng()
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.default_rng(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state.integers(0, 2**63 - 1))
    raise ValueError(
        f"random_state must be None, an int, a RandomState or a Generator, got {random_state!r}"
    )


class _Weights:
    """Sample weights served by row block: None (ones), a scalar, or any 1-D
    array-like (a memory map included, its pages released as X's are),
    validated blockwise."""

    def __init__(self, sample_weight, n_samples: int, block: int) -> None:
        self.n = n_samples
        self.value: float | None = None
        self.array = None
        self.release = _page_releaser(None)
        if sample_weight is None:
            self.value = 1.0
        elif isinstance(sample_weight, numbers.Number):
            self.value = float(sample_weight)
            if not np.isfinite(self.value):
                raise ValueError("sample_weight contains NaN or infinity.")
            if self.value < 0:
                raise ValueError("Negative values in sample_weight are not allowed.")
            if self.value == 0:
                raise ValueError("sample_weight sums to zero: there is nothing to fit.")
        else:
            sw = sample_weight
            if not hasattr(sw, "shape") or not hasattr(sw, "dtype"):
                sw = np.asarray(sw)
            kind = np.dtype(sw.dtype).kind
            if kind not in "biuf":
                raise ValueError(f"sample_weight must be numeric, got dtype {sw.dtype}.")
            shape = tuple(sw.shape)
            if shape != (n_samples,):
                raise ValueError(
                    f"sample_weight.shape == {shape}, expected {(n_samples,)} (one weight per "
                    "row of X)."
                )
            self.array = sw
            self.release = _page_releaser(sw)
        if self.value is not None:
            self._const = np.full(min(block, n_samples), self.value)

    def block(self, start: int, stop: int) -> np.ndarray:
        """float64 weights of rows ``start:stop`` (C-contiguous)."""
        if self.array is None:
            return self._const[: stop - start]
        return np.ascontiguousarray(self.array[start:stop], dtype=np.float64)

    def check_block(self, wb: np.ndarray) -> None:
        if self.array is None:
            return
        if not np.isfinite(wb).all():
            raise ValueError("sample_weight contains NaN or infinity.")
        if (wb < 0).any():
            raise ValueError("Negative values in sample_weight are not allowed.")


class _Sample:
    """A uniform random sample without replacement of the rows offered to it,
    in one pass: the ``size`` rows with the smallest iid uniform keys."""

    def __init__(self, size: int, n_features: int, dtype: np.dtype, rng) -> None:
        self.size = size
        self.rng = rng
        self.keys = np.empty(0)
        self.index = np.empty(0, dtype=np.int64)
        self.rows = np.empty((0, n_features), dtype=dtype)
        self.weights = np.empty(0)

    def offer(self, start: int, xb: np.ndarray, wb: np.ndarray, candidates: np.ndarray) -> None:
        """Offer rows ``candidates`` (local indices) of the block starting at ``start``."""
        keys = self.rng.random(candidates.shape[0])
        all_keys = np.concatenate([self.keys, keys])
        n_old = self.keys.shape[0]
        if all_keys.shape[0] > self.size:
            keep = np.argpartition(all_keys, self.size - 1)[: self.size]
        else:
            keep = np.arange(all_keys.shape[0])
        old, new = keep[keep < n_old], candidates[keep[keep >= n_old] - n_old]
        self.keys = all_keys[np.concatenate([old, keep[keep >= n_old]])]
        self.index = np.concatenate([self.index[old], start + new])
        self.rows = np.concatenate([self.rows[old], xb[new]])
        self.weights = np.concatenate([self.weights[old], wb[new]])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled rows and their weights, in row order."""
        order = np.argsort(self.index, kind="stable")
        return np.ascontiguousarray(self.rows[order]), np.ascontiguousarray(self.weights[order])


class BlockData:
    """Rows of a large array read block by block (see the module docs).

    Same attributes and methods as :class:`fastem._data.ArrayData`.

    Parameters
    ----------
    X : numpy.memmap or array-like of shape (n_samples, n_features)
        Anything with ``shape``, ``dtype`` and row slicing ``X[a:b]``.
    sample_weight : None, float, or array-like of shape (n_samples,)
    n_components : int
        Sets the size of the initialization sample.
    random_state : None, int, RandomState or Generator
        Seeds the initialization sample.
    block_rows : int or None
        Rows per block; by default about ``BLOCK_BYTES`` of the fit's dtype
        (for float32 rounded up to whole 512-row blocks, so out-of-core float32
        statistics equal the in-memory ones; other block sizes agree to float32
        rounding, about 1e-9).
    sample : bool, default=True
        Draw the initialization sample during validation (False when the
        initial parameters are given: it is then drawn only if asked for).
    """

    def __init__(
        self,
        X,
        sample_weight=None,
        *,
        n_components: int = 1,
        random_state=None,
        block_rows: int | None = None,
        sample: bool = True,
    ) -> None:
        self.X = X
        n, d = _check_shape_dtype(X)
        self.n_samples = n
        self._n_features = d
        self._dtype = _fit_dtype(X.dtype)
        if block_rows is None:
            block_rows = max(1, BLOCK_BYTES // (d * self._dtype.itemsize))
            if self._dtype.itemsize == 4:
                # Whole blocks of the numba float32 grid (512 rows from row 0,
                # fastem.backends._numba._chunks_full32): the float32 block sums
                # then equal the in-memory fit's, not just to float32 rounding.
                block_rows = -(-block_rows // FLOAT32_ROW_GRID) * FLOAT32_ROW_GRID
        self.block_rows = check_positive_int(block_rows, "block_rows")
        self.n_components = n_components
        self.random_state = random_state
        self._weights = _Weights(sample_weight, n, self.block_rows)
        self._buffer: np.ndarray | None = None
        self._release = _page_releaser(X)
        self._sample: tuple[np.ndarray, np.ndarray] | None = None
        # block start -> its patterns (None: no NaN in the block), within the budget
        self._patterns: dict[int, MissingPatterns | None] = {}
        self._pattern_bytes = 0
        self.has_nan = False
        self.weight_sum = 0.0
        self.n_empty_rows = 0
        self.n_informative = 0
        self.column_means = None
        self._scan(validate=True, sample=sample)

    # --------------------------------------------------------------- the interface
    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def n_features(self) -> int:
        return self._n_features

    def em_stats(self, kernels: ModuleType, params: PassParams) -> Stats:
        """One EM pass over every block, statistics summed in block order."""
        k, d = params.means.shape
        total = Stats.zeros(k, d, params.full, params.shift)
        for start, stop in self.blocks():
            xb = self._read(start, stop)
            wb = self._weights.block(start, stop)
            patterns = self._block_patterns(start, xb) if self.has_nan else None
            total = total + em_stats(kernels, xb, wb, params, patterns, check_nan=False)
            del xb, wb, patterns
            self._release(start, stop)
            self._weights.release(start, stop)
        return total

    def init_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The initialization sample (NaN filled by X's column means) and its weights."""
        if self._sample is None:
            self._scan(validate=False, sample=True)
        return self._sample

    # ------------------------------------------------------------------ internals
    def _block_patterns(self, start: int, xb: np.ndarray) -> MissingPatterns | None:
        """The block's missingness patterns: kept from an earlier pass, or found
        (and kept if the budget allows)."""
        if start in self._patterns:
            return self._patterns[start]
        patterns = find_patterns(xb) if has_nan(xb) else None
        size = 0
        if patterns is not None:
            size = sum(a.nbytes for a in (patterns.rows, patterns.pattern_ptr,
                                          patterns.observed_per_feature))  # fmt: skip
        if self._pattern_bytes + size <= PATTERN_CACHE_BYTES:
            self._patterns[start] = patterns
            self._pattern_bytes += size
        return patterns

    def blocks(self):
        """``(start, stop)`` of each block of rows, in order."""
        for start in range(0, self.n_samples, self.block_rows):
            yield start, min(start + self.block_rows, self.n_samples)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous array of the fit's dtype."""
        src = self.X[start:stop]
        if isinstance(src, np.ndarray) and src.dtype == self._dtype and src.flags.c_contiguous:
            return np.asarray(src)  # a memory map's pages, no copy
        if self._buffer is None:
            self._buffer = np.empty((self.block_rows, self._n_features), dtype=self._dtype)
        out = self._buffer[: stop - start]
        np.copyto(out, np.asarray(src), casting="unsafe")
        return out

    def _scan(self, *, validate: bool, sample: bool) -> None:
        """One pass: validate X and the weights (NaN, infinity, observed
        features, informative rows) and/or draw the initialization sample."""
        d = self._n_features
        sampler = None
        # Few rows: every row, as the in-memory fit initializes from all of X (rows with
        # nothing observed weighted 0): the same start for every init_params. No random
        # keys are drawn then, so a RandomState or Generator random_state is left to the
        # initialization, as in memory.
        take_all = sample and init_sample_size(self.n_samples, self.n_components) >= (
            self.n_samples
        )
        taken: list[tuple[np.ndarray, np.ndarray]] = []
        if sample and not take_all:
            size = init_sample_size(self.n_samples, self.n_components)
            sampler = _Sample(size, d, self._dtype, _random_generator(self.random_state))
        observed = np.zeros(d, dtype=np.int64)
        col_sum = np.zeros(d)
        col_weight = np.zeros(d)
        weight_sum = 0.0
        total_weight = 0.0
        n_empty = n_positive = 0
        has_nan = False
        for start, stop in self.blocks():
            xb = self._read(start, stop)
            wb = self._weights.block(start, stop)
            if validate:
                self._weights.check_block(wb)
                total_weight += float(wb.sum())
            nan = None
            if not np.isfinite(xb).all():
                if np.isinf(xb).any():
                    raise ValueError(
                        f"Input X contains infinity or a value too large for {self._dtype!r}."
                    )
                nan = np.isnan(xb)
                has_nan = True
            if nan is None:
                informative = wb > 0
                observed += int(informative.sum())  # rows of weight 0 observe nothing
                col_sum += wb @ xb
                col_weight += float(wb.sum())
                weight_sum += float(wb.sum())
            else:
                seen = ~nan
                empty = ~seen.any(axis=1)
                n_empty += int(empty.sum())
                informative = (wb > 0) & ~empty
                observed += (wb > 0) @ seen
                col_sum += wb @ np.where(seen, xb, 0.0)
                col_weight += wb @ seen
                weight_sum += float(wb[~empty].sum())
            n_positive += int(informative.sum())
            if take_all:  # copies: xb may be the reused read buffer
                kept = wb if nan is None else np.where(empty, 0.0, wb)
                taken.append((np.array(xb), np.array(kept, dtype=np.float64)))
            elif sampler is not None:
                sampler.offer(start, xb, wb, np.flatnonzero(informative))
            del xb, wb
            self._release(start, stop)
            self._weights.release(start, stop)
        with np.errstate(invalid="ignore", divide="ignore"):
            column_means = col_sum / col_weight
        if validate:
            self._check_scan(has_nan, observed, n_empty, n_positive, total_weight)
            self.has_nan = has_nan
            self.weight_sum = weight_sum
            self.n_empty_rows = n_empty
            self.n_informative = n_positive
            self.column_means = column_means
        if sample:
            if take_all:
                rows = np.ascontiguousarray(np.concatenate([x for x, _ in taken]))
                weights = np.ascontiguousarray(np.concatenate([w for _, w in taken]))
            else:
                rows, weights = sampler.arrays()
            if self.has_nan:
                missing = np.isnan(rows)
                rows[missing] = np.broadcast_to(self.column_means, rows.shape)[missing]
            self._sample = rows, weights

    def _check_scan(self, has_nan, observed, n_empty, n_positive, total_weight) -> None:
        """The checks of ``GaussianMixture._fit_data``, on the scan's counts."""
        if total_weight <= 0:
            raise ValueError("sample_weight sums to zero: there is nothing to fit.")
        check_fit_coverage(
            n_rows=self.n_samples,
            n_empty=n_empty if has_nan else 0,
            observed_per_feature=observed if has_nan else None,
            n_informative=n_positive,
            n_components=self.n_components,
            stacklevel=7,  # _check_scan, _scan, __init__, block_fit_data, _fit_data, fit
        )


class BlockReader:
    """An out-of-core X for prediction: row slices ``X[a:b]`` come back as
    C-contiguous float32/float64 arrays checked for infinity (NaN allowed),
    and the pages of a memory map's previous slice are released on each read.

    Validates the shape, dtype and feature count up front, with no pass over
    the values; nothing is loaded beyond the slice being read.

    Parameters
    ----------
    X : numpy.memmap or array-like of shape (n_samples, n_features)
    n_features : int or None
        The feature count the model expects.
    estimator_name : str
    """

    ndim = 2

    def __init__(
        self, X, n_features: int | None = None, estimator_name: str = "GaussianMixture"
    ) -> None:
        n, d = _check_shape_dtype(X, min_samples=1)
        if n_features is not None and d != n_features:
            raise ValueError(
                f"X has {d} features, but {estimator_name} is expecting {n_features} "
                "features as input."
            )
        self.X = X
        self.shape = (n, d)
        self.dtype = _fit_dtype(X.dtype)
        self._release = _page_releaser(X)
        self._last: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("BlockReader serves row slices X[a:b] only")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(start, stop)
        if self._last is not None:
            self._release(*self._last)
        xb = np.ascontiguousarray(np.asarray(self.X[start:stop]), dtype=self.dtype)
        if not np.isfinite(xb).all() and np.isinf(xb).any():
            raise ValueError(f"Input X contains infinity or a value too large for {self.dtype!r}.")
        self._last = (start, stop)
        return xb


def _fit_dtype(dtype) -> np.dtype:
    """The dtype of the fit: float32 for float32 in the machine's byte order, else
    native float64, as the in-memory fit casts (the kernels take native floats only:
    a big-endian file's blocks are converted as they are read, not handed on)."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def _check_shape_dtype(X, min_samples: int = 2) -> tuple[int, int]:
    """The checks of ``check_array`` that need no pass over the values."""
    shape = tuple(X.shape)
    dtype = np.dtype(X.dtype)
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: X has dtype {dtype}.")
    if dtype.kind not in "biuf":
        raise ValueError(f"X must be numeric, got dtype {dtype}.")
    if len(shape) != 2:  # scikit-learn's words, without the (possibly huge) values
        raise_not_2d(len(shape), "X", "GaussianMixture", f" (shape={shape}). ")
    n, d = (int(s) for s in shape)
    if n < min_samples:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={shape}) while a minimum of "
            f"{min_samples} is required by GaussianMixture."
        )
    if d < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is "
            "required by GaussianMixture."
        )
    return n, d


def _page_releaser(X):
    """A function ``release(start, stop)`` dropping the pages of rows
    ``start:stop`` of a 2-D (or 1-D: sample weights) memory map from the
    process (``MADV_DONTNEED``); a no-op where that is not possible or not safe."""

    def nothing(start: int, stop: int) -> None:
        return None

    mm = getattr(X, "_mmap", None) if isinstance(X, np.memmap) else None
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mm is None or advice is None or not hasattr(mm, "madvise"):
        return nothing
    if getattr(X, "mode", None) == "c":  # private pages may hold the caller's changes
        return nothing
    row_stride = X.strides[0]
    if row_stride <= 0 or X.ndim not in (1, 2) or (X.ndim == 2 and X.strides[1] != X.itemsize):
        return nothing  # rows not laid out one after the other
    try:
        view = np.frombuffer(mm, dtype=np.uint8, count=1)
        origin = X.ctypes.data - view.ctypes.data
        del view
        length = len(mm)
    except (ValueError, TypeError, BufferError):
        return nothing
    page = mmap.PAGESIZE
    state = {"ok": True}

    def release(start: int, stop: int) -> None:
        if not state["ok"] or stop <= start:
            return
        first = origin + start * row_stride
        last = min(origin + stop * row_stride, length)
        first -= first % page
        if last <= first:
            return
        try:
            mm.madvise(advice, first, last - first)
        except (OSError, ValueError):
            state["ok"] = False

    return release


def block_fit_data(estimator, X, sample_weight) -> BlockData:
    """Validate an out-of-core ``X`` (and weights) blockwise for ``estimator.fit``.

    Parameters
    ----------
    estimator : GaussianMixture
    X : numpy.memmap or array-like of shape (n_samples, n_features)
        Sliced by rows, never loaded whole.
    sample_weight : None, float or array-like of shape (n_samples,)

    Returns
    -------
    data : BlockData
    """
    k = check_positive_int(estimator.n_components, "n_components")
    n, _ = _check_shape_dtype(X)
    if n < k:
        raise ValueError(
            f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}"
        )
    given = (estimator.weights_init, estimator.means_init, estimator.precisions_init)
    return BlockData(
        X,
        sample_weight,
        n_components=k,
        random_state=estimator.random_state,
        sample=any(value is None for value in given),
    )
