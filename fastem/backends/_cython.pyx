# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, infer_types=False
"""Cython/OpenMP backend: the fallback where Numba is missing.

Same kernels, signatures and semantics as :mod:`fastem.backends._numpy`
(whose docstring is the contract): the five complete-data kernels and the four
missing-data (NaN) ones, whose design is described at their section below.
Design:

* Rows are split into a fixed number of chunks that depends only on ``n``
  (never on the thread count); each chunk writes its own partial statistics
  and the partials are summed in chunk order, so results are bit-identical
  whatever the number of threads.
* Inside a chunk rows go in blocks of ``BLOCK``; a block is stored transposed
  (feature-major) so that every inner loop runs over the block's rows with a
  constant trip count and vectorizes without ``-ffast-math``. Padding rows of
  the last block are zero with zero weight.
* Full covariance (complete data) takes blocks of ``FULL_BLOCK`` rows through
  register-tiled C kernels (``_full_tiles.h``): 4 x 4 tiles of the triangular
  Mahalanobis products and of the second moments, the centring fused into the
  loads.
* Sums over rows use 8 independent 4-wide accumulators added in a fixed order
  (small C helpers with GNU vector extensions): vectorized, yet deterministic.
* Per-chunk scratch starts on a 64-byte boundary (``fastem_aligned_alloc``;
  malloc gives 16, and a vector load then often spans two cache lines): one
  pass took 0.88-0.99x the time (W1-W4). The tied worker keeps malloc: aligned,
  its W5 pass took 1.19x the time (cause not found; no hardware counters here).
* ``exp`` is a branch-free polynomial that the compiler vectorizes (libm's
  scalar ``exp`` would dominate at small D).
* float32 input: distances run in float32, statistics accumulate in float64
  (the missing-data kernels widen X to float64 on load, like the reference).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport ldexp, log, sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove, memset

import numpy as np

from fastem.backends import _tied

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

    /* Hint a gathered row into cache ahead of its use (a no-op elsewhere). */
    #if defined(__GNUC__)
    #define fastem_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)
    #else
    #define fastem_prefetch(p) ((void)(p))
    #endif

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
    void fastem_prefetch(const void *p) noexcept nogil
    double fastem_sum(const double *p, Py_ssize_t n) noexcept nogil
    double fastem_dot_double(const double *p, const double *q, Py_ssize_t n) noexcept nogil
    void fastem_dot4_double(const double *p, const double *q, Py_ssize_t ld, Py_ssize_t n,
                            double *out) noexcept nogil
    void fastem_moments_double(const double *p, const double *q, Py_ssize_t n, double *s1,
                               double *s2) noexcept nogil


# Register-tiled full-covariance kernels (C, restrict pointers, GNU vectors):
# see the header's comment for why they are not Cython loops.
cdef extern from "_full_tiles.h":
    enum: FT_ROWS_MULTIPLE
    void* fastem_aligned_alloc(size_t size) noexcept nogil  # 64-byte aligned
    void fastem_aligned_free(void* p) noexcept nogil
    void fastem_load_block_double(const double* X, Py_ssize_t nb, Py_ssize_t d, Py_ssize_t ld,
                                  Py_ssize_t n, double* xt) noexcept nogil
    void fastem_load_block_float(const float* X, Py_ssize_t nb, Py_ssize_t d, Py_ssize_t ld,
                                 Py_ssize_t n, float* xt) noexcept nogil
    void fastem_tri_maha_double(const double* xt, Py_ssize_t ld, Py_ssize_t d, const double* mu,
                                const double* U, Py_ssize_t n, double* acc,
                                double* maha) noexcept nogil
    void fastem_tri_maha_float(const float* xt, Py_ssize_t ld, Py_ssize_t d, const float* mu,
                               const float* U, Py_ssize_t n, float* acc,
                               float* maha) noexcept nogil
    void fastem_accum_full_double(const double* xt, Py_ssize_t ld, Py_ssize_t d,
                                  const double* mu, const double* w, Py_ssize_t n, double* rd,
                                  double* sx, double* sxx) noexcept nogil
    void fastem_accum_full_f32(const float* xt, Py_ssize_t ld, Py_ssize_t d, const float* mu,
                               const float* w, Py_ssize_t n, float* rd, double* sx,
                               double* sxx) noexcept nogil


cdef enum:
    BLOCK = 32         # rows per block (multiple of 8): the K*D*BLOCK scratch stays in L1/L2
    MIN_ROWS = 2048    # rows per chunk at least: amortizes per-chunk set-up
    MAX_CHUNKS = 64    # fixed chunk count: load balance up to ~16 threads
    MIN_CAPPED = 8     # the partials budget never cuts the chunk count below this
    FULL_BLOCK = 256   # rows per block of the tiled full-covariance pass (see _full_chunk)

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


cdef inline int _team(Py_ssize_t nc) noexcept nogil:
    """Threads for a prange over ``nc`` chunks: never more than there are chunks.
    A team larger than the work costs its spin-wait for nothing: a 30-row pass
    (one chunk) took 20 ms of CPU on 2 threads against 0.14 ms on one."""
    cdef int t = fastem_get_num_threads()
    if nc < t:
        return <int>nc if nc > 0 else 1
    return t


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
                      const double* cc, double* nk, double* sx, double* sxx,
                      int* err) noexcept nogil:
    """Diagonal covariance (full covariance: _full_chunk)."""
    cdef Py_ssize_t start, nb, k, r
    cdef double ll = 0.0
    cdef floating* ct = <floating*>fastem_aligned_alloc((K + 1) * d * BLOCK * sizeof(floating))
    cdef floating* y = <floating*>fastem_aligned_alloc(2 * BLOCK * sizeof(floating))
    cdef double* lp = <double*>fastem_aligned_alloc(K * BLOCK * sizeof(double))
    cdef floating* xt
    cdef double* pw = <double*>fastem_aligned_alloc((2 * d + 2) * BLOCK * sizeof(double))
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
        memset(sxx, 0, K * d * sizeof(double))
        start = r0
        while start < r1:
            nb = r1 - start if r1 - start < BLOCK else BLOCK
            _load_T(X, start, nb, d, xt)
            for k in range(K):
                _center(xt, d, means + k * d, ct + k * d * BLOCK)
                _maha_diag(ct + k * d * BLOCK, d, pc + k * d, maha)
                for r in range(BLOCK):
                    lp[k * BLOCK + r] = cc[k] - 0.5 * <double>maha[r]
            ll += _responsibilities(lp, K, nb, w + start, mx, inv)
            for k in range(K):
                _accumulate(lp + k * BLOCK, ct + k * d * BLOCK, d, False, pw, pw + d * BLOCK,
                            nk + k, sx + k * d, sxx + k * d)
            start += BLOCK
    fastem_aligned_free(ct)
    fastem_aligned_free(y)
    fastem_aligned_free(lp)
    fastem_aligned_free(pw)
    return ll


cdef void _logprob_chunk(const floating* X, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d,
                         Py_ssize_t K, const floating* means, const floating* pc,
                         const double* cc, double* out, int* err) noexcept nogil:
    """Diagonal covariance (full covariance: _full_chunk)."""
    cdef Py_ssize_t start, nb, k, r
    cdef floating* ct = <floating*>fastem_aligned_alloc(2 * d * BLOCK * sizeof(floating))
    cdef floating* y = <floating*>fastem_aligned_alloc(2 * BLOCK * sizeof(floating))
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
                _maha_diag(ct, d, pc + k * d, maha)
                ck = cc[k]
                for r in range(nb):
                    out[(start + r) * K + k] = ck - 0.5 * <double>maha[r]
            start += BLOCK
    fastem_aligned_free(ct)
    fastem_aligned_free(y)


# ----------------------------------------------------------------------------
# Full covariance (complete data): blocks of FULL_BLOCK rows through the
# register-tiled C kernels of _full_tiles.h. Long blocks, because the tiles'
# set-up (16 coefficients of U, 16 horizontal sums of the second moments) is
# paid once per block and component: with BLOCK = 32 rows the same tiling
# gained nothing. A (d, FULL_BLOCK) float64 block is 128 KiB at d = 64: the
# block, its weighted copy and the K log-density rows stay in L2.
#
# float32 X sums a block's statistics in float32 (twice the SIMD lanes), as the
# numba backend does. A float32 sum depends on which rows it adds, so float32
# blocks are a fixed grid of _full_rows(d) rows counted from row 0 (the same
# grid as numba's, 512 rows up to d = 128) and chunk boundaries fall on it:
# the block sums are then the same for any thread count and for out-of-core
# pieces of a multiple of the grid, which differ from the whole only in the
# float64 order of adding them.

cdef inline Py_ssize_t _full_rows(Py_ssize_t d, bint f32) noexcept nogil:
    """Rows per block of the full pass: FULL_BLOCK; float32 the numba grid."""
    if not f32:
        return FULL_BLOCK
    return 2 * FULL_BLOCK if d <= 128 else FULL_BLOCK


cdef inline Py_ssize_t _chunk_start(Py_ssize_t c, Py_ssize_t n, Py_ssize_t nc,
                                    Py_ssize_t grid) noexcept nogil:
    """First row of chunk c of nc: c n / nc, or (grid > 0) on the grid of that
    many rows from row 0 (a chunk may then be empty)."""
    cdef Py_ssize_t nblk, r
    if grid == 0:
        return c * n // nc
    nblk = (n + grid - 1) // grid
    r = c * nblk // nc * grid
    return r if r < n else n

cdef inline double _resp_ld(double* lp, Py_ssize_t K, Py_ssize_t nb, Py_ssize_t n,
                            Py_ssize_t ld, const double* w, double* mx,
                            double* inv) noexcept nogil:
    """_responsibilities for K rows of stride ld, over n rows of which nb are real."""
    cdef Py_ssize_t r, k
    cdef double v, s, ll = 0.0
    cdef double* row
    for r in range(n):
        mx[r] = lp[r]
    for k in range(1, K):
        row = lp + k * ld
        for r in range(n):
            v = row[r]
            mx[r] = v if v > mx[r] else mx[r]
    for k in range(K):
        row = lp + k * ld
        for r in range(n):
            row[r] = row[r] - mx[r]
        fastem_exp_inplace(row, n)
    for r in range(n):
        inv[r] = lp[r]
    for k in range(1, K):
        row = lp + k * ld
        for r in range(n):
            inv[r] = inv[r] + row[r]
    for r in range(nb):
        s = inv[r]
        if w[r] != 0.0:  # zero-weight rows contribute nothing, even if non-finite
            ll += w[r] * (mx[r] + log(s))
            inv[r] = w[r] / s
        else:
            inv[r] = 0.0
    for r in range(nb, n):
        inv[r] = 0.0
    for k in range(K):
        row = lp + k * ld
        for r in range(n):  # select, not product: 0 * nan would leak from w = 0 rows
            row[r] = row[r] * inv[r] if inv[r] != 0.0 else 0.0
    return ll


cdef inline double _responsibilities(double* lp, Py_ssize_t K, Py_ssize_t nb, const double* w,
                                     double* mx, double* inv) noexcept nogil:
    """lp (K x BLOCK) log-densities -> responsibilities times weight, in place.

    Returns sum_r w[r] * logsumexp_k lp[k, r] over the nb real rows.
    """
    return _resp_ld(lp, K, nb, BLOCK, BLOCK, w, mx, inv)


cdef inline void _accum_f32(const float* xt, Py_ssize_t B, Py_ssize_t d, const float* mu,
                            const double* r, Py_ssize_t n, double rsum, double tiny,
                            double big, float* rc, float* rd, double* sxb, double* sxxb,
                            double* sx, double* sxx) noexcept nogil:
    """float32 X: one block's statistics summed in float32, of r / rsum (in
    [0, 1]: a vanishing component's ~1e-300 or a huge weight neither underflows
    nor overflows float32), added to sx, sxx times rsum in float64."""
    cdef Py_ssize_t i, j
    cdef double sc
    if rsum >= tiny:
        sc = 1.0 / rsum
        for i in range(n):
            rc[i] = <float>(r[i] * sc)
    else:  # 1 / rsum would overflow: scale up first (r <= rsum)
        sc = 1.0 / (rsum * big)
        for i in range(n):
            rc[i] = <float>((r[i] * big) * sc)
    memset(sxb, 0, (d + d * d) * sizeof(double))
    fastem_accum_full_f32(xt, B, d, mu, rc, n, rd, sxb, sxxb)
    for i in range(d):
        sx[i] += rsum * sxb[i]
        for j in range(i, d):
            sxx[i * d + j] += rsum * sxxb[i * d + j]


cdef double _full_chunk(const floating* X, const double* w, Py_ssize_t r0, Py_ssize_t r1,
                        Py_ssize_t d, Py_ssize_t K, const floating* means, const floating* pc,
                        const double* cc, double* nk, double* sx, double* sxx, double* out,
                        int* err) noexcept nogil:
    """Rows r0:r1, full covariance. out == NULL: add the statistics to nk, sx and
    sxx (upper triangle) and return the loglik; else write the log-densities to
    out (n x K)."""
    cdef Py_ssize_t B = _full_rows(d, floating is float), dd = d * d
    cdef Py_ssize_t start, nb, n, k, r
    cdef double ll = 0.0, ck, rsum
    cdef double tiny = ldexp(1.0, -960), big = ldexp(1.0, 1000)
    cdef floating* xt = <floating*>fastem_aligned_alloc((d + 5) * B * sizeof(floating))
    cdef floating* acc
    cdef floating* maha
    cdef double* lp = <double*>fastem_aligned_alloc(K * B * sizeof(double))
    cdef double* rd = NULL
    cdef double* mx = NULL
    cdef double* inv = NULL
    cdef double* sxb = NULL
    cdef double* sxxb = NULL
    cdef float* rc = NULL
    if out == NULL:
        rd = <double*>fastem_aligned_alloc(((d + 3) * B + d + dd + 8) * sizeof(double))
    if xt == NULL or lp == NULL or (out == NULL and rd == NULL):
        err[0] = 1
        fastem_aligned_free(xt)
        fastem_aligned_free(lp)
        fastem_aligned_free(rd)
        return 0.0
    acc = xt + d * B
    maha = acc + 4 * B
    if out == NULL:
        mx = rd + d * B  # rd: d * B float64, or float32 for float32 X
        inv = mx + B
        sxb = inv + B  # float32 X: one block's sums
        sxxb = sxb + d
        # float32 X: the block's scaled responsibilities, on a 64-byte boundary
        rc = <float*>(rd + (d + 2) * B + (d + dd + 7) // 8 * 8)
    start = r0
    while start < r1:
        nb = r1 - start if r1 - start < B else B
        n = (nb + FT_ROWS_MULTIPLE - 1) // FT_ROWS_MULTIPLE * FT_ROWS_MULTIPLE
        if floating is double:
            fastem_load_block_double(X + start * d, nb, d, B, n, xt)
        else:
            fastem_load_block_float(X + start * d, nb, d, B, n, xt)
        for k in range(K):
            if floating is double:
                fastem_tri_maha_double(xt, B, d, means + k * d, pc + k * dd, n, acc, maha)
            else:
                fastem_tri_maha_float(xt, B, d, means + k * d, pc + k * dd, n, acc, maha)
            ck = cc[k]
            if out != NULL:
                for r in range(nb):
                    out[(start + r) * K + k] = ck - 0.5 * <double>maha[r]
            else:
                for r in range(n):
                    lp[k * B + r] = ck - 0.5 * <double>maha[r]
        if out == NULL:
            ll += _resp_ld(lp, K, nb, n, B, w + start, mx, inv)
            for k in range(K):
                rsum = fastem_sum(lp + k * B, n)
                if rsum == 0.0:  # responsibilities are >= 0: nothing to add
                    continue
                nk[k] += rsum
                if floating is double:
                    fastem_accum_full_double(xt, B, d, means + k * d, lp + k * B, n, rd,
                                             sx + k * d, sxx + k * dd)
                else:
                    _accum_f32(xt, B, d, means + k * d, lp + k * B, n, rsum, tiny, big, rc,
                               <float*>rd, sxb, sxxb, sx + k * d, sxx + k * dd)
        start += B
    fastem_aligned_free(xt)
    fastem_aligned_free(lp)
    fastem_aligned_free(rd)
    return ll


cdef double _kmeans_chunk(const floating* X, const double* w, Py_ssize_t r0, Py_ssize_t r1,
                          Py_ssize_t d, Py_ssize_t K, const double* centers, double* sums,
                          double* counts, long long* labels, bint write_labels,
                          int* err) noexcept nogil:
    cdef Py_ssize_t start, nb, k, r, a, lab
    cdef double inertia = 0.0, t, wr, cka
    cdef double* xt = <double*>fastem_aligned_alloc((d + 2) * BLOCK * sizeof(double))
    cdef long long* best_k = <long long*>fastem_aligned_alloc(BLOCK * sizeof(long long))
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
    fastem_aligned_free(xt)
    fastem_aligned_free(best_k)
    return inertia


# ----------------------------------------------------------------------------
# Tied covariance: one shared factor U. z = (x - c) U once per row, then
# ||z - m_k||^2 per component, and one pooled scatter G about c instead of K
# second moments; fastem.backends._tied holds the algebra and the finish.

cdef inline void _project_tri(const floating* ct, Py_ssize_t d, const floating* U,
                              floating* z) noexcept nogil:
    """z[j, r] = sum_{i <= j} U[i, j] ct[i, r], U upper triangular (d x d, row-major)."""
    cdef Py_ssize_t r, i, j
    cdef floating u0, u1, u2, u3
    cdef const floating* c0
    cdef floating* zj
    for j in range(d):
        zj = z + j * BLOCK
        u0 = U[j]
        for r in range(BLOCK):
            zj[r] = ct[r] * u0
        i = 1
        while i + 3 <= j:
            u0 = U[i * d + j]
            u1 = U[(i + 1) * d + j]
            u2 = U[(i + 2) * d + j]
            u3 = U[(i + 3) * d + j]
            c0 = ct + i * BLOCK
            for r in range(BLOCK):
                zj[r] = (zj[r] + c0[r] * u0 + c0[BLOCK + r] * u1
                         + c0[2 * BLOCK + r] * u2 + c0[3 * BLOCK + r] * u3)
            i += 4
        while i <= j:
            u0 = U[i * d + j]
            c0 = ct + i * BLOCK
            for r in range(BLOCK):
                zj[r] = zj[r] + c0[r] * u0
            i += 1


cdef double _tied_chunk(const floating* X, const double* w, Py_ssize_t r0, Py_ssize_t r1,
                        Py_ssize_t d, Py_ssize_t K, const floating* centre,
                        const floating* proj, const floating* U, const double* cc, bint fit,
                        double* nk, double* t, double* g, double* out, int* err) noexcept nogil:
    """Rows r0:r1 under the shared factor: with ``fit`` add nk, t (K x d) and the
    upper triangle of g (d x d) and return the loglik; else write log-densities."""
    cdef Py_ssize_t start, nb, k, r, a
    cdef double ll = 0.0, s, gn = 0.0
    cdef floating m, v
    cdef floating* ct = <floating*>malloc((3 * d + 1) * BLOCK * sizeof(floating))
    cdef double* lp = <double*>malloc(K * BLOCK * sizeof(double))
    cdef double* pw = <double*>malloc(((2 * d + 3) * BLOCK + d) * sizeof(double))
    cdef floating* xt
    cdef floating* z
    cdef floating* za
    cdef floating* maha
    cdef double* cd
    cdef double* mx
    cdef double* inv
    cdef double* rsum
    cdef double* gsx
    cdef double* row
    cdef const double* cx
    if ct == NULL or lp == NULL or pw == NULL:
        err[0] = 1
    else:
        xt = ct + d * BLOCK
        z = xt + d * BLOCK
        maha = z + d * BLOCK
        cd = pw + d * BLOCK
        mx = cd + d * BLOCK
        inv = mx + BLOCK
        rsum = inv + BLOCK
        gsx = rsum + BLOCK  # sum_k t_k again (from _accumulate): not needed
        if fit:
            memset(nk, 0, K * sizeof(double))
            memset(t, 0, K * d * sizeof(double))
            memset(g, 0, d * d * sizeof(double))
            memset(gsx, 0, d * sizeof(double))
        start = r0
        while start < r1:
            nb = r1 - start if r1 - start < BLOCK else BLOCK
            _load_T(X, start, nb, d, xt)
            _center(xt, d, centre, ct)
            _project_tri(ct, d, U, z)
            for k in range(K):
                for r in range(BLOCK):
                    maha[r] = 0
                for a in range(d):
                    m = proj[k * d + a]
                    za = z + a * BLOCK
                    for r in range(BLOCK):
                        v = za[r] - m
                        maha[r] = maha[r] + v * v
                for r in range(BLOCK):
                    lp[k * BLOCK + r] = cc[k] - 0.5 * <double>maha[r]
            if not fit:
                for r in range(nb):
                    for k in range(K):
                        out[(start + r) * K + k] = lp[k * BLOCK + r]
                start += BLOCK
                continue
            ll += _responsibilities(lp, K, nb, w + start, mx, inv)
            if floating is double:
                cx = ct
            else:  # widen the centred block once
                for a in range(d * BLOCK):
                    cd[a] = <double>ct[a]
                cx = cd
            for r in range(BLOCK):
                rsum[r] = 0.0
            for k in range(K):
                row = lp + k * BLOCK
                s = fastem_sum(row, BLOCK)
                nk[k] += s
                for r in range(BLOCK):
                    rsum[r] = rsum[r] + row[r]
                if s == 0.0:
                    continue
                for a in range(d):
                    t[k * d + a] += fastem_dot_double(row, cx + a * BLOCK, BLOCK)
            _accumulate(rsum, cx, d, True, pw, cd, &gn, gsx, g)
            start += BLOCK
    free(ct)
    free(lp)
    free(pw)
    return ll


# ----------------------------------------------------------------------------
# Fused-type drivers: split rows into chunks, run chunks in parallel, reduce.

cdef double _sum_partials(const double[::1] ll_p, const double[:, ::1] nk_p,
                          const double[:, :, ::1] sx_p, const double[:, :, ::1] sxx_p,
                          double[::1] nk, double[:, ::1] sx, double* sxx,
                          bint full) noexcept nogil:
    """The chunks' partials summed in chunk order, so independent of the thread
    count: returns the log-likelihood, writes nk, sx and sxx (full: (K, d, d)
    from the partials' upper triangles, mirrored; else (K, d)). sxx is
    C-contiguous (the callers' memoryviews are)."""
    cdef Py_ssize_t nc = ll_p.shape[0], K = nk_p.shape[1], d = sx_p.shape[2], c, k, a, b
    cdef double ll = 0.0, s
    for c in range(nc):
        ll = ll + ll_p[c]
    for k in prange(K, schedule="static", num_threads=_team(nc)):
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
    return ll


cdef double _em_pass(const floating[:, ::1] X, const double[::1] sw,
                     const floating[:, ::1] means, const floating* pc, const double[::1] cc,
                     double[::1] nk, double[:, ::1] sx, double* sxx) except? -1.0:
    """Diagonal covariance (full covariance: _em_pass_full)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = means.shape[0]
    cdef Py_ssize_t nc = _n_chunks(n, K * (2 * d + 1)), c, k, a
    cdef int err = 0
    cdef double ll = 0.0, s
    cdef double[::1] ll_p = np.empty(nc)
    cdef double[:, ::1] nk_p = np.empty((nc, K))
    cdef double[:, :, ::1] sx_p = np.empty((nc, K, d))
    cdef double[:, :, ::1] sxx_p = np.empty((nc, K, d))  # chunks zero their own (first touch)
    cdef const floating* xp = &X[0, 0]
    cdef const double* wp = &sw[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            ll_p[c] = _em_chunk(xp, wp, c * n // nc, (c + 1) * n // nc, d, K, &means[0, 0],
                                pc, &cc[0], &nk_p[c, 0], &sx_p[c, 0, 0],
                                &sxx_p[c, 0, 0], &err)
        if err == 0:
            ll = _sum_partials(ll_p, nk_p, sx_p, sxx_p, nk, sx, sxx, False)
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")
    return ll


cdef void _log_prob(const floating[:, ::1] X, const floating[:, ::1] means, const floating* pc,
                    const double[::1] cc, double[:, ::1] out) except *:
    """Diagonal covariance (full covariance: _log_prob_full)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = means.shape[0]
    cdef Py_ssize_t nc = _n_chunks(n, 0), c
    cdef int err = 0
    if n == 0:
        return
    cdef const floating* xp = &X[0, 0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            _logprob_chunk(xp, c * n // nc, (c + 1) * n // nc, d, K, &means[0, 0], pc,
                           &cc[0], &out[0, 0], &err)
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")


cdef double _em_pass_full(const floating[:, ::1] X, const double[::1] sw,
                          const floating[:, ::1] means, const floating[:, :, ::1] pc,
                          const double[::1] cc, double[::1] nk, double[:, ::1] sx,
                          double[:, :, ::1] sxx) except? -1.0:
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = means.shape[0]
    cdef Py_ssize_t dd = d * d
    cdef Py_ssize_t nc = _n_chunks(n, K * (dd + d + 1)), c, k, a, b
    cdef int err = 0
    cdef double ll = 0.0, s
    cdef double[::1] ll_p = np.empty(nc)
    cdef double[:, ::1] nk_p = np.empty((nc, K))
    cdef double[:, :, ::1] sx_p = np.empty((nc, K, d))
    cdef double[:, :, ::1] sxx_p = np.empty((nc, K, dd))  # zeroed by the thread of the chunk
    # float32: chunk boundaries on the grid of its float32 block sums
    cdef Py_ssize_t grid = 0 if floating is double else _full_rows(d, True)
    cdef const floating* xp = &X[0, 0]
    cdef const double* wp = &sw[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            memset(&nk_p[c, 0], 0, K * sizeof(double))
            memset(&sx_p[c, 0, 0], 0, K * d * sizeof(double))
            memset(&sxx_p[c, 0, 0], 0, K * dd * sizeof(double))
            ll_p[c] = _full_chunk(xp, wp, _chunk_start(c, n, nc, grid),
                                  _chunk_start(c + 1, n, nc, grid), d, K, &means[0, 0],
                                  &pc[0, 0, 0], &cc[0], &nk_p[c, 0], &sx_p[c, 0, 0],
                                  &sxx_p[c, 0, 0], NULL, &err)
        if err == 0:
            ll = _sum_partials(ll_p, nk_p, sx_p, sxx_p, nk, sx, &sxx[0, 0, 0], True)
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")
    return ll


cdef void _log_prob_full(const floating[:, ::1] X, const floating[:, ::1] means,
                         const floating[:, :, ::1] pc, const double[::1] cc,
                         double[:, ::1] out) except *:
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = means.shape[0]
    cdef Py_ssize_t nc = _n_chunks(n, 0), c
    cdef int err = 0
    if n == 0:
        return
    cdef const floating* xp = &X[0, 0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            _full_chunk(xp, NULL, c * n // nc, (c + 1) * n // nc, d, K, &means[0, 0],
                        &pc[0, 0, 0], &cc[0], NULL, NULL, NULL, &out[0, 0], &err)
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
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
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


cdef double _tied_pass(const floating[:, ::1] X, const double[::1] sw,
                       const floating[::1] centre, const floating[:, ::1] proj,
                       const floating[:, ::1] U, const double[::1] cc, double[::1] nk,
                       double[:, ::1] t, double[:, ::1] g) except? -1.0:
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = proj.shape[0]
    cdef Py_ssize_t nc = _n_chunks(n, K * (d + 1) + d * d), c, k, a, b
    cdef int err = 0
    cdef double ll = 0.0, s
    cdef double[::1] ll_p = np.empty(nc)
    cdef double[:, ::1] nk_p = np.empty((nc, K))
    cdef double[:, :, ::1] t_p = np.empty((nc, K, d))
    cdef double[:, ::1] g_p = np.empty((nc, d * d))  # chunks zero their own
    cdef const floating* xp = &X[0, 0]
    cdef const double* wp = &sw[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            ll_p[c] = _tied_chunk(xp, wp, c * n // nc, (c + 1) * n // nc, d, K, &centre[0],
                                  &proj[0, 0], &U[0, 0], &cc[0], True, &nk_p[c, 0],
                                  &t_p[c, 0, 0], &g_p[c, 0], NULL, &err)
        if err == 0:
            # fixed chunk order in every sum -> independent of the thread count
            for c in range(nc):
                ll = ll + ll_p[c]
            for k in range(K):
                s = 0.0
                for c in range(nc):
                    s = s + nk_p[c, k]
                nk[k] = s
                for a in range(d):
                    s = 0.0
                    for c in range(nc):
                        s = s + t_p[c, k, a]
                    t[k, a] = s
            for a in range(d):
                for b in range(a, d):
                    s = 0.0
                    for c in range(nc):
                        s = s + g_p[c, a * d + b]
                    g[a, b] = s
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")
    return ll


cdef void _tied_log_prob(const floating[:, ::1] X, const floating[::1] centre,
                         const floating[:, ::1] proj, const floating[:, ::1] U,
                         const double[::1] cc, double[:, ::1] out) except *:
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = proj.shape[0]
    cdef Py_ssize_t nc = _n_chunks(n, 0), c
    cdef int err = 0
    if n == 0:
        return
    cdef const floating* xp = &X[0, 0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            _tied_chunk(xp, NULL, c * n // nc, (c + 1) * n // nc, d, K, &centre[0],
                        &proj[0, 0], &U[0, 0], &cc[0], False, NULL, NULL, NULL,
                        &out[0, 0], &err)
    if err:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")


# ----------------------------------------------------------------------------
# Fused entry points (dtype of X picks the specialization).

def _em_full_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                  const floating[:, ::1] means, const floating[:, :, ::1] prec_chol,
                  const double[::1] comp_const, double[::1] nk, double[:, ::1] sx,
                  double[:, :, ::1] sxx):
    return _em_pass_full(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx)


def _em_diag_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                  const floating[:, ::1] means, const floating[:, ::1] prec_chol,
                  const double[::1] comp_const, double[::1] nk, double[:, ::1] sx,
                  double[:, ::1] sxx):
    return _em_pass(X, sample_weight, means, &prec_chol[0, 0], comp_const, nk, sx, &sxx[0, 0])


def _log_prob_full_impl(const floating[:, ::1] X, const floating[:, ::1] means,
                        const floating[:, :, ::1] prec_chol, const double[::1] comp_const,
                        double[:, ::1] out):
    _log_prob_full(X, means, prec_chol, comp_const, out)


def _log_prob_diag_impl(const floating[:, ::1] X, const floating[:, ::1] means,
                        const floating[:, ::1] prec_chol, const double[::1] comp_const,
                        double[:, ::1] out):
    _log_prob(X, means, &prec_chol[0, 0], comp_const, out)


def _tied_impl(const floating[:, ::1] X, const double[::1] sample_weight,
               const floating[::1] centre, const floating[:, ::1] proj,
               const floating[:, ::1] U, const double[::1] comp_const, double[::1] nk,
               double[:, ::1] t, double[:, ::1] g):
    return _tied_pass(X, sample_weight, centre, proj, U, comp_const, nk, t, g)


def _tied_log_prob_impl(const floating[:, ::1] X, const floating[::1] centre,
                        const floating[:, ::1] proj, const floating[:, ::1] U,
                        const double[::1] comp_const, double[:, ::1] out):
    _tied_log_prob(X, centre, proj, U, comp_const, out)


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


def em_pass_tied(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("sample_weight", sample_weight, (n,)), ("means", means, (k, d)),
                  ("prec_chol", prec_chol, (d, d)), ("comp_const", comp_const, (k,)),
                  ("nk", nk, (k,)), ("sx", sx, (k, d)), ("sxx", sxx, (d, d))])
    if n == 0:
        nk[...] = 0.0
        sx[...] = 0.0
        sxx[...] = 0.0
        return 0.0
    centre, e, proj = _tied.setup(means, prec_chol, X.dtype, comp_const)
    U = np.ascontiguousarray(prec_chol, dtype=X.dtype)
    t = np.empty((k, d))
    g = np.zeros((d, d))  # the pass fills its upper triangle
    ll = _tied_impl(X, sample_weight, centre, proj, U, comp_const, nk, t, g)
    _tied.finish(e, nk, t, g, sx, sxx)
    return ll


def log_prob_tied(X, means, prec_chol, comp_const, out):
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("means", means, (k, d)), ("prec_chol", prec_chol, (d, d)),
                  ("comp_const", comp_const, (k,)), ("out", out, (n, k))])
    centre, _, proj = _tied.setup(means, prec_chol, X.dtype, comp_const)
    U = np.ascontiguousarray(prec_chol, dtype=X.dtype)
    _tied_log_prob_impl(X, centre, proj, U, comp_const, out)


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


# ============================================================================
# Missing values (NaN): the kernels of the contract's "Missing values" section.
#
# Chunks are fixed ranges of positions in ``rows`` (a function of their number
# and the partials budget only) and partials are reduced in chunk order, as
# above, so results do not depend on the thread count.
#
# Within a chunk, each pattern segment (consecutive positions sharing a
# pattern) gets its per-component conditionals -- the Cholesky factor of
# L[m, m], C = inv(L[m, m]), B = -C L[m, o] and the log-density shift --
# computed once into a chunk-local pool. Its rows are then gathered into the
# current block of BLOCK rows, and their deviations y (y_o = x_o - mu_o,
# y_m = B y_o; diag: y_m = 0) and log-density constants are written per row.
# Blocks pool rows across patterns: once y is known the Mahalanobis distance,
# responsibilities and moments do not depend on the pattern, so a full block
# goes through the same constant-width primitives as complete data, whatever
# the number of rows per pattern (at 10% NaN over 16 features most patterns
# hold one to five rows). The (m, m) correction, (sum of r over the segment)
# * C, is added once per segment after the block holding its last row; the C
# of segments still waiting for that stay in the pool (K d (d + 7) doubles:
# any one pattern's B and C fit), which flushes a block early when it runs
# out. Everything runs in float64 (X is widened on load), like the reference.

cdef double _LOG_2PI = 1.8378770664093453  # log(2 pi)


cdef inline Py_ssize_t _round8(Py_ssize_t n) noexcept nogil:
    return (n + 7) & ~(<Py_ssize_t>7)


cdef inline Py_ssize_t _segment_of(const long long* ptr, Py_ssize_t n_pat,
                                   Py_ssize_t j) noexcept nogil:
    """The last pattern p < n_pat with ptr[p] <= j (ptr[0] <= j)."""
    cdef Py_ssize_t lo = 0, hi = n_pat, mid
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ptr[mid] <= j:
            lo = mid
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _pattern_of(const floating* x0, Py_ssize_t d, Py_ssize_t* mi,
                                   Py_ssize_t* oi) noexcept nogil:
    """Missing coordinates of row x0 into mi, observed ones into oi; returns |m|."""
    cdef Py_ssize_t a, nm = 0, no = 0
    for a in range(d):
        if x0[a] != x0[a]:
            mi[nm] = a
            nm += 1
        else:
            oi[no] = a
            no += 1
    return nm


cdef int _conditionals(Py_ssize_t d, Py_ssize_t K, bint full, const double* pc,
                       const double* prec, const Py_ssize_t* mi, Py_ssize_t nm,
                       const Py_ssize_t* oi, double* B, double* C, double* shift,
                       double* work) noexcept nogil:
    """A pattern's conditionals under each component k.

    full: B + k nm ldb gets B (nm x no, rows zero-padded to ldb = no rounded up to
    8) and C + k nm^2 gets C (nm x nm), row-major; diag: C + k nm gets the
    diagonal of C. shift[k] = nm/2 log(2 pi) - 1/2 log det L[m, m]. work holds
    2 nm^2 + nm no doubles. Returns 1 if some L[m, m] is not positive definite,
    else 0.
    """
    cdef Py_ssize_t no = d - nm, ldb = _round8(d - nm), i, j, t, k
    cdef double s, v, half_logdet
    cdef double* G = work            # Cholesky factor of L[m, m] (lower)
    cdef double* H = work + nm * nm  # its inverse (lower); diagonal: 1 / G_ii
    cdef double* Lmo = H + nm * nm   # L[m, o], gathered once
    cdef double* Bk
    cdef double* Ck
    cdef double* brow
    cdef const double* L
    cdef const double* lrow
    for k in range(K):
        if not full:
            Ck = C + k * nm
            s = 0.0
            for i in range(nm):
                v = pc[k * d + mi[i]]
                Ck[i] = 1.0 / (v * v)
                s += log(v)
            shift[k] = 0.5 * nm * _LOG_2PI - s
            continue
        L = prec + k * d * d
        Bk = B + k * nm * ldb
        Ck = C + k * nm * nm
        half_logdet = 0.0
        for i in range(nm):
            lrow = L + mi[i] * d
            for j in range(i + 1):
                s = lrow[mi[j]]
                for t in range(j):
                    s = s - G[i * nm + t] * G[j * nm + t]
                if i == j:
                    if not s > 0.0:  # also catches NaN
                        return 1
                    s = sqrt(s)
                    G[i * nm + i] = s
                    H[i * nm + i] = 1.0 / s
                    half_logdet += log(s)
                else:
                    G[i * nm + j] = s * H[j * nm + j]
        for j in range(nm):  # H = inv(G), column by column
            for i in range(j + 1, nm):
                s = 0.0
                for t in range(j, i):
                    s = s - G[i * nm + t] * H[t * nm + j]
                H[i * nm + j] = s * H[i * nm + i]
        for i in range(nm):  # C = H^T H
            for j in range(i, nm):
                s = 0.0
                for t in range(j, nm):
                    s = s + H[t * nm + i] * H[t * nm + j]
                Ck[i * nm + j] = s
                Ck[j * nm + i] = s
        for i in range(nm):
            lrow = L + mi[i] * d
            brow = Lmo + i * no
            for j in range(no):
                brow[j] = lrow[oi[j]]
        for i in range(nm):  # B = -C L[m, o], rows as vector updates
            brow = Bk + i * ldb
            for j in range(ldb):
                brow[j] = 0.0
            for t in range(nm):
                v = -Ck[i * nm + t]
                lrow = Lmo + t * no
                for j in range(no):
                    brow[j] = brow[j] + v * lrow[j]
        shift[k] = 0.5 * nm * _LOG_2PI - half_logdet
    return 0


cdef inline void _deviations(const double* xt, Py_ssize_t d, const double* mean, bint full,
                             const Py_ssize_t* mi, Py_ssize_t nm, const Py_ssize_t* oi,
                             const double* B, Py_ssize_t s0, Py_ssize_t s1, double* yo,
                             double* ct) noexcept nogil:
    """ct[a, r] = y[a] of the rows in slots s0 <= r < s1: x - mean on the observed
    coordinates, B y_o on the missing ones (full) or 0 (diag). yo: scratch of
    no rounded up to 8 doubles."""
    cdef Py_ssize_t no = d - nm, ldb = _round8(d - nm), r, t, i, a
    cdef double m, b0, b1, b2, b3
    cdef double dots[4]
    cdef double* dst
    cdef const double* src
    cdef const double* c0
    cdef const double* c1
    cdef const double* c2
    cdef const double* c3
    cdef const double* brow
    for t in range(no):
        a = oi[t]
        m = mean[a]
        dst = ct + a * BLOCK
        src = xt + a * BLOCK
        for r in range(s0, s1):
            dst[r] = src[r] - m
    if full and nm > 0 and s1 - s0 < 4:
        # few rows (most patterns hold one or two): per row, dot products of
        # the rows of B with y_o, four at a time
        for t in range(no, ldb):
            yo[t] = 0.0
        for r in range(s0, s1):
            for t in range(no):
                yo[t] = ct[oi[t] * BLOCK + r]
            i = 0
            while i + 4 <= nm:
                dots[0] = 0.0
                dots[1] = 0.0
                dots[2] = 0.0
                dots[3] = 0.0
                fastem_dot4_double(yo, B + i * ldb, ldb, ldb, dots)
                for t in range(4):
                    ct[mi[i + t] * BLOCK + r] = dots[t]
                i += 4
            while i < nm:
                ct[mi[i] * BLOCK + r] = fastem_dot_double(yo, B + i * ldb, ldb)
                i += 1
        return
    for i in range(nm):
        dst = ct + mi[i] * BLOCK
        for r in range(s0, s1):
            dst[r] = 0.0
        if not full:
            continue
        brow = B + i * ldb
        t = 0
        while t + 4 <= no:  # four inputs per pass over dst
            b0 = brow[t]
            b1 = brow[t + 1]
            b2 = brow[t + 2]
            b3 = brow[t + 3]
            c0 = ct + oi[t] * BLOCK
            c1 = ct + oi[t + 1] * BLOCK
            c2 = ct + oi[t + 2] * BLOCK
            c3 = ct + oi[t + 3] * BLOCK
            for r in range(s0, s1):
                dst[r] = dst[r] + c0[r] * b0 + c1[r] * b1 + c2[r] * b2 + c3[r] * b3
            t += 4
        while t < no:
            b0 = brow[t]
            c0 = ct + oi[t] * BLOCK
            for r in range(s0, s1):
                dst[r] = dst[r] + c0[r] * b0
            t += 1


cdef struct _MState:
    # shape, kind and model (means/pc in float64)
    Py_ssize_t d, K, dd
    bint full, em
    const double* means
    const double* pc
    const double* prec
    const double* cc
    # outputs: this chunk's partials (em) or the (n, k) log-densities
    double* nk
    double* sx
    double* sxx
    double* out
    double ll
    # the block: nb rows gathered so far
    Py_ssize_t nb
    double* xt      # d x BLOCK observed values
    double* ct      # K x d x BLOCK deviations y
    double* lpc     # K x BLOCK log-density constants
    double* lp      # K x BLOCK log-densities, then responsibilities
    double* pw      # d x BLOCK
    double* yb
    double* maha
    double* mx
    double* inv
    double* wb      # BLOCK weights
    long long* rid  # BLOCK row indices
    # pool of conditionals: the current segment's B and C, and the C of
    # segments whose last rows are in the block
    double* pool
    Py_ssize_t pool_size, pool_top, cur_off, cur_size
    # segments with rows in the block ("entries"; the last one may be open)
    Py_ssize_t ne
    bint open
    Py_ssize_t* e_s0
    Py_ssize_t* e_s1
    Py_ssize_t* e_nm
    Py_ssize_t* e_coff  # offset of the entry's C in the pool
    Py_ssize_t* e_mi    # (BLOCK + 1) x d missing coordinates
    double* e_r         # (BLOCK + 1) x K responsibility sums from earlier blocks
    double* rcur        # K: the open segment's sums from earlier blocks


cdef void _mflush(_MState* s) noexcept nogil:
    """Process the block: log-densities, then responsibilities, moments and the
    (m, m) corrections of finished segments (em) or the output rows."""
    # struct fields copied to locals: with -fno-strict-aliasing (Python's CFLAGS)
    # every store in a loop would otherwise reload them and block vectorization
    cdef Py_ssize_t d = s.d, K = s.K, nb = s.nb, k, r, a, e, i, i2, nm
    cdef double rs, tot
    cdef double* ct = s.ct
    cdef double* lp = s.lp
    cdef double* lpc = s.lpc
    cdef double* maha = s.maha
    cdef double* wb = s.wb
    cdef double* ctk
    cdef double* lpk
    cdef double* lpck
    cdef double* Ck
    cdef double* sxxk
    cdef const Py_ssize_t* mi
    if nb < BLOCK:  # padding rows: finite deviations, weight 0
        for k in range(K):
            for a in range(d):
                ctk = ct + (k * d + a) * BLOCK
                for r in range(nb, BLOCK):
                    ctk[r] = 0.0
            for r in range(nb, BLOCK):
                lpc[k * BLOCK + r] = 0.0
        for r in range(nb, BLOCK):
            wb[r] = 0.0
    for k in range(K):
        ctk = ct + k * d * BLOCK
        if s.full:
            _maha_full(ctk, d, s.pc + k * d * d, s.yb, maha)
        else:
            _maha_diag(ctk, d, s.pc + k * d, maha)
        lpk = lp + k * BLOCK
        lpck = lpc + k * BLOCK
        for r in range(BLOCK):
            lpk[r] = lpck[r] - 0.5 * maha[r]
    if not s.em:
        for r in range(nb):
            lpk = s.out + s.rid[r] * K
            for k in range(K):
                lpk[k] = lp[k * BLOCK + r]
    else:
        s.ll += _responsibilities(lp, K, nb, wb, s.mx, s.inv)
        for k in range(K):
            _accumulate(lp + k * BLOCK, ct + k * d * BLOCK, d, s.full, s.pw, s.pw,
                        s.nk + k, s.sx + k * d, s.sxx + k * s.dd)
        for e in range(s.ne):
            nm = s.e_nm[e]
            mi = s.e_mi + e * d
            for k in range(K):
                lpk = lp + k * BLOCK
                rs = 0.0
                for r in range(s.e_s0[e], s.e_s1[e]):
                    rs = rs + lpk[r]
                if s.open and e == s.ne - 1:
                    s.rcur[k] += rs
                    continue
                tot = s.e_r[e * K + k] + rs
                if tot == 0.0 or nm == 0:
                    continue
                sxxk = s.sxx + k * s.dd
                if s.full:  # upper triangle, mirrored after the reduction
                    Ck = s.pool + s.e_coff[e] + k * nm * nm
                    for i in range(nm):
                        for i2 in range(i, nm):
                            sxxk[mi[i] * d + mi[i2]] += tot * Ck[i * nm + i2]
                else:
                    Ck = s.pool + s.e_coff[e] + k * nm
                    for i in range(nm):
                        sxxk[mi[i]] += tot * Ck[i]
    # keep only the open segment: its conditionals move to the pool's start
    if s.open:
        e = s.ne - 1
        if s.cur_off > 0:
            memmove(s.pool, s.pool + s.cur_off, s.cur_size * sizeof(double))
        s.e_coff[0] = s.e_coff[e] - s.cur_off
        s.e_nm[0] = s.e_nm[e]
        if e > 0:
            memcpy(s.e_mi, s.e_mi + e * d, s.e_nm[e] * sizeof(Py_ssize_t))
        s.cur_off = 0
        s.pool_top = s.cur_size
        s.e_s0[0] = 0
        s.e_s1[0] = 0
        s.ne = 1
    else:
        s.pool_top = 0
        s.ne = 0
    s.nb = 0


cdef double _missing_chunk(const floating* X, const double* w, const long long* rows,
                           const long long* ptr, Py_ssize_t n_pat, Py_ssize_t j0,
                           Py_ssize_t j1, Py_ssize_t d, Py_ssize_t K, const double* means,
                           const double* pc, const double* prec, const double* cc, bint full,
                           bint em, double* nk, double* sx, double* sxx, double* out,
                           int* err) noexcept nogil:
    """One chunk (positions j0 <= j < j1 of rows): partial statistics into
    nk/sx/sxx and the returned log-likelihood (em), or rows of out."""
    cdef _MState s
    cdef Py_ssize_t p, j, hi, nm, no, ldb, k, r, t, a, take, pf, pf_end, need, e
    cdef double ck
    cdef double* B
    cdef double* C
    cdef double* shift
    cdef double* work
    cdef double* lpck
    cdef Py_ssize_t* mi
    cdef Py_ssize_t* oi
    cdef const floating* xr
    cdef long long row
    cdef Py_ssize_t nb
    cdef double* ct
    cdef double* xt
    cdef double* lpc
    cdef double* wb
    cdef double* yo
    cdef double* buf = <double*>fastem_aligned_alloc(  # blocks of BLOCK rows: aligned
        ((K + 2) * d * BLOCK + (2 * K + 6) * BLOCK + K * d * (d + 7) + 3 * d * d + 2 * K
         + (BLOCK + 1) * K + d + 8) * sizeof(double))
    cdef Py_ssize_t* ibuf = <Py_ssize_t*>malloc(
        (2 * d + 4 * (BLOCK + 1) + (BLOCK + 1) * d) * sizeof(Py_ssize_t))
    cdef long long* rid = <long long*>malloc(BLOCK * sizeof(long long))
    s.ll = 0.0
    if buf == NULL or ibuf == NULL or rid == NULL:
        err[0] = 1
        fastem_aligned_free(buf)
        free(ibuf)
        free(rid)
        return 0.0
    s.d = d
    s.K = K
    s.dd = d * d if full else d
    s.full = full
    s.em = em
    s.means = means
    s.pc = pc
    s.prec = prec
    s.cc = cc
    s.nk = nk
    s.sx = sx
    s.sxx = sxx
    s.out = out
    s.nb = 0
    s.ct = buf
    s.xt = s.ct + K * d * BLOCK
    s.pw = s.xt + d * BLOCK
    s.lpc = s.pw + d * BLOCK
    s.lp = s.lpc + K * BLOCK
    s.yb = s.lp + K * BLOCK
    s.maha = s.yb + BLOCK
    s.mx = s.maha + BLOCK
    s.inv = s.mx + BLOCK
    s.wb = s.inv + BLOCK
    s.pool = s.wb + BLOCK
    s.pool_size = K * d * (d + 7)  # holds any one pattern's B (padded) and C
    work = s.pool + s.pool_size  # 3 d^2
    shift = work + 3 * d * d
    s.rcur = shift + K
    s.e_r = s.rcur + K
    yo = s.e_r + (BLOCK + 1) * K  # d + 8
    s.rid = rid
    mi = ibuf
    oi = mi + d
    s.e_s0 = oi + d
    s.e_s1 = s.e_s0 + (BLOCK + 1)
    s.e_nm = s.e_s1 + (BLOCK + 1)
    s.e_coff = s.e_nm + (BLOCK + 1)
    s.e_mi = s.e_coff + (BLOCK + 1)
    ct = s.ct
    xt = s.xt
    lpc = s.lpc
    wb = s.wb
    s.pool_top = 0
    s.cur_off = 0
    s.cur_size = 0
    s.ne = 0
    s.open = False
    if em:
        memset(nk, 0, K * sizeof(double))
        memset(sx, 0, K * d * sizeof(double))
        memset(sxx, 0, K * s.dd * sizeof(double))
    memset(s.ct, 0, K * d * BLOCK * sizeof(double))
    p = _segment_of(ptr, n_pat, j0)
    j = j0
    pf = j0
    while j < j1:
        while ptr[p + 1] <= j:  # skip empty segments
            p += 1
        hi = ptr[p + 1] if ptr[p + 1] < j1 else j1
        nm = _pattern_of(X + rows[ptr[p]] * d, d, mi, oi)
        no = d - nm
        ldb = _round8(no)
        need = K * nm * (ldb + nm) if full else K * nm  # B and C, or the diagonal of C
        if s.pool_top + need > s.pool_size:
            _mflush(&s)  # no segment is open: empties the pool
        s.cur_off = s.pool_top
        s.cur_size = need
        B = s.pool + s.cur_off
        C = B + (K * nm * ldb if full else 0)
        if _conditionals(d, K, full, pc, prec, mi, nm, oi, B, C, shift, work):
            err[0] = 2
            break
        s.pool_top += need
        e = s.ne
        s.ne += 1
        s.e_s0[e] = s.nb
        s.e_s1[e] = s.nb
        s.e_nm[e] = nm
        s.e_coff[e] = C - s.pool
        memcpy(s.e_mi + e * d, mi, nm * sizeof(Py_ssize_t))
        s.open = True
        for k in range(K):
            s.rcur[k] = 0.0
        while j < hi:
            if s.nb == BLOCK:
                _mflush(&s)  # the open segment's conditionals may move
                B = s.pool + s.cur_off
                C = B + (K * nm * ldb if full else 0)
            pf_end = j + 2 * BLOCK if j + 2 * BLOCK < j1 else j1
            while pf < pf_end:  # rows are scattered over X: fetch ahead
                fastem_prefetch(X + rows[pf] * d)
                pf += 1
            nb = s.nb
            take = BLOCK - nb if BLOCK - nb < hi - j else hi - j
            for r in range(take):
                row = rows[j + r]
                xr = X + row * d
                rid[nb + r] = row
                if em:
                    wb[nb + r] = w[row]
                if no == d:
                    for a in range(d):
                        xt[a * BLOCK + nb + r] = xr[a]
                else:
                    for t in range(no):
                        a = oi[t]
                        xt[a * BLOCK + nb + r] = xr[a]
            for k in range(K):
                _deviations(xt, d, means + k * d, full, mi, nm, oi, B + k * nm * ldb, nb,
                            nb + take, yo, ct + k * d * BLOCK)
                ck = cc[k] + shift[k]
                lpck = lpc + k * BLOCK
                for r in range(nb, nb + take):
                    lpck[r] = ck
            s.nb = nb + take
            s.e_s1[s.ne - 1] = nb + take
            j += take
        # the segment is finished in this chunk: its sums so far go with its entry,
        # and only its C stays in the pool (over its B)
        e = s.ne - 1
        for k in range(K):
            s.e_r[e * K + k] = s.rcur[k]
        if full and nm > 0:
            memmove(s.pool + s.cur_off, s.pool + s.e_coff[e], K * nm * nm * sizeof(double))
            s.e_coff[e] = s.cur_off
            s.pool_top = s.cur_off + K * nm * nm
        s.open = False
    if err[0] == 0 and s.nb > 0:
        _mflush(&s)
    fastem_aligned_free(buf)
    free(ibuf)
    free(rid)
    return s.ll


cdef double _em_pass_missing(const floating[:, ::1] X, const double[::1] sw,
                             const long long[::1] rows, const long long[::1] ptr,
                             const double[:, ::1] means, const double* pc, const double* prec,
                             const double[::1] cc, double[::1] nk, double[:, ::1] sx,
                             double* sxx, bint full) except? -1.0:
    cdef Py_ssize_t d = X.shape[1], K = means.shape[0], n_pat = ptr.shape[0] - 1
    cdef Py_ssize_t dd = d * d if full else d
    cdef Py_ssize_t base = ptr[0], m = ptr[n_pat] - ptr[0]
    cdef Py_ssize_t nc = _n_chunks(m, K * (dd + d + 1)), c, k, a, b
    cdef int err = 0
    cdef double ll = 0.0, s
    cdef double[::1] ll_p = np.empty(nc)
    cdef double[:, ::1] nk_p = np.empty((nc, K))
    cdef double[:, :, ::1] sx_p = np.empty((nc, K, d))
    cdef double[:, :, ::1] sxx_p = np.empty((nc, K, dd))
    cdef const floating* xp = &X[0, 0]
    cdef const double* wp = &sw[0]
    cdef const long long* rp = &rows[0]
    cdef const long long* pp = &ptr[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            ll_p[c] = _missing_chunk(xp, wp, rp, pp, n_pat, base + c * m // nc,
                                     base + (c + 1) * m // nc, d, K, &means[0, 0], pc, prec,
                                     &cc[0], full, True, &nk_p[c, 0], &sx_p[c, 0, 0],
                                     &sxx_p[c, 0, 0], NULL, &err)
        if err == 0:
            ll = _sum_partials(ll_p, nk_p, sx_p, sxx_p, nk, sx, sxx, full)
    _raise_missing(err)
    return ll


cdef void _log_prob_missing(const floating[:, ::1] X, const long long[::1] rows,
                            const long long[::1] ptr, const double[:, ::1] means,
                            const double* pc, const double* prec, const double[::1] cc,
                            double[:, ::1] out, bint full) except *:
    cdef Py_ssize_t d = X.shape[1], K = means.shape[0], n_pat = ptr.shape[0] - 1
    cdef Py_ssize_t base = ptr[0], m = ptr[n_pat] - ptr[0]
    cdef Py_ssize_t nc = _n_chunks(m, 0), c
    cdef int err = 0
    cdef const floating* xp = &X[0, 0]
    cdef const long long* rp = &rows[0]
    cdef const long long* pp = &ptr[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            _missing_chunk(xp, NULL, rp, pp, n_pat, base + c * m // nc,
                           base + (c + 1) * m // nc, d, K, &means[0, 0], pc, prec, &cc[0], full,
                           False, NULL, NULL, NULL, &out[0, 0], &err)
    _raise_missing(err)


def _raise_missing(int err):
    if err == 1:
        raise MemoryError("fastem cython backend: could not allocate kernel scratch")
    if err == 2:
        raise np.linalg.LinAlgError(
            "precision submatrix L[m, m] of a missingness pattern is not positive definite")


def _em_missing_full_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                          const long long[::1] rows, const long long[::1] ptr,
                          const double[:, ::1] means, const double[:, :, ::1] prec_chol,
                          const double[:, :, ::1] precisions, const double[::1] comp_const,
                          double[::1] nk, double[:, ::1] sx, double[:, :, ::1] sxx):
    return _em_pass_missing(X, sample_weight, rows, ptr, means, &prec_chol[0, 0, 0],
                            &precisions[0, 0, 0], comp_const, nk, sx, &sxx[0, 0, 0], True)


def _em_missing_diag_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                          const long long[::1] rows, const long long[::1] ptr,
                          const double[:, ::1] means, const double[:, ::1] prec_chol,
                          const double[::1] comp_const, double[::1] nk, double[:, ::1] sx,
                          double[:, ::1] sxx):
    return _em_pass_missing(X, sample_weight, rows, ptr, means, &prec_chol[0, 0], NULL,
                            comp_const, nk, sx, &sxx[0, 0], False)


def _log_prob_missing_full_impl(const floating[:, ::1] X, const long long[::1] rows,
                                const long long[::1] ptr, const double[:, ::1] means,
                                const double[:, :, ::1] prec_chol,
                                const double[:, :, ::1] precisions,
                                const double[::1] comp_const, double[:, ::1] out):
    _log_prob_missing(X, rows, ptr, means, &prec_chol[0, 0, 0], &precisions[0, 0, 0],
                      comp_const, out, True)


def _log_prob_missing_diag_impl(const floating[:, ::1] X, const long long[::1] rows,
                                const long long[::1] ptr, const double[:, ::1] means,
                                const double[:, ::1] prec_chol, const double[::1] comp_const,
                                double[:, ::1] out):
    _log_prob_missing(X, rows, ptr, means, &prec_chol[0, 0], NULL, comp_const, out, False)


def _missing_args(X, rows, pattern_ptr, means, prec_chol, precisions=None):
    """Index arrays as contiguous int64, checked (so the kernels never read out of
    bounds); model arrays as contiguous float64, like the reference's upcasts."""
    if X.ndim != 2 or X.dtype not in (np.float32, np.float64):
        raise ValueError(f"X must be a 2-D float32/float64 array, got {X.dtype} {X.shape}")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    ptr = np.ascontiguousarray(pattern_ptr, dtype=np.int64)
    if rows.ndim != 1 or ptr.ndim != 1 or ptr.shape[0] < 1:
        raise ValueError("rows must be 1-D and pattern_ptr 1-D with at least one entry")
    lo, hi = int(ptr[0]), int(ptr[ptr.shape[0] - 1])  # no negative indices: wraparound=False
    if lo < 0 or hi > rows.shape[0] or np.any(np.diff(ptr) < 0):
        raise ValueError(
            f"pattern_ptr must be non-decreasing within [0, {rows.shape[0]}] (len(rows))")
    used = rows[lo:hi]
    if used.shape[0] and (used.min() < 0 or used.max() >= X.shape[0]):
        raise ValueError(f"rows must index rows of X (0 <= row < {X.shape[0]})")
    means = np.ascontiguousarray(means, dtype=np.float64)
    prec_chol = np.ascontiguousarray(prec_chol, dtype=np.float64)
    if precisions is not None:
        precisions = np.ascontiguousarray(precisions, dtype=np.float64)
    return rows, ptr, used.shape[0], means, prec_chol, precisions


def em_pass_missing_full(X, sample_weight, rows, pattern_ptr, means, prec_chol, precisions,
                         comp_const, nk, sx, sxx):
    rows, ptr, m, means, prec_chol, precisions = _missing_args(
        X, rows, pattern_ptr, means, prec_chol, precisions)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("sample_weight", sample_weight, (n,)), ("means", means, (k, d)),
                  ("prec_chol", prec_chol, (k, d, d)), ("precisions", precisions, (k, d, d)),
                  ("comp_const", comp_const, (k,)), ("nk", nk, (k,)), ("sx", sx, (k, d)),
                  ("sxx", sxx, (k, d, d))])
    if m == 0:
        nk[...] = 0.0
        sx[...] = 0.0
        sxx[...] = 0.0
        return 0.0
    return _em_missing_full_impl(X, sample_weight, rows, ptr, means, prec_chol, precisions,
                                 comp_const, nk, sx, sxx)


