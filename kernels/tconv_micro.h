/* tconv_micro.h: the output-phase path of sysbench._kernels.tconv (float32).
 *
 * The outputs of one phase (rows ah + qi*sh, columns aw + qj*sw) are a regular convolution
 * of the input: every kernel element (tap) that reaches the phase reads input pixel
 * (qi + di, qj + dj), a constant shift. Laid on a grid of the input's row length W, phase
 * pixel m = qi*W + qj reads input element m + di*W + dj of each channel plane: a tile of
 * NR consecutive phase pixels (lanes) is NR consecutive input floats of each channel plane of
 * the NCHW input; a lane whose input pixel lies outside the image reads 0 (a mask). Those rows
 * are packed once per tap, fold and block of tiles into an aligned buffer (tc_pack_*), or
 * read in place through the mask for a fold deeper than TC_PACK_ROWS. The weights are packed
 * MR output channels wide, k-major: a[k*MR + i].
 *
 * One call of the micro-kernel: one tap, one fold of input channels, MR x NR outputs, in the
 * order of the per-element GEMM and scatter (the README's contract):
 *     acc = +0;  acc = fmaf(a, b, acc) over the fold's channels in increasing order;
 *     X = P ? P + acc : acc;   D = (first ? +0 : D) + X
 * With D the output tile, a tap of one fold adds its contribution (out = out + P_e, the
 * first onto +0). With D = P, the folds of a tap build P_e = +0 + fold 1, P_e = P_e + fold 2,
 * ...; the last fold adds P_e + acc to the output tile. A masked lane's acc stays +0 (finite
 * weights times 0), and adding +0 leaves an output, which is never -0, as it was: the bits
 * are those of the kernel elements that reach it, and only those.
 *
 * Tiles: AVX-512F 8 x 32 (16 accumulators; output channels come in multiples of 8) or 12 x 32,
 * AVX2+FMA 6 x 16 (a last tile of 4 or fewer channels 4 x 16), scalar 4 x 8. D and P are MR x
 * NR buffers with row stride NR.
 */
#ifndef SYSBENCH_TCONV_MICRO_H
#define SYSBENCH_TCONV_MICRO_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"
#if SIMD_X86
#include <cpuid.h>
#endif

#define TC_S_MR 4
#define TC_S_NR 8
#define TC_A2_MR 6
#define TC_A2_NR 16
#define TC_A5_MR 8
#define TC_A5W_MR 12
#define TC_A5_NR 32
#define TC_MAX_MR 12
#define TC_MAX_NR 32
/* tile kinds: the SIMD_ISA_* codes, and AVX-512 with 12-row tiles (24 accumulators: fewer
 * loads per multiply-add, for output channels that 12 divides with little waste) */
#define TC_TILE_AVX512W 3

static int tc_tile_mr(int tile)
{
    return tile == TC_TILE_AVX512W ? TC_A5W_MR : tile == SIMD_ISA_AVX512 ? TC_A5_MR
         : tile == SIMD_ISA_AVX2 ? TC_A2_MR : TC_S_MR;
}

static int tc_tile_nr(int tile)
{
    return tile == TC_TILE_AVX512W || tile == SIMD_ISA_AVX512 ? TC_A5_NR
         : tile == SIMD_ISA_AVX2 ? TC_A2_NR : TC_S_NR;
}

/* ---------------------------------------------------------------- scalar, 4 x 8 */

static void tc_uk_scalar(long kc, const float *a, const float *b, long ldb, unsigned mask,
                         const float *P, float *D, int first)
{
    float acc[TC_S_MR * TC_S_NR], bk[TC_S_NR];
    long i, j, k;
    for (i = 0; i < TC_S_MR * TC_S_NR; i++) acc[i] = 0.0f;
    for (k = 0; k < kc; k++) {
        for (j = 0; j < TC_S_NR; j++) bk[j] = (mask >> j) & 1u ? b[j] : 0.0f;
        for (i = 0; i < TC_S_MR; i++)
            for (j = 0; j < TC_S_NR; j++)
                acc[i * TC_S_NR + j] = fmaf(a[i], bk[j], acc[i * TC_S_NR + j]);
        a += TC_S_MR;
        b += ldb;
    }
    for (i = 0; i < TC_S_MR * TC_S_NR; i++) {
        float x = P ? P[i] + acc[i] : acc[i];
        D[i] = (first ? 0.0f : D[i]) + x;
    }
}

#if SIMD_X86

/* ---------------------------------------------------------------- AVX2 + FMA, 6 x 16 */

/* lanes 0-7 and 8-15 of a 16-lane mask as the all-ones/all-zeros vectors maskload wants */
__attribute__((target("avx2")))
static inline __m256i tc_avx2_lanes(unsigned mask8)
{
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)(mask8 & 0xffu)), bits), bits);
}

/* The weights stay packed 6 rows wide (a += TC_A2_MR per k); a tile whose valid output
 * channels are 4 or fewer (the last one of 64 or 256 channels) runs the 4-row kernel, so
 * that it does not spend a third of its multiply-adds on rows that are thrown away. */
#define TC_A2_DECL(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
#define TC_A2_FMA(i) av = _mm256_broadcast_ss(a + (i)); \
                     c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0); \
                     c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);
#define TC_A2_OUT(i) \
    { \
        __m256 x0 = c##i##0, x1 = c##i##1; \
        if (P) { \
            x0 = _mm256_add_ps(_mm256_loadu_ps(P + (i) * TC_A2_NR), x0); \
            x1 = _mm256_add_ps(_mm256_loadu_ps(P + (i) * TC_A2_NR + 8), x1); \
        } \
        __m256 d0 = first ? z : _mm256_loadu_ps(D + (i) * TC_A2_NR); \
        __m256 d1 = first ? z : _mm256_loadu_ps(D + (i) * TC_A2_NR + 8); \
        _mm256_storeu_ps(D + (i) * TC_A2_NR, _mm256_add_ps(d0, x0)); \
        _mm256_storeu_ps(D + (i) * TC_A2_NR + 8, _mm256_add_ps(d1, x1)); \
    }
#define TC_A2_KERNEL(NAME, ROWS) \
__attribute__((target("avx2,fma"))) \
static void NAME(long kc, const float *a, const float *b, long ldb, unsigned mask, \
                 const float *P, float *D, int first) \
{ \
    const __m256i m0 = tc_avx2_lanes(mask), m1 = tc_avx2_lanes(mask >> 8); \
    const __m256 z = _mm256_setzero_ps(); \
    long k; \
    ROWS(TC_A2_DECL) \
    if ((mask & 0xffffu) == 0xffffu) {  /* every lane reads: plain loads */ \
        _Pragma("GCC unroll 4") \
        for (k = 0; k < kc; k++) { \
            __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), av; \
            ROWS(TC_A2_FMA) \
            a += TC_A2_MR; \
            b += ldb; \
        } \
    } else { \
        _Pragma("GCC unroll 4") \
        for (k = 0; k < kc; k++) { \
            __m256 b0 = _mm256_maskload_ps(b, m0), b1 = _mm256_maskload_ps(b + 8, m1), av; \
            ROWS(TC_A2_FMA) \
            a += TC_A2_MR; \
            b += ldb; \
        } \
    } \
    ROWS(TC_A2_OUT) \
}

