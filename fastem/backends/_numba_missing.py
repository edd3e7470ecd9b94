"""Numba missing-data (NaN) kernels, re-exported by :mod:`fastem.backends._numba`.

Same signatures and semantics as the NumPy reference (the "Missing values"
section of the kernel contract in :mod:`fastem.backends._numpy`).

Design
------
Chunks (determinism)
    The ``rows`` array (already grouped by pattern) is split into a number of
    contiguous chunks that depends only on its length and the size of the
    partial statistics (``_n_chunks`` of :mod:`._numba`); the threads of
    ``run_chunks`` (:mod:`._numba`) take contiguous ranges of iterations, each
    chunk writes its own partials, and they are summed in chunk order, so
    results are bit-identical whatever the thread count. Iterations
    map to chunks strided across ``rows`` (:func:`_spread`) so that threads
    share the costly rare patterns, and ``_gather`` prefetches rows ahead
    (rows of one pattern lie anywhere in ``X``).
Pattern segments (full)
    Inside a chunk, each run of rows sharing a pattern (a segment, bounded by
    ``pattern_ptr`` and the chunk) gets its conditionals from the float64
    precisions ``L``: the Cholesky ``R`` of ``L[m, m]``,
    ``C = inv(L[m, m]) = R^-T R^-1``, ``B = -C L[m, o]`` (two triangular solves)
    and the constant shift ``|m|/2 log 2pi - sum log diag R``, once per
    segment, never per row. They are computed for all components at once, the
    component being the innermost (vectorized) axis: with patterns of a few
    rows this set-up is a large share of the pass, and k short scalar loops
    cost several times more.
Blocks (vectorization, full)
    Rows are gathered in blocks of ``B`` into a transposed ``(d, B)`` scratch,
    as in the complete-data kernels, so inner loops run over rows with unit
    stride. A segment's whole blocks use its conditionals directly; what is
    left of it (fewer than ``B`` rows) joins a shared block with the leftovers
    of the next segments, each with its own conditionals, so the many rare
    patterns (1-10 rows each for 10% missing at random in 16 features) still
    run full-width loops. Per component: ``y = x - mu``, then ``y[m] = B y[o]``
    (over columns, four observed coordinates per pass; or, for segments of
    fewer than ``_NARROW`` rows, per row for all components at once, computed
    once before the component loop, and for segments with fewer rows than
    observed coordinates as ``-inv(L[m, m]) (L[m, o] y[o])`` by triangular
    solves with ``R``, ``B`` never formed), the triangular Mahalanobis ``||y U||^2``
    and the upper-triangle statistics of the complete-data kernels, plus
    ``(sum of r over the segment) C`` in the ``(m, m)`` block. ``y`` is rebuilt
    for the statistics rather than kept for all components.
Diagonal
    A pattern changes only the log-density constant and ``C``, and
    ``y[m] = 0``: blocks run over consecutive rows across pattern boundaries,
    NaN entries are skipped (as zeros) in the Mahalanobis and the statistics,
    and each segment in a block adds its constant and ``C = 1 / prec_chol^2``.
Tied
    One precision ``L`` shared by every component (``em_pass_missing_tied``):
    rows are gathered into blocks with zeros at their missing coordinates;
    when a block is full its patterns get their conditionals together, eight
    at a time with the pattern as the innermost (vector) axis, in order of
    their number of missing coordinates (one Cholesky factor of ``L[m, m]``
    and ``C`` per pattern, then the regressions ``delta_k = C h_k[m]`` of all
    components at once, component innermost). Each row is then completed by
    its conditional mean at the centre of the means and projected once, the
    Mahalanobis distances are the complete-data tied ones minus a per-pattern
    correction, and the statistics are one ``d^2`` product per row plus
    per-pattern ``(m, m)`` terms (algebra in :mod:`fastem.backends._tied`).
    Rows of short segments share blocks as above; a segment cut by a block
    continues in the next.
Precision
    Everything is float64 whatever the dtype of ``X`` (as in the reference,
    which widens ``x`` and ``mu`` before subtracting): ``y[m]`` is a float64
    regression anyway.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _numba_cache  # registers the cache locator; its compiler has the typing memo

__all__ = [
    "em_pass_missing_full",
    "em_pass_missing_diag",
    "log_prob_missing_full",
    "log_prob_missing_diag",
    "em_pass_missing_tied",
    "log_prob_missing_tied",
]

_LOG_2PI = math.log(2.0 * math.pi)

# Same flags as the complete-data kernels: never nnan/ninf (NaN marks missing).
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
_JIT = dict(cache=True, nogil=True, fastmath=_FASTMATH, pipeline_class=_numba_cache.Compiler)


# Rows ahead that _gather asks the CPU to fetch: rows of one pattern lie
# anywhere in X, and waiting for each one from memory cost ~7% of a W2 pass.
_PREFETCH_AHEAD = 16
_PREFETCH_NAME = "llvm.prefetch.p0" if _llvm.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch(typingctx, X, i, j):
    """Hint the CPU to fetch the cache line of ``X[i, j]`` (read, keep in cache)."""
    if not isinstance(X, types.Array) or X.ndim != 2:
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1], args[2]], wraparound=False
        )
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH_NAME)
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(X, i, j), codegen


# ------------------------------------------------------------------ per pattern


@njit(**_JIT)
def _pattern(X, row, miss, obs):
    """Missing/observed coordinates of ``X[row]`` into ``miss``/``obs``;
    returns ``(n_missing, n_observed)``."""
    nm = 0
    no = 0
    for j in range(X.shape[1]):
        if np.isnan(X[row, j]):
            miss[nm] = j
            nm += 1
        else:
            obs[no] = j
            no += 1
    return nm, no


@njit(**_JIT)
def _segment_start(ptr, lo):
    """Index of the pattern holding position ``lo`` of ``rows``."""
    p = np.searchsorted(ptr, lo, side="right") - 1
    return max(p, 0)


@njit(**_JIT)
def _conditionals(prec_t, comp_const, miss, nm, obs, no, R, Ri, det, cond, off, shk, q,
                  factored):  # fmt: skip
    """Conditionals of one pattern under every component at once.

    ``prec_t`` (d, d, k) holds the float64 precisions with the component last,
    so every loop below runs over components with unit stride (vectorized)
    instead of repeating short scalar loops k times. Writes, component in the
    last axis, ``C = inv(L[m, m])`` (nm, nm) row-major to rows
    ``off:off + nm * nm`` of ``cond`` and ``B = -inv(L[m, m]) L[m, o]`` (nm, no)
    to the next ``nm * no`` rows, and ``comp_const + nm/2 log 2pi - 1/2 log det
    L[m, m]`` to ``shk[:, q]``. ``R``/``Ri`` (d, d, k) receive the lower Cholesky factor
    of ``L[m, m]`` and its inverse; ``det`` (k,) is scratch.

    With ``factored`` (a segment with fewer rows than observed coordinates),
    ``B`` is not formed: forming it costs ``nm^2 no`` per component, applying
    its factors to a row ``nm no + nm^2``. ``R`` (nm, nm), its diagonal
    replaced by the inverse pivots, takes the place of ``B`` (see
    :func:`_narrow_cond_means`).
    """
    k = comp_const.shape[0]
    if nm == 0:
        for kk in range(k):
            shk[kk, q] = comp_const[kk]
        return
    for i in range(nm):
        mi = miss[i]
        for j in range(i + 1):
            mj = miss[j]
            for kk in range(k):
                R[i, j, kk] = prec_t[mi, mj, kk]
            for t in range(j):
                for kk in range(k):
                    R[i, j, kk] -= R[i, t, kk] * R[j, t, kk]
            if i == j:
                for kk in range(k):
                    r = math.sqrt(R[i, i, kk])  # NaN unless L[m, m] is positive definite
                    R[i, i, kk] = r
                    Ri[i, i, kk] = 1.0 / r
            else:
                for kk in range(k):
                    R[i, j, kk] *= Ri[j, j, kk]
    # log det from the product of the pivots (one log per component), from
    # their logs only where the product over- or underflows
    for kk in range(k):
        det[kk] = 1.0
    for i in range(nm):
        for kk in range(k):
            det[kk] *= R[i, i, kk]
    for kk in range(k):
        v = det[kk]
        if 1e-300 < v < math.inf:
            half_logdet = math.log(v)
        else:
            half_logdet = 0.0
            for i in range(nm):
                half_logdet += math.log(R[i, i, kk])
        shk[kk, q] = comp_const[kk] + (0.5 * nm * _LOG_2PI - half_logdet)
    if factored:
        for i in range(nm):
            for j in range(i):
                for kk in range(k):
                    cond[off + nm * nm + i * nm + j, kk] = R[i, j, kk]
            for kk in range(k):
                cond[off + nm * nm + i * nm + i, kk] = Ri[i, i, kk]
    else:
        # B by two triangular solves: W = R^-1 L[m, o], then R^T B = -W bottom-up
        for i in range(nm):
            bi = off + nm * nm + i * no
            mi = miss[i]
            for t in range(no):
                ot = obs[t]
                for kk in range(k):
                    cond[bi + t, kk] = prec_t[mi, ot, kk]
            for j in range(i):
                bj = off + nm * nm + j * no
                for t in range(no):
                    for kk in range(k):
                        cond[bi + t, kk] -= R[i, j, kk] * cond[bj + t, kk]
            for t in range(no):
                for kk in range(k):
                    cond[bi + t, kk] *= Ri[i, i, kk]
        for i in range(nm - 1, -1, -1):
            bi = off + nm * nm + i * no
            for j in range(i + 1, nm):
                bj = off + nm * nm + j * no
                for t in range(no):
                    for kk in range(k):
                        cond[bi + t, kk] += R[j, i, kk] * cond[bj + t, kk]
            for t in range(no):
                for kk in range(k):
                    cond[bi + t, kk] *= -Ri[i, i, kk]
    # C = R^-T R^-1 (inverse of R first, column by column)
    for j in range(nm):
        for i in range(j + 1, nm):
            for kk in range(k):
                Ri[i, j, kk] = 0.0
            for t in range(j, i):
                for kk in range(k):
                    Ri[i, j, kk] -= R[i, t, kk] * Ri[t, j, kk]
            for kk in range(k):
                Ri[i, j, kk] *= Ri[i, i, kk]
    ci = off
    for i in range(nm):
        for j in range(i, nm):
            cij = ci + i * nm + j
            cji = ci + j * nm + i
            for kk in range(k):
                cond[cij, kk] = 0.0
            for t in range(j, nm):
                for kk in range(k):
                    cond[cij, kk] += Ri[t, i, kk] * Ri[t, j, kk]
            for kk in range(k):
                cond[cji, kk] = cond[cij, kk]


# ------------------------------------------------------------------ per block


@njit(**_JIT)
def _gather(X, w, rows, start, cnt, xt, wb, rb, b0):
    """Rows ``rows[start:start + cnt]`` of ``X`` into columns ``b0..`` of
    ``xt`` (transposed), their weights into ``wb`` and indices into ``rb``."""
    d = X.shape[1]
    m = rows.shape[0]
    line = max(64 // X.itemsize, 1)  # elements per 64-byte cache line
    for b in range(cnt):
        ahead = start + b + _PREFETCH_AHEAD
        if ahead < m:  # every line of the row, the last one included
            r = rows[ahead]
            for j in range(0, d, line):
                _prefetch(X, r, j)
            _prefetch(X, r, d - 1)
        i = rows[start + b]
        for j in range(d):
            xt[j, b0 + b] = X[i, j]
        if w.shape[0]:
            wb[b0 + b] = w[i]
        rb[b0 + b] = i


@njit(**_JIT)
def _center(xt, ncol, mu, yd):
    """``yd[:, :ncol] = x - mu`` in float64 (NaN where ``x`` is missing, until
    :func:`_cond_means` overwrites it)."""
    for j in range(xt.shape[0]):
        m = np.float64(mu[j])
        for b in range(ncol):
            yd[j, b] = np.float64(xt[j, b]) - m


# Segments narrower than this get their conditional means for all components
# at once in _narrow_cond_means; wider ones per component in _cond_means.
_NARROW = 32


@njit(**_JIT)
def _narrow_cond_means(xt, b0, b1, mu_t, prec_t, cond, off, miss, nm, obs, no, factored, yo, ym):
    """``ym[b, i, :] = y[m_i]`` on columns ``b0:b1`` for all components at once
    (unit stride over them in ``cond``, ``prec_t``, ``mu_t`` (d, k), ``yo``
    (d, k) and ``ym`` (B, d, k)): a few columns are too few for vector loops
    over columns. ``y[m] = B (x[o] - mu[o])``, or with ``factored`` the same
    as ``-inv(L[m, m]) (L[m, o] (x[o] - mu[o]))`` by two triangular solves
    with the factor ``R`` stored in place of ``B`` (see :func:`_conditionals`)."""
    k = mu_t.shape[1]
    for b in range(b0, b1):
        for t in range(no):
            ot = obs[t]
            x = np.float64(xt[ot, b])
            for kk in range(k):
                yo[t, kk] = x - mu_t[ot, kk]
        for i in range(nm):
            for kk in range(k):
                ym[b, i, kk] = 0.0
            if factored:
                mi = miss[i]
                for t in range(no):
                    ot = obs[t]
                    for kk in range(k):
                        ym[b, i, kk] += prec_t[mi, ot, kk] * yo[t, kk]
            else:
                bi = off + nm * nm + i * no
                for t in range(no):
                    for kk in range(k):
                        ym[b, i, kk] += cond[bi + t, kk] * yo[t, kk]
        if not factored:
            continue
        for i in range(nm):  # R w = v
            ri = off + nm * nm + i * nm
            for j in range(i):
                for kk in range(k):
                    ym[b, i, kk] -= cond[ri + j, kk] * ym[b, j, kk]
            for kk in range(k):
                ym[b, i, kk] *= cond[ri + i, kk]
        for i in range(nm - 1, -1, -1):  # R^T y = -w
            for j in range(i + 1, nm):
                rji = off + nm * nm + j * nm + i
                for kk in range(k):
                    ym[b, i, kk] += cond[rji, kk] * ym[b, j, kk]
            for kk in range(k):
                ym[b, i, kk] *= -cond[off + nm * nm + i * nm + i, kk]


@njit(**_JIT)
def _cond_means(yd, b0, b1, cond, kk, off, miss, nm, obs, no):
    """``yd[m] = B yd[o]`` on columns ``b0:b1`` for component ``kk``, ``B``
    (nm, no) row-major in rows ``off:`` of ``cond``; four observed coordinates
    per pass over the columns."""
    # Unsigned column indices: Numba then emits no negative-index wraparound,
    # which would stop LLVM from vectorizing these loops.
    b0 = np.uint64(b0)
    b1 = np.uint64(b1)
    for i in range(nm):
        dst = miss[i]
        bi = off + nm * nm + i * no
        for b in range(b0, b1):
            yd[dst, b] = 0.0
        t = 0
        while t + 4 <= no:
            c0 = cond[bi + t, kk]
            c1 = cond[bi + t + 1, kk]
            c2 = cond[bi + t + 2, kk]
            c3 = cond[bi + t + 3, kk]
            s0 = obs[t]
            s1 = obs[t + 1]
            s2 = obs[t + 2]
            s3 = obs[t + 3]
            for b in range(b0, b1):
                v = c0 * yd[s0, b] + c1 * yd[s1, b] + c2 * yd[s2, b] + c3 * yd[s3, b]
                yd[dst, b] += v
            t += 4
        while t < no:
            c0 = cond[bi + t, kk]
            s0 = obs[t]
            for b in range(b0, b1):
                yd[dst, b] += c0 * yd[s0, b]
            t += 1


@njit(**_JIT)
def _deviations(xt, ncol, nseg, seg_lo, seg_nm, seg_no, seg_miss, seg_obs, seg_off,
                mu, cond, kk, ym, yd):  # fmt: skip
    """``yd[:, :ncol]``: the block's deviations ``y`` from component ``kk``'s
    mean, conditional means of narrow segments copied from ``ym``."""
    _center(xt, ncol, mu, yd)
    for q in range(nseg):
        nm = seg_nm[q]
        if nm == 0:
            continue
        b0 = seg_lo[q]
        b1 = seg_lo[q + 1]
        if b1 - b0 < _NARROW:
            for b in range(b0, b1):
                for i in range(nm):
                    yd[seg_miss[q, i], b] = ym[b, i, kk]
        else:
            _cond_means(yd, b0, b1, cond, kk, seg_off[q], seg_miss[q], nm,
                        seg_obs[q], seg_no[q])  # fmt: skip


@njit(**_JIT)
def _prepare_full(prec_t, comp_const, nseg, seg_nm, seg_no, seg_miss, seg_obs, seg_off,
                  seg_fact, cond, shk, R, Ri, det):  # fmt: skip
    """Conditionals of segments ``0..nseg`` (see :func:`_conditionals`)."""
    for q in range(nseg):
        _conditionals(prec_t, comp_const, seg_miss[q], seg_nm[q], seg_obs[q], seg_no[q],
                      R, Ri, det, cond, seg_off[q], shk, q, seg_fact[q])  # fmt: skip


@njit(**_JIT)
def _block_full(xt, wb, rb, ncol, nseg, seg_lo, seg_nm, seg_no, seg_miss, seg_obs, seg_off,
                seg_fact, cond, shk, means, mu_t, prec_t, prec_chol, yd, yo, ym,
                logp, acc, maha, rd, mx, s,
                nk, sx, sxx, out, fit):  # fmt: skip
    """E-step (and, with ``fit``, statistics) of a block of ``ncol`` gathered rows
    made of segments ``s`` (columns ``seg_lo[s]:seg_lo[s + 1]``) whose
    conditionals are ready in ``cond``/``shk``; returns the block's loglik."""
    k = means.shape[0]
    for q in range(nseg):
        if seg_nm[q] and seg_lo[q + 1] - seg_lo[q] < _NARROW:
            _narrow_cond_means(xt, seg_lo[q], seg_lo[q + 1], mu_t, prec_t, cond, seg_off[q],
                               seg_miss[q], seg_nm[q], seg_obs[q], seg_no[q], seg_fact[q],
                               yo, ym)  # fmt: skip
    for kk in range(k):
        _deviations(xt, ncol, nseg, seg_lo, seg_nm, seg_no, seg_miss, seg_obs, seg_off,
                    means[kk], cond, kk, ym, yd)  # fmt: skip
        for q in range(nseg):
            b0 = seg_lo[q]
            b1 = seg_lo[q + 1]
            c = shk[kk, q]
            for b in range(b0, b1):
                logp[kk, b] = c
        _tri_maha(yd, prec_chol[kk], ncol, acc, maha)
        for b in range(ncol):
            logp[kk, b] -= 0.5 * maha[b]
    if not fit:
        for b in range(ncol):
            i = rb[b]
            for kk in range(k):
                out[i, kk] = logp[kk, b]
        return 0.0
    ll = _responsibilities(logp, wb, 0, ncol, mx, s)
    for kk in range(k):
        _deviations(xt, ncol, nseg, seg_lo, seg_nm, seg_no, seg_miss, seg_obs, seg_off,
                    means[kk], cond, kk, ym, yd)  # fmt: skip
        nk[kk] += _accum_full(yd, logp[kk], ncol, rd, sx[kk], sxx[kk])
        for q in range(nseg):
            nm = seg_nm[q]
            if nm == 0:
                continue
            r = 0.0
            for b in range(seg_lo[q], seg_lo[q + 1]):
                r += logp[kk, b]
            if r == 0.0:
                continue
            # sxx[m, m] += r C on the upper triangle (miss is increasing)
            miss = seg_miss[q]
            ci = seg_off[q]
            sxx_k = sxx[kk]
            for i in range(nm):
                mi = miss[i]
                for j in range(i, nm):
                    sxx_k[mi, miss[j]] += r * cond[ci + i * nm + j, kk]
    return ll


