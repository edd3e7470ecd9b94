"""Fitting on Dask arrays: one EM pass per chunk on the workers, a tree sum of
the statistics, the M-step on the client.

:meth:`fastem.GaussianMixture.fit` hands a :class:`dask.array.Array` to
:func:`dask_fit_data`, which returns a :class:`DaskData`: the same interface as
:class:`fastem._data.ArrayData`, so the ordinary EM loop runs on it unchanged.

How a fit runs
--------------
1. Validation of what the array's metadata tells (dimensions, dtype, shape,
   ``n_components``, the estimator's parameters and backend) on the client,
   before anything is computed.
2. The array is rechunked to whole rows (one chunk along axis 1), cast to
   float64 unless it is float32/float64, and persisted on the cluster once, one
   prepared chunk per row chunk: the rows, their sample weights and their
   missingness (NaN) patterns, found once per chunk as the in-memory fit finds
   them once per array.
3. One small task per chunk summarizes it (row count, infinity, observed
   values per feature, weights); the summaries come back to the client, which
   raises the same errors (and warnings) as the in-memory fit before any EM
   pass runs.
4. Each EM iteration submits one task per chunk running
   :func:`fastem._passes.em_stats` on the worker with the backend named by the
   estimator (the worker loads it by name), sums the :class:`~fastem._stats.Stats`
   in a fixed tree (so the result does not depend on which worker ran what;
   the top level of the tree, at most ``TREE_FAN_IN`` partial sums, is added
   on the client), and the loop does the M-step on the client.

Kernel threads per task: the estimator's ``n_threads``; if None, the worker's
``OMP_NUM_THREADS`` where set (distributed's nannies set 1, leaving the
parallelism to worker threads and processes), else the backend's own setting.
With one worker process per machine, give it ``n_threads`` = its cores.

Tasks run on whatever scheduler is active: a :class:`distributed.Client` if
one has been created, else Dask's default. With ``distributed``, a worker lost
in the middle of a fit costs a recomputation, not the fit: its chunks are
rebuilt from their lineage and its tasks rerun elsewhere, with the same
result.

Initialization
--------------
Unless all three of ``weights_init``, ``means_init`` and ``precisions_init``
are given (then the fit equals the in-memory fit from the same parameters up to
rounding), the initialization (``init_params``) runs on the client on a
uniform random sample of the rows that carry information (a positive weight
and at least one observed value), of
``min(n_informative, max(INIT_SAMPLE_MIN_ROWS, INIT_SAMPLE_ROWS_PER_COMPONENT * n_components))``
rows (by default ``max(10_000, 1000 * n_components)``), drawn with the
estimator's ``random_state`` and weighted by their sample weights; NaN in the
sample are filled with the column means of the whole array. When the data
holds no more rows than that, the "sample" is every row in order (rows of weight
0 or with nothing observed weighted 0), and the initialization is the in-memory
one, for every ``init_params``.

Prediction
----------
:func:`predict_dask` maps ``predict``, ``predict_proba``, ``score_samples``
or ``impute`` over the row chunks of a Dask array and returns a lazy Dask
array. :func:`score_sum` gives ``bic``/``aic`` the total log-likelihood and
the row count in one computation, also where chunk sizes are unknown.
"""

from __future__ import annotations

import copy
import functools
import numbers
import operator
import os
import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.delayed import Delayed, delayed
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "fastem.dask needs Dask: install it with `pip install 'fastem[dask]'`."
    ) from exc

from . import backends
from ._missing import MissingPatterns, check_fit_coverage, find_patterns, has_nan
from ._passes import PassParams, em_stats
from ._stats import Stats
from ._threads import limit_threads
from ._validation import (
    FLOAT_DTYPES,
    check_feature_names,
    check_positive_int,
    check_sample_weight,
)

__all__ = [
    "DaskData",
    "dask_fit_data",
    "predict_dask",
    "score_sum",
    "INIT_SAMPLE_MIN_ROWS",
    "INIT_SAMPLE_ROWS_PER_COMPONENT",
    "TREE_FAN_IN",
    "init_sample_size",
]

