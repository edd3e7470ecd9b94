/* Register-tiled kernels of the Cython backend's full-covariance pass.
 *
 * Included by _cython.pyx (_full_chunk). A block of rows is stored
 * feature-major: xt[a * ld + r] is feature a of row r, for n rows (n a multiple
 * of FT_ROWS_MULTIPLE; rows past the block's real ones are zero with zero
 * responsibility). Why C and not Cython loops (what the Cython version lost,
 * found in gcc's -fopt-info-vec output and the disassembly):
 *
 * - restrict pointers: the Cython loops (plain pointers of one type) were
 *   vectorized only behind run-time alias checks, and one output row per pass
 *   meant a load and store of it per four FMAs. Here four output coordinates
 *   live in four partial-sum rows and every loaded input row feeds four of
 *   them (16 FMAs per 4 + 4 loads and 4 stores).
 * - Sums over rows (the second moments) are reductions, which gcc does not
 *   vectorize without -ffast-math (it may not reorder them). They are written
 *   with GNU vector extensions: each of the 4 x 4 sums of a tile keeps one
 *   vector accumulator, reduced at the end four at a time by vector
 *   transpose-adds (scalar reductions were a fifth of a tile's instructions),
 *   in an order that depends only on d and n (determinism), never on the
 *   thread count.
 * - FT_KEEP holds a tile's loaded rows in registers: gcc otherwise folds each
 *   load into the four FMAs that use it and the loop becomes load-bound.
 * - Blocks of 256 rows (_cython.pyx's FULL_BLOCK): the per-block set-up of a
 *   tile (16 coefficients, 16 reductions) is paid once per 256 rows, not 32.
 *
 * Centring (x - mu) is fused into the loads and done in the type of x (as the
 * NumPy reference subtracts), so no centred copy per component is written.
 */
#ifndef FASTEM_FULL_TILES_H
#define FASTEM_FULL_TILES_H

#include <stddef.h>
#include <stdlib.h>
#if defined(_WIN32)
#include <malloc.h>
#endif

/* The vector helpers below are static inline: their AVX-sized arguments cross
   no ABI boundary, so gcc's note about it (builds without AVX) is noise. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__GNUC__)
#define FT_RESTRICT __restrict__
#else
#define FT_RESTRICT
#endif

/* Doubles per vector accumulator, and the multiple of rows the kernels get. */
#if defined(__GNUC__) && defined(__AVX512F__)
#define FT_VW 8
#else
#define FT_VW 4
#endif
#define FT_ROWS_MULTIPLE 16

/* ------------------------------------------------------------------------- */
/* Scratch on a 64-byte boundary (a cache line): malloc gives 16 bytes, and a  */
/* 32- or 64-byte vector load from such an address spans two cache lines      */
/* every second or fourth time. Free with fastem_aligned_free. A sub-block of */
/* such scratch stays aligned when it starts a multiple of 64 bytes in.       */
#define FT_ALIGN 64
static inline void *fastem_aligned_alloc(size_t size) {
#if defined(_WIN32)
    return _aligned_malloc(size ? size : 1, FT_ALIGN);
#else
    void *p = NULL;
    return posix_memalign(&p, FT_ALIGN, size ? size : 1) == 0 ? p : NULL;
#endif
}
static inline void fastem_aligned_free(void *p) {
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* ------------------------------------------------------------------------- */
/* xt[a * ld + r] = X[r * d + a] for r < nb, 0 for nb <= r < n. Eight rows at   */
/* a time: one row's stores are ld apart and would crowd a few L1 sets at large */
/* d, eight rows fill whole cache lines of xt.                                  */
#define FT_LOAD(T)                                                                    \
static inline void fastem_load_block_##T(const T *FT_RESTRICT X, ptrdiff_t nb,         \
                                         ptrdiff_t d, ptrdiff_t ld, ptrdiff_t n,       \
                                         T *FT_RESTRICT xt) {                          \
    ptrdiff_t r = 0, a, q;                                                            \
    for (; r + 8 <= nb; r += 8)                                                       \
        for (a = 0; a < d; ++a)                                                       \
            for (q = 0; q < 8; ++q) xt[a * ld + r + q] = X[(r + q) * d + a];          \
    for (; r < nb; ++r)                                                               \
        for (a = 0; a < d; ++a) xt[a * ld + r] = X[r * d + a];                        \
    for (a = 0; a < d; ++a)                                                           \
        for (r = nb; r < n; ++r) xt[a * ld + r] = 0;                                  \
}

