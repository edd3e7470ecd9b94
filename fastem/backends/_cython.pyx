# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, infer_types=False
"""Cython/OpenMP backend: the fallback where Numba is missing.

Same five kernels, signatures and semantics as :mod:`fastem.backends._numpy`
(whose docstring is the contract). Design:

* Rows are split into a fixed number of chunks that depends only on ``n``
  (never on the thread count); each chunk writes its own partial statistics
  and the partials are summed in chunk order, so results are bit-identical
  whatever the number of threads.
* Inside a chunk rows go in blocks of ``BLOCK``; a block is stored transposed
  (feature-major) so that every inner loop runs over the block's rows with a
  constant trip count and vectorizes without ``-ffast-math``. Padding rows of
  the last block are zero with zero weight.
* Sums over rows use 8 independent 4-wide accumulators added in a fixed order
  (small C helpers with GNU vector extensions): vectorized, yet deterministic.
* ``exp`` is a branch-free polynomial that the compiler vectorizes (libm's
  scalar ``exp`` would dominate at small D).
* float32 input: distances run in float32, statistics accumulate in float64.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport log
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import numpy as np

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #ifdef _OPENMP
    #include <omp.h>
    static int fastem_openmp_enabled(void) { return 1; }
    static void fastem_set_num_threads(int n) { omp_set_num_threads(n); }
    static int fastem_get_num_threads(void) { return omp_get_max_threads(); }
    #else
    static int fastem_openmp_enabled(void) { return 0; }
    static void fastem_set_num_threads(int n) { (void)n; }
    static int fastem_get_num_threads(void) { return 1; }
    #endif

    /* exp(x) for x <= 0, 0 below -708 (where exp leaves the normal range;
       the true value, < 3e-308, is negligible as a responsibility).
       Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then a degree-13
       Taylor polynomial (truncation < 2e-16 relative), scaled by 2^n built
       from the bits of the rounding shifter. Branch-free so loops of it
       vectorize; accurate to about 1 ulp. */
    static inline double fastem_exp_nonpos(double x) {
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
        b = (b + 1023u) << 52;  /* low bits of s hold n; keep (n + 1023) << 52 */
        double scale;
        memcpy(&scale, &b, sizeof scale);
        double e = p * scale;
        return x < -708.0 ? 0.0 : e;
    }

    static void fastem_exp_inplace(double *v, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; ++i) v[i] = fastem_exp_nonpos(v[i]);
    }

    /* Row reductions over a block (n a multiple of 8): several dot products
       that share the loads of p, in 8 independent 4-wide accumulators summed in
       a fixed order. Compilers do not vectorize such reductions themselves
       without -ffast-math; GNU vector extensions make the order explicit. */
    #if defined(__GNUC__)
    typedef double fastem_v4d __attribute__((vector_size(32)));
    typedef double fastem_v4du __attribute__((vector_size(32), aligned(8), may_alias));
    #define FASTEM_LD_double(ptr) (*(const fastem_v4du *)(ptr))
    static inline double fastem_hsum(fastem_v4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }
    #define FASTEM_DOTS(T)                                                              \
    static inline void fastem_dot4_##T(const double *p, const T *q, Py_ssize_t ld,      \
                                       Py_ssize_t n, double *out) {                     \
        const T *q0 = q, *q1 = q + ld, *q2 = q + 2 * ld, *q3 = q + 3 * ld;              \
        fastem_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                              \
        fastem_v4d b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};                              \
        for (Py_ssize_t r = 0; r < n; r += 8) {                                         \
            fastem_v4d x = FASTEM_LD_double(p + r), y = FASTEM_LD_double(p + r + 4);              \
            a0 += x * FASTEM_LD_##T(q0 + r); b0 += y * FASTEM_LD_##T(q0 + r + 4);       \
            a1 += x * FASTEM_LD_##T(q1 + r); b1 += y * FASTEM_LD_##T(q1 + r + 4);       \
            a2 += x * FASTEM_LD_##T(q2 + r); b2 += y * FASTEM_LD_##T(q2 + r + 4);       \
            a3 += x * FASTEM_LD_##T(q3 + r); b3 += y * FASTEM_LD_##T(q3 + r + 4);       \
        }                                                                               \
        out[0] += fastem_hsum(a0 + b0); out[1] += fastem_hsum(a1 + b1);                 \
        out[2] += fastem_hsum(a2 + b2); out[3] += fastem_hsum(a3 + b3);                 \
    }                                                                                   \
    static inline double fastem_dot_##T(const double *p, const T *q, Py_ssize_t n) {    \
        fastem_v4d a0 = {0}, a1 = {0};                                                  \
        for (Py_ssize_t r = 0; r < n; r += 8) {                                         \
            a0 += FASTEM_LD_double(p + r) * FASTEM_LD_##T(q + r);                            \
            a1 += FASTEM_LD_double(p + r + 4) * FASTEM_LD_##T(q + r + 4);                    \
        }                                                                               \
        return fastem_hsum(a0 + a1);                                                    \
    }
    #define FASTEM_MOMENTS(T)                                                           \
    static inline void fastem_moments_##T(const double *p, const T *q, Py_ssize_t n,    \
                                          double *s1, double *s2) {                     \
        fastem_v4d a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};                              \
        for (Py_ssize_t r = 0; r < n; r += 8) {                                         \
            fastem_v4d q0 = FASTEM_LD_##T(q + r), q1 = FASTEM_LD_##T(q + r + 4);        \
            fastem_v4d t0 = FASTEM_LD_double(p + r) * q0;                               \
            fastem_v4d t1 = FASTEM_LD_double(p + r + 4) * q1;                           \
            a0 += t0; a1 += t1; b0 += t0 * q0; b1 += t1 * q1;                           \
        }                                                                               \
        *s1 += fastem_hsum(a0 + a1); *s2 += fastem_hsum(b0 + b1);                       \
    }
    static inline double fastem_sum(const double *p, Py_ssize_t n) {
        fastem_v4d a0 = {0}, a1 = {0};
        for (Py_ssize_t r = 0; r < n; r += 8) {
            a0 += FASTEM_LD_double(p + r);
            a1 += FASTEM_LD_double(p + r + 4);
        }
        return fastem_hsum(a0 + a1);
    }
    #else  /* portable scalar fallback: same results up to rounding */
    #define FASTEM_DOTS(T)                                                              \
    static inline double fastem_dot_##T(const double *p, const T *q, Py_ssize_t n) {    \
        double s = 0.0;                                                                 \
        for (Py_ssize_t r = 0; r < n; ++r) s += p[r] * (double)q[r];                    \
        return s;                                                                       \
    }                                                                                   \
    static inline void fastem_dot4_##T(const double *p, const T *q, Py_ssize_t ld,      \
                                       Py_ssize_t n, double *out) {                     \
        for (int j = 0; j < 4; ++j) out[j] += fastem_dot_##T(p, q + j * ld, n);         \
    }
    #define FASTEM_MOMENTS(T)                                                           \
    static inline void fastem_moments_##T(const double *p, const T *q, Py_ssize_t n,    \
                                          double *s1, double *s2) {                     \
        double a = 0.0, b = 0.0;                                                        \
        for (Py_ssize_t r = 0; r < n; ++r) {                                            \
            double t = p[r] * (double)q[r];                                             \
            a += t; b += t * (double)q[r];                                              \
        }                                                                               \
        *s1 += a; *s2 += b;                                                             \
    }
    static inline double fastem_sum(const double *p, Py_ssize_t n) {
        double s = 0.0;
        for (Py_ssize_t r = 0; r < n; ++r) s += p[r];
        return s;
    }
    #endif
    FASTEM_DOTS(double)
    FASTEM_MOMENTS(double)
    """
    int fastem_openmp_enabled() noexcept nogil
    void fastem_set_num_threads(int n) noexcept nogil
    int fastem_get_num_threads() noexcept nogil
    double fastem_exp_nonpos(double x) noexcept nogil
    void fastem_exp_inplace(double *v, Py_ssize_t n) noexcept nogil
    double fastem_sum(const double *p, Py_ssize_t n) noexcept nogil
    double fastem_dot_double(const double *p, const double *q, Py_ssize_t n) noexcept nogil
    void fastem_dot4_double(const double *p, const double *q, Py_ssize_t ld, Py_ssize_t n,
                            double *out) noexcept nogil
    void fastem_moments_double(const double *p, const double *q, Py_ssize_t n, double *s1,
                               double *s2) noexcept nogil


