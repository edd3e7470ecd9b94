"""Numba backend: the fastem kernels compiled with ``@njit(nogil=True)``, run on threads.

Same signatures and semantics as the NumPy reference (the kernel contract is
the docstring of :mod:`fastem.backends._numpy`).

Design
------
Chunks (determinism)
    Rows are split into ``n_chunks`` (1 if ``n <= MIN_CHUNK_ROWS``, else
    ``ceil(n / MIN_CHUNK_ROWS)`` rounded up to a multiple of 8, at most ``MAX_CHUNKS``)
    contiguous chunks, a number that depends only on ``n``. :func:`run_chunks`
    splits the chunks (a multiple of 8 of them, so the split is even for 1, 2,
    4 or 8 threads) into one contiguous range per thread; each chunk writes its
    statistics into its own slot of a partials array, and the partials are
    summed in chunk order. Results are therefore bit-identical whatever the
    thread count.
Threads (start-up)
    Each kernel is one serial ``nogil`` function over a range of chunks, called
    on ``numba.get_num_threads()`` Python threads, not a ``parallel=True``
    ``prange``: Numba's parfor lowering compiled each fused kernel twice more
    and made a first fit with an empty cache several times slower (issue #13;
    see ``docs/startup.md``). The per-call cost is a few thread hand-offs.
Helpers (start-up)
    The functions the kernels call are ``@helper`` functions
    (:class:`fastem.backends._numba_cache.Helper`): compiled without the
    CPython and C wrappers that only a call from Python needs (a Python
    call, as tests make, goes to a twin that has them). Those that run once
    per block of rows (``out_of_line``) stay calls in the kernels instead of
    being inlined, so a kernel's module does not optimize their (already
    optimized) code a second time inside a function several times its size.
    Per-element helpers (``exp64``, ``_exp32``) stay inlined, so the loops
    around them vectorize. A helper's own library is optimized (callers link
    it in) but never emitted as machine code, and every fastem function
    compiles with ``_numba_cache.Compiler`` (Numba's, with a memo of the call
    types it resolves). Fits hash bit-identical to the inlined build's; a
    first fit with an empty cache compiles less (``docs/cold_start.md``).
Blocks (vectorization)
    Inside a chunk, rows are processed in blocks of ``B`` rows copied into a
    transposed ``(d, B)`` scratch, so every inner loop runs over points with
    unit stride and LLVM vectorizes it (AVX2/AVX-512). Per component:

    * E-step, full (:func:`_tri_maha_tiled`): ``y = (x - mu) @ U`` with
      ``U`` upper triangular, register-tiled: four output coordinates at a
      time, four input coordinates per pass over the block (16 FMAs per four
      loads of ``x`` and four of the partial sums), only the ``j <= j'``
      terms; the centring is fused into the loads and the squared norm into
      the last pass. The full-covariance kernel uses longer blocks
      (:func:`_block_rows_full`, 256 rows, 512 for float32): the tiled loops
      run 2-3x faster on 256 rows than on 64.
    * log-sum-exp per row with the vectorizable :func:`exp64`; the
      exponentials are kept and scaled by ``w / sum`` to give the
      responsibilities (one exp per row and component).
    * Statistics (:func:`_accum_full_tiled`; float32: :func:`_accum_full_tiled32v`,
      see below): ``r (x - mu)`` (``mu`` is the
      shift) is formed once in float64, and the upper triangle of ``sxx`` is
      accumulated in 4x4 tiles of dot products over the block (16 FMAs per
      eight loads), the centring again fused into the loads; it is mirrored
      at the end.

    Every sum runs in an order fixed by ``d`` and the block, never by the
    thread count. Below ``d = 4`` (no whole tile) a separate kernel,
    :func:`_chunks_full_small`, runs the untiled :func:`_tri_maha` and
    :func:`_accum_full` on a centred copy (faster there; a fit compiles only
    the kernel its ``d`` needs), as the missing-data and tied kernels do.

    Scratch is a few ``(d, B)`` and ``(k, B)`` blocks per chunk plus the
    ``O(n_chunks k d^2)`` partials; nothing is ``n x k`` or ``n x d``. The
    blocks start on 64-byte boundaries (:func:`_empty_aligned`; Numba's
    ``np.empty`` gives 32): one pass, 1 thread, took 0.75-0.94x the time
    (W1-W5) of one with blocks wherever ``np.empty`` put them.
float32
    The full-covariance pass runs its inner products in float32 (twice the
    SIMD width): the Mahalanobis products (as the reference, which also
    subtracts the mean in float32 before widening) and, unlike the
    reference, the statistics of each block of ``B = 512`` rows
    (:func:`_accum_full_tiled32v`), added to float64 partials; its
    responsibilities' exponentials are float32 (:func:`_exp32`), the
    log-densities, their log-sum-exp and the partials float64. A float32
    sum depends on which rows it adds, so for float32 the blocks are a fixed
    grid counted from row 0 of ``X``, chunk boundaries on it
    (:func:`_chunk_rows`): results do not depend on the thread count, and an
    out-of-core pass over pieces of a multiple of ``B`` rows gives the same
    block sums as the in-memory pass (the totals differ only in float64
    rounding). Its blocks are 64-byte aligned (:func:`_empty_aligned`) and its
    tiled loops run over whole 16-lane vectors (:func:`_load_block32` zeroes
    a block's columns past its last row), which keeps LLVM from emitting a
    vectorized remainder loop whose broadcasts spilled the main loop's.
    Diagonal and tied passes keep float64 statistics.
fastmath
    Only ``reassoc``/``contract``/``arcp``/``nsz`` (vectorized reductions and
    FMAs); never ``nnan``/``ninf``, so NaN and inf propagate.

``X`` is assumed finite (the estimator validates it); a zero ``sample_weight``
gives a row exactly zero responsibility and no loglik contribution.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from . import _numba_cache  # noqa: F401  (registers the cache locator)
from ._numba_cache import helper
from ._numba_exp import _bits_f64, _f64_bits, exp64

__all__ = [
    "em_pass_full",
    "em_pass_diag",
    "em_pass_tied",
    "log_prob_full",
    "log_prob_diag",
    "log_prob_tied",
    "kmeans_pass",
    "impute_missing_full",
]  # plus the missing-data entry points of _numba_missing.ENTRY_POINTS, added below

# Chunking: fixed by the problem's shape only (never by the thread count), for
# determinism. Per-chunk partial statistics are capped at PARTIALS_BUDGET floats
# so that large k * d^2 models do not multiply their statistics by MAX_CHUNKS.
MIN_CHUNK_ROWS = 2048
MAX_CHUNKS = 128
PARTIALS_BUDGET = 4 * 1024 * 1024  # float64 values (32 MiB)

_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
# Kernels are called from Python (their CPython wrapper), never as C callbacks:
# no cfunc wrapper to compile. Helpers (``@helper``) have neither wrapper.
_JIT = dict(
    cache=True,
    nogil=True,
    fastmath=_FASTMATH,
    no_cfunc_wrapper=True,
    pipeline_class=_numba_cache.Compiler,  # with the typing memo (see _numba_cache)
)
# The float64 scratch dtype as a dtype object, the type ``X.dtype`` has: with
# float64 ``X`` the kernels' float64 and ``X.dtype`` scratch then share one
# compiled ``_empty_aligned`` (``np.float64``, a class, would make a second).
_F64 = np.dtype(np.float64)


def _n_chunks(n, floats_per_chunk):
    """Number of row chunks for ``n`` rows: 1 for small ``n``, else a multiple
    of 8 (so 1, 2, 4 or 8 threads get equal shares of the static split), at
    most ``MAX_CHUNKS`` and at most what keeps the partials
    (``floats_per_chunk`` each) within ``PARTIALS_BUDGET`` (but never below 8).
    Depends on the shape only."""
    c = (n + MIN_CHUNK_ROWS - 1) // MIN_CHUNK_ROWS
    if c <= 1:
        return 1
    cap = max(8, PARTIALS_BUDGET // max(floats_per_chunk, 1) // 8 * 8)
    return min(MAX_CHUNKS, cap, (c + 7) // 8 * 8)


# ------------------------------------------------------------------ threads
# The chunks run on Python threads, each calling one serial ``nogil`` kernel
# over a contiguous range of chunk indices, instead of a ``parallel=True``
# ``prange``: Numba's parfor lowering compiled every fused kernel twice more
# (the gufunc and its caller) and was most of a cold first fit (em_pass_full
# 20 s of 28 s). Same static split as ``prange``, same per-chunk partials, so
# results do not depend on the thread count.

# (pool, pid of the process that made it), one object so that a lock-free read
# sees both or neither (a forked child must not use its parent's dead pool)
_pool_state: tuple[ThreadPoolExecutor, int] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """The worker threads (``NUMBA_NUM_THREADS - 1``; the caller is one more),
    created on first use and again in a forked child."""
    global _pool_state
    state = _pool_state
    if state is not None and state[1] == os.getpid():
        return state[0]  # made in this process: no lock (~0.3 us per pass)
    with _pool_lock:
        state = _pool_state
        if state is None or state[1] != os.getpid():
            workers = max(1, numba.config.NUMBA_NUM_THREADS - 1)
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastem")
            state = _pool_state = (pool, os.getpid())
        return state[0]


_get_threads = None  # numba's per-thread count getter, once the layer is up


def _num_threads() -> int:
    """``numba.get_num_threads()`` without its per-call threading-layer check
    (~0.5 us: ``_launch_threads`` takes two locks): once the layer is launched,
    its own getter, which still reads the calling thread's current count
    (``numba.set_num_threads``, ``limit_threads``)."""
    global _get_threads
    get = _get_threads
    if get is None:
        n = numba.get_num_threads()  # launches the threading layer
        from numba.np.ufunc import parallel

        _get_threads = getattr(parallel, "_get_num_threads", None) or numba.get_num_threads
        return int(n)
    n = get()
    return int(n) if n > 0 else int(numba.get_num_threads())  # numba's own error path


def run_chunks(kernel, n_iter, *args):
    """Call ``kernel(i0, i1, *args)`` over ranges that split ``range(n_iter)``.

    ``numba.get_num_threads()`` ranges (what :func:`fastem._threads.limit_threads`
    and ``numba.set_num_threads`` set), contiguous and in order, as ``prange``'s
    static schedule splits them; the calling thread runs the first. ``kernel``
    must be a ``nogil`` Numba function that writes each iteration's results
    to its own place, so that the split does not change them.
    """
    nt = min(_num_threads(), n_iter)
    if nt <= 1:
        kernel(0, n_iter, *args)
        return
    bounds = [t * n_iter // nt for t in range(nt + 1)]
    pool = _executor()
    futures = [pool.submit(kernel, bounds[t], bounds[t + 1], *args) for t in range(1, nt)]
    try:
        kernel(0, bounds[1], *args)
    finally:
        for f in futures:
            f.result()


def _sum_chunks(ll_p):
    """The chunks' logliks summed in chunk order (a Python float)."""
    ll = 0.0
    for v in ll_p.tolist():
        ll += v
    return ll


def _mirror_upper(s, out):
    """``out = s`` with the upper triangle of each trailing (d, d) matrix
    mirrored below (``s`` holds zeros below its diagonal)."""
    out[...] = s
    out += np.swapaxes(np.triu(s, 1), -1, -2)