#define TC_A2_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define TC_A2_ROWS4(X) X(0) X(1) X(2) X(3)
TC_A2_KERNEL(tc_uk_avx2, TC_A2_ROWS)
TC_A2_KERNEL(tc_uk_avx2_rows4, TC_A2_ROWS4)

/* ---------------------------------------------------------------- AVX-512F, 8 or 12 x 32 */

#define TC_A5_FMA(i) av = _mm512_set1_ps(a[i]); \
                     c##i##_0 = _mm512_fmadd_ps(av, b0, c##i##_0); \
                     c##i##_1 = _mm512_fmadd_ps(av, b1, c##i##_1);
#define TC_A5_DECL(i) __m512 c##i##_0 = _mm512_setzero_ps(), c##i##_1 = _mm512_setzero_ps();
#define TC_A5_OUT(i) \
    { \
        __m512 x0 = c##i##_0, x1 = c##i##_1; \
        if (P) { \
            x0 = _mm512_add_ps(_mm512_loadu_ps(P + (i) * TC_A5_NR), x0); \
            x1 = _mm512_add_ps(_mm512_loadu_ps(P + (i) * TC_A5_NR + 16), x1); \
        } \
        __m512 d0 = first ? z : _mm512_loadu_ps(D + (i) * TC_A5_NR); \
        __m512 d1 = first ? z : _mm512_loadu_ps(D + (i) * TC_A5_NR + 16); \
        _mm512_storeu_ps(D + (i) * TC_A5_NR, _mm512_add_ps(d0, x0)); \
        _mm512_storeu_ps(D + (i) * TC_A5_NR + 16, _mm512_add_ps(d1, x1)); \
    }
/* every lane reads: plain loads (a masked loop moves the masks into k registers) */
#define TC_A5_KERNEL(NAME, MR, ROWS) \
__attribute__((target("avx512f"))) \
static void NAME(long kc, const float *a, const float *b, long ldb, unsigned mask, \
                 const float *P, float *D, int first) \
{ \
    const __mmask16 m0 = (__mmask16)(mask & 0xffffu), m1 = (__mmask16)(mask >> 16); \
    const __m512 z = _mm512_setzero_ps(); \
    long k; \
    ROWS(TC_A5_DECL) \
    if (mask == 0xffffffffu) { \
        _Pragma("GCC unroll 4") \
        for (k = 0; k < kc; k++) { \
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), av; \
            ROWS(TC_A5_FMA) \
            a += MR; \
            b += ldb; \
        } \
    } else { \
        _Pragma("GCC unroll 4") \
        for (k = 0; k < kc; k++) { \
            __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16), av; \
            ROWS(TC_A5_FMA) \
            a += MR; \
            b += ldb; \
        } \
    } \
    ROWS(TC_A5_OUT) \
}

#define TC_A5_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define TC_A5W_ROWS(X) TC_A5_ROWS(X) X(8) X(9) X(10) X(11)
TC_A5_KERNEL(tc_uk_avx512, TC_A5_MR, TC_A5_ROWS)
TC_A5_KERNEL(tc_uk_avx512w, TC_A5W_MR, TC_A5W_ROWS)

/* Every tap of a tile at once, for one fold (the whole input depth) and half a tile's lanes:
 * D[i*ldd + j] for lanes j < 16 of the packed rows bs[t] (row stride TC_A5_NR), the taps in
 * order, each tap's acc from +0 and added to D (from +0) as tc_uk_avx512 with P = NULL
 * would. D stays in registers across the taps (acc and D: 2 x MR of the 32 registers), so the
 * tile's sum no longer goes through memory after every tap. stream: D is the output (rows on
 * 64-byte lines, written once and not read back here), else tc_panel's buffer. */
#define TC_T16_DECL(i) __m512 c##i, d##i = _mm512_setzero_ps();
#define TC_T16_ZERO(i) c##i = _mm512_setzero_ps();
#define TC_T16_FMA(i) c##i = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), bv, c##i);
#define TC_T16_ADD(i) d##i = _mm512_add_ps(d##i, c##i);
#define TC_T16_STORE(i) _mm512_store_ps(D + (i) * ldd, d##i);
#define TC_T16_STREAM(i) _mm512_stream_ps(D + (i) * ldd, d##i);
#define TC_A5_TAPS_KERNEL(NAME, MR, ROWS) \
__attribute__((target("avx512f"))) \
static void NAME(long kc, long ntaps, const float *const *as, const float *const *bs, float *D, \
                 long ldd, int stream) \
{ \
    long t, k; \
    ROWS(TC_T16_DECL) \
    for (t = 0; t < ntaps; t++) { \
        const float *a = as[t], *b = bs[t]; \
        ROWS(TC_T16_ZERO) \
        _Pragma("GCC unroll 4") \
        for (k = 0; k < kc; k++) { \
            const __m512 bv = _mm512_load_ps(b); \
            ROWS(TC_T16_FMA) \
            a += MR; \
            b += TC_A5_NR; \
        } \
        ROWS(TC_T16_ADD) \
    } \
    if (stream) { ROWS(TC_T16_STREAM) } \
    else { ROWS(TC_T16_STORE) } \
}
TC_A5_TAPS_KERNEL(tc_uk_avx512_taps16, TC_A5_MR, TC_A5_ROWS)
TC_A5_TAPS_KERNEL(tc_uk_avx512w_taps16, TC_A5W_MR, TC_A5W_ROWS)

/* Packed rows whose first or last 8 or 16 lanes are all zeros (the lanes of an input row
 * that lies outside the image for this tap, as row 0 for a tap reading the row above): the
 * kernels of the live lanes only, LO..HI - 1 (8-lane groups; a group of 8 is a ymm
 * multiply-add, half a zmm one on Zen 4's 256-bit units). The dead lanes' sums are +0, as
 * the full kernel's are there (finite weights times +0), and go through the same
 * epilogue: the bits are the full kernel's. b: packed, NR floats a row. */
#define TC_A5_ZERO8(i, g) __m256 c##i##_g##g = _mm256_setzero_ps();
#define TC_A5_OUT8(i, g) \
    { \
        __m256 x = c##i##_g##g; \
        if (P) x = _mm256_add_ps(_mm256_loadu_ps(P + (i) * TC_A5_NR + 8 * (g)), x); \
        __m256 d = first ? _mm256_setzero_ps() : _mm256_loadu_ps(D + (i) * TC_A5_NR + 8 * (g)); \
        _mm256_storeu_ps(D + (i) * TC_A5_NR + 8 * (g), _mm256_add_ps(d, x)); \
    }
/* lanes 8-31: a ymm for 8-15, a zmm for 16-31 */
#define TC_A5_HI24_DECL(i) TC_A5_ZERO8(i, 0) TC_A5_ZERO8(i, 1) \
                           __m512 c##i##_1 = _mm512_setzero_ps();