cdef enum:
    BLOCK = 32         # rows per block (multiple of 8): the K*D*BLOCK scratch stays in L1/L2
    MIN_ROWS = 2048    # rows per chunk at least: amortizes per-chunk set-up
    MAX_CHUNKS = 64    # fixed chunk count: load balance up to ~16 threads
    MIN_CAPPED = 8     # the partials budget never cuts the chunk count below this

# Per-chunk partial statistics are capped at this many doubles (32 MiB) in all,
# so large K*D^2 models do not multiply their statistics by MAX_CHUNKS.
cdef Py_ssize_t PARTIALS_BUDGET = 4 * 1024 * 1024


def openmp_enabled():
    """True if the extension was compiled with OpenMP (else kernels are serial)."""
    return bool(fastem_openmp_enabled())


def set_num_threads(int n):
    """Set the number of OpenMP threads of this backend's kernels (calling thread)."""
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    fastem_set_num_threads(n)


def get_num_threads():
    """Number of OpenMP threads the next kernel call will use (1 without OpenMP)."""
    return int(fastem_get_num_threads())


def _exp_nonpos(const double[::1] x):
    """The kernels' vectorized exp on x <= 0 (0 below -708); exposed for tests."""
    out = np.array(x, dtype=np.float64)
    cdef double[::1] o = out
    if o.shape[0]:
        fastem_exp_inplace(&o[0], o.shape[0])
    return out