@intrinsic
def _empty_1d(typingctx, size, dtype):
    """``np.empty(size, dtype)``, 1-D, emitted in place: Numba's own shape check
    and allocation (``numba.np.arrayobj``), without compiling its ``np.empty``
    overload as a function of its own for each dtype (a cold first fit's
    compile). Imported here, not with this module: Numba imports arrayobj with
    its other implementations on its first compile, in its own order."""
    from numba.core.typing.npydecl import parse_dtype

    nb_dtype = parse_dtype(dtype)  # a dtype object or a class, as np.empty's
    if not isinstance(size, types.Integer) or nb_dtype is None:
        return None
    retty = types.Array(nb_dtype, 1, "C")

    def codegen(context, builder, sig, args):
        from numba.np.arrayobj import _empty_nd_impl, _parse_shape

        shapes = _parse_shape(context, builder, sig.args[0], args[0])
        return _empty_nd_impl(context, builder, sig.return_type, shapes)._getvalue()

    return retty(size, dtype), codegen


@helper(cache=True, nogil=True)
def _block_rows(d):
    """Rows per transposed block: keeps a ``(d, B)`` float64 block near 16-32 KiB."""
    if d <= 8:
        return 256
    if d <= 32:
        return 128
    return 64


@helper(cache=True, nogil=True)
def _block_rows_full(d, itemsize):
    """Rows per block of the full-covariance kernel: long row loops (the tiled
    kernels run 2-3x faster on 256 rows than on 64 at d = 16..64), while the
    (d, B) blocks stay within the L2 cache. float32 (``itemsize`` 4) takes
    twice the rows of float64 (the same bytes): the vector loops then run as
    many iterations per tile (a float32 pass on W2/W4 took 1.13x/1.24x the
    time with 256 rows, 1.29x on W2 with 1024).

    For float32 this is also the unit of the row grid whose block sums are
    float32 (see :func:`_chunks_full`), so it depends on ``d`` only.
    """
    rows = 256 if d <= 128 else 128
    return rows * 8 // itemsize


@helper(cache=True, nogil=True)
def _chunk_rows(c, n, nc, B, aligned):
    """Rows ``lo, hi`` of chunk ``c`` of ``nc``: ``c n / nc`` (float64, as
    always), or with ``aligned`` whole blocks of ``B`` rows counted from row 0,
    ``c nblk / nc`` blocks (float32; a chunk may then be empty)."""
    if not aligned:
        return c * n // nc, (c + 1) * n // nc
    nblk = (n + B - 1) // B
    lo = c * nblk // nc * B
    hi = (c + 1) * nblk // nc * B
    # not min(): Numba compiles its overload as a function of its own (cold fit)
    return (lo if lo < n else n), (hi if hi < n else n)


@helper(out_of_line=True, **_JIT)
def _load_block(X, start, nb, xt):
    """``xt[:, :nb] = X[start:start + nb].T``.

    From ``d = 32`` on, eight rows at a time: one row's stores to the ``d``
    rows of ``xt`` are a large power-of-two stride apart and land in a few L1
    cache sets, so a row at a time thrashed them (W4, d = 64: 15 ms of a 60 ms
    pass, 3 ms this way); eight rows fill whole 64-byte lines of ``xt``.
    """
    d = X.shape[1]
    b = 0
    if d >= 32:
        while b + 8 <= nb:
            for j in range(d):
                for q in range(8):
                    xt[j, b + q] = X[start + b + q, j]
            b += 8
    for bb in range(b, nb):
        for j in range(d):
            xt[j, bb] = X[start + bb, j]


@helper(out_of_line=True, **_JIT)
def _load_block32(X, start, nb, xt):
    """:func:`_load_block` for float32 ``X``, then zeros in the columns ``nb``
    up to the next multiple of 16 (the float32 tiled loops run over whole
    16-lane vectors; see :func:`_tri_maha_tiled32`).

    Sixteen rows (one 64-byte line of each row of ``xt``) by four columns at a
    time: ~0.7x the time of :func:`_load_block` on float32 W4 (d = 64) and
    ~0.9x on W2 (d = 16, which that loads a row at a time).
    """
    d = X.shape[1]
    b = 0
    while b + 16 <= nb:
        j = 0
        while j + 4 <= d:
            for q in range(16):
                r = start + b + q
                xt[j, b + q] = X[r, j]
                xt[j + 1, b + q] = X[r, j + 1]
                xt[j + 2, b + q] = X[r, j + 2]
                xt[j + 3, b + q] = X[r, j + 3]
            j += 4
        for jj in range(j, d):
            for q in range(16):
                xt[jj, b + q] = X[start + b + q, jj]
        b += 16
    for bb in range(b, nb):
        for j in range(d):
            xt[j, bb] = X[start + bb, j]
    nv = (nb + 15) & -16
    for j in range(d):
        for bb in range(nb, nv):
            xt[j, bb] = np.float32(0.0)


@helper(out_of_line=True, **_JIT)
def _center(xt, nb, mu, diff):
    """``diff[:, :nb] = xt[:, :nb] - mu[:, None]`` in the dtype of ``diff``.

    The subtraction is done in the dtype of ``xt`` (as in the reference) and
    the result converted to the dtype of ``diff``.
    """
    for j in range(xt.shape[0]):
        m = mu[j]
        for b in range(nb):
            diff[j, b] = xt[j, b] - m


@helper(out_of_line=True, **_JIT)
def _tri_maha(diff, U, nb, acc, maha):
    """``maha[:nb] = ||diff[:, :nb].T @ U||^2`` row-wise, ``U`` upper triangular.

    Output coordinate ``jp`` is ``sum_{j <= jp} U[j, jp] diff[j]``; its terms
    are taken four at a time (then the 1-3 left over), the partial sum lives in
    ``acc``, and the last pass adds its square into ``maha``.
    """
    d = diff.shape[0]
    for b in range(nb):
        maha[b] = 0.0
    for jp in range(d):
        m = jp + 1
        g = m // 4
        rem = m - 4 * g
        for gi in range(g):
            j = 4 * gi
            p0 = U[j, jp]
            p1 = U[j + 1, jp]
            p2 = U[j + 2, jp]
            p3 = U[j + 3, jp]
            first = gi == 0
            last = gi == g - 1 and rem == 0
            if first and last:
                for b in range(nb):
                    t = p0 * diff[j, b] + p1 * diff[j + 1, b] + p2 * diff[j + 2, b]
                    t += p3 * diff[j + 3, b]
                    maha[b] += t * t
            elif first:
                for b in range(nb):
                    t = p0 * diff[j, b] + p1 * diff[j + 1, b] + p2 * diff[j + 2, b]
                    acc[b] = t + p3 * diff[j + 3, b]
            elif last:
                for b in range(nb):
                    t = acc[b] + p0 * diff[j, b] + p1 * diff[j + 1, b]
                    t += p2 * diff[j + 2, b] + p3 * diff[j + 3, b]
                    maha[b] += t * t
            else:
                for b in range(nb):
                    t = acc[b] + p0 * diff[j, b] + p1 * diff[j + 1, b]
                    acc[b] = t + p2 * diff[j + 2, b] + p3 * diff[j + 3, b]
        if rem == 0:
            continue
        j = 4 * g
        p0 = U[j, jp]
        if g == 0:
            if rem == 1:
                for b in range(nb):
                    t = p0 * diff[j, b]
                    maha[b] += t * t
            elif rem == 2:
                p1 = U[j + 1, jp]
                for b in range(nb):
                    t = p0 * diff[j, b] + p1 * diff[j + 1, b]
                    maha[b] += t * t
            else:
                p1 = U[j + 1, jp]
                p2 = U[j + 2, jp]
                for b in range(nb):
                    t = p0 * diff[j, b] + p1 * diff[j + 1, b] + p2 * diff[j + 2, b]
                    maha[b] += t * t
        else:
            if rem == 1:
                for b in range(nb):
                    t = acc[b] + p0 * diff[j, b]
                    maha[b] += t * t
            elif rem == 2:
                p1 = U[j + 1, jp]
                for b in range(nb):
                    t = acc[b] + p0 * diff[j, b] + p1 * diff[j + 1, b]
                    maha[b] += t * t
            else:
                p1 = U[j + 1, jp]
                p2 = U[j + 2, jp]
                for b in range(nb):
                    t = acc[b] + p0 * diff[j, b] + p1 * diff[j + 1, b]
                    t += p2 * diff[j + 2, b]
                    maha[b] += t * t


@njit(**_JIT)
def _diag_maha(xt, nb, mu, prec, maha):
    """``maha[:nb] = sum_j ((xt[j] - mu[j]) * prec[j])^2``, four features per pass."""
    d = xt.shape[0]
    for b in range(nb):
        maha[b] = 0.0
    j = 0
    while j + 4 <= d:
        m0 = mu[j]
        m1 = mu[j + 1]
        m2 = mu[j + 2]
        m3 = mu[j + 3]
        q0 = prec[j]
        q1 = prec[j + 1]
        q2 = prec[j + 2]
        q3 = prec[j + 3]
        for b in range(nb):
            t0 = (xt[j, b] - m0) * q0
            t1 = (xt[j + 1, b] - m1) * q1
            t2 = (xt[j + 2, b] - m2) * q2
            t3 = (xt[j + 3, b] - m3) * q3
            maha[b] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
        j += 4
    while j < d:
        m0 = mu[j]
        q0 = prec[j]
        for b in range(nb):
            t0 = (xt[j, b] - m0) * q0
            maha[b] += t0 * t0
        j += 1


@helper(out_of_line=True, **_JIT)
def _responsibilities(logp, w, start, nb, mx, s):
    """Turn ``logp[:, :nb]`` into responsibilities times weight, in place.

    Returns ``sum_b w_b logsumexp_k logp[k, b]`` over the block's rows
    ``start .. start + nb`` of ``w``.
    """
    k = logp.shape[0]
    for b in range(nb):
        mx[b] = logp[0, b]
    for kk in range(1, k - 1):
        for b in range(nb):
            v = logp[kk, b]
            mx[b] = v if v > mx[b] else mx[b]
    # The last component's maximum (k = 1: component 0 again), with the far-row guard:
    # a row of density 0 under every component (a far row) takes max 0, so that its
    # exponentials are exp(-inf - 0) = 0, not exp(-inf - -inf) = NaN, and its sum of
    # exponentials starts at 1 for weight 0 (it adds nothing) or NaN for a positive
    # weight (NaN statistics, then the ill-defined covariance error, as the numpy
    # reference). In the max loop's last pass, with selects: no extra pass over rows.
    for b in range(nb):
        v = logp[k - 1, b]
        m = v if v > mx[b] else mx[b]
        far = m == -math.inf
        mx[b] = 0.0 if far else m
        s[b] = (1.0 if w[start + b] == 0.0 else math.nan) if far else 0.0
    for kk in range(k):
        for b in range(nb):
            e = exp64(logp[kk, b] - mx[b])
            logp[kk, b] = e
            s[b] += e
    ll = 0.0
    for b in range(nb):
        wb = w[start + b]
        if wb != 0.0:
            ll += wb * (mx[b] + math.log(s[b]))
        s[b] = wb / s[b]
    for kk in range(k):
        for b in range(nb):
            logp[kk, b] *= s[b]
    return ll


# ------------------------------------------------------------------ float32 exp
# The float32 full pass takes its responsibilities' exponentials in float32
# (16 lanes, a degree-6 polynomial) instead of exp64 (8 lanes, degree 13): at
# d = 16 the exponentials were ~20% of a float32 pass.

