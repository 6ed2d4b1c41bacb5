/* systolic_micro.h: packing and register-blocked micro-kernels for sysbench._kernels.systolic.
 *
 * One portable build: the AVX-512F and AVX2+FMA micro-kernels live in functions compiled
 * with __attribute__((target(...))) and are chosen at run time (simd.h: ISA codes, CPU
 * check, aligned allocation, the 16 x 16 transpose of the A packer); the scalar path uses
 * C fmaf. Every multiply-add is one fused fp32 operation; the setup.py
 * flag -ffp-contract=off keeps the compiler from fusing anything else.
 *
 * Packed layouts (BLIS):
 *   A panel: MR rows x kc, stored k-major: pa[k*MR + i] = A[i0+i, k0+k]  (rows >= M are 0)
 *   B panel: kc x NR,      stored k-major: pb[k*NR + j] = B[k0+k, j0+j]  (cols >= N are 0)
 * Micro-kernel modes, on one MR x NR tile of C:
 *   SB_FOLD  (fold order): acc = +0; acc = fma(a, b, acc) over the kc k's; C = C + acc
 *   SB_CHAIN (chain order): acc = C;  acc = fma(a, b, acc) over the kc k's; C = acc
 *   SB_FOLD_FIRST / SB_CHAIN_FIRST: the first K block, as if C held +0 (C is not read):
 *     fold stores C = +0 + acc (turns a -0 psum into +0, as out = +0 + psum does),
 *     chain starts from acc = +0 and stores C = acc.
 * sb_macro's SB_STEP (the only K block; C holds a parameter): the tile's chain sum from +0
 * in a buffer, then C = C - lr * sum (the product rounded, then the difference: plain
 * SGD's bits), so a gradient taken only to be stepped with is never stored.
 */
#ifndef SYSBENCH_SYSTOLIC_MICRO_H
#define SYSBENCH_SYSTOLIC_MICRO_H

#include <math.h>
#include <string.h>

#include "simd.h"

#define SB_FOLD 0
#define SB_CHAIN 1
/* first K block: C is not read (it may be uninitialised); fold stores +0 + acc */
#define SB_FOLD_FIRST 2
#define SB_CHAIN_FIRST 3
#define SB_STEP 4

/* tile geometry per ISA */
#define SB_S_MR 4
#define SB_S_NR 8
#define SB_A2_MR 6
#define SB_A2_NR 16
#define SB_A5_MR 12
#define SB_A5_NR 32
#define SB_MAX_MR 16
#define SB_MAX_NR 32

static int sb_isa_mr(int isa) { return simd_per_isa(isa, SB_A5_MR, SB_A2_MR, SB_S_MR); }

static int sb_isa_nr(int isa) { return simd_per_isa(isa, SB_A5_NR, SB_A2_NR, SB_S_NR); }

/* ---------------------------------------------------------------- packing workspace
 * The packing buffers of one GEMM, kept per calling thread between calls: a fresh
 * allocation of a few MB is fresh memory from the system (every page faults in, ~500 per
 * 2 MB call, a millisecond on a VM), which is most of the difference between a GEMM on a
 * training step's shapes and one on buffers it reuses. sb_ws_take hands out the thread's
 * cached buffer when it is large enough (and takes it from the cache, so a nested call
 * allocates its own); sb_ws_give caches it again, freeing the smaller of the two.
 * Buffers above SB_WS_CACHE_MAX floats (64 MB) are not kept. */
#define SB_WS_CACHE_MAX ((size_t)16 << 20)
static __thread float *sb_ws_cached = NULL;
static __thread size_t sb_ws_cached_floats = 0;

static float *sb_ws_take(size_t floats, size_t *got)
{
    if (sb_ws_cached != NULL && sb_ws_cached_floats >= floats) {
        float *p = sb_ws_cached;
        *got = sb_ws_cached_floats;
        sb_ws_cached = NULL;
        sb_ws_cached_floats = 0;
        return p;
    }
    *got = floats;
    return (float *)simd_alloc(floats, sizeof(float));
}