# ------------------------------------------------------------------ per chunk


@njit(**_JIT)
def _chunks_missing_full(
    i0, i1, nc, X, w, rows, ptr, means, prec_chol, prec_t, comp_const,
    ll_p, nk_p, sx_p, sxx_p, out, fit,
):  # fmt: skip
    """Chunks ``_spread(i0:i1)`` of ``nc`` (chunk ``c`` is ``rows[c m / nc :
    (c + 1) m / nc]``): with ``fit`` chunk ``c`` adds its statistics to
    ``nk_p[c]``/``sx_p[c]``/``sxx_p[c]`` (upper triangle) and its loglik to
    ``ll_p[c]``, else the log-densities go to ``out``.

    A segment's whole blocks of ``B`` rows are processed with its conditionals
    computed once; shorter leftovers of consecutive segments are packed together
    into shared blocks (each segment's conditionals computed for that block), so
    rare patterns with a handful of rows still run full-width vector loops.
    """
    d = X.shape[1]
    k = means.shape[0]
    B = _block_rows(d)
    # rows of conditionals per shared block: up to nm * d per segment, enough
    # that blocks are rarely cut short of B rows
    cap = 2 * d * max(d, B)
    miss = np.empty(d, dtype=np.int64)
    obs = np.empty(d, dtype=np.int64)
    R = np.empty((d, d, k))
    Ri = np.empty((d, d, k))
    det = np.empty(k)
    # the segment of a long run: conditionals kept across its blocks
    l_lo = np.array([0, B], dtype=np.uint64)
    l_nm = np.empty(1, dtype=np.int64)
    l_no = np.empty(1, dtype=np.int64)
    l_miss = np.empty((1, d), dtype=np.int64)
    l_obs = np.empty((1, d), dtype=np.int64)
    l_off = np.zeros(1, dtype=np.int64)
    l_fact = np.zeros(1, dtype=np.bool_)
    l_cond = np.empty((d * d, k))
    l_shk = np.empty((k, 1))
    l_xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    l_wb = _empty_aligned(B, np.float64)
    l_rb = np.empty(B, dtype=np.int64)
    # the shared block of short segments
    seg_lo = np.zeros(B + 1, dtype=np.uint64)  # unsigned: see _cond_means
    seg_nm = np.empty(B, dtype=np.int64)
    seg_no = np.empty(B, dtype=np.int64)
    seg_miss = np.empty((B, d), dtype=np.int64)
    seg_obs = np.empty((B, d), dtype=np.int64)
    seg_off = np.empty(B, dtype=np.int64)
    seg_fact = np.empty(B, dtype=np.bool_)
    cond = np.empty((cap, k))
    shk = _empty_aligned(k * B, np.float64).reshape((k, B))
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    wb = _empty_aligned(B, np.float64)
    rb = np.empty(B, dtype=np.int64)
    # block work arrays
    yd = _empty_aligned(d * B, np.float64).reshape((d, B))
    ym = np.empty((B, d, k))
    yo = np.empty((d, k))
    mu_t = np.empty((d, k))
    for kk in range(k):
        for j in range(d):
            mu_t[j, kk] = means[kk, j]
    logp = _empty_aligned(k * B, np.float64).reshape((k, B))
    acc = _empty_aligned(B, np.float64)
    maha = _empty_aligned(B, np.float64)
    rd = _empty_aligned(B, np.float64)
    mx = _empty_aligned(B, np.float64)
    s = _empty_aligned(B, np.float64)
    m = rows.shape[0]
    n_pat = ptr.shape[0] - 1
    for it in range(i0, i1):
        c = _spread(it, nc)
        lo = c * m // nc
        hi = (c + 1) * m // nc
        nk = nk_p[c]
        sx = sx_p[c]
        sxx = sxx_p[c]
        nseg = 0
        ncol = 0
        used = 0
        ll = 0.0
        p = _segment_start(ptr, lo)
        while p < n_pat and ptr[p] < hi:
            a = max(ptr[p], lo)
            e = min(ptr[p + 1], hi)
            p += 1
            if e <= a:
                continue
            nm, no = _pattern(X, rows[ptr[p - 1]], miss, obs)
            n_long = (e - a) // B * B
            if n_long:
                l_nm[0] = nm
                l_no[0] = no
                for j in range(d):
                    l_miss[0, j] = miss[j]
                    l_obs[0, j] = obs[j]
                _prepare_full(prec_t, comp_const, 1, l_nm, l_no, l_miss, l_obs, l_off, l_fact,
                              l_cond, l_shk, R, Ri, det)  # fmt: skip
                for start in range(a, a + n_long, B):
                    _gather(X, w, rows, start, B, l_xt, l_wb, l_rb, 0)
                    ll += _block_full(
                        l_xt, l_wb, l_rb, B, 1, l_lo, l_nm, l_no, l_miss, l_obs, l_off, l_fact,
                        l_cond, l_shk, means, mu_t, prec_t, prec_chol, yd, yo, ym,
                        logp, acc, maha, rd, mx, s,
                        nk, sx, sxx, out, fit,
                    )  # fmt: skip
                a += n_long
            if a == e:
                continue
            cnt = e - a
            # few rows: apply B's factors per row rather than form B
            fact = cnt < _NARROW and cnt < no
            size = 2 * nm * nm if fact else nm * d
            if ncol + cnt > B or used + size > cap:
                _prepare_full(prec_t, comp_const, nseg, seg_nm, seg_no, seg_miss, seg_obs,
                              seg_off, seg_fact, cond, shk, R, Ri, det)  # fmt: skip
                ll += _block_full(
                    xt, wb, rb, ncol, nseg, seg_lo, seg_nm, seg_no, seg_miss, seg_obs, seg_off,
                    seg_fact, cond, shk, means, mu_t, prec_t, prec_chol, yd, yo, ym,
                    logp, acc, maha, rd, mx, s,
                    nk, sx, sxx, out, fit,
                )  # fmt: skip
                nseg = 0
                ncol = 0
                used = 0
            seg_nm[nseg] = nm
            seg_no[nseg] = no
            for j in range(d):
                seg_miss[nseg, j] = miss[j]
                seg_obs[nseg, j] = obs[j]
            seg_off[nseg] = used
            seg_fact[nseg] = fact
            _gather(X, w, rows, a, cnt, xt, wb, rb, ncol)
            ncol += cnt
            used += size
            nseg += 1
            seg_lo[nseg] = ncol
        if ncol:
            _prepare_full(prec_t, comp_const, nseg, seg_nm, seg_no, seg_miss, seg_obs,
                          seg_off, seg_fact, cond, shk, R, Ri, det)  # fmt: skip
            ll += _block_full(
                xt, wb, rb, ncol, nseg, seg_lo, seg_nm, seg_no, seg_miss, seg_obs, seg_off,
                seg_fact, cond, shk, means, mu_t, prec_t, prec_chol, yd, yo, ym,
                logp, acc, maha, rd, mx, s,
                nk, sx, sxx, out, fit,
            )  # fmt: skip
        if fit:
            ll_p[c] = ll