#: Smallest initialization sample (rows), unless the data has fewer.
INIT_SAMPLE_MIN_ROWS = 10_000
#: Initialization sample rows per mixture component.
INIT_SAMPLE_ROWS_PER_COMPONENT = 1_000
#: Statistics summed per task of the reduction tree.
TREE_FAN_IN = 8

# Parameters up to this size (times the number of chunks) are sent inside each task.
_INLINE_PARAMS_BYTES = 4 << 20

# Rows per block when scanning a chunk (bounds the (block, d) temporaries).
_SCAN_BLOCK = 16384

PREDICT_METHODS = ("predict", "predict_proba", "score_samples", "impute")


# ------------------------------------------------------------ worker side
@dataclass
class _Chunk:
    """One row chunk as held on a worker: rows, weights, NaN patterns."""

    X: np.ndarray
    sample_weight: np.ndarray
    patterns: MissingPatterns | None


@dataclass
class _Summary:
    """What the client needs to know of a chunk to validate the whole array."""

    n_rows: int
    n_weights: int
    has_inf: bool = False
    weights_finite: bool = True
    weights_min: float = np.inf
    weights_total: float = 0.0
    has_nan: bool = False
    n_empty: int = 0
    observed_per_feature: np.ndarray | None = None
    weight_sum: float = 0.0  # of rows with an observed value
    n_informative: int = 0  # rows with a positive weight and an observed value
    column_wsum: np.ndarray | None = None  # sum of w * x over observed entries
    column_w: np.ndarray | None = None  # sum of w over observed entries


def _prepare_chunk(xb: np.ndarray, swb: np.ndarray | None) -> _Chunk:
    """Make a chunk contiguous and find its NaN patterns (once per fit)."""
    X = np.ascontiguousarray(xb)
    if X.dtype not in FLOAT_DTYPES:  # object input: cast like check_array does
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"X could not be converted to float64: {exc}") from exc
    if swb is None:
        sw = np.ones(X.shape[0])
    else:
        sw = np.ascontiguousarray(swb, dtype=np.float64).reshape(-1)
    aligned = sw if sw.shape[0] == X.shape[0] else None  # misaligned: the client raises
    patterns = find_patterns(X, sample_weight=aligned) if has_nan(X) else None
    return _Chunk(X, sw, patterns)


def _scan_inf(X: np.ndarray) -> bool:
    return any(
        np.isinf(X[start : start + _SCAN_BLOCK]).any()
        for start in range(0, X.shape[0], _SCAN_BLOCK)
    )


def _observed_rows(chunk: _Chunk) -> np.ndarray:
    """Boolean mask of the rows with at least one observed value."""
    mask = np.ones(chunk.X.shape[0], dtype=bool)
    if chunk.patterns is not None:
        mask[:] = False
        mask[chunk.patterns.rows] = True
    return mask


def _summarize_chunk(chunk: _Chunk) -> _Summary:
    X, sw, patterns = chunk.X, chunk.sample_weight, chunk.patterns
    n, d = X.shape
    s = _Summary(n_rows=n, n_weights=sw.shape[0])
    if sw.shape[0] != n:
        return s  # misaligned sample weights: the client raises
    s.has_inf = _scan_inf(X)
    s.weights_finite = bool(np.isfinite(sw).all())
    s.weights_min = float(sw.min()) if n else np.inf
    s.weights_total = float(sw.sum())
    s.has_nan = patterns is not None
    observed = _observed_rows(chunk)
    s.n_empty = 0 if patterns is None else patterns.n_empty
    s.observed_per_feature = (  # counted in rows of positive weight, as in memory
        np.full(d, int((sw > 0).sum()), dtype=np.int64)
        if patterns is None
        else patterns.observed_per_feature
    )
    s.weight_sum = float(sw[observed].sum()) if patterns is not None else s.weights_total
    s.n_informative = int(((sw > 0) & observed).sum())
    s.column_wsum = np.zeros(d)
    s.column_w = np.zeros(d)
    with np.errstate(all="ignore"):  # infinite or NaN weights: the client raises
        for start in range(0, n, _SCAN_BLOCK):
            xb = X[start : start + _SCAN_BLOCK].astype(np.float64)
            wb = sw[start : start + _SCAN_BLOCK]
            if patterns is None:
                s.column_wsum += wb @ xb
                s.column_w += wb.sum()
            else:
                obs = ~np.isnan(xb)
                s.column_wsum += wb @ np.where(obs, xb, 0.0)
                s.column_w += wb @ obs
    return s


