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
Memory
    A group in flight holds the shifted emissions of its longest sequence,
    (T, K), plus (T,) normalizers; the forward variables live in ``gamma``,
    which the backward sweep overwrites with the posteriors.
Specializations
    Every entry point passes its inputs read-only (writability is part of
    Numba's array type), so each kernel compiles once (the moments once per
    dtype of X).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (registers the cache locator)
from ._numba import run_chunks
from ._numba_exp import exp64

__all__ = [
    "forward_backward",
    "forward_filter",
    "viterbi",
    "moments_diag",
    "moments_full",
    "gmm_state_logprob",
    "gmm_posteriors",
]

TINY = 1e-250  # same rescue threshold as the reference
EXP_CAP = 700.0
MAX_CHUNKS = 64
MIN_CHUNK_ROWS = 1024
BLOCK = 256  # rows per transposed scratch block in the moment kernels
PARTIALS_BUDGET = 4 * 1024 * 1024  # float64 values of per-chunk second moments (32 MiB)

_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
_JIT = dict(cache=True, nogil=True, fastmath=_FASTMATH)


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
def _forward_seq(logB, lo, hi, startprob, transmat_t, alpha, b, c):
    """Scaled forward pass of rows lo:hi; alpha (into ``alpha[lo:hi]``), the shifted
    emissions ``b[0:T]`` and normalizers ``c[0:T]``. Returns the log-likelihood.
    ``transmat_t`` is the transposed transition matrix (C-contiguous)."""
    K = logB.shape[1]
    pred = np.empty(K)
    loglik = 0.0
    for k in range(K):
        pred[k] = startprob[k]
    for t in range(hi - lo):
        row = lo + t
        m = -np.inf
        for k in range(K):
            if logB[row, k] > m:
                m = logB[row, k]
        if m == -np.inf:
            return -np.inf
        s = 0.0
        for k in range(K):
            e = exp64(logB[row, k] - m)
            b[t, k] = e
            a = pred[k] * e
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
            m = m2
        c[t] = s
        inv = 1.0 / s
        for k in range(K):
            alpha[row, k] *= inv
        loglik += math.log(s) + m
        _mat_vec(transmat_t, alpha, row, pred)  # pred = alpha_t @ A
    return loglik


@njit(**_JIT)
def _mat_vec(M, x, row, out):
    """``out = M @ x[row]``: one dot product per row of M, each a unit-stride
    reduction into a register (reassociated, so it vectorizes). About twice as
    fast at K=20 as axpy over rows into ``out``, whose loads and stores LLVM
    cannot keep in registers (``out`` may alias ``M``)."""
    K = M.shape[0]
    for j in range(K):
        acc = 0.0
        for i in range(K):
            acc += M[j, i] * x[row, i]
        out[j] = acc


