"""Numba HMM kernels: the contract of :mod:`fastem.hmm._kernels_numpy`, compiled.

Parallelism and determinism
    Sequences are split into ``_seq_chunks(S)`` contiguous groups, a number that
    depends only on the number of sequences, never on the thread count. Each
    kernel is a serial ``nogil`` function over a range of groups, run on
    threads by :func:`fastem.backends._numba.run_chunks` (no ``parallel=True``:
    Numba's parfor lowering compiled each kernel several times over, see
    ``docs/startup.md``). Each group accumulates its sequences in order into its
    own slot of a partials array, and the slots are summed in group order, so
    results are bit-identical on any number of threads. The moment and GMM
    kernels do the same over fixed row chunks.
Lock-step
    Forward-backward takes the sequences of a group in batches of ``LANES``
    (four) and runs their recursions in lock-step (:func:`_fb_lanes`): the
    per-frame recursion of one sequence is latency-bound, four independent
    ones fill the pipeline. Groups are runs of whole batches.
Memory
    A batch in flight holds, per lane, the shifted emissions, forward and
    backward variables of its longest sequence ((T, K) each) plus (T,)
    normalizers and shifts: O(T K) per sequence in flight. A lone sequence (the
    last one, or ``K > LANES_MAX_K``) keeps its forward variables in ``gamma``,
    which the backward sweep overwrites with the posteriors.
Fused E-step (optional entry, :func:`estep_diag`)
    For diagonal Gaussian emissions without missing values, each batch's
    emission log-densities, forward-backward and moments run back to back in
    one pool pass over the same groups: no (N, K) emission or posterior array
    (a batch's (rows, K) scratch instead, in cache from the emissions to the
    moments) and one hand-off to the thread pool per iteration instead of
    three. :func:`fastem.hmm._backend.estep_diag` falls back to the separate
    kernels for backends without it and for shapes with few batches.
One sequence (``S == 1``)
    Work items in one dynamic pass (emission chunks, the two recursions at
    once, posterior/count chunks); per-thread scratch of three (T, K) arrays
    kept up to ``SCRATCH_KEEP_BYTES``.
Specializations
    Every entry point passes its inputs read-only (writability is part of
    Numba's array type), so each kernel compiles once (the moments once per
    dtype of X).
"""

from __future__ import annotations

import math
import os
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _numba_cache  # noqa: F401  (registers the cache locator)
from ._hmm_partials import moment_partials, sum_moment_partials
from ._numba import _diag_maha, _executor, run_chunks
from ._numba_exp import _bits_f64, _f64_bits, exp64

__all__ = [
    "forward_backward",
    "forward_filter",
    "viterbi",
    "moments_diag",
    "moments_full",
    "gmm_state_logprob",
    "gmm_posteriors",
    "estep_diag",
]

TINY = 1e-250  # same rescue threshold as the reference
EXP_CAP = 700.0
MAX_CHUNKS = 64
MIN_CHUNK_ROWS = 1024
# Rows per transposed scratch block in the moment kernels: (D + K) x 64 floats stay
# in L1 (HB4's diag moments, K=32, D=13: 6.4 ms at 64 rows, 11.2 ms at 256; 64 was
# never slower on the shapes tried).
BLOCK = 64
PARTIALS_BUDGET = 4 * 1024 * 1024  # float64 values of per-chunk second moments (32 MiB)

_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
_JIT = dict(cache=True, nogil=True, fastmath=_FASTMATH)


# fdlibm's log (e_log.c): x = 2**k m with m in [sqrt(2)/2, sqrt(2)), f = m - 1,
# s = f / (2 + f), log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)); error below 1 ulp.
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_MANT_MASK = 0x000FFFFFFFFFFFFF
_SQRT2_MANT = 0x6A09E667F3BCD  # mantissa bits of sqrt(2)
_ONE_BITS = 0x3FF0000000000000
_HALF_BITS = 0x3FE0000000000000
_SHIFT = 6755399441055744.0  # 1.5 * 2**52: int -> float by bits, exactly
_SHIFT_BITS = 0x4338000000000000


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def log64(x):
    """``log(x)`` for a positive, normal, finite float64, with arithmetic and bit
    casts only, so a loop calling it vectorizes (``math.log`` is a scalar libm
    call, 15-20 ns here: most of a GMM-HMM's state log-sum-exp). Within 1 ulp
    of ``np.log`` (tested). Like :func:`exp64`, compiled without reassociation,
    which would undo the compensated sum; ``error_model="numpy"`` drops the
    zero-division check of its one division (``2 + f >= 1.29``), a branch that
    kept the loops around it scalar."""
    bits = _f64_bits(x)
    mant = bits & _MANT_MASK
    big = mant > _SQRT2_MANT
    k = (bits >> 52) - 1023 + (1 if big else 0)
    f = _bits_f64(mant | (_HALF_BITS if big else _ONE_BITS)) - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    dk = _bits_f64(k + _SHIFT_BITS) - _SHIFT
    return dk * _LN2_HI - ((hfsq - (s * (hfsq + (t2 + t1)) + dk * _LN2_LO)) - f)


def _seq_chunks(n_sequences):
    """Groups of sequences: fixed by their number only (determinism)."""
    return min(n_sequences, MAX_CHUNKS)