#define TC_A5_HI24_FMA(i) av = _mm512_set1_ps(a[i]); \
    c##i##_g1 = _mm256_fmadd_ps(_mm512_castps512_ps256(av), bh, c##i##_g1); \
    c##i##_1 = _mm512_fmadd_ps(av, b1, c##i##_1);
#define TC_A5_HI24_OUT(i) TC_A5_OUT8(i, 0) TC_A5_OUT8(i, 1) TC_A5_OUT16(i, 1)
/* lanes 0-23: a zmm for 0-15, a ymm for 16-23 */
#define TC_A5_LO24_DECL(i) __m512 c##i##_0 = _mm512_setzero_ps(); \
                           TC_A5_ZERO8(i, 2) TC_A5_ZERO8(i, 3)
#define TC_A5_LO24_FMA(i) av = _mm512_set1_ps(a[i]); \
    c##i##_0 = _mm512_fmadd_ps(av, b0, c##i##_0); \
    c##i##_g2 = _mm256_fmadd_ps(_mm512_castps512_ps256(av), bh, c##i##_g2);
#define TC_A5_LO24_OUT(i) TC_A5_OUT16(i, 0) TC_A5_OUT8(i, 2) TC_A5_OUT8(i, 3)
/* lanes 16-31 or 0-15: one zmm (the 24-lane kernels' registers, their ymm staying +0) */
#define TC_A5_HI16_DECL TC_A5_HI24_DECL
#define TC_A5_HI16_FMA(i) c##i##_1 = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), b1, c##i##_1);
#define TC_A5_HI16_OUT TC_A5_HI24_OUT
#define TC_A5_LO16_DECL TC_A5_LO24_DECL
#define TC_A5_LO16_FMA(i) c##i##_0 = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), b0, c##i##_0);
#define TC_A5_LO16_OUT TC_A5_LO24_OUT
#define TC_A5_OUT16(i, h) \
    { \
        __m512 x = c##i##_##h; \
        if (P) x = _mm512_add_ps(_mm512_loadu_ps(P + (i) * TC_A5_NR + 16 * (h)), x); \
        __m512 d = first ? _mm512_setzero_ps() : _mm512_loadu_ps(D + (i) * TC_A5_NR + 16 * (h)); \
        _mm512_storeu_ps(D + (i) * TC_A5_NR + 16 * (h), _mm512_add_ps(d, x)); \
    }