cdef Py_ssize_t _n_chunks(Py_ssize_t n, Py_ssize_t floats_per_chunk) noexcept nogil:
    """Chunks for n rows: a function of the shape only (determinism), at most
    MAX_CHUNKS and at most what keeps the partials within PARTIALS_BUDGET."""
    cdef Py_ssize_t c = (n + MIN_ROWS - 1) // MIN_ROWS
    cdef Py_ssize_t cap = MAX_CHUNKS
    if floats_per_chunk > 0:
        cap = PARTIALS_BUDGET // floats_per_chunk
        if cap < MIN_CAPPED:
            cap = MIN_CAPPED
        if cap > MAX_CHUNKS:
            cap = MAX_CHUNKS
    if c > cap:
        c = cap
    return c if c > 0 else 1


# ----------------------------------------------------------------------------
# Block primitives. A block is BLOCK rows; "T" arrays are feature-major
# (d x BLOCK) so that the row loops below are the contiguous, vectorized ones.

cdef inline void _load_T(const floating* X, Py_ssize_t r0, Py_ssize_t nb, Py_ssize_t d,
                         floating* xt) noexcept nogil:
    """xt[a, r] = X[r0 + r, a]; padding rows are 0. Once per block, for all components."""
    cdef Py_ssize_t r, a
    cdef const floating* xr
    for r in range(nb):
        xr = X + (r0 + r) * d
        for a in range(d):
            xt[a * BLOCK + r] = xr[a]
    if nb < BLOCK:
        for a in range(d):
            for r in range(nb, BLOCK):
                xt[a * BLOCK + r] = 0


cdef inline void _center(const floating* xt, Py_ssize_t d, const floating* mean,
                         floating* ct) noexcept nogil:
    """ct[a, r] = xt[a, r] - mean[a] (padding rows hold -mean: their weight is 0)."""
    cdef Py_ssize_t r, a
    cdef floating m
    for a in range(d):
        m = mean[a]
        for r in range(BLOCK):
            ct[a * BLOCK + r] = xt[a * BLOCK + r] - m