def _row_chunks(n_rows, floats_per_chunk=0):
    """Row chunks of at least ``MIN_CHUNK_ROWS`` rows (at most ``MAX_CHUNKS``),
    fewer if their partials (``floats_per_chunk`` each) would pass
    ``PARTIALS_BUDGET``; fixed by the shape only."""
    c = min((n_rows + MIN_CHUNK_ROWS - 1) // MIN_CHUNK_ROWS, MAX_CHUNKS)
    return max(1, min(c, PARTIALS_BUDGET // max(floats_per_chunk, 1)))


@njit(cache=True, nogil=True)
def _chunk_bounds(n_items, n_chunks, c):
    return (c * n_items) // n_chunks, ((c + 1) * n_items) // n_chunks


@njit(**_JIT)
def _forward_seq(logB, lo, hi, startprob, transmat_t, alpha, b, c, shifts):
    """Scaled forward pass of rows lo:hi: ``c_t alpha_t`` (into ``alpha[lo:hi]``,
    unnormalized: the division by ``c_t`` is off the recursion's critical path,
    in the next prediction), the shifted emissions ``b[0:T]`` and normalizers
    ``c[0:T]``; the frames' shifts go into ``shifts[0:T]``. Returns the
    log-likelihood, summed after the recursion (vectorized logarithms, off its
    critical path). ``transmat_t`` is the transposed transition matrix
    (C-contiguous)."""
    K = logB.shape[1]
    T = hi - lo
    # The shifted emissions first, off the recursion: row maxima, then the
    # exponentials in one flat loop (vector code throughout).
    for t in range(T):
        row = lo + t
        m = -np.inf
        for k in range(K):
            m = max(m, logB[row, k])
        if m == -np.inf:  # an impossible frame: the sequence has probability 0
            return -np.inf
        shifts[t] = m
        for k in range(K):
            b[t, k] = logB[row, k] - m
    flat = b.reshape(b.shape[0] * K)
    for i in range(T * K):
        flat[i] = exp64(flat[i])
    pred = np.empty(K)
    for k in range(K):
        pred[k] = startprob[k]
    for t in range(T):
        row = lo + t
        s = 0.0
        for k in range(K):
            a = pred[k] * b[t, k]
            alpha[row, k] = a
            s += a
        if s < TINY:  # predicted mass only where the emission underflows: exact shift
            m2 = -np.inf
            for k in range(K):
                v = (math.log(pred[k]) if pred[k] > 0.0 else -np.inf) + logB[row, k]
                pred[k] = v  # reuse as scratch: log pred + logB
                if v > m2:
                    m2 = v
            if m2 == -np.inf:
                return -np.inf
            s = 0.0
            for k in range(K):
                a = math.exp(pred[k] - m2)
                alpha[row, k] = a
                s += a
                b[t, k] = math.exp(min(logB[row, k] - m2, EXP_CAP))
            shifts[t] = m2
        c[t] = s
        _mat_vec(transmat_t, alpha, row, pred, 1.0 / s)  # pred = alpha_t @ A
    loglik = 0.0
    for t in range(hi - lo):  # TINY <= c <= K: log64's domain
        loglik += log64(c[t]) + shifts[t]
    return loglik


@njit(**_JIT)
def _mat_vec(M, x, row, out, scale):
    """``out = scale * M @ x[row]``: one dot product per row of M, each a unit-stride
    reduction into a register (reassociated, so it vectorizes). About twice as
    fast at K=20 as axpy over rows into ``out``, whose loads and stores LLVM
    cannot keep in registers (``out`` may alias ``M``)."""
    K = M.shape[0]
    for j in range(K):
        acc = 0.0
        for i in range(K):
            acc += M[j, i] * x[row, i]
        out[j] = acc * scale


@njit(**_JIT)
def _backward_seq(lo, hi, transmat, gamma, b, c, beta, outer, w):
    """Backward sweep over rows lo:hi. ``gamma`` holds ``c_t alpha_t`` on entry
    and the posteriors on exit; ``b`` (the shifted emissions) is overwritten by
    ``v_t = b_t * beta_t / c_t``; ``outer += w * sum_t alpha_t v_t+1^T`` (times A
    later), four frames per pass."""
    K = transmat.shape[0]
    T = hi - lo
    for k in range(K):
        beta[T - 1, k] = 1.0
    for t in range(T - 2, -1, -1):
        inv = 1.0 / c[t + 1]
        for j in range(K):
            # A state with zero forward probability at t+1 is on no path: its v is
            # exactly 0, and an inf from an unreachable state cannot leak into NaN.
            ok = gamma[lo + t + 1, j] > 0.0
            b[t + 1, j] = b[t + 1, j] * beta[t + 1, j] * inv if ok else 0.0
        _mat_vec(transmat, b, t + 1, beta[t], 1.0)  # beta_t = A v_t+1
    t = 0
    while t + 4 <= T - 1:
        f0 = w / c[t]  # alpha_t = gamma[t] / c_t
        f1 = w / c[t + 1]
        f2 = w / c[t + 2]
        f3 = w / c[t + 3]
        for i in range(K):
            a0 = f0 * gamma[lo + t, i]
            a1 = f1 * gamma[lo + t + 1, i]
            a2 = f2 * gamma[lo + t + 2, i]
            a3 = f3 * gamma[lo + t + 3, i]
            for j in range(K):
                outer[i, j] += (
                    a0 * b[t + 1, j] + a1 * b[t + 2, j] + a2 * b[t + 3, j] + (a3 * b[t + 4, j])
                )
        t += 4
    while t < T - 1:
        f0 = w / c[t]
        for i in range(K):
            a0 = f0 * gamma[lo + t, i]
            for j in range(K):
                outer[i, j] += a0 * b[t + 1, j]
        t += 1
    for t in range(T):  # the sum first, then one store per posterior
        row = lo + t
        s = 0.0
        for k in range(K):
            s += gamma[row, k] * beta[t, k]
        inv = 1.0 / s if s > 0.0 else np.nan  # underflowed: NaN as NumPy, not a raise
        for k in range(K):
            gamma[row, k] = gamma[row, k] * beta[t, k] * inv


# ------------------------------------------------------------------ one long sequence
# A lone sequence (S == 1) has no lanes to fill: its forward and backward
# recursions run at the same time instead, on two threads, each scaled by its
# own per-frame normalizer (the backward one does not need the forward's), then
# the posteriors and transition counts in fixed chunks of frames. Work items,
# claimed in order from a shared counter by every thread of the pass:
#   0 .. n-1      shifted emissions of chunk 0, n-1, 1, n-2, ... (row maxima,
#                 then exponentials; the ends first, where the recursions start)
#   n, n + 1      the forward recursion, the backward recursion, each waiting
#                 for a chunk's emissions only as it reaches the chunk
#   n + 2 + q     posteriors and transition counts of chunk n-1-q, after the
#                 forward and once the backward has passed the chunk (so a
#                 thread whose recursion ends first follows the other one)
# An item waits only for items claimed before it, which threads are running, so
# a pass never deadlocks, whatever the number of threads (one thread runs the
# items in order without waiting). Each chunk adds its counts into its own slot,
# summed in chunk order: the same bits on any thread count.


@intrinsic
def _fetch_add(typingctx, arr, idx, val):
    """``arr[idx]`` before an atomic ``arr[idx] += val`` (int64 array).
    Sequentially consistent, so it is also a full barrier: a thread that reads
    an item's completion count sees the item's writes."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        v = context.cast(builder, args[2], signature.args[2], types.int64)
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [i])
        return builder.atomic_rmw("add", ptr, v, "seq_cst")

    return types.int64(arr, idx, val), codegen


def _register_yield():
    """Registers the OS's "give the core away" call (``sched_yield``, Windows'
    ``SwitchToThread``; both ``int f(void)``) with the JIT as ``_YIELD_SYMBOL``
    (a symbol that cached code finds again, not an address baked into it)."""
    import ctypes
    import sys

    from llvmlite import binding

    if sys.platform == "win32":
        fn = ctypes.windll.kernel32.SwitchToThread
    else:
        fn = ctypes.CDLL(None).sched_yield
    binding.add_symbol(_YIELD_SYMBOL, ctypes.cast(fn, ctypes.c_void_p).value)


_YIELD_SYMBOL = "fastem_hmm_yield"
_register_yield()


@intrinsic
def _yield_cpu(typingctx):
    """Yields the core: a waiting thread gives it away (a shared machine's
    cores may be busy; spinning would take time from the thread it waits for)."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _YIELD_SYMBOL)
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


#: ``counter[_READY + p]``: chunk p's emissions are done (see :func:`_lone_items`).
_READY = 6


@njit(**_JIT)
def _wait_count(counter, i, n):
    """Returns once ``counter[i] >= n``."""
    while _fetch_add(counter, i, 0) < n:
        _yield_cpu()


@njit(**_JIT)
def _lone_emissions(logB, lo, hi, b, m, flag):
    """``b[t] = exp(logB[t] - m[t])`` with ``m[t]`` the row maximum, rows lo:hi;
    ``flag[t] = 2`` marks an impossible frame (``b[t] = 1``, ``m[t] = 0``),
    else 0. Returns the number of impossible frames."""
    K = logB.shape[1]
    bad = 0
    for t in range(lo, hi):
        mx = -np.inf
        for k in range(K):
            mx = max(mx, logB[t, k])
        ok = mx > -np.inf
        bad += 0 if ok else 1
        flag[t] = 0.0 if ok else 2.0
        mx = mx if ok else 0.0
        m[t] = mx
        for k in range(K):
            b[t, k] = logB[t, k] - mx if ok else 0.0
    # One flat loop from 0 over a slice: vector code throughout (indices from lo * K
    # keep Numba's negative-index wraparound, and the loop scalar: 3.5x slower).
    flat = b.reshape(b.shape[0] * K)[lo * K : hi * K]
    for i in range(flat.shape[0]):
        flat[i] = exp64(flat[i])
    return bad


@njit(**_JIT)
def _lone_forward(logB, startprob, transmat_t, b, al, c, m, flag, counter, n_chunks):
    """The forward recursion of :func:`_forward_seq` without writing ``b``
    (the backward recursion reads it at the same time): an exact-shift redo
    of frame t sets ``m[t]`` to its shift and ``flag[t] = 1``, and the
    posterior chunks recompute that frame's emissions. Returns ``-inf`` for an
    impossible sequence, else 0 (the chunks sum the log-likelihood: a scalar
    loop of logarithms, 15% of the recursion's time, off its thread). Waits for
    chunk p's emissions (``counter[_READY + p]``) as it reaches the chunk."""
    T, K = logB.shape
    pred = np.empty(K)
    for k in range(K):
        pred[k] = startprob[k]
    p, nxt = 0, 0
    for t in range(T):
        if t == nxt:  # chunk p's first frame: its emissions
            _wait_count(counter, _READY + p, 1)
            p += 1
            nxt = _chunk_bounds(T, n_chunks, p)[0] if p < n_chunks else T
        s = 0.0
        for k in range(K):
            a = pred[k] * b[t, k]
            al[t, k] = a
            s += a
        if s < TINY:  # predicted mass only where the emission underflows: exact shift
            m2 = -np.inf
            for k in range(K):
                v = (math.log(pred[k]) if pred[k] > 0.0 else -np.inf) + logB[t, k]
                pred[k] = v  # scratch: log pred + logB
                m2 = max(m2, v)
            if m2 == -np.inf:
                return -np.inf
            s = 0.0
            for k in range(K):
                a = math.exp(pred[k] - m2)
                al[t, k] = a
                s += a
            m[t] = m2
            flag[t] = 1.0
        c[t] = s
        _mat_vec(transmat_t, al, t, pred, 1.0 / s)  # pred = alpha_t @ A
    return 0.0


@njit(**_JIT)
def _lone_backward(transmat, b, be, counter, n_chunks):
    """Backward recursion scaled by its own normalizers: ``be[T-1] = 1``,
    ``be[t-1] = A y_t / sum(y_t)`` with ``y_t = b_t * be_t`` (each ``be_t`` is
    beta_t times a constant of its frame, which the per-frame normalizations
    of the posteriors and counts remove). Where ``sum(y_t)`` falls below
    ``TINY`` it stops with ``be[0:t] = 0``: the forward's mass at t is then
    below ``TINY`` in this scale too, so the posterior chunks hand the
    sequence to the coupled recursions (see :func:`_lone_posteriors`). Waits
    for chunk p's emissions as it reaches the chunk, and counts in
    ``counter[5]`` the chunks from the last down whose rows are written."""
    T, K = b.shape[0], b.shape[1]
    y = np.empty((1, K))
    for k in range(K):
        be[T - 1, k] = 1.0
    p = n_chunks - 1
    lo_p = _chunk_bounds(T, n_chunks, p)[0]
    _wait_count(counter, _READY + p, 1)
    for t in range(T - 1, 0, -1):
        if t < lo_p:  # into chunk p - 1: its emissions
            p -= 1
            lo_p = _chunk_bounds(T, n_chunks, p)[0]
            _wait_count(counter, _READY + p, 1)
        d = 0.0
        for k in range(K):
            v = be[t, k] * b[t, k]
            y[0, k] = v
            d += v
        if d < TINY:
            for u in range(t):
                for k in range(K):
                    be[u, k] = 0.0
            return
        inv = 1.0 / d
        for j in range(K):  # be_t-1 = A y_t / d_t, into its row (no view per frame)
            acc = 0.0
            for i in range(K):
                acc += transmat[j, i] * y[0, i]
            be[t - 1, j] = acc * inv
        if t - 1 == lo_p:  # chunk p's rows are all written (a full barrier)
            _fetch_add(counter, 5, 1)


@njit(**_JIT)
def _cross_products(p, q, n, nb, out):
    """``out[i, j] += sum_b p[i, b] q[j, b]`` for ``i, j < n``, ``b < nb``, in 2 x 2
    blocks of (i, j) (one load per multiply-add), the loops over b in vector
    code (a loop over K = 8 states is shorter than LLVM's vector body)."""
    for i in range(0, n - 1, 2):
        for j in range(0, n - 1, 2):
            a00 = a01 = a10 = a11 = 0.0
            for b in range(nb):
                p0 = p[i, b]
                p1 = p[i + 1, b]
                q0 = q[j, b]
                q1 = q[j + 1, b]
                a00 += p0 * q0
                a01 += p0 * q1
                a10 += p1 * q0
                a11 += p1 * q1
            out[i, j] += a00
            out[i, j + 1] += a01
            out[i + 1, j] += a10
            out[i + 1, j + 1] += a11
    if n % 2 == 1:  # the last row and column
        e = n - 1
        for j in range(n):
            a0 = a1 = 0.0
            for b in range(nb):
                a0 += p[e, b] * q[j, b]
                a1 += p[j, b] * q[e, b]
            out[e, j] += a0
            if j < e:
                out[j, e] += a1


@njit(cache=True, nogil=True)
def _count_row(at, r, al, t, w, ct):
    """``at[k, r] = w alpha_t(k) / c_t`` with the roundings of the loop this
    replaced, as LLVM compiled it under ``arcp``: ``(w * al) * (1 / c)``, but a
    true division for state 0 when K is odd (its peeled first iteration). No
    fastmath here, so these stay the roundings whatever the caller's loops
    become (the per-instruction flags survive inlining)."""
    K = al.shape[1]
    rc = 1.0 / ct
    k0 = 0
    if K % 2 == 1:
        at[0, r] = (w * al[t, 0]) / ct
        k0 = 1
    for k in range(k0, K):
        at[k, r] = (w * al[t, k]) * rc


@njit(**_JIT)
def _lone_posteriors(logB, w, lo, hi, gamma, b, al, be, c, m, flag, outer, start, at, vt):
    """Posteriors of frames lo:hi into ``gamma`` and ``outer += w sum_t alpha_t
    v_t+1^T`` over t in lo:hi (t + 1 < T), with ``alpha_t = al_t / c_t``,
    ``v_u = b_u * be_u / S_u``, ``S_u = sum(al_u * be_u)``: 64 frames at a
    time through transposed (K, 64) blocks ``at``, ``vt`` (vector code over
    frames). Frame 0's chunk writes the start counts. Returns the number of
    frames whose ``S`` is below ``TINY``: the backward's scale lost the
    states that carry the forward's mass (possible only with zero or
    extremely small transitions), and the caller redoes the sequence with the
    coupled recursions."""
    T, K = logB.shape
    s = 0.0
    for k in range(K):
        s += al[lo, k] * be[lo, k]
    lost = 1 if s < TINY else 0
    inv = 1.0 / s if s > 0.0 else 0.0
    for k in range(K):
        gamma[lo, k] = al[lo, k] * be[lo, k] * inv
    end = min(hi, T - 1)
    for t0 in range(lo, end, BLOCK):
        nb = min(BLOCK, end - t0)
        for r in range(nb):
            t = t0 + r
            u = t + 1
            s = 0.0
            for k in range(K):
                s += al[u, k] * be[u, k]
            lost += 1 if s < TINY else 0
            inv = 1.0 / s if s > 0.0 else 0.0
            if u < hi:  # the chunk's posteriors, in the same pass (row hi is the next's)
                for k in range(K):
                    gamma[u, k] = al[u, k] * be[u, k] * inv
            _count_row(at, r, al, t, w, c[t])
            if flag[u] == 1.0:  # the forward's exact shift: the emissions it used
                for k in range(K):
                    e = math.exp(min(logB[u, k] - m[u], EXP_CAP))
                    # a state with zero forward probability is on no path: v is
                    # exactly 0, and a large redone emission cannot meet an inf into NaN
                    vt[k, r] = e * be[u, k] * inv if al[u, k] > 0.0 else 0.0
            else:  # the branch out of the loop: no exp call in the common one
                for k in range(K):
                    vt[k, r] = b[u, k] * be[u, k] * inv if al[u, k] > 0.0 else 0.0
        _cross_products(at, vt, K, nb, outer)
    if lo == 0:
        for k in range(K):
            start[k] = w * gamma[0, k]
    return lost


@njit(**_JIT)
def _lone_items(
    i0, i1, counter, n_chunks, logB, startprob, transmat, transmat_t, w,
    gamma, b, al, be, c, m, flag, ll, ll_p, outer_p, start,
):  # fmt: skip
    """The work items of one sequence's forward-backward (see above), claimed
    from ``counter[0]``; ``counter[1]`` counts finished emission items,
    ``counter[2]`` the finished forward, ``counter[3]`` impossible frames,
    ``counter[4]`` frames that need the coupled recursions (see
    :func:`_lone_posteriors`), ``counter[5]`` chunks the backward has passed,
    ``counter[_READY + p]`` chunk p's emissions done. ``i0:i1`` is unused
    (every thread claims items until none is left). An impossible frame is
    known once every emission item is done: the recursions run on regardless
    (their values then unused) and the forward then sets ``-inf``."""
    T, K = logB.shape
    n_items = 2 * n_chunks + 2
    at = np.empty((K, BLOCK))
    vt = np.empty((K, BLOCK))
    while True:
        it = _fetch_add(counter, 0, 1)
        if it >= n_items:
            break
        if it < n_chunks:
            h = it // 2
            p = h if it % 2 == 0 else n_chunks - 1 - h  # the ends first
            lo, hi = _chunk_bounds(T, n_chunks, p)
            bad = _lone_emissions(logB, lo, hi, b, m, flag)
            if bad > 0:
                _fetch_add(counter, 3, bad)
            _fetch_add(counter, 1, 1)
            _fetch_add(counter, _READY + p, 1)
        elif it == n_chunks:
            r = _lone_forward(logB, startprob, transmat_t, b, al, c, m, flag, counter, n_chunks)
            _wait_count(counter, 1, n_chunks)  # done already: the forward passed every chunk
            ll[0] = r if _fetch_add(counter, 3, 0) == 0 else -np.inf
            _fetch_add(counter, 2, 1)
        elif it == n_chunks + 1:
            _lone_backward(transmat, b, be, counter, n_chunks)
            _fetch_add(counter, 5, n_chunks - _fetch_add(counter, 5, 0))  # all (early stop)
        else:
            p = n_chunks - 1 - (it - n_chunks - 2)  # from the last chunk down
            _wait_count(counter, 2, 1)
            _wait_count(counter, 5, n_chunks - p)
            lo, hi = _chunk_bounds(T, n_chunks, p)
            if ll[0] == -np.inf:  # probability 0: no posteriors, no counts
                for t in range(lo, hi):
                    for k in range(K):
                        gamma[t, k] = 0.0
                continue
            lost = _lone_posteriors(
                logB, w, lo, hi, gamma, b, al, be, c, m, flag, outer_p[p], start, at, vt
            )
            if lost > 0:
                _fetch_add(counter, 4, lost)
            acc = 0.0
            for t in range(lo, hi):  # TINY <= c <= K: log64's domain
                acc += log64(c[t]) + m[t]
            ll_p[p] = acc


#: Sequences run in lock-step by one thread (for ``K <= LANES_MAX_K``): four
#: independent recursions fill the pipeline that one latency-bound recursion
#: leaves idle. Each lane keeps its own (T, K) scratch, so every per-lane loop
#: runs with unit stride as in the one-sequence kernels. Forward-backward CPU
#: time, one sequence at a time / four in lock-step (medians of 15 paired runs):
#: 1.35 at K=4, 1.63 at K=8, 1.43-1.45 at K=10, 1.23-1.25 at K=20; at K=32 and 64
#: between 0.94 and 1.17 over three runs (noise on this shared machine).
LANES = 4
LANES_MAX_K = 64


@njit(**_JIT)
def _lanes_emissions(logB, offsets, base, s0, nl, T, b, m, last, live):
    """Shifted emissions ``b[l, t, k]`` and shifts ``m[l, t]`` of lane l's
    sequence ``s0 + l`` (frame ``offsets[s] + t`` is row ``offsets[s] + t - base``
    of ``logB``); frames past a lane's end (and every frame of an impossible
    sequence) get the neutral ``b = 1``, ``m = 0``, up to the batch's longest
    ``T``."""
    K = logB.shape[1]
    for ln in range(LANES):
        Tl = offsets[s0 + ln + 1] - offsets[s0 + ln] if ln < nl else 0
        lo = offsets[s0 + ln] - base if ln < nl else 0
        last[ln] = Tl
        live[ln] = 1.0 if Tl > 0 else 0.0
        bl = b[ln]
        for t in range(Tl):
            row = lo + t
            mx = -np.inf
            for k in range(K):
                mx = max(mx, logB[row, k])
            if mx == -np.inf:  # an impossible frame: the sequence has probability 0
                live[ln] = 0.0
                break
            m[ln, t] = mx
            for k in range(K):
                bl[t, k] = logB[row, k] - mx
        first_pad = Tl if live[ln] > 0.0 else 0
        # The exponentials in one flat loop over the lane's rows: vector code
        # throughout instead of a scalar remainder per row (K=10 or 20 with 8-wide
        # vectors). Same values as per row.
        flat = bl.reshape(bl.shape[0] * K)
        for i in range(first_pad * K):
            flat[i] = exp64(flat[i])
        for t in range(first_pad, T):
            m[ln, t] = 0.0
            for k in range(K):
                bl[t, k] = 1.0


@njit(**_JIT)
def _lanes_rescue(logB, offsets, base, s0, ln, t, pred, al, b, m, live):
    """The exact-shift redo of lane l's frame t (see :func:`_forward_seq`);
    returns the frame's normalizer (1.0 if the sequence turns out impossible)."""
    K = logB.shape[1]
    row = offsets[s0 + ln] + t - base
    m2 = -np.inf
    for k in range(K):
        p = pred[ln, k]
        v = (math.log(p) if p > 0.0 else -np.inf) + logB[row, k]
        al[ln, t, k] = v  # scratch: log pred + logB
        m2 = max(m2, v)
    if m2 == -np.inf:
        live[ln] = 0.0
        for k in range(K):
            al[ln, t, k] = pred[ln, k]
        return 1.0
    s = 0.0
    for k in range(K):
        a = math.exp(al[ln, t, k] - m2)
        al[ln, t, k] = a
        s += a
        b[ln, t, k] = math.exp(min(logB[row, k] - m2, EXP_CAP))
    m[ln, t] = m2
    return s


@njit(**_JIT)
def _fb_lanes(
    logB, offsets, base, s0, nl, startprob, transmat, transmat_t, seq_weight, gamma, loglik,
    outer, start_acc, b, al, be, c, m, pred, last, live,
):  # fmt: skip
    """Forward-backward of sequences ``s0:s0 + nl`` (nl <= LANES) in lock-step,
    lane l in ``b[l]``, ``al[l]``, ``be[l]`` ((T, K) each). Each lane does the
    per-sequence arithmetic of :func:`_forward_seq` / :func:`_backward_seq`
    (the lanes never mix), so a sequence's posteriors and log-likelihood do not
    depend on its neighbours. Adds ``sum_l w_l sum_t alpha_t v_t+1^T`` into
    ``outer``. Frame ``offsets[s] + t`` is row ``offsets[s] + t - base`` of
    ``logB`` and ``gamma`` (``base`` 0: the whole arrays; the fused E-step
    passes one batch's rows)."""
    K = logB.shape[1]
    T = 0
    for ln in range(nl):
        T = max(T, offsets[s0 + ln + 1] - offsets[s0 + ln])
    _lanes_emissions(logB, offsets, base, s0, nl, T, b, m, last, live)
    L0, L1, L2, L3 = last[0], last[1], last[2], last[3]
    b0, b1, b2, b3 = b[0], b[1], b[2], b[3]
    x0, x1, x2, x3 = al[0], al[1], al[2], al[3]
    y0, y1, y2, y3 = be[0], be[1], be[2], be[3]
    p0, p1, p2, p3 = pred[0], pred[1], pred[2], pred[3]
    # forward: al[t] = pred * b[t] (alpha_t times c_t: left unnormalized, as the
    # posteriors are normalized anyway), pred = A^T al[t] / c_t
    for k in range(K):
        p0[k] = p1[k] = p2[k] = p3[k] = startprob[k]
    for t in range(T):
        c0 = c1 = c2 = c3 = 0.0
        for k in range(K):
            a = p0[k] * b0[t, k]
            x0[t, k] = a
            c0 += a
        for k in range(K):
            a = p1[k] * b1[t, k]
            x1[t, k] = a
            c1 += a
        for k in range(K):
            a = p2[k] * b2[t, k]
            x2[t, k] = a
            c2 += a
        for k in range(K):
            a = p3[k] * b3[t, k]
            x3[t, k] = a
            c3 += a
        c[0, t] = c0
        c[1, t] = c1
        c[2, t] = c2
        c[3, t] = c3
        if c0 < TINY or c1 < TINY or c2 < TINY or c3 < TINY:
            for ln in range(LANES):  # one call site: less code to compile
                if c[ln, t] < TINY:
                    c[ln, t] = _lanes_rescue(logB, offsets, base, s0, ln, t, pred, al, b, m, live)
            c0, c1, c2, c3 = c[0, t], c[1, t], c[2, t], c[3, t]
        i0 = 1.0 / c0
        i1 = 1.0 / c1
        i2 = 1.0 / c2
        i3 = 1.0 / c3
        for j in range(K):  # four independent dot products per row of A^T
            q0 = q1 = q2 = q3 = 0.0
            for i in range(K):
                a = transmat_t[j, i]
                q0 += a * x0[t, i]
                q1 += a * x1[t, i]
                q2 += a * x2[t, i]
                q3 += a * x3[t, i]
            p0[j] = q0 * i0  # the normalization of alpha_t, applied here
            p1[j] = q1 * i1
            p2[j] = q2 * i2
            p3[j] = q3 * i3
    # backward: b[t+1] becomes v_t+1 = b * beta / c (0 off the sequence or on an
    # unreachable state), beta_t = A v_t+1 (1 at and after a lane's last frame)
    for k in range(K):
        y0[T - 1, k] = y1[T - 1, k] = y2[T - 1, k] = y3[T - 1, k] = 1.0
    for t in range(T - 2, -1, -1):
        u = t + 1
        i0 = 1.0 / c[0, u]
        i1 = 1.0 / c[1, u]
        i2 = 1.0 / c[2, u]
        i3 = 1.0 / c[3, u]
        ok0 = u < L0 and live[0] > 0.0
        ok1 = u < L1 and live[1] > 0.0
        ok2 = u < L2 and live[2] > 0.0
        ok3 = u < L3 and live[3] > 0.0
        for k in range(K):
            b0[u, k] = b0[u, k] * y0[u, k] * i0 if ok0 and x0[u, k] > 0.0 else 0.0
        for k in range(K):
            b1[u, k] = b1[u, k] * y1[u, k] * i1 if ok1 and x1[u, k] > 0.0 else 0.0
        for k in range(K):
            b2[u, k] = b2[u, k] * y2[u, k] * i2 if ok2 and x2[u, k] > 0.0 else 0.0
        for k in range(K):
            b3[u, k] = b3[u, k] * y3[u, k] * i3 if ok3 and x3[u, k] > 0.0 else 0.0
        for j in range(K):
            q0 = q1 = q2 = q3 = 0.0
            for i in range(K):
                a = transmat[j, i]
                q0 += a * b0[u, i]
                q1 += a * b1[u, i]
                q2 += a * b2[u, i]
                q3 += a * b3[u, i]
            y0[t, j] = q0 if u < L0 else 1.0
            y1[t, j] = q1 if u < L1 else 1.0
            y2[t, j] = q2 if u < L2 else 1.0
            y3[t, j] = q3 if u < L3 else 1.0
    # transition counts: outer[i, j] += sum_l w_l alpha_l,t,i v_l,t+1,j
    w0 = seq_weight[s0] if live[0] > 0.0 else 0.0
    w1 = seq_weight[s0 + 1] if nl > 1 and live[1] > 0.0 else 0.0
    w2 = seq_weight[s0 + 2] if nl > 2 and live[2] > 0.0 else 0.0
    w3 = seq_weight[s0 + 3] if nl > 3 and live[3] > 0.0 else 0.0
    for t in range(T - 1):
        u = t + 1
        f0 = w0 / c[0, t]  # alpha_t = al[t] / c_t
        f1 = w1 / c[1, t]
        f2 = w2 / c[2, t]
        f3 = w3 / c[3, t]
        for i in range(K):
            a0 = f0 * x0[t, i] if w0 > 0.0 else 0.0
            a1 = f1 * x1[t, i] if w1 > 0.0 else 0.0
            a2 = f2 * x2[t, i] if w2 > 0.0 else 0.0
            a3 = f3 * x3[t, i] if w3 > 0.0 else 0.0
            for j in range(K):
                outer[i, j] += (a0 * b0[u, j] + a1 * b1[u, j]) + (a2 * b2[u, j] + a3 * b3[u, j])
    # posteriors, log-likelihoods and start counts, lane by lane
    for ln in range(nl):
        s = s0 + ln
        lo = offsets[s] - base
        Tl = last[ln]
        if live[ln] == 0.0:
            loglik[s] = -np.inf
            for t in range(Tl):
                for k in range(K):
                    gamma[lo + t, k] = 0.0
            continue
        xl, yl = al[ln], be[ln]
        ll = 0.0
        for t in range(Tl):  # TINY <= c <= K: log64's domain; vectorizes over t
            ll += log64(c[ln, t]) + m[ln, t]
        for t in range(Tl):  # the sum first, then one store per posterior
            g = 0.0
            for k in range(K):
                g += xl[t, k] * yl[t, k]
            inv = 1.0 / g if g > 0.0 else np.nan  # underflowed: NaN as NumPy, not a raise
            for k in range(K):
                gamma[lo + t, k] = xl[t, k] * yl[t, k] * inv
        loglik[s] = ll
        w = seq_weight[s]
        for k in range(K):
            start_acc[k] += w * gamma[lo, k]


#: A batch runs in lock-step only if its frames add up to at least this many
#: times its longest sequence's: lock-step runs every lane to the longest
#: sequence's end, and one lock-step frame of four lanes costs about 2.5-3 frames
#: of one sequence alone (see LANES), so a batch such as lengths
#: (20000, 10, 10, 10) ran about 2.5x slower in lanes than one at a time.
LOCK_STEP_MIN_FILL = 2


@njit(**_JIT)
def _lock_step(offsets, s0, nl):
    """Whether the batch of sequences ``s0:s0 + nl`` runs in lock-step lanes
    (more than one sequence, lengths even enough; see LOCK_STEP_MIN_FILL)."""
    if nl <= 1:
        return False
    total = 0
    longest = 0
    for s in range(s0, s0 + nl):
        T = offsets[s + 1] - offsets[s]
        total += T
        longest = max(longest, T)
    return total >= LOCK_STEP_MIN_FILL * longest


@njit(**_JIT)
def _fb_chunks(
    i0, i1, n_chunks, logB, offsets, startprob, transmat, transmat_t, seq_weight,
    gamma, loglik, outer_p, start_p,
):  # fmt: skip
    """Forward-backward of the sequences of groups i0:i1 (a group is a run of
    whole batches of ``LANES`` sequences, or of single sequences for
    ``K > LANES_MAX_K``); group ``ch`` adds its ``sum_t alpha_t v_t+1^T`` and
    start counts into ``outer_p[ch]``, ``start_p[ch]``. A batch of one sequence
    runs alone (no idle lanes)."""
    K = logB.shape[1]
    S = offsets.shape[0] - 1
    lanes = LANES if K <= LANES_MAX_K else 1
    n_batches = (S + lanes - 1) // lanes
    last = np.empty(LANES, dtype=np.int64)
    live = np.empty(LANES)
    pred = np.empty((LANES, K))
    # Scratch, allocated once for the groups i0:i1: (LANES, T, K) for the
    # lock-step batches, (T, K) for a batch of one, sized to their sequences
    # (with 4 lanes, 200 frames and K=20 a group is about 50 us of work: eight
    # allocations per group were measurable).
    t_lanes = 0
    t_single = 0
    for ch in range(i0, i1):
        b_lo, b_hi = _chunk_bounds(n_batches, n_chunks, ch)
        s_lo, s_hi = b_lo * lanes, min(b_hi * lanes, S)
        for s0 in range(s_lo, s_hi, lanes):
            together = _lock_step(offsets, s0, min(lanes, s_hi - s0))
            for s in range(s0, min(s0 + lanes, s_hi)):
                T = offsets[s + 1] - offsets[s]
                if together:
                    t_lanes = max(t_lanes, T)
                else:
                    t_single = max(t_single, T)
    b = np.empty((LANES, t_lanes, K))
    al = np.empty((LANES, t_lanes, K))
    be = np.empty((LANES, t_lanes, K))
    c = np.empty((LANES, t_lanes))
    m = np.empty((LANES, t_lanes))
    b1 = np.empty((t_single, K))
    be1 = np.empty((t_single, K))
    c1 = np.empty(t_single)
    m1 = np.empty(t_single)
    for ch in range(i0, i1):
        b_lo, b_hi = _chunk_bounds(n_batches, n_chunks, ch)
        s_lo, s_hi = b_lo * lanes, min(b_hi * lanes, S)
        for s0 in range(s_lo, s_hi, lanes):
            nl = min(lanes, s_hi - s0)
            if _lock_step(offsets, s0, nl):
                _fb_lanes(
                    logB, offsets, 0, s0, nl, startprob, transmat, transmat_t, seq_weight,
                    gamma, loglik, outer_p[ch], start_p[ch], b, al, be, c, m, pred, last, live,
                )  # fmt: skip
                continue
            for s in range(s0, s0 + nl):  # one at a time (a batch of one, or uneven)
                lo, hi = offsets[s], offsets[s + 1]
                ll = _forward_seq(logB, lo, hi, startprob, transmat_t, gamma, b1, c1, m1)
                loglik[s] = ll
                if ll == -np.inf:
                    gamma[lo:hi, :] = 0.0
                    continue
                w = seq_weight[s]
                _backward_seq(lo, hi, transmat, gamma, b1, c1, be1, outer_p[ch], w)
                for k in range(K):
                    start_p[ch, k] += w * gamma[lo, k]


@njit(**_JIT)
def _filter_chunks(i0, i1, n_chunks, logB, offsets, startprob, transmat_t, filt, loglik):
    K = logB.shape[1]
    S = offsets.shape[0] - 1
    for ch in range(i0, i1):
        s_lo, s_hi = _chunk_bounds(S, n_chunks, ch)
        t_max = 1
        for s in range(s_lo, s_hi):
            t_max = max(t_max, offsets[s + 1] - offsets[s])
        b = np.empty((t_max, K))
        c = np.empty(t_max)
        m = np.empty(t_max)
        for s in range(s_lo, s_hi):
            lo, hi = offsets[s], offsets[s + 1]
            loglik[s] = _forward_seq(logB, lo, hi, startprob, transmat_t, filt, b, c, m)
            if loglik[s] == -np.inf:
                filt[lo:hi, :] = 0.0
                continue
            for t in range(hi - lo):  # alpha_t = filt[t] / c_t
                inv = 1.0 / c[t]
                for k in range(K):
                    filt[lo + t, k] *= inv


#: From this many states Viterbi's max-plus step runs predecessor-major (see
#: _viterbi_chunks). CPU of the column walk / predecessor-major, 1 thread, paired
#: medians of 9: 1.92 at K=3, 1.33 at K=4, 1.28 at K=8 (the walk faster), 0.56
#: at K=20, 0.27 at K=64; with this threshold against the walk alone: 0.98-1.01
#: up to K=11, 1.17 at K=12, 1.39 at 16, 1.75 at 20, 3.83 at 64. Same bits.
VITERBI_ROWS_MIN_K = 12


@njit(**_JIT)
def _viterbi_chunks(i0, i1, n_chunks, logB, offsets, log_startprob, log_transmat, path, logprob):
    K = logB.shape[1]
    S = offsets.shape[0] - 1
    delta = np.empty(K)
    best_v = np.empty(K)
    arg_v = np.empty(K, dtype=np.int64)
    for ch in range(i0, i1):
        s_lo, s_hi = _chunk_bounds(S, n_chunks, ch)
        t_max = 1
        for s in range(s_lo, s_hi):
            t_max = max(t_max, offsets[s + 1] - offsets[s])
        back = np.empty((t_max, K), dtype=np.int64)
        for s in range(s_lo, s_hi):
            lo, hi = offsets[s], offsets[s + 1]
            T = hi - lo
            for k in range(K):
                delta[k] = log_startprob[k] + logB[lo, k]
            for t in range(1, T):
                if K < VITERBI_ROWS_MIN_K:  # few states: a column walk per target
                    for j in range(K):
                        best = -np.inf
                        arg = 0
                        for i in range(K):
                            v = delta[i] + log_transmat[i, j]
                            if v >= best:  # >=: as below
                                best = v
                                arg = i
                        best_v[j] = best
                        arg_v[j] = arg
                    for j in range(K):
                        delta[j] = best_v[j] + logB[lo + t, j]
                        back[t, j] = arg_v[j]
                    continue
                for j in range(K):
                    best_v[j] = -np.inf
                    arg_v[j] = 0
                # Predecessors i in the outer loop, targets j in the inner one: rows
                # of log_transmat with unit stride and selects Numba vectorizes over
                # j (the column walk with a branch per j above does not). Per j the
                # same sums and comparisons in the same order: the same maxima and
                # arguments either way.
                for i in range(K):
                    di = delta[i]
                    for j in range(K):
                        v = di + log_transmat[i, j]
                        # >=: the last maximum wins, the predecessor hmmlearn's
                        # backtrack picks (exact ties are common with discrete
                        # emissions); the final state below is the first maximum
                        take = v >= best_v[j]
                        best_v[j] = v if take else best_v[j]
                        arg_v[j] = i if take else arg_v[j]
                for j in range(K):
                    delta[j] = best_v[j] + logB[lo + t, j]
                    back[t, j] = arg_v[j]
            state = 0
            best = -np.inf
            for k in range(K):
                if delta[k] > best:
                    best = delta[k]
                    state = k
            logprob[s] = delta[state]
            for t in range(T - 1, -1, -1):
                path[lo + t] = state
                state = back[t, state]


@njit(**_JIT)
def _moments_block(
    X, gamma, row_weight, shift, lo, gbase, nb, xt, gt, diff, gd, nk, sx, sxx, full
):  # fmt: skip
    """Add rows ``lo:lo + nb`` to a chunk's partials (their posteriors are rows
    ``lo - gbase:...`` of ``gamma``). Rows go into transposed (D, B) / (K, B)
    scratch so the inner loops run over rows with unit stride."""
    D = X.shape[1]
    K = gamma.shape[1]
    for b in range(nb):
        w = row_weight[lo + b]
        for j in range(D):
            xt[j, b] = np.float64(X[lo + b, j])
        for k in range(K):
            gt[k, b] = w * gamma[lo - gbase + b, k]
    for k in range(K):
        s0 = 0.0
        for b in range(nb):
            s0 += gt[k, b]
        if s0 == 0.0:
            continue
        nk[k] += s0
        if not full:
            for j in range(D):
                m = shift[k, j]
                s1 = 0.0
                s2 = 0.0
                for b in range(nb):
                    d = xt[j, b] - m
                    g = gt[k, b] * d
                    s1 += g
                    s2 += g * d
                sx[k, j] += s1
                sxx[k, 0, j] += s2
        else:
            for j in range(D):
                m = shift[k, j]
                s1 = 0.0
                for b in range(nb):
                    d = xt[j, b] - m
                    g = gt[k, b] * d
                    diff[j, b] = d
                    gd[j, b] = g
                    s1 += g
                sx[k, j] += s1
            _upper_products(gd, diff, D, nb, sxx[k])


@njit(**_JIT)
def _upper_products(gd, diff, D, nb, out):
    """``out[i, j] += sum_b gd[i, b] diff[j, b]`` for ``j >= i``, in 2 x 2 blocks
    of (i, j): each pass over the rows loads two rows of each operand for four
    sums (one load per multiply-add instead of two): ``moments_full`` at N=20000,
    K=8, D=8 1.43x faster (1 thread, paired CPU times)."""
    i = 0
    while i + 2 <= D:
        a00 = a01 = a11 = 0.0
        for b in range(nb):
            g0 = gd[i, b]
            d1 = diff[i + 1, b]
            a00 += g0 * diff[i, b]
            a01 += g0 * d1
            a11 += gd[i + 1, b] * d1
        out[i, i] += a00
        out[i, i + 1] += a01
        out[i + 1, i + 1] += a11
        j = i + 2
        while j + 2 <= D:
            a00 = a01 = a10 = a11 = 0.0
            for b in range(nb):
                g0 = gd[i, b]
                g1 = gd[i + 1, b]
                d0 = diff[j, b]
                d1 = diff[j + 1, b]
                a00 += g0 * d0
                a01 += g0 * d1
                a10 += g1 * d0
                a11 += g1 * d1
            out[i, j] += a00
            out[i, j + 1] += a01
            out[i + 1, j] += a10
            out[i + 1, j + 1] += a11
            j += 2
        if j < D:
            a00 = a10 = 0.0
            for b in range(nb):
                d0 = diff[j, b]
                a00 += gd[i, b] * d0
                a10 += gd[i + 1, b] * d0
            out[i, j] += a00
            out[i + 1, j] += a10
        i += 2
    if i < D:
        acc = 0.0
        for b in range(nb):
            acc += gd[i, b] * diff[i, b]
        out[i, i] += acc


@njit(**_JIT)
def _moments_chunks(i0, i1, n_chunks, X, gamma, row_weight, shift, nk_p, sx_p, sxx_p, full):
    N, D = X.shape
    K = gamma.shape[1]
    xt = np.empty((D, BLOCK))
    gt = np.empty((K, BLOCK))
    diff = np.empty((D, BLOCK))
    gd = np.empty((D, BLOCK))
    for ch in range(i0, i1):
        lo, hi = _chunk_bounds(N, n_chunks, ch)
        for start in range(lo, hi, BLOCK):
            nb = min(BLOCK, hi - start)
            _moments_block(
                X, gamma, row_weight, shift, start, 0, nb, xt, gt, diff, gd,
                nk_p[ch], sx_p[ch], sxx_p[ch], full,
            )  # fmt: skip


# ------------------------------------------------------------------ fused E-step
# Diagonal Gaussian emissions, forward-backward and moments of one batch of
# sequences at a time, in one pass over the thread pool: the (N, K) emission
# and posterior arrays of the separate kernels are never formed (a batch's
# rows stay in cache from the emissions to the moments), and an iteration
# hands the pool one pass instead of three.


@intrinsic
def _next_group(typingctx, counter):
    """``counter[0]`` before an atomic increment by 1 (int64 array): the next
    group for the calling thread. Which thread takes which group never changes a
    group's result (its partials have their own slot), only who finishes when.
    Sequentially consistent (on x86 the same ``lock xadd`` as a relaxed one):
    :func:`run_dynamic`'s caller reads a thread's final claim as the sign
    that the thread's writes are done, so none may move past it."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [zero])
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", ptr, one, "seq_cst")

    return types.int64(counter), codegen


@njit(cache=True, nogil=True)
def _diag_logb_1d(X, r0, nr, means, pc, comp_const, lb):
    """:func:`_diag_logb` for one feature, row by row (no transposed block, no
    running sum). Compiled without fastmath, so each value keeps the rounding
    steps of the general path, ``c - 0.5 * round(t * t)`` with ``t = (x - mu) u``
    (the halving is exact): the same bits. A contracted ``c - 0.5 t^2`` would
    round once, differently."""
    K = means.shape[0]
    for t in range(nr):
        x = X[r0 + t, 0]
        for k in range(K):
            d = (x - means[k, 0]) * pc[k, 0]
            sq = d * d
            lb[t, k] = comp_const[k] - 0.5 * sq


@njit(**_JIT)
def _diag_logb(X, r0, nr, means, pc, comp_const, xt, acc, lb):
    """``lb[t, k] = comp_const[k] - sum_j ((X[r0 + t, j] - mu_kj) u_kj)^2 / 2``
    for ``t < nr``. Rows go through a transposed (D, BLOCK) block so the inner
    loops run over 64 rows (full-width vector code; a loop over K = 10 or 20
    states is shorter than LLVM's vector body and ran 2x slower), four
    features per pass over the block's squared distances (the mixture kernels'
    :func:`fastem.backends._numba._diag_maha`)."""
    D = X.shape[1]
    K = means.shape[0]
    if D == 1:  # univariate sequences: a block per row costs more than the row
        _diag_logb_1d(X, r0, nr, means, pc, comp_const, lb)
        return
    for s0 in range(0, nr, BLOCK):
        nb = min(BLOCK, nr - s0)
        for b in range(nb):
            for j in range(D):
                xt[j, b] = X[r0 + s0 + b, j]
        for k in range(K):
            _diag_maha(xt, nb, means[k], pc[k], acc)
            c = comp_const[k]
            for b in range(nb):
                lb[s0 + b, k] = c - 0.5 * acc[b]


@njit(**_JIT)
def _estep_diag_chunks(
    i0, i1, counter, n_chunks, X, offsets, means, pc, comp_const, startprob, transmat,
    seq_weight, row_weight, shift, loglik, outer_p, start_p, nk_p, sx_p, sxx_p,
):  # fmt: skip
    """The groups of :func:`_fb_chunks` (same batches), each batch's emissions
    computed into a (rows, K) scratch first and its moments about ``shift``
    added into the group's partials after its posteriors. Every thread runs
    this with the same ``counter`` and claims groups from it until none is
    left (a dynamic schedule: a thread that starts late, or is descheduled,
    takes fewer groups); ``i0:i1`` only bounds the scratch sizes (all groups).
    Each thread transposes ``transmat`` into its scratch (no serial copy per
    call)."""
    D = X.shape[1]
    K = means.shape[0]
    transmat_t = np.empty((K, K))
    for i in range(K):
        for j in range(K):
            transmat_t[j, i] = transmat[i, j]
    S = offsets.shape[0] - 1
    lanes = LANES if K <= LANES_MAX_K else 1
    n_batches = (S + lanes - 1) // lanes
    last = np.empty(LANES, dtype=np.int64)
    live = np.empty(LANES)
    pred = np.empty((LANES, K))
    acc = np.empty(BLOCK)
    t_max = 0
    r_max = 0
    for ch in range(i0, i1):
        b_lo, b_hi = _chunk_bounds(n_batches, n_chunks, ch)
        s_lo, s_hi = b_lo * lanes, min(b_hi * lanes, S)
        for s0 in range(s_lo, s_hi, lanes):
            s1 = min(s0 + lanes, s_hi)
            r_max = max(r_max, offsets[s1] - offsets[s0])
            for s in range(s0, s1):
                t_max = max(t_max, offsets[s + 1] - offsets[s])
    lb = np.empty((r_max, K))
    gam = np.empty((r_max, K))
    b = np.empty((LANES, t_max, K))
    al = np.empty((LANES, t_max, K))
    be = np.empty((LANES, t_max, K))
    c = np.empty((LANES, t_max))
    m = np.empty((LANES, t_max))
    xt = np.empty((D, BLOCK))
    gt = np.empty((K, BLOCK))
    diff = np.empty((D, BLOCK))
    gd = np.empty((D, BLOCK))
    while True:
        ch = _next_group(counter)
        if ch >= n_chunks:
            break
        b_lo, b_hi = _chunk_bounds(n_batches, n_chunks, ch)
        s_lo, s_hi = b_lo * lanes, min(b_hi * lanes, S)
        for s0 in range(s_lo, s_hi, lanes):
            nl = min(lanes, s_hi - s0)
            r0 = offsets[s0]
            nr = offsets[s0 + nl] - r0
            _diag_logb(X, r0, nr, means, pc, comp_const, xt, acc, lb)
            if _lock_step(offsets, s0, nl):
                _fb_lanes(
                    lb, offsets, r0, s0, nl, startprob, transmat, transmat_t, seq_weight,
                    gam, loglik, outer_p[ch], start_p[ch], b, al, be, c, m, pred, last, live,
                )  # fmt: skip
            elif nl > 1:  # uneven lengths: one at a time, into the batch's rows
                for s in range(s0, s0 + nl):
                    lo, hi = offsets[s] - r0, offsets[s + 1] - r0
                    ll = _forward_seq(lb, lo, hi, startprob, transmat_t, gam, b[0], c[0], m[0])
                    loglik[s] = ll
                    if ll == -np.inf:  # probability 0: zero posteriors, no counts
                        gam[lo:hi, :] = 0.0
                        continue
                    w = seq_weight[s]
                    _backward_seq(lo, hi, transmat, gam, b[0], c[0], be[0], outer_p[ch], w)
                    for k in range(K):
                        start_p[ch, k] += w * gam[lo, k]
            else:
                ll = _forward_seq(lb, 0, nr, startprob, transmat_t, gam, b[0], c[0], m[0])
                loglik[s0] = ll
                if ll == -np.inf:
                    continue  # probability 0: no posteriors, no counts
                w = seq_weight[s0]
                _backward_seq(0, nr, transmat, gam, b[0], c[0], be[0], outer_p[ch], w)
                for k in range(K):
                    start_p[ch, k] += w * gam[0, k]
            for start in range(r0, r0 + nr, BLOCK):
                _moments_block(
                    X, gam, row_weight, shift, start, r0, min(BLOCK, r0 + nr - start),
                    xt, gt, diff, gd, nk_p[ch], sx_p[ch], sxx_p[ch], False,
                )  # fmt: skip


#: A state's share of its row below this is recomputed with the state's own maximum,
#: so its largest term is a normal number (well above the subnormals' 2.2e-308).
_LOW_SHARE = 1e-280


@njit(**_JIT)
def _gmm_state_chunks(i0, i1, n_chunks, comp, n_mix, out):
    """``out[t, k] = logsumexp_m comp[t, k*M + m]``, shifted by the row's maximum
    over all K*M components: one unit-stride loop of exponentials per row
    (vectorizes), then group sums. A state whose sum falls below ``_LOW_SHARE``
    (far below the row's best state) is redone with its own maximum, so the
    result equals the per-state shift's to rounding."""
    N, K = out.shape
    C = comp.shape[1]
    e = np.empty(C)
    sk = np.empty(K)
    for ch in range(i0, i1):
        lo, hi = _chunk_bounds(N, n_chunks, ch)
        for t in range(lo, hi):
            m = -np.inf
            for c in range(C):
                m = max(m, comp[t, c])
            if m == -np.inf:
                for k in range(K):
                    out[t, k] = -np.inf
                continue
            for c in range(C):
                e[c] = exp64(comp[t, c] - m)
            low = False
            for k in range(K):
                s = 0.0
                for j in range(n_mix):
                    s += e[k * n_mix + j]
                low |= s < _LOW_SHARE
                sk[k] = max(s, _LOW_SHARE)  # a normal number: log64's domain
            for k in range(K):  # unit stride: the logarithms vectorize
                out[t, k] = m + log64(sk[k])
            if not low:
                continue
            for k in range(K):
                s = 0.0
                for j in range(n_mix):
                    s += e[k * n_mix + j]
                if s >= _LOW_SHARE:
                    continue
                mk = -np.inf
                for j in range(n_mix):
                    mk = max(mk, comp[t, k * n_mix + j])
                if mk == -np.inf:
                    out[t, k] = -np.inf
                    continue
                s = 0.0
                for j in range(n_mix):
                    s += exp64(comp[t, k * n_mix + j] - mk)
                out[t, k] = mk + log64(s)  # s >= 1: its largest term is exp(0)


@njit(**_JIT)
def _gmm_post_chunks(i0, i1, n_chunks, comp, n_mix, state, gamma, row_weight, out):
    """``out[t, c] = w_t gamma_tk exp(comp[t, c] - state[t, k])`` for the K*M
    components c of state k, as one unit-stride loop per row (the state's shift
    and weight spread over its components first); an impossible state gets 0."""
    N, K = state.shape
    C = comp.shape[1]
    st = np.empty(C)
    gg = np.empty(C)
    for ch in range(i0, i1):
        lo, hi = _chunk_bounds(N, n_chunks, ch)
        for t in range(lo, hi):
            w = row_weight[t]
            for k in range(K):
                sk = state[t, k]
                ok = sk > -np.inf
                g = w * gamma[t, k] if ok else 0.0
                sk = sk if ok else np.inf  # exp(comp - inf) = 0, never inf - inf
                for j in range(n_mix):
                    st[k * n_mix + j] = sk
                    gg[k * n_mix + j] = g
            for c in range(C):
                out[t, c] = gg[c] * exp64(comp[t, c] - st[c])


# ------------------------------------------------------------------ entry points


# A pass with fewer inner-loop steps than this (about 20-50 us of work) runs its
# chunks on the calling thread: handing them to the pool costs tens of
# microseconds, more than it saves. The chunks, hence the results, are the
# same either way.
SMALL_WORK = 1 << 16


def _run(kernel, n_chunks, work, *args):
    """``run_chunks(kernel, n_chunks, *args)``, on the calling thread when
    ``work`` (inner-loop steps of the whole pass) is below ``SMALL_WORK``."""
    if work < SMALL_WORK:
        kernel(0, n_chunks, *args)
    else:
        run_chunks(kernel, n_chunks, *args)


_thread_count = None  # numba's per-thread count getter, once its threads are launched
_pool_of_pid = (None, -1)  # (_executor(), the pid it was made in)


def _num_threads() -> int:
    """``numba.get_num_threads()`` without its per-call threading-layer check
    (~1.4 us: ``_launch_threads`` takes two locks every call): the layer's own
    getter once the threads are launched. The count stays the calling thread's
    current one (``numba.set_num_threads``, ``limit_threads``)."""
    global _thread_count
    get = _thread_count
    if get is None:
        n = numba.get_num_threads()  # launches the threading layer
        from numba.np.ufunc import parallel

        _thread_count = getattr(parallel, "_get_num_threads", None) or numba.get_num_threads
        return n
    n = get()
    return n if n > 0 else numba.get_num_threads()  # numba's own error path


def _pool():
    """``_executor()`` without its lock (~0.8 us) once made in this process
    (it is made once per process: a forked child makes its own)."""
    global _pool_of_pid
    pool, pid = _pool_of_pid
    if pid != os.getpid():
        pool = _executor()
        _pool_of_pid = (pool, os.getpid())
    return pool


def run_dynamic(kernel, n_iter, *args):
    """``kernel(0, n_iter, *args)`` on the calling thread and on
    ``numba.get_num_threads() - 1`` workers at once; the kernel shares its
    groups out itself (see :func:`_estep_diag_chunks`). Contract: ``args[0]``
    is an int64 counter whose ``[0]`` starts at 0, and each thread claims
    items from it with a sequentially consistent increment until a claim is
    ``>= n_iter``, its last act."""
    nt = min(int(_num_threads()), n_iter)
    if nt <= 1:
        kernel(0, n_iter, *args)
        return
    _settle()
    pool = _pool()
    futures = [pool.submit(kernel, 0, n_iter, *args) for _ in range(1, nt)]
    try:
        kernel(0, n_iter, *args)
    except BaseException:
        for f in futures:
            f.result()
        raise
    # Every thread's last act is a claim past the end (``counter[0]``, args[0]):
    # once there are nt of them, every worker's writes are done and visible (the
    # claims are sequentially consistent), without waiting for the worker to
    # take the GIL, settle its future and wake this thread. Bounded: a worker
    # that has not started (a busy core) is waited for by its future.
    if WAIT_POLLS and _wait_claims(args[0], n_iter + nt, WAIT_POLLS):
        _unsettled.extend((os.getpid(), f) for f in futures)  # read by the next pass
        return
    for f in futures:
        f.result()


#: Polls (each a ``sched_yield``, ~0.3-1 us on an idle core) of the claim count
#: by the caller of :func:`run_dynamic` before it waits on the futures; 0 (the
#: default): always wait on the futures. 200 against 0, 2 threads, paired wall
#: per iteration in two quiet windows: HB2 1.02x and 0.97x, LONGFULL 1.09x and
#: 1.01x; with another process on the second core down to 0.97x and 0.87x (a
#: yield can hand the core to it). No gain shown, so off.
WAIT_POLLS = 0
_unsettled: list = []  # (pid, future) of passes that did not wait on their futures


def _settle():
    """The futures of earlier passes whose threads had all finished: their
    results (a worker's error raised here). A forked child drops its parent's
    (their threads are not in the child)."""
    while _unsettled:
        try:
            pid, f = _unsettled.pop()
        except IndexError:  # another thread took the last one
            return
        if pid == os.getpid():
            f.result()


@njit(**_JIT)
def _wait_claims(counter, target, polls):
    """True once ``counter[0] >= target``; False after ``polls`` yields."""
    for _ in range(polls):
        if _fetch_add(counter, 0, 0) >= target:
            return True
        _yield_cpu()
    return _fetch_add(counter, 0, 0) >= target


def _ro(a):
    """A read-only view (no copy): one Numba specialization per dtype."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


#: The lone-sequence scratch (three (T, K) arrays) is kept per calling thread
#: between calls up to this size: fresh pages cost a fault each on first touch
#: (~1.7 us per 4 KiB page on this 2-core VM: 0.5 ms per (20000, 8) array, as
#: much as its forward recursion), a reused buffer none.
SCRATCH_KEEP_BYTES = 64 << 20
_scratch_tls = threading.local()


def _lone_scratch(n):
    """``n`` float64 values: the calling thread's kept buffer if large enough."""
    buf = getattr(_scratch_tls, "buf", None)
    if buf is not None and buf.size >= n:
        return buf[:n]
    buf = np.empty(n)
    if n * 8 <= SCRATCH_KEEP_BYTES:
        _scratch_tls.buf = buf
    return buf


#: The lone sequence's per-call arrays besides the scratch (counter, partials,
#: the transposed transitions), kept per calling thread for the last (T, K):
#: made, zeroed and sliced once, not every iteration (~25 us of Python a call
#: on this VM, most of it with the caches cold after the kernel's pass).
_lone_tls = threading.local()


def _lone_workspace(T, K, nc, keep=True):
    """The calling thread's ``(key, views, counter, ll, ll_p, outer_p, start_p,
    transmat_t, its read-only view)`` for a sequence of T frames, K states and
    ``nc`` chunks; the counter and the partials are zero (:func:`_lone_finish`
    zeroes them as it reads them). ``keep=False``: new arrays, not kept."""
    ws = getattr(_lone_tls, "ws", None) if keep else None
    if ws is not None and ws[0] == (T, K, nc):
        return ws
    buf = _lone_scratch(3 * T * K + 3 * T)
    views = tuple(buf[i * T * K : (i + 1) * T * K].reshape(T, K) for i in range(3)) + tuple(
        buf[3 * T * K + i * T : 3 * T * K + (i + 1) * T] for i in range(3)
    )
    transmat_t = np.empty((K, K))
    ws = (
        (T, K, nc), views, np.zeros(_READY + nc, dtype=np.int64), np.empty(1), np.empty(nc),
        np.zeros((nc, K, K)), np.zeros(K), transmat_t, _ro(transmat_t),
    )  # fmt: skip
    if keep and (3 * T * K + 3 * T) * 8 <= SCRATCH_KEEP_BYTES:
        _lone_tls.ws = ws  # only with a kept scratch (the views are of it)
    return ws


@njit(cache=True, nogil=True)
def _lone_finish(transmat, counter, ll, ll_p, outer_p, start_p, loglik, xi, start):
    """After a lone sequence's pass: ``loglik``, ``xi = A * sum_p outer_p[p]``
    and ``start``, as the NumPy code they replace wrote them (``sum`` of the
    chunks' log-likelihoods from 0.0 in chunk order, as Python's ``sum``;
    ``outer_p.sum(axis=0)``: 0.0 plus each chunk in order, for ``K > 1``),
    and the counter and partials zeroed for the next call. Returns False
    (nothing written) where the sequence needs the coupled recursions
    (``counter[4] > 0``). No fastmath: the order of each sum is the chunks'."""
    nc, K = outer_p.shape[0], outer_p.shape[1]
    redo = counter[4] > 0
    if not redo:
        if ll[0] == -np.inf:
            loglik[0] = ll[0]
        else:
            acc = 0.0
            for p in range(nc):
                acc += ll_p[p]
            loglik[0] = acc
        for i in range(K):
            for j in range(K):
                acc = 0.0
                for p in range(nc):
                    acc += outer_p[p, i, j]
                xi[i, j] = transmat[i, j] * acc
            start[i] = start_p[i]
    for i in range(counter.shape[0]):
        counter[i] = 0
    for p in range(nc):
        for i in range(K):
            for j in range(K):
                outer_p[p, i, j] = 0.0
    for i in range(K):
        start_p[i] = 0.0
    return not redo


def _forward_backward_lone(
    logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start, numpy_sums=False
):
    """:func:`forward_backward` of one sequence: its work items (emission
    chunks, the two recursions at once, posterior chunks) in one pool pass.

    The per-call arrays are kept per thread and the chunks' sums compiled
    (:func:`_lone_finish`), except with ``K = 1``, where NumPy sums a (nc, 1, 1)
    axis pairwise (its own bits), or ``numpy_sums``: fresh arrays and NumPy's
    reductions (the code the compiled sums replaced, which tests compare with)."""
    lo, hi = int(offsets[0]), int(offsets[1])
    T, K = hi - lo, logB.shape[1]
    numpy_sums = numpy_sums or K == 1
    nc = _row_chunks(T)
    ws = _lone_workspace(T, K, nc, keep=not numpy_sums)
    _, (b, al, be, c, m, flag), counter, ll, ll_p, outer_p, start_p, tt, tt_ro = ws
    np.copyto(tt, transmat.T)
    args = (
        counter, nc, _ro(logB[lo:hi]), _ro(startprob), _ro(transmat), tt_ro,
        float(seq_weight[0]), gamma[lo:hi], b, al, be, c, m, flag, ll, ll_p, outer_p, start_p,
    )  # fmt: skip
    n_items = 2 * nc + 2
    try:
        if 3 * T * K * K < SMALL_WORK:
            _lone_items(0, n_items, *args)
        else:
            run_dynamic(_lone_items, n_items, *args)
        if numpy_sums:
            done = counter[4] == 0
            if done:
                loglik[0] = ll[0] if ll[0] == -np.inf else sum(ll_p.tolist())  # chunk order
                np.multiply(transmat, outer_p.sum(axis=0), out=xi)  # chunks summed in order
                start[:] = start_p
        else:
            done = _lone_finish(transmat, counter, ll, ll_p, outer_p, start_p, loglik, xi, start)
    except BaseException:
        if not numpy_sums:
            _lone_tls.ws = None  # counter and partials left unread: made again
        raise
    if not done:  # rare (see _lone_posteriors): the serial coupled recursions
        _coupled_lone(
            logB, offsets, startprob, transmat, tt_ro, seq_weight, gamma, loglik, xi, start
        )


def _coupled_lone(
    logB, offsets, startprob, transmat, transmat_t, seq_weight, gamma, loglik, xi, start
):
    """The serial coupled recursions for one sequence, where the concurrent
    forward and backward cannot be used (see _lone_posteriors)."""
    K = logB.shape[1]
    outer_p = np.zeros((1, K, K))
    start_p = np.zeros((1, K))
    _fb_chunks(
        0, 1, 1, _ro(logB), _ro(offsets), _ro(startprob), _ro(transmat),
        transmat_t, _ro(seq_weight), gamma, loglik, outer_p, start_p,
    )  # fmt: skip
    np.multiply(transmat, outer_p[0], out=xi)
    start[:] = start_p[0]


def forward_backward(logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    if offsets.shape[0] == 2:
        _forward_backward_lone(
            logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start
        )
        return
    K = logB.shape[1]
    lanes = LANES if K <= LANES_MAX_K else 1
    nc = _seq_chunks((offsets.shape[0] - 1 + lanes - 1) // lanes)  # groups of batches
    outer_p = np.zeros((nc, K, K))
    start_p = np.zeros((nc, K))
    transmat_t = _ro(np.ascontiguousarray(transmat.T))
    work = 3 * logB.shape[0] * K * K  # forward, backward, transition counts
    _run(
        _fb_chunks, nc, work, nc, _ro(logB), _ro(offsets), _ro(startprob), _ro(transmat),
        transmat_t, _ro(seq_weight), gamma, loglik, outer_p, start_p,
    )  # fmt: skip
    np.multiply(transmat, outer_p.sum(axis=0), out=xi)  # groups summed in order
    start[:] = start_p.sum(axis=0)


def forward_filter(logB, offsets, startprob, transmat, filt, loglik):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _seq_chunks(offsets.shape[0] - 1)
    transmat_t = _ro(np.ascontiguousarray(transmat.T))
    K = logB.shape[1]
    _run(
        _filter_chunks, nc, logB.shape[0] * K * K,
        nc, _ro(logB), _ro(offsets), _ro(startprob), transmat_t,
        filt, loglik,
    )  # fmt: skip


def viterbi(logB, offsets, log_startprob, log_transmat, path, logprob):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _seq_chunks(offsets.shape[0] - 1)
    K = logB.shape[1]
    _run(
        _viterbi_chunks, nc, logB.shape[0] * K * K,
        nc, _ro(logB), _ro(offsets), _ro(log_startprob),
        _ro(log_transmat), path, logprob,
    )  # fmt: skip


#: The moments' per-chunk partials, kept per calling thread for the last few
#: shapes (a GMMHMM's row blocks: two) up to ``MOMENTS_KEEP_BYTES`` each, zeroed
#: by the compiled sum as it reads them: three fresh zeroed arrays every
#: iteration cost their allocation and, at LONGFULL's (20, 8, 8, 8), ~20 page
#: faults. Larger partials come with far more arithmetic per byte, and are not
#: kept (at most 16 MiB per thread stays allocated).
_moments_tls = threading.local()
MOMENT_SHAPES_KEPT = 4
MOMENTS_KEEP_BYTES = 4 << 20


def _moment_partials_kept(nc, K, D, full):
    """Zeroed ``(nk_p, sx_p, sxx_p)``: the calling thread's kept ones for this
    shape, else new ones (kept if small enough)."""
    key = (nc, K, D, full)
    kept = getattr(_moments_tls, "kept", None)
    if kept is None:
        kept = _moments_tls.kept = {}
    p = kept.get(key)
    if p is None:
        p = moment_partials(nc, K, D, full)
        if nc * K * (D + 1 + (D * D if full else D)) * 8 <= MOMENTS_KEEP_BYTES:
            if len(kept) >= MOMENT_SHAPES_KEPT:
                kept.clear()
            kept[key] = p
    return p


@njit(cache=True, nogil=True)
def _sum_moments_full(nk_p, sx_p, sxx_p, nk, sx, sxx):
    """:func:`~fastem.backends._hmm_partials.sum_moment_partials` of full
    moments, the same bits for ``K > 1`` (NumPy's ``sum(axis=0)`` of these
    shapes adds 0.0 and then each chunk in order; ``np.triu`` + its mirror adds
    0.0 to each element), and the partials zeroed for the next call. No
    fastmath: each sum in chunk order."""
    nc, K = nk_p.shape
    D = sx_p.shape[2]
    nk[:] = 0.0
    sx[:, :] = 0.0
    sxx[:, :, :] = 0.0
    for p in range(nc):
        for i in range(K):
            nk[i] += nk_p[p, i]
            nk_p[p, i] = 0.0
            for d in range(D):
                sx[i, d] += sx_p[p, i, d]
                sx_p[p, i, d] = 0.0
                for e in range(D):
                    if e >= d:  # the kernel fills the upper triangle only
                        sxx[i, d, e] += sxx_p[p, i, d, e]
                    sxx_p[p, i, d, e] = 0.0
    for i in range(K):
        for d in range(D):
            for e in range(d, D):
                v = sxx[i, d, e]
                sxx[i, d, e] = v + 0.0
                if e > d:
                    sxx[i, e, d] = 0.0 + v


@njit(cache=True, nogil=True)
def _sum_moments_diag(nk_p, sx_p, sxx_p, nk, sx, sxx):
    """:func:`_sum_moments_full` of diagonal moments (``sxx_p`` (nc, K, 1, D))."""
    nc, K = nk_p.shape
    D = sx_p.shape[2]
    nk[:] = 0.0
    sx[:, :] = 0.0
    sxx[:, :] = 0.0
    for p in range(nc):
        for i in range(K):
            nk[i] += nk_p[p, i]
            nk_p[p, i] = 0.0
            for d in range(D):
                sx[i, d] += sx_p[p, i, d]
                sxx[i, d] += sxx_p[p, i, 0, d]
                sx_p[p, i, d] = 0.0
                sxx_p[p, i, 0, d] = 0.0


def _moments(X, gamma, row_weight, shift, nk, sx, sxx, full):
    N, D = X.shape
    K = gamma.shape[1]
    nc = _row_chunks(N, K * D * D if full else K * D)
    work = N * K * (D * D if full else D)
    if K == 1:  # NumPy sums a (nc, 1) axis pairwise: its own code, its own bits
        nk_p, sx_p, sxx_p = moment_partials(nc, K, D, full)
    else:
        nk_p, sx_p, sxx_p = _moment_partials_kept(nc, K, D, full)
    try:
        _run(
            _moments_chunks, nc, work, nc, _ro(X), _ro(gamma), _ro(row_weight), _ro(shift),
            nk_p, sx_p, sxx_p, full,
        )  # fmt: skip
    except BaseException:
        _moments_tls.kept = None  # partials left unread: made again
        raise
    if K == 1:
        sum_moment_partials(nk_p, sx_p, sxx_p, full, nk, sx, sxx)  # chunks summed in order
    elif full:
        _sum_moments_full(nk_p, sx_p, sxx_p, nk, sx, sxx)
    else:
        _sum_moments_diag(nk_p, sx_p, sxx_p, nk, sx, sxx)


def moments_diag(X, gamma, row_weight, shift, nk, sx, sxx):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    _moments(X, gamma, row_weight, shift, nk, sx, sxx, False)


def moments_full(X, gamma, row_weight, shift, nk, sx, sxx):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    _moments(X, gamma, row_weight, shift, nk, sx, sxx, True)


@njit(cache=True, nogil=True)
def _sum_groups(transmat, outer_p, start_p, nk_p, sx_p, sxx_p, xi, start, nk, sx, sxx):
    """The groups' partials summed in group order (one call instead of five
    NumPy reductions, ~7 us of an HB2 iteration's serial part); ``xi = A *
    outer``. No fastmath: the order of each sum is the groups'. The partials
    are zeroed as they are read, ready for the next pass (a fit reuses them)."""
    nc, K = start_p.shape
    D = sx_p.shape[2]
    xi[:, :] = 0.0
    start[:] = 0.0
    nk[:] = 0.0
    sx[:, :] = 0.0
    sxx[:, :] = 0.0
    for g in range(nc):
        for i in range(K):
            start[i] += start_p[g, i]
            nk[i] += nk_p[g, i]
            start_p[g, i] = 0.0
            nk_p[g, i] = 0.0
            for j in range(K):
                xi[i, j] += outer_p[g, i, j]
                outer_p[g, i, j] = 0.0
            for j in range(D):
                sx[i, j] += sx_p[g, i, j]
                sxx[i, j] += sxx_p[g, i, 0, j]
                sx_p[g, i, j] = 0.0
                sxx_p[g, i, 0, j] = 0.0
    for i in range(K):
        for j in range(K):
            xi[i, j] *= transmat[i, j]


#: The fused E-step takes a shape with at least this many batches of sequences
#: (groups of the thread pool's static split); below it the separate kernels,
#: whose emissions and moments are parallel over rows, balance better (one
#: long sequence would be one group on one thread).
FUSED_MIN_BATCHES = 8


#: ``estep_diag`` takes a ``workspace`` dict after its outputs (the Cython
#: backend's does not): :func:`fastem.hmm._backend.estep_diag` passes one there.
ESTEP_DIAG_WORKSPACE = True


def _estep_diag_setup(X, offsets, seq_weight, row_weight, K):
    """What every call on these data arrays alike needs (one fit's iterations):
    the key, the pool pass's fixed arguments and the reduction's, or None where
    the shape has too few batches for the fused step."""
    N, D = X.shape
    S = offsets.shape[0] - 1
    lanes = LANES if K <= LANES_MAX_K else 1
    n_batches = (S + lanes - 1) // lanes
    if n_batches < FUSED_MIN_BATCHES:
        return None
    nc = _seq_chunks(n_batches)
    # zeroed again by ``_sum_groups`` as it reads them
    outer_p, start_p = np.zeros((nc, K, K)), np.zeros((nc, K))
    nk_p, sx_p, sxx_p = moment_partials(nc, K, D, False)
    return (
        (X, offsets, seq_weight, row_weight, K),
        N * K * (3 * K + 3 * D),  # work
        np.zeros(1, dtype=np.int64),  # the groups' counter
        nc,
        (_ro(X), _ro(offsets)),
        (_ro(seq_weight), _ro(row_weight)),
        (outer_p, start_p, nk_p, sx_p, sxx_p),
    )


def _same_data(key, X, offsets, seq_weight, row_weight, K):
    return (
        key[0] is X and key[1] is offsets and key[2] is seq_weight and key[3] is row_weight
        and key[4] == K
    )  # fmt: skip


def _ro_c(a):
    """:func:`_ro` of ``a`` as a C-contiguous array (no copy when it is one)."""
    return _ro(a if a.flags.c_contiguous else np.ascontiguousarray(a))


def estep_diag(
    X, offsets, means, prec_chol, comp_const, startprob, transmat, seq_weight, row_weight,
    shift, loglik, xi, start, nk, sx, sxx, workspace=None,
):  # fmt: skip
    """Fused E-step of a diagonal-Gaussian HMM (optional entry; see
    :func:`fastem.hmm._backend.estep_diag`), or ``False`` when the shape has
    too few batches of sequences for it (nothing written then).

    Equals, to rounding, ``log_prob_diag`` into ``logB``, then
    ``forward_backward(logB, ...)`` and ``moments_diag(X, gamma, row_weight,
    shift, nk, sx, sxx)``: ``loglik``, ``xi``, ``start``, ``nk``, ``sx``,
    ``sxx`` as those write them (X float64). Group partials summed in group
    order: the same bits on any thread count. ``workspace``, a dict the
    caller keeps across calls on the same ``X``, ``offsets``, ``seq_weight``
    and ``row_weight`` objects (a fit's iterations), holds what those calls
    share (read-only views, partials, the counter), made once; the values
    are the same with or without it. Inputs that are read-only already are
    passed as they are.
    """
    K = means.shape[0]
    ws = None if workspace is None else workspace.get("estep_diag")
    if ws is None or not _same_data(ws[0], X, offsets, seq_weight, row_weight, K):
        ws = _estep_diag_setup(X, offsets, seq_weight, row_weight, K)
        if ws is None:
            return False
        if workspace is not None:
            workspace["estep_diag"] = ws
    _, work, counter, nc, data, weights, partials = ws
    counter[0] = 0
    args = (
        counter, nc, *data, _ro_c(means), _ro_c(prec_chol), _ro(comp_const), _ro(startprob),
        _ro(transmat), *weights, _ro(shift), loglik, *partials,
    )  # fmt: skip
    try:
        if work < SMALL_WORK:
            _estep_diag_chunks(0, nc, *args)
        else:
            run_dynamic(_estep_diag_chunks, nc, *args)
    except BaseException:
        if workspace is not None:  # partials left unread: not reused
            workspace.pop("estep_diag", None)
        raise
    _sum_groups(args[8], *partials, xi, start, nk, sx, sxx)  # read-only transmat: one type
    return True


def gmm_state_logprob(comp, n_mix, out):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _row_chunks(comp.shape[0])
    _run(_gmm_state_chunks, nc, comp.size, nc, _ro(comp), n_mix, out)


def gmm_posteriors(comp, n_mix, state, gamma, row_weight, out):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _row_chunks(comp.shape[0])
    _run(
        _gmm_post_chunks, nc, comp.size,
        nc, _ro(comp), n_mix, _ro(state), _ro(gamma), _ro(row_weight), out,
    )  # fmt: skip
