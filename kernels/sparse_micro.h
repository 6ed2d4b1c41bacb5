/* sparse_micro.h: micro-kernels of sysbench._kernels.sparse (N:M sparse passes).
 *
 * One sparse pass multiplies A (rows x Kp) by a compressed N:M weight matrix: compressed
 * row r belongs to group g = r / N and holds, per output column c, a value v[r, c] and an
 * in-group index q[r, c], i.e. the weight at reduction index g*M + q. A PE of column c
 * multiplies v by the A element its index selects (the sparse array's multiplexer).
 *
 * Order (the numerics contract, fold order of a ws array over the compressed rows):
 *   for each fold of compressed rows [f0, f1): psum = +0;
 *       psum = fmaf(A[i, g(r)*M + q[r,c]], v[r,c], psum) for r = f0 .. f1-1 in order;
 *       out[i, c] = out[i, c] + psum.
 * Every output element is its own chain, so the result is bit-identical whatever the
 * vector width or the direction the lanes run in. Two designs:
 *   AVX2 and scalar (sp_micro): lanes along i (rows of A); the selected A vector of a
 *     slot is one load from a packed A block (the index becomes an address); the output
 *     is accumulated transposed and transposed once at the end.
 *   AVX-512 (sp_p5_block): lanes along output columns; the group's M candidates of a row
 *     of A sit in one register and vpermps selects each column's element.
 *
 * Layouts prepared by the caller for one fold of the AVX2/scalar design (span = reduction indices the fold touches):
 *   packed A block: pa[k * MB + i] = A[i0 + i, k0 + k]   (MB rows, k-major; padded rows 0)
 *   packed B block of NC columns: bv[r * NC + c] = value, bo[r * NC + c] = offset of the
 *       selected A vector in pa, in floats ((g - g0) * M + q) * MB
 *   output, transposed: ot[c * ldo + i] (so that a column's MB rows are contiguous).
 * The AVX-512F and AVX2+FMA kernels are compiled with target attributes and chosen at run
 * time; the scalar kernel uses C fmaf. -ffp-contract=off keeps every other operation unfused.
 */
#ifndef SYSBENCH_SPARSE_MICRO_H
#define SYSBENCH_SPARSE_MICRO_H

#include <math.h>

#include "simd.h"

/* tile: MB rows of A (lanes) x NC output columns */
#define SP_S_MB 4
#define SP_S_NC 4
#define SP_A2_MB 16
#define SP_A2_NC 6

/* tile of the lanes-along-rows kernels (AVX2, scalar; AVX-512 uses sp_p5_block) */
static int sp_isa_mb(int isa)
{
    return isa == SIMD_ISA_AVX2 ? SP_A2_MB : SP_S_MB;
}

static int sp_isa_nc(int isa)
{
    return isa == SIMD_ISA_AVX2 ? SP_A2_NC : SP_S_NC;
}

/* ---------------------------------------------------------------- scalar, 4 x 4 */

static void sp_uk_scalar(long nr, const float *pa, const float *bv, const int32_t *bo,
                         float *ot, long ldo)
{
    float acc[SP_S_NC][SP_S_MB];
    long r;
    int c, i;
    for (c = 0; c < SP_S_NC; c++)
        for (i = 0; i < SP_S_MB; i++) acc[c][i] = 0.0f;
    for (r = 0; r < nr; r++) {
        for (c = 0; c < SP_S_NC; c++) {
            const float *a = pa + bo[r * SP_S_NC + c];
            const float v = bv[r * SP_S_NC + c];
            for (i = 0; i < SP_S_MB; i++) acc[c][i] = fmaf(a[i], v, acc[c][i]);
        }
    }
    for (c = 0; c < SP_S_NC; c++)
        for (i = 0; i < SP_S_MB; i++) ot[c * ldo + i] = ot[c * ldo + i] + acc[c][i];
}

#if SIMD_X86

/* ---------------------------------------------------------------- AVX2 + FMA, 16 x 6 */

#define SP_A2_COLS(X) X(0) X(1) X(2) X(3) X(4) X(5)