#define TC_A5_PART_KERNEL(NAME, MR, ROWS, PART, LOADS) \
__attribute__((target("avx512f,fma"))) \
static void NAME(long kc, const float *a, const float *b, long ldb, unsigned mask, \
                 const float *P, float *D, int first) \
{ \
    long k; \
    (void)mask; \
    ROWS(TC_A5_##PART##_DECL) \
    _Pragma("GCC unroll 4") \
    for (k = 0; k < kc; k++) { \
        LOADS \
        ROWS(TC_A5_##PART##_FMA) \
        a += MR; \
        b += ldb; \
    } \
    ROWS(TC_A5_##PART##_OUT) \
}
#define TC_A5_LOAD_HI24 __m256 bh = _mm256_loadu_ps(b + 8); __m512 b1 = _mm512_loadu_ps(b + 16), av;
#define TC_A5_LOAD_LO24 __m512 b0 = _mm512_loadu_ps(b), av; __m256 bh = _mm256_loadu_ps(b + 16);
#define TC_A5_LOAD_HI16 __m512 b1 = _mm512_loadu_ps(b + 16);
#define TC_A5_LOAD_LO16 __m512 b0 = _mm512_loadu_ps(b);
TC_A5_PART_KERNEL(tc_uk_avx512_hi24, TC_A5_MR, TC_A5_ROWS, HI24, TC_A5_LOAD_HI24)
TC_A5_PART_KERNEL(tc_uk_avx512_lo24, TC_A5_MR, TC_A5_ROWS, LO24, TC_A5_LOAD_LO24)
TC_A5_PART_KERNEL(tc_uk_avx512_hi16, TC_A5_MR, TC_A5_ROWS, HI16, TC_A5_LOAD_HI16)
TC_A5_PART_KERNEL(tc_uk_avx512_lo16, TC_A5_MR, TC_A5_ROWS, LO16, TC_A5_LOAD_LO16)
TC_A5_PART_KERNEL(tc_uk_avx512w_hi24, TC_A5W_MR, TC_A5W_ROWS, HI24, TC_A5_LOAD_HI24)
TC_A5_PART_KERNEL(tc_uk_avx512w_lo24, TC_A5W_MR, TC_A5W_ROWS, LO24, TC_A5_LOAD_LO24)
TC_A5_PART_KERNEL(tc_uk_avx512w_hi16, TC_A5W_MR, TC_A5W_ROWS, HI16, TC_A5_LOAD_HI16)
TC_A5_PART_KERNEL(tc_uk_avx512w_lo16, TC_A5W_MR, TC_A5W_ROWS, LO16, TC_A5_LOAD_LO16)

#endif /* x86 */

typedef void (*tc_uk_fn)(long, const float *, const float *, long, unsigned, const float *,
                         float *, int);

/* ---------------------------------------------------------------- packing one fold's input
 * bp[k*nr + j] = lane j's input float of channel k (b[k*ldb + j]), 0 where the lane's pixel
 * lies outside the image: the loads a micro-kernel would mask, done once per tap and fold
 * for every tile of a block, so that the micro-kernels read aligned, unmasked, contiguous
 * rows (and channel planes a multiple of 4 KiB apart no longer evict each other in L1). */
typedef void (*tc_pack_fn)(long, const float *, long, unsigned, float *);

static void tc_pack_scalar(long kc, const float *b, long ldb, unsigned mask, float *bp)
{
    long k, j;
    for (k = 0; k < kc; k++, b += ldb, bp += TC_S_NR)
        for (j = 0; j < TC_S_NR; j++) bp[j] = (mask >> j) & 1u ? b[j] : 0.0f;
}

#if SIMD_X86
__attribute__((target("avx2")))
static void tc_pack_avx2(long kc, const float *b, long ldb, unsigned mask, float *bp)
{
    const __m256i m0 = tc_avx2_lanes(mask), m1 = tc_avx2_lanes(mask >> 8);
    long k;
    for (k = 0; k < kc; k++, b += ldb, bp += TC_A2_NR) {
        _mm256_store_ps(bp, _mm256_maskload_ps(b, m0));
        _mm256_store_ps(bp + 8, _mm256_maskload_ps(b + 8, m1));
    }
}

__attribute__((target("avx512f")))
static void tc_pack_avx512(long kc, const float *b, long ldb, unsigned mask, float *bp)
{
    const __mmask16 m0 = (__mmask16)(mask & 0xffffu), m1 = (__mmask16)(mask >> 16);
    long k;
    for (k = 0; k < kc; k++, b += ldb, bp += TC_A5_NR) {
        _mm512_store_ps(bp, _mm512_maskz_loadu_ps(m0, b));
        _mm512_store_ps(bp + 16, _mm512_maskz_loadu_ps(m1, b + 16));
    }
}
#endif

static tc_pack_fn tc_tile_pack(int tile)
{
#if SIMD_X86
    if (tile == TC_TILE_AVX512W || tile == SIMD_ISA_AVX512) return tc_pack_avx512;
    if (tile == SIMD_ISA_AVX2) return tc_pack_avx2;
#endif
    return tc_pack_scalar;
}

static tc_uk_fn tc_tile_kernel(int tile)
{
#if SIMD_X86
    if (tile == TC_TILE_AVX512W) return tc_uk_avx512w;
    if (tile == SIMD_ISA_AVX512) return tc_uk_avx512;
    if (tile == SIMD_ISA_AVX2) return tc_uk_avx2;
#endif
    return tc_uk_scalar;
}

/* the kernel for packed rows whose lanes outside [8 * lo, 8 * hi) are zeros (NULL: the
 * tile's full kernel) */
static tc_uk_fn tc_tile_kernel_lanes(int tile, int lo, int hi)
{
#if SIMD_X86
    const int wide = tile == TC_TILE_AVX512W;
    if (tile == SIMD_ISA_AVX512 || wide) {
        if (lo == 1 && hi == 4) return wide ? tc_uk_avx512w_hi24 : tc_uk_avx512_hi24;
        if (lo == 0 && hi == 3) return wide ? tc_uk_avx512w_lo24 : tc_uk_avx512_lo24;
        if (lo == 2 && hi == 4) return wide ? tc_uk_avx512w_hi16 : tc_uk_avx512_hi16;
        if (lo == 0 && hi == 2) return wide ? tc_uk_avx512w_lo16 : tc_uk_avx512_lo16;
    }
#endif
    (void)tile; (void)lo; (void)hi;
    return NULL;
}

/* the kernel for a tile of `rows` valid output channels (<= the tile's MR) */
static tc_uk_fn tc_tile_kernel_rows(int tile, long rows)
{
#if SIMD_X86
    if (tile == SIMD_ISA_AVX2 && rows <= 4) return tc_uk_avx2_rows4;
#endif
    (void)rows;
    return tc_tile_kernel(tile);
}

/* a flag shared by the threads of a parallel region: raised by any, read after a barrier */
static inline void tc_raise(int *flag) { __atomic_store_n(flag, 1, __ATOMIC_RELAXED); }
static inline int tc_raised(const int *flag) { return __atomic_load_n(flag, __ATOMIC_RELAXED); }

/* every thread of the enclosing parallel region waits here for the others and sees their
 * writes: a Cython prange inside `with parallel()` is an `omp for nowait`, whose bounds each
 * thread computes before it (GCC puts a barrier at its start only for its firstprivate and
 * lastprivate variables) */
static inline void tc_barrier(void)
{
#ifdef _OPENMP
    _Pragma("omp barrier")
#endif
}

/* ---------------------------------------------------------------- element weights
 * out[t][o][c] = w[c][o][taps[t]] for output channels [o_lo, o_hi) and channels [0, nc) of w,
 * which points at the first channel (c_step floats from a channel to the next); out is
 * (ntaps, cout, channels) at its first channel, o_step = channels and t_step = cout *
 * channels floats apart. A channel's kernels of consecutive output channels are one run of
 * (output channel, kernel element) pairs: blocks of 16 pairs of 16 channels are read a row
 * per channel and transposed, and each pair's 16 channels go to every tap t that names its
 * element (tap_start[k] .. tap_start[k + 1] in tap_of: the t with taps[t] = k). Output
 * channel by output channel, each tap's plane is written in order. The channels' runs are a
 * multiple of 4 KiB apart for many layers (DCGAN 512->256: 16 KiB): read one element at a
 * time they evicted each other from L1, and writes that jumped from tap to tap waited on
 * each line's read (2.4 ms for that layer's weights, now 1.0 ms, a copy 0.25 ms). */
#if SIMD_X86
__attribute__((target("avx512f")))
static void tc_element_weights_avx512(const float *w, long c_step, long khkw, long nc,
                                      long o_lo, long o_hi, const int64_t *tap_start,
                                      const int64_t *tap_of, float *out, long o_step,
                                      long t_step)
{
    __m512 r[16];
    long c, f0, j, n, o, k;
    int i;
    for (f0 = o_lo * khkw; f0 < o_hi * khkw; f0 += 16) {
        const long pairs = o_hi * khkw - f0 < 16 ? o_hi * khkw - f0 : 16;
        const long o0 = f0 / khkw, k0 = f0 % khkw;  /* pair f0's output channel, element */
        const __mmask16 take = (__mmask16)(pairs == 16 ? 0xFFFFu : (1u << pairs) - 1u);
        for (c = 0; c < nc; c += 16) {
            const int h = nc - c < 16 ? (int)(nc - c) : 16;
            const __mmask16 keep = (__mmask16)(h == 16 ? 0xFFFFu : (1u << h) - 1u);
            for (i = 0; i < 16; i++)
                r[i] = i < h ? _mm512_maskz_loadu_ps(take, w + (c + i) * c_step + f0)
                             : _mm512_setzero_ps();
            simd_transpose16_avx512(r);  /* r[j]: pair f0 + j of the block's channels */
            for (j = 0, o = o0, k = k0; j < pairs; j++) {  /* pair j: (o, k) */
                for (n = tap_start[k]; n < tap_start[k + 1]; n++) {
                    float *dst = out + tap_of[n] * t_step + o * o_step + c;
                    if (h == 16 && ((uintptr_t)dst & 63u) == 0)
                        _mm512_stream_ps(dst, r[j]);  /* no read of the line first */
                    else
                        _mm512_mask_storeu_ps(dst, keep, r[j]);
                }
                if (++k == khkw) { k = 0; o++; }
            }
        }
    }
    _mm_sfence();  /* the streamed rows visible before anyone reads them */
}
#endif

/* tc_element_weights_avx512 where the CPU has it (the only caller's case); else the plain
 * loop, for a build without x86 SIMD */
static void tc_element_weights(int isa, const float *w, long c_step, long khkw, long nc,
                               long o_lo, long o_hi, const int64_t *tap_start,
                               const int64_t *tap_of, float *out, long o_step, long t_step)
{
    long o, k, n, c;
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) {
        tc_element_weights_avx512(w, c_step, khkw, nc, o_lo, o_hi, tap_start, tap_of, out,
                                  o_step, t_step);
        return;
    }
#endif
    (void)isa;
    for (o = o_lo; o < o_hi; o++)
        for (k = 0; k < khkw; k++)
            for (n = tap_start[k]; n < tap_start[k + 1]; n++)
                for (c = 0; c < nc; c++)
                    out[tap_of[n] * t_step + o * o_step + c] = w[c * c_step + o * khkw + k];
}

/* ---------------------------------------------------------------- packing the weights
 * Input channels [c0 + cb, c0 + cb + TC_PACK_CB) of the output channel tiles [0, tiles) (MR
 * channels each) of every phase:
 * packed[start_q + ((tile*taps_q + t)*cin + c)*mr + i] = w[c0 + c, tile*mr + i, tap], 0 past
 * the last output channel (cout) or for a phase without taps (one tap of zeros); w is (cin,
 * cout, kh, kw) from the block's first output channel, w_cout output channels a row. Per
 * tile, its kernels of each input channel (one run of mr * khkw floats) are read in order and
 * transposed into tb (tap, channel, output channel), from which each (phase, tap) slot gets
 * the block's channels in one copy. The channels' runs are sequential from tile to tile:
 * streams the hardware prefetchers follow (one task a tile, reading its mr floats of a tap
 * khkw apart for every slot and channels w_cout * khkw floats apart, waited on memory: 5% of
 * DCGAN 256->128 on Zen 4, with the finiteness check as a pass of its own another 2%).
 * Returns 1 when a weight read is inf or nan (exponent bits all ones): a masked lane
 * multiplies a weight by 0, which only a finite weight survives as +0.
 * info rows: taps, -, -, -, -, first tap (into taps_k), ... (10 fields). */
/* input channels per task: each (phase, tap) slot gets TC_PACK_CB * mr floats in a row (one
 * channel at a time wrote 32 bytes to every slot, slots cin * mr floats apart: cache-set
 * conflicts, DCGAN 256->128 at batch 8 7% slower at 2 threads on Zen 4) */
#define TC_PACK_CB 8
/* floats of tb: TC_PACK_CB channels of 16 taps at the widest tile (a larger kernel goes in
 * blocks of taps) */
#define TC_PACK_TB (TC_PACK_CB * 16 * TC_MAX_MR)

#define TC_PACK_MAX_KHKW 256  /* kernels of more elements go through tb */
#if SIMD_X86
/* an 8 x 16 block (rows: 8 output channels' runs of 16 taps) -> v[k]: tap k's 8 output
 * channels in the low half, tap k + 8's in the high half (the 8 x 8 transpose of AVX on both
 * 256-bit halves at once) */
__attribute__((target("avx512f")))
static inline void tc_transpose8x16_avx512(const __m512 r[8], __m512 v[8])
{
    const __m512i lo_pairs = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19,
                                               8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi_pairs = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23,
                                               12, 13, 14, 15, 28, 29, 30, 31);
    __m512 t[8], u[8];
    int i;
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (i = 0; i < 4; i++) {
        v[i] = _mm512_permutex2var_ps(u[i], lo_pairs, u[i + 4]);
        v[i + 4] = _mm512_permutex2var_ps(u[i], hi_pairs, u[i + 4]);
    }
}

/* tc_pack_weights for 8-row tiles on AVX-512, straight into the slots: per tile and pair of
 * input channels, each channel's 8 output channels' runs of 16 taps (8 registers) are
 * transposed in registers (tc_transpose8x16_avx512) and each tap's 2 x 8 floats stored into
 * its slot as one 64-byte line; the finiteness check runs on the same registers. dst_of[k]:
 * where kernel element k's slot of tile 0 and channel 0 starts (-1: no phase takes it),
 * tile_step[k]: floats from a tile's slot to the next's. Through tb (a 16 x 16 transpose for
 * half its rows, a copy per slot and a check pass of its own) this took 7% of DCGAN
 * 256->128 on Zen 4; with a 32-byte store per channel, a slot line's two halves came 15
 * stores apart to slots a multiple of 4 KiB apart, and the line was often fetched twice. */
__attribute__((target("avx512f")))
static unsigned tc_pack_weights_mr8_avx512(const float *w, long w_cout, long khkw, long c0,
                                           long cout, long tiles, long cb, long nc,
                                           const long *dst_of, const long *tile_step,
                                           float *packed)
{
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    __m512 r[8], v[2][8];
    long tile, c, kb, f;
    int i, k, h;
    for (tile = 0; tile < tiles; tile++) {
        const long o0 = tile * 8, rows = cout - o0 < 8 ? cout - o0 : 8;
        for (c = 0; c < nc && tile + 1 < tiles; c++) {  /* the next tile's runs (as below) */
            const float *src = w + ((c0 + cb + c) * w_cout + o0) * khkw;
            for (f = 0; f < 8 * khkw; f += 16) __builtin_prefetch(src + 8 * khkw + f);
        }
        for (c = 0; c < nc; c += 2) {
            const int pair = nc - c >= 2;
            for (kb = 0; kb < khkw; kb += 16) {
                const int kn = khkw - kb < 16 ? (int)(khkw - kb) : 16;
                const __mmask16 take = (__mmask16)(kn == 16 ? 0xFFFFu : (1u << kn) - 1u);
                for (h = 0; h < 1 + pair; h++) {
                    const float *src = w + ((c0 + cb + c + h) * w_cout + o0) * khkw + kb;
                    for (i = 0; i < 8; i++) {  /* r[i]: output channel i's taps kb.. */
                        r[i] = i < rows ? _mm512_maskz_loadu_ps(take, src + i * khkw)
                                        : _mm512_setzero_ps();
                        bad |= _mm512_cmpeq_epi32_mask(
                            _mm512_and_si512(_mm512_castps_si512(r[i]), exponent), exponent);
                    }
                    tc_transpose8x16_avx512(r, v[h]);
                }
                for (k = 0; k < kn; k++) {
                    const long e = kb + k;
                    float *dst;
                    __m512 line;
                    if (dst_of[e] < 0) continue;
                    dst = packed + dst_of[e] + tile * tile_step[e] + (cb + c) * 8;
                    /* tap e of channel c in the low half, of c + 1 in the high half */
                    line = k < 8 ? _mm512_shuffle_f32x4(v[0][k], v[1][k], 0x44)
                                 : _mm512_shuffle_f32x4(v[0][k - 8], v[1][k - 8], 0xEE);
                    if (pair)
                        _mm512_storeu_ps(dst, line);
                    else
                        _mm256_storeu_ps(dst, _mm512_castps512_ps256(line));
                }
            }
        }
    }
    return bad != 0;
}
#endif

static int tc_pack_weights(int tile_kind, const float *w, long w_cout, long khkw, long c0,
                           long cin, long cout, long tiles, long cb, long nphases,
                           const int64_t *info, const int64_t *starts, const int64_t *taps_k,
                           float *packed)
{
    const long mr = tc_tile_mr(tile_kind);
    const int avx512 = tile_kind == TC_TILE_AVX512W || tile_kind == SIMD_ISA_AVX512;
    const long nc = cin - cb < TC_PACK_CB ? cin - cb : TC_PACK_CB;
    const long kn_max = TC_PACK_TB / (TC_PACK_CB * mr);  /* taps per block */
    float tb[TC_PACK_TB];
    unsigned bad = 0;
    long tile, c, kb, kn, q, t, i, k, f;
#if SIMD_X86
    if (tile_kind == SIMD_ISA_AVX512 && mr == 8 && khkw <= TC_PACK_MAX_KHKW) {
        long dst_of[TC_PACK_MAX_KHKW], tile_step[TC_PACK_MAX_KHKW];
        for (k = 0; k < khkw; k++) dst_of[k] = -1;
        for (q = 0; q < nphases; q++) {
            const long taps = info[q * 10];
            const int64_t *tk = taps_k + info[q * 10 + 5];
            if (taps == 0)  /* one tap of zeros */
                for (tile = 0; tile < tiles; tile++)
                    memset(packed + starts[q] + (tile * cin + cb) * mr, 0,
                           sizeof(float) * (size_t)(nc * mr));
            for (t = 0; t < taps; t++) {
                dst_of[tk[t]] = starts[q] + t * cin * mr;
                tile_step[tk[t]] = taps * cin * mr;
            }
        }
        return (int)tc_pack_weights_mr8_avx512(w, w_cout, khkw, c0, cout, tiles, cb, nc,
                                               dst_of, tile_step, packed);
    }
#endif
    for (tile = 0; tile < tiles; tile++) {
        const long o0 = tile * mr, rows = cout - o0 < mr ? cout - o0 : mr;
        for (c = 0; c < nc; c++) {
            const float *src = w + ((c0 + cb + c) * w_cout + o0) * khkw;
            /* each channel's runs are a stream of a few KiB, too short for the prefetchers
             * to catch (the loads below waited on memory): fetch the next tile's */
            if (tile + 1 < tiles)
                for (f = 0; f < mr * khkw; f += 16) __builtin_prefetch(src + mr * khkw + f);
            for (f = 0; f < rows * khkw; f++) {
                uint32_t u;
                memcpy(&u, src + f, sizeof u);
                bad |= (u & 0x7f800000u) == 0x7f800000u;
            }
        }
        for (kb = 0; kb < khkw; kb += kn_max) {
            kn = khkw - kb < kn_max ? khkw - kb : kn_max;
            for (c = 0; c < nc; c++) {
                const float *src = w + ((c0 + cb + c) * w_cout + o0) * khkw + kb;
#if SIMD_X86
                if (avx512) {  /* in registers: 4x faster than the scalar loop */
                    simd_transpose_avx512(src, khkw, rows, kn, tb + c * mr, nc * mr, mr);
                    continue;
                }
#endif
                for (i = 0; i < mr; i++)
                    for (k = 0; k < kn; k++)
                        tb[(k * nc + c) * mr + i] = i < rows ? src[i * khkw + k] : 0.0f;
            }
            for (q = 0; q < nphases; q++) {
                const long taps = info[q * 10], ntap = taps > 0 ? taps : 1;
                const int64_t *tk = taps_k + info[q * 10 + 5];
                for (t = 0; t < ntap; t++) {
                    float *dst = packed + starts[q] + ((tile * ntap + t) * cin + cb) * mr;
                    if (taps == 0) {
                        if (kb == 0) memset(dst, 0, sizeof(float) * (size_t)(nc * mr));
                    } else if (tk[t] >= kb && tk[t] < kb + kn) {
                        memcpy(dst, tb + (tk[t] - kb) * nc * mr, sizeof(float) * (size_t)(nc * mr));
                    }
                }
            }
        }
    }
    return bad != 0;
}

/* ---------------------------------------------------------------- writing a tile's rows
 * A row of a C tile into its output plane: lane j to orow[lanes[j]] (-1: nowhere). gsteps[g]:
 * lanes 8g..8g+7 land 1 to TC_GROUP_STEP apart from lanes[8g] (0: not so, or a lane is
 * dropped); such a group (a stride-2 or -3 phase's pixels of one output row) is one expand
 * and masked store on AVX-512 (two of 4 lanes each where the 8 span more than 16 floats),
 * which writes only its lanes: the other phases' outputs between them stay. Eight scalar
 * stores a group waited on the store buffer (4% of DCGAN 256->128 on Zen 4, 20% of the
 * stride-3 layer's time). */
#define TC_GROUP_STEP 5
#if SIMD_X86
/* a group whose 8 lanes span more than 16 floats: lanes 0, gs, 2 gs, 3 gs of each half */
__attribute__((target("avx512f"), noinline))
static void tc_store_wide_group_avx512(float *orow, const float *crow, const int64_t *lanes,
                                       int gs)
{
    const __mmask16 m = (__mmask16)(1u | 1u << gs | 1u << 2 * gs | 1u << 3 * gs);
    int j;
    for (j = 0; j < 8; j += 4) {
        __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(crow + j));
        _mm512_mask_storeu_ps(orow + lanes[j], m, _mm512_maskz_expand_ps(m, v));
    }
}