@njit(**_JIT)
def _diag_maha_obs(xt, nb, mu, prec, maha):
    """``maha[:nb] = sum_j ((x_j - mu_j) prec_j)^2`` over the non-NaN ``x_j``
    (float64), two features per pass."""
    d = xt.shape[0]
    for b in range(nb):
        maha[b] = 0.0
    j = 0
    while j + 2 <= d:
        m0 = np.float64(mu[j])
        m1 = np.float64(mu[j + 1])
        q0 = np.float64(prec[j])
        q1 = np.float64(prec[j + 1])
        for b in range(nb):
            t0 = (np.float64(xt[j, b]) - m0) * q0
            t1 = (np.float64(xt[j + 1, b]) - m1) * q1
            t0 = 0.0 if np.isnan(t0) else t0
            t1 = 0.0 if np.isnan(t1) else t1
            maha[b] += t0 * t0 + t1 * t1
        j += 2
    if j < d:
        m0 = np.float64(mu[j])
        q0 = np.float64(prec[j])
        for b in range(nb):
            t0 = (np.float64(xt[j, b]) - m0) * q0
            t0 = 0.0 if np.isnan(t0) else t0
            maha[b] += t0 * t0


@njit(**_JIT)
def _accum_diag_obs(xt, mu, r, nb, sx_k, sxx_k):
    """Statistics with ``y = x - mu`` where ``x`` is observed and ``y = 0`` where
    it is NaN (the conditional mean under a diagonal covariance); returns ``sum_b r_b``."""
    d = xt.shape[0]
    nk = 0.0
    for b in range(nb):
        nk += r[b]
    if nk == 0.0:
        return nk
    for j in range(d):
        m = np.float64(mu[j])
        a = 0.0
        c = 0.0
        for b in range(nb):
            y = np.float64(xt[j, b]) - m
            y = 0.0 if np.isnan(y) else y
            v = r[b] * y
            a += v
            c += v * y
        sx_k[j] += a
        sxx_k[j] += c
    return nk


