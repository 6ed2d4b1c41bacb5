/* simd.h: the SIMD vocabulary every micro-kernel header shares (systolic_micro.h,
 * sparse_micro.h, sample_simd.h include it; kernels/isa.pxi is its Cython side).
 *
 * One portable build: the AVX-512F and AVX2+FMA code lives in functions compiled with
 * __attribute__((target(...))) and is chosen at run time from the CPU's features, so the
 * binary runs on any x86-64 (no -march=native). Off x86, or with a compiler without target
 * attributes, only the scalar paths exist (SIMD_X86 is 0).
 *
 *   ISA codes      SIMD_ISA_SCALAR < SIMD_ISA_AVX2 < SIMD_ISA_AVX512 (the run-time paths)
 *   feature masks  SIMD_F_*: what the CPU has (simd_cpu_features) and what a path needs
 *                  (simd_isa_needs); the AVX2 path needs AVX2 and FMA, AVX-512 needs AVX-512F
 *                  and FMA (which every AVX-512 CPU has; tconv's part kernels use ymm FMAs)
 *   per-path sizes simd_per_isa: a tile size (or any constant) chosen by the ISA code
 *   allocation     simd_alloc / simd_free: 64-byte aligned, NULL on failure or overflow
 *   transposes     simd_transpose16_avx512: a 16 x 16 float block in registers;
 *                  simd_transpose_avx512: a matrix by such blocks (packing panels, outputs)
 *   SIMD_CLONES    plain C loops compiled for AVX2 and the baseline (target_clones)
 */
#ifndef SYSBENCH_SIMD_H
#define SYSBENCH_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SIMD_X86 1
#include <immintrin.h>
#else
#define SIMD_X86 0
#endif

#define SIMD_ISA_SCALAR 0
#define SIMD_ISA_AVX2 1
#define SIMD_ISA_AVX512 2

#define SIMD_F_AVX2 1u
#define SIMD_F_FMA 2u
#define SIMD_F_AVX512F 4u

#define SIMD_ALIGN 64

/* Plain C loops compiled twice, for AVX2 and the baseline, picked by the loader (ifunc). */
#if SIMD_X86
#define SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SIMD_CLONES
#endif

/* The features of the CPU we run on (a mask of SIMD_F_*). */
static inline unsigned simd_cpu_features(void)
{
    unsigned features = 0;
#if SIMD_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) features |= SIMD_F_AVX2;
    if (__builtin_cpu_supports("fma")) features |= SIMD_F_FMA;
    if (__builtin_cpu_supports("avx512f")) features |= SIMD_F_AVX512F;
#endif
    return features;
}

/* The features a path's code is compiled for (its target attribute). */
static inline unsigned simd_isa_needs(int isa)
{
    if (isa == SIMD_ISA_AVX512) return SIMD_F_AVX512F | SIMD_F_FMA;
    if (isa == SIMD_ISA_AVX2) return SIMD_F_AVX2 | SIMD_F_FMA;
    return 0;
}

static inline int simd_isa_supported(int isa)
{
    if (isa == SIMD_ISA_SCALAR) return 1;
    if (isa != SIMD_ISA_AVX2 && isa != SIMD_ISA_AVX512) return 0;
#if SIMD_X86
    return (simd_cpu_features() & simd_isa_needs(isa)) == simd_isa_needs(isa);
#else
    return 0;
#endif
}

static inline int simd_isa_best(void)
{
    if (simd_isa_supported(SIMD_ISA_AVX512)) return SIMD_ISA_AVX512;
    if (simd_isa_supported(SIMD_ISA_AVX2)) return SIMD_ISA_AVX2;
    return SIMD_ISA_SCALAR;
}

/* A per-path constant (a micro-kernel's tile size): the one given for `isa`. */
static inline int simd_per_isa(int isa, int avx512, int avx2, int scalar)
{
    return isa == SIMD_ISA_AVX512 ? avx512 : isa == SIMD_ISA_AVX2 ? avx2 : scalar;
}

/* count * size bytes (at least one cache line), 64-byte aligned; NULL when the size
 * overflows or memory is short. Free with simd_free. */
static inline void *simd_alloc(size_t count, size_t size)
{
    void *p = NULL;
    size_t bytes;
    if (size != 0 && count > ((size_t)-1) / size) return NULL;
    bytes = count * size;
    if (bytes < SIMD_ALIGN) bytes = SIMD_ALIGN;
    if (posix_memalign(&p, SIMD_ALIGN, bytes) != 0) return NULL;
    return p;
}

static inline void simd_free(void *p) { free(p); }

/* nr floats (a micro-tile row, a packed panel's k-slice): memcpy of a constant size for the
 * usual widths, which the compiler emits as a few vector moves; a variable size became
 * `rep movsq`, slow to start for 32-128 bytes (it took most of the systolic B packing) */
static inline void simd_copy_row(float *dst, const float *src, int nr)
{
    if (nr == 32) memcpy(dst, src, 32 * sizeof(float));
    else if (nr == 16) memcpy(dst, src, 16 * sizeof(float));
    else if (nr == 8) memcpy(dst, src, 8 * sizeof(float));
    else memcpy(dst, src, (size_t)nr * sizeof(float));
}

#if SIMD_X86

/* In place: r[i] lane j  <-  r[j] lane i. Always inlined (as a call, the 16 registers go
 * through memory); only callable from avx512f-targeted code. */
__attribute__((target("avx512f"), always_inline))
static inline void simd_transpose16_avx512(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* r[4i + q] now holds, in 128-bit block m, elements 4m..4m+3 of rows 4i..4i+3 at column q */
    for (int q = 0; q < 4; q++) {
        t[q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88);
        t[4 + q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xdd);
        t[8 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88);
        t[12 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xdd);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88);
        r[4 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0x88);
        r[8 + q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0xdd);
        r[12 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0xdd);
    }
}

/* dst[j * ldd + i] = src[i * lds + j] for j < cols and i < rows_pad: the first `rows` rows
 * of src (rows <= rows_pad) become columns of dst, lanes rows..rows_pad-1 are zeros. 16 x 16
 * blocks through the register transpose, masked at the edges (packing panels, undoing a
 * transposed output). */
__attribute__((target("avx512f")))
static inline void simd_transpose_avx512(const float *src, long lds, long rows, long cols,
                                         float *dst, long ldd, long rows_pad)
{
    __m512 r[16];
    long i0, j0;
    int i, j;
    for (i0 = 0; i0 < rows_pad; i0 += 16) {
        const long left = rows - i0, pad = rows_pad - i0;
        const int h = left <= 0 ? 0 : left < 16 ? (int)left : 16;
        const __mmask16 keep = (__mmask16)(pad >= 16 ? 0xFFFFu : (1u << pad) - 1u);
        for (j0 = 0; j0 < cols; j0 += 16) {
            const int w = cols - j0 < 16 ? (int)(cols - j0) : 16;
            const __mmask16 take = (__mmask16)(w == 16 ? 0xFFFFu : (1u << w) - 1u);
            for (i = 0; i < 16; i++)
                r[i] = i < h ? _mm512_maskz_loadu_ps(take, src + (i0 + i) * lds + j0)
                             : _mm512_setzero_ps();
            simd_transpose16_avx512(r);
            for (j = 0; j < w; j++) _mm512_mask_storeu_ps(dst + (j0 + j) * ldd + i0, keep, r[j]);
        }
    }
}

#endif /* SIMD_X86 */

#endif /* SYSBENCH_SIMD_H */