__attribute__((target("avx512f")))
static void tc_store_row_avx512(float *orow, const float *crow, const int64_t *lanes,
                                const int *gsteps, long nr)
{
    long g, j;
    for (g = 0; g < nr / 8; g++) {
        const __mmask16 m = gsteps[g] == 1 ? 0x00ff : 0x5555;
        if (gsteps[g] == 1 || gsteps[g] == 2) {
            __m512 v = _mm512_castps256_ps512(_mm256_loadu_ps(crow + 8 * g));
            _mm512_mask_storeu_ps(orow + lanes[8 * g], m, _mm512_maskz_expand_ps(m, v));
        } else if (gsteps[g] > 0) {
            tc_store_wide_group_avx512(orow, crow + 8 * g, lanes + 8 * g, gsteps[g]);
        } else {
            for (j = 8 * g; j < 8 * g + 8; j++)
                if (lanes[j] >= 0) orow[lanes[j]] = crow[j];
        }
    }
}

/* One row of a 32-lane tile to 32 consecutive outputs (a stride-1 layer's panel): streamed
 * past the cache when the row starts on a cache line (the output is written once here, and
 * the stores waited on reading its lines in: 2% of the stride-1 layer on Zen 4). The caller
 * fences (tc_fence) before other threads may read. */
__attribute__((target("avx512f")))
static void tc_copy_row32_avx512(float *orow, const float *crow)
{
    if (((uintptr_t)orow & 63u) == 0) {
        _mm512_stream_ps(orow, _mm512_load_ps(crow));
        _mm512_stream_ps(orow + 16, _mm512_load_ps(crow + 16));
    } else {
        _mm512_storeu_ps(orow, _mm512_load_ps(crow));
        _mm512_storeu_ps(orow + 16, _mm512_load_ps(crow + 16));
    }
}
#endif