static void sb_ws_give(float *p, size_t floats)
{
    if (p == NULL) return;
    if (floats > SB_WS_CACHE_MAX || floats <= sb_ws_cached_floats) {
        simd_free(p);
        return;
    }
    simd_free(sb_ws_cached);
    sb_ws_cached = p;
    sb_ws_cached_floats = floats;
}

/* ---------------------------------------------------------------- packing */

/* One A panel: rows [i0, i0+rows) (rows <= mr), reduction [k0, k0+kc). Rows are read
 * contiguously (a strided gather down a column would thrash the cache and the TLB). */
static void sb_pack_a_panel(const float *A, long lda, long i0, long rows, long k0, long kc,
                            int mr, float *dst)
{
    long i, k;
    for (i = 0; i < rows; i++) {
        const float *src = A + (i0 + i) * lda + k0;
        for (k = 0; k < kc; k++) dst[k * mr + i] = src[k];
    }
    for (; i < mr; i++)
        for (k = 0; k < kc; k++) dst[k * mr + i] = 0.0f;
}

/* B panels [p0, p1) of the block whose columns start at j0 (cols valid columns in the
 * whole block, reduction [k0, k0+kc)). A few k's at a time for every panel, as the A^T
 * packing does: a handful of B's rows are read in order and each panel is written in runs
 * of SB_B_KB * nr floats. One k for every panel wrote each panel's k slot a panel (kc * nr
 * floats, 16 KiB at kc = 128) apart: DCGAN 512->256 (128 x 512 x 4096 products) was 7%
 * slower at batch 8 and 15% at batch 1 on Zen 4; large GEMMs are unchanged. */
#define SB_B_KB 8
static void sb_pack_b_panels(const float *B, long ldb, long k0, long kc, long j0, long cols,
                             int nr, long p0, long p1, float *dst)
{
    long j, k, kb, kend, p;
    for (kb = 0; kb < kc; kb += SB_B_KB) {
        kend = kb + SB_B_KB < kc ? kb + SB_B_KB : kc;
        for (p = p0; p < p1; p++) {
            long w = cols - p * nr;
            for (k = kb; k < kend; k++) {
                const float *src = B + (k0 + k) * ldb + j0 + p * nr;
                float *d = dst + p * kc * nr + k * nr;
                if (w >= nr) {
                    simd_copy_row(d, src, nr);
                } else {
                    for (j = 0; j < w; j++) d[j] = src[j];
                    for (; j < nr; j++) d[j] = 0.0f;
                }
            }
        }
    }
}

/* A panels [p0, p1) of the chunk whose rows start at i0 (rows valid rows in the chunk)
 * from AT (K x M, row stride ldat), the caller's A^T in row-major order: each k is a run of
 * mr floats per panel. A few k's at a time for every panel, so that a handful of rows of
 * AT are read in order and each panel is written in runs (all k of one panel at once
 * would read rows a page apart: cache-set conflicts). */
#define SB_A_TRANS_KB 8
/* With g != NULL each element is also updated once it is packed: AT = AT - lr * g (g in
 * AT's layout, row stride ldg; the product and the difference each rounded, as numpy's
 * separate multiply and subtract): plain SGD fused into the one pass that reads the
 * weights anyway. The panel keeps the value from before the update. */