def em_pass_missing_diag(X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const,
                         nk, sx, sxx):
    rows, ptr, m, means, prec_chol, _ = _missing_args(X, rows, pattern_ptr, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("sample_weight", sample_weight, (n,)), ("means", means, (k, d)),
                  ("prec_chol", prec_chol, (k, d)), ("comp_const", comp_const, (k,)),
                  ("nk", nk, (k,)), ("sx", sx, (k, d)), ("sxx", sxx, (k, d))])
    if m == 0:
        nk[...] = 0.0
        sx[...] = 0.0
        sxx[...] = 0.0
        return 0.0
    return _em_missing_diag_impl(X, sample_weight, rows, ptr, means, prec_chol, comp_const,
                                 nk, sx, sxx)


def log_prob_missing_full(X, rows, pattern_ptr, means, prec_chol, precisions, comp_const, out):
    rows, ptr, m, means, prec_chol, precisions = _missing_args(
        X, rows, pattern_ptr, means, prec_chol, precisions)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("means", means, (k, d)), ("prec_chol", prec_chol, (k, d, d)),
                  ("precisions", precisions, (k, d, d)), ("comp_const", comp_const, (k,)),
                  ("out", out, (n, k))])
    if m:
        _log_prob_missing_full_impl(X, rows, ptr, means, prec_chol, precisions, comp_const,
                                    out)