def _task_threads(n_threads: int | None) -> int | None:
    """Kernel threads of a task: ``n_threads``, else the worker's ``OMP_NUM_THREADS``.

    distributed's nannies start workers with ``OMP_NUM_THREADS=1`` (parallelism
    comes from the worker threads and processes); the cython backend obeys it
    anyway, and numba is held to it here, so that worker processes sharing a
    machine do not each start a kernel thread per core. None (the backend's own
    setting) where it is not set.
    """
    if n_threads is not None:
        return n_threads
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return omp if omp > 0 else None


def _chunk_stats(
    chunk: _Chunk, backend_name: str, n_threads: int | None, params: PassParams
) -> Stats:
    """One EM pass over a chunk, on the worker, with the named backend."""
    k, d = params.means.shape
    if chunk.X.shape[0] == 0 or (chunk.patterns is not None and chunk.patterns.rows.size == 0):
        return Stats.zeros(k, d, params.full, params.shift)
    kernels = backends.get_backend(backend_name)
    with limit_threads(backend_name, _task_threads(n_threads)):
        return em_stats(
            kernels, chunk.X, chunk.sample_weight, params, chunk.patterns, check_nan=False
        )


def _sum_stats(*parts: Stats) -> Stats:
    """The sum of some statistics, added left to right."""
    return functools.reduce(operator.add, parts)


def _take_informative(chunk: _Chunk, ranks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows (and weights) of a chunk's informative rows at the given ranks; every row
    if ranks is None, a row with nothing observed weighted 0 (as the in-memory fit
    initializes from all of X)."""
    if ranks is None:
        return chunk.X, np.where(_observed_rows(chunk), chunk.sample_weight, 0.0)
    informative = np.flatnonzero((chunk.sample_weight > 0) & _observed_rows(chunk))
    return chunk.X[informative[ranks]], chunk.sample_weight[informative[ranks]]


def _predict_block(block: np.ndarray, model, method: str, out_dtype: np.dtype) -> np.ndarray:
    """The in-memory method on one chunk, its kernels capped as fit's are.

    An empty chunk (a filtered array, ``X[X[:, 0] > 0]``, has them) gives an empty
    result of the declared ``out_dtype``: the in-memory methods refuse 0 rows.
    """
    if block.shape[0] == 0:
        # the fitted width: set_params(n_components=...) since the fit changes nothing
        tail = {"predict_proba": (model._n_fitted_components(),), "impute": (block.shape[1],)}
        return np.empty((0, *tail.get(method, ())), dtype=out_dtype)
    backend_name = backends.resolve_backend_name(model.backend)
    with limit_threads(backend_name, _task_threads(model.n_threads)), warnings.catch_warnings():
        # predict_dask warned once on the client; not again per chunk on the workers
        warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
        return getattr(model, method)(block)


# ------------------------------------------------------------ client side
def _is_sparse(X) -> bool:
    return hasattr(X, "toarray") and hasattr(X, "nnz")


def _check_dask_array(X, estimator_name: str) -> da.Array:
    """Run the checks that X's metadata allows; return X as float32/float64 (lazily)."""
    if not isinstance(X, da.Array):
        raise TypeError(f"Expected a dask.array.Array, got {type(X).__name__}.")
    if _is_sparse(getattr(X, "_meta", None)):
        raise TypeError(
            f"{estimator_name} does not support sparse input; pass a dense array "
            "(for example X.map_blocks(lambda b: b.toarray()))."
        )
    dtype = X.dtype
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: X has dtype {dtype}.")
    if dtype not in FLOAT_DTYPES and dtype.kind not in "biufO":
        raise ValueError(f"X must be numeric, got dtype {dtype}.")
    if X.ndim != 2:
        hint = (
            " Reshape your data either using array.reshape(-1, 1) if your data has a "
            "single feature or array.reshape(1, -1) if it contains a single sample."
            if X.ndim < 2
            else ""
        )
        raise ValueError(f"Expected 2D array for X, got {X.ndim}D array instead.{hint}")
    if X.shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 "
            f"is required by {estimator_name}."
        )
    if dtype not in FLOAT_DTYPES and dtype.kind != "O":
        X = X.astype(np.float64)
    return X