@njit(**_JIT)
def _chunks_missing_diag(
    i0, i1, nc, X, w, rows, ptr, means, prec_chol, comp_const,
    ll_p, nk_p, sx_p, sxx_p, out, fit,
):  # fmt: skip
    """Diagonal-covariance counterpart of :func:`_chunks_missing_full`.

    With diagonal precisions a pattern only changes the log-density constant and
    ``C``, and ``y[m] = 0``: blocks of ``B`` consecutive rows span pattern
    boundaries, the Mahalanobis and statistics skip NaN entries, and each
    segment in a block contributes its constant and ``C``.
    """
    d = X.shape[1]
    k = means.shape[0]
    B = _block_rows(d)
    log_q = np.empty((k, d))
    inv_q2 = np.empty((k, d))
    for kk in range(k):
        for j in range(d):
            q = np.float64(prec_chol[kk, j])
            log_q[kk, j] = math.log(q)
            inv_q2[kk, j] = 1.0 / (q * q)
    miss = np.empty(d, dtype=np.int64)
    obs = np.empty(d, dtype=np.int64)
    seg_lo = np.empty(B + 1, dtype=np.uint64)  # unsigned: see _cond_means
    seg_nm = np.empty(B, dtype=np.int64)
    seg_miss = np.empty((B, d), dtype=np.int64)
    xt = _empty_aligned(d * B, X.dtype).reshape((d, B))
    wb = _empty_aligned(B, np.float64)
    rb = np.empty(B, dtype=np.int64)
    maha = _empty_aligned(B, np.float64)
    logp = _empty_aligned(k * B, np.float64).reshape((k, B))
    mx = _empty_aligned(B, np.float64)
    s = _empty_aligned(B, np.float64)
    m = rows.shape[0]
    n_pat = ptr.shape[0] - 1
    for it in range(i0, i1):
        c = _spread(it, nc)
        lo = c * m // nc
        hi = (c + 1) * m // nc
        nk = nk_p[c]
        sx = sx_p[c]
        sxx = sxx_p[c]
        ll = 0.0
        for start in range(lo, hi, B):
            nb = min(B, hi - start)
            end = start + nb
            _gather(X, w, rows, start, nb, xt, wb, rb, 0)
            nseg = 0
            p = _segment_start(ptr, start)
            while p < n_pat and ptr[p] < end:
                a = max(ptr[p], start)
                e = min(ptr[p + 1], end)
                if e > a:
                    nm, _ = _pattern(X, rows[ptr[p]], miss, obs)
                    seg_lo[nseg] = a - start
                    seg_nm[nseg] = nm
                    for i in range(nm):
                        seg_miss[nseg, i] = miss[i]
                    nseg += 1
                p += 1
            seg_lo[nseg] = nb
            for kk in range(k):
                _diag_maha_obs(xt, nb, means[kk], prec_chol[kk], maha)
                for q in range(nseg):
                    # log det L[m, m] = 2 sum log prec_chol[m] for diagonal precisions
                    ld = 0.0
                    for i in range(seg_nm[q]):
                        ld += log_q[kk, seg_miss[q, i]]
                    cq = comp_const[kk] + (0.5 * seg_nm[q] * _LOG_2PI - ld)
                    for b in range(seg_lo[q], seg_lo[q + 1]):
                        logp[kk, b] = cq - 0.5 * maha[b]
            if not fit:
                for b in range(nb):
                    i = rb[b]
                    for kk in range(k):
                        out[i, kk] = logp[kk, b]
                continue
            ll += _responsibilities(logp, wb, 0, nb, mx, s)
            for kk in range(k):
                nk[kk] += _accum_diag_obs(xt, means[kk], logp[kk], nb, sx[kk], sxx[kk])
                for q in range(nseg):
                    r = 0.0
                    for b in range(seg_lo[q], seg_lo[q + 1]):
                        r += logp[kk, b]
                    for i in range(seg_nm[q]):
                        j = seg_miss[q, i]
                        sxx[kk, j] += r * inv_q2[kk, j]
        if fit:
            ll_p[c] = ll