def log_prob_missing_diag(X, rows, pattern_ptr, means, prec_chol, comp_const, out):
    rows, ptr, m, means, prec_chol, _ = _missing_args(X, rows, pattern_ptr, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("means", means, (k, d)), ("prec_chol", prec_chol, (k, d)),
                  ("comp_const", comp_const, (k,)), ("out", out, (n, k))])
    if m:
        _log_prob_missing_diag_impl(X, rows, ptr, means, prec_chol, comp_const, out)


# --------------------------------------------------------------- imputation
#
# impute_missing_full: each pattern segment of a chunk gets its regressions B
# from _conditionals (once per segment), then every row's missing coordinates
# get sum_k r_k (mu_km + B_k (x_o - mu_ko)). Rows are written by one chunk
# each and computed the same way in any chunk: no reduction, so the result
# does not depend on the thread count. A one-pass, post-fit kernel: plain loops.

cdef void _impute_chunk(const floating* X, floating* out, const double* resp,
                        const long long* rows, const long long* ptr, Py_ssize_t n_pat,
                        Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t d, Py_ssize_t K,
                        const double* means, const double* prec, int* err) noexcept nogil:
    cdef Py_ssize_t ldb_max = _round8(d)
    cdef Py_ssize_t* mi = <Py_ssize_t*> malloc(2 * d * sizeof(Py_ssize_t))
    cdef double* buf = <double*> malloc(
        (K * d * ldb_max + K * d * d + K + 3 * d * d + 2 * d) * sizeof(double))
    cdef Py_ssize_t* oi
    cdef double* B
    cdef double* C
    cdef double* shift
    cdef double* work
    cdef double* yo
    cdef double* acc
    cdef Py_ssize_t j, jj, end, p, nm, no, ldb, k, a, t, i
    cdef double r, v
    cdef const floating* xi
    cdef const double* mk
    cdef const double* brow
    if mi == NULL or buf == NULL:
        err[0] = 1
        free(mi)
        free(buf)
        return
    oi = mi + d
    B = buf
    C = B + K * d * ldb_max
    shift = C + K * d * d
    work = shift + K
    yo = work + 3 * d * d
    acc = yo + d
    p = _segment_of(ptr, n_pat, j0)
    j = j0
    while j < j1 and err[0] == 0:
        while ptr[p + 1] <= j:  # skip empty patterns
            p += 1
        end = ptr[p + 1] if ptr[p + 1] < j1 else j1
        nm = _pattern_of(X + rows[j] * d, d, mi, oi)
        no = d - nm
        ldb = _round8(no)
        if nm > 0:
            if _conditionals(d, K, True, NULL, prec, mi, nm, oi, B, C, shift, work):
                err[0] = 2
                break
            for jj in range(j, end):
                i = rows[jj]
                xi = X + i * d
                for t in range(nm):
                    acc[t] = 0.0
                for k in range(K):
                    r = resp[i * K + k]
                    if r == 0.0:
                        continue
                    mk = means + k * d
                    for a in range(no):
                        yo[a] = <double> xi[oi[a]] - mk[oi[a]]
                    for t in range(nm):
                        brow = B + k * nm * ldb + t * ldb
                        v = mk[mi[t]]
                        for a in range(no):
                            v = v + brow[a] * yo[a]
                        acc[t] = acc[t] + r * v
                for t in range(nm):
                    out[i * d + mi[t]] = <floating> acc[t]
        j = end
    free(mi)
    free(buf)