def _known_rows(X: da.Array) -> da.Array:
    """X with known row-chunk sizes (persisting X to learn them if needed)."""
    if any(np.isnan(c) for c in X.chunks[0]):
        X = X.persist()
        X.compute_chunk_sizes()
    return X


def _weight_pieces(sample_weight, X: da.Array) -> list:
    """One weight argument per row chunk of X: None, numpy slices or Delayed."""
    n_chunks = X.numblocks[0]
    if sample_weight is None:
        return [None] * n_chunks
    if isinstance(sample_weight, da.Array):
        sw = sample_weight
        if sw.ndim != 1:
            raise ValueError(
                f"sample_weight.shape == {sw.shape}, expected {(X.shape[0],)} "
                "(one weight per row of X)."
            )
        if sw.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight must be numeric, got dtype {sw.dtype}.")
        sw = _known_rows(sw)
        if sw.shape[0] != X.shape[0]:
            raise ValueError(
                f"sample_weight.shape == {sw.shape}, expected {(X.shape[0],)} "
                "(one weight per row of X)."
            )
        if sw.chunks[0] != X.chunks[0]:
            sw = sw.rechunk((X.chunks[0],))
        if sw.dtype != np.float64:
            sw = sw.astype(np.float64)
        return list(sw.to_delayed())
    sw = check_sample_weight(sample_weight, X.shape[0])
    bounds = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
    return [sw[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _combine(summaries: list[_Summary], n_features: int) -> _Summary:
    total = _Summary(
        n_rows=sum(s.n_rows for s in summaries),
        n_weights=sum(s.n_weights for s in summaries),
        observed_per_feature=np.zeros(n_features, dtype=np.int64),
        column_wsum=np.zeros(n_features),
        column_w=np.zeros(n_features),
    )
    for s in summaries:
        total.has_inf |= s.has_inf
        total.weights_finite &= s.weights_finite
        total.weights_min = min(total.weights_min, s.weights_min)
        total.weights_total += s.weights_total
        total.has_nan |= s.has_nan
        total.n_empty += s.n_empty
        total.weight_sum += s.weight_sum
        total.n_informative += s.n_informative
        if s.observed_per_feature is not None:
            total.observed_per_feature += s.observed_per_feature
            total.column_wsum += s.column_wsum
            total.column_w += s.column_w
    return total


def _check_summaries(
    summaries: list[_Summary], n_features: int, dtype: np.dtype, k: int, estimator_name: str
) -> _Summary:
    """Raise (and warn) exactly as the in-memory fit's validation does."""
    total = _combine(summaries, n_features)
    n = total.n_rows
    if n < 2:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={(n, n_features)}) while a minimum "
            f"of 2 is required by {estimator_name}."
        )
    if total.has_inf:
        raise ValueError(f"Input X contains infinity or a value too large for {dtype!r}.")
    if any(s.n_weights != s.n_rows for s in summaries):
        raise ValueError(
            f"sample_weight.shape == {(total.n_weights,)}, expected {(n,)} "
            "(one weight per row of X, in chunks like X's rows)."
        )
    if not total.weights_finite:
        raise ValueError("sample_weight contains NaN or infinity.")
    if total.weights_min < 0:
        raise ValueError("Negative values in sample_weight are not allowed.")
    if total.weights_total <= 0:
        raise ValueError("sample_weight sums to zero: there is nothing to fit.")
    if n < k:
        raise ValueError(
            f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}"
        )
    check_fit_coverage(
        n_rows=n,
        n_empty=total.n_empty if total.has_nan else 0,
        observed_per_feature=total.observed_per_feature if total.has_nan else None,
        n_informative=total.n_informative,
        n_components=k,
        stacklevel=5,  # as seen from this function: the user's call to fit
    )
    return total