@njit(**_JIT)
def _backward_seq(lo, hi, transmat, gamma, b, c, beta, outer, w):
    """Backward sweep over rows lo:hi. ``gamma`` holds alpha on entry and the
    posteriors on exit; ``b`` (the shifted emissions) is overwritten by
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
        _mat_vec(transmat, b, t + 1, beta[t])  # beta_t = A v_t+1
    t = 0
    while t + 4 <= T - 1:
        for i in range(K):
            a0 = w * gamma[lo + t, i]
            a1 = w * gamma[lo + t + 1, i]
            a2 = w * gamma[lo + t + 2, i]
            a3 = w * gamma[lo + t + 3, i]
            for j in range(K):
                outer[i, j] += (
                    a0 * b[t + 1, j] + a1 * b[t + 2, j] + a2 * b[t + 3, j] + (a3 * b[t + 4, j])
                )
        t += 4
    while t < T - 1:
        for i in range(K):
            a0 = w * gamma[lo + t, i]
            for j in range(K):
                outer[i, j] += a0 * b[t + 1, j]
        t += 1
    for t in range(T):
        row = lo + t
        s = 0.0
        for k in range(K):
            g = gamma[row, k] * beta[t, k]
            gamma[row, k] = g
            s += g
        inv = 1.0 / s
        for k in range(K):
            gamma[row, k] *= inv


@njit(**_JIT)
def _fb_chunks(
    i0, i1, n_chunks, logB, offsets, startprob, transmat, transmat_t, seq_weight,
    gamma, loglik, outer_p, start_p,
):  # fmt: skip
    """Forward-backward of the sequences of groups i0:i1; group ``ch`` adds its
    ``sum_t alpha_t v_t+1^T`` and start counts into ``outer_p[ch]``, ``start_p[ch]``."""
    K = logB.shape[1]
    S = offsets.shape[0] - 1
    for ch in range(i0, i1):
        s_lo, s_hi = _chunk_bounds(S, n_chunks, ch)
        t_max = 1
        for s in range(s_lo, s_hi):
            t_max = max(t_max, offsets[s + 1] - offsets[s])
        b = np.empty((t_max, K))
        beta = np.empty((t_max, K))
        c = np.empty(t_max)
        for s in range(s_lo, s_hi):
            lo, hi = offsets[s], offsets[s + 1]
            ll = _forward_seq(logB, lo, hi, startprob, transmat_t, gamma, b, c)
            loglik[s] = ll
            if ll == -np.inf:
                gamma[lo:hi, :] = 0.0
                continue
            w = seq_weight[s]
            _backward_seq(lo, hi, transmat, gamma, b, c, beta, outer_p[ch], w)
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
        for s in range(s_lo, s_hi):
            lo, hi = offsets[s], offsets[s + 1]
            loglik[s] = _forward_seq(logB, lo, hi, startprob, transmat_t, filt, b, c)
            if loglik[s] == -np.inf:
                filt[lo:hi, :] = 0.0


@njit(**_JIT)
def _viterbi_chunks(i0, i1, n_chunks, logB, offsets, log_startprob, log_transmat, path, logprob):
    K = logB.shape[1]
    S = offsets.shape[0] - 1
    delta = np.empty(K)
    new = np.empty(K)
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
                for j in range(K):
                    best = -np.inf
                    arg = 0
                    for i in range(K):
                        v = delta[i] + log_transmat[i, j]
                        if v > best:  # strict: the first maximum wins, as np.argmax
                            best = v
                            arg = i
                    new[j] = best + logB[lo + t, j]
                    back[t, j] = arg
                for j in range(K):
                    delta[j] = new[j]
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
def _moments_block(X, gamma, row_weight, shift, lo, nb, xt, gt, diff, gd, nk, sx, sxx, full):
    """Add one block of rows to a chunk's partials. Rows go into transposed
    (D, B) / (K, B) scratch so the inner loops run over rows with unit stride."""
    D = X.shape[1]
    K = gamma.shape[1]
    for b in range(nb):
        w = row_weight[lo + b]
        for j in range(D):
            xt[j, b] = np.float64(X[lo + b, j])
        for k in range(K):
            gt[k, b] = w * gamma[lo + b, k]
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
            for i in range(D):
                for j in range(i, D):
                    acc = 0.0
                    for b in range(nb):
                        acc += gd[i, b] * diff[j, b]
                    sxx[k, i, j] += acc


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
                X, gamma, row_weight, shift, start, nb, xt, gt, diff, gd,
                nk_p[ch], sx_p[ch], sxx_p[ch], full,
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
            for k in range(K):
                s = 0.0
                for j in range(n_mix):
                    s += e[k * n_mix + j]
                if s >= _LOW_SHARE:
                    out[t, k] = m + math.log(s)
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
                out[t, k] = mk + math.log(s)


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


def _ro(a):
    """A read-only view (no copy): one Numba specialization per dtype."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def forward_backward(logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    K = logB.shape[1]
    nc = _seq_chunks(offsets.shape[0] - 1)
    outer_p = np.zeros((nc, K, K))
    start_p = np.zeros((nc, K))
    transmat_t = _ro(np.ascontiguousarray(transmat.T))
    run_chunks(
        _fb_chunks, nc, nc, _ro(logB), _ro(offsets), _ro(startprob), _ro(transmat),
        transmat_t, _ro(seq_weight), gamma, loglik, outer_p, start_p,
    )  # fmt: skip
    np.multiply(transmat, outer_p.sum(axis=0), out=xi)  # groups summed in order
    start[:] = start_p.sum(axis=0)


def forward_filter(logB, offsets, startprob, transmat, filt, loglik):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _seq_chunks(offsets.shape[0] - 1)
    transmat_t = _ro(np.ascontiguousarray(transmat.T))
    run_chunks(
        _filter_chunks, nc, nc, _ro(logB), _ro(offsets), _ro(startprob), transmat_t,
        filt, loglik,
    )  # fmt: skip


def viterbi(logB, offsets, log_startprob, log_transmat, path, logprob):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _seq_chunks(offsets.shape[0] - 1)
    run_chunks(
        _viterbi_chunks, nc, nc, _ro(logB), _ro(offsets), _ro(log_startprob),
        _ro(log_transmat), path, logprob,
    )  # fmt: skip


def _moments(X, gamma, row_weight, shift, nk, sx, sxx, full):
    N, D = X.shape
    K = gamma.shape[1]
    nc = _row_chunks(N, K * D * D if full else K * D)
    nk_p = np.zeros((nc, K))
    sx_p = np.zeros((nc, K, D))
    sxx_p = np.zeros((nc, K, D, D) if full else (nc, K, 1, D))
    run_chunks(
        _moments_chunks, nc, nc, _ro(X), _ro(gamma), _ro(row_weight), _ro(shift),
        nk_p, sx_p, sxx_p, full,
    )  # fmt: skip
    nk[:] = nk_p.sum(axis=0)  # chunks summed in order
    sx[:] = sx_p.sum(axis=0)
    total = sxx_p.sum(axis=0)
    if full:  # the kernel fills the upper triangle: mirror it
        sxx[:] = np.triu(total) + np.swapaxes(np.triu(total, 1), 1, 2)
    else:
        sxx[:] = total[:, 0, :]


def moments_diag(X, gamma, row_weight, shift, nk, sx, sxx):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    _moments(X, gamma, row_weight, shift, nk, sx, sxx, False)


def moments_full(X, gamma, row_weight, shift, nk, sx, sxx):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    _moments(X, gamma, row_weight, shift, nk, sx, sxx, True)


def gmm_state_logprob(comp, n_mix, out):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _row_chunks(comp.shape[0])
    run_chunks(_gmm_state_chunks, nc, nc, _ro(comp), n_mix, out)


def gmm_posteriors(comp, n_mix, state, gamma, row_weight, out):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    nc = _row_chunks(comp.shape[0])
    run_chunks(
        _gmm_post_chunks, nc, nc, _ro(comp), n_mix, _ro(state), _ro(gamma), _ro(row_weight), out
    )
