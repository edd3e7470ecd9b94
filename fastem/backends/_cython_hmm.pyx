# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, infer_types=False
"""Cython/OpenMP HMM kernels: the fallback of :mod:`fastem.backends._numba_hmm`.

Same entry points, signatures and semantics (the contract is the docstring of
:mod:`fastem.hmm._kernels_numpy`): the results go into the caller's arrays.

Determinism
    Sequences are split into ``min(S, MAX_CHUNKS)`` contiguous groups and rows
    into a number of chunks fixed by the shape (the same rule as the Numba
    kernels), never by the thread count. ``prange`` hands out whole groups;
    each group accumulates its sequences (rows) in order into its own slot of
    a partials array, and the slots are summed in group order afterwards, so
    the results are bit-identical on any number of OpenMP threads.
Threads
    The OpenMP thread count is the process's (``OMP_NUM_THREADS``, or what
    ``fastem.backends._cython.set_num_threads`` sets for the calling thread);
    both extensions share the one OpenMP runtime.
Memory
    A group in flight holds the shifted emissions and normalizers of its
    longest sequence ((T, K) and (T,)); the forward variables live in the
    caller's ``gamma`` (``filt``), which the backward sweep overwrites with the
    posteriors: O(T K) per sequence in flight.
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY, exp, fmin, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import numpy as np

from fastem.backends._hmm_partials import moment_partials, sum_moment_partials

__all__ = [
    "forward_backward",
    "forward_filter",
    "viterbi",
    "moments_diag",
    "moments_full",
    "gmm_state_logprob",
    "gmm_posteriors",
]

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastem_hmm_team_size(void) {
        int n = 1;
        #pragma omp parallel
        {
            #pragma omp single
            n = omp_get_num_threads();
        }
        return n;
    }
    static int fastem_hmm_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fastem_hmm_team_size(void) { return 1; }
    static int fastem_hmm_max_threads(void) { return 1; }
    #endif

    #include <stdint.h>
    #include <string.h>

    /* exp(x) for x <= 0 (and small x > 0), 0 below -708: the branch-free
       polynomial of fastem.backends._cython (Cody-Waite reduction, degree-13
       Taylor polynomial, 2^n from the bits of the rounding shifter), so loops
       of it vectorize; about 1 ulp. */
    static inline double fastem_hmm_exp(double x) {
        const double shifter = 6755399441055744.0;  /* 1.5 * 2^52 */
        double xc = x < -708.0 ? -708.0 : x;
        double s = xc * 1.4426950408889634 + shifter;
        double n = s - shifter;
        double r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
        double p = 1.6059043836821613e-10;
        p = p * r + 2.08767569878680990e-09;
        p = p * r + 2.50521083854417188e-08;
        p = p * r + 2.75573192239858907e-07;
        p = p * r + 2.75573192239858907e-06;
        p = p * r + 2.48015873015873016e-05;
        p = p * r + 1.98412698412698413e-04;
        p = p * r + 1.38888888888888889e-03;
        p = p * r + 8.33333333333333333e-03;
        p = p * r + 4.16666666666666667e-02;
        p = p * r + 1.66666666666666667e-01;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        uint64_t b;
        memcpy(&b, &s, sizeof b);
        b = (b + 1023u) << 52;
        double scale;
        memcpy(&scale, &b, sizeof scale);
        double e = p * scale;
        return x < -708.0 ? 0.0 : e;
    }

    /* log(x) for a positive, normal, finite x: fdlibm's e_log.c (x = 2^k m,
       m in [sqrt(2)/2, sqrt(2)), f = m - 1, s = f / (2 + f)) with bit casts
       only, as the Numba kernels' log64, so loops of it vectorize; < 1 ulp. */
    static inline double fastem_hmm_log(double x) {
        uint64_t bits, fb, kb;
        double f, dk;
        memcpy(&bits, &x, sizeof bits);
        uint64_t mant = bits & 0x000FFFFFFFFFFFFFULL;
        int64_t big = mant > 0x6A09E667F3BCDULL;
        int64_t k = (int64_t)(bits >> 52) - 1023 + big;
        fb = mant | (big ? 0x3FE0000000000000ULL : 0x3FF0000000000000ULL);
        memcpy(&f, &fb, sizeof f);
        f -= 1.0;
        kb = (uint64_t)(k + (int64_t)0x4338000000000000LL);  /* int -> float by bits */
        memcpy(&dk, &kb, sizeof dk);
        dk -= 6755399441055744.0;
        double hfsq = 0.5 * f * f;
        double s = f / (2.0 + f);
        double z = s * s;
        double w = z * z;
        double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01
                    + w * 1.531383769920937332e-01));
        double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01
                    + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
        return dk * 6.93147180369123816490e-01
               - ((hfsq - (s * (hfsq + (t2 + t1)) + dk * 1.90821492927058770002e-10)) - f);
    }

    /* Sums over a moment block of n rows (n a multiple of 8) in two 4-wide
       vector accumulators per sum, added in a fixed order: vectorized without
       reassociation flags, and the same bits on every run (GNU vector
       extensions; memcpy loads carry no alignment assumption). */
    typedef double fastem_hmm_v4 __attribute__((vector_size(32)));
    static inline double fastem_hmm_hsum(fastem_hmm_v4 a, fastem_hmm_v4 b) {
        fastem_hmm_v4 c = a + b;
        return (c[0] + c[1]) + (c[2] + c[3]);
    }
    /* s1 = sum g (x - m), s2 = sum g (x - m)^2 */
    static inline void fastem_hmm_mom(const double *x, const double *g, double m,
                                      Py_ssize_t n, double *s1, double *s2) {
        fastem_hmm_v4 a0 = {0, 0, 0, 0}, a1 = a0, q0 = a0, q1 = a0, x0, x1, g0, g1;
        fastem_hmm_v4 mv = {m, m, m, m};
        for (Py_ssize_t b = 0; b < n; b += 8) {
            memcpy(&x0, x + b, sizeof x0);
            memcpy(&x1, x + b + 4, sizeof x1);
            memcpy(&g0, g + b, sizeof g0);
            memcpy(&g1, g + b + 4, sizeof g1);
            x0 -= mv;
            x1 -= mv;
            g0 *= x0;
            g1 *= x1;
            a0 += g0;
            a1 += g1;
            q0 += g0 * x0;
            q1 += g1 * x1;
        }
        *s1 = fastem_hmm_hsum(a0, a1);
        *s2 = fastem_hmm_hsum(q0, q1);
    }
    /* sum p q */
    static inline double fastem_hmm_dot(const double *p, const double *q, Py_ssize_t n) {
        fastem_hmm_v4 a0 = {0, 0, 0, 0}, a1 = a0, p0, p1, q0, q1;
        for (Py_ssize_t b = 0; b < n; b += 8) {
            memcpy(&p0, p + b, sizeof p0);
            memcpy(&p1, p + b + 4, sizeof p1);
            memcpy(&q0, q + b, sizeof q0);
            memcpy(&q1, q + b + 4, sizeof q1);
            a0 += p0 * q0;
            a1 += p1 * q1;
        }
        return fastem_hmm_hsum(a0, a1);
    }
    /* sum p q over any n: a 4-wide vector loop, then the tail, in a fixed order */
    static inline double fastem_hmm_dotn(const double *p, const double *q, Py_ssize_t n) {
        fastem_hmm_v4 a = {0, 0, 0, 0}, p0, q0;
        Py_ssize_t b = 0;
        for (; b + 4 <= n; b += 4) {
            memcpy(&p0, p + b, sizeof p0);
            memcpy(&q0, q + b, sizeof q0);
            a += p0 * q0;
        }
        double s = (a[0] + a[1]) + (a[2] + a[3]);
        for (; b < n; ++b) s += p[b] * q[b];
        return s;
    }
    """
    int fastem_hmm_team_size() noexcept nogil
    int fastem_hmm_max_threads() noexcept nogil
    double fastem_hmm_dotn(const double* p, const double* q, Py_ssize_t n) noexcept nogil
    void fastem_hmm_mom(const double* x, const double* g, double m, Py_ssize_t n, double* s1,
                        double* s2) noexcept nogil
    double fastem_hmm_dot(const double* p, const double* q, Py_ssize_t n) noexcept nogil
    double fastem_hmm_exp(double x) noexcept nogil
    double fastem_hmm_log(double x) noexcept nogil