/* ---------------------------------------------------------------- one panel
 * Output channel tiles [tile_lo, tile_hi) (MR channels each) of one image, one phase and one
 * panel of NR phase pixels starting at grid pixel m0. xb: the image's first input channel of the group (channel planes `plane`
 * floats apart); offsets[t]: input element of lane 0's pixel for tap t, relative to m0;
 * masks[t]: the lanes whose input pixel exists for tap t; wpack: the phase's packed weights,
 * (ceil(cout / MR), taps, cin, MR); fold: input channels per fold (cin: one fold).
 * lanes[j]: where lane j's output goes in an output plane (-1: nowhere); outb: the image's
 * first output channel of the group, planes out_plane floats apart.
 * bcache (NULL: none): packed rows kept between the phases of a panel and, for a stride-1
 * layer, between consecutive panels, a slot per fold and input shift or first input row
 * (slots[t]: tap t's slot; bcache_tags: what each slot holds, tap_tags[t] naming tap t's
 * packed rows). The phases of a stride-2 layer with 4 x 4 kernels read 9 shifts in 16 taps:
 * each is packed once per panel, and read back from L2 in order (packing reads one or two
 * cache lines of every channel plane); a stride-1 3 x 3 kernel's panel of one row packs 3
 * of its 9 taps' rows, the other 6 are the panels' before it.
 * Tiles go in blocks, the taps and folds outermost within a block, so that a fold's input
 * (fold x NR floats, packed by tc_pack_* when the fold is at most TC_PACK_ROWS deep) stays in
 * L1 while every tile of the block reads it: blocks of 16 KiB of output tiles with one fold
 * per tap, of 8 KiB when the tiles' partial sums P take room too.
 */