# ------------------------------------------------------------------ tied
# One precision L = U U^T shared by every component: one factorization of
# L[m, m] per pattern, one projection per row, one pooled scatter; see
# fastem.backends._tied for the algebra.
#
# With 20% of W5's entries missing nearly every row has a pattern of its own,
# so the per-pattern work runs once per row, in loops a few coordinates long.
# Hence: a block's patterns are factorized together when the block is full,
# eight at a time with the pattern as the innermost (vector) axis, in order of
# their number of missing coordinates (so the eight pad little); a row is
# gathered with zeros at its missing coordinates and ``L[m, :] u0`` (unit-stride
# dots) and completed by ``C`` once its pattern's ``C`` is known; the
# ``W C`` term of the ``(m, m)`` block uses the rows' weights (the sum of a
# row's responsibilities); the pool keeps only ``delta``; and the block's
# responsibilities are transposed once, so every per-entry loop over
# components (``D``, the ``(m, m)`` terms, ``s``) is unit-stride.

_LANES = 8  # patterns factorized together


@njit(**_JIT)
def _miss_coords(X, row, miss):
    """Missing coordinates of ``X[row]`` into ``miss`` (ascending, without a
    branch per coordinate); returns their number."""
    nm = 0
    for j in range(X.shape[1]):
        miss[nm] = j
        nm += np.isnan(X[row, j])
    return nm


@njit(**_JIT)
def _tied_factor_lanes(L, lm, lnm, A, Rv, Ri, s8, det8):
    """``C = inv(L[m, m])`` of ``_LANES`` patterns at once (lane ``q``: missing
    coordinates ``lm[q, :lnm[q]]``), each padded with the identity to the
    largest ``nm``: ``C`` goes to ``A[:n, :n, q]``, the Cholesky pivots'
    product to ``det8[q]`` and the Cholesky factor to ``Rv`` (lower), its
    inverse to ``Ri`` (lower). Returns ``n``. NaN in lane ``q`` unless its
    ``L[m, m]`` is positive definite."""
    n = 0
    for q in range(_LANES):
        n = max(n, lnm[q])
    for i in range(n):
        for j in range(i + 1):
            for q in range(_LANES):
                if i < lnm[q]:
                    A[i, j, q] = L[lm[q, i], lm[q, j]]
                else:
                    A[i, j, q] = 1.0 if i == j else 0.0
    for q in range(_LANES):
        det8[q] = 1.0
    for i in range(n):
        for j in range(i + 1):
            for q in range(_LANES):
                s8[q] = A[i, j, q]
            for t in range(j):
                for q in range(_LANES):
                    s8[q] -= Rv[i, t, q] * Rv[j, t, q]
            if i == j:
                for q in range(_LANES):
                    r = math.sqrt(s8[q])  # NaN unless L[m, m] is positive definite
                    Rv[i, i, q] = r
                    Ri[i, i, q] = 1.0 / r
                    det8[q] *= r
            else:
                for q in range(_LANES):
                    Rv[i, j, q] = s8[q] * Ri[j, j, q]
    for i in range(n):  # rows of R^-1; the entries of one row are independent
        for j in range(i):
            for q in range(_LANES):
                s8[q] = 0.0
            for t in range(j, i):
                for q in range(_LANES):
                    s8[q] -= Rv[i, t, q] * Ri[t, j, q]
            for q in range(_LANES):
                Ri[i, j, q] = s8[q] * Ri[i, i, q]
    for i in range(n):  # C = R^-T R^-1
        for j in range(i, n):
            for q in range(_LANES):
                s8[q] = 0.0
            for t in range(j, n):
                for q in range(_LANES):
                    s8[q] += Ri[t, i, q] * Ri[t, j, q]
            for q in range(_LANES):
                A[i, j, q] = s8[q]
                A[j, i, q] = s8[q]
    return n