#if SIMD_X86
/* full AVX-512 panels (mr = 12): one masked 512-bit load and store per k */
__attribute__((target("avx512f")))
static void sb_pack_a_trans_avx512(float *src0, long ldat, long kb, long kend, long kc,
                                   long p0, long p1, float *dst, const float *g0, long ldg,
                                   float lr)
{
    const __mmask16 m = (__mmask16)((1u << SB_A5_MR) - 1u);
    const __m512 vlr = _mm512_set1_ps(lr);
    long p, k;
    for (p = p0; p < p1; p++) {
        float *src = src0 + p * SB_A5_MR;
        float *d = dst + p * kc * SB_A5_MR + kb * SB_A5_MR;
        if (g0 == NULL) {
            for (k = kb; k < kend; k++, src += ldat, d += SB_A5_MR)
                _mm512_mask_storeu_ps(d, m, _mm512_maskz_loadu_ps(m, src));
        } else {
            const float *g = g0 + p * SB_A5_MR;
            for (k = kb; k < kend; k++, src += ldat, d += SB_A5_MR, g += ldg) {
                __m512 v = _mm512_maskz_loadu_ps(m, src);
                _mm512_mask_storeu_ps(d, m, v);
                __m512 t = _mm512_mul_ps(vlr, _mm512_maskz_loadu_ps(m, g));
                _mm512_mask_storeu_ps(src, m, _mm512_sub_ps(v, t));
            }
        }
    }
}

/* full AVX2 panels (mr = 6): 4 + 2 floats per k (two SSE moves each way; a masked AVX2
 * store is slower), the same separate multiply and subtract per element */
__attribute__((target("sse2")))
static void sb_pack_a_trans_sse6(float *src0, long ldat, long kb, long kend, long kc,
                                 long p0, long p1, float *dst, const float *g0, long ldg,
                                 float lr)
{
    const __m128 vlr = _mm_set1_ps(lr);
    long p, k;
    for (p = p0; p < p1; p++) {
        float *src = src0 + p * SB_A2_MR;
        float *d = dst + p * kc * SB_A2_MR + kb * SB_A2_MR;
        const float *g = g0 == NULL ? NULL : g0 + p * SB_A2_MR;
        for (k = kb; k < kend; k++, src += ldat, d += SB_A2_MR) {
            __m128 v4 = _mm_loadu_ps(src);
            __m128d v2 = _mm_load_sd((const double *)(src + 4));
            _mm_storeu_ps(d, v4);
            _mm_store_sd((double *)(d + 4), v2);
            if (g != NULL) {
                __m128 t4 = _mm_mul_ps(vlr, _mm_loadu_ps(g));
                __m128 t2 = _mm_mul_ps(vlr, _mm_castpd_ps(_mm_load_sd((const double *)(g + 4))));
                _mm_storeu_ps(src, _mm_sub_ps(v4, t4));
                _mm_store_sd((double *)(src + 4), _mm_castps_pd(_mm_sub_ps(_mm_castpd_ps(v2), t2)));
                g += ldg;
            }
        }
    }
}
#endif

static void sb_pack_a_trans_panels(int isa, float *AT, long ldat, long k0, long kc, long i0,
                                   long rows, int mr, long p0, long p1, float *dst,
                                   const float *g, long ldg, float lr)
{
    long kb, kend, p, k, i, full = rows / mr;  /* panels [0, full) have mr valid rows */
    for (kb = 0; kb < kc; kb += SB_A_TRANS_KB) {
        kend = kb + SB_A_TRANS_KB < kc ? kb + SB_A_TRANS_KB : kc;
        p = p0;
#if SIMD_X86
        if (isa == SIMD_ISA_AVX512 && mr == SB_A5_MR) {
            long pf = full < p1 ? full : p1;
            if (pf > p) {
                sb_pack_a_trans_avx512(AT + (k0 + kb) * ldat + i0, ldat, kb, kend, kc, p, pf, dst,
                                       g == NULL ? NULL : g + (k0 + kb) * ldg + i0, ldg, lr);
                p = pf;
            }
        } else if (mr == SB_A2_MR) {
            long pf = full < p1 ? full : p1;
            if (pf > p) {
                sb_pack_a_trans_sse6(AT + (k0 + kb) * ldat + i0, ldat, kb, kend, kc, p, pf, dst,
                                     g == NULL ? NULL : g + (k0 + kb) * ldg + i0, ldg, lr);
                p = pf;
            }
        }
#endif
        for (; p < p1; p++) {
            long w = rows - p * mr;
            float *src = AT + (k0 + kb) * ldat + i0 + p * mr;
            const float *gk = g == NULL ? NULL : g + (k0 + kb) * ldg + i0 + p * mr;
            float *d = dst + p * kc * mr + kb * mr;
            if (w > mr) w = mr;
            for (k = kb; k < kend; k++, src += ldat, d += mr) {
                for (i = 0; i < w; i++) d[i] = src[i];
                for (; i < mr; i++) d[i] = 0.0f;
                if (gk != NULL) {
                    for (i = 0; i < w; i++) {
                        float t = lr * gk[i];
                        src[i] = src[i] - t;
                    }
                    gk += ldg;
                }
            }
        }
    }
}