cdef inline void _maha_full(const floating* ct, Py_ssize_t d, const floating* U,
                            floating* y, floating* maha) noexcept nogil:
    """maha[r] = ||ct[:, r] @ U||^2 with U upper triangular (y_j needs ct_0..ct_j)."""
    cdef Py_ssize_t r, i, j
    cdef floating u0, u1, u2, u3
    cdef const floating* c0
    for r in range(BLOCK):
        maha[r] = 0
    for j in range(d):
        u0 = U[j]
        for r in range(BLOCK):
            y[r] = ct[r] * u0
        # four inputs per pass over y: one load/store of y per four FMAs
        i = 1
        while i + 3 <= j:
            u0 = U[i * d + j]
            u1 = U[(i + 1) * d + j]
            u2 = U[(i + 2) * d + j]
            u3 = U[(i + 3) * d + j]
            c0 = ct + i * BLOCK
            for r in range(BLOCK):
                y[r] = (y[r] + c0[r] * u0 + c0[BLOCK + r] * u1
                        + c0[2 * BLOCK + r] * u2 + c0[3 * BLOCK + r] * u3)
            i += 4
        while i <= j:
            u0 = U[i * d + j]
            c0 = ct + i * BLOCK
            for r in range(BLOCK):
                y[r] = y[r] + c0[r] * u0
            i += 1
        for r in range(BLOCK):
            maha[r] = maha[r] + y[r] * y[r]


cdef inline void _maha_diag(const floating* ct, Py_ssize_t d, const floating* p,
                            floating* maha) noexcept nogil:
    cdef Py_ssize_t r, a
    cdef floating p0, p1, t0, t1
    cdef const floating* c
    for r in range(BLOCK):
        maha[r] = 0
    a = 0
    while a + 2 <= d:  # two features per pass over maha
        p0 = p[a]
        p1 = p[a + 1]
        c = ct + a * BLOCK
        for r in range(BLOCK):
            t0 = c[r] * p0
            t1 = c[BLOCK + r] * p1
            maha[r] = maha[r] + t0 * t0 + t1 * t1
        a += 2
    if a < d:
        p0 = p[a]
        c = ct + a * BLOCK
        for r in range(BLOCK):
            t0 = c[r] * p0
            maha[r] = maha[r] + t0 * t0


cdef inline double _responsibilities(double* lp, Py_ssize_t K, Py_ssize_t nb, const double* w,
                                     double* mx, double* inv) noexcept nogil:
    """lp (K x BLOCK) log-densities -> responsibilities times weight, in place.

    Returns sum_r w[r] * logsumexp_k lp[k, r] over the nb real rows.
    """
    cdef Py_ssize_t r, k
    cdef double v, s, ll = 0.0
    cdef double* row
    for r in range(BLOCK):
        mx[r] = lp[r]
    for k in range(1, K):
        row = lp + k * BLOCK
        for r in range(BLOCK):
            v = row[r]
            mx[r] = v if v > mx[r] else mx[r]
    for k in range(K):
        row = lp + k * BLOCK
        for r in range(BLOCK):
            row[r] = row[r] - mx[r]
    fastem_exp_inplace(lp, K * BLOCK)
    for r in range(BLOCK):
        inv[r] = lp[r]
    for k in range(1, K):
        row = lp + k * BLOCK
        for r in range(BLOCK):
            inv[r] = inv[r] + row[r]
    for r in range(nb):
        s = inv[r]
        if w[r] != 0.0:  # zero-weight rows contribute nothing, even if non-finite
            ll += w[r] * (mx[r] + log(s))
            inv[r] = w[r] / s
        else:
            inv[r] = 0.0
    for r in range(nb, BLOCK):
        inv[r] = 0.0
    for k in range(K):
        row = lp + k * BLOCK
        for r in range(BLOCK):  # select, not product: 0 * nan would leak from w = 0 rows
            row[r] = row[r] * inv[r] if inv[r] != 0.0 else 0.0
    return ll