@njit(**_JIT)
def _gather_tied(X, w, rows, start, cnt, xt, wb, rb, av, b0, centre, miss, nm, L, ur):
    """Rows ``rows[start:start + cnt]`` into columns ``b0..`` of ``xt`` (float64,
    transposed) as ``u0``: ``x[o] - c[o]`` and zeros at the missing coordinates
    ``m``, with ``av[col, :nm] = L[m, :] u0`` (the conditional mean at the
    centre is ``u[m] = -C av``, filled in once ``C`` is known)."""
    d = X.shape[1]
    m = rows.shape[0]
    line = max(64 // X.itemsize, 1)
    for b in range(cnt):
        ahead = start + b + _PREFETCH_AHEAD
        if ahead < m:
            r = rows[ahead]
            for j in range(0, d, line):
                _prefetch(X, r, j)
            _prefetch(X, r, d - 1)
        i = rows[start + b]
        col = b0 + b
        for j in range(d):
            y = np.float64(X[i, j]) - centre[j]
            ur[j] = 0.0 if np.isnan(y) else y
        for j in range(d):
            xt[j, col] = ur[j]
        if w.shape[0]:
            wb[col] = w[i]
        rb[col] = i
        for a in range(nm):
            mi = miss[a]
            s = 0.0
            for j in range(d):
                s += L[mi, j] * ur[j]
            av[col, a] = s


@njit(**_JIT)
def _tied_conditionals(L, h_t, comp_const, nent, e_lo, e_nm, e_miss, e_off, wb, av, xt, logp,
                       pool, g, order, cnt_nm, lm, lnm, A, Rv, Ri, s8, det8, cconst,
                       fit):  # fmt: skip
    """The conditionals of a block's entries (eight patterns at a time, by
    their number of missing coordinates): ``delta`` (nm, k) of entry ``q`` into
    ``pool[e_off[q]:]`` (``delta[i, k] = (C h_k[m])_i``, ``h_t`` is ``h`` (d, k)
    with the component last), its rows' log-density constants ``comp_const[k]
    + nm/2 log 2pi - 1/2 log det L[m, m] + 1/2 h_k[m] . delta_k`` into their
    ``logp`` columns, their missing coordinates ``u[m] = -C av`` into ``xt``,
    and with ``fit`` the term ``(sum of the rows' weights) C`` into the
    ``(m, m)`` block of ``g`` (upper triangle, off-diagonal entries twice: only
    the symmetric part of ``g`` counts)."""
    d = L.shape[0]
    k = h_t.shape[1]
    for v in range(d + 2):  # counting sort of the entries by nm (0..d)
        cnt_nm[v] = 0
    for q in range(nent):
        cnt_nm[e_nm[q] + 1] += 1
    for v in range(d + 1):
        cnt_nm[v + 1] += cnt_nm[v]
    for q in range(nent):
        v = e_nm[q]
        order[cnt_nm[v]] = q
        cnt_nm[v] += 1
    for g0 in range(0, nent, _LANES):
        for q in range(_LANES):
            lnm[q] = 0
            if g0 + q < nent:
                ent = order[g0 + q]
                nm = e_nm[ent]
                lnm[q] = nm
                for i in range(nm):
                    lm[q, i] = e_miss[ent, i]
        _tied_factor_lanes(L, lm, lnm, A, Rv, Ri, s8, det8)
        for q in range(min(_LANES, nent - g0)):
            ent = order[g0 + q]
            nm = lnm[q]
            det = det8[q]
            if 1e-300 < det < math.inf:  # one log, from the pivots' logs only on over/underflow
                half_logdet = math.log(det)
            else:
                half_logdet = 0.0
                for i in range(nm):
                    half_logdet += math.log(Rv[i, i, q])
            shift = 0.5 * nm * _LOG_2PI - half_logdet
            for kk in range(k):
                cconst[kk] = comp_const[kk] + shift
            off = e_off[ent]
            for i in range(nm):  # delta = C h[m], all components at once
                di = off + i * k
                for kk in range(k):
                    pool[di + kk] = 0.0
                for j in range(nm):
                    cij = A[i, j, q]
                    mj = lm[q, j]
                    for kk in range(k):
                        pool[di + kk] += cij * h_t[mj, kk]
                mi = lm[q, i]
                for kk in range(k):
                    cconst[kk] += 0.5 * h_t[mi, kk] * pool[di + kk]
            b0 = e_lo[ent]
            b1 = e_lo[ent + 1]
            wsum = 0.0
            for b in range(b0, b1):
                for kk in range(k):
                    logp[kk, b] = cconst[kk]
                for i in range(nm):
                    s = 0.0
                    for j in range(nm):
                        s -= A[i, j, q] * av[b, j]
                    xt[lm[q, i], b] = s
                if fit:
                    wsum += wb[b]
            if fit and wsum != 0.0:
                for i in range(nm):
                    mi = lm[q, i]
                    g[mi, mi] += wsum * A[i, i, q]
                    for j in range(i + 1, nm):
                        g[mi, lm[q, j]] += 2.0 * wsum * A[i, j, q]


@njit(**_JIT)
def _accum_sym(xt, r, sfull, nb, qd, g):
    """``g += sum_b (r_b u_b + 2 s_b) u_b^T`` (all of it, not a triangle) for the
    block's rows ``u = xt[:, b]`` and ``s = sfull[:, b]``: its symmetric part is
    ``sum_b r_b u u^T + (H + H^T)`` with ``H = sum_b u s^T``, in one ``d^2`` per
    row of vector loops (``s`` is nonzero on missing coordinates only, different
    in every pattern)."""
    d = xt.shape[0]
    for i in range(d):
        for b in range(nb):
            qd[b] = r[b] * xt[i, b] + 2.0 * sfull[i, b]
        j = 0
        while j + 4 <= d:
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for b in range(nb):
                v = qd[b]
                s0 += v * xt[j, b]
                s1 += v * xt[j + 1, b]
                s2 += v * xt[j + 2, b]
                s3 += v * xt[j + 3, b]
            g[i, j] += s0
            g[i, j + 1] += s1
            g[i, j + 2] += s2
            g[i, j + 3] += s3
            j += 4
        while j < d:
            s0 = 0.0
            for b in range(nb):
                s0 += qd[b] * xt[j, b]
            g[i, j] += s0
            j += 1


@njit(**_JIT)
def _tied_block(xt, wb, rb, av, ncol, nent, e_lo, e_nm, e_miss, e_off, pool, L, h_t, U,
                projected, comp_const, z, logp, rt, maha, rd, rsum, mx, s, sfull, sv, qv,
                order, cnt_nm, lm, lnm, A, Rv, Ri, s8, det8, cconst, nk, t, tt, g, out,
                fit):  # fmt: skip
    """E-step (and, with ``fit``, statistics) of the ``ncol`` rows ``u0`` in
    ``xt``, made of entries ``q`` (columns ``e_lo[q]:e_lo[q + 1]`` of one
    pattern, whose ``delta`` (nm, k) goes to ``e_off[q]`` in ``pool``): first
    the entries' conditionals (:func:`_tied_conditionals`), then ``D`` into
    ``tt`` (d, k) and the rest into ``nk``, ``t`` and ``g``; returns the
    block's loglik."""
    d = xt.shape[0]
    k = projected.shape[0]
    _tied_conditionals(L, h_t, comp_const, nent, e_lo, e_nm, e_miss, e_off, wb, av, xt, logp,
                       pool, g, order, cnt_nm, lm, lnm, A, Rv, Ri, s8, det8, cconst,
                       fit)  # fmt: skip
    _tri_project(xt, U, ncol, z)
    for kk in range(k):
        for b in range(ncol):
            maha[b] = 0.0
        for j in range(d):
            mj = projected[kk, j]
            for b in range(ncol):
                v = z[j, b] - mj
                maha[b] += v * v
        for b in range(ncol):
            logp[kk, b] -= 0.5 * maha[b]
    if not fit:
        for b in range(ncol):
            i = rb[b]
            for kk in range(k):
                out[i, kk] = logp[kk, b]
        return 0.0
    ll = _responsibilities(logp, wb, 0, ncol, mx, s)
    for b in range(ncol):
        rsum[b] = 0.0
    for kk in range(k):
        a = 0.0
        for b in range(ncol):
            rk = logp[kk, b]
            a += rk
            rsum[b] += rk
            rt[b, kk] = rk
        nk[kk] += a
        if a == 0.0:
            continue
        for j in range(d):
            a = 0.0
            for b in range(ncol):
                a += logp[kk, b] * xt[j, b]
            t[kk, j] += a
    for j in range(d):
        for b in range(ncol):
            sfull[j, b] = 0.0
    for q in range(nent):
        nm = e_nm[q]
        if nm == 0:
            continue
        b0 = e_lo[q]
        b1 = e_lo[q + 1]
        off = e_off[q]
        for kk in range(k):
            sv[kk] = rt[b0, kk]
        for b in range(b0 + 1, b1):
            for kk in range(k):
                sv[kk] += rt[b, kk]
        for i in range(nm):
            mi = e_miss[q, i]
            di = off + i * k
            for kk in range(k):  # D: the responsibility-weighted delta
                dv = pool[di + kk]
                qv[kk] = sv[kk] * dv
                tt[mi, kk] += qv[kk]
            for b in range(b0, b1):  # s = sum_k r_k delta_k on the missing coordinates
                a = 0.0
                for kk in range(k):
                    a += rt[b, kk] * pool[di + kk]
                sfull[mi, b] = a
            # (m, m): sum_k R_k delta delta^T; the upper triangle, off-diagonal
            # entries twice (only the symmetric part of g counts)
            a = 0.0
            for kk in range(k):
                a += qv[kk] * pool[di + kk]
            g[mi, mi] += a
            for j in range(i + 1, nm):
                dj = off + j * k
                a = 0.0
                for kk in range(k):
                    a += qv[kk] * pool[dj + kk]
                g[mi, e_miss[q, j]] += 2.0 * a
    _accum_sym(xt, rsum, sfull, ncol, rd, g)
    return ll


@njit(**_JIT)
def _chunks_missing_tied(
    i0, i1, nc, X, w, rows, ptr, centre, projected, h_t, U, L, comp_const,
    ll_p, nk_p, t_p, g_p, out, fit,
):  # fmt: skip
    """Chunks ``_spread(i0:i1)`` of ``nc`` under the shared precision: with
    ``fit`` chunk ``c`` adds ``nk``, ``t + D`` and ``G + 2 H^T`` plus the
    ``(m, m)`` terms (whose symmetric part is the pooled scatter about the
    centre, see :func:`_accum_sym`) to its partials and its loglik to
    ``ll_p[c]``, else the log-densities go to ``out``.

    Rows join the current block of ``B`` rows as entries of one pattern each
    (shared with other patterns, so patterns of one row still run full-width
    loops; a segment cut by a block boundary continues as a new entry of the
    next block); the entries' conditionals are computed when the block is full.
    """
    d = X.shape[1]
    k = projected.shape[0]
    B = _block_rows(d)
    cap = k * (d + 8 * B)  # pool: the entries' delta
    miss = np.empty(d, dtype=np.int64)
    ur = np.empty(d)
    e_lo = np.zeros(B + 1, dtype=np.int64)
    e_nm = np.empty(B, dtype=np.int64)
    e_miss = np.empty((B, d), dtype=np.int64)
    e_off = np.empty(B, dtype=np.int64)
    pool = np.empty(cap)
    xt = _empty_aligned(d * B, np.float64).reshape((d, B))
    av = np.empty((B, d))
    wb = _empty_aligned(B, np.float64)
    rb = np.empty(B, dtype=np.int64)
    z = _empty_aligned(d * B, np.float64).reshape((d, B))
    logp = _empty_aligned(k * B, np.float64).reshape((k, B))
    rt = np.empty((B, k))
    maha = _empty_aligned(B, np.float64)
    rd = _empty_aligned(B, np.float64)
    rsum = _empty_aligned(B, np.float64)
    mx = _empty_aligned(B, np.float64)
    s = _empty_aligned(B, np.float64)
    sfull = _empty_aligned(d * B, np.float64).reshape((d, B))
    sv = np.empty(k)
    qv = np.empty(k)
    tt = np.empty((d, k))
    order = np.empty(B, dtype=np.int64)
    cnt_nm = np.empty(d + 2, dtype=np.int64)
    lm = np.zeros((_LANES, d), dtype=np.int64)
    lnm = np.zeros(_LANES, dtype=np.int64)
    A = np.zeros((d, d, _LANES))
    Rv = np.zeros((d, d, _LANES))
    Ri = np.zeros((d, d, _LANES))
    s8 = np.empty(_LANES)
    det8 = np.empty(_LANES)
    cconst = np.empty(k)
    m = rows.shape[0]
    n_pat = ptr.shape[0] - 1
    for it in range(i0, i1):
        c = _spread(it, nc)
        lo = c * m // nc
        hi = (c + 1) * m // nc
        nk = nk_p[c]
        t = t_p[c]
        g = g_p[c]
        tt[:, :] = 0.0
        ncol = 0
        nent = 0
        used = 0
        ll = 0.0
        p = _segment_start(ptr, lo)
        while p < n_pat and ptr[p] < hi:
            a = max(ptr[p], lo)
            e = min(ptr[p + 1], hi)
            p += 1
            if e <= a:
                continue
            nm = _miss_coords(X, rows[ptr[p - 1]], miss)
            size = k * nm
            while a < e:
                if ncol == B or used + size > cap:
                    ll += _tied_block(
                        xt, wb, rb, av, ncol, nent, e_lo, e_nm, e_miss, e_off, pool, L, h_t,
                        U, projected, comp_const, z, logp, rt, maha, rd, rsum, mx, s, sfull,
                        sv, qv, order, cnt_nm, lm, lnm, A, Rv, Ri, s8, det8, cconst, nk, t,
                        tt, g, out, fit,
                    )  # fmt: skip
                    ncol = 0
                    nent = 0
                    used = 0
                e_nm[nent] = nm
                for i in range(nm):
                    e_miss[nent, i] = miss[i]
                e_off[nent] = used
                used += size
                cnt = min(B - ncol, e - a)
                _gather_tied(X, w, rows, a, cnt, xt, wb, rb, av, ncol, centre, miss, nm, L, ur)
                ncol += cnt
                a += cnt
                nent += 1
                e_lo[nent] = ncol
        if ncol:
            ll += _tied_block(
                xt, wb, rb, av, ncol, nent, e_lo, e_nm, e_miss, e_off, pool, L, h_t, U,
                projected, comp_const, z, logp, rt, maha, rd, rsum, mx, s, sfull, sv, qv,
                order, cnt_nm, lm, lnm, A, Rv, Ri, s8, det8, cconst, nk, t, tt, g, out, fit,
            )  # fmt: skip
        if fit:
            for kk in range(k):
                for j in range(d):
                    t[kk, j] += tt[j, kk]
            ll_p[c] = ll


# ------------------------------------------------------------------ kernels


@njit(**_JIT)
def _spread(it, nc):
    """Chunk run by iteration ``it``: iterations ``i * nc/8 + j`` take
    chunk ``8 j + i``, so the contiguous iteration ranges that 1, 2, 4 or 8
    threads get each hold every 8th chunk across all of ``rows``. Patterns are
    laid out by their bit pattern, and the costly rare ones bunch up: on W2 with
    10% missing, the second half of ``rows`` costs 1.6x the first."""
    it = np.int64(it)
    if nc % 8:
        return it
    b = nc // 8
    return (it % b) * 8 + it // b


def _component_last(precisions):
    """``precisions`` (k, d, d) as (d, d, k) float64: see :func:`_conditionals`."""
    out = np.ascontiguousarray(np.moveaxis(np.asarray(precisions, dtype=np.float64), 0, -1))
    out.flags.writeable = False
    return out


def _partials(nc, k, sxx_shape):
    return (
        np.zeros(nc),
        np.zeros((nc, k)),
        np.zeros((nc, k, sxx_shape[-1])),
        np.zeros((nc, *sxx_shape)),
    )


# Entry points the numba backend re-exports: name -> number of leading inputs
# (passed read-only so each kernel compiles once per dtype; see _numba._entry).
ENTRY_POINTS = {
    "em_pass_missing_full": 8,
    "em_pass_missing_diag": 7,
    "log_prob_missing_full": 7,
    "log_prob_missing_diag": 6,
    "em_pass_missing_tied": 7,
    "log_prob_missing_tied": 6,
}


def em_pass_missing_full(
    X, sample_weight, rows, pattern_ptr, means, prec_chol, precisions, comp_const, nk, sx, sxx
):
    """EM pass over the listed rows with NaN, full precision factors.

    See the kernel contract in :mod:`fastem.backends._numpy`.

    Returns
    -------
    loglik : float
    """
    m = rows.shape[0]
    k, d = means.shape
    nc = _n_chunks(m, k * (d * d + d + 1))
    ll_p, nk_p, sx_p, sxx_p = _partials(nc, k, (k, d, d))
    run_chunks(
        _chunks_missing_full, nc, nc, X, sample_weight, rows, pattern_ptr, means, prec_chol,
        _component_last(precisions), comp_const, ll_p, nk_p, sx_p, sxx_p, np.empty((0, k)), True,
    )  # fmt: skip
    nk[...] = nk_p.sum(axis=0)
    sx[...] = sx_p.sum(axis=0)
    _mirror_upper(sxx_p.sum(axis=0), sxx)
    return _sum_chunks(ll_p)


def em_pass_missing_diag(
    X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const, nk, sx, sxx
):
    """EM pass over the listed rows with NaN, diagonal precision factors.

    See the kernel contract in :mod:`fastem.backends._numpy`.

    Returns
    -------
    loglik : float
    """
    m = rows.shape[0]
    k, d = means.shape
    nc = _n_chunks(m, k * (2 * d + 1))
    ll_p, nk_p, sx_p, sxx_p = _partials(nc, k, (k, d))
    run_chunks(
        _chunks_missing_diag, nc, nc, X, sample_weight, rows, pattern_ptr, means, prec_chol,
        comp_const, ll_p, nk_p, sx_p, sxx_p, np.empty((0, k)), True,
    )  # fmt: skip
    nk[...] = nk_p.sum(axis=0)
    sx[...] = sx_p.sum(axis=0)
    sxx[...] = sxx_p.sum(axis=0)
    return _sum_chunks(ll_p)


def log_prob_missing_full(X, rows, pattern_ptr, means, prec_chol, precisions, comp_const, out):
    """Marginal log-densities ``out[rows[j], k]``, full precision factors."""
    nc = _n_chunks(rows.shape[0], 0)  # no partials: only the row split
    run_chunks(
        _chunks_missing_full, nc, nc, X, _NO_W, rows, pattern_ptr, means, prec_chol,
        _component_last(precisions), comp_const, *_partials(nc, 0, (0, 0, 0)), out, False,
    )  # fmt: skip


def log_prob_missing_diag(X, rows, pattern_ptr, means, prec_chol, comp_const, out):
    """Marginal log-densities ``out[rows[j], k]``, diagonal precision factors."""
    nc = _n_chunks(rows.shape[0], 0)
    run_chunks(
        _chunks_missing_diag, nc, nc, X, _NO_W, rows, pattern_ptr, means, prec_chol,
        comp_const, *_partials(nc, 0, (0, 0)), out, False,
    )  # fmt: skip


def em_pass_missing_tied(X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const, nk,
                         sx, sxx):  # fmt: skip
    """EM pass over the listed rows with NaN under one shared factor ``prec_chol``
    (d, d); ``sxx`` (d, d) receives the pooled second moments.

    See the kernel contract in :mod:`fastem.backends._numpy`.

    Returns
    -------
    loglik : float
    """
    m = rows.shape[0]
    k, d = means.shape
    centre, e, projected, h, U, L = _tied.missing_setup(means, prec_chol, comp_const)
    nc = _n_chunks(m, k * (d + 1) + d * d)
    ll_p = np.zeros(nc)
    nk_p = np.zeros((nc, k))
    t_p = np.zeros((nc, k, d))
    g_p = np.zeros((nc, d, d))
    run_chunks(
        _chunks_missing_tied, nc, nc, X, sample_weight, rows, pattern_ptr, centre, projected,
        np.ascontiguousarray(h.T), U, L, comp_const, ll_p, nk_p, t_p, g_p, np.empty((0, k)),
        True,
    )  # fmt: skip
    nk[...] = nk_p.sum(axis=0)
    _tied.missing_finish(e, nk, t_p.sum(axis=0), g_p.sum(axis=0), sx, sxx)
    return _sum_chunks(ll_p)


def log_prob_missing_tied(X, rows, pattern_ptr, means, prec_chol, comp_const, out):
    """Marginal log-densities ``out[rows[j], k]`` under one shared factor."""
    k = means.shape[0]
    centre, _, projected, h, U, L = _tied.missing_setup(means, prec_chol, comp_const)
    nc = _n_chunks(rows.shape[0], 0)
    run_chunks(
        _chunks_missing_tied, nc, nc, X, _NO_W, rows, pattern_ptr, centre, projected,
        np.ascontiguousarray(h.T), U, L, comp_const, np.zeros(nc), np.zeros((nc, k)),
        np.zeros((nc, 0, 0)), np.zeros((nc, 0, 0)), out, False,
    )  # fmt: skip


# Shared helpers of the complete-data kernels. Imported last: numba resolves
# globals at first call, and importing here lets either module be imported
# first (_numba re-exports these kernels at its end).
from . import _tied  # noqa: E402
from ._numba import (  # noqa: E402
    _NO_W,
    _accum_full,
    _block_rows,
    _empty_aligned,
    _mirror_upper,
    _n_chunks,
    _responsibilities,
    _sum_chunks,
    _tri_maha,
    _tri_project,
    run_chunks,
)