/* B panels [p0, p1) from an operand stored transposed: BT (N x K, row stride ldbt), the
 * caller's B^T in row-major order (numpy's .T of a C array), so that no transposed copy is
 * made first. A panel's columns are rows of BT, transposed 16 x 16 at a time on AVX-512
 * (isa), element by element otherwise. */
static void sb_pack_b_trans_panels(int isa, const float *BT, long ldbt, long k0, long kc,
                                   long j0, long cols, int nr, long p0, long p1, float *dst)
{
    long j, k, p;
    for (p = p0; p < p1; p++) {
        float *d = dst + p * kc * nr;
        long w = cols - p * nr;
        const float *src = BT + (j0 + p * nr) * ldbt + k0;
        if (w > nr) w = nr;
#if SIMD_X86
        if (isa == SIMD_ISA_AVX512 && nr % 16 == 0) {
            simd_transpose_avx512(src, ldbt, w, kc, d, nr, nr);
            continue;
        }
#endif
        for (k = 0; k < kc; k++) {
            for (j = 0; j < w; j++) d[k * nr + j] = src[j * ldbt + k];
            for (; j < nr; j++) d[k * nr + j] = 0.0f;
        }
    }
}

/* ---------------------------------------------------------------- scalar micro-kernel */

static void sb_uk_scalar(long kc, const float *a, const float *b, float *c, long ldc, int mode)
{
    float acc[SB_S_MR * SB_S_NR];
    long i, j, k;
    for (i = 0; i < SB_S_MR; i++)
        for (j = 0; j < SB_S_NR; j++)
            acc[i * SB_S_NR + j] = mode == SB_CHAIN ? c[i * ldc + j] : 0.0f;
    for (k = 0; k < kc; k++) {
        const float *ak = a + k * SB_S_MR, *bk = b + k * SB_S_NR;
        for (i = 0; i < SB_S_MR; i++) {
            float ai = ak[i];
            for (j = 0; j < SB_S_NR; j++)
                acc[i * SB_S_NR + j] = fmaf(ai, bk[j], acc[i * SB_S_NR + j]);
        }
    }
    for (i = 0; i < SB_S_MR; i++)
        for (j = 0; j < SB_S_NR; j++) {
            if (mode == SB_CHAIN || mode == SB_CHAIN_FIRST)
                c[i * ldc + j] = acc[i * SB_S_NR + j];
            else if (mode == SB_FOLD_FIRST)
                c[i * ldc + j] = 0.0f + acc[i * SB_S_NR + j];
            else
                c[i * ldc + j] = c[i * ldc + j] + acc[i * SB_S_NR + j];
        }
}

#if SIMD_X86

/* ---------------------------------------------------------------- AVX2 + FMA, 6 x 16 */

#define SB_A2_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

__attribute__((target("avx2,fma")))
static void sb_uk_avx2(long kc, const float *a, const float *b, float *c, long ldc, int mode)
{
#define SB_A2_DECL(i) __m256 c##i##0, c##i##1;
    SB_A2_ROWS(SB_A2_DECL)
#undef SB_A2_DECL
    long k;
    if (mode == SB_CHAIN) {
#define SB_A2_LOAD(i) c##i##0 = _mm256_loadu_ps(c + (i) * ldc); \
                      c##i##1 = _mm256_loadu_ps(c + (i) * ldc + 8);
        SB_A2_ROWS(SB_A2_LOAD)
#undef SB_A2_LOAD
    } else {
#define SB_A2_ZERO(i) c##i##0 = _mm256_setzero_ps(); c##i##1 = _mm256_setzero_ps();
        SB_A2_ROWS(SB_A2_ZERO)
#undef SB_A2_ZERO
    }
#pragma GCC unroll 4
    for (k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), av;
#define SB_A2_FMA(i) av = _mm256_broadcast_ss(a + (i)); \
                     c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0); \
                     c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);
        SB_A2_ROWS(SB_A2_FMA)