cdef inline void _accumulate(const double* resp, const floating* ct, Py_ssize_t d, bint full,
                             double* pw, double* cd, double* nk, double* sx,
                             double* sxx) noexcept nogil:
    """Add one component's block statistics: nk, sx (d), sxx (d x d upper, or d).

    pw (d x BLOCK) receives resp * centred block; for float32 input cd receives the
    centred block widened once to float64 (widening inside the dot products
    costs registers and time), for float64 it is unused.
    """
    cdef Py_ssize_t r, a, b
    cdef double* pa
    cdef const double* cx
    cdef double rsum = fastem_sum(resp, BLOCK)
    if rsum == 0.0:  # responsibilities are >= 0: nothing to add
        return
    nk[0] += rsum
    if floating is double:
        cx = ct
    else:
        for a in range(d * BLOCK):
            cd[a] = <double>ct[a]
        cx = cd
    if not full:  # one pass per feature: sx and the diagonal of sxx together
        for a in range(d):
            fastem_moments_double(resp, cx + a * BLOCK, BLOCK, sx + a, sxx + a)
        return
    for a in range(d):
        pa = pw + a * BLOCK
        for r in range(BLOCK):
            pa[r] = resp[r] * cx[a * BLOCK + r]
    for a in range(d):
        sx[a] += fastem_sum(pw + a * BLOCK, BLOCK)
    # upper triangle only (mirrored after the reduction), 4 columns at a time
    for a in range(d):
        pa = pw + a * BLOCK
        b = a
        while b + 4 <= d:
            fastem_dot4_double(pa, cx + b * BLOCK, BLOCK, BLOCK, sxx + a * d + b)
            b += 4
        while b < d:
            sxx[a * d + b] += fastem_dot_double(pa, cx + b * BLOCK, BLOCK)
            b += 1


# ----------------------------------------------------------------------------
# Chunk workers: run on one thread, write only their own partials.

cdef double _em_chunk(const floating* X, const double* w, Py_ssize_t r0, Py_ssize_t r1,
                      Py_ssize_t d, Py_ssize_t K, const floating* means, const floating* pc,
                      const double* cc, bint full, double* nk, double* sx, double* sxx,
                      int* err) noexcept nogil:
    cdef Py_ssize_t dd = d * d if full else d
    cdef Py_ssize_t start, nb, k, r
    cdef double ll = 0.0
    cdef floating* ct = <floating*>malloc((K + 1) * d * BLOCK * sizeof(floating))
    cdef floating* y = <floating*>malloc(2 * BLOCK * sizeof(floating))
    cdef double* lp = <double*>malloc(K * BLOCK * sizeof(double))
    cdef floating* xt
    cdef double* pw = <double*>malloc((2 * d + 2) * BLOCK * sizeof(double))
    cdef floating* maha
    cdef double* mx
    cdef double* inv
    if ct == NULL or y == NULL or lp == NULL or pw == NULL:
        err[0] = 1
    else:
        maha = y + BLOCK
        xt = ct + K * d * BLOCK
        mx = pw + 2 * d * BLOCK
        inv = mx + BLOCK
        memset(nk, 0, K * sizeof(double))
        memset(sx, 0, K * d * sizeof(double))
        memset(sxx, 0, K * dd * sizeof(double))
        start = r0
        while start < r1:
            nb = r1 - start if r1 - start < BLOCK else BLOCK
            _load_T(X, start, nb, d, xt)
            for k in range(K):
                _center(xt, d, means + k * d, ct + k * d * BLOCK)
                if full:
                    _maha_full(ct + k * d * BLOCK, d, pc + k * d * d, y, maha)
                else:
                    _maha_diag(ct + k * d * BLOCK, d, pc + k * d, maha)
                for r in range(BLOCK):
                    lp[k * BLOCK + r] = cc[k] - 0.5 * <double>maha[r]
            ll += _responsibilities(lp, K, nb, w + start, mx, inv)
            for k in range(K):
                _accumulate(lp + k * BLOCK, ct + k * d * BLOCK, d, full, pw, pw + d * BLOCK,
                            nk + k, sx + k * d, sxx + k * dd)
            start += BLOCK
    free(ct)
    free(y)
    free(lp)
    free(pw)
    return ll