#define TC_BLOCK_FLOATS 4096
#define TC_PACK_ROWS 256
#define TC_FUSE_TAPS 64  /* taps of one tc_panel_taps call at most */

/* A tap's packed input rows in the row cache (tc_panel's bcache): slot `slot`, slot_floats
 * floats a slot, packed now unless the slot already holds `tag`. */
static inline float *tc_cached_rows(tc_pack_fn pack, long kc, const float *b, long ldb,
                                    unsigned mask, float *bcache, int64_t *bcache_tags,
                                    long slot, int64_t tag, long slot_floats)
{
    float *bs = bcache + slot * slot_floats;
    if (bcache_tags[slot] != tag) {
        pack(kc, b, ldb, mask, bs);
        bcache_tags[slot] = tag;
    }
    return bs;
}

/* Whether output channel tile `tile` (mr channels) lies wholly within the cout channels: the
 * tiles tc_panel_taps writes straight to the output, and tc_panel then does not copy. */
static inline int tc_tile_whole(long tile, int mr, long cout)
{
    return (tile + 1) * mr <= cout;
}

#if SIMD_X86
/* The taps of one fold and a block of tiles (tc_panel with bcache, folds == 1, nr == 32):
 * every tap's rows packed (or found in the cache) first, then per tile and half of the
 * lanes one call over the taps whose lanes there are not all outside the image (a tap that
 * adds +0 to every lane changes nothing, as in tc_panel). With out (the 32 lanes go to 32
 * consecutive outputs from out, on a 64-byte line, channel planes out_plane apart, a
 * multiple of 16) a tile of MR channels that exist is written there, the others into C. */
__attribute__((noinline))
static void tc_panel_taps(int tile_kind, const float *xm, long plane, long taps,
                         const int64_t *offsets, const uint32_t *masks, const float *wpack,
                         long cin, long fold, long cout, long t0, long t1, float *C, float *out,
                         long out_plane, float *bcache, int64_t *bcache_tags,
                         const int64_t *slots, const int64_t *tap_tags)
{
    const int mr = tc_tile_mr(tile_kind);
    const long tile_floats = (long)mr * TC_A5_NR;
    const float *rows[2][TC_FUSE_TAPS], *ws[TC_FUSE_TAPS];
    long which[2][TC_FUSE_TAPS], n[2] = {0, 0}, t, tile, h, i;
    for (t = 0; t < taps; t++) {
        float *bs;
        if (masks[t] == 0u) continue;
        bs = tc_cached_rows(tc_pack_avx512, cin, xm + offsets[t], plane, masks[t], bcache,
                            bcache_tags, slots[t], tap_tags[t], fold * TC_A5_NR);  /* folds == 1 */
        for (h = 0; h < 2; h++)
            if ((masks[t] >> (16 * h)) & 0xffffu) {
                rows[h][n[h]] = bs + 16 * h;
                which[h][n[h]++] = t;
            }
    }
    for (tile = t0; tile < t1; tile++) {
        const int direct = out != NULL && tc_tile_whole(tile, mr, cout);
        float *D = direct ? out + tile * mr * out_plane : C + (tile - t0) * tile_floats;
        const long ldd = direct ? out_plane : TC_A5_NR;
        for (h = 0; h < 2; h++) {
            for (i = 0; i < n[h]; i++) ws[i] = wpack + (tile * taps + which[h][i]) * cin * mr;
            if (tile_kind == TC_TILE_AVX512W)
                tc_uk_avx512w_taps16(cin, n[h], ws, rows[h], D + 16 * h, ldd, direct);
            else
                tc_uk_avx512_taps16(cin, n[h], ws, rows[h], D + 16 * h, ldd, direct);
        }
    }
}
#endif

/* Whether tc_panel sums every tap of a tile in one call (tc_panel_taps) where it can. That
 * kernel takes half a tile's lanes per pass to keep the tile's sum in registers: 9 loads per
 * 8 FMAs. Where a 512-bit FMA takes both 256-bit pipes (AMD Zen 4) it is FMA-bound either
 * way and saves the tile's trips through memory after every tap (stride 1 and DCGAN 128->64
 * faster there); where two 512-bit FMAs issue per cycle (Intel Xeon) it is load-bound, and
 * the 32-lane kernel (10 loads per 16 FMAs) ran those layers 6-12% faster. Same bits either
 * way. The default: on for AMD family 19h (Zen 4; Zen 3 has no AVX-512 tiles), else off. */
static int tc_fuse_taps = 0;

static int tc_fuse_taps_default(void)
{
#if SIMD_X86
    unsigned a, b, c, d, family;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    if (b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u) return 0;  /* AuthenticAMD */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    family = (a >> 8) & 0xfu;
    if (family == 0xfu) family += (a >> 20) & 0xffu;
    return family == 0x19u;
#else
    return 0;
#endif
}

/* Set the choice (mode < 0: the CPU's default); returns the one in force before. */
static int tc_set_fuse_taps(int mode)
{
    const int before = tc_fuse_taps;
    tc_fuse_taps = mode < 0 ? tc_fuse_taps_default() : mode != 0;
    return before;
}