def _exp_log(const double[::1] x):
    """The kernels' vectorizable ``exp`` and ``log`` of ``x`` (for tests)."""
    e = np.empty(x.shape[0])
    lg = np.empty(x.shape[0])
    cdef double[::1] ev = e, lv = lg
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        ev[i] = fastem_hmm_exp(x[i])
        lv[i] = fastem_hmm_log(x[i])
    return e, lg


def _team_size():
    """Threads a parallel region of this extension gets now (for tests: the
    count that ``fastem.backends._cython.set_num_threads`` set reaches here)."""
    return int(fastem_hmm_team_size())


ctypedef fused floating_x:
    float
    double

cdef double TINY = 1e-250  # same rescue threshold as the reference
cdef double EXP_CAP = 700.0

cdef enum:
    MAX_CHUNKS = 64
    MIN_CHUNK_ROWS = 1024

cdef Py_ssize_t PARTIALS_BUDGET = 4 * 1024 * 1024  # float64 values of moment partials


# A pass with less work than this (inner-loop iterations, about 0.3 ms) runs on the
# calling thread: waking an OpenMP team costs far more than such a pass on a loaded
# machine (tens of ms were measured for the mixture backend's ~30-row passes). The
# results do not depend on it (the groups and chunks do not change).
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 18


def _set_parallel_min_work(Py_ssize_t work):
    """Set the work below which passes run serial; returns the old value (tests)."""
    global PARALLEL_MIN_WORK
    old = PARALLEL_MIN_WORK
    PARALLEL_MIN_WORK = work
    return old