cdef void _logprob_chunk(const floating* X, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d,
                         Py_ssize_t K, const floating* means, const floating* pc,
                         const double* cc, bint full, double* out, int* err) noexcept nogil:
    cdef Py_ssize_t start, nb, k, r
    cdef floating* ct = <floating*>malloc(2 * d * BLOCK * sizeof(floating))
    cdef floating* y = <floating*>malloc(2 * BLOCK * sizeof(floating))
    cdef floating* maha
    cdef floating* xt
    cdef double ck
    if ct == NULL or y == NULL:
        err[0] = 1
    else:
        maha = y + BLOCK
        xt = ct + d * BLOCK
        start = r0
        while start < r1:
            nb = r1 - start if r1 - start < BLOCK else BLOCK
            _load_T(X, start, nb, d, xt)
            for k in range(K):
                _center(xt, d, means + k * d, ct)
                if full:
                    _maha_full(ct, d, pc + k * d * d, y, maha)
                else:
                    _maha_diag(ct, d, pc + k * d, maha)
                ck = cc[k]
                for r in range(nb):
                    out[(start + r) * K + k] = ck - 0.5 * <double>maha[r]
            start += BLOCK
    free(ct)
    free(y)


cdef double _kmeans_chunk(const floating* X, const double* w, Py_ssize_t r0, Py_ssize_t r1,
                          Py_ssize_t d, Py_ssize_t K, const double* centers, double* sums,
                          double* counts, long long* labels, bint write_labels,
                          int* err) noexcept nogil:
    cdef Py_ssize_t start, nb, k, r, a, lab
    cdef double inertia = 0.0, t, wr, cka
    cdef double* xt = <double*>malloc((d + 2) * BLOCK * sizeof(double))
    cdef long long* best_k = <long long*>malloc(BLOCK * sizeof(long long))
    cdef double* dist
    cdef double* best
    cdef const floating* xr
    if xt == NULL or best_k == NULL:
        err[0] = 1
    else:
        dist = xt + d * BLOCK
        best = dist + BLOCK
        memset(sums, 0, K * d * sizeof(double))
        memset(counts, 0, K * sizeof(double))
        start = r0
        while start < r1:
            nb = r1 - start if r1 - start < BLOCK else BLOCK
            for r in range(nb):
                xr = X + (start + r) * d
                for a in range(d):
                    xt[a * BLOCK + r] = <double>xr[a]
            for a in range(d):
                for r in range(nb, BLOCK):
                    xt[a * BLOCK + r] = 0.0
            for k in range(K):
                for r in range(BLOCK):
                    dist[r] = 0.0
                for a in range(d):
                    cka = centers[k * d + a]
                    for r in range(BLOCK):
                        t = xt[a * BLOCK + r] - cka
                        dist[r] = dist[r] + t * t
                if k == 0:
                    for r in range(BLOCK):
                        best[r] = dist[r]
                        best_k[r] = 0
                else:
                    for r in range(BLOCK):  # strict <: lowest index wins ties
                        if dist[r] < best[r]:
                            best[r] = dist[r]
                            best_k[r] = k
            for r in range(nb):
                lab = best_k[r]
                if write_labels:
                    labels[start + r] = lab
                wr = w[start + r]
                if wr != 0.0:
                    inertia += wr * best[r]
                    counts[lab] += wr
                    for a in range(d):
                        sums[lab * d + a] += wr * xt[a * BLOCK + r]
            start += BLOCK
    free(xt)
    free(best_k)
    return inertia


# ----------------------------------------------------------------------------
# Fused-type drivers: split rows into chunks, run chunks in parallel, reduce.