_EXP32_SHIFT = np.float32(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer
_EXP32_SHIFT_BITS = 0x4B400000  # bit pattern of _EXP32_SHIFT
_EXP32_LOG2E = np.float32(1.44269504088896341)
# Cody-Waite two-part ln 2 (Cephes expf): n * _EXP32_C1 is exact for |n| < 2**9
_EXP32_C1 = np.float32(0.693359375)
_EXP32_C2 = np.float32(-2.12194440e-4)
_EXP32_P = tuple(
    np.float32(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
              1.6666665459e-1, 5.0000001201e-1)
)  # fmt: skip
_EXP32_LO = np.float32(-87.0)  # below: 0 (exp(-87) = 1.6e-38, near float32's smallest normal)


@intrinsic
def _f32_bits(typingctx, x):
    """Reinterpret a float32 as int32 (no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, x):
    """Reinterpret the low 32 bits of an int64 as float32 (no conversion;
    Numba widens int32 arithmetic to int64)."""
    if x != types.int64:
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], context.get_value_type(types.int32))
        return builder.bitcast(low, context.get_value_type(types.float32))

    return types.float32(types.int64), codegen


@helper(cache=True, fastmath={"contract"})
def _exp32(x):
    """``exp(x)`` for a float32 ``x <= 0`` (the pass's ``logp - max``), vectorizable.

    Cephes ``expf``: ``n = round(x / ln 2)`` by the shifter trick, Cody-Waite
    reduction, a degree-6 polynomial on ``|r| <= ln2 / 2``, ``2**n`` from
    exponent bits. Within ~2 ulp of ``exp`` on ``[-87, 0]``; 0 below -87
    (where float32 would be subnormal) and for -inf; NaN propagates. Compiled
    without ``reassoc`` (it would fold ``(t + SHIFT) - SHIFT``), like ``exp64``.
    """
    xc = _EXP32_LO if x < _EXP32_LO else x  # keeps NaN
    t = xc * _EXP32_LOG2E + _EXP32_SHIFT
    nf = t - _EXP32_SHIFT
    n = _f32_bits(t) - _EXP32_SHIFT_BITS
    r = (xc - nf * _EXP32_C1) - nf * _EXP32_C2
    p0, p1, p2, p3, p4, p5 = _EXP32_P
    q = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
    e = (q * (r * r) + r + np.float32(1.0)) * _bits_f32((n + 127) << 23)
    return np.float32(0.0) if x < _EXP32_LO else e


_LN2 = 0.6931471805599453
_HALF_SQRT2_BITS = 0x3FE6A09E667F3BCD  # bit pattern of sqrt(2) / 2


@helper(cache=True, fastmath={"contract"})
def _log_ge1(s):
    """``log(s)`` for a finite float64 ``s >= 1`` (a row's sum of exponentials
    scaled by its largest), vectorizable, unlike ``math.log`` (a libm call per
    row: ~15% of a float32 pass at d = 16).

    ``s = m 2**e`` with ``m`` in ``[sqrt(2) / 2, sqrt(2))`` (from the bits), then
    ``log m = 2 atanh(u)``, ``u = (m - 1) / (m + 1)``, ``|u| <= 0.172``, by
    its series to ``u**19`` (truncation below 1e-16 absolute).
    """
    bits = _f64_bits(s)
    # e such that m = s / 2**e lies in [sqrt(2) / 2, sqrt(2))
    e = (bits - _HALF_SQRT2_BITS) >> 52
    hm = _bits_f64(bits - (e << 52))
    u = (hm - 1.0) / (hm + 1.0)
    u2 = u * u
    q = 1.0 / 19.0
    q = q * u2 + 1.0 / 17.0
    q = q * u2 + 1.0 / 15.0
    q = q * u2 + 1.0 / 13.0
    q = q * u2 + 1.0 / 11.0
    q = q * u2 + 1.0 / 9.0
    q = q * u2 + 1.0 / 7.0
    q = q * u2 + 1.0 / 5.0
    q = q * u2 + 1.0 / 3.0
    return e * _LN2 + 2.0 * (u + u * u2 * q)


# error_model="numpy": no ZeroDivisionError check, so the row loop vectorizes
@helper(out_of_line=True, **_JIT, error_model="numpy")
def _responsibilities32(logp, w, start, nb, mx, s, e32):
    """:func:`_responsibilities` with the exponentials in float32 (``e32``, a
    ``(k, B)`` float32 scratch; sums and the loglik in float64).

    ``logp - max`` is formed in float64 and then rounded, so the float32
    error is relative to each term, ~1e-7, whatever the magnitude of ``logp``.
    """
    k = logp.shape[0]
    for b in range(nb):
        mx[b] = logp[0, b]
    for kk in range(1, k - 1):
        for b in range(nb):
            v = logp[kk, b]
            mx[b] = v if v > mx[b] else mx[b]
    for b in range(nb):  # the last maximum with the far-row guard of _responsibilities
        v = logp[k - 1, b]
        m = v if v > mx[b] else mx[b]
        far = m == -math.inf
        mx[b] = 0.0 if far else m
        s[b] = (1.0 if w[start + b] == 0.0 else math.nan) if far else 0.0
    for kk in range(k):
        er = e32[kk]
        lr = logp[kk]
        for b in range(nb):
            er[b] = _exp32(np.float32(lr[b] - mx[b]))
    for kk in range(k):
        er = e32[kk]
        for b in range(nb):
            s[b] += np.float64(er[b])
    wr = w[start : start + nb]
    for b in range(nb):
        mx[b] += _log_ge1(s[b])  # the row's logsumexp
        s[b] = wr[b] / s[b]
    ll = 0.0
    for b in range(nb):
        wb = wr[b]
        v = wb * mx[b]
        ll += v if wb != 0.0 else 0.0  # a zero weight adds nothing, even with mx = -inf
    for kk in range(k):
        er = e32[kk]
        lr = logp[kk]
        for b in range(nb):
            lr[b] = np.float64(er[b]) * s[b]
    return ll


@helper(out_of_line=True, **_JIT)
def _accum_full(xd, r, nb, rd, sx_k, sxx_k):
    """Add ``sum_b r_b xd_b`` to ``sx_k`` and the upper triangle of
    ``sum_b r_b xd_b xd_b^T`` to ``sxx_k``; returns ``sum_b r_b``."""
    d = xd.shape[0]
    nk = 0.0
    for b in range(nb):
        nk += r[b]
    if nk == 0.0:  # all responsibilities underflowed: every term is zero
        return nk
    for i in range(d):
        s = 0.0
        for b in range(nb):
            v = r[b] * xd[i, b]
            rd[b] = v
            s += v
        sx_k[i] += s
        j = i
        while j + 4 <= d:
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for b in range(nb):
                v = rd[b]
                s0 += v * xd[j, b]
                s1 += v * xd[j + 1, b]
                s2 += v * xd[j + 2, b]
                s3 += v * xd[j + 3, b]
            sxx_k[i, j] += s0
            sxx_k[i, j + 1] += s1
            sxx_k[i, j + 2] += s2
            sxx_k[i, j + 3] += s3
            j += 4
        if j + 2 <= d:
            s0 = 0.0
            s1 = 0.0
            for b in range(nb):
                v = rd[b]
                s0 += v * xd[j, b]
                s1 += v * xd[j + 1, b]
            sxx_k[i, j] += s0
            sxx_k[i, j + 1] += s1
            j += 2
        if j < d:
            s0 = 0.0
            for b in range(nb):
                s0 += rd[b] * xd[j, b]
            sxx_k[i, j] += s0
    return nk


@helper(out_of_line=True, **_JIT)
def _tri_maha_tiled(xt, mu, U, nb, acc, maha):
    """``maha[:nb] = ||(xt[:, :nb] - mu[:, None]).T @ U||^2`` row-wise, ``U``
    upper triangular, register-tiled.

    The centring is fused into the loads (``xt - mu`` in the dtype of ``xt``,
    as the reference subtracts). Output coordinates go four at a time: for
    columns ``jp .. jp + 3`` the inputs before ``jp`` are taken four at a time
    (a 4x4 tile of ``U``: per row four loads of ``xt`` and four partial sums in
    ``acc[0:4]`` for 16 FMAs), then the 4x4 triangle of ``U`` on the diagonal
    finishes the four coordinates and adds their squares into ``maha``. The
    ``d % 4`` last columns go one at a time. The order of every sum depends
    only on ``d``.
    """
    d = xt.shape[0]
    for b in range(nb):
        maha[b] = 0.0
    a0 = acc[0]
    a1 = acc[1]
    a2 = acc[2]
    a3 = acc[3]
    jp = 0
    while jp + 4 <= d:
        jp1 = jp + 1
        jp2 = jp + 2
        jp3 = jp + 3
        for j in range(0, jp, 4):
            j1 = j + 1
            j2 = j + 2
            j3 = j + 3
            m0 = mu[j]
            x0r = xt[j]
            m1 = mu[j1]
            x1r = xt[j1]
            m2 = mu[j2]
            x2r = xt[j2]
            m3 = mu[j3]
            x3r = xt[j3]
            ur = U[j]
            u00 = ur[jp]
            u01 = ur[jp1]
            u02 = ur[jp2]
            u03 = ur[jp3]
            ur = U[j1]
            u10 = ur[jp]
            u11 = ur[jp1]
            u12 = ur[jp2]
            u13 = ur[jp3]
            ur = U[j2]
            u20 = ur[jp]
            u21 = ur[jp1]
            u22 = ur[jp2]
            u23 = ur[jp3]
            ur = U[j3]
            u30 = ur[jp]
            u31 = ur[jp1]
            u32 = ur[jp2]
            u33 = ur[jp3]
            if j == 0:
                for b in range(nb):
                    x0 = x0r[b] - m0
                    x1 = x1r[b] - m1
                    x2 = x2r[b] - m2
                    x3 = x3r[b] - m3
                    a0[b] = u00 * x0 + u10 * x1 + u20 * x2 + u30 * x3
                    a1[b] = u01 * x0 + u11 * x1 + u21 * x2 + u31 * x3
                    a2[b] = u02 * x0 + u12 * x1 + u22 * x2 + u32 * x3
                    a3[b] = u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
            else:
                for b in range(nb):
                    x0 = x0r[b] - m0
                    x1 = x1r[b] - m1
                    x2 = x2r[b] - m2
                    x3 = x3r[b] - m3
                    a0[b] = a0[b] + u00 * x0 + u10 * x1 + u20 * x2 + u30 * x3
                    a1[b] = a1[b] + u01 * x0 + u11 * x1 + u21 * x2 + u31 * x3
                    a2[b] = a2[b] + u02 * x0 + u12 * x1 + u22 * x2 + u32 * x3
                    a3[b] = a3[b] + u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
        m0 = mu[jp]
        x0r = xt[jp]
        m1 = mu[jp1]
        x1r = xt[jp1]
        m2 = mu[jp2]
        x2r = xt[jp2]
        m3 = mu[jp3]
        x3r = xt[jp3]
        ur = U[jp]
        u00 = ur[jp]
        u01 = ur[jp1]
        u02 = ur[jp2]
        u03 = ur[jp3]
        ur = U[jp1]
        u11 = ur[jp1]
        u12 = ur[jp2]
        u13 = ur[jp3]
        ur = U[jp2]
        u22 = ur[jp2]
        u23 = ur[jp3]
        u33 = U[jp3, jp3]
        if jp == 0:
            for b in range(nb):
                x0 = x0r[b] - m0
                x1 = x1r[b] - m1
                x2 = x2r[b] - m2
                x3 = x3r[b] - m3
                y0 = u00 * x0
                y1 = u01 * x0 + u11 * x1
                y2 = u02 * x0 + u12 * x1 + u22 * x2
                y3 = u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
                maha[b] = (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3)
        else:
            for b in range(nb):
                x0 = x0r[b] - m0
                x1 = x1r[b] - m1
                x2 = x2r[b] - m2
                x3 = x3r[b] - m3
                y0 = a0[b] + u00 * x0
                y1 = a1[b] + u01 * x0 + u11 * x1
                y2 = a2[b] + u02 * x0 + u12 * x1 + u22 * x2
                y3 = a3[b] + u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
                maha[b] += (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3)
        jp += 4
    while jp < d:  # the d % 4 last columns, one at a time
        m0 = mu[0]
        u0 = U[0, jp]
        x0r = xt[0]
        for b in range(nb):
            a0[b] = u0 * (x0r[b] - m0)
        for j in range(1, jp + 1):
            m0 = mu[j]
            u0 = U[j, jp]
            x0r = xt[j]
            for b in range(nb):
                a0[b] += u0 * (x0r[b] - m0)
        for b in range(nb):
            maha[b] += a0[b] * a0[b]
        jp += 1


@helper(out_of_line=True, **_JIT)
def _tri_maha_tiled32(xt, mu, U, nb, acc, maha):
    """:func:`_tri_maha_tiled` for float32 ``xt``, over ``nb`` rounded up to a
    multiple of 16 (``xt``, ``acc`` and ``maha`` must be that long; each row
    is independent of the others, and the extra rows' results are not read).

    With a trip count known to be a multiple of the 16-lane vector, LLVM
    emits no vectorized remainder loop: the remainder's 4-lane broadcasts of
    the 16 ``U`` and 4 ``mu`` values had shared the registers with the main
    loop's, which spilled five of those to the stack (reloaded every
    iteration); W4's Mahalanobis products took ~0.86x the time without.
    """
    d = xt.shape[0]
    nb = (nb + 15) & -16  # a whole number of 16-lane vectors
    for b in range(nb):
        maha[b] = 0.0
    a0 = acc[0]
    a1 = acc[1]
    a2 = acc[2]
    a3 = acc[3]
    jp = 0
    while jp + 4 <= d:
        jp1 = jp + 1
        jp2 = jp + 2
        jp3 = jp + 3
        for j in range(0, jp, 4):
            j1 = j + 1
            j2 = j + 2
            j3 = j + 3
            m0 = mu[j]
            x0r = xt[j]
            m1 = mu[j1]
            x1r = xt[j1]
            m2 = mu[j2]
            x2r = xt[j2]
            m3 = mu[j3]
            x3r = xt[j3]
            ur = U[j]
            u00 = ur[jp]
            u01 = ur[jp1]
            u02 = ur[jp2]
            u03 = ur[jp3]
            ur = U[j1]
            u10 = ur[jp]
            u11 = ur[jp1]
            u12 = ur[jp2]
            u13 = ur[jp3]
            ur = U[j2]
            u20 = ur[jp]
            u21 = ur[jp1]
            u22 = ur[jp2]
            u23 = ur[jp3]
            ur = U[j3]
            u30 = ur[jp]
            u31 = ur[jp1]
            u32 = ur[jp2]
            u33 = ur[jp3]
            if j == 0:
                for b in range(nb):
                    x0 = x0r[b] - m0
                    x1 = x1r[b] - m1
                    x2 = x2r[b] - m2
                    x3 = x3r[b] - m3
                    a0[b] = u00 * x0 + u10 * x1 + u20 * x2 + u30 * x3
                    a1[b] = u01 * x0 + u11 * x1 + u21 * x2 + u31 * x3
                    a2[b] = u02 * x0 + u12 * x1 + u22 * x2 + u32 * x3
                    a3[b] = u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
            else:
                for b in range(nb):
                    x0 = x0r[b] - m0
                    x1 = x1r[b] - m1
                    x2 = x2r[b] - m2
                    x3 = x3r[b] - m3
                    a0[b] = a0[b] + u00 * x0 + u10 * x1 + u20 * x2 + u30 * x3
                    a1[b] = a1[b] + u01 * x0 + u11 * x1 + u21 * x2 + u31 * x3
                    a2[b] = a2[b] + u02 * x0 + u12 * x1 + u22 * x2 + u32 * x3
                    a3[b] = a3[b] + u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
        m0 = mu[jp]
        x0r = xt[jp]
        m1 = mu[jp1]
        x1r = xt[jp1]
        m2 = mu[jp2]
        x2r = xt[jp2]
        m3 = mu[jp3]
        x3r = xt[jp3]
        ur = U[jp]
        u00 = ur[jp]
        u01 = ur[jp1]
        u02 = ur[jp2]
        u03 = ur[jp3]
        ur = U[jp1]
        u11 = ur[jp1]
        u12 = ur[jp2]
        u13 = ur[jp3]
        ur = U[jp2]
        u22 = ur[jp2]
        u23 = ur[jp3]
        u33 = U[jp3, jp3]
        if jp == 0:
            for b in range(nb):
                x0 = x0r[b] - m0
                x1 = x1r[b] - m1
                x2 = x2r[b] - m2
                x3 = x3r[b] - m3
                y0 = u00 * x0
                y1 = u01 * x0 + u11 * x1
                y2 = u02 * x0 + u12 * x1 + u22 * x2
                y3 = u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
                maha[b] = (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3)
        else:
            for b in range(nb):
                x0 = x0r[b] - m0
                x1 = x1r[b] - m1
                x2 = x2r[b] - m2
                x3 = x3r[b] - m3
                y0 = a0[b] + u00 * x0
                y1 = a1[b] + u01 * x0 + u11 * x1
                y2 = a2[b] + u02 * x0 + u12 * x1 + u22 * x2
                y3 = a3[b] + u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
                maha[b] += (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3)
        jp += 4
    while jp < d:  # the d % 4 last columns, one at a time
        m0 = mu[0]
        u0 = U[0, jp]
        x0r = xt[0]
        for b in range(nb):
            a0[b] = u0 * (x0r[b] - m0)
        for j in range(1, jp + 1):
            m0 = mu[j]
            u0 = U[j, jp]
            x0r = xt[j]
            for b in range(nb):
                a0[b] += u0 * (x0r[b] - m0)
        for b in range(nb):
            maha[b] += a0[b] * a0[b]
        jp += 1


@helper(out_of_line=True, **_JIT)
def _accum_full_tiled(xt, mu, r, nb, rc, rd, sx_k, sxx_k):
    """Add ``sum_b r_b y_b`` to ``sx_k`` and the upper triangle of
    ``sum_b r_b y_b y_b^T`` to ``sxx_k``, ``y = xt[:, b] - mu`` (subtracted in
    the dtype of ``xt``); returns ``sum_b r_b`` (float64).

    The block's sums run in the dtype of ``rc`` (B,) and ``rd`` (d, B), then
    are added to the float64 ``sx_k``/``sxx_k``: float64 for float64 ``xt``;
    float32 for float32 ``xt`` (twice the SIMD width; see :func:`_chunks_full`).
    ``rc`` receives ``r`` in that dtype and ``rd`` ``r * y``; the triangle is
    accumulated in 4x4 tiles of dot products over the block (per row four
    loads of ``rd`` and four of ``xt`` for 16 FMAs; the 10 upper sums of the
    tiles on the diagonal), the ``d % 4`` last rows one sum at a time. The
    order of every sum depends only on ``d``.
    """
    d = xt.shape[0]
    nk = 0.0
    for b in range(nb):
        nk += r[b]
        rc[b] = r[b]
    if nk == 0.0:  # all responsibilities underflowed: every term is zero
        return nk
    zero = rc[0] - rc[0]  # 0 in the accumulation dtype (r is finite; "* 0" would widen)
    for i in range(d):
        s = zero
        m = mu[i]
        xr = xt[i]
        rr = rd[i]
        for b in range(nb):
            v = rc[b] * (xr[b] - m)
            rr[b] = v
            s += v
        sx_k[i] += s
    i = 0
    while i + 4 <= d:
        i1 = i + 1
        i2 = i + 2
        i3 = i + 3
        o0 = sxx_k[i]
        o1 = sxx_k[i1]
        o2 = sxx_k[i2]
        o3 = sxx_k[i3]
        p0 = rd[i]
        p1 = rd[i1]
        p2 = rd[i2]
        p3 = rd[i3]
        m0 = mu[i]
        q0 = xt[i]
        m1 = mu[i1]
        q1 = xt[i1]
        m2 = mu[i2]
        q2 = xt[i2]
        m3 = mu[i3]
        q3 = xt[i3]
        s00 = zero
        s01 = zero
        s02 = zero
        s03 = zero
        s11 = zero
        s12 = zero
        s13 = zero
        s22 = zero
        s23 = zero
        s33 = zero
        for b in range(nb):
            v0 = p0[b]
            v1 = p1[b]
            v2 = p2[b]
            v3 = p3[b]
            y0 = q0[b] - m0
            y1 = q1[b] - m1
            y2 = q2[b] - m2
            y3 = q3[b] - m3
            s00 += v0 * y0
            s01 += v0 * y1
            s02 += v0 * y2
            s03 += v0 * y3
            s11 += v1 * y1
            s12 += v1 * y2
            s13 += v1 * y3
            s22 += v2 * y2
            s23 += v2 * y3
            s33 += v3 * y3
        o0[i] += s00
        o0[i1] += s01
        o0[i2] += s02
        o0[i3] += s03
        o1[i1] += s11
        o1[i2] += s12
        o1[i3] += s13
        o2[i2] += s22
        o2[i3] += s23
        o3[i3] += s33
        j = i + 4
        while j + 4 <= d:
            j1 = j + 1
            j2 = j + 2
            j3 = j + 3
            m0 = mu[j]
            q0 = xt[j]
            m1 = mu[j1]
            q1 = xt[j1]
            m2 = mu[j2]
            q2 = xt[j2]
            m3 = mu[j3]
            q3 = xt[j3]
            s00 = zero
            s01 = zero
            s02 = zero
            s03 = zero
            s10 = zero
            s11 = zero
            s12 = zero
            s13 = zero
            s20 = zero
            s21 = zero
            s22 = zero
            s23 = zero
            s30 = zero
            s31 = zero
            s32 = zero
            s33 = zero
            for b in range(nb):
                v0 = p0[b]
                v1 = p1[b]
                v2 = p2[b]
                v3 = p3[b]
                y0 = q0[b] - m0
                y1 = q1[b] - m1
                y2 = q2[b] - m2
                y3 = q3[b] - m3
                s00 += v0 * y0
                s01 += v0 * y1
                s02 += v0 * y2
                s03 += v0 * y3
                s10 += v1 * y0
                s11 += v1 * y1
                s12 += v1 * y2
                s13 += v1 * y3
                s20 += v2 * y0
                s21 += v2 * y1
                s22 += v2 * y2
                s23 += v2 * y3
                s30 += v3 * y0
                s31 += v3 * y1
                s32 += v3 * y2
                s33 += v3 * y3
            o0[j] += s00
            o0[j1] += s01
            o0[j2] += s02
            o0[j3] += s03
            o1[j] += s10
            o1[j1] += s11
            o1[j2] += s12
            o1[j3] += s13
            o2[j] += s20
            o2[j1] += s21
            o2[j2] += s22
            o2[j3] += s23
            o3[j] += s30
            o3[j1] += s31
            o3[j2] += s32
            o3[j3] += s33
            j += 4
        while j < d:  # the d % 4 last columns
            m0 = mu[j]
            q0 = xt[j]
            s00 = zero
            s10 = zero
            s20 = zero
            s30 = zero
            for b in range(nb):
                y0 = q0[b] - m0
                s00 += p0[b] * y0
                s10 += p1[b] * y0
                s20 += p2[b] * y0
                s30 += p3[b] * y0
            o0[j] += s00
            o1[j] += s10
            o2[j] += s20
            o3[j] += s30
            j += 1
        i += 4
    while i < d:  # the d % 4 last rows
        o0 = sxx_k[i]
        p0 = rd[i]
        for j in range(i, d):
            m0 = mu[j]
            q0 = xt[j]
            s00 = zero
            for b in range(nb):
                s00 += p0[b] * (q0[b] - m0)
            o0[j] += s00
        i += 1
    return nk


@helper(out_of_line=True, **_JIT)
def _accum_full_tiled32v(xt, mu, r, nb, rc, rd, sx_k, sxx_k):
    """:func:`_accum_full_tiled` for float32 ``xt``, ``rc``, ``rd``: the block
    sums in float32 (twice the SIMD width), for any magnitude of ``r``.

    The sums are taken of ``r / sum_b r_b`` (in [0, 1]) and added to the
    float64 ``sx_k``/``sxx_k`` multiplied by ``sum_b r_b`` in float64, so
    that weights or responsibilities outside float32's range (a vanishing
    component's ~1e-300) neither underflow to zero nor overflow. ``r * y``
    and ``sx`` are formed in the loops of the 4x4 tiles on the diagonal (one
    pass over the block less).

    The tile loops run over ``nb`` rounded up to a multiple of 16 (see
    :func:`_tri_maha_tiled32`: no vectorized remainder loop competing for the
    registers), ``rc`` zero on the extra rows, so that they add exact zeros.
    ``xt`` must be finite there (the float32 pass loads blocks with
    :func:`_load_block32`, which zeroes them), and ``rc`` and ``rd`` that
    long. Returns ``sum_b r_b`` (float64).
    """
    d = xt.shape[0]
    nk = 0.0
    for b in range(nb):
        nk += r[b]
    if nk == 0.0:  # all responsibilities underflowed: every term is zero
        return nk
    if nk >= 2.0**-960:
        inv = 1.0 / nk
        for b in range(nb):
            rc[b] = r[b] * inv
    else:  # 1 / nk would overflow: scale up first (r_b <= nk, so no overflow)
        inv = 1.0 / (nk * 2.0**1000)
        for b in range(nb):
            rc[b] = (r[b] * 2.0**1000) * inv
    zero = rc[0] - rc[0]  # 0 in float32 ("* 0" would widen)
    nv = (nb + 15) & -16  # a whole number of 16-lane vectors
    for b in range(nb, nv):
        rc[b] = zero
    i = 0
    while i + 4 <= d:
        i1 = i + 1
        i2 = i + 2
        i3 = i + 3
        o0 = sxx_k[i]
        o1 = sxx_k[i1]
        o2 = sxx_k[i2]
        o3 = sxx_k[i3]
        p0 = rd[i]
        p1 = rd[i1]
        p2 = rd[i2]
        p3 = rd[i3]
        m0 = mu[i]
        q0 = xt[i]
        m1 = mu[i1]
        q1 = xt[i1]
        m2 = mu[i2]
        q2 = xt[i2]
        m3 = mu[i3]
        q3 = xt[i3]
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        s00 = zero
        s01 = zero
        s02 = zero
        s03 = zero
        s11 = zero
        s12 = zero
        s13 = zero
        s22 = zero
        s23 = zero
        s33 = zero
        for b in range(nv):
            y0 = q0[b] - m0
            y1 = q1[b] - m1
            y2 = q2[b] - m2
            y3 = q3[b] - m3
            rb = rc[b]
            v0 = rb * y0
            v1 = rb * y1
            v2 = rb * y2
            v3 = rb * y3
            p0[b] = v0
            p1[b] = v1
            p2[b] = v2
            p3[b] = v3
            a0 += v0
            a1 += v1
            a2 += v2
            a3 += v3
            s00 += v0 * y0
            s01 += v0 * y1
            s02 += v0 * y2
            s03 += v0 * y3
            s11 += v1 * y1
            s12 += v1 * y2
            s13 += v1 * y3
            s22 += v2 * y2
            s23 += v2 * y3
            s33 += v3 * y3
        sx_k[i] += nk * a0
        sx_k[i1] += nk * a1
        sx_k[i2] += nk * a2
        sx_k[i3] += nk * a3
        o0[i] += nk * s00
        o0[i1] += nk * s01
        o0[i2] += nk * s02
        o0[i3] += nk * s03
        o1[i1] += nk * s11
        o1[i2] += nk * s12
        o1[i3] += nk * s13
        o2[i2] += nk * s22
        o2[i3] += nk * s23
        o3[i3] += nk * s33
        j = i + 4
        while j + 4 <= d:
            j1 = j + 1
            j2 = j + 2
            j3 = j + 3
            m0 = mu[j]
            q0 = xt[j]
            m1 = mu[j1]
            q1 = xt[j1]
            m2 = mu[j2]
            q2 = xt[j2]
            m3 = mu[j3]
            q3 = xt[j3]
            s00 = zero
            s01 = zero
            s02 = zero
            s03 = zero
            s10 = zero
            s11 = zero
            s12 = zero
            s13 = zero
            s20 = zero
            s21 = zero
            s22 = zero
            s23 = zero
            s30 = zero
            s31 = zero
            s32 = zero
            s33 = zero
            for b in range(nv):
                v0 = p0[b]
                v1 = p1[b]
                v2 = p2[b]
                v3 = p3[b]
                y0 = q0[b] - m0
                y1 = q1[b] - m1
                y2 = q2[b] - m2
                y3 = q3[b] - m3
                s00 += v0 * y0
                s01 += v0 * y1
                s02 += v0 * y2
                s03 += v0 * y3
                s10 += v1 * y0
                s11 += v1 * y1
                s12 += v1 * y2
                s13 += v1 * y3
                s20 += v2 * y0
                s21 += v2 * y1
                s22 += v2 * y2
                s23 += v2 * y3
                s30 += v3 * y0
                s31 += v3 * y1
                s32 += v3 * y2
                s33 += v3 * y3
            o0[j] += nk * s00
            o0[j1] += nk * s01
            o0[j2] += nk * s02
            o0[j3] += nk * s03
            o1[j] += nk * s10
            o1[j1] += nk * s11
            o1[j2] += nk * s12
            o1[j3] += nk * s13
            o2[j] += nk * s20
            o2[j1] += nk * s21
            o2[j2] += nk * s22
            o2[j3] += nk * s23
            o3[j] += nk * s30
            o3[j1] += nk * s31
            o3[j2] += nk * s32
            o3[j3] += nk * s33
            j += 4
        while j < d:  # the d % 4 last columns
            m0 = mu[j]
            q0 = xt[j]
            s00 = zero
            s10 = zero
            s20 = zero
            s30 = zero
            for b in range(nv):
                y0 = q0[b] - m0
                s00 += p0[b] * y0
                s10 += p1[b] * y0
                s20 += p2[b] * y0
                s30 += p3[b] * y0
            o0[j] += nk * s00
            o1[j] += nk * s10
            o2[j] += nk * s20
            o3[j] += nk * s30
            j += 1
        i += 4
    while i < d:  # the d % 4 last rows
        o0 = sxx_k[i]
        p0 = rd[i]
        m0 = mu[i]
        q0 = xt[i]
        a0 = zero
        for b in range(nv):
            v0 = rc[b] * (q0[b] - m0)
            p0[b] = v0
            a0 += v0
        sx_k[i] += nk * a0
        for j in range(i, d):
            m0 = mu[j]
            q0 = xt[j]
            s00 = zero
            for b in range(nv):
                s00 += p0[b] * (q0[b] - m0)
            o0[j] += nk * s00
        i += 1
    return nk


@helper(out_of_line=True, **_JIT)
def _accum_diag(xt, mu, r, nb, sx_k, sxx_k):
    """Add ``sum_b r_b (x_b - mu)`` and ``sum_b r_b (x_b - mu)^2`` (float64,
    the subtraction in the dtype of ``xt``); returns ``sum_b r_b``."""
    d = xt.shape[0]
    nk = 0.0
    for b in range(nb):
        nk += r[b]
    if nk == 0.0:
        return nk
    j = 0
    while j + 2 <= d:
        m0 = mu[j]
        m1 = mu[j + 1]
        a0 = 0.0
        a1 = 0.0
        c0 = 0.0
        c1 = 0.0
        for b in range(nb):
            rb = r[b]
            x0 = np.float64(xt[j, b] - m0)
            x1 = np.float64(xt[j + 1, b] - m1)
            v0 = rb * x0
            v1 = rb * x1
            a0 += v0
            a1 += v1
            c0 += v0 * x0
            c1 += v1 * x1
        sx_k[j] += a0
        sx_k[j + 1] += a1
        sxx_k[j] += c0
        sxx_k[j + 1] += c1
        j += 2
    if j < d:
        m0 = mu[j]
        a0 = 0.0
        c0 = 0.0
        for b in range(nb):
            x0 = np.float64(xt[j, b] - m0)
            v0 = r[b] * x0
            a0 += v0
            c0 += v0 * x0
        sx_k[j] += a0
        sxx_k[j] += c0
    return nk


@helper(out_of_line=True, cache=True, nogil=True)
def _empty_aligned(size, dtype):
    """An uninitialised 1-D scratch of ``size`` elements of ``dtype`` whose
    data starts on a 64-byte boundary (reshape it to ``(rows, cols)`` with
    ``cols`` a multiple of 64 bytes and every row starts on one too).

    Numba's ``np.empty`` aligns to 32 bytes only, and a 64-byte vector load
    from a 32-byte boundary spans two cache lines: the W4 pass took ~1.25x
    the time (float32 and float64 alike) with its blocks so placed, and which
    allocation got which alignment varied from call to call. ``size`` is
    passed as a product (``d * B``, not ``(d, B)``), so no call site
    specializes this function on a literal.
    """
    buf = _empty_1d(size + 15, dtype)
    it = buf.itemsize
    off = (-np.int64(buf.ctypes.data // it)) & (64 // it - 1)
    return buf[off : off + size]


@njit(**_JIT)
def _chunks_full(i0, i1, nc, X, w, means, prec_chol, comp_const, ll_p, nk_p, sx_p, sxx_p, out, fit):
    """E-step (and, if ``fit``, statistics) of full-covariance chunks ``i0:i1``
    of ``nc`` (chunk ``c`` is rows ``c n / nc : (c + 1) n / nc``), float64 ``X``
    (float32 ``X`` takes :func:`_chunks_full32`).

    With ``fit`` chunk ``c`` adds its statistics to ``nk_p[c]``/``sx_p[c]``/
    ``sxx_p[c]`` (upper triangle) and its loglik to ``ll_p[c]``; otherwise the
    log-densities go to ``out`` (and the partials are not touched).
    """
    n, d = X.shape
    k = means.shape[0]
    B = _block_rows_full(d, X.itemsize)
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    acc = _empty_aligned(4 * B, X.dtype).reshape((4, B))
    maha = _empty_aligned(B, X.dtype)
    logp = _empty_aligned(k * B, _F64).reshape((k, B))
    rc = _empty_aligned(B, _F64)
    rd = _empty_aligned(d * B, _F64).reshape((d, B))
    mx = _empty_aligned(B, _F64)
    s = _empty_aligned(B, _F64)
    for c in range(i0, i1):
        lo = c * n // nc
        hi = (c + 1) * n // nc
        ll = 0.0
        for start in range(lo, hi, B):
            nb = hi - start if hi - start < B else B  # not min(): see _chunk_rows
            _load_block(X, start, nb, xt)
            for kk in range(k):
                _tri_maha_tiled(xt, means[kk], prec_chol[kk], nb, acc, maha)
                cc = comp_const[kk]
                for b in range(nb):
                    logp[kk, b] = cc - 0.5 * np.float64(maha[b])
            if not fit:
                for b in range(nb):
                    for kk in range(k):
                        out[start + b, kk] = logp[kk, b]
                continue
            ll += _responsibilities(logp, w, start, nb, mx, s)
            for kk in range(k):
                nk_p[c, kk] += _accum_full_tiled(
                    xt, means[kk], logp[kk], nb, rc, rd, sx_p[c, kk], sxx_p[c, kk]
                )
        if fit:
            ll_p[c] = ll


@njit(**_JIT)
def _chunks_full32(
    i0, i1, nc, X, w, means, prec_chol, comp_const, ll_p, nk_p, sx_p, sxx_p, out, fit
):
    """:func:`_chunks_full` for float32 ``X`` (its own kernel, so that a fit
    compiles only the one its dtype needs; one kernel with both paths took
    ~9 s of CPU to compile instead of ~5).

    The statistics of a block are summed in float32 (twice the SIMD width;
    :func:`_accum_full_tiled32v`) and added to the float64 partials. A float32
    sum depends on which rows it adds, so the blocks are a fixed grid of
    ``B`` rows counted from row 0 of ``X`` and chunk boundaries fall on it
    (:func:`_chunk_rows`): the same block sums come out whatever the thread
    count, and for any split of ``X`` into pieces of a multiple of ``B`` rows
    (out-of-core blocks), which then differ from the whole only in the
    float64 order of adding the block sums. The responsibilities take float32
    exponentials (:func:`_responsibilities32`). The blocks are 64-byte aligned
    (:func:`_empty_aligned`) and the tiled loops run over whole 16-lane
    vectors (:func:`_load_block32` zeroes the columns past the last row).
    """
    n, d = X.shape
    k = means.shape[0]
    B = _block_rows_full(d, X.itemsize)
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    acc = _empty_aligned(4 * B, X.dtype).reshape((4, B))
    maha = _empty_aligned(B, X.dtype)
    logp = _empty_aligned(k * B, _F64).reshape((k, B))
    rc = _empty_aligned(B, X.dtype)
    rd = _empty_aligned(d * B, X.dtype).reshape((d, B))
    mx = _empty_aligned(B, _F64)
    s = _empty_aligned(B, _F64)
    e32 = _empty_aligned(k * B, X.dtype).reshape((k, B))
    for c in range(i0, i1):
        lo, hi = _chunk_rows(c, n, nc, B, True)
        ll = 0.0
        for start in range(lo, hi, B):
            nb = hi - start if hi - start < B else B  # not min(): see _chunk_rows
            _load_block32(X, start, nb, xt)
            for kk in range(k):
                _tri_maha_tiled32(xt, means[kk], prec_chol[kk], nb, acc, maha)
                cc = comp_const[kk]
                for b in range(nb):
                    logp[kk, b] = cc - 0.5 * np.float64(maha[b])
            if not fit:
                for b in range(nb):
                    for kk in range(k):
                        out[start + b, kk] = logp[kk, b]
                continue
            ll += _responsibilities32(logp, w, start, nb, mx, s, e32)
            for kk in range(k):
                nk_p[c, kk] += _accum_full_tiled32v(
                    xt, means[kk], logp[kk], nb, rc, rd, sx_p[c, kk], sxx_p[c, kk]
                )
        if fit:
            ll_p[c] = ll


@njit(**_JIT)
def _chunks_full_small(
    i0, i1, nc, X, w, means, prec_chol, comp_const, ll_p, nk_p, sx_p, sxx_p, out, fit
):
    """:func:`_chunks_full` for ``d < 4`` (no whole 4x4 tile): the untiled
    :func:`_tri_maha` and :func:`_accum_full` on a centred copy, ~15% faster
    there (W1). A separate kernel, so that a fit compiles only the one its
    ``d`` needs."""
    n, d = X.shape
    k = means.shape[0]
    B = _block_rows(d)
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    diff = _empty_aligned(d * B, X.dtype).reshape((d, B))
    acc = _empty_aligned(B, X.dtype)
    maha = _empty_aligned(B, X.dtype)
    logp = _empty_aligned(k * B, _F64).reshape((k, B))
    xd = _empty_aligned(d * B, _F64).reshape((d, B))
    rd = _empty_aligned(B, _F64)
    mx = _empty_aligned(B, _F64)
    s = _empty_aligned(B, _F64)
    for c in range(i0, i1):
        lo = c * n // nc
        hi = (c + 1) * n // nc
        ll = 0.0
        for start in range(lo, hi, B):
            nb = hi - start if hi - start < B else B  # not min(): see _chunk_rows
            _load_block(X, start, nb, xt)
            for kk in range(k):
                _center(xt, nb, means[kk], diff)
                _tri_maha(diff, prec_chol[kk], nb, acc, maha)
                cc = comp_const[kk]
                for b in range(nb):
                    logp[kk, b] = cc - 0.5 * np.float64(maha[b])
            if not fit:
                for b in range(nb):
                    for kk in range(k):
                        out[start + b, kk] = logp[kk, b]
                continue
            ll += _responsibilities(logp, w, start, nb, mx, s)
            for kk in range(k):
                _center(xt, nb, means[kk], xd)
                nk_p[c, kk] += _accum_full(xd, logp[kk], nb, rd, sx_p[c, kk], sxx_p[c, kk])
        if fit:
            ll_p[c] = ll


@njit(**_JIT)
def _chunks_diag(i0, i1, nc, X, w, means, prec_chol, comp_const, ll_p, nk_p, sx_p, sxx_p, out, fit):
    """Diagonal-covariance counterpart of :func:`_chunks_full`."""
    n, d = X.shape
    k = means.shape[0]
    B = _block_rows(d)
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    maha = _empty_aligned(B, X.dtype)
    logp = _empty_aligned(k * B, _F64).reshape((k, B))
    mx = _empty_aligned(B, _F64)
    s = _empty_aligned(B, _F64)
    for c in range(i0, i1):
        lo = c * n // nc
        hi = (c + 1) * n // nc
        ll = 0.0
        for start in range(lo, hi, B):
            nb = hi - start if hi - start < B else B  # not min(): see _chunk_rows
            _load_block(X, start, nb, xt)
            for kk in range(k):
                _diag_maha(xt, nb, means[kk], prec_chol[kk], maha)
                cc = comp_const[kk]
                for b in range(nb):
                    logp[kk, b] = cc - 0.5 * np.float64(maha[b])
            if not fit:
                for b in range(nb):
                    for kk in range(k):
                        out[start + b, kk] = logp[kk, b]
                continue
            ll += _responsibilities(logp, w, start, nb, mx, s)
            for kk in range(k):
                nk_p[c, kk] += _accum_diag(xt, means[kk], logp[kk], nb, sx_p[c, kk], sxx_p[c, kk])
        if fit:
            ll_p[c] = ll


# Stand-ins for the arguments a call does not use, so that the fit and the
# log-density calls share one compiled specialization of each chunk kernel.
_NO_W = np.empty(0)
_NO_W.flags.writeable = False


def _no_partials(ndim_stats):
    """Empty partials (ll, nk, sx, sxx with ``ndim_stats`` dims) for a log-density call."""
    return np.empty(0), np.empty((0, 0)), np.empty((0, 0, 0)), np.empty((0,) * ndim_stats)


def _pass(kernel, X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx, floats, sxx_p_shape):
    """Run a fused E+M chunk kernel over all chunks and reduce in chunk order."""
    n = X.shape[0]
    k = means.shape[0]
    nc = _n_chunks(n, floats)
    ll_p = np.zeros(nc)
    nk_p = np.zeros((nc, k))
    sx_p = np.zeros((nc, k, X.shape[1]))
    sxx_p = np.zeros((nc, *sxx_p_shape))
    out = np.empty((0, k))
    run_chunks(
        kernel, nc, nc, X, sample_weight, means, prec_chol, comp_const,
        ll_p, nk_p, sx_p, sxx_p, out, True,
    )  # fmt: skip
    nk[...] = nk_p.sum(axis=0)
    sx[...] = sx_p.sum(axis=0)
    return ll_p, sxx_p.sum(axis=0)


def _full_kernel(d, dtype):
    """The full-covariance chunk kernel for ``d`` features of ``dtype`` (only
    it gets compiled)."""
    if d < 4:
        return _chunks_full_small
    return _chunks_full32 if dtype == np.float32 else _chunks_full


def em_pass_full(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    """Fused E-step and statistics, full precision Cholesky factors.

    See the kernel contract in :mod:`fastem.backends._numpy`.

    Returns
    -------
    loglik : float
    """
    k, d = means.shape
    ll_p, s = _pass(
        _full_kernel(d, X.dtype), X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx,
        k * (d * d + d + 1), (k, d, d),
    )  # fmt: skip
    _mirror_upper(s, sxx)
    return _sum_chunks(ll_p)


def em_pass_diag(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    """Fused E-step and statistics, diagonal precision factors ``(k, d)``.

    See the kernel contract in :mod:`fastem.backends._numpy`.

    Returns
    -------
    loglik : float
    """
    k, d = means.shape
    ll_p, s = _pass(
        _chunks_diag, X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx,
        k * (2 * d + 1), (k, d),
    )  # fmt: skip
    sxx[...] = s
    return _sum_chunks(ll_p)


def log_prob_full(X, means, prec_chol, comp_const, out):
    """Weighted log-densities ``out[i, k]``, full precision Cholesky factors."""
    nc = _n_chunks(X.shape[0], 0)  # no partials: only the row split
    run_chunks(_full_kernel(X.shape[1], X.dtype), nc, nc, X, _NO_W, means, prec_chol, comp_const,
               *_no_partials(4), out, False)  # fmt: skip


def log_prob_diag(X, means, prec_chol, comp_const, out):
    """Weighted log-densities ``out[i, k]``, diagonal precision factors."""
    nc = _n_chunks(X.shape[0], 0)
    run_chunks(_chunks_diag, nc, nc, X, _NO_W, means, prec_chol, comp_const,
               *_no_partials(3), out, False)  # fmt: skip


# ------------------------------------------------------------------ tied
# One shared factor U: z = (x - c) U once per row, then ||z - m_k||^2 per
# component, and one pooled scatter (see fastem.backends._tied for the algebra).


@helper(out_of_line=True, **_JIT)
def _tri_project(diff, U, nb, z):
    """``z[:, :nb] = (diff[:, :nb].T @ U).T`` with ``U`` upper triangular:
    ``z[jp] = sum_{j <= jp} U[j, jp] diff[j]``, register-tiled.

    Output coordinates go four at a time: for columns ``jp .. jp + 3`` the
    inputs before ``jp`` are taken four at a time (a 4x4 tile of ``U``: per row
    four loads of ``diff`` and four of ``z`` for 16 FMAs), then the 4x4
    triangle of ``U`` on the diagonal finishes them. The ``d % 4`` last columns
    go one at a time. The order of every sum depends only on ``d``.
    """
    d = diff.shape[0]
    jp = 0
    while jp + 4 <= d:
        jp1 = jp + 1
        jp2 = jp + 2
        jp3 = jp + 3
        z0 = z[jp]
        z1 = z[jp1]
        z2 = z[jp2]
        z3 = z[jp3]
        for j in range(0, jp, 4):
            x0r = diff[j]
            x1r = diff[j + 1]
            x2r = diff[j + 2]
            x3r = diff[j + 3]
            ur = U[j]
            u00 = ur[jp]
            u01 = ur[jp1]
            u02 = ur[jp2]
            u03 = ur[jp3]
            ur = U[j + 1]
            u10 = ur[jp]
            u11 = ur[jp1]
            u12 = ur[jp2]
            u13 = ur[jp3]
            ur = U[j + 2]
            u20 = ur[jp]
            u21 = ur[jp1]
            u22 = ur[jp2]
            u23 = ur[jp3]
            ur = U[j + 3]
            u30 = ur[jp]
            u31 = ur[jp1]
            u32 = ur[jp2]
            u33 = ur[jp3]
            if j == 0:
                for b in range(nb):
                    x0 = x0r[b]
                    x1 = x1r[b]
                    x2 = x2r[b]
                    x3 = x3r[b]
                    z0[b] = u00 * x0 + u10 * x1 + u20 * x2 + u30 * x3
                    z1[b] = u01 * x0 + u11 * x1 + u21 * x2 + u31 * x3
                    z2[b] = u02 * x0 + u12 * x1 + u22 * x2 + u32 * x3
                    z3[b] = u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
            else:
                for b in range(nb):
                    x0 = x0r[b]
                    x1 = x1r[b]
                    x2 = x2r[b]
                    x3 = x3r[b]
                    z0[b] = z0[b] + u00 * x0 + u10 * x1 + u20 * x2 + u30 * x3
                    z1[b] = z1[b] + u01 * x0 + u11 * x1 + u21 * x2 + u31 * x3
                    z2[b] = z2[b] + u02 * x0 + u12 * x1 + u22 * x2 + u32 * x3
                    z3[b] = z3[b] + u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
        x0r = diff[jp]
        x1r = diff[jp1]
        x2r = diff[jp2]
        x3r = diff[jp3]
        ur = U[jp]
        u00 = ur[jp]
        u01 = ur[jp1]
        u02 = ur[jp2]
        u03 = ur[jp3]
        ur = U[jp1]
        u11 = ur[jp1]
        u12 = ur[jp2]
        u13 = ur[jp3]
        ur = U[jp2]
        u22 = ur[jp2]
        u23 = ur[jp3]
        u33 = U[jp3][jp3]
        if jp == 0:
            for b in range(nb):
                x0 = x0r[b]
                x1 = x1r[b]
                x2 = x2r[b]
                x3 = x3r[b]
                z0[b] = u00 * x0
                z1[b] = u01 * x0 + u11 * x1
                z2[b] = u02 * x0 + u12 * x1 + u22 * x2
                z3[b] = u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
        else:
            for b in range(nb):
                x0 = x0r[b]
                x1 = x1r[b]
                x2 = x2r[b]
                x3 = x3r[b]
                z0[b] = z0[b] + u00 * x0
                z1[b] = z1[b] + u01 * x0 + u11 * x1
                z2[b] = z2[b] + u02 * x0 + u12 * x1 + u22 * x2
                z3[b] = z3[b] + u03 * x0 + u13 * x1 + u23 * x2 + u33 * x3
        jp += 4
    while jp < d:  # the d % 4 last columns, one at a time
        z0 = z[jp]
        u0 = U[0, jp]
        x0r = diff[0]
        for b in range(nb):
            z0[b] = u0 * x0r[b]
        for j in range(1, jp + 1):
            u0 = U[j, jp]
            x0r = diff[j]
            for b in range(nb):
                z0[b] += u0 * x0r[b]
        jp += 1


@helper(out_of_line=True, **_JIT)
def _tied_maha4(z, m, nb, c0, c1, c2, c3):
    """``c<q>[:nb] = ||z[:, :nb] - m[q][:, None]||^2`` column-wise for four
    components at once: a 4x4 tile (four rows of ``z``, four components) per
    pass, four loads of ``z`` and four of ``c`` for 16 squared differences."""
    d = z.shape[0]
    m0 = m[0]
    m1 = m[1]
    m2 = m[2]
    m3 = m[3]
    for b in range(nb):
        c0[b] = 0.0
        c1[b] = 0.0
        c2[b] = 0.0
        c3[b] = 0.0
    jp = 0
    while jp + 4 <= d:
        jp1 = jp + 1
        jp2 = jp + 2
        jp3 = jp + 3
        z0 = z[jp]
        z1 = z[jp1]
        z2 = z[jp2]
        z3 = z[jp3]
        a00 = m0[jp]
        a01 = m0[jp1]
        a02 = m0[jp2]
        a03 = m0[jp3]
        a10 = m1[jp]
        a11 = m1[jp1]
        a12 = m1[jp2]
        a13 = m1[jp3]
        a20 = m2[jp]
        a21 = m2[jp1]
        a22 = m2[jp2]
        a23 = m2[jp3]
        a30 = m3[jp]
        a31 = m3[jp1]
        a32 = m3[jp2]
        a33 = m3[jp3]
        for b in range(nb):
            y0 = z0[b]
            y1 = z1[b]
            y2 = z2[b]
            y3 = z3[b]
            v0 = y0 - a00
            v1 = y1 - a01
            v2 = y2 - a02
            v3 = y3 - a03
            c0[b] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
            v0 = y0 - a10
            v1 = y1 - a11
            v2 = y2 - a12
            v3 = y3 - a13
            c1[b] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
            v0 = y0 - a20
            v1 = y1 - a21
            v2 = y2 - a22
            v3 = y3 - a23
            c2[b] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
            v0 = y0 - a30
            v1 = y1 - a31
            v2 = y2 - a32
            v3 = y3 - a33
            c3[b] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
        jp += 4
    while jp < d:  # the d % 4 last rows of z
        zr = z[jp]
        a0 = m0[jp]
        a1 = m1[jp]
        a2 = m2[jp]
        a3 = m3[jp]
        for b in range(nb):
            v = zr[b]
            v0 = v - a0
            v1 = v - a1
            v2 = v - a2
            v3 = v - a3
            c0[b] += v0 * v0
            c1[b] += v1 * v1
            c2[b] += v2 * v2
            c3[b] += v3 * v3
        jp += 1


@helper(out_of_line=True, **_JIT)
def _tied_dots(r, diff, nb, t, tri):
    """``t[q, j] += sum_b r[q, b] diff[j, b]`` (sums in float64), by strips
    of four rows of ``r`` and ``t`` (``r``'s rows a multiple of four): the
    tied kernel's ``t`` (``r`` the responsibilities of four components at a
    time) and, with ``tri``, its pooled scatter ``G`` (``r = rd``, the upper
    triangle only), in one call per block each.

    A strip is 4x4 tiles of dot products (four loads of ``r`` and four of
    ``diff`` per row for 16 FMAs), then the ``d % 4`` last columns one at a
    time; with ``tri``, strip ``i`` starts at column ``i`` with the diagonal
    tile's 10 sums on and above its diagonal. Every sum in the order of
    the four-row tile helper it replaced (``_tied_t4``) and of
    :func:`_accum_full_tiled`'s tiles (the same
    results bit for bit). For ``G``, ``rd`` and ``t`` have three more rows
    than ``diff`` (zero and ignored: the last strip's, when ``d % 4``), and
    that strip also fills a few entries below the diagonal (ignored).
    """
    d = diff.shape[0]
    for i in range(0, r.shape[0] - 3, 4):
        r0 = r[i]
        r1 = r[i + 1]
        r2 = r[i + 2]
        r3 = r[i + 3]
        t0 = t[i]
        t1 = t[i + 1]
        t2 = t[i + 2]
        t3 = t[i + 3]
        j = 0
        if tri and i + 4 <= d:
            j1 = i + 1
            j2 = i + 2
            j3 = i + 3
            q0 = diff[i]
            q1 = diff[j1]
            q2 = diff[j2]
            q3 = diff[j3]
            s00 = s01 = s02 = s03 = 0.0
            s11 = s12 = s13 = 0.0
            s22 = s23 = s33 = 0.0
            for b in range(nb):
                v0 = r0[b]
                v1 = r1[b]
                v2 = r2[b]
                v3 = r3[b]
                y0 = np.float64(q0[b])
                y1 = np.float64(q1[b])
                y2 = np.float64(q2[b])
                y3 = np.float64(q3[b])
                s00 += v0 * y0
                s01 += v0 * y1
                s02 += v0 * y2
                s03 += v0 * y3
                s11 += v1 * y1
                s12 += v1 * y2
                s13 += v1 * y3
                s22 += v2 * y2
                s23 += v2 * y3
                s33 += v3 * y3
            t0[i] += s00
            t0[j1] += s01
            t0[j2] += s02
            t0[j3] += s03
            t1[j1] += s11
            t1[j2] += s12
            t1[j3] += s13
            t2[j2] += s22
            t2[j3] += s23
            t3[j3] += s33
            j = i + 4
        elif tri:
            j = i
        while j + 4 <= d:
            j1 = j + 1
            j2 = j + 2
            j3 = j + 3
            q0 = diff[j]
            q1 = diff[j1]
            q2 = diff[j2]
            q3 = diff[j3]
            s00 = s01 = s02 = s03 = 0.0
            s10 = s11 = s12 = s13 = 0.0
            s20 = s21 = s22 = s23 = 0.0
            s30 = s31 = s32 = s33 = 0.0
            for b in range(nb):
                y0 = np.float64(q0[b])
                y1 = np.float64(q1[b])
                y2 = np.float64(q2[b])
                y3 = np.float64(q3[b])
                v = r0[b]
                s00 += v * y0
                s01 += v * y1
                s02 += v * y2
                s03 += v * y3
                v = r1[b]
                s10 += v * y0
                s11 += v * y1
                s12 += v * y2
                s13 += v * y3
                v = r2[b]
                s20 += v * y0
                s21 += v * y1
                s22 += v * y2
                s23 += v * y3
                v = r3[b]
                s30 += v * y0
                s31 += v * y1
                s32 += v * y2
                s33 += v * y3
            t0[j] += s00
            t0[j1] += s01
            t0[j2] += s02
            t0[j3] += s03
            t1[j] += s10
            t1[j1] += s11
            t1[j2] += s12
            t1[j3] += s13
            t2[j] += s20
            t2[j1] += s21
            t2[j2] += s22
            t2[j3] += s23
            t3[j] += s30
            t3[j1] += s31
            t3[j2] += s32
            t3[j3] += s33
            j += 4
        while j < d:  # the d % 4 last columns
            q0 = diff[j]
            s00 = s10 = s20 = s30 = 0.0
            for b in range(nb):
                y0 = np.float64(q0[b])
                s00 += r0[b] * y0
                s10 += r1[b] * y0
                s20 += r2[b] * y0
                s30 += r3[b] * y0
            t0[j] += s00
            t1[j] += s10
            t2[j] += s20
            t3[j] += s30
            j += 1


@njit(**_JIT)
def _chunks_tied(
    i0, i1, nc, X, w, centre, projected, U, comp_const, ll_p, nk_p, t_p, g_p, out, fit
):
    """E-step (and, if ``fit``, ``nk``, ``t`` and the upper triangle of ``g``
    into chunk ``c``'s partials) of chunks ``i0:i1`` under one shared factor
    ``U``; see :func:`_chunks_full`.

    Blocks of :func:`_block_rows` rows for float64, twice that for float32
    (the same bytes; W5 one pass: 256 float64 rows took 1.2x the time of 128,
    256 float32 rows 0.8x).

    ``G`` (its upper triangle; :func:`fastem.backends._tied.finish` reads no
    other entry) is ``rd = rsum (x - c)`` in float64 (block sums float64 for
    float32 ``X`` too), then :func:`_tied_dots`: the same sums in the same order
    as :func:`_accum_full_tiled` computes them (checked bit for bit), without
    compiling that helper for a tied fit. ``rd`` and ``g_p`` have three rows
    of padding (zero, ignored) for its last strip of four rows.
    """
    n, d = X.shape
    k = projected.shape[0]
    B = _block_rows(d) * 8 // X.itemsize
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    diff = _empty_aligned(d * B, X.dtype).reshape((d, B))
    z = _empty_aligned(d * B, X.dtype).reshape((d, B))
    maha = _empty_aligned(4 * B, X.dtype).reshape((4, B))
    logp = _empty_aligned(k * B, _F64).reshape((k, B))
    rd = _empty_aligned((d + 3) * B, _F64).reshape((d + 3, B))
    for j in range(d, d + 3):  # padding under the last strip of four rows
        for b in range(B):
            rd[j, b] = 0.0
    rows = _empty_aligned(3 * B, _F64).reshape((3, B))  # one call for three rows
    rsum = rows[0]
    mx = rows[1]
    s = rows[2]
    for c in range(i0, i1):
        lo = c * n // nc
        hi = (c + 1) * n // nc
        ll = 0.0
        for start in range(lo, hi, B):
            nb = hi - start if hi - start < B else B  # not min(): see _chunk_rows
            _load_block(X, start, nb, xt)
            _center(xt, nb, centre, diff)
            _tri_project(diff, U, nb, z)
            kk = 0
            while kk + 4 <= k:
                _tied_maha4(z, projected[kk:], nb, maha[0], maha[1], maha[2], maha[3])
                for q in range(4):
                    cc = comp_const[kk + q]
                    mq = maha[q]
                    lq = logp[kk + q]
                    for b in range(nb):
                        lq[b] = cc - 0.5 * np.float64(mq[b])
                kk += 4
            while kk < k:  # the k % 4 last components
                m0 = maha[0]
                for b in range(nb):
                    m0[b] = 0.0
                for jp in range(d):
                    m = projected[kk, jp]
                    for b in range(nb):
                        v = z[jp, b] - m
                        m0[b] += v * v
                cc = comp_const[kk]
                for b in range(nb):
                    logp[kk, b] = cc - 0.5 * np.float64(m0[b])
                kk += 1
            if not fit:
                for b in range(nb):
                    for kk in range(k):
                        out[start + b, kk] = logp[kk, b]
                continue
            ll += _responsibilities(logp, w, start, nb, mx, s)
            for b in range(nb):
                rsum[b] = 0.0
            for kk in range(k):
                a = 0.0
                for b in range(nb):
                    a += logp[kk, b]
                    rsum[b] += logp[kk, b]
                nk_p[c, kk] += a
            tc = t_p[c]
            k4 = k - k % 4
            # fit is True here: "not fit" and "fit" are runtime bools, so
            # _tied_dots compiles once (literal False/True made two versions)
            _tied_dots(logp[:k4], diff, nb, tc, not fit)  # four components at a time
            for kk in range(k4, k):  # the k % 4 last components
                for j in range(d):
                    a = 0.0
                    for b in range(nb):
                        a += logp[kk, b] * diff[j, b]
                    tc[kk, j] += a
            for j in range(d):
                dj = diff[j]
                rj = rd[j]
                for b in range(nb):
                    rj[b] = rsum[b] * dj[b]
            _tied_dots(rd, diff, nb, g_p[c], fit)  # tri
        if fit:
            ll_p[c] = ll


@njit(**_JIT)
def _chunks_kmeans(i0, i1, nc, X, w, centers, in_p, sums_p, counts_p, labels):
    """Lloyd assignment of chunks ``i0:i1``: chunk ``c`` adds to ``sums_p[c]``/
    ``counts_p[c]`` and writes its inertia to ``in_p[c]`` (and the labels, if
    ``labels`` is not empty)."""
    n, d = X.shape
    k = centers.shape[0]
    B = _block_rows(d)
    # Scratch from _empty_aligned, compiled for the E-step kernels anyway: no
    # np.empty specialization of its own in a first fit. The block in X's dtype,
    # as the E-step kernels load theirs, so a float32 fit compiles one
    # _load_block, not two; ``xt - cj`` and ``wb * xt`` widen it to float64
    # exactly, as a float64 copy held it. Labels as float64 (exact).
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    rows = _empty_aligned(3 * B, _F64).reshape((3, B))
    dist = rows[0]
    best = rows[1]
    lab = rows[2]
    write_labels = labels.shape[0] > 0
    for c in range(i0, i1):
        lo = c * n // nc
        hi = (c + 1) * n // nc
        sums = sums_p[c]
        counts = counts_p[c]
        inertia = 0.0
        for start in range(lo, hi, B):
            nb = hi - start if hi - start < B else B  # not min(): see _chunk_rows
            _load_block(X, start, nb, xt)
            for kk in range(k):
                for b in range(nb):
                    dist[b] = 0.0
                for j in range(d):
                    cj = np.float64(centers[kk, j])
                    for b in range(nb):
                        t = xt[j, b] - cj
                        dist[b] += t * t
                if kk == 0:
                    for b in range(nb):
                        best[b] = dist[b]
                        lab[b] = 0
                else:
                    for b in range(nb):  # strict <: lowest index wins ties
                        if dist[b] < best[b]:
                            best[b] = dist[b]
                            lab[b] = kk
            for b in range(nb):
                wb = w[start + b]
                kk = np.int64(lab[b])
                inertia += wb * best[b]
                counts[kk] += wb
                for j in range(d):
                    sums[kk, j] += wb * xt[j, b]
                if write_labels:
                    labels[start + b] = kk
        in_p[c] = inertia


def kmeans_pass(X, sample_weight, centers, sums, counts, labels):
    """One Lloyd pass; see the kernel contract in :mod:`fastem.backends._numpy`.

    Returns
    -------
    inertia : float
    """
    n, d = X.shape
    k = centers.shape[0]
    nc = _n_chunks(n, k * (d + 1))
    sums_p = np.zeros((nc, k, d))
    counts_p = np.zeros((nc, k))
    in_p = np.zeros(nc)
    run_chunks(_chunks_kmeans, nc, nc, X, sample_weight, centers, in_p, sums_p, counts_p, labels)
    sums[...] = sums_p.sum(axis=0)
    counts[...] = counts_p.sum(axis=0)
    return _sum_chunks(in_p)


# Missing-data (NaN) kernels live in their own modules; their entry points are
# made here so the backend module carries the whole kernel set.
from . import _numba_impute, _numba_missing, _tied  # noqa: E402

# ------------------------------------------------------------------ entry points
# Numba compiles one specialization per combination of argument types, and an
# array's writability is part of its type: read-only inputs (a memory map, a
# loaded model's arrays, broadcast weights) next to writable ones multiply the
# compilations of the large fused kernels (em_pass_full had 9 specializations
# after one test run, each a few seconds of compile). Every input therefore goes
# in as a read-only view, so each kernel compiles once per dtype of X.


def _readonly(a):
    """``a`` itself if read-only, else a read-only view of it (no copy)."""
    if isinstance(a, np.ndarray) and a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _entry(kernel, n_inputs):
    """The kernel's entry point: its first ``n_inputs`` arguments (the inputs,
    never written) go in read-only; the outputs after them as given."""

    def entry(*args):
        return kernel(*[_readonly(a) for a in args[:n_inputs]], *args[n_inputs:])

    entry.__name__ = entry.__qualname__ = kernel.__name__
    entry.__doc__ = kernel.__doc__
    entry.__wrapped__ = kernel
    return entry


def em_pass_tied(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    """Fused E-step and statistics under one shared factor ``prec_chol`` (d, d);
    ``sxx`` (d, d) receives the pooled second moments (kernel contract)."""
    k, d = means.shape
    centre, e, projected = _tied.setup(means, prec_chol, X.dtype, comp_const)
    U = np.ascontiguousarray(prec_chol, dtype=X.dtype)
    nc = _n_chunks(X.shape[0], k * (d + 1) + d * d)
    ll_p = np.zeros(nc)
    nk_p = np.zeros((nc, k))
    t_p = np.zeros((nc, k, d))
    g_p = np.zeros((nc, d + 3, d))  # three rows of padding (see _chunks_tied)
    out = np.empty((0, k))
    inputs = [_readonly(a) for a in (X, sample_weight, centre, projected, U, comp_const)]
    run_chunks(_chunks_tied, nc, nc, *inputs, ll_p, nk_p, t_p, g_p, out, True)
    nk[...] = nk_p.sum(axis=0)
    _tied.finish(e, nk, t_p.sum(axis=0), g_p.sum(axis=0)[:d], sx, sxx)
    return _sum_chunks(ll_p)


def log_prob_tied(X, means, prec_chol, comp_const, out):
    """Weighted log-densities ``out[i, k]`` under one shared factor ``prec_chol``."""
    centre, _, projected = _tied.setup(means, prec_chol, X.dtype, comp_const)
    U = np.ascontiguousarray(prec_chol, dtype=X.dtype)
    nc = _n_chunks(X.shape[0], 0)
    X, centre, projected, U, comp_const = [
        _readonly(a) for a in (X, centre, projected, U, comp_const)
    ]
    run_chunks(_chunks_tied, nc, nc, X, _NO_W, centre, projected, U, comp_const,
               *_no_partials(3), out, False)  # fmt: skip


em_pass_full = _entry(em_pass_full, 5)
em_pass_diag = _entry(em_pass_diag, 5)
log_prob_full = _entry(log_prob_full, 4)
log_prob_diag = _entry(log_prob_diag, 4)
kmeans_pass = _entry(kmeans_pass, 3)
# _numba_missing.ENTRY_POINTS: name -> number of leading (read-only) inputs
for _name, _n_inputs in _numba_missing.ENTRY_POINTS.items():
    globals()[_name] = _entry(getattr(_numba_missing, _name), _n_inputs)
__all__ += list(_numba_missing.ENTRY_POINTS)
impute_missing_full = _entry(_numba_impute.impute_missing_full, 6)