def _sample_rng(random_state) -> np.random.Generator:
    """A Generator for the initialization sample, seeded from ``random_state``."""
    if random_state is None or random_state is np.random:
        return np.random.default_rng()
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.default_rng(int(random_state))
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise ValueError(
        f"random_state must be None, an int, a RandomState or a Generator, got {random_state!r}"
    )


def init_sample_size(n_informative: int, n_components: int) -> int:
    """Rows of the initialization sample for data with ``n_informative`` usable rows."""
    wanted = max(INIT_SAMPLE_MIN_ROWS, INIT_SAMPLE_ROWS_PER_COMPONENT * n_components)
    return int(min(n_informative, wanted))


def _backend_name_of(kernels: ModuleType, default: str) -> str:
    for name, module in backends._MODULES.items():
        if module == kernels.__name__:
            return name
    return default


class DaskData:
    """A validated Dask array persisted on the cluster, as the EM loop sees it.

    Same interface as :class:`fastem._data.ArrayData`. Built by
    :func:`dask_fit_data`; holding it keeps the chunks in the cluster's memory.

    Attributes
    ----------
    dtype : numpy.dtype
        float32 or float64.
    n_features : int
    n_samples : int
    weight_sum : float
        Sum of the weights of the rows with at least one observed value.
    n_empty_rows : int
        Rows with every value missing (left out of the fit).
    n_chunks : int
    """

    def __init__(
        self,
        chunks: list[Delayed],
        summaries: list[_Summary],
        total: _Summary,
        dtype: np.dtype,
        n_features: int,
        *,
        n_components: int,
        random_state,
        backend_name: str,
        n_threads: int | None,
    ) -> None:
        self._chunks = chunks
        self._summaries = summaries
        self._total = total
        self.dtype = np.dtype(dtype)
        self.n_features = n_features
        self.n_samples = total.n_rows
        self.n_chunks = len(chunks)
        self.weight_sum = total.weight_sum
        self.n_empty_rows = total.n_empty
        self._n_components = n_components
        self._random_state = random_state
        self._backend_name = backend_name
        self._n_threads = n_threads
        self._init: tuple[np.ndarray, np.ndarray] | None = None

    def em_stats(self, kernels: ModuleType, params: PassParams) -> Stats:
        """One EM pass over every chunk on the workers, summed in a fixed tree.

        The cluster sums groups of ``TREE_FAN_IN`` until at most that many
        partial sums are left; the client adds those, in order. The tree's
        shape depends on the number of chunks only, so the result does not
        depend on which worker computed what.
        """
        name = _backend_name_of(kernels, self._backend_name)
        size = sum(a.nbytes for a in vars(params).values() if isinstance(a, np.ndarray)) * len(
            self._chunks
        )
        # Small parameters travel inside each task (saves a hop); large ones once.
        p = params if size <= _INLINE_PARAMS_BYTES else delayed(params, traverse=False)
        parts = [delayed(_chunk_stats)(chunk, name, self._n_threads, p) for chunk in self._chunks]
        while len(parts) > TREE_FAN_IN:
            parts = [
                delayed(_sum_stats)(*parts[i : i + TREE_FAN_IN])
                for i in range(0, len(parts), TREE_FAN_IN)
            ]
        return _sum_stats(*dask.compute(*parts))

    def init_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """A uniform random sample of the informative rows, and their weights.

        Drawn once per fit (on the first call) and brought to the client; see
        the module's documentation for its size. NaN entries are filled with
        the weighted column means of the whole array.
        """
        if self._init is None:
            self._init = self._draw_sample()
        return self._init

    def _draw_sample(self) -> tuple[np.ndarray, np.ndarray]:
        counts = np.array([s.n_informative for s in self._summaries], dtype=np.int64)
        total = int(counts.sum())
        m = init_sample_size(total, self._n_components)
        if init_sample_size(self.n_samples, self._n_components) >= self.n_samples:
            # Few rows: every row, in order, as the in-memory fit initializes from all
            # of X (rows of weight 0 or with nothing observed weighted 0): the same start
            # for every init_params, the random ones included.
            ranks: list[np.ndarray | None] = [None] * len(counts)
            counts = np.array([s.n_rows for s in self._summaries], dtype=np.int64)
        elif m >= total:
            ranks = [np.arange(c) for c in counts]
        else:
            rng = _sample_rng(self._random_state)
            chosen = np.sort(rng.choice(total, size=m, replace=False))
            bounds = np.concatenate([[0], np.cumsum(counts)])
            cut = np.searchsorted(chosen, bounds)
            ranks = [chosen[cut[j] : cut[j + 1]] - bounds[j] for j in range(len(counts))]
        tasks = [
            delayed(_take_informative)(chunk, r)
            for chunk, r, c in zip(self._chunks, ranks, counts, strict=True)
            if c and (r is None or r.size)
        ]
        parts = dask.compute(*tasks)
        X = np.concatenate([x for x, _ in parts]).astype(self.dtype, copy=False)
        sw = np.concatenate([w for _, w in parts]).astype(np.float64, copy=False)
        if self._total.has_nan:
            with np.errstate(invalid="ignore", divide="ignore"):
                col_mean = self._total.column_wsum / self._total.column_w
            X = np.where(np.isnan(X), col_mean.astype(self.dtype), X)
        return np.ascontiguousarray(X, dtype=self.dtype), np.ascontiguousarray(sw)