cdef int _threads(Py_ssize_t work, Py_ssize_t n_chunks) noexcept nogil:
    """Threads for a pass: 1 below ``PARALLEL_MIN_WORK``, never more than its chunks
    (an idle team member would only spin)."""
    if work < PARALLEL_MIN_WORK:
        return 1
    return <int>min(<Py_ssize_t>fastem_hmm_max_threads(), max(n_chunks, 1))


def _seq_chunks(Py_ssize_t n_sequences):
    """Groups of sequences: fixed by their number only (determinism)."""
    return min(n_sequences, MAX_CHUNKS)


def _row_chunks(Py_ssize_t n_rows, Py_ssize_t floats_per_chunk=0):
    """Row chunks of at least ``MIN_CHUNK_ROWS`` rows (at most ``MAX_CHUNKS``),
    fewer if their partials would pass ``PARTIALS_BUDGET``; fixed by the shape."""
    cdef Py_ssize_t c = min((n_rows + MIN_CHUNK_ROWS - 1) // MIN_CHUNK_ROWS, MAX_CHUNKS)
    return max(1, min(c, PARTIALS_BUDGET // max(floats_per_chunk, 1)))


cdef inline Py_ssize_t _lo(Py_ssize_t n, Py_ssize_t nc, Py_ssize_t c) noexcept nogil:
    return (c * n) // nc


# ------------------------------------------------------------------ forward-backward


cdef double _forward(const double* logB, Py_ssize_t T, Py_ssize_t K, const double* startprob,
                     const double* At, double* alpha, double* b, double* c,
                     double* pred) noexcept nogil:
    """Scaled forward pass of one sequence (rows of ``logB``): ``alpha`` (T, K),
    shifted emissions ``b`` (T, K), normalizers ``c`` (T,). Returns the
    log-likelihood (``-inf`` for an impossible sequence). ``At`` is the
    transposed transition matrix, so the prediction is unit-stride dot products."""
    cdef Py_ssize_t t, k
    cdef double m, m2, s, x, v, ll = 0.0
    cdef const double* row
    cdef double* a
    cdef double* bt
    for k in range(K):
        pred[k] = startprob[k]
    for t in range(T):
        row = logB + t * K
        a = alpha + t * K
        bt = b + t * K
        m = -INFINITY
        for k in range(K):
            if row[k] > m:
                m = row[k]
        if m == -INFINITY:
            return -INFINITY
        for k in range(K):  # arguments <= 0: the vectorizable exp
            bt[k] = fastem_hmm_exp(row[k] - m)
        s = 0.0
        for k in range(K):
            x = pred[k] * bt[k]
            a[k] = x
            s += x
        if s < TINY:  # predicted mass only where the emission underflows: exact shift
            m2 = -INFINITY
            for k in range(K):
                v = (log(pred[k]) if pred[k] > 0.0 else -INFINITY) + row[k]
                a[k] = v  # scratch: log pred + logB
                if v > m2:
                    m2 = v
            if m2 == -INFINITY:
                return -INFINITY
            s = 0.0
            for k in range(K):
                x = exp(a[k] - m2)
                a[k] = x
                s += x
                bt[k] = exp(fmin(row[k] - m2, EXP_CAP))
            m = m2
        c[t] = s
        for k in range(K):
            a[k] = a[k] / s
        ll += log(s) + m
        for k in range(K):  # pred = alpha_t @ A
            pred[k] = fastem_hmm_dotn(At + k * K, a, K)
    return ll


cdef void _backward(Py_ssize_t T, Py_ssize_t K, const double* A, double* gamma, const double* b,
                    const double* c, double* beta, double* v, double w,
                    double* outer) noexcept nogil:
    """Backward sweep of one sequence: ``gamma`` holds alpha on entry and the
    posteriors on exit; ``outer += w * sum_t alpha_t v_t+1^T`` with
    ``v_t+1 = b_t+1 * beta_t+1 / c_t+1`` (times A later)."""
    cdef Py_ssize_t t, i, j
    cdef double s, g, cn, wa
    cdef double* at
    cdef double* gn
    cdef const double* bn
    at = gamma + (T - 1) * K
    s = 0.0
    for i in range(K):
        s += at[i]
    for i in range(K):
        at[i] = at[i] / s
    for i in range(K):
        beta[i] = 1.0
    for t in range(T - 2, -1, -1):
        gn = gamma + (t + 1) * K  # posteriors of t+1
        bn = b + (t + 1) * K
        cn = c[t + 1]
        for j in range(K):
            # a state with zero posterior at t+1 is on no path: v is exactly 0, so an
            # inf from an unreachable state cannot turn into NaN
            v[j] = bn[j] * beta[j] / cn if gn[j] > 0.0 else 0.0
        at = gamma + t * K
        if w != 0.0:
            for i in range(K):
                wa = w * at[i]
                for j in range(K):
                    outer[i * K + j] += wa * v[j]
        for i in range(K):  # beta_t = A v_t+1
            beta[i] = fastem_hmm_dotn(A + i * K, v, K)
        s = 0.0
        for i in range(K):
            g = at[i] * beta[i]
            at[i] = g
            s += g
        for i in range(K):
            at[i] = at[i] / s


cdef int _fb_group(Py_ssize_t ch, Py_ssize_t nc, const double* logB, const int64_t* offsets,
                   Py_ssize_t S, Py_ssize_t K, const double* startprob, const double* A,
                   const double* At, const double* seq_weight, double* gamma, double* loglik,
                   double* outer_p, double* start_p) noexcept nogil:
    cdef Py_ssize_t s_lo = _lo(S, nc, ch), s_hi = _lo(S, nc, ch + 1)
    cdef Py_ssize_t s, k, lo, T, t_max = 1
    cdef double ll, w
    cdef double* outer = outer_p + ch * K * K
    cdef double* start = start_p + ch * K
    for s in range(s_lo, s_hi):
        T = offsets[s + 1] - offsets[s]
        if T > t_max:
            t_max = T
    cdef double* b = <double*>malloc((t_max * K + t_max + 3 * K) * sizeof(double))
    if b == NULL:
        return -1
    cdef double* c = b + t_max * K
    cdef double* pred = c + t_max
    cdef double* beta = pred + K
    cdef double* v = beta + K
    for s in range(s_lo, s_hi):
        lo = offsets[s]
        T = offsets[s + 1] - lo
        ll = _forward(logB + lo * K, T, K, startprob, At, gamma + lo * K, b, c, pred)
        loglik[s] = ll
        if ll == -INFINITY:  # an impossible sequence carries no information
            memset(gamma + lo * K, 0, T * K * sizeof(double))
            continue
        w = seq_weight[s]
        _backward(T, K, A, gamma + lo * K, b, c, beta, v, w, outer)
        for k in range(K):
            start[k] += w * gamma[lo * K + k]
    free(b)
    return 0


cdef int _filter_group(Py_ssize_t ch, Py_ssize_t nc, const double* logB, const int64_t* offsets,
                       Py_ssize_t S, Py_ssize_t K, const double* startprob, const double* At,
                       double* filt, double* loglik) noexcept nogil:
    cdef Py_ssize_t s_lo = _lo(S, nc, ch), s_hi = _lo(S, nc, ch + 1)
    cdef Py_ssize_t s, lo, T, t_max = 1
    for s in range(s_lo, s_hi):
        T = offsets[s + 1] - offsets[s]
        if T > t_max:
            t_max = T
    cdef double* b = <double*>malloc((t_max * K + t_max + K) * sizeof(double))
    if b == NULL:
        return -1
    cdef double* c = b + t_max * K
    cdef double* pred = c + t_max
    for s in range(s_lo, s_hi):
        lo = offsets[s]
        T = offsets[s + 1] - lo
        loglik[s] = _forward(logB + lo * K, T, K, startprob, At, filt + lo * K, b, c, pred)
        if loglik[s] == -INFINITY:
            memset(filt + lo * K, 0, T * K * sizeof(double))
    free(b)
    return 0


cdef int _viterbi_group(Py_ssize_t ch, Py_ssize_t nc, const double* logB,
                        const int64_t* offsets, Py_ssize_t S, Py_ssize_t K,
                        const double* log_startprob, const double* log_transmat,
                        int64_t* path, double* logprob) noexcept nogil:
    cdef Py_ssize_t s_lo = _lo(S, nc, ch), s_hi = _lo(S, nc, ch + 1)
    cdef Py_ssize_t s, lo, T, t, i, j, k, arg, state, t_max = 1
    cdef double best, val
    for s in range(s_lo, s_hi):
        T = offsets[s + 1] - offsets[s]
        if T > t_max:
            t_max = T
    cdef int64_t* back = <int64_t*>malloc(t_max * K * sizeof(int64_t))
    cdef double* delta = <double*>malloc(2 * K * sizeof(double))
    if back == NULL or delta == NULL:
        free(back)
        free(delta)
        return -1
    cdef double* new = delta + K
    for s in range(s_lo, s_hi):
        lo = offsets[s]
        T = offsets[s + 1] - lo
        for k in range(K):
            delta[k] = log_startprob[k] + logB[lo * K + k]
        for t in range(1, T):
            for j in range(K):
                best = -INFINITY
                arg = 0
                for i in range(K):
                    val = delta[i] + log_transmat[i * K + j]
                    if val > best:  # strict: the first maximum wins, as np.argmax
                        best = val
                        arg = i
                new[j] = best + logB[(lo + t) * K + j]
                back[t * K + j] = arg
            for j in range(K):
                delta[j] = new[j]
        state = 0
        best = -INFINITY
        for k in range(K):
            if delta[k] > best:
                best = delta[k]
                state = k
        logprob[s] = delta[state]
        for t in range(T - 1, -1, -1):
            path[lo + t] = state
            state = back[t * K + state]
    free(back)
    free(delta)
    return 0


# ------------------------------------------------------------------ moments


cdef enum:
    MB = 64  # rows per transposed moment block (a multiple of 8): (D + K) x MB in L1


cdef int _moments_chunk(Py_ssize_t ch, Py_ssize_t nc, const floating_x* X, Py_ssize_t N,
                        Py_ssize_t D, Py_ssize_t K, const double* gamma,
                        const double* row_weight, const double* shift, double* nk_p,
                        double* sx_p, double* sxx_p, bint full) noexcept nogil:
    """Add the rows of chunk ``ch`` into its partials, in blocks of ``MB`` rows
    stored transposed ((D, MB) and (K, MB); the last block padded with zero
    weight), so the sums over rows run with unit stride in a fixed order.
    ``full`` fills the upper triangle of each (D, D) block."""
    cdef Py_ssize_t lo = _lo(N, nc, ch), hi = _lo(N, nc, ch + 1)
    cdef Py_ssize_t start, nb, r, k, i, j, b
    cdef double w, m, d, a0, a1 = 0.0, q1 = 0.0  # a1, q1: out-parameters
    cdef double* nk = nk_p + ch * K
    cdef double* sx = sx_p + ch * K * D
    cdef double* sxx = sxx_p + ch * K * (D * D if full else D)
    cdef double* buf = <double*>malloc((3 * D + K) * MB * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xt = buf
    cdef double* gt = buf + D * MB
    cdef double* dif = gt + K * MB
    cdef double* gd = dif + D * MB
    cdef double* xj
    cdef double* gk
    start = lo
    while start < hi:
        nb = min(<Py_ssize_t>MB, hi - start)
        for b in range(MB):
            r = start + b
            if b < nb:
                w = row_weight[r]
                for j in range(D):
                    xt[j * MB + b] = <double>X[r * D + j]
                for k in range(K):
                    gt[k * MB + b] = w * gamma[r * K + k]
            else:  # padding: zero weight
                for j in range(D):
                    xt[j * MB + b] = 0.0
                for k in range(K):
                    gt[k * MB + b] = 0.0
        for k in range(K):
            gk = gt + k * MB
            a0 = 0.0
            for b in range(MB):
                a0 += gk[b]
            if a0 == 0.0:  # no weight in this block (a left-right model's zeros)
                continue
            nk[k] += a0
            for j in range(D):
                m = shift[k * D + j]
                xj = xt + j * MB
                if not full:
                    fastem_hmm_mom(xj, gk, m, MB, &a1, &q1)
                    sx[k * D + j] += a1
                    sxx[k * D + j] += q1
                else:
                    for b in range(MB):
                        d = xj[b] - m
                        dif[j * MB + b] = d
                        gd[j * MB + b] = gk[b] * d
                    sx[k * D + j] += fastem_hmm_dot(gk, dif + j * MB, MB)
            if full:
                for i in range(D):
                    for j in range(i, D):
                        sxx[(k * D + i) * D + j] += fastem_hmm_dot(gd + i * MB, dif + j * MB, MB)
        start += MB
    free(buf)
    return 0


cdef int _moments_run(const floating_x[:, ::1] X, const double[:, ::1] gamma,
                      const double[::1] row_weight, const double[:, ::1] shift,
                      double[:, ::1] nk_p, double[:, :, ::1] sx_p, double[:, :, :, ::1] sxx_p,
                      Py_ssize_t nc, bint full) except -1:
    cdef Py_ssize_t N = X.shape[0], D = X.shape[1], K = gamma.shape[1], ch
    cdef int fail = 0
    if N == 0:
        return 0
    for ch in prange(nc, nogil=True, schedule="static",
                     num_threads=_threads(N * K * D * (D if full else 1), nc)):
        if _moments_chunk(ch, nc, &X[0, 0], N, D, K, &gamma[0, 0], &row_weight[0],
                          &shift[0, 0], &nk_p[0, 0], &sx_p[0, 0, 0], &sxx_p[0, 0, 0, 0],
                          full) != 0:
            fail = 1
    if fail:
        raise MemoryError()
    return 0


# ------------------------------------------------------------------ GMM-HMM


#: A state's share of its row below this is recomputed with the state's own maximum,
#: so its largest term is a normal number (well above the subnormals' 2.2e-308).
cdef double LOW_SHARE = 1e-280


cdef int _gmm_state_chunk(Py_ssize_t ch, Py_ssize_t nc, const double* comp, Py_ssize_t N,
                          Py_ssize_t K, Py_ssize_t M, double* out) noexcept nogil:
    """``out[t, k] = logsumexp_m comp[t, k*M + m]`` for the rows of chunk ``ch``,
    shifted by the row's maximum over all K*M components: one loop of
    vectorizable exponentials per row, then group sums. A state whose sum falls
    below ``LOW_SHARE`` (far below the row's best state) is redone with its own
    maximum, so the result equals the per-state shift's to rounding."""
    cdef Py_ssize_t lo = _lo(N, nc, ch), hi = _lo(N, nc, ch + 1)
    cdef Py_ssize_t C = K * M, t, k, j
    cdef double m, mk, sm
    cdef bint low
    cdef const double* row
    cdef double* o
    cdef double* e = <double*>malloc((C + K) * sizeof(double))
    if e == NULL:
        return -1
    cdef double* sk = e + C
    for t in range(lo, hi):
        row = comp + t * C
        o = out + t * K
        m = -INFINITY
        for j in range(C):
            if row[j] > m:
                m = row[j]
        if m == -INFINITY:
            for k in range(K):
                o[k] = -INFINITY
            continue
        for j in range(C):
            e[j] = fastem_hmm_exp(row[j] - m)
        low = False
        for k in range(K):
            sm = 0.0
            for j in range(M):
                sm += e[k * M + j]
            if sm < LOW_SHARE:
                low = True
                sm = LOW_SHARE  # a normal number: the fast log's domain
            sk[k] = sm
        for k in range(K):
            o[k] = m + fastem_hmm_log(sk[k])
        if not low:
            continue
        for k in range(K):
            sm = 0.0
            for j in range(M):
                sm += e[k * M + j]
            if sm >= LOW_SHARE:
                continue
            mk = -INFINITY
            for j in range(M):
                if row[k * M + j] > mk:
                    mk = row[k * M + j]
            if mk == -INFINITY:
                o[k] = -INFINITY
                continue
            sm = 0.0
            for j in range(M):
                sm += exp(row[k * M + j] - mk)
            o[k] = mk + log(sm)  # sm >= 1: its largest term is exp(0)
    free(e)
    return 0


cdef int _gmm_post_chunk(Py_ssize_t ch, Py_ssize_t nc, const double* comp, Py_ssize_t N,
                         Py_ssize_t K, Py_ssize_t M, const double* state, const double* gamma,
                         const double* row_weight, double* out) noexcept nogil:
    """``out[t, c] = w_t gamma_tk exp(comp[t, c] - state[t, k])`` for the K*M
    components c of state k, one vectorizable loop per row (the state's shift
    and weight spread over its components first); an impossible state gets 0."""
    cdef Py_ssize_t lo = _lo(N, nc, ch), hi = _lo(N, nc, ch + 1)
    cdef Py_ssize_t C = K * M, t, k, j
    cdef double g, sv, w
    cdef const double* row
    cdef double* o
    cdef double* st = <double*>malloc(2 * C * sizeof(double))
    if st == NULL:
        return -1
    cdef double* gg = st + C
    for t in range(lo, hi):
        row = comp + t * C
        o = out + t * C
        w = row_weight[t]
        for k in range(K):
            sv = state[t * K + k]
            if sv == -INFINITY:  # exp(comp - inf) = 0: never inf - inf
                sv = INFINITY
                g = 0.0
            else:
                g = w * gamma[t * K + k]
            for j in range(M):
                st[k * M + j] = sv
                gg[k * M + j] = g
        for j in range(C):
            o[j] = gg[j] * fastem_hmm_exp(row[j] - st[j])
    free(st)
    return 0


# ------------------------------------------------------------------ entry points


def _in(a, dtype=np.float64):
    """C-contiguous ``dtype`` view of an input (a copy only where needed)."""
    return np.ascontiguousarray(a, dtype=dtype)


def _out(a, dtype=np.float64):
    """A buffer the kernel can write: ``a`` itself if C-contiguous of ``dtype``,
    else a scratch array whose contents :func:`_back` copies into ``a``."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.empty(a.shape, dtype=dtype)


def _back(buf, a):
    if buf is not a:
        a[...] = buf


def forward_backward(logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    cdef const double[:, ::1] lb = _in(logB)
    cdef const int64_t[::1] off = _in(offsets, np.int64)
    cdef const double[::1] sp = _in(startprob)
    A_arr = _in(transmat)
    cdef const double[:, ::1] A = A_arr
    cdef const double[:, ::1] At = np.ascontiguousarray(A_arr.T)
    cdef const double[::1] sw = _in(seq_weight)
    g_buf, ll_buf = _out(gamma), _out(loglik)
    cdef double[:, ::1] g = g_buf
    cdef double[::1] ll = ll_buf
    cdef Py_ssize_t S = off.shape[0] - 1, K = lb.shape[1], ch
    cdef Py_ssize_t nc = _seq_chunks(S)
    outer_p = np.zeros((max(nc, 1), K, K))
    start_p = np.zeros((max(nc, 1), K))
    cdef double[:, :, ::1] op = outer_p
    cdef double[:, ::1] st = start_p
    cdef int fail = 0
    if S > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(lb.shape[0] * K * K, nc)):
            if _fb_group(ch, nc, &lb[0, 0], &off[0], S, K, &sp[0], &A[0, 0], &At[0, 0],
                         &sw[0], &g[0, 0], &ll[0], &op[0, 0, 0], &st[0, 0]) != 0:
                fail = 1
        if fail:
            raise MemoryError()
    _back(g_buf, gamma)
    _back(ll_buf, loglik)
    np.multiply(A_arr, outer_p.sum(axis=0), out=xi)  # groups summed in order
    start[:] = start_p.sum(axis=0)


def forward_filter(logB, offsets, startprob, transmat, filt, loglik):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    cdef const double[:, ::1] lb = _in(logB)
    cdef const int64_t[::1] off = _in(offsets, np.int64)
    cdef const double[::1] sp = _in(startprob)
    cdef const double[:, ::1] At = np.ascontiguousarray(_in(transmat).T)
    f_buf, ll_buf = _out(filt), _out(loglik)
    cdef double[:, ::1] f = f_buf
    cdef double[::1] ll = ll_buf
    cdef Py_ssize_t S = off.shape[0] - 1, K = lb.shape[1], ch
    cdef Py_ssize_t nc = _seq_chunks(S)
    cdef int fail = 0
    if S > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(lb.shape[0] * K * K, nc)):
            if _filter_group(ch, nc, &lb[0, 0], &off[0], S, K, &sp[0], &At[0, 0], &f[0, 0],
                             &ll[0]) != 0:
                fail = 1
        if fail:
            raise MemoryError()
    _back(f_buf, filt)
    _back(ll_buf, loglik)


def viterbi(logB, offsets, log_startprob, log_transmat, path, logprob):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    cdef const double[:, ::1] lb = _in(logB)
    cdef const int64_t[::1] off = _in(offsets, np.int64)
    cdef const double[::1] ls = _in(log_startprob)
    cdef const double[:, ::1] lt = _in(log_transmat)
    p_buf, lp_buf = _out(path, np.int64), _out(logprob)
    cdef int64_t[::1] p = p_buf
    cdef double[::1] lp = lp_buf
    cdef Py_ssize_t S = off.shape[0] - 1, K = lb.shape[1], ch
    cdef Py_ssize_t nc = _seq_chunks(S)
    cdef int fail = 0
    if S > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(lb.shape[0] * K * K, nc)):
            if _viterbi_group(ch, nc, &lb[0, 0], &off[0], S, K, &ls[0], &lt[0, 0], &p[0],
                              &lp[0]) != 0:
                fail = 1
        if fail:
            raise MemoryError()
    _back(p_buf, path)
    _back(lp_buf, logprob)


def _moments(X, gamma, row_weight, shift, nk, sx, sxx, bint full):
    X = np.ascontiguousarray(X)
    if X.dtype != np.float32:
        X = X.astype(np.float64, copy=False)
    gamma_c = _in(gamma)
    N, D = X.shape
    K = gamma_c.shape[1]
    nc = _row_chunks(N, K * D * D if full else K * D)
    nk_p, sx_p, sxx_p = moment_partials(nc, K, D, full)
    if K > 0 and D > 0:
        if X.dtype == np.float32:
            _moments_run[float](X, gamma_c, _in(row_weight), _in(shift), nk_p, sx_p, sxx_p,
                                nc, full)
        else:
            _moments_run[double](X, gamma_c, _in(row_weight), _in(shift), nk_p, sx_p, sxx_p,
                                 nc, full)
    sum_moment_partials(nk_p, sx_p, sxx_p, full, nk, sx, sxx)  # chunks summed in order


def moments_diag(X, gamma, row_weight, shift, nk, sx, sxx):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    _moments(X, gamma, row_weight, shift, nk, sx, sxx, False)


def moments_full(X, gamma, row_weight, shift, nk, sx, sxx):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    _moments(X, gamma, row_weight, shift, nk, sx, sxx, True)


def gmm_state_logprob(comp, Py_ssize_t n_mix, out):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    cdef const double[:, ::1] c = _in(comp)
    o_buf = _out(out)
    cdef double[:, ::1] o = o_buf
    cdef Py_ssize_t N = c.shape[0], K = o.shape[1], ch
    cdef Py_ssize_t nc = _row_chunks(N)
    cdef int fail = 0
    if N > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(N * K * n_mix, nc)):
            if _gmm_state_chunk(ch, nc, &c[0, 0], N, K, n_mix, &o[0, 0]) != 0:
                fail = 1
        if fail:
            raise MemoryError()
    _back(o_buf, out)


def gmm_posteriors(comp, Py_ssize_t n_mix, state, gamma, row_weight, out):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    cdef const double[:, ::1] c = _in(comp)
    cdef const double[:, ::1] stt = _in(state)
    cdef const double[:, ::1] g = _in(gamma)
    cdef const double[::1] rw = _in(row_weight)
    o_buf = _out(out)
    cdef double[:, ::1] o = o_buf
    cdef Py_ssize_t N = c.shape[0], K = stt.shape[1], ch
    cdef Py_ssize_t nc = _row_chunks(N)
    cdef int fail = 0
    if N > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(N * K * n_mix, nc)):
            if _gmm_post_chunk(ch, nc, &c[0, 0], N, K, n_mix, &stt[0, 0], &g[0, 0], &rw[0],
                               &o[0, 0]) != 0:
                fail = 1
        if fail:
            raise MemoryError()
    _back(o_buf, out)