#undef SB_A2_FMA
        a += SB_A2_MR;
        b += SB_A2_NR;
    }
    if (mode == SB_CHAIN || mode == SB_CHAIN_FIRST) {
#define SB_A2_STORE(i) _mm256_storeu_ps(c + (i) * ldc, c##i##0); \
                       _mm256_storeu_ps(c + (i) * ldc + 8, c##i##1);
        SB_A2_ROWS(SB_A2_STORE)
#undef SB_A2_STORE
    } else if (mode == SB_FOLD_FIRST) {
        const __m256 z = _mm256_setzero_ps();
#define SB_A2_ADDZ(i) _mm256_storeu_ps(c + (i) * ldc, _mm256_add_ps(z, c##i##0)); \
                      _mm256_storeu_ps(c + (i) * ldc + 8, _mm256_add_ps(z, c##i##1));
        SB_A2_ROWS(SB_A2_ADDZ)
#undef SB_A2_ADDZ
    } else {
#define SB_A2_ADD(i) \
        _mm256_storeu_ps(c + (i) * ldc, _mm256_add_ps(_mm256_loadu_ps(c + (i) * ldc), c##i##0)); \
        _mm256_storeu_ps(c + (i) * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(c + (i) * ldc + 8), c##i##1));
        SB_A2_ROWS(SB_A2_ADD)
#undef SB_A2_ADD
    }
}

/* ---------------------------------------------------------------- AVX-512F, 12 x 32 */

#define SB_A5_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

__attribute__((target("avx512f")))
static void sb_uk_avx512(long kc, const float *a, const float *b, float *c, long ldc, int mode)
{
#define SB_A5_DECL(i) __m512 c##i##_0, c##i##_1;
    SB_A5_ROWS(SB_A5_DECL)
#undef SB_A5_DECL
    long k;
#define SB_A5_PF(i) _mm_prefetch((const char *)(c + (i) * ldc), _MM_HINT_T0); \
                    _mm_prefetch((const char *)(c + (i) * ldc + 16), _MM_HINT_T0);
    SB_A5_ROWS(SB_A5_PF)
#undef SB_A5_PF
    if (mode == SB_CHAIN) {
#define SB_A5_LOAD(i) c##i##_0 = _mm512_loadu_ps(c + (i) * ldc); \
                      c##i##_1 = _mm512_loadu_ps(c + (i) * ldc + 16);
        SB_A5_ROWS(SB_A5_LOAD)
#undef SB_A5_LOAD
    } else {
#define SB_A5_ZERO(i) c##i##_0 = _mm512_setzero_ps(); c##i##_1 = _mm512_setzero_ps();
        SB_A5_ROWS(SB_A5_ZERO)
#undef SB_A5_ZERO
    }
#pragma GCC unroll 4
    for (k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), av;
#define SB_A5_FMA(i) av = _mm512_set1_ps(a[i]); \
                     c##i##_0 = _mm512_fmadd_ps(av, b0, c##i##_0); \
                     c##i##_1 = _mm512_fmadd_ps(av, b1, c##i##_1);
        SB_A5_ROWS(SB_A5_FMA)
#undef SB_A5_FMA
        a += SB_A5_MR;
        b += SB_A5_NR;
    }
    if (mode == SB_CHAIN || mode == SB_CHAIN_FIRST) {
#define SB_A5_STORE(i) _mm512_storeu_ps(c + (i) * ldc, c##i##_0); \
                       _mm512_storeu_ps(c + (i) * ldc + 16, c##i##_1);
        SB_A5_ROWS(SB_A5_STORE)
#undef SB_A5_STORE
    } else if (mode == SB_FOLD_FIRST) {
        const __m512 z = _mm512_setzero_ps();
#define SB_A5_ADDZ(i) _mm512_storeu_ps(c + (i) * ldc, _mm512_add_ps(z, c##i##_0)); \
                      _mm512_storeu_ps(c + (i) * ldc + 16, _mm512_add_ps(z, c##i##_1));
        SB_A5_ROWS(SB_A5_ADDZ)
#undef SB_A5_ADDZ
    } else {
#define SB_A5_ADD(i) \
        _mm512_storeu_ps(c + (i) * ldc, _mm512_add_ps(_mm512_loadu_ps(c + (i) * ldc), c##i##_0)); \
        _mm512_storeu_ps(c + (i) * ldc + 16, _mm512_add_ps(_mm512_loadu_ps(c + (i) * ldc + 16), c##i##_1));
        SB_A5_ROWS(SB_A5_ADD)
#undef SB_A5_ADD
    }
}

#endif /* x86 */

/* Pack one A panel with the fastest packer for `isa` (all give the same layout). ahead:
 * how many rows of A follow the panel (a hint for prefetching; 0 for none). */
static void sb_pack_a(int isa, const float *A, long lda, long i0, long rows, long k0, long kc,
                      int mr, float *dst, long ahead)
{
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512 && mr <= 16) {
        /* rows of A (contiguous in k) become columns of the panel, 16 k's at a time, each
         * step also prefetching a cache line of the next panel's rows: a panel reads only
         * kc floats of a row, too short a run for the hardware prefetcher, so the packing
         * of a weight matrix from memory otherwise waits on each row's first lines (the
         * MLP's forward packing took 13-16% of its GEMM) */
        const float *src = A + i0 * lda + k0, *next = src + mr * lda;
        long j0, i;
        if (ahead > mr) ahead = mr;
        for (j0 = 0; j0 < kc; j0 += 16) {
            for (i = 0; i < ahead; i++) _mm_prefetch((const char *)(next + i * lda + j0), _MM_HINT_T0);
            simd_transpose_avx512(src + j0, lda, rows, kc - j0 < 16 ? kc - j0 : 16, dst + j0 * mr, mr, mr);
        }
        return;
    }
#endif
    sb_pack_a_panel(A, lda, i0, rows, k0, kc, mr, dst);
}

typedef void (*sb_uk_fn)(long, const float *, const float *, float *, long, int);

static sb_uk_fn sb_isa_kernel(int isa)
{
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) return sb_uk_avx512;
    if (isa == SIMD_ISA_AVX2) return sb_uk_avx2;
#endif
    return sb_uk_scalar;
}

/* SB_STEP's update of one tile, C = C - lr * sum (sum: the tile's buffer, row stride nr;
 * the product rounded, then the difference, as the scalar loop in sb_macro) */
#if SIMD_X86
__attribute__((target("avx512f")))
static void sb_step_tile_avx512(float *c, long ldc, const float *sum, int nr, long rows, long cols,
                                float lr)
{
    const __m512 vlr = _mm512_set1_ps(lr);
    long i, j;
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j += 16) {
            const __mmask16 m = (__mmask16)(cols - j >= 16 ? 0xFFFFu : (1u << (cols - j)) - 1u);
            const __m512 t = _mm512_mul_ps(vlr, _mm512_maskz_loadu_ps(m, sum + i * nr + j));
            _mm512_mask_storeu_ps(c + i * ldc + j, m, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, c + i * ldc + j), t));
        }
}
#endif

/* ---------------------------------------------------------------- epilogue
 * What a caller applies to the finished product, element by element, in the last K block
 * while each tile is still in L1 (a training layer's element-wise passes, without their
 * own trip through memory). Pointers are at the C block's top-left (row i, column j):
 *   bias (or NULL): y = y + bias[i]                               (Linear's bias)
 *   relu:           then y = y if y > 0 or y is NaN, else +0      (np.maximum(y, 0))
 *   mask (or NULL): then y = y * (mask[i, j] > 0 ? 1 : 0) + 0    (ReLU's backward, whose
 *                   output is mask: numpy's np.multiply(y, mask > 0) then y += 0)
 * A chain sum from +0 is never -0 (fma(a, b, +0) is +0 for a zero product), nor then is
 * y + bias, so the relu's ±0 case, where numpy versions differ, does not arise. */
typedef struct {
    const float *bias;
    int relu;
    const float *mask;
    long ldm;
} sb_epilogue;

#if SIMD_X86
__attribute__((target("avx512f")))
static void sb_epilogue_tile_avx512(float *c, long ldc, long rows, long cols, const sb_epilogue *e,
                                    long i0, long j0)
{
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    long i, j;
    for (i = 0; i < rows; i++) {
        const __m512 b = e->bias == NULL ? zero : _mm512_set1_ps(e->bias[i0 + i]);
        for (j = 0; j < cols; j += 16) {
            const __mmask16 m = (__mmask16)(cols - j >= 16 ? 0xFFFFu : (1u << (cols - j)) - 1u);
            float *cp = c + i * ldc + j;
            __m512 y = _mm512_maskz_loadu_ps(m, cp);
            if (e->bias != NULL) y = _mm512_add_ps(y, b);
            if (e->relu) y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_NLE_UQ), y);
            if (e->mask != NULL) {
                const __m512 s = _mm512_maskz_loadu_ps(m, e->mask + (i0 + i) * e->ldm + j0 + j);
                const __m512 f = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s, zero, _CMP_GT_OQ), one);
                y = _mm512_add_ps(_mm512_mul_ps(y, f), zero);
            }
            _mm512_mask_storeu_ps(cp, m, y);
        }
    }
}

__attribute__((target("avx2,fma")))
static long sb_epilogue_row_avx2(float *c, long cols, const sb_epilogue *e, long i, long j0)
{
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    const __m256 b = e->bias == NULL ? zero : _mm256_set1_ps(e->bias[i]);
    long j;
    for (j = 0; j + 8 <= cols; j += 8) {
        __m256 y = _mm256_loadu_ps(c + j);
        if (e->bias != NULL) y = _mm256_add_ps(y, b);
        if (e->relu) y = _mm256_and_ps(_mm256_cmp_ps(y, zero, _CMP_NLE_UQ), y);
        if (e->mask != NULL) {
            const __m256 s = _mm256_loadu_ps(e->mask + i * e->ldm + j0 + j);
            y = _mm256_add_ps(_mm256_mul_ps(y, _mm256_and_ps(_mm256_cmp_ps(s, zero, _CMP_GT_OQ), one)), zero);
        }
        _mm256_storeu_ps(c + j, y);
    }
    return j;  /* the columns done */
}
#endif

/* the epilogue on the rows x cols tile at c, which is (i0, j0) of the C block */
static void sb_epilogue_tile(int isa, float *c, long ldc, long rows, long cols, const sb_epilogue *e,
                             long i0, long j0)
{
    long i, j;
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) {
        sb_epilogue_tile_avx512(c, ldc, rows, cols, e, i0, j0);
        return;
    }
#endif
    for (i = 0; i < rows; i++) {
        j = 0;
#if SIMD_X86
        if (isa == SIMD_ISA_AVX2) j = sb_epilogue_row_avx2(c + i * ldc, cols, e, i0 + i, j0);
#endif
        for (; j < cols; j++) {
            float y = c[i * ldc + j];
            if (e->bias != NULL) y = y + e->bias[i0 + i];
            if (e->relu && !(y > 0.0f || y != y)) y = 0.0f;
            if (e->mask != NULL) y = y * (e->mask[(i0 + i) * e->ldm + j0 + j] > 0.0f ? 1.0f : 0.0f) + 0.0f;
            c[i * ldc + j] = y;
        }
    }
}

/* ---------------------------------------------------------------- macro-kernel
 * C block rows x cols (C points at its top-left, row stride ldc) from packed A panels
 * (ceil(rows/MR) panels of MR*kc) and packed B panels (ceil(cols/NR) panels of kc*NR).
 * Full tiles go straight to C; edge tiles go through a zero-padded MR x NR buffer and
 * only their valid part is written back; SB_STEP's tiles all go through the buffer.
 * epi (NULL for none; not with SB_STEP): applied to each finished tile (the last K block).
 */
static void sb_macro(int isa, int mode, long kc, long rows, long cols,
                     const float *pa, const float *pb, float *C, long ldc, float lr,
                     const float *pf, long pf_ld, long pf_rows, long pf_cols, const sb_epilogue *epi)
{
    const int mr = sb_isa_mr(isa), nr = sb_isa_nr(isa);
    sb_uk_fn uk = sb_isa_kernel(isa);
    float tmp[SB_MAX_MR * SB_MAX_NR] __attribute__((aligned(64)));
    long jr, ir, i, j;
    /* pf (NULL for none): a pf_rows x pf_cols rectangle of floats (row stride pf_ld) the
     * caller reads next, fetched an equal share of its cache lines before each tile */
    const long pf_lpr = pf == NULL ? 0 : (pf_cols * 4 + 63) / 64 + 1;  /* +1: unaligned rows */
    const long tiles = ((rows + mr - 1) / mr) * ((cols + nr - 1) / nr);
    const long pf_share = tiles > 0 ? (pf_rows * pf_lpr + tiles - 1) / tiles : 0;
    long pf_r = 0, pf_l = 0, q;
    /* tiles along C's rows: the A panel stays in L1 while B's panels stream from L2, and C
     * (a parameter from memory, for SB_STEP) is walked row by row, which the hardware
     * prefetcher follows (down B's panel, the column order, made SB_STEP 8-10% slower) */
    for (ir = 0; ir < rows; ir += mr) {
        const float *pai = pa + (ir / mr) * kc * mr;
        long mc = rows - ir < mr ? rows - ir : mr;
        for (jr = 0; jr < cols; jr += nr) {
            const float *pbj = pb + (jr / nr) * kc * nr;
            long nc = cols - jr < nr ? cols - jr : nr;
            float *cij = C + ir * ldc + jr;
            for (q = 0; q < pf_share && pf_r < pf_rows; q++) {
                __builtin_prefetch((const char *)(pf + pf_r * pf_ld) + pf_l * 64, 0, 3);
                if (++pf_l == pf_lpr) { pf_l = 0; pf_r++; }
            }
            if (mode == SB_STEP) {
                /* the tile of the parameter is read after the product: fetch it meanwhile */
                for (i = 0; i < mc; i++)
                    for (j = 0; j < nc; j += 16) __builtin_prefetch(cij + i * ldc + j, 1, 3);
                uk(kc, pai, pbj, tmp, nr, SB_CHAIN_FIRST);
#if SIMD_X86
                if (isa == SIMD_ISA_AVX512) {
                    sb_step_tile_avx512(cij, ldc, tmp, nr, mc, nc, lr);
                    continue;
                }
#endif
                for (i = 0; i < mc; i++)
                    for (j = 0; j < nc; j++) {
                        const float t = lr * tmp[i * nr + j];
                        cij[i * ldc + j] = cij[i * ldc + j] - t;
                    }
            } else if (mc == mr && nc == nr) {
                uk(kc, pai, pbj, cij, ldc, mode);
            } else {
                for (i = 0; i < mr; i++)
                    for (j = 0; j < nr; j++)
                        tmp[i * nr + j] = (i < mc && j < nc) ? cij[i * ldc + j] : 0.0f;
                uk(kc, pai, pbj, tmp, nr, mode);
                for (i = 0; i < mc; i++)
                    for (j = 0; j < nc; j++) cij[i * ldc + j] = tmp[i * nr + j];
            }
            if (epi != NULL) sb_epilogue_tile(isa, cij, ldc, mc, nc, epi, ir, jr);
        }
    }
}

#endif /* SYSBENCH_SYSTOLIC_MICRO_H */