__attribute__((target("avx2,fma")))
static void sp_uk_avx2(long nr, const float *pa, const float *bv, const int32_t *bo,
                       float *ot, long ldo)
{
#define SP_A2_DECL(c) __m256 a##c##_0 = _mm256_setzero_ps(), a##c##_1 = _mm256_setzero_ps();
    SP_A2_COLS(SP_A2_DECL)
#undef SP_A2_DECL
    long r;
    for (r = 0; r < nr; r++) {
        __m256 v;
        const float *a;
#define SP_A2_FMA(c) a = pa + bo[c]; v = _mm256_broadcast_ss(bv + (c)); \
        a##c##_0 = _mm256_fmadd_ps(_mm256_loadu_ps(a), v, a##c##_0); \
        a##c##_1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8), v, a##c##_1);
        SP_A2_COLS(SP_A2_FMA)
#undef SP_A2_FMA
        bv += SP_A2_NC;
        bo += SP_A2_NC;
    }
#define SP_A2_ADD(c) \
    _mm256_storeu_ps(ot + (c) * ldo, _mm256_add_ps(_mm256_loadu_ps(ot + (c) * ldo), a##c##_0)); \
    _mm256_storeu_ps(ot + (c) * ldo + 8, _mm256_add_ps(_mm256_loadu_ps(ot + (c) * ldo + 8), a##c##_1));
    SP_A2_COLS(SP_A2_ADD)
#undef SP_A2_ADD
}

/* ------------------------------------------- AVX-512F, lanes along output columns */

/* A second layout for the AVX-512 path: lanes run along 32 output columns. For each row i
 * of A and group g, the group's M candidates A[i, g*M + q] sit in one register (masked
 * load); vpermps picks, per column lane, the candidate that column's index selects. So no
 * load per multiply-add, and the output is written row-major directly.
 * Packed B (one 32-column block of one fold): bi[(r - f0) * 32 + j] in-group index,
 * bv[(r - f0) * 32 + j] value (columns past the end: index 0, value 0).
 * Same order as above: per output, psum = +0, fmaf per compressed row in order,
 * out = out + psum. */
#define SP_P5_MR 6
#define SP_P5_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define SP_P5_ONE(X) X(0)
#define SP_P5_DECL(i) __m512 c##i##_0 = _mm512_setzero_ps(), c##i##_1 = _mm512_setzero_ps(), a##i;
#define SP_P5_CAND(i) a##i = _mm512_maskz_loadu_ps(gm, ag + (i) * kp);
#define SP_P5_FMA(i) \
    c##i##_0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(x0, a##i), v0, c##i##_0); \
    c##i##_1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(x1, a##i), v1, c##i##_1);
#define SP_P5_ADD(i) \
    _mm512_mask_storeu_ps(out + (i) * ldo, k0, \
        _mm512_add_ps(_mm512_maskz_loadu_ps(k0, out + (i) * ldo), c##i##_0)); \
    _mm512_mask_storeu_ps(out + (i) * ldo + 16, k1, \
        _mm512_add_ps(_mm512_maskz_loadu_ps(k1, out + (i) * ldo + 16), c##i##_1));

#define SP_P5_KERNEL(NAME, ROWS)                                                            \
__attribute__((target("avx512f")))                                                         \
static void NAME(long f0, long f1, int n, int m, const float *A, long kp, const int32_t *bi,\
                 const float *bv, float *out, long ldo, __mmask16 k0, __mmask16 k1)        \
{                                                                                          \
    const __mmask16 gm = (__mmask16)((1u << m) - 1);                                       \
    ROWS(SP_P5_DECL)                                                                       \
    long r = f0;                                                                           \
    while (r < f1) {                                                                       \
        long g = r / n, rend = (g + 1) * n < f1 ? (g + 1) * n : f1;                        \
        const float *ag = A + g * m;                                                       \
        ROWS(SP_P5_CAND)                                                                   \
        for (; r < rend; r++) {                                                            \
            const int32_t *xi = bi + (r - f0) * 32;                                        \
            const float *xv = bv + (r - f0) * 32;                                          \
            __m512i x0 = _mm512_loadu_si512((const void *)xi);                             \
            __m512i x1 = _mm512_loadu_si512((const void *)(xi + 16));                      \
            __m512 v0 = _mm512_loadu_ps(xv), v1 = _mm512_loadu_ps(xv + 16);                \
            ROWS(SP_P5_FMA)                                                                \
        }                                                                                  \
    }                                                                                      \
    ROWS(SP_P5_ADD)                                                                        \
}

SP_P5_KERNEL(sp_p5_rows6, SP_P5_ROWS)
SP_P5_KERNEL(sp_p5_rows1, SP_P5_ONE)


/* Rows [r0, r1) of A against one packed 32-column block of one fold. */
static void sp_p5_block(long f0, long f1, int n, int m, const float *A, long kp, long r0,
                        long r1, const int32_t *bi, const float *bv, float *out, long ldo,
                        long c0, int width)
{
    __mmask16 k0 = (__mmask16)(width >= 16 ? 0xFFFF : (1u << width) - 1);
    __mmask16 k1 = (__mmask16)(width >= 32 ? 0xFFFF : width <= 16 ? 0 : (1u << (width - 16)) - 1);
    long i = r0;
    for (; i + SP_P5_MR <= r1; i += SP_P5_MR)
        sp_p5_rows6(f0, f1, n, m, A + i * kp, kp, bi, bv, out + i * ldo + c0, ldo, k0, k1);
    for (; i < r1; i++)
        sp_p5_rows1(f0, f1, n, m, A + i * kp, kp, bi, bv, out + i * ldo + c0, ldo, k0, k1);
}

#else
static void sp_p5_block(long f0, long f1, int n, int m, const float *A, long kp, long r0,
                        long r1, const int32_t *bi, const float *bv, float *out, long ldo,
                        long c0, int width)
{
    (void)f0; (void)f1; (void)n; (void)m; (void)A; (void)kp; (void)r0; (void)r1; (void)bi;
    (void)bv; (void)out; (void)ldo; (void)c0; (void)width;  /* never called off x86 */
}
#endif /* x86 */

/* ---------------------------------------------------------------- decompose */

/* Per-column nonzero counts of group g (rows g*m .. g*m+m-1 that exist); returns 1 when
 * a weight is NaN or inf. +0.0 and -0.0 are zeros (the sign bit is masked off). */
SIMD_CLONES
static int sp_count_group(const uint32_t *bits, long K, long cols, int m, long g,
                          uint8_t *cnt)
{
    long c, row;
    int q;
    uint32_t nonfinite = 0;
    for (c = 0; c < cols; c++) cnt[c] = 0;
    for (q = 0; q < m; q++) {
        row = g * m + q;
        if (row >= K) break;
        for (c = 0; c < cols; c++) {
            uint32_t b = bits[row * cols + c];
            cnt[c] += (uint8_t)((b & 0x7FFFFFFFu) != 0);
            nonfinite |= (uint32_t)((b & 0x7F800000u) == 0x7F800000u);
        }
    }
    return nonfinite != 0;
}

/* Slots of group g for a chunk of columns, written in full (fillers are +0.0, index 0):
 * slot j of column c holds the j-th nonzero (in row order) of the group's column c, which
 * goes to pass j / n, compressed row g*n + j % n. Selecting "the j-th nonzero" with
 * compares and selects (no branch, no scatter) lets the column loop vectorise; the chunk's
 * running state lives in small arrays that stay in L1. */
#define SP_FILL_CHUNK 512

SIMD_CLONES
static void sp_fill_group(const float *w, long K, long cols, int n, int m, long g,
                          int slots, long kc, float *values, uint8_t *indices)
{
    float v[SP_FILL_CHUNK];
    int32_t ix[SP_FILL_CHUNK], cnt[SP_FILL_CHUNK];
    long c0, c, width;
    int j, q;
    for (c0 = 0; c0 < cols; c0 += SP_FILL_CHUNK) {
        width = cols - c0 < SP_FILL_CHUNK ? cols - c0 : SP_FILL_CHUNK;
        for (j = 0; j < slots; j++) {
            float *vout = values + ((long)(j / n) * kc + g * n + j % n) * cols + c0;
            uint8_t *iout = indices + ((long)(j / n) * kc + g * n + j % n) * cols + c0;
            for (c = 0; c < width; c++) { v[c] = 0.0f; ix[c] = 0; cnt[c] = 0; }
            for (q = 0; q < m && g * m + q < K; q++) {
                const float *row = w + (g * m + q) * cols + c0;
                for (c = 0; c < width; c++) {
                    int32_t nz = row[c] != 0.0f;
                    int32_t take = nz & (cnt[c] == j);
                    v[c] = take ? row[c] : v[c];
                    ix[c] = take ? q : ix[c];
                    cnt[c] += nz;
                }
            }
            for (c = 0; c < width; c++) { vout[c] = v[c]; iout[c] = (uint8_t)ix[c]; }
        }
    }
}

/* One MB x NC tile of one fold on the AVX2 or scalar path. */
static void sp_micro(int isa, long nr, const float *pa, const float *bv, const int32_t *bo,
                     float *ot, long ldo)
{
#if SIMD_X86
    if (isa == SIMD_ISA_AVX2) { sp_uk_avx2(nr, pa, bv, bo, ot, ldo); return; }
#endif
    sp_uk_scalar(nr, pa, bv, bo, ot, ldo);
}

#endif /* SYSBENCH_SPARSE_MICRO_H */