def dask_fit_data(estimator, X, sample_weight=None) -> DaskData:
    """Validate a Dask array (and weights) on the cluster and persist it for EM.

    Parameters
    ----------
    estimator : GaussianMixture
        Supplies ``n_components``, ``random_state``, ``backend`` and
        ``n_threads``; its parameters are validated first.
    X : dask.array.Array of shape (n_samples, n_features)
        float32 stays float32, other numeric dtypes become float64; NaN entries
        are missing values. Rechunked to whole rows if needed.
    sample_weight : None, scalar, array-like or dask.array.Array of shape (n_samples,)
        A Dask array is rechunked like X's rows if it is not already.

    Returns
    -------
    DaskData

    Raises
    ------
    ValueError, TypeError
        The errors of the in-memory fit, before any EM pass.
    """
    name = type(estimator).__name__
    k = check_positive_int(estimator.n_components, "n_components")
    X = _check_dask_array(X, name)
    d = int(X.shape[1])
    # Everything the estimator alone decides is checked before the cluster works.
    estimator._check_parameters(d)
    backend_name = backends.resolve_backend_name(estimator.backend)
    X = _known_rows(X)
    n = int(X.shape[0])
    if n < 2:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={(n, d)}) while a minimum "
            f"of 2 is required by {name}."
        )
    if n < k:
        raise ValueError(
            f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}"
        )
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    weights = _weight_pieces(sample_weight, X)
    blocks = X.to_delayed()[:, 0]
    prepared = [delayed(_prepare_chunk)(xb, wb) for xb, wb in zip(blocks, weights, strict=True)]
    chunks = list(dask.persist(*prepared))
    summaries = list(dask.compute(*[delayed(_summarize_chunk)(c) for c in chunks]))
    dtype = X.dtype if X.dtype in FLOAT_DTYPES else np.dtype(np.float64)
    total = _check_summaries(summaries, d, dtype, k, name)
    return DaskData(
        chunks,
        summaries,
        total,
        dtype,
        d,
        n_components=k,
        random_state=estimator.random_state,
        backend_name=backend_name,
        n_threads=estimator.n_threads,
    )