cdef double _em_pass(const floating[:, ::1] X, const double[::1] sw,
                     const floating[:, ::1] means, const floating* pc, const double[::1] cc,
                     double[::1] nk, double[:, ::1] sx, double* sxx, bint full) except? -1.0:
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = means.shape[0]
    cdef Py_ssize_t dd = d * d if full else d
    cdef Py_ssize_t nc = _n_chunks(n, K * (dd + d + 1)), c, k, a, b
    cdef int err = 0
    cdef double ll = 0.0, s
    cdef double[::1] ll_p = np.empty(nc)
    cdef double[:, ::1] nk_p = np.empty((nc, K))
    cdef double[:, :, ::1] sx_p = np.empty((nc, K, d))
    cdef double[:, :, ::1] sxx_p = np.empty((nc, K, dd))  # chunks zero their own (first touch)
    cdef const floating* xp = &X[0, 0]
    cdef const double* wp = &sw[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1):
            ll_p[c] = _em_chunk(xp, wp, c * n // nc, (c + 1) * n // nc, d, K, &means[0, 0],
                                pc, &cc[0], full, &nk_p[c, 0], &sx_p[c, 0, 0],
                                &sxx_p[c, 0, 0], &err)
        if err == 0:
            # fixed chunk order in every sum -> independent of the thread count
            for c in range(nc):
                ll = ll + ll_p[c]
            for k in prange(K, schedule="static"):
                nk[k] = 0.0
                for c in range(nc):
                    nk[k] = nk[k] + nk_p[c, k]
                for a in range(d):
                    s = 0.0
                    for c in range(nc):
                        s = s + sx_p[c, k, a]
                    sx[k, a] = s
                if full:
                    for a in range(d):
                        for b in range(a, d):
                            s = 0.0
                            for c in range(nc):
                                s = s + sxx_p[c, k, a * d + b]
                            sxx[(k * d + a) * d + b] = s
                            sxx[(k * d + b) * d + a] = s
                else:
                    for a in range(d):
                        s = 0.0
                        for c in range(nc):
                            s = s + sxx_p[c, k, a]
                        sxx[k * d + a] = s
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")
    return ll


cdef void _log_prob(const floating[:, ::1] X, const floating[:, ::1] means, const floating* pc,
                    const double[::1] cc, double[:, ::1] out, bint full) except *:
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = means.shape[0]
    cdef Py_ssize_t nc = _n_chunks(n, 0), c
    cdef int err = 0
    if n == 0:
        return
    cdef const floating* xp = &X[0, 0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1):
            _logprob_chunk(xp, c * n // nc, (c + 1) * n // nc, d, K, &means[0, 0], pc,
                           &cc[0], full, &out[0, 0], &err)
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")


cdef double _kmeans(const floating[:, ::1] X, const double[::1] sw, const double[:, ::1] centers,
                    double[:, ::1] sums, double[::1] counts, long long[::1] labels) except? -1.0:
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = centers.shape[0]
    cdef Py_ssize_t nc = _n_chunks(n, K * (d + 1)), c, k, a
    cdef int err = 0
    cdef bint write_labels = labels.shape[0] > 0
    cdef double inertia = 0.0, s
    cdef double[::1] in_p = np.empty(nc)
    cdef double[:, ::1] cnt_p = np.empty((nc, K))
    cdef double[:, :, ::1] sums_p = np.empty((nc, K, d))
    cdef long long dummy = 0
    cdef long long* lab_p = &labels[0] if write_labels else &dummy
    cdef const floating* xp = &X[0, 0]
    cdef const double* wp = &sw[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1):
            in_p[c] = _kmeans_chunk(xp, wp, c * n // nc, (c + 1) * n // nc, d, K,
                                    &centers[0, 0], &sums_p[c, 0, 0], &cnt_p[c, 0], lab_p,
                                    write_labels, &err)
        if err == 0:
            for c in range(nc):
                inertia = inertia + in_p[c]
            for k in range(K):
                s = 0.0
                for c in range(nc):
                    s = s + cnt_p[c, k]
                counts[k] = s
                for a in range(d):
                    s = 0.0
                    for c in range(nc):
                        s = s + sums_p[c, k, a]
                    sums[k, a] = s
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")
    return inertia


# ----------------------------------------------------------------------------
# Fused entry points (dtype of X picks the specialization).

def _em_full_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                  const floating[:, ::1] means, const floating[:, :, ::1] prec_chol,
                  const double[::1] comp_const, double[::1] nk, double[:, ::1] sx,
                  double[:, :, ::1] sxx):
    return _em_pass(X, sample_weight, means, &prec_chol[0, 0, 0], comp_const, nk, sx,
                    &sxx[0, 0, 0], True)


def _em_diag_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                  const floating[:, ::1] means, const floating[:, ::1] prec_chol,
                  const double[::1] comp_const, double[::1] nk, double[:, ::1] sx,
                  double[:, ::1] sxx):
    return _em_pass(X, sample_weight, means, &prec_chol[0, 0], comp_const, nk, sx,
                    &sxx[0, 0], False)