static void tc_panel(int tile_kind, const float *xb, long plane, long taps, const int64_t *offsets,
                     const uint32_t *masks, long m0, const float *wpack, long cin, long fold,
                     long cout, long tile_lo, long tile_hi, const int64_t *lanes, float *outb,
                     long out_plane, float *bcache, int64_t *bcache_tags, const int64_t *slots,
                     const int64_t *tap_tags)
{
    const int mr = tc_tile_mr(tile_kind), nr = tc_tile_nr(tile_kind);
    const long tile_floats = (long)mr * nr;
    const tc_uk_fn uk_full = tc_tile_kernel(tile_kind);
    const long last = (cout - 1) / mr;  /* the only tile that may hold fewer than mr channels */
    const tc_uk_fn uk_last = tc_tile_kernel_rows(tile_kind, cout - last * mr);
    const tc_pack_fn pack = tc_tile_pack(tile_kind);
    const unsigned full = nr == 32 ? 0xffffffffu : (1u << nr) - 1u;
    float C[TC_BLOCK_FLOATS] __attribute__((aligned(64)));
    float B[TC_PACK_ROWS * TC_MAX_NR] __attribute__((aligned(64)));
    float P[TC_BLOCK_FLOATS / 2] __attribute__((aligned(64)));
    const long folds = (cin + fold - 1) / fold;
    const long block = (folds == 1 ? TC_BLOCK_FLOATS : TC_BLOCK_FLOATS / 2) / tile_floats;
    long t0, t1, tile, t, f, i, j;
    /* lanes that land `step` apart in one output row (no lane dropped): a copy loop without
     * the table (a memcpy for step 1) */
    long step = lanes[0] >= 0 && nr > 1 ? lanes[1] - lanes[0] : 0;
    int gsteps[TC_MAX_NR / 8];
    int grouped = 0;  /* a group of lanes for tc_store_row_avx512 */
    int streamed = 0;  /* tc_copy_row32_avx512 ran: its stores want a fence */
    for (j = 1; j < nr && step > 0; j++)
        if (lanes[j] != lanes[0] + j * step) step = 0;
    for (i = 0; i < nr / 8; i++) {
        const long base = lanes[8 * i], gs = lanes[8 * i + 1] - base;
        gsteps[i] = base >= 0 && gs >= 1 && gs <= TC_GROUP_STEP ? (int)gs : 0;
        for (j = 2; j < 8 && gsteps[i] > 0; j++)
            if (lanes[8 * i + j] != base + j * gs) gsteps[i] = 0;
        grouped |= gsteps[i] > 0 && (tile_kind == TC_TILE_AVX512W || tile_kind == SIMD_ISA_AVX512);
    }
    /* one fold, rows kept in the cache, AVX-512 tiles: every tap of a tile in one call */
    int fused = tc_fuse_taps && bcache != NULL && folds == 1 && cin <= TC_PACK_ROWS && nr == 32
                && taps <= TC_FUSE_TAPS
                && (tile_kind == SIMD_ISA_AVX512 || tile_kind == TC_TILE_AVX512W);
    /* ... unless a tap's live half of the lanes has 8 dead ones, which the part kernels
     * skip (a stride-2 layer's 8-wide rows: 2.5% slower fused) */
    for (t = 0; t < taps && fused; t++)
        for (i = 0; i < 2; i++) {
            const unsigned half = (masks[t] >> (16 * i)) & 0xffffu;
            if (half != 0u && ((half & 0xffu) == 0u || (half >> 8) == 0u)) fused = 0;
        }
    /* fused, with the 32 lanes on 32 consecutive outputs on a 64-byte line (a stride-1
     * layer's panel of whole rows): full tiles go straight to the output */
    const int direct = fused && step == 1 && ((uintptr_t)(outb + lanes[0]) & 63u) == 0
                       && out_plane % 16 == 0;
    for (t0 = tile_lo; t0 < tile_hi; t0 += block) {
        int first = 1;
        t1 = t0 + block < tile_hi ? t0 + block : tile_hi;
#if SIMD_X86
        if (fused) {
            tc_panel_taps(tile_kind, xb + m0, plane, taps, offsets, masks, wpack, cin, fold,
                          cout, t0, t1, C, direct ? outb + lanes[0] : NULL, out_plane, bcache,
                          bcache_tags, slots, tap_tags);
            streamed |= direct;
            first = 0;
        }
#endif
        for (t = 0; t < taps && !fused; t++) {
            const float *bt = xb + m0 + offsets[t];
            if (masks[t] == 0u) continue;  /* +0 on every lane: the tap changes nothing */
            for (f = 0; f < folds; f++) {
                long kc = cin - f * fold < fold ? cin - f * fold : fold;
                const float *bf = bt + f * fold * plane;
                long ldb = plane;
                unsigned mask = masks[t];
                tc_uk_fn part = NULL;  /* packed rows with dead lanes at an end: their kernel */
                if (kc <= TC_PACK_ROWS) {
                    /* with a cache: the shift's rows, packed by an earlier phase of this
                     * panel, or now */
                    if (bcache != NULL) {
                        bf = tc_cached_rows(pack, kc, bf, plane, mask, bcache, bcache_tags,
                                            slots[t] * folds + f, tap_tags[t], fold * nr);
                    } else {
                        pack(kc, bf, plane, mask, B);
                        bf = B;
                    }
                    ldb = nr;
                    if (mask != full && nr == 32) {
                        int lo = 0, hi = 4;
                        while (lo < hi && ((mask >> (8 * lo)) & 0xffu) == 0u) lo++;
                        while (hi > lo && ((mask >> (8 * (hi - 1))) & 0xffu) == 0u) hi--;
                        part = tc_tile_kernel_lanes(tile_kind, lo, hi);
                    }
                    mask = full;
                }
                for (tile = t0; tile < t1; tile++) {
                    const float *af = wpack + (tile * taps + t) * cin * mr + f * fold * mr;
                    const tc_uk_fn uk = part != NULL ? part : tile == last ? uk_last : uk_full;
                    float *Ct = C + (tile - t0) * tile_floats, *Pt = P + (tile - t0) * tile_floats;
                    if (folds == 1)
                        uk(kc, af, bf, ldb, mask, NULL, Ct, first);
                    else if (f < folds - 1)
                        uk(kc, af, bf, ldb, mask, NULL, Pt, f == 0);
                    else
                        uk(kc, af, bf, ldb, mask, Pt, Ct, first);
                }
            }
            first = 0;
        }
        if (first)  /* no tap reaches these outputs: +0 */
            memset(C, 0, sizeof(float) * (size_t)((t1 - t0) * tile_floats));
        for (tile = t0; tile < t1; tile++) {
            if (direct && tc_tile_whole(tile, mr, cout)) continue;  /* written there */
            for (i = 0; i < mr && tile * mr + i < cout; i++) {
                const float *crow = C + (tile - t0) * tile_floats + i * nr;
                float *orow = outb + (tile * mr + i) * out_plane;
#if SIMD_X86
                if (step == 1 && grouped && nr == 32) {
                    tc_copy_row32_avx512(orow + lanes[0], crow);
                    streamed = 1;
                } else if (grouped && step != 1) {
                    tc_store_row_avx512(orow, crow, lanes, gsteps, nr);
                } else
#endif
                if (step == 1) {
                    simd_copy_row(orow + lanes[0], crow, nr);
                } else if (step > 1) {
                    float *o = orow + lanes[0];
                    for (j = 0; j < nr; j++) o[j * step] = crow[j];
                } else {
                    for (j = 0; j < nr; j++)
                        if (lanes[j] >= 0) orow[lanes[j]] = crow[j];
                }
            }
        }
    }
#if SIMD_X86
    if (streamed) _mm_sfence();  /* the streamed rows visible before anyone reads them */
#else
    (void)streamed;
#endif
}

#endif /* SYSBENCH_TCONV_MICRO_H */