def predict_dask(model, X, method: str = "predict") -> da.Array:
    """Lazy ``predict``, ``predict_proba``, ``score_samples`` or ``impute`` of a Dask array.

    Each row chunk is passed to the in-memory method of (a snapshot of) the
    fitted model on the worker; nothing is computed until the result is.

    Parameters
    ----------
    model : GaussianMixture
        A fitted model.
    X : dask.array.Array of shape (n_samples, n_features)
    method : {'predict', 'predict_proba', 'score_samples', 'impute'}, default='predict'

    Returns
    -------
    dask.array.Array
        Shape (n_samples,) (int64 labels or log-densities),
        (n_samples, n_components) (responsibilities) or
        (n_samples, n_features) (X with NaN imputed, float32 if X is, else
        float64), chunked like X's rows.
    """
    if method not in PREDICT_METHODS:
        raise ValueError(f"method must be one of {PREDICT_METHODS}, got {method!r}.")
    model._check_is_fitted()
    name = type(model).__name__
    X = _check_dask_array(X, name)
    if X.shape[1] != model.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {name} is expecting "
            f"{model.n_features_in_} features as input."
        )
    # A Dask array has no column names: a model fitted with names warns here, once, as
    # the in-memory methods do (the chunks' own calls are kept quiet).
    check_feature_names(model, X, reset=False)
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    snapshot = delayed(copy.deepcopy(model), traverse=False)
    token = f"{name.lower()}-{method.replace('_', '-')}"
    if method == "impute":
        return X.map_blocks(
            _predict_block,
            model=snapshot,
            method=method,
            out_dtype=X.dtype,
            dtype=X.dtype,
            meta=np.empty((0, 0), dtype=X.dtype),
            token=token,
        )
    # the in-memory methods' dtypes: X as validated (float32 or float64) with the model's
    x_dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    out_dtype = np.result_type(x_dtype, model.means_.dtype)
    if method == "predict_proba":
        dtype = out_dtype
        return X.map_blocks(
            _predict_block,
            model=snapshot,
            method=method,
            out_dtype=dtype,
            dtype=dtype,
            chunks=(X.chunks[0], (model._n_fitted_components(),)),  # as the chunks
            meta=np.empty((0, 0), dtype=dtype),
            token=token,
        )
    dtype = np.dtype(np.int64) if method == "predict" else out_dtype
    return X.map_blocks(
        _predict_block,
        model=snapshot,
        method=method,
        out_dtype=dtype,
        dtype=dtype,
        drop_axis=1,
        meta=np.empty((0,), dtype=dtype),
        token=token,
    )


def _row_count(block: np.ndarray) -> np.ndarray:
    return np.ones(block.shape[0], dtype=np.int64)


def score_sum(model, X) -> tuple[float, int]:
    """Total log-likelihood of the rows of a Dask array, and their number.

    Both come from one computation of the lazy ``score_samples``: the row
    count is counted, not read from ``X.shape``, which is NaN where the chunk
    sizes are unknown.

    Parameters
    ----------
    model : GaussianMixture
        A fitted model.
    X : dask.array.Array of shape (n_samples, n_features)

    Returns
    -------
    total : float
        ``sum(score_samples(X))``.
    n_samples : int
    """
    log_density = predict_dask(model, X, "score_samples")
    ones = log_density.map_blocks(_row_count, dtype=np.int64, meta=np.empty((0,), np.int64))
    total, n = dask.compute(log_density.sum(), ones.sum())
    return float(total), int(n)