def _impute_full_impl(const floating[:, ::1] X, const long long[::1] rows,
                      const long long[::1] ptr, const double[:, ::1] means,
                      const double[:, :, ::1] precisions, const double[:, ::1] resp,
                      floating[:, ::1] out):
    cdef Py_ssize_t d = X.shape[1], K = means.shape[0], n_pat = ptr.shape[0] - 1
    cdef Py_ssize_t base = ptr[0], m = ptr[n_pat] - ptr[0]
    cdef Py_ssize_t nc = (m + 255) // 256, c
    cdef int err = 0
    cdef const floating* xp = &X[0, 0]
    cdef floating* op = &out[0, 0]
    cdef const double* rp = &resp[0, 0]
    cdef const long long* rowp = &rows[0]
    cdef const long long* pp = &ptr[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            _impute_chunk(xp, op, rp, rowp, pp, n_pat, base + c * m // nc,
                          base + (c + 1) * m // nc, d, K, &means[0, 0], &precisions[0, 0, 0],
                          &err)
    _raise_missing(err)


def impute_missing_full(X, rows, pattern_ptr, means, precisions, resp, out):
    rows, ptr, m, means, _, precisions = _missing_args(
        X, rows, pattern_ptr, means, means, precisions)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("means", means, (k, d)), ("precisions", precisions, (k, d, d)),
                  ("resp", resp, (n, k))])
    if out.shape != (n, d) or out.dtype != X.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {X.dtype} array of shape {(n, d)}")
    if m:
        _impute_full_impl(X, rows, ptr, means, precisions, resp, out)


# The tied-covariance kernels for rows with missing values live in their own
# file (textually included: they use this module's fused types and helpers).
include "_cython_tied_missing.pxi"
