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
    /* fastem_hmm_mom of two coordinates (x, m) and (y, mm) against the same weights,
       interleaved: twice the independent accumulator chains, the same sums in the
       same order as two calls */
    static inline void fastem_hmm_mom2(const double *x, const double *y, const double *g,
                                       double m, double mm, Py_ssize_t n, double *s1,
                                       double *s2, double *t1, double *t2) {
        fastem_hmm_v4 a0 = {0, 0, 0, 0}, a1 = a0, q0 = a0, q1 = a0, x0, x1, g0, g1;
        fastem_hmm_v4 b0 = a0, b1 = a0, r0 = a0, r1 = a0, y0, y1, h0, h1;
        fastem_hmm_v4 mv = {m, m, m, m}, mw = {mm, mm, mm, mm};
        for (Py_ssize_t b = 0; b < n; b += 8) {
            memcpy(&g0, g + b, sizeof g0);
            memcpy(&g1, g + b + 4, sizeof g1);
            memcpy(&x0, x + b, sizeof x0);
            memcpy(&x1, x + b + 4, sizeof x1);
            memcpy(&y0, y + b, sizeof y0);
            memcpy(&y1, y + b + 4, sizeof y1);
            h0 = g0 * (y0 - mw);  /* before g0 becomes g0 * x0 */
            h1 = g1 * (y1 - mw);
            x0 -= mv;
            x1 -= mv;
            g0 *= x0;
            g1 *= x1;
            a0 += g0;
            a1 += g1;
            q0 += g0 * x0;
            q1 += g1 * x1;
            b0 += h0;
            b1 += h1;
            r0 += h0 * (y0 - mw);
            r1 += h1 * (y1 - mw);
        }
        *s1 = fastem_hmm_hsum(a0, a1);
        *s2 = fastem_hmm_hsum(q0, q1);
        *t1 = fastem_hmm_hsum(b0, b1);
        *t2 = fastem_hmm_hsum(r0, r1);
    }
    /* sum p over n values (n a multiple of 8), in the fixed order of fastem_hmm_dot */
    static inline double fastem_hmm_sum(const double *p, Py_ssize_t n) {
        fastem_hmm_v4 a0 = {0, 0, 0, 0}, a1 = a0, p0, p1;
        for (Py_ssize_t b = 0; b < n; b += 8) {
            memcpy(&p0, p + b, sizeof p0);
            memcpy(&p1, p + b + 4, sizeof p1);
            a0 += p0;
            a1 += p1;
        }
        return fastem_hmm_hsum(a0, a1);
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

    /* Lock-step forward-backward helpers. Four lanes (sequences) at a time; rows
       padded to Kp (a multiple of 4) columns with zeros, so every loop runs in whole
       4-wide vectors. Each output element is a sum in a fixed order (over i, then
       lane by lane), so the same bits on every run, without reassociation flags. */
    static inline fastem_hmm_v4 fastem_hmm_ld(const double *p) {
        fastem_hmm_v4 r;
        memcpy(&r, p, sizeof r);
        return r;
    }
    static inline void fastem_hmm_st(double *p, fastem_hmm_v4 r) { memcpy(p, &r, sizeof r); }
    static inline fastem_hmm_v4 fastem_hmm_bc(double x) {
        fastem_hmm_v4 r = {x, x, x, x};
        return r;
    }
    /* o_l[j] = s_l * sum_{i<K} x_l[i] M[i Kp + j] for j < Kp, lanes l = 0..3: rows of
       M as axpy into register accumulators (8 columns x 4 lanes: 8 independent FMA
       chains), no horizontal sums. Forward: M = A (pred = alpha A); backward:
       M = A^T (beta = A v). */
    static void fastem_hmm_mv4(const double *M, Py_ssize_t K, Py_ssize_t Kp,
                               const double *x0, const double *x1, const double *x2,
                               const double *x3, double *o0, double *o1, double *o2,
                               double *o3, double s0, double s1, double s2, double s3) {
        Py_ssize_t j = 0, i;
        const fastem_hmm_v4 z = {0, 0, 0, 0};
        for (; j + 8 <= Kp; j += 8) {
            fastem_hmm_v4 a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z,
                          a31 = z, m0, m1, b;
            const double *mr = M + j;
            for (i = 0; i < K; ++i, mr += Kp) {
                m0 = fastem_hmm_ld(mr);
                m1 = fastem_hmm_ld(mr + 4);
                b = fastem_hmm_bc(x0[i]); a00 += m0 * b; a01 += m1 * b;
                b = fastem_hmm_bc(x1[i]); a10 += m0 * b; a11 += m1 * b;
                b = fastem_hmm_bc(x2[i]); a20 += m0 * b; a21 += m1 * b;
                b = fastem_hmm_bc(x3[i]); a30 += m0 * b; a31 += m1 * b;
            }
            fastem_hmm_st(o0 + j, a00 * s0); fastem_hmm_st(o0 + j + 4, a01 * s0);
            fastem_hmm_st(o1 + j, a10 * s1); fastem_hmm_st(o1 + j + 4, a11 * s1);
            fastem_hmm_st(o2 + j, a20 * s2); fastem_hmm_st(o2 + j + 4, a21 * s2);
            fastem_hmm_st(o3 + j, a30 * s3); fastem_hmm_st(o3 + j + 4, a31 * s3);
        }
        if (j < Kp) {  /* the last 4 columns */
            fastem_hmm_v4 a0 = z, a1 = z, a2 = z, a3 = z, m0;
            const double *mr = M + j;
            for (i = 0; i < K; ++i, mr += Kp) {
                m0 = fastem_hmm_ld(mr);
                a0 += m0 * fastem_hmm_bc(x0[i]);
                a1 += m0 * fastem_hmm_bc(x1[i]);
                a2 += m0 * fastem_hmm_bc(x2[i]);
                a3 += m0 * fastem_hmm_bc(x3[i]);
            }
            fastem_hmm_st(o0 + j, a0 * s0);
            fastem_hmm_st(o1 + j, a1 * s1);
            fastem_hmm_st(o2 + j, a2 * s2);
            fastem_hmm_st(o3 + j, a3 * s3);
        }
    }
    /* x = p * b (Kp values), returns sum x in a fixed order */
    static inline double fastem_hmm_mulsum(const double *p, const double *b, double *x,
                                           Py_ssize_t Kp) {
        fastem_hmm_v4 a = {0, 0, 0, 0}, q;
        for (Py_ssize_t k = 0; k < Kp; k += 4) {
            q = fastem_hmm_ld(p + k) * fastem_hmm_ld(b + k);
            fastem_hmm_st(x + k, q);
            a += q;
        }
        return (a[0] + a[1]) + (a[2] + a[3]);
    }
    /* b = ok && x > 0 ? b * y * inv : 0 (Kp values): v of the backward sweep; a state
       with zero forward mass is on no path, so an inf there cannot turn into NaN */
    typedef long long fastem_hmm_m4 __attribute__((vector_size(32)));
    static inline void fastem_hmm_vmask(double *b, const double *y, const double *x,
                                        double inv, int ok, Py_ssize_t Kp) {
        if (!ok) {
            memset(b, 0, Kp * sizeof(double));
            return;
        }
        const fastem_hmm_v4 z = {0, 0, 0, 0};
        for (Py_ssize_t k = 0; k < Kp; k += 4) {
            fastem_hmm_v4 p = fastem_hmm_ld(b + k) * fastem_hmm_ld(y + k) * inv;
            fastem_hmm_m4 keep = (fastem_hmm_m4)(fastem_hmm_ld(x + k) > z);
            fastem_hmm_st(b + k, (fastem_hmm_v4)((fastem_hmm_m4)p & keep));
        }
    }
    /* outer[i Kp + j] += sum_{t<n} sum_l a_l[t Kp + i] v_l[(t + 1) Kp + j]: register
       tiles of 4 rows x 8 (then 4) columns, accumulated over all frames and lanes
       before one update of outer */
    static void fastem_hmm_outer4(const double *a0, const double *a1, const double *a2,
                                  const double *a3, const double *v0, const double *v1,
                                  const double *v2, const double *v3, Py_ssize_t n,
                                  Py_ssize_t Kp, double *outer) {
        const double *al[4] = {a0, a1, a2, a3};
        const double *vl[4] = {v0, v1, v2, v3};
        const fastem_hmm_v4 z = {0, 0, 0, 0};
        for (Py_ssize_t ib = 0; ib < Kp; ib += 4) {
            Py_ssize_t jb = 0;
            for (; jb + 8 <= Kp; jb += 8) {
                fastem_hmm_v4 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z,
                              c30 = z, c31 = z, w0, w1, b;
                for (Py_ssize_t t = 0; t < n; ++t) {
                    for (int l = 0; l < 4; ++l) {
                        const double *a = al[l] + t * Kp + ib;
                        const double *v = vl[l] + (t + 1) * Kp + jb;
                        w0 = fastem_hmm_ld(v);
                        w1 = fastem_hmm_ld(v + 4);
                        b = fastem_hmm_bc(a[0]); c00 += b * w0; c01 += b * w1;
                        b = fastem_hmm_bc(a[1]); c10 += b * w0; c11 += b * w1;
                        b = fastem_hmm_bc(a[2]); c20 += b * w0; c21 += b * w1;
                        b = fastem_hmm_bc(a[3]); c30 += b * w0; c31 += b * w1;
                    }
                }
                double *o = outer + ib * Kp + jb;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c00);
                fastem_hmm_st(o + 4, fastem_hmm_ld(o + 4) + c01);
                o += Kp;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c10);
                fastem_hmm_st(o + 4, fastem_hmm_ld(o + 4) + c11);
                o += Kp;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c20);
                fastem_hmm_st(o + 4, fastem_hmm_ld(o + 4) + c21);
                o += Kp;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c30);
                fastem_hmm_st(o + 4, fastem_hmm_ld(o + 4) + c31);
            }
            if (jb < Kp) {
                fastem_hmm_v4 c0 = z, c1 = z, c2 = z, c3 = z, w0;
                for (Py_ssize_t t = 0; t < n; ++t) {
                    for (int l = 0; l < 4; ++l) {
                        const double *a = al[l] + t * Kp + ib;
                        w0 = fastem_hmm_ld(vl[l] + (t + 1) * Kp + jb);
                        c0 += fastem_hmm_bc(a[0]) * w0;
                        c1 += fastem_hmm_bc(a[1]) * w0;
                        c2 += fastem_hmm_bc(a[2]) * w0;
                        c3 += fastem_hmm_bc(a[3]) * w0;
                    }
                }
                double *o = outer + ib * Kp + jb;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c0);
                o += Kp;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c1);
                o += Kp;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c2);
                o += Kp;
                fastem_hmm_st(o, fastem_hmm_ld(o) + c3);
            }
        }
    }
    """
    int fastem_hmm_team_size() noexcept nogil
    int fastem_hmm_max_threads() noexcept nogil
    double fastem_hmm_dotn(const double* p, const double* q, Py_ssize_t n) noexcept nogil
    void fastem_hmm_mv4(const double* M, Py_ssize_t K, Py_ssize_t Kp, const double* x0,
                        const double* x1, const double* x2, const double* x3, double* o0,
                        double* o1, double* o2, double* o3, double s0, double s1, double s2,
                        double s3) noexcept nogil
    double fastem_hmm_mulsum(const double* p, const double* b, double* x,
                             Py_ssize_t Kp) noexcept nogil
    void fastem_hmm_vmask(double* b, const double* y, const double* x, double inv, int ok,
                          Py_ssize_t Kp) noexcept nogil
    void fastem_hmm_outer4(const double* a0, const double* a1, const double* a2,
                           const double* a3, const double* v0, const double* v1,
                           const double* v2, const double* v3, Py_ssize_t n, Py_ssize_t Kp,
                           double* outer) noexcept nogil
    void fastem_hmm_mom2(const double* x, const double* y, const double* g, double m, double mm,
                         Py_ssize_t n, double* s1, double* s2, double* t1,
                         double* t2) noexcept nogil
    void fastem_hmm_mom(const double* x, const double* g, double m, Py_ssize_t n, double* s1,
                        double* s2) noexcept nogil
    double fastem_hmm_dot(const double* p, const double* q, Py_ssize_t n) noexcept nogil
    double fastem_hmm_sum(const double* p, Py_ssize_t n) noexcept nogil
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


#: Sequences run in lock-step, four per thread (the lanes of a batch): one
#: sequence's recursion is latency-bound (each frame waits for the last), four
#: independent ones fill the pipeline. Each lane does exactly one sequence's
#: arithmetic, so a sequence's results do not depend on its neighbours.
cdef enum:
    LANES = 4


cdef double _lane_rescue(const double* logB, Py_ssize_t K, Py_ssize_t Kp, Py_ssize_t t,
                         double* pred, double* x, double* b, double* m,
                         double* live) noexcept nogil:
    """The exact-shift redo of one lane's frame t (see :func:`_forward`), on the
    lane's rows; returns the frame's normalizer (1.0 if the sequence turns out
    impossible, which marks the lane dead)."""
    cdef Py_ssize_t k
    cdef double m2 = -INFINITY, v, a, s = 0.0
    cdef const double* row = logB + t * K
    cdef double* xt = x + t * Kp
    for k in range(K):
        v = (log(pred[k]) if pred[k] > 0.0 else -INFINITY) + row[k]
        xt[k] = v  # scratch: log pred + logB
        if v > m2:
            m2 = v
    if m2 == -INFINITY:
        live[0] = 0.0
        for k in range(K):
            xt[k] = pred[k]
        return 1.0
    for k in range(K):
        a = exp(xt[k] - m2)
        xt[k] = a
        s += a
        b[t * Kp + k] = exp(fmin(row[k] - m2, EXP_CAP))
    m[t] = m2
    return s


cdef void _fb_lanes(const double* logB, const int64_t* offsets, Py_ssize_t s0, Py_ssize_t nl,
                    Py_ssize_t K, Py_ssize_t Kp, Py_ssize_t T, const double* startprob,
                    const double* Ap, const double* Atp, const double* seq_weight,
                    double* gamma, double* loglik, double* outer, double* start,
                    double* b, double* x, double* y, double* c, double* m,
                    double* pred) noexcept nogil:
    """Forward-backward of sequences ``s0:s0 + nl`` (1 < nl <= LANES) in lock-step.
    Lane l keeps its shifted emissions, forward and backward variables in
    ``b``, ``x``, ``y`` + l T Kp ((T, Kp) each, columns K:Kp zero), normalizers
    and shifts in ``c``, ``m`` + l T; ``T`` is the batch's longest sequence,
    shorter lanes run on neutral frames (b = 1) that contribute nothing. ``x``
    holds ``c_t alpha_t`` (unnormalized: the division by ``c_t`` is off the
    recursion's critical path, in the next prediction). ``Ap``/``Atp`` are A and
    A^T with rows padded to Kp. Adds ``sum_l w_l sum_t alpha_t v_t+1^T`` into
    ``outer`` (Kp, Kp) and ``sum_l w_l gamma_l0`` into ``start``."""
    cdef Py_ssize_t L[LANES]
    cdef double live[LANES]
    cdef double cc[LANES]
    cdef double inv[LANES]
    cdef double* bl[LANES]
    cdef double* xl[LANES]
    cdef double* yl[LANES]
    cdef double* cl[LANES]
    cdef double* ml[LANES]
    cdef double* pl[LANES]
    cdef Py_ssize_t ln, t, k, u, lo, Tl, first_pad, TK = T * Kp
    cdef double mx, ll, g, iv, w, f
    cdef const double* row
    cdef double* bt
    cdef bint rescue
    for ln in range(LANES):
        bl[ln] = b + ln * TK
        xl[ln] = x + ln * TK
        yl[ln] = y + ln * TK
        cl[ln] = c + ln * T
        ml[ln] = m + ln * T
        pl[ln] = pred + ln * Kp
    # shifted emissions, lane by lane: row maxima, then the exponentials in one flat
    # loop over the lane's rows (the padding columns get exp(-inf) = 0); frames past
    # a lane's end (and every frame of an impossible sequence) are neutral: b = 1
    for ln in range(LANES):
        Tl = offsets[s0 + ln + 1] - offsets[s0 + ln] if ln < nl else 0
        lo = offsets[s0 + ln] if ln < nl else 0
        L[ln] = Tl
        live[ln] = 1.0 if Tl > 0 else 0.0
        for t in range(Tl):
            row = logB + (lo + t) * K
            bt = bl[ln] + t * Kp
            mx = -INFINITY
            for k in range(K):
                if row[k] > mx:
                    mx = row[k]
            if mx == -INFINITY:  # an impossible frame: the sequence has probability 0
                live[ln] = 0.0
                break
            ml[ln][t] = mx
            for k in range(K):
                bt[k] = row[k] - mx
            for k in range(K, Kp):
                bt[k] = -INFINITY
        first_pad = Tl if live[ln] > 0.0 else 0
        bt = bl[ln]
        for k in range(first_pad * Kp):
            bt[k] = fastem_hmm_exp(bt[k])
        for t in range(first_pad, T):
            ml[ln][t] = 0.0
            bt = bl[ln] + t * Kp
            for k in range(K):
                bt[k] = 1.0
            for k in range(K, Kp):
                bt[k] = 0.0
        for k in range(K):
            pl[ln][k] = startprob[k]
        for k in range(K, Kp):
            pl[ln][k] = 0.0
    # forward: x_t = pred * b_t, c_t = sum x_t, pred = (x_t / c_t) A
    for t in range(T):
        rescue = False
        for ln in range(LANES):
            cc[ln] = fastem_hmm_mulsum(pl[ln], bl[ln] + t * Kp, xl[ln] + t * Kp, Kp)
            rescue = rescue or cc[ln] < TINY
        if rescue:
            for ln in range(LANES):
                if cc[ln] < TINY:
                    if t < L[ln] and live[ln] > 0.0:
                        cc[ln] = _lane_rescue(logB + offsets[s0 + ln] * K, K, Kp, t, pl[ln],
                                              xl[ln], bl[ln], ml[ln], &live[ln])
                    else:  # a neutral frame of a finished or dead lane: no NaN from it
                        cc[ln] = 1.0
        for ln in range(LANES):
            cl[ln][t] = cc[ln]
            inv[ln] = 1.0 / cc[ln]
        fastem_hmm_mv4(Ap, K, Kp, xl[0] + t * Kp, xl[1] + t * Kp, xl[2] + t * Kp,
                       xl[3] + t * Kp, pl[0], pl[1], pl[2], pl[3], inv[0], inv[1], inv[2],
                       inv[3])
    # backward: b_t+1 becomes v_t+1 = b * beta / c (0 off the sequence or on an
    # unreachable state), beta_t = A v_t+1 (1 at and after a lane's last frame)
    for ln in range(LANES):
        bt = yl[ln] + (T - 1) * Kp
        for k in range(K):
            bt[k] = 1.0
        for k in range(K, Kp):
            bt[k] = 0.0
    for t in range(T - 2, -1, -1):
        u = t + 1
        for ln in range(LANES):
            fastem_hmm_vmask(bl[ln] + u * Kp, yl[ln] + u * Kp, xl[ln] + u * Kp, 1.0 / cl[ln][u],
                             u < L[ln] and live[ln] > 0.0, Kp)
        fastem_hmm_mv4(Atp, K, Kp, bl[0] + u * Kp, bl[1] + u * Kp, bl[2] + u * Kp,
                       bl[3] + u * Kp, yl[0] + t * Kp, yl[1] + t * Kp, yl[2] + t * Kp,
                       yl[3] + t * Kp, 1.0, 1.0, 1.0, 1.0)
        for ln in range(LANES):
            if u >= L[ln]:
                bt = yl[ln] + t * Kp
                for k in range(K):
                    bt[k] = 1.0
    # posteriors, log-likelihoods and start counts, lane by lane; then x_t becomes
    # w alpha_t (0 where it meets no v_t+1) for the transition counts
    for ln in range(LANES):
        Tl = L[ln]
        if ln < nl:
            lo = offsets[s0 + ln]
            if live[ln] == 0.0:
                loglik[s0 + ln] = -INFINITY
                memset(gamma + lo * K, 0, Tl * K * sizeof(double))
            else:
                ll = 0.0
                for t in range(Tl):  # TINY <= c <= K: the fast log's domain
                    ll = ll + (fastem_hmm_log(cl[ln][t]) + ml[ln][t])
                loglik[s0 + ln] = ll
                for t in range(Tl):
                    g = fastem_hmm_dotn(xl[ln] + t * Kp, yl[ln] + t * Kp, Kp)
                    iv = 1.0 / g
                    bt = gamma + (lo + t) * K
                    for k in range(K):
                        bt[k] = xl[ln][t * Kp + k] * yl[ln][t * Kp + k] * iv
                w = seq_weight[s0 + ln]
                for k in range(K):
                    start[k] += w * gamma[lo * K + k]
        w = seq_weight[s0 + ln] if ln < nl and live[ln] > 0.0 else 0.0
        for t in range(T - 1):
            bt = xl[ln] + t * Kp
            f = w / cl[ln][t] if t < Tl - 1 else 0.0
            for k in range(Kp):
                bt[k] = bt[k] * f
    fastem_hmm_outer4(xl[0], xl[1], xl[2], xl[3], bl[0], bl[1], bl[2], bl[3], T - 1, Kp, outer)


cdef void _fb_single(const double* logB, Py_ssize_t T, Py_ssize_t K, const double* startprob,
                     const double* A, const double* At, double w, double* gamma,
                     double* loglik, double* outer, double* start, double* b,
                     double* c) noexcept nogil:
    """Forward-backward of one sequence (rows of ``logB``; a batch of one)."""
    cdef Py_ssize_t k
    cdef double* pred = c + T
    cdef double* beta = pred + K
    cdef double* v = beta + K
    cdef double ll = _forward(logB, T, K, startprob, At, gamma, b, c, pred)
    loglik[0] = ll
    if ll == -INFINITY:  # an impossible sequence carries no information
        memset(gamma, 0, T * K * sizeof(double))
        return
    _backward(T, K, A, gamma, b, c, beta, v, w, outer)
    for k in range(K):
        start[k] += w * gamma[k]


cdef int _fb_group(Py_ssize_t ch, Py_ssize_t nc, const double* logB, const int64_t* offsets,
                   Py_ssize_t S, Py_ssize_t K, Py_ssize_t Kp, const double* startprob,
                   const double* A, const double* At, const double* Ap, const double* Atp,
                   const double* seq_weight, double* gamma, double* loglik, double* outer_p,
                   double* start_p) noexcept nogil:
    """Forward-backward of group ``ch``: the sequences of batches
    ``_lo(n_batches, nc, ch)`` to ``_lo(n_batches, nc, ch + 1)``, a batch being
    ``LANES`` consecutive sequences (the last one maybe fewer; a batch of one
    runs alone). The transition counts of the lanes go into a (Kp, Kp) scratch
    added into ``outer_p[ch]`` at the end, in a fixed order."""
    cdef Py_ssize_t n_batches = (S + LANES - 1) // LANES
    cdef Py_ssize_t s_lo = _lo(n_batches, nc, ch) * LANES
    cdef Py_ssize_t s_hi = min(_lo(n_batches, nc, ch + 1) * LANES, S)
    cdef Py_ssize_t s0, s, nl, T, i, j, t_lanes = 0, t_single = 0
    cdef double* outer = outer_p + ch * K * K
    cdef double* start = start_p + ch * K
    s0 = s_lo
    while s0 < s_hi:
        nl = min(<Py_ssize_t>LANES, s_hi - s0)
        for s in range(s0, s0 + nl):
            T = offsets[s + 1] - offsets[s]
            if nl > 1:
                t_lanes = max(t_lanes, T)
            else:
                t_single = max(t_single, T)
        s0 += LANES
    # lanes: b, x, y (LANES, T, Kp), c, m (LANES, T), pred (LANES, Kp), outer (Kp, Kp);
    # a batch of one: b (T, K), c (T,), pred, beta, v (K,)
    cdef Py_ssize_t n_lanes = LANES * (3 * t_lanes * Kp + 2 * t_lanes + Kp) + Kp * Kp
    cdef double* buf = <double*>malloc(
        (n_lanes + t_single * K + t_single + 3 * K) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* lb = buf
    cdef double* lx = lb + LANES * t_lanes * Kp
    cdef double* ly = lx + LANES * t_lanes * Kp
    cdef double* lc = ly + LANES * t_lanes * Kp
    cdef double* lm = lc + LANES * t_lanes
    cdef double* lp = lm + LANES * t_lanes
    cdef double* lo_outer = lp + LANES * Kp
    cdef double* sb = buf + n_lanes
    cdef double* sc = sb + t_single * K
    memset(lo_outer, 0, Kp * Kp * sizeof(double))
    s0 = s_lo
    while s0 < s_hi:
        nl = min(<Py_ssize_t>LANES, s_hi - s0)
        if nl > 1:
            T = 0
            for s in range(s0, s0 + nl):
                T = max(T, offsets[s + 1] - offsets[s])
            _fb_lanes(logB, offsets, s0, nl, K, Kp, T, startprob, Ap, Atp, seq_weight,
                      gamma, loglik, lo_outer, start, lb, lx, ly, lc, lm, lp)
        else:
            T = offsets[s0 + 1] - offsets[s0]
            _fb_single(logB + offsets[s0] * K, T, K, startprob, A, At, seq_weight[s0],
                       gamma + offsets[s0] * K, loglik + s0, outer, start, sb, sc)
        s0 += LANES
    for i in range(K):
        for j in range(K):
            outer[i * K + j] += lo_outer[i * Kp + j]
    free(buf)
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
    cdef double w, m, d, a0, a1 = 0.0, q1 = 0.0, a2 = 0.0, q2 = 0.0  # a1..q2: outputs
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
            a0 = fastem_hmm_sum(gk, MB)
            if a0 == 0.0:  # no weight in this block (a left-right model's zeros)
                continue
            nk[k] += a0
            if not full:
                j = 0
                while j + 2 <= D:  # two coordinates a pass: more independent chains
                    fastem_hmm_mom2(xt + j * MB, xt + (j + 1) * MB, gk, shift[k * D + j],
                                    shift[k * D + j + 1], MB, &a1, &q1, &a2, &q2)
                    sx[k * D + j] += a1
                    sxx[k * D + j] += q1
                    sx[k * D + j + 1] += a2
                    sxx[k * D + j + 1] += q2
                    j += 2
                if j < D:
                    fastem_hmm_mom(xt + j * MB, gk, shift[k * D + j], MB, &a1, &q1)
                    sx[k * D + j] += a1
                    sxx[k * D + j] += q1
                continue
            for j in range(D):
                m = shift[k * D + j]
                xj = xt + j * MB
                for b in range(MB):
                    d = xj[b] - m
                    dif[j * MB + b] = d
                    gd[j * MB + b] = gk[b] * d
                sx[k * D + j] += fastem_hmm_dot(gk, dif + j * MB, MB)
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
    cdef Py_ssize_t Kp = (K + 3) // 4 * 4
    cdef Py_ssize_t nc = _seq_chunks((S + LANES - 1) // LANES)  # groups of whole batches
    # A and A^T with rows padded to Kp columns (zeros) for the lanes' vector loops
    Ap_arr = np.zeros((K, Kp))
    Ap_arr[:, :K] = A_arr
    Atp_arr = np.zeros((K, Kp))
    Atp_arr[:, :K] = A_arr.T
    cdef const double[:, ::1] Ap = Ap_arr
    cdef const double[:, ::1] Atp = Atp_arr
    outer_p = np.zeros((max(nc, 1), K, K))
    start_p = np.zeros((max(nc, 1), K))
    cdef double[:, :, ::1] op = outer_p
    cdef double[:, ::1] st = start_p
    cdef int fail = 0
    if S > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(lb.shape[0] * K * K, nc)):
            if _fb_group(ch, nc, &lb[0, 0], &off[0], S, K, Kp, &sp[0], &A[0, 0], &At[0, 0],
                         &Ap[0, 0], &Atp[0, 0], &sw[0], &g[0, 0], &ll[0], &op[0, 0, 0],
                         &st[0, 0]) != 0:
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