FT_LOAD(double)
FT_LOAD(float)

/* ------------------------------------------------------------------------- */
/* E-step: maha[r] = || (xt[:, r] - mu) @ U ||^2, U upper triangular (d x d,  */
/* row-major), row-wise for r < n. acc: 4 * ld scratch of the same type.      */
/* Output coordinates go four at a time (columns jp..jp+3 of U): the inputs   */
/* before jp four at a time (a 4x4 tile of U in registers), then the 4x4      */
/* triangle on the diagonal, whose four results are squared into maha. The   */
/* d % 4 last columns go one at a time. Every sum's order depends on d only.  */
#define FT_TRI_MAHA(T)                                                                \
static inline void fastem_tri_maha_##T(const T *FT_RESTRICT xt, ptrdiff_t ld,          \
                                       ptrdiff_t d, const T *FT_RESTRICT mu,           \
                                       const T *FT_RESTRICT U, ptrdiff_t n,            \
                                       T *FT_RESTRICT acc, T *FT_RESTRICT maha) {      \
    T *FT_RESTRICT a0 = acc;                                                          \
    T *FT_RESTRICT a1 = acc + ld;                                                     \
    T *FT_RESTRICT a2 = acc + 2 * ld;                                                 \
    T *FT_RESTRICT a3 = acc + 3 * ld;                                                 \
    ptrdiff_t jp = 0, j, b;                                                           \
    for (b = 0; b < n; ++b) maha[b] = 0;                                              \
    for (; jp + 4 <= d; jp += 4) {                                                    \
        for (j = 0; j < jp; j += 4) {                                                 \
            const T *FT_RESTRICT x0 = xt + j * ld, *FT_RESTRICT x1 = x0 + ld;         \
            const T *FT_RESTRICT x2 = x1 + ld, *FT_RESTRICT x3 = x2 + ld;             \
            const T m0 = mu[j], m1 = mu[j + 1], m2 = mu[j + 2], m3 = mu[j + 3];       \
            const T *u0 = U + j * d + jp, *u1 = u0 + d, *u2 = u1 + d, *u3 = u2 + d;   \
            const T u00 = u0[0], u01 = u0[1], u02 = u0[2], u03 = u0[3];               \
            const T u10 = u1[0], u11 = u1[1], u12 = u1[2], u13 = u1[3];               \
            const T u20 = u2[0], u21 = u2[1], u22 = u2[2], u23 = u2[3];               \
            const T u30 = u3[0], u31 = u3[1], u32 = u3[2], u33 = u3[3];               \
            if (j == 0) {                                                             \
                for (b = 0; b < n; ++b) {                                             \
                    const T y0 = x0[b] - m0, y1 = x1[b] - m1;                         \
                    const T y2 = x2[b] - m2, y3 = x3[b] - m3;                         \
                    a0[b] = u00 * y0 + u10 * y1 + u20 * y2 + u30 * y3;                \
                    a1[b] = u01 * y0 + u11 * y1 + u21 * y2 + u31 * y3;                \
                    a2[b] = u02 * y0 + u12 * y1 + u22 * y2 + u32 * y3;                \
                    a3[b] = u03 * y0 + u13 * y1 + u23 * y2 + u33 * y3;                \
                }                                                                     \
            } else {                                                                  \
                for (b = 0; b < n; ++b) {                                             \
                    const T y0 = x0[b] - m0, y1 = x1[b] - m1;                         \
                    const T y2 = x2[b] - m2, y3 = x3[b] - m3;                         \
                    a0[b] = a0[b] + u00 * y0 + u10 * y1 + u20 * y2 + u30 * y3;        \
                    a1[b] = a1[b] + u01 * y0 + u11 * y1 + u21 * y2 + u31 * y3;        \
                    a2[b] = a2[b] + u02 * y0 + u12 * y1 + u22 * y2 + u32 * y3;        \
                    a3[b] = a3[b] + u03 * y0 + u13 * y1 + u23 * y2 + u33 * y3;        \
                }                                                                     \
            }                                                                         \
        }                                                                             \
        {                                                                             \
            const T *FT_RESTRICT x0 = xt + jp * ld, *FT_RESTRICT x1 = x0 + ld;        \
            const T *FT_RESTRICT x2 = x1 + ld, *FT_RESTRICT x3 = x2 + ld;             \
            const T m0 = mu[jp], m1 = mu[jp + 1], m2 = mu[jp + 2], m3 = mu[jp + 3];   \
            const T *u0 = U + jp * d + jp, *u1 = u0 + d, *u2 = u1 + d, *u3 = u2 + d;  \
            const T u00 = u0[0], u01 = u0[1], u02 = u0[2], u03 = u0[3];               \
            const T u11 = u1[1], u12 = u1[2], u13 = u1[3];                            \
            const T u22 = u2[2], u23 = u2[3], u33 = u3[3];                            \
            if (jp == 0) {                                                            \
                for (b = 0; b < n; ++b) {                                             \
                    const T y0 = x0[b] - m0, y1 = x1[b] - m1;                         \
                    const T y2 = x2[b] - m2, y3 = x3[b] - m3;                         \
                    const T z0 = u00 * y0;                                            \
                    const T z1 = u01 * y0 + u11 * y1;                                 \
                    const T z2 = u02 * y0 + u12 * y1 + u22 * y2;                      \
                    const T z3 = u03 * y0 + u13 * y1 + u23 * y2 + u33 * y3;           \
                    maha[b] = (z0 * z0 + z1 * z1) + (z2 * z2 + z3 * z3);              \
                }                                                                     \
            } else {                                                                  \
                for (b = 0; b < n; ++b) {                                             \
                    const T y0 = x0[b] - m0, y1 = x1[b] - m1;                         \
                    const T y2 = x2[b] - m2, y3 = x3[b] - m3;                         \
                    const T z0 = a0[b] + u00 * y0;                                    \
                    const T z1 = a1[b] + u01 * y0 + u11 * y1;                         \
                    const T z2 = a2[b] + u02 * y0 + u12 * y1 + u22 * y2;              \
                    const T z3 = a3[b] + u03 * y0 + u13 * y1 + u23 * y2 + u33 * y3;   \
                    maha[b] = maha[b] + ((z0 * z0 + z1 * z1) + (z2 * z2 + z3 * z3));  \
                }                                                                     \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    for (; jp < d; ++jp) { /* the d % 4 last columns, one at a time */                \
        for (b = 0; b < n; ++b) a0[b] = U[jp] * (xt[b] - mu[0]);                      \
        for (j = 1; j <= jp; ++j) {                                                   \
            const T *FT_RESTRICT x0 = xt + j * ld;                                    \
            const T m0 = mu[j], u0 = U[j * d + jp];                                   \
            for (b = 0; b < n; ++b) a0[b] = a0[b] + u0 * (x0[b] - m0);                \
        }                                                                             \
        for (b = 0; b < n; ++b) maha[b] = maha[b] + a0[b] * a0[b];                    \
    }                                                                                 \
}

FT_TRI_MAHA(double)
FT_TRI_MAHA(float)

/* ------------------------------------------------------------------------- */
/* Statistics: with y_r = xt[:, r] - mu (subtracted in the type of xt, then    */
/* float64), add sum_r w[r] y_r to sx (d) and the upper triangle of            */
/* sum_r w[r] y_r y_r^T to sxx (d x d, row-major). rd: d * ld float64 scratch, */
/* receives w * y for the first 4 * (d / 4) features.                          */

#if defined(__GNUC__)
#if FT_VW == 8
typedef double ft_vd __attribute__((vector_size(64)));
typedef double ft_vdu __attribute__((vector_size(64), aligned(8), may_alias));
static inline double ft_hsum(ft_vd v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
#else
typedef double ft_vd __attribute__((vector_size(32)));
typedef double ft_vdu __attribute__((vector_size(32), aligned(8), may_alias));
static inline double ft_hsum(ft_vd v) { return (v[0] + v[1]) + (v[2] + v[3]); }
#endif
#define FT_LD(p) (*(const ft_vdu *)(p))
#define FT_ST(p, v) (*(ft_vdu *)(p) = (v))

/* Four horizontal sums at once, [sum a, sum b, sum c, sum d], by vector adds and
   shuffles (a tile's 16 scalar reductions were a fifth of its time at 256 rows). */
typedef double ft_v4 __attribute__((vector_size(32)));
typedef double ft_v4u __attribute__((vector_size(32), aligned(8), may_alias));
typedef long long ft_m4 __attribute__((vector_size(32)));
#if defined(__clang__)
#define FT_SHUF(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define FT_SHUF(a, b, i, j, k, l) __builtin_shuffle(a, b, (ft_m4){i, j, k, l})
#endif
static inline ft_v4 ft_fold(ft_vd v) {
#if FT_VW == 8
    union { ft_vd v; ft_v4 h[2]; } u;
    u.v = v;
    return u.h[0] + u.h[1];
#else
    return v;
#endif
}
static inline ft_v4 ft_hsum4(ft_vd a, ft_vd b, ft_vd c, ft_vd d) {
    const ft_v4 A = ft_fold(a), B = ft_fold(b), C = ft_fold(c), D = ft_fold(d);
    const ft_v4 ab = FT_SHUF(A, B, 0, 4, 2, 6) + FT_SHUF(A, B, 1, 5, 3, 7);
    const ft_v4 cd = FT_SHUF(C, D, 0, 4, 2, 6) + FT_SHUF(C, D, 1, 5, 3, 7);
    return FT_SHUF(ab, cd, 0, 1, 4, 5) + FT_SHUF(ab, cd, 2, 3, 6, 7);
}
#define FT_ADD4(p, v) (*(ft_v4u *)(p) = *(const ft_v4u *)(p) + (v))

/* Keep a loaded vector in a register: gcc otherwise folds the load into each of
   the four FMAs that use it (W4: 20 loads per 16 FMAs, load-bound, instead of 8). */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__AVX__)
#define FT_KEEP(v) __asm__("" : "+v"(v))
#else
#define FT_KEEP(v) ((void)0)
#endif

#define FT_ACCUM(NAME, T, R, V, VL, LDR, STR, Y, HSUM4, HSUM)                              \
static inline void NAME(const T *FT_RESTRICT xt, ptrdiff_t ld, ptrdiff_t d,                \
                                        const T *FT_RESTRICT mu, const R *FT_RESTRICT w,   \
                                        ptrdiff_t n, R *FT_RESTRICT rd,                    \
                                        double *FT_RESTRICT sx, double *FT_RESTRICT sxx) { \
    ptrdiff_t i, j, b;                                                                     \
    const V zero = {0};                                                                    \
    /* rd = w * y and sx, four features per pass (one sum per pass waited on its adds) */  \
    for (i = 0; i + 4 <= d; i += 4) {                                                      \
        const T *FT_RESTRICT q0 = xt + i * ld, *FT_RESTRICT q1 = q0 + ld;                  \
        const T *FT_RESTRICT q2 = q1 + ld, *FT_RESTRICT q3 = q2 + ld;                      \
        R *FT_RESTRICT p0 = rd + i * ld, *FT_RESTRICT p1 = p0 + ld;                        \
        R *FT_RESTRICT p2 = p1 + ld, *FT_RESTRICT p3 = p2 + ld;                            \
        const T m0 = mu[i], m1 = mu[i + 1], m2 = mu[i + 2], m3 = mu[i + 3];                \
        V c0 = zero, c1 = zero, c2 = zero, c3 = zero;                                      \
        for (b = 0; b < n; b += VL) {                                                      \
            const V r = LDR(w + b);                                                        \
            const V v0 = r * Y(q0 + b, m0), v1 = r * Y(q1 + b, m1);                        \
            const V v2 = r * Y(q2 + b, m2), v3 = r * Y(q3 + b, m3);                        \
            STR(p0 + b, v0); STR(p1 + b, v1); STR(p2 + b, v2); STR(p3 + b, v3);            \
            c0 += v0; c1 += v1; c2 += v2; c3 += v3;                                        \
        }                                                                                  \
        FT_ADD4(sx + i, HSUM4(c0, c1, c2, c3));                                            \
    }                                                                                      \
    for (i = 0; i + 4 <= d; i += 4) {                                                      \
        const R *FT_RESTRICT p0 = rd + i * ld, *FT_RESTRICT p1 = p0 + ld;                  \
        const R *FT_RESTRICT p2 = p1 + ld, *FT_RESTRICT p3 = p2 + ld;                      \
        double *s0 = sxx + i * d, *s1 = s0 + d, *s2 = s1 + d, *s3 = s2 + d;                \
        { /* the 4x4 tile on the diagonal: its 10 upper sums */                            \
            const T *FT_RESTRICT q0 = xt + i * ld, *FT_RESTRICT q1 = q0 + ld;              \
            const T *FT_RESTRICT q2 = q1 + ld, *FT_RESTRICT q3 = q2 + ld;                  \
            const T m0 = mu[i], m1 = mu[i + 1], m2 = mu[i + 2], m3 = mu[i + 3];            \
            V c00 = zero, c01 = zero, c02 = zero, c03 = zero, c11 = zero;                  \
            V c12 = zero, c13 = zero, c22 = zero, c23 = zero, c33 = zero;                  \
            for (b = 0; b < n; b += VL) {                                                  \
                V v0 = LDR(p0 + b), v1 = LDR(p1 + b);                                      \
                V v2 = LDR(p2 + b), v3 = LDR(p3 + b);                                      \
                FT_KEEP(v0); FT_KEEP(v1); FT_KEEP(v2); FT_KEEP(v3);                        \
                const V y0 = Y(q0 + b, m0), y1 = Y(q1 + b, m1);                            \
                const V y2 = Y(q2 + b, m2), y3 = Y(q3 + b, m3);                            \
                c00 += v0 * y0; c01 += v0 * y1; c02 += v0 * y2; c03 += v0 * y3;            \
                c11 += v1 * y1; c12 += v1 * y2; c13 += v1 * y3;                            \
                c22 += v2 * y2; c23 += v2 * y3;                                            \
                c33 += v3 * y3;                                                            \
            }                                                                              \
            FT_ADD4(s0 + i, HSUM4(c00, c01, c02, c03));                                    \
            const ft_v4 h = HSUM4(c11, c12, c13, c22), g = HSUM4(c23, c33, zero, zero);    \
            s1[i + 1] += h[0]; s1[i + 2] += h[1]; s1[i + 3] += h[2];                       \
            s2[i + 2] += h[3]; s2[i + 3] += g[0];                                          \
            s3[i + 3] += g[1];                                                             \
        }                                                                                  \
        for (j = i + 4; j + 4 <= d; j += 4) { /* full 4x4 tiles right of it */             \
            const T *FT_RESTRICT q0 = xt + j * ld, *FT_RESTRICT q1 = q0 + ld;              \
            const T *FT_RESTRICT q2 = q1 + ld, *FT_RESTRICT q3 = q2 + ld;                  \
            const T m0 = mu[j], m1 = mu[j + 1], m2 = mu[j + 2], m3 = mu[j + 3];            \
            V c00 = zero, c01 = zero, c02 = zero, c03 = zero;                              \
            V c10 = zero, c11 = zero, c12 = zero, c13 = zero;                              \
            V c20 = zero, c21 = zero, c22 = zero, c23 = zero;                              \
            V c30 = zero, c31 = zero, c32 = zero, c33 = zero;                              \
            for (b = 0; b < n; b += VL) {                                                  \
                V v0 = LDR(p0 + b), v1 = LDR(p1 + b);                                      \
                V v2 = LDR(p2 + b), v3 = LDR(p3 + b);                                      \
                FT_KEEP(v0); FT_KEEP(v1); FT_KEEP(v2); FT_KEEP(v3);                        \
                const V y0 = Y(q0 + b, m0), y1 = Y(q1 + b, m1);                            \
                const V y2 = Y(q2 + b, m2), y3 = Y(q3 + b, m3);                            \
                c00 += v0 * y0; c01 += v0 * y1; c02 += v0 * y2; c03 += v0 * y3;            \
                c10 += v1 * y0; c11 += v1 * y1; c12 += v1 * y2; c13 += v1 * y3;            \
                c20 += v2 * y0; c21 += v2 * y1; c22 += v2 * y2; c23 += v2 * y3;            \
                c30 += v3 * y0; c31 += v3 * y1; c32 += v3 * y2; c33 += v3 * y3;            \
            }                                                                              \
            FT_ADD4(s0 + j, HSUM4(c00, c01, c02, c03));                                    \
            FT_ADD4(s1 + j, HSUM4(c10, c11, c12, c13));                                    \
            FT_ADD4(s2 + j, HSUM4(c20, c21, c22, c23));                                    \
            FT_ADD4(s3 + j, HSUM4(c30, c31, c32, c33));                                    \
        }                                                                                  \
        for (; j < d; ++j) { /* the d % 4 last columns */                                  \
            const T *FT_RESTRICT q0 = xt + j * ld;                                         \
            const T m0 = mu[j];                                                            \
            V c0 = zero, c1 = zero, c2 = zero, c3 = zero;                                  \
            for (b = 0; b < n; b += VL) {                                                  \
                const V y0 = Y(q0 + b, m0);                                                \
                c0 += LDR(p0 + b) * y0; c1 += LDR(p1 + b) * y0;                            \
                c2 += LDR(p2 + b) * y0; c3 += LDR(p3 + b) * y0;                            \
            }                                                                              \
            const ft_v4 h = HSUM4(c0, c1, c2, c3);                                         \
            s0[j] += h[0]; s1[j] += h[1]; s2[j] += h[2]; s3[j] += h[3];                    \
        }                                                                                  \
    }                                                                                      \
    if (i < d) { /* the d % 4 last rows: sx and their triangle (<= 6 sums) in one pass; */ \
        /* missing rows repeat the last one and their sums are dropped */                  \
        const ptrdiff_t r2 = d - i > 1 ? i + 1 : i, r3 = d - i > 2 ? i + 2 : r2;           \
        const T *FT_RESTRICT q0 = xt + i * ld, *FT_RESTRICT q1 = xt + r2 * ld;             \
        const T *FT_RESTRICT q2 = xt + r3 * ld;                                            \
        const T m0 = mu[i], m1 = mu[r2], m2 = mu[r3];                                      \
        V a0 = zero, a1 = zero, a2 = zero, c00 = zero, c01 = zero, c02 = zero;             \
        V c11 = zero, c12 = zero, c22 = zero;                                              \
        for (b = 0; b < n; b += VL) {                                                      \
            const V r = LDR(w + b);                                                        \
            const V y0 = Y(q0 + b, m0), y1 = Y(q1 + b, m1), y2 = Y(q2 + b, m2);            \
            const V v0 = r * y0, v1 = r * y1, v2 = r * y2;                                 \
            a0 += v0; a1 += v1; a2 += v2;                                                  \
            c00 += v0 * y0; c01 += v0 * y1; c02 += v0 * y2;                                \
            c11 += v1 * y1; c12 += v1 * y2; c22 += v2 * y2;                                \
        }                                                                                  \
        const ft_v4 h = HSUM4(a0, a1, a2, c00), g = HSUM4(c01, c02, c11, c12);             \
        const double s22 = HSUM(c22);                                                      \
        sx[i] += h[0];                                                                     \
        sxx[i * d + i] += h[3];                                                            \
        if (d - i > 1) {                                                                   \
            sx[i + 1] += h[1];                                                             \
            sxx[i * d + i + 1] += g[0];                                                    \
            sxx[(i + 1) * d + i + 1] += g[2];                                              \
        }                                                                                  \
        if (d - i > 2) {                                                                   \
            sx[i + 2] += h[2];                                                             \
            sxx[i * d + i + 2] += g[1];                                                    \
            sxx[(i + 1) * d + i + 2] += g[3];                                              \
            sxx[(i + 2) * d + i + 2] += s22;                                               \
        }                                                                                  \
    }                                                                                      \
}

/* float64 X: float64 throughout. */
#define FT_Y_DOUBLE(p, m) (FT_LD(p) - (m))
FT_ACCUM(fastem_accum_full_double, double, double, ft_vd, FT_VW, FT_LD, FT_ST, FT_Y_DOUBLE,
         ft_hsum4, ft_hsum)

/* float32 X: a block's sums in float32 (twice the lanes of float64), each
   reduced in float32 and then added to the float64 sx and sxx. */
#define FT_FW (2 * FT_VW)
typedef float ft_vs __attribute__((vector_size(4 * FT_FW)));
typedef float ft_vsu __attribute__((vector_size(4 * FT_FW), aligned(4), may_alias));
typedef float ft_s4 __attribute__((vector_size(16)));
typedef int ft_i4 __attribute__((vector_size(16)));
#if defined(__clang__)
#define FT_SHUFS(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define FT_SHUFS(a, b, i, j, k, l) __builtin_shuffle(a, b, (ft_i4){i, j, k, l})
#endif
#define FT_LDS(p) (*(const ft_vsu *)(p))
#define FT_STS(p, v) (*(ft_vsu *)(p) = (v))
#define FT_Y_F32(p, m) (FT_LDS(p) - (m))
static inline ft_s4 ft_folds(ft_vs v) {
    union { ft_vs v; ft_s4 q[FT_FW / 4]; } u;
    u.v = v;
#if FT_FW == 16
    return (u.q[0] + u.q[2]) + (u.q[1] + u.q[3]);
#else
    return u.q[0] + u.q[1];
#endif
}
static inline ft_v4 ft_hsum4s(ft_vs a, ft_vs b, ft_vs c, ft_vs d) {
    const ft_s4 A = ft_folds(a), B = ft_folds(b), C = ft_folds(c), D = ft_folds(d);
    const ft_s4 ab = FT_SHUFS(A, B, 0, 4, 2, 6) + FT_SHUFS(A, B, 1, 5, 3, 7);
    const ft_s4 cd = FT_SHUFS(C, D, 0, 4, 2, 6) + FT_SHUFS(C, D, 1, 5, 3, 7);
    return __builtin_convertvector(FT_SHUFS(ab, cd, 0, 1, 4, 5) + FT_SHUFS(ab, cd, 2, 3, 6, 7),
                                   ft_v4);
}
static inline double ft_hsums(ft_vs v) {
    const ft_s4 q = ft_folds(v);
    return (double)((q[0] + q[1]) + (q[2] + q[3]));
}
FT_ACCUM(fastem_accum_full_f32, float, float, ft_vs, FT_FW, FT_LDS, FT_STS, FT_Y_F32,
         ft_hsum4s, ft_hsums)

#else /* portable scalar fallback (not GNU C): the same sums, in row order */

#define FT_FW 8
#define FT_ACCUM(NAME, T, R)                                                          \
static inline void NAME(const T *xt, ptrdiff_t ld, ptrdiff_t d, const T *mu,           \
                        const R *w, ptrdiff_t n, R *rd, double *sx, double *sxx) {     \
    ptrdiff_t i, j, b;                                                                \
    for (i = 0; i < d; ++i) {                                                         \
        R s = 0;                                                                      \
        for (b = 0; b < n; ++b) {                                                     \
            rd[i * ld + b] = w[b] * (R)(T)(xt[i * ld + b] - mu[i]);                   \
            s += rd[i * ld + b];                                                      \
        }                                                                             \
        sx[i] += (double)s;                                                           \
    }                                                                                 \
    for (i = 0; i < d; ++i) {                                                         \
        for (j = i; j < d; ++j) {                                                     \
            R s = 0;                                                                  \
            for (b = 0; b < n; ++b)                                                   \
                s += rd[i * ld + b] * (R)(T)(xt[j * ld + b] - mu[j]);                 \
            sxx[i * d + j] += (double)s;                                              \
        }                                                                             \
    }                                                                                 \
}
FT_ACCUM(fastem_accum_full_double, double, double)
FT_ACCUM(fastem_accum_full_f32, float, float)
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif /* FASTEM_FULL_TILES_H */
