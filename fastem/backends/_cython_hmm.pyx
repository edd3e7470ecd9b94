# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, infer_types=False
"""Cython/OpenMP HMM kernels: the fallback of :mod:`fastem.backends._numba_hmm`.

Same entry points, signatures and semantics (the contract is the docstring of
:mod:`fastem.hmm._kernels_numpy`): the results go into the caller's arrays.
Optional entries: ``estep_diag`` (the fused diagonal-Gaussian E-step of
:func:`fastem.hmm._backend.estep_diag`) and ``component_logprob_diag``.

Lock-step
    Forward-backward, the filter and the fused E-step take the sequences in
    batches of ``LANES`` (four) consecutive ones and run their recursions in
    lock-step on one thread: one sequence's per-frame recursion is
    latency-bound, four independent ones fill the pipeline. Each lane keeps its
    own (T, Kp) rows, padded with zero columns to ``Kp``, a multiple of four
    states, so every per-frame product is whole 4-wide vectors (GNU C vector
    extensions): the prediction and backward products as register-tiled axpys
    over rows of A (8 states x 4 lanes of accumulators), the transition counts
    as 4 x 8 register tiles summed over frames and lanes. Forward variables stay
    unnormalized (``c_t alpha_t``: the division is off the recursion's critical
    path, in the next prediction). A batch of one sequence (the last, or one
    long sequence) runs the same code with one lane, and so does each sequence of
    an uneven batch (its frames less than ``LOCK_STEP_MIN_FILL`` times its longest
    sequence's, e.g. lengths (20000, 10, 10, 10)): lanes run every lane to the
    longest one's end, so such a batch runs one sequence at a time, as the Numba
    kernels do. Each lane does exactly one sequence's arithmetic, and every sum
    has a fixed order (no ``-ffast-math``), so a sequence's results do not
    depend on its neighbours' values; the one-lane product sums its terms in
    another order than the four-lane one, so whether its batch runs in lanes
    changes a sequence's last bits (as in the Numba kernels).
Determinism
    Batches are split into ``min(n_batches, MAX_CHUNKS)`` contiguous groups
    (sequences into ``min(S, MAX_CHUNKS)`` for Viterbi) and rows into a number
    of chunks fixed by the shape (the same rule as the Numba kernels), never by
    the thread count. ``prange`` hands out whole groups; each group accumulates
    its batches (rows) in order into its own slot of a partials array, and the
    slots are summed in group order afterwards, so the results are
    bit-identical on any number of OpenMP threads.
Threads
    The OpenMP thread count is the process's (``OMP_NUM_THREADS``, or what
    ``fastem.backends._cython.set_num_threads`` sets for the calling thread);
    both extensions share the one OpenMP runtime.
Memory
    A batch in flight holds, per lane, the shifted emissions, forward and
    backward variables of its longest sequence ((T, Kp) each) plus (T,)
    normalizers and shifts: O(T K) per sequence in flight; the fused E-step
    adds the batch's (rows, Kp) emissions and (rows, K) posteriors.
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY, exp, fmin, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

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
    static inline fastem_hmm_v4 fastem_hmm_v4_of(double a, double b, double c, double d) {
        fastem_hmm_v4 r = {a, b, c, d};
        return r;
    }
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
    /* o[j] = s * sum_{i<K} x[i] M[i Kp + j] for j < Kp, one lane: even and odd i in
       two sets of accumulators (4 chains of 8 columns, or 2 of the last 4), added at
       the end. */
    static void fastem_hmm_mv1(const double *M, Py_ssize_t K, Py_ssize_t Kp,
                               const double *x, double *o, double s) {
        Py_ssize_t j = 0, i;
        const fastem_hmm_v4 z = {0, 0, 0, 0};
        for (; j + 8 <= Kp; j += 8) {
            fastem_hmm_v4 a0 = z, a1 = z, b0 = z, b1 = z, p, q;
            const double *mr = M + j;
            for (i = 0; i + 2 <= K; i += 2, mr += 2 * Kp) {
                p = fastem_hmm_bc(x[i]);
                q = fastem_hmm_bc(x[i + 1]);
                a0 += fastem_hmm_ld(mr) * p;
                a1 += fastem_hmm_ld(mr + 4) * p;
                b0 += fastem_hmm_ld(mr + Kp) * q;
                b1 += fastem_hmm_ld(mr + Kp + 4) * q;
            }
            if (i < K) {
                p = fastem_hmm_bc(x[i]);
                a0 += fastem_hmm_ld(mr) * p;
                a1 += fastem_hmm_ld(mr + 4) * p;
            }
            fastem_hmm_st(o + j, (a0 + b0) * s);
            fastem_hmm_st(o + j + 4, (a1 + b1) * s);
        }
        if (j < Kp) {
            fastem_hmm_v4 a0 = z, b0 = z;
            const double *mr = M + j;
            for (i = 0; i + 2 <= K; i += 2, mr += 2 * Kp) {
                a0 += fastem_hmm_ld(mr) * fastem_hmm_bc(x[i]);
                b0 += fastem_hmm_ld(mr + Kp) * fastem_hmm_bc(x[i + 1]);
            }
            if (i < K)
                a0 += fastem_hmm_ld(mr) * fastem_hmm_bc(x[i]);
            fastem_hmm_st(o + j, (a0 + b0) * s);
        }
    }
    /* outer[i Kp + j] += sum_{t<n} sum_{l<nl} a_l[t Kp + i] v_l[(t + 1) Kp + j]:
       register tiles of 4 rows x 8 (then 4) columns, accumulated over all frames
       and lanes (in that order) before one update of outer */
    static void fastem_hmm_outer(double **al, double **vl, int nl, Py_ssize_t n,
                                 Py_ssize_t Kp, double *outer) {
        const fastem_hmm_v4 z = {0, 0, 0, 0};
        for (Py_ssize_t ib = 0; ib < Kp; ib += 4) {
            Py_ssize_t jb = 0;
            for (; jb + 8 <= Kp; jb += 8) {
                fastem_hmm_v4 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z,
                              c30 = z, c31 = z, w0, w1, b;
                for (Py_ssize_t t = 0; t < n; ++t) {
                    for (int l = 0; l < nl; ++l) {
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
                    for (int l = 0; l < nl; ++l) {
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
    /* One Viterbi step, vectorized over the destination states j < Kp:
       nd[j] = max_{i<K} (delta[i] + lt[i Kp + j]) and arg[j] its last maximizing i
       (>=: the predecessor hmmlearn's backtrack picks on an exact tie), two 4-column
       blocks a pass (independent chains). The same additions as the scalar loop. */
    static inline fastem_hmm_v4 fastem_hmm_sel(fastem_hmm_m4 m, fastem_hmm_v4 a,
                                               fastem_hmm_v4 b) {
        return (fastem_hmm_v4)(((fastem_hmm_m4)a & m) | ((fastem_hmm_m4)b & ~m));
    }
    static void fastem_hmm_vit_step(const double *delta, const double *lt, Py_ssize_t K,
                                    Py_ssize_t Kp, double *nd, int64_t *arg) {
        Py_ssize_t j = 0, i;
        for (; j < Kp; j += 8) {
            int two = j + 8 <= Kp;
            const double *lr = lt + j;
            fastem_hmm_v4 d = fastem_hmm_bc(delta[0]), c0, c1;
            fastem_hmm_v4 b0 = d + fastem_hmm_ld(lr), b1 = two ? d + fastem_hmm_ld(lr + 4) : d;
            fastem_hmm_m4 a0 = {0, 0, 0, 0}, a1 = a0, m0, m1;
            for (i = 1; i < K; ++i) {
                lr += Kp;
                d = fastem_hmm_bc(delta[i]);
                fastem_hmm_m4 iv = {i, i, i, i};
                c0 = d + fastem_hmm_ld(lr);
                m0 = (fastem_hmm_m4)(c0 >= b0);
                b0 = fastem_hmm_sel(m0, c0, b0);
                a0 = (iv & m0) | (a0 & ~m0);
                if (two) {
                    c1 = d + fastem_hmm_ld(lr + 4);
                    m1 = (fastem_hmm_m4)(c1 >= b1);
                    b1 = fastem_hmm_sel(m1, c1, b1);
                    a1 = (iv & m1) | (a1 & ~m1);
                }
            }
            fastem_hmm_st(nd + j, b0);
            memcpy(arg + j, &a0, sizeof a0);
            if (two) {
                fastem_hmm_st(nd + j + 4, b1);
                memcpy(arg + j + 4, &a1, sizeof a1);
            }
        }
    }
    /* Diagonal-Gaussian emission log-densities of one frame x (D values) for
       Kp (padded) states: out[k] = cc[k] - sum_j ((x_j - mu_jk) u_jk)^2 / 2, with the
       means and precision factors transposed ((D, Kp)), vectorized over states,
       each sum over j in order. */
    static void fastem_hmm_diag_row(const double *x, Py_ssize_t D, const double *mt,
                                    const double *ut, const double *cc, Py_ssize_t Kp,
                                    double *out) {
        const fastem_hmm_v4 z = {0, 0, 0, 0}, h = {0.5, 0.5, 0.5, 0.5};
        Py_ssize_t k = 0, j;
        for (; k + 8 <= Kp; k += 8) {
            fastem_hmm_v4 a0 = z, a1 = z, d0, d1, xv;
            for (j = 0; j < D; ++j) {
                xv = fastem_hmm_bc(x[j]);
                d0 = (xv - fastem_hmm_ld(mt + j * Kp + k)) * fastem_hmm_ld(ut + j * Kp + k);
                d1 = (xv - fastem_hmm_ld(mt + j * Kp + k + 4))
                     * fastem_hmm_ld(ut + j * Kp + k + 4);
                a0 += d0 * d0;
                a1 += d1 * d1;
            }
            fastem_hmm_st(out + k, fastem_hmm_ld(cc + k) - h * a0);
            fastem_hmm_st(out + k + 4, fastem_hmm_ld(cc + k + 4) - h * a1);
        }
        if (k < Kp) {
            fastem_hmm_v4 a0 = z, d0;
            for (j = 0; j < D; ++j) {
                d0 = (fastem_hmm_bc(x[j]) - fastem_hmm_ld(mt + j * Kp + k))
                     * fastem_hmm_ld(ut + j * Kp + k);
                a0 += d0 * d0;
            }
            fastem_hmm_st(out + k, fastem_hmm_ld(cc + k) - h * a0);
        }
    }
    /* Four rows of a row-major (rows, n) array (row stride ld), times the weights
       w[0..3], into columns 0..3 of a transposed (n, MB) block: 4 x 4 tiles
       transposed in registers (the same products as the scalar loop). */
    static inline void fastem_hmm_tr4(const double *a, Py_ssize_t ld, Py_ssize_t n,
                                      fastem_hmm_v4 w, double *out, Py_ssize_t mb) {
        const fastem_hmm_m4 lo = {0, 4, 2, 6}, hi = {1, 5, 3, 7};
        const fastem_hmm_m4 p0 = {0, 1, 4, 5}, p1 = {2, 3, 6, 7};
        Py_ssize_t k = 0;
        for (; k + 4 <= n; k += 4) {
            fastem_hmm_v4 r0 = fastem_hmm_ld(a + k), r1 = fastem_hmm_ld(a + ld + k);
            fastem_hmm_v4 r2 = fastem_hmm_ld(a + 2 * ld + k), r3 = fastem_hmm_ld(a + 3 * ld + k);
            fastem_hmm_v4 t0 = __builtin_shuffle(r0, r1, lo), t1 = __builtin_shuffle(r0, r1, hi);
            fastem_hmm_v4 t2 = __builtin_shuffle(r2, r3, lo), t3 = __builtin_shuffle(r2, r3, hi);
            fastem_hmm_st(out + k * mb, w * __builtin_shuffle(t0, t2, p0));
            fastem_hmm_st(out + (k + 1) * mb, w * __builtin_shuffle(t1, t3, p0));
            fastem_hmm_st(out + (k + 2) * mb, w * __builtin_shuffle(t0, t2, p1));
            fastem_hmm_st(out + (k + 3) * mb, w * __builtin_shuffle(t1, t3, p1));
        }
        for (; k < n; ++k) {
            out[k * mb] = w[0] * a[k];
            out[k * mb + 1] = w[1] * a[ld + k];
            out[k * mb + 2] = w[2] * a[2 * ld + k];
            out[k * mb + 3] = w[3] * a[3 * ld + k];
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
    void fastem_hmm_vit_step(const double* delta, const double* lt, Py_ssize_t K, Py_ssize_t Kp,
                             double* nd, int64_t* arg) noexcept nogil
    void fastem_hmm_diag_row(const double* x, Py_ssize_t D, const double* mt, const double* ut,
                             const double* cc, Py_ssize_t Kp, double* out) noexcept nogil
    ctypedef double v4 "fastem_hmm_v4"
    v4 fastem_hmm_v4_of "fastem_hmm_v4_of"(double a, double b, double c, double d) noexcept nogil
    void fastem_hmm_tr4(const double* a, Py_ssize_t ld, Py_ssize_t n, v4 w, double* out,
                        Py_ssize_t mb) noexcept nogil
    void fastem_hmm_mv1(const double* M, Py_ssize_t K, Py_ssize_t Kp, const double* x,
                        double* o, double s) noexcept nogil
    void fastem_hmm_outer(double** al, double** vl, int nl, Py_ssize_t n, Py_ssize_t Kp,
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


#: Sequences run in lock-step, four per thread (the lanes of a batch): one
#: sequence's recursion is latency-bound (each frame waits for the last), four
#: independent ones fill the pipeline. Each lane does exactly one sequence's
#: arithmetic, so a sequence's results do not depend on its neighbours. A batch
#: of one (the last sequence) runs on the same code with one lane.
cdef enum:
    LANES = 4
    #: A batch runs in lock-step only if its frames add up to at least this many
    #: times its longest sequence's (the Numba kernels' rule): lanes run to the
    #: longest one's end, and a lock-step frame of four lanes costs more than a
    #: frame of one sequence alone.
    LOCK_STEP_MIN_FILL = 2


cdef inline bint _lock_step(const int64_t* offsets, Py_ssize_t s0,
                            Py_ssize_t nl) noexcept nogil:
    """Whether the batch of sequences ``s0:s0 + nl`` runs in lock-step lanes (more
    than one sequence, lengths even enough; see ``LOCK_STEP_MIN_FILL``)."""
    cdef Py_ssize_t s, T, total = 0, longest = 0
    if nl <= 1:
        return False
    for s in range(s0, s0 + nl):
        T = offsets[s + 1] - offsets[s]
        total += T
        longest = max(longest, T)
    return total >= LOCK_STEP_MIN_FILL * longest


def _lock_step_py(offsets, Py_ssize_t s0, Py_ssize_t nl):
    """:func:`_lock_step` for the tests."""
    cdef const int64_t[::1] off = _in(offsets, np.int64)
    return bool(_lock_step(&off[0], s0, nl))


cdef struct Lanes:
    # per lane: shifted emissions b, forward variables x, backward variables y
    # ((T, Kp) each, columns K:Kp zero), normalizers c and shifts m ((T,) each),
    # the prediction pred (Kp,); the lane's length L and liveness
    double* b[LANES]
    double* x[LANES]
    double* y[LANES]
    double* c[LANES]
    double* m[LANES]
    double* pred[LANES]
    Py_ssize_t L[LANES]
    double live[LANES]
    # frame r of the data is row r - base of logB (stride ld) and of gamma (stride K)
    Py_ssize_t base
    Py_ssize_t ld


cdef void _lanes_init(Lanes* ln, int nlanes, Py_ssize_t T, Py_ssize_t Kp, double* buf,
                      Py_ssize_t base, Py_ssize_t ld) noexcept nogil:
    """Carve one batch's scratch (``nlanes * (3 T Kp + 2 T + Kp)`` values) into lanes;
    the batch's frames are rows ``offsets[s] - base`` on of logB (row stride ``ld``)
    and of gamma."""
    cdef int l
    ln.base = base
    ln.ld = ld
    for l in range(nlanes):
        ln.b[l] = buf + l * T * Kp
        ln.x[l] = buf + (nlanes + l) * T * Kp
        ln.y[l] = buf + (2 * nlanes + l) * T * Kp
        ln.c[l] = buf + 3 * nlanes * T * Kp + l * T
        ln.m[l] = buf + 3 * nlanes * T * Kp + (nlanes + l) * T
        ln.pred[l] = buf + 3 * nlanes * T * Kp + 2 * nlanes * T + l * Kp


cdef double _lane_rescue(const double* logB, Py_ssize_t ld, Py_ssize_t K, Py_ssize_t Kp,
                         Py_ssize_t t, double* pred, double* x, double* b, double* m,
                         double* live) noexcept nogil:
    """The exact-shift redo of one lane's frame t, on the lane's rows (``logB``
    at its first frame): the predicted mass falls only where the shifted
    emissions underflow, so shift by ``max_k (log pred_k + logB_tk)``, which
    makes the largest term exactly 1. Returns the frame's normalizer (1.0 if the
    sequence turns out impossible, which marks the lane dead)."""
    cdef Py_ssize_t k
    cdef double m2 = -INFINITY, v, a, s = 0.0
    cdef const double* row = logB + t * ld
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


cdef void _lanes_forward(Lanes* ln, int nlanes, const double* logB, const int64_t* offsets,
                         Py_ssize_t s0, Py_ssize_t nl, Py_ssize_t K, Py_ssize_t Kp,
                         Py_ssize_t T, const double* startprob,
                         const double* Ap) noexcept nogil:
    """Emissions and forward pass of sequences ``s0:s0 + nl`` (nl <= nlanes, nlanes
    1 or ``LANES``) in lock-step; ``T`` is the batch's longest sequence, shorter
    lanes run on neutral frames (b = 1) that contribute nothing. ``x_t`` holds
    ``c_t alpha_t`` (unnormalized: the division by ``c_t`` is off the
    recursion's critical path, in the next prediction). ``Ap`` is A with rows
    padded to Kp."""
    cdef Py_ssize_t t, k, lo, Tl, first_pad
    cdef int l
    cdef double mx
    cdef double cc[LANES]
    cdef double inv[LANES]
    cdef const double* row
    cdef double* bt
    cdef bint rescue
    # shifted emissions, lane by lane: row maxima, then the exponentials in one flat
    # loop over the lane's rows (the padding columns get exp(-inf) = 0); frames past
    # a lane's end (and every frame of an impossible sequence) are neutral: b = 1
    for l in range(nlanes):
        Tl = offsets[s0 + l + 1] - offsets[s0 + l] if l < nl else 0
        lo = offsets[s0 + l] if l < nl else 0
        ln.L[l] = Tl
        ln.live[l] = 1.0 if Tl > 0 else 0.0
        for t in range(Tl):
            row = logB + (lo - ln.base + t) * ln.ld
            bt = ln.b[l] + t * Kp
            mx = -INFINITY
            for k in range(K):
                if row[k] > mx:
                    mx = row[k]
            if mx == -INFINITY:  # an impossible frame: the sequence has probability 0
                ln.live[l] = 0.0
                break
            ln.m[l][t] = mx
            for k in range(K):
                bt[k] = row[k] - mx
            for k in range(K, Kp):
                bt[k] = -INFINITY
        first_pad = Tl if ln.live[l] > 0.0 else 0
        bt = ln.b[l]
        for k in range(first_pad * Kp):
            bt[k] = fastem_hmm_exp(bt[k])
        for t in range(first_pad, T):
            ln.m[l][t] = 0.0
            bt = ln.b[l] + t * Kp
            for k in range(K):
                bt[k] = 1.0
            for k in range(K, Kp):
                bt[k] = 0.0
        for k in range(K):
            ln.pred[l][k] = startprob[k]
        for k in range(K, Kp):
            ln.pred[l][k] = 0.0
    # x_t = pred * b_t, c_t = sum x_t, pred = (x_t / c_t) A
    for t in range(T):
        rescue = False
        for l in range(nlanes):
            cc[l] = fastem_hmm_mulsum(ln.pred[l], ln.b[l] + t * Kp, ln.x[l] + t * Kp, Kp)
            rescue = rescue or cc[l] < TINY
        if rescue:
            for l in range(nlanes):
                if cc[l] < TINY:
                    if t < ln.L[l] and ln.live[l] > 0.0:
                        cc[l] = _lane_rescue(logB + (offsets[s0 + l] - ln.base) * ln.ld, ln.ld,
                                             K, Kp, t, ln.pred[l], ln.x[l], ln.b[l], ln.m[l],
                                             &ln.live[l])
                    else:  # a neutral frame of a finished or dead lane: no NaN from it
                        cc[l] = 1.0
        for l in range(nlanes):
            ln.c[l][t] = cc[l]
            inv[l] = 1.0 / cc[l]
        if nlanes == LANES:
            fastem_hmm_mv4(Ap, K, Kp, ln.x[0] + t * Kp, ln.x[1] + t * Kp, ln.x[2] + t * Kp,
                           ln.x[3] + t * Kp, ln.pred[0], ln.pred[1], ln.pred[2], ln.pred[3],
                           inv[0], inv[1], inv[2], inv[3])
        else:
            fastem_hmm_mv1(Ap, K, Kp, ln.x[0] + t * Kp, ln.pred[0], inv[0])


cdef void _lanes_fb(Lanes* ln, int nlanes, const double* logB, const int64_t* offsets,
                    Py_ssize_t s0, Py_ssize_t nl, Py_ssize_t K, Py_ssize_t Kp, Py_ssize_t T,
                    const double* startprob, const double* Ap, const double* Atp,
                    const double* seq_weight, double* gamma, double* loglik, double* outer,
                    double* start) noexcept nogil:
    """Forward-backward of sequences ``s0:s0 + nl`` in lock-step (see
    :func:`_lanes_forward`). ``Atp`` is A^T with rows padded to Kp. Writes the
    posteriors and log-likelihoods; adds ``sum_l w_l sum_t alpha_t v_t+1^T`` into
    ``outer`` (Kp, Kp) and ``sum_l w_l gamma_l0`` into ``start``."""
    cdef Py_ssize_t t, k, u, lo, Tl
    cdef int l
    cdef double ll, g, iv, w, f
    cdef double* bt
    cdef double* xt
    cdef double* yt
    _lanes_forward(ln, nlanes, logB, offsets, s0, nl, K, Kp, T, startprob, Ap)
    # backward: b_t+1 becomes v_t+1 = b * beta / c (0 off the sequence or on an
    # unreachable state), beta_t = A v_t+1 (1 at and after a lane's last frame)
    for l in range(nlanes):
        bt = ln.y[l] + (T - 1) * Kp
        for k in range(K):
            bt[k] = 1.0
        for k in range(K, Kp):
            bt[k] = 0.0
    for t in range(T - 2, -1, -1):
        u = t + 1
        for l in range(nlanes):
            fastem_hmm_vmask(ln.b[l] + u * Kp, ln.y[l] + u * Kp, ln.x[l] + u * Kp,
                             1.0 / ln.c[l][u], u < ln.L[l] and ln.live[l] > 0.0, Kp)
        if nlanes == LANES:
            fastem_hmm_mv4(Atp, K, Kp, ln.b[0] + u * Kp, ln.b[1] + u * Kp, ln.b[2] + u * Kp,
                           ln.b[3] + u * Kp, ln.y[0] + t * Kp, ln.y[1] + t * Kp,
                           ln.y[2] + t * Kp, ln.y[3] + t * Kp, 1.0, 1.0, 1.0, 1.0)
        else:
            fastem_hmm_mv1(Atp, K, Kp, ln.b[0] + u * Kp, ln.y[0] + t * Kp, 1.0)
        for l in range(nlanes):
            if u >= ln.L[l]:
                bt = ln.y[l] + t * Kp
                for k in range(K):
                    bt[k] = 1.0
    # posteriors, log-likelihoods and start counts, lane by lane; then x_t becomes
    # w alpha_t (0 where it meets no v_t+1) for the transition counts
    for l in range(nlanes):
        Tl = ln.L[l]
        if l < nl:
            lo = offsets[s0 + l] - ln.base
            if ln.live[l] == 0.0:
                loglik[s0 + l] = -INFINITY
                memset(gamma + lo * K, 0, Tl * K * sizeof(double))
            else:
                ll = 0.0
                for t in range(Tl):  # TINY <= c <= K: the fast log's domain
                    ll = ll + (fastem_hmm_log(ln.c[l][t]) + ln.m[l][t])
                loglik[s0 + l] = ll
                for t in range(Tl):
                    xt = ln.x[l] + t * Kp
                    yt = ln.y[l] + t * Kp
                    iv = 1.0 / fastem_hmm_dotn(xt, yt, Kp)
                    bt = gamma + (lo + t) * K
                    for k in range(K):
                        bt[k] = xt[k] * yt[k] * iv
                w = seq_weight[s0 + l]
                for k in range(K):
                    start[k] += w * gamma[lo * K + k]
        w = seq_weight[s0 + l] if l < nl and ln.live[l] > 0.0 else 0.0
        for t in range(T - 1):
            bt = ln.x[l] + t * Kp
            f = w / ln.c[l][t] if t < Tl - 1 else 0.0
            for k in range(Kp):
                bt[k] = bt[k] * f
    fastem_hmm_outer(ln.x, ln.b, nlanes, T - 1, Kp, outer)


cdef Py_ssize_t _group_scratch(Py_ssize_t s_lo, Py_ssize_t s_hi, const int64_t* offsets,
                               Py_ssize_t Kp) noexcept nogil:
    """Values of scratch for the batches of sequences s_lo:s_hi: the largest
    batch's ``nlanes * (3 T Kp + 2 T + Kp)``."""
    cdef Py_ssize_t s0 = s_lo, s, nl, T, need = 0
    while s0 < s_hi:
        nl = min(<Py_ssize_t>LANES, s_hi - s0)
        T = 0
        for s in range(s0, s0 + nl):
            T = max(T, offsets[s + 1] - offsets[s])
        nl = LANES if _lock_step(offsets, s0, nl) else 1  # else one sequence at a time
        need = max(need, nl * (3 * T * Kp + 2 * T + Kp))
        s0 += LANES
    return need


cdef void _batch_fb(Lanes* ln, const double* logB, const int64_t* offsets, Py_ssize_t s0,
                    Py_ssize_t nl, Py_ssize_t K, Py_ssize_t Kp, Py_ssize_t T,
                    const double* startprob, const double* Ap, const double* Atp,
                    const double* seq_weight, double* gamma, double* loglik, double* outer,
                    double* start, double* buf, Py_ssize_t base,
                    Py_ssize_t ld) noexcept nogil:
    """Forward-backward of the batch ``s0:s0 + nl`` (longest sequence ``T``): in
    lock-step lanes, or, for a batch of one or of uneven lengths
    (:func:`_lock_step`), one sequence at a time on one lane sized to it."""
    cdef Py_ssize_t s, Ts
    if _lock_step(offsets, s0, nl):
        _lanes_init(ln, LANES, T, Kp, buf, base, ld)
        _lanes_fb(ln, LANES, logB, offsets, s0, nl, K, Kp, T, startprob, Ap, Atp,
                  seq_weight, gamma, loglik, outer, start)
        return
    for s in range(s0, s0 + nl):
        Ts = offsets[s + 1] - offsets[s]
        if Ts == 0:  # the models leave empty sequences out; probability 1, nothing else
            loglik[s] = 0.0
            continue
        _lanes_init(ln, 1, Ts, Kp, buf, base, ld)
        _lanes_fb(ln, 1, logB, offsets, s, 1, K, Kp, Ts, startprob, Ap, Atp, seq_weight,
                  gamma, loglik, outer, start)


cdef int _fb_group(Py_ssize_t ch, Py_ssize_t nc, const double* logB, const int64_t* offsets,
                   Py_ssize_t S, Py_ssize_t K, Py_ssize_t Kp, const double* startprob,
                   const double* Ap, const double* Atp, const double* seq_weight,
                   double* gamma, double* loglik, double* outer_p,
                   double* start_p) noexcept nogil:
    """Forward-backward of group ``ch``: the sequences of batches
    ``_lo(n_batches, nc, ch)`` to ``_lo(n_batches, nc, ch + 1)``, a batch being
    ``LANES`` consecutive sequences (the last one maybe fewer; a batch of one, or
    of uneven lengths, runs one sequence at a time: :func:`_batch_fb`). The
    transition counts go into a (Kp, Kp) scratch
    added into ``outer_p[ch]`` at the end."""
    cdef Py_ssize_t n_batches = (S + LANES - 1) // LANES
    cdef Py_ssize_t s_lo = _lo(n_batches, nc, ch) * LANES
    cdef Py_ssize_t s_hi = min(_lo(n_batches, nc, ch + 1) * LANES, S)
    cdef Py_ssize_t s0, s, nl, T, i, j
    cdef double* outer = outer_p + ch * K * K
    cdef double* start = start_p + ch * K
    cdef Lanes ln
    cdef Py_ssize_t need = _group_scratch(s_lo, s_hi, offsets, Kp)
    cdef double* buf = <double*>malloc((need + Kp * Kp) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* outer_kp = buf + need
    memset(outer_kp, 0, Kp * Kp * sizeof(double))
    s0 = s_lo
    while s0 < s_hi:
        nl = min(<Py_ssize_t>LANES, s_hi - s0)
        T = 0
        for s in range(s0, s0 + nl):
            T = max(T, offsets[s + 1] - offsets[s])
        _batch_fb(&ln, logB, offsets, s0, nl, K, Kp, T, startprob, Ap, Atp, seq_weight,
                  gamma, loglik, outer_kp, start, buf, 0, K)
        s0 += LANES
    for i in range(K):
        for j in range(K):
            outer[i * K + j] += outer_kp[i * Kp + j]
    free(buf)
    return 0


cdef void _filter_out(Lanes* ln, Py_ssize_t nl, const int64_t* offsets, Py_ssize_t s0,
                      Py_ssize_t K, Py_ssize_t Kp, double* filt,
                      double* loglik) noexcept nogil:
    """Filtered probabilities and log-likelihoods of lanes ``0:nl`` (sequences
    ``s0:s0 + nl``) after :func:`_lanes_forward`."""
    cdef Py_ssize_t t, k, lo
    cdef int l
    cdef double ll, iv
    cdef double* xt
    cdef double* ft
    for l in range(nl):
        lo = offsets[s0 + l]
        if ln.live[l] == 0.0:  # an impossible sequence: zero filtered probabilities
            loglik[s0 + l] = -INFINITY
            memset(filt + lo * K, 0, ln.L[l] * K * sizeof(double))
            continue
        ll = 0.0
        for t in range(ln.L[l]):
            ll = ll + (fastem_hmm_log(ln.c[l][t]) + ln.m[l][t])
            iv = 1.0 / ln.c[l][t]
            xt = ln.x[l] + t * Kp
            ft = filt + (lo + t) * K
            for k in range(K):
                ft[k] = xt[k] * iv
        loglik[s0 + l] = ll


cdef int _filter_group(Py_ssize_t ch, Py_ssize_t nc, const double* logB, const int64_t* offsets,
                       Py_ssize_t S, Py_ssize_t K, Py_ssize_t Kp, const double* startprob,
                       const double* Ap, double* filt, double* loglik) noexcept nogil:
    """Filtered probabilities ``alpha_t = x_t / c_t`` of the batches of group ``ch``
    (as :func:`_fb_group`), from the same lock-step forward pass."""
    cdef Py_ssize_t n_batches = (S + LANES - 1) // LANES
    cdef Py_ssize_t s_lo = _lo(n_batches, nc, ch) * LANES
    cdef Py_ssize_t s_hi = min(_lo(n_batches, nc, ch + 1) * LANES, S)
    cdef Py_ssize_t s0, s, nl, T
    cdef Lanes ln
    cdef double* buf = <double*>malloc(_group_scratch(s_lo, s_hi, offsets, Kp) * sizeof(double))
    if buf == NULL:
        return -1
    s0 = s_lo
    while s0 < s_hi:
        nl = min(<Py_ssize_t>LANES, s_hi - s0)
        T = 0
        for s in range(s0, s0 + nl):
            T = max(T, offsets[s + 1] - offsets[s])
        if _lock_step(offsets, s0, nl):
            _lanes_init(&ln, LANES, T, Kp, buf, 0, K)
            _lanes_forward(&ln, LANES, logB, offsets, s0, nl, K, Kp, T, startprob, Ap)
            _filter_out(&ln, nl, offsets, s0, K, Kp, filt, loglik)
        else:  # a batch of one, or uneven lengths: one sequence at a time
            for s in range(s0, s0 + nl):
                T = offsets[s + 1] - offsets[s]
                if T == 0:
                    loglik[s] = 0.0
                    continue
                _lanes_init(&ln, 1, T, Kp, buf, 0, K)
                _lanes_forward(&ln, 1, logB, offsets, s, 1, K, Kp, T, startprob, Ap)
                _filter_out(&ln, 1, offsets, s, K, Kp, filt, loglik)
        s0 += LANES
    free(buf)
    return 0


cdef int _viterbi_group(Py_ssize_t ch, Py_ssize_t nc, const double* logB,
                        const int64_t* offsets, Py_ssize_t S, Py_ssize_t K, Py_ssize_t Kp,
                        const double* log_startprob, const double* log_transmat,
                        int64_t* path, double* logprob) noexcept nogil:
    """Viterbi paths of the sequences of group ``ch``. ``log_transmat`` has rows
    padded to Kp columns (-inf), so each step runs in whole 4-wide vectors over
    the destination states; back pointers are (T, Kp)."""
    cdef Py_ssize_t s_lo = _lo(S, nc, ch), s_hi = _lo(S, nc, ch + 1)
    cdef Py_ssize_t s, lo, T, t, k, state, t_max = 1
    cdef double best
    cdef double* tmp
    cdef const double* row
    for s in range(s_lo, s_hi):
        T = offsets[s + 1] - offsets[s]
        if T > t_max:
            t_max = T
    cdef int64_t* back = <int64_t*>malloc(t_max * Kp * sizeof(int64_t))
    cdef double* dbuf = <double*>malloc(2 * Kp * sizeof(double))
    if back == NULL or dbuf == NULL:
        free(back)
        free(dbuf)
        return -1
    cdef double* delta = dbuf
    cdef double* new = dbuf + Kp
    for s in range(s_lo, s_hi):
        lo = offsets[s]
        T = offsets[s + 1] - lo
        for k in range(K):
            delta[k] = log_startprob[k] + logB[lo * K + k]
        for t in range(1, T):
            fastem_hmm_vit_step(delta, log_transmat, K, Kp, new, back + t * Kp)
            row = logB + (lo + t) * K
            for k in range(K):
                new[k] = new[k] + row[k]
            tmp = delta
            delta = new
            new = tmp
        state = 0
        best = -INFINITY
        for k in range(K):
            if delta[k] > best:
                best = delta[k]
                state = k
        logprob[s] = delta[state]
        for t in range(T - 1, -1, -1):
            path[lo + t] = state
            state = back[t * Kp + state]
    free(back)
    free(dbuf)
    return 0


# ------------------------------------------------------------------ moments


cdef enum:
    MB = 64  # rows per transposed moment block (a multiple of 8): (D + K) x MB in L1


cdef void _moments_rows(const floating_x* X, Py_ssize_t D, Py_ssize_t K, const double* gamma,
                        const double* row_weight, const double* shift, Py_ssize_t lo,
                        Py_ssize_t hi, double* buf, double* nk, double* sx, double* sxx,
                        bint full) noexcept nogil:
    """Add rows lo:hi into the partials ``nk``, ``sx``, ``sxx``, in blocks of ``MB``
    rows stored transposed ((D, MB) and (K, MB) in ``buf``, (3 D + K) MB values;
    the last block padded with zero weight), so the sums over rows run with unit
    stride in a fixed order. Row r's posteriors are ``gamma[r - lo]``. ``full``
    fills the upper triangle of each (D, D) block."""
    cdef Py_ssize_t start, nb, r, k, i, j, b
    cdef double w, m, d, a0, a1 = 0.0, q1 = 0.0, a2 = 0.0, q2 = 0.0  # a1..q2: outputs
    cdef double* xt = buf
    cdef double* gt = buf + D * MB
    cdef double* dif = gt + K * MB
    cdef double* gd = dif + D * MB
    cdef double* xj
    cdef double* gk
    start = lo
    while start < hi:
        nb = min(<Py_ssize_t>MB, hi - start)
        b = 0
        if floating_x is double:  # four rows at a time: 4 x 4 tiles transposed in registers
            while b + 4 <= nb:
                r = start + b
                fastem_hmm_tr4(&X[r * D], D, D, fastem_hmm_v4_of(1.0, 1.0, 1.0, 1.0), xt + b, MB)
                fastem_hmm_tr4(gamma + (r - lo) * K, K, K,
                               fastem_hmm_v4_of(row_weight[r], row_weight[r + 1],
                                                row_weight[r + 2], row_weight[r + 3]),
                               gt + b, MB)
                b += 4
        while b < MB:
            r = start + b
            if b < nb:
                w = row_weight[r]
                for j in range(D):
                    xt[j * MB + b] = <double>X[r * D + j]
                for k in range(K):
                    gt[k * MB + b] = w * gamma[(r - lo) * K + k]
            else:  # padding: zero weight
                for j in range(D):
                    xt[j * MB + b] = 0.0
                for k in range(K):
                    gt[k * MB + b] = 0.0
            b += 1
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


cdef int _moments_chunk(Py_ssize_t ch, Py_ssize_t nc, const floating_x* X, Py_ssize_t N,
                        Py_ssize_t D, Py_ssize_t K, const double* gamma,
                        const double* row_weight, const double* shift, double* nk_p,
                        double* sx_p, double* sxx_p, bint full) noexcept nogil:
    """Add the rows of chunk ``ch`` into its partials (:func:`_moments_rows`)."""
    cdef Py_ssize_t lo = _lo(N, nc, ch), hi = _lo(N, nc, ch + 1)
    cdef double* buf = <double*>malloc((3 * D + K) * MB * sizeof(double))
    if buf == NULL:
        return -1
    _moments_rows(X, D, K, gamma + lo * K, row_weight, shift, lo, hi, buf, nk_p + ch * K,
                  sx_p + ch * K * D, sxx_p + ch * K * (D * D if full else D), full)
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


# ------------------------------------------------------------------ fused E-step


cdef int _estep_diag_group(Py_ssize_t ch, Py_ssize_t nc, const double* X, Py_ssize_t D,
                           const int64_t* offsets, Py_ssize_t S, Py_ssize_t K, Py_ssize_t Kp,
                           const double* mt, const double* ut, const double* cc,
                           const double* startprob, const double* Ap, const double* Atp,
                           const double* seq_weight, const double* row_weight,
                           const double* shift, double* loglik, double* outer_p,
                           double* start_p, double* nk_p, double* sx_p,
                           double* sxx_p) noexcept nogil:
    """The batches of :func:`_fb_group`'s group ``ch``, each one's emissions
    computed into a (rows, Kp) scratch first, its posteriors into a (rows, K)
    scratch, and its moments about ``shift`` added into the group's partials
    right after: no (N, K) array, and a batch's rows stay in cache throughout."""
    cdef Py_ssize_t n_batches = (S + LANES - 1) // LANES
    cdef Py_ssize_t s_lo = _lo(n_batches, nc, ch) * LANES
    cdef Py_ssize_t s_hi = min(_lo(n_batches, nc, ch + 1) * LANES, S)
    cdef Py_ssize_t s0, s, nl, T, i, j, r, r0, nr, r_max = 0
    cdef double* outer = outer_p + ch * K * K
    cdef Lanes ln
    s0 = s_lo
    while s0 < s_hi:
        nl = min(<Py_ssize_t>LANES, s_hi - s0)
        r_max = max(r_max, offsets[s0 + nl] - offsets[s0])
        s0 += LANES
    cdef Py_ssize_t need = _group_scratch(s_lo, s_hi, offsets, Kp)
    cdef Py_ssize_t n_mom = (3 * D + K) * MB
    cdef double* buf = <double*>malloc(
        (need + Kp * Kp + r_max * (Kp + K) + n_mom) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* outer_kp = buf + need
    cdef double* lb = outer_kp + Kp * Kp
    cdef double* gam = lb + r_max * Kp
    cdef double* mom = gam + r_max * K
    memset(outer_kp, 0, Kp * Kp * sizeof(double))
    s0 = s_lo
    while s0 < s_hi:
        nl = min(<Py_ssize_t>LANES, s_hi - s0)
        r0 = offsets[s0]
        nr = offsets[s0 + nl] - r0
        T = 0
        for s in range(s0, s0 + nl):
            T = max(T, offsets[s + 1] - offsets[s])
        for r in range(nr):
            fastem_hmm_diag_row(X + (r0 + r) * D, D, mt, ut, cc, Kp, lb + r * Kp)
        _batch_fb(&ln, lb, offsets, s0, nl, K, Kp, T, startprob, Ap, Atp, seq_weight, gam,
                  loglik, outer_kp, start_p + ch * K, buf, r0, Kp)
        _moments_rows(X, D, K, gam, row_weight, shift, r0, r0 + nr, mom, nk_p + ch * K,
                      sx_p + ch * K * D, sxx_p + ch * K * D, False)
        s0 += LANES
    for i in range(K):
        for j in range(K):
            outer[i * K + j] += outer_kp[i * Kp + j]
    free(buf)
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


def _padded(a, Py_ssize_t Kp, double fill=0.0):
    """``a`` (K, K) with rows padded to Kp columns of ``fill``: the vector loops run
    over whole 4-wide vectors."""
    out = np.full((a.shape[0], Kp), fill)
    out[:, : a.shape[1]] = a
    return out


def forward_backward(logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    cdef const double[:, ::1] lb = _in(logB)
    cdef const int64_t[::1] off = _in(offsets, np.int64)
    cdef const double[::1] sp = _in(startprob)
    A_arr = _in(transmat)
    cdef const double[::1] sw = _in(seq_weight)
    g_buf, ll_buf = _out(gamma), _out(loglik)
    cdef double[:, ::1] g = g_buf
    cdef double[::1] ll = ll_buf
    cdef Py_ssize_t S = off.shape[0] - 1, K = lb.shape[1], ch
    cdef Py_ssize_t Kp = (K + 3) // 4 * 4
    cdef Py_ssize_t nc = _seq_chunks((S + LANES - 1) // LANES)  # groups of whole batches
    cdef const double[:, ::1] Ap = _padded(A_arr, Kp)
    cdef const double[:, ::1] Atp = _padded(A_arr.T, Kp)
    outer_p = np.zeros((max(nc, 1), K, K))
    start_p = np.zeros((max(nc, 1), K))
    cdef double[:, :, ::1] op = outer_p
    cdef double[:, ::1] st = start_p
    cdef int fail = 0
    if S > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(lb.shape[0] * K * K, nc)):
            if _fb_group(ch, nc, &lb[0, 0], &off[0], S, K, Kp, &sp[0], &Ap[0, 0], &Atp[0, 0],
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
    f_buf, ll_buf = _out(filt), _out(loglik)
    cdef double[:, ::1] f = f_buf
    cdef double[::1] ll = ll_buf
    cdef Py_ssize_t S = off.shape[0] - 1, K = lb.shape[1], ch
    cdef Py_ssize_t Kp = (K + 3) // 4 * 4
    cdef Py_ssize_t nc = _seq_chunks((S + LANES - 1) // LANES)  # groups of whole batches
    cdef const double[:, ::1] Ap = _padded(_in(transmat), Kp)
    cdef int fail = 0
    if S > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(lb.shape[0] * K * K, nc)):
            if _filter_group(ch, nc, &lb[0, 0], &off[0], S, K, Kp, &sp[0], &Ap[0, 0],
                             &f[0, 0], &ll[0]) != 0:
                fail = 1
        if fail:
            raise MemoryError()
    _back(f_buf, filt)
    _back(ll_buf, loglik)


def component_logprob_diag(X, means, prec_chol, comp_const, out):
    """Diagonal-Gaussian log-densities ``out[n, k] = comp_const[k] - sum_j ((X_nj -
    mu_kj) u_kj)^2 / 2`` of float64 rows without NaN (other X is converted):
    the fused E-step's emission code, vectorized over components, as an optional
    entry (a GMM-HMM's component densities: the mixture backend's
    ``log_prob_diag`` computes the same to rounding).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    means, prec_chol : ndarray of shape (n_components, n_features)
        Means and diagonal precision factors.
    comp_const : ndarray of shape (n_components,)
        ``log det U_k - D/2 log(2 pi)`` plus any log-weight.
    out : ndarray of shape (n_samples, n_components)
        Overwritten.
    """
    cdef const double[:, ::1] Xv = _in(X)
    cdef Py_ssize_t N = Xv.shape[0], D = Xv.shape[1], K = means.shape[0], ch
    cdef Py_ssize_t Kp = (K + 3) // 4 * 4
    cdef const double[:, ::1] mt = _padded(_in(means).T, Kp)
    cdef const double[:, ::1] ut = _padded(_in(prec_chol).T, Kp)
    cdef const double[:, ::1] cc = _padded(_in(comp_const)[None, :], Kp)
    o_buf = _out(out)
    cdef double[:, ::1] o = o_buf
    cdef Py_ssize_t nc = _row_chunks(N)
    cdef int fail = 0
    if N > 0 and K > 0 and D > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(N * K * D, nc)):
            if _diag_rows(&Xv[0, 0], D, &mt[0, 0], &ut[0, 0], &cc[0, 0], K, Kp,
                          _lo(N, nc, ch), _lo(N, nc, ch + 1), &o[0, 0]) != 0:
                fail = 1
        if fail:
            raise MemoryError()
    elif N > 0 and K > 0:  # no features: the constants
        o_buf[...] = _in(comp_const)[None, :]
    _back(o_buf, out)


cdef int _diag_rows(const double* X, Py_ssize_t D, const double* mt, const double* ut,
                    const double* cc, Py_ssize_t K, Py_ssize_t Kp, Py_ssize_t lo,
                    Py_ssize_t hi, double* out) noexcept nogil:
    """Rows lo:hi of :func:`component_logprob_diag`."""
    cdef Py_ssize_t r
    cdef double* row = <double*>malloc(Kp * sizeof(double))
    if row == NULL:
        return -1
    for r in range(lo, hi):
        fastem_hmm_diag_row(X + r * D, D, mt, ut, cc, Kp, row)
        memcpy(out + r * K, row, K * sizeof(double))
    free(row)
    return 0


#: The fused E-step takes a shape with at least this many batches of sequences
#: (as the Numba kernels): below it the separate kernels, whose emissions and
#: moments are parallel over rows, balance better (one long sequence would be
#: one group on one thread).
FUSED_MIN_BATCHES = 8


def estep_diag(X, offsets, means, prec_chol, comp_const, startprob, transmat, seq_weight,
               row_weight, shift, loglik, xi, start, nk, sx, sxx):
    """Fused E-step of a diagonal-Gaussian HMM (optional entry; see
    :func:`fastem.hmm._backend.estep_diag`), or ``False`` when the shape has fewer
    than ``FUSED_MIN_BATCHES`` batches of sequences (nothing written then).

    Equals, to rounding, ``log_prob_diag`` into ``logB``, then
    ``forward_backward(logB, ...)`` and ``moments_diag(X, gamma, row_weight,
    shift, nk, sx, sxx)`` (X float64), without the (N, K) emission and posterior
    arrays. Group partials summed in group order: the same bits on any thread
    count.
    """
    cdef Py_ssize_t S = offsets.shape[0] - 1, K = means.shape[0], D = X.shape[1], ch
    cdef Py_ssize_t n_batches = (S + LANES - 1) // LANES
    if n_batches < FUSED_MIN_BATCHES or K == 0 or D == 0:
        return False
    cdef Py_ssize_t Kp = (K + 3) // 4 * 4
    cdef Py_ssize_t nc = _seq_chunks(n_batches)
    cdef const double[:, ::1] Xv = _in(X)
    cdef const int64_t[::1] off = _in(offsets, np.int64)
    cdef const double[:, ::1] mt = _padded(_in(means).T, Kp)
    cdef const double[:, ::1] ut = _padded(_in(prec_chol).T, Kp)
    cdef const double[:, ::1] cc = _padded(_in(comp_const)[None, :], Kp)
    cdef const double[::1] sp = _in(startprob)
    A_arr = _in(transmat)
    cdef const double[:, ::1] Ap = _padded(A_arr, Kp)
    cdef const double[:, ::1] Atp = _padded(A_arr.T, Kp)
    cdef const double[::1] sw = _in(seq_weight)
    cdef const double[::1] rw = _in(row_weight)
    cdef const double[:, ::1] sh = _in(shift)
    ll_buf = _out(loglik)
    cdef double[::1] ll = ll_buf
    outer_p = np.zeros((nc, K, K))
    start_p = np.zeros((nc, K))
    nk_p, sx_p, sxx_p = moment_partials(nc, K, D, False)
    cdef double[:, :, ::1] op = outer_p
    cdef double[:, ::1] st = start_p
    cdef double[:, ::1] nkv = nk_p
    cdef double[:, :, ::1] sxv = sx_p
    cdef double[:, :, :, ::1] sxxv = sxx_p
    cdef int fail = 0
    for ch in prange(nc, nogil=True, schedule="static",
                     num_threads=_threads(Xv.shape[0] * K * (3 * K + 3 * D), nc)):
        if _estep_diag_group(ch, nc, &Xv[0, 0], D, &off[0], S, K, Kp, &mt[0, 0], &ut[0, 0],
                             &cc[0, 0], &sp[0], &Ap[0, 0], &Atp[0, 0], &sw[0], &rw[0],
                             &sh[0, 0], &ll[0], &op[0, 0, 0], &st[0, 0], &nkv[0, 0],
                             &sxv[0, 0, 0], &sxxv[0, 0, 0, 0]) != 0:
            fail = 1
    if fail:
        raise MemoryError()
    _back(ll_buf, loglik)
    np.multiply(A_arr, outer_p.sum(axis=0), out=xi)  # groups summed in order
    start[:] = start_p.sum(axis=0)
    sum_moment_partials(nk_p, sx_p, sxx_p, False, nk, sx, sxx)
    return True


def viterbi(logB, offsets, log_startprob, log_transmat, path, logprob):
    """See :mod:`fastem.hmm._kernels_numpy`."""
    cdef const double[:, ::1] lb = _in(logB)
    cdef const int64_t[::1] off = _in(offsets, np.int64)
    cdef const double[::1] ls = _in(log_startprob)
    p_buf, lp_buf = _out(path, np.int64), _out(logprob)
    cdef int64_t[::1] p = p_buf
    cdef double[::1] lp = lp_buf
    cdef Py_ssize_t S = off.shape[0] - 1, K = lb.shape[1], ch
    cdef Py_ssize_t Kp = (K + 3) // 4 * 4
    cdef const double[:, ::1] lt = _padded(_in(log_transmat), Kp, -np.inf)
    cdef Py_ssize_t nc = _seq_chunks(S)
    cdef int fail = 0
    if S > 0 and K > 0:
        for ch in prange(nc, nogil=True, schedule="static",
                         num_threads=_threads(lb.shape[0] * K * K, nc)):
            if _viterbi_group(ch, nc, &lb[0, 0], &off[0], S, K, Kp, &ls[0], &lt[0, 0], &p[0],
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