def _log_prob_full_impl(const floating[:, ::1] X, const floating[:, ::1] means,
                        const floating[:, :, ::1] prec_chol, const double[::1] comp_const,
                        double[:, ::1] out):
    _log_prob(X, means, &prec_chol[0, 0, 0], comp_const, out, True)


def _log_prob_diag_impl(const floating[:, ::1] X, const floating[:, ::1] means,
                        const floating[:, ::1] prec_chol, const double[::1] comp_const,
                        double[:, ::1] out):
    _log_prob(X, means, &prec_chol[0, 0], comp_const, out, False)


def _kmeans_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                 const double[:, ::1] centers, double[:, ::1] sums, double[::1] counts,
                 long long[::1] labels):
    return _kmeans(X, sample_weight, centers, sums, counts, labels)


# ----------------------------------------------------------------------------
# Public kernels: the contract's signatures. Small parameter arrays are made
# contiguous in X's dtype (a broadcast tied prec_chol has stride 0); X, weights
# and outputs are checked, never copied, so the kernels stay O(1) in extra memory.

def _check(X, n_comp, arrays):
    if X.ndim != 2 or X.dtype not in (np.float32, np.float64):
        raise ValueError(f"X must be a 2-D float32/float64 array, got {X.dtype} {X.shape}")
    if n_comp < 1 or X.shape[1] < 1:
        raise ValueError("need at least one component and one feature")
    for name, arr, shape in arrays:
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")


def _params(X, means, prec_chol):
    return (np.ascontiguousarray(means, dtype=X.dtype),
            np.ascontiguousarray(prec_chol, dtype=X.dtype))


def em_pass_full(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    means, prec_chol = _params(X, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("sample_weight", sample_weight, (n,)), ("means", means, (k, d)),
                  ("prec_chol", prec_chol, (k, d, d)), ("comp_const", comp_const, (k,)),
                  ("nk", nk, (k,)), ("sx", sx, (k, d)), ("sxx", sxx, (k, d, d))])
    if n == 0:
        nk[...] = 0.0
        sx[...] = 0.0
        sxx[...] = 0.0
        return 0.0
    return _em_full_impl(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx)


def em_pass_diag(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    means, prec_chol = _params(X, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("sample_weight", sample_weight, (n,)), ("means", means, (k, d)),
                  ("prec_chol", prec_chol, (k, d)), ("comp_const", comp_const, (k,)),
                  ("nk", nk, (k,)), ("sx", sx, (k, d)), ("sxx", sxx, (k, d))])
    if n == 0:
        nk[...] = 0.0
        sx[...] = 0.0
        sxx[...] = 0.0
        return 0.0
    return _em_diag_impl(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx)


def log_prob_full(X, means, prec_chol, comp_const, out):
    means, prec_chol = _params(X, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("means", means, (k, d)), ("prec_chol", prec_chol, (k, d, d)),
                  ("comp_const", comp_const, (k,)), ("out", out, (n, k))])
    _log_prob_full_impl(X, means, prec_chol, comp_const, out)


def log_prob_diag(X, means, prec_chol, comp_const, out):
    means, prec_chol = _params(X, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("means", means, (k, d)), ("prec_chol", prec_chol, (k, d)),
                  ("comp_const", comp_const, (k,)), ("out", out, (n, k))])
    _log_prob_diag_impl(X, means, prec_chol, comp_const, out)


def kmeans_pass(X, sample_weight, centers, sums, counts, labels):
    # distances are float64 in the reference: centres go in as float64
    centers = np.ascontiguousarray(centers, dtype=np.float64)
    n, d = X.shape
    k = centers.shape[0]
    _check(X, k, [("sample_weight", sample_weight, (n,)), ("centers", centers, (k, d)),
                  ("sums", sums, (k, d)), ("counts", counts, (k,))])
    if labels.shape[0] not in (0, n):
        raise ValueError(f"labels must have length 0 or {n}, got {labels.shape[0]}")
    if n == 0:
        sums[...] = 0.0
        counts[...] = 0.0
        return 0.0
    return _kmeans_impl(X, sample_weight, centers, sums, counts, labels)
