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
 * vector width, the direction the lanes run in, or where a psum waits between two pieces
 * of its fold (a register or memory: storing a float does not round it).
 *
 * Design (every ISA): lanes along rows of A. A fold's span of A is packed k-major, so that
 * the A vector a slot selects (MB rows of A at reduction index g*M + q) is one contiguous
 * load: the index becomes an address, and no shuffle is needed (on Intel a vpermps per
 * multiply-add would compete with the FMAs for port 5). The output is accumulated
 * transposed and transposed once at the end. A fold is run in pieces of at most
 * sp_piece_rows compressed rows, so that the piece's packed A stays in L1 while every
 * column block runs against it; between pieces the tile's psums wait in a buffer.
 *
 * Layouts, for one fold (span = the reduction indices the fold touches, from k0 = g0*M):
 *   packed A block: pa[k * MB + i] = A[i0 + i, k0 + k]   (MB rows, k-major; padded rows 0)
 *   packed B block of NC columns: bv[r * NC + c] = value, bo[r * NC + c] = offset of the
 *       selected A vector in pa, in floats ((g - g0) * M + q) * MB  (padded columns 0, 0)
 *   psums between pieces: ps[c * MB + i];  output, transposed: ot[c * ldo + i].
 * A micro-kernel runs one MB x NC tile over nr compressed rows:
 *   psum = first ? +0 : ps;  psum = fmaf(A vector, v, psum) over the rows in order;
 *   then by `end`: SP_SPILL ps = psum (more of the fold follows), SP_ADD ot = ot + psum,
 *   SP_STORE ot = +0 + psum (the first fold: ot is not read, out = +0 + psum).
 * The AVX-512F and AVX2+FMA kernels are compiled with target attributes and chosen at run
 * time (simd.h); the scalar kernel uses C fmaf. -ffp-contract=off keeps every other
 * operation unfused.
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
#define SP_A5_MB 64
#define SP_A5_NC 6
#define SP_MAX_MB SP_A5_MB

/* what a micro-kernel does with the psums it ends with */
#define SP_SPILL 0
#define SP_ADD 1
#define SP_STORE 2

/* packed A of one piece of a fold: at most this many floats (24 KB, half of a 48 KB L1) */
#define SP_PIECE_FLOATS 6144

static int sp_isa_mb(int isa) { return simd_per_isa(isa, SP_A5_MB, SP_A2_MB, SP_S_MB); }

static int sp_isa_nc(int isa) { return simd_per_isa(isa, SP_A5_NC, SP_A2_NC, SP_S_NC); }

/* Compressed rows per piece of a fold: whole groups whose packed A fits SP_PIECE_FLOATS. */
static long sp_piece_rows(int isa, int n, int m)
{
    long groups = SP_PIECE_FLOATS / ((long)m * sp_isa_mb(isa));
    return (groups < 1 ? 1 : groups) * n;
}

/* ---------------------------------------------------------------- scalar, 4 x 4 */

static void sp_uk_scalar(long nr, const float *pa, const float *bv, const int32_t *bo,
                         float *ps, float *ot, long ldo, int first, int end)
{
    float acc[SP_S_NC][SP_S_MB];
    long r;
    int c, i;
    for (c = 0; c < SP_S_NC; c++)
        for (i = 0; i < SP_S_MB; i++) acc[c][i] = first ? 0.0f : ps[c * SP_S_MB + i];
    for (r = 0; r < nr; r++) {
        for (c = 0; c < SP_S_NC; c++) {
            const float *a = pa + bo[r * SP_S_NC + c];
            const float v = bv[r * SP_S_NC + c];
            for (i = 0; i < SP_S_MB; i++) acc[c][i] = fmaf(a[i], v, acc[c][i]);
        }
    }
    for (c = 0; c < SP_S_NC; c++)
        for (i = 0; i < SP_S_MB; i++) {
            if (end == SP_ADD)
                ot[c * ldo + i] = ot[c * ldo + i] + acc[c][i];
            else if (end == SP_STORE)
                ot[c * ldo + i] = 0.0f + acc[c][i];
            else
                ps[c * SP_S_MB + i] = acc[c][i];
        }
}

#if SIMD_X86

/* ---------------------------------------------------------------- AVX2 + FMA, 16 x 6 */

#define SP_A2_COLS(X) X(0) X(1) X(2) X(3) X(4) X(5)

__attribute__((target("avx2,fma")))
static void sp_uk_avx2(long nr, const float *pa, const float *bv, const int32_t *bo,
                       float *ps, float *ot, long ldo, int first, int end)
{
#define SP_A2_DECL(c) __m256 a##c##_0, a##c##_1;
    SP_A2_COLS(SP_A2_DECL)
#undef SP_A2_DECL
    long r;
    if (first) {
#define SP_A2_ZERO(c) a##c##_0 = _mm256_setzero_ps(); a##c##_1 = _mm256_setzero_ps();
        SP_A2_COLS(SP_A2_ZERO)
#undef SP_A2_ZERO
    } else {
#define SP_A2_LOAD(c) a##c##_0 = _mm256_loadu_ps(ps + (c) * SP_A2_MB); \
                      a##c##_1 = _mm256_loadu_ps(ps + (c) * SP_A2_MB + 8);
        SP_A2_COLS(SP_A2_LOAD)
#undef SP_A2_LOAD
    }
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
    if (end == SP_ADD) {
#define SP_A2_ADD(c) \
    _mm256_storeu_ps(ot + (c) * ldo, _mm256_add_ps(_mm256_loadu_ps(ot + (c) * ldo), a##c##_0)); \
    _mm256_storeu_ps(ot + (c) * ldo + 8, _mm256_add_ps(_mm256_loadu_ps(ot + (c) * ldo + 8), a##c##_1));
        SP_A2_COLS(SP_A2_ADD)
#undef SP_A2_ADD
    } else if (end == SP_STORE) {
        const __m256 z = _mm256_setzero_ps();
#define SP_A2_STORE(c) _mm256_storeu_ps(ot + (c) * ldo, _mm256_add_ps(z, a##c##_0)); \
                       _mm256_storeu_ps(ot + (c) * ldo + 8, _mm256_add_ps(z, a##c##_1));
        SP_A2_COLS(SP_A2_STORE)
#undef SP_A2_STORE
    } else {
#define SP_A2_SPILL(c) _mm256_storeu_ps(ps + (c) * SP_A2_MB, a##c##_0); \
                       _mm256_storeu_ps(ps + (c) * SP_A2_MB + 8, a##c##_1);
        SP_A2_COLS(SP_A2_SPILL)
#undef SP_A2_SPILL
    }
}

/* ---------------------------------------------------------------- AVX-512F, 64 x 6
 * Per compressed row and column: one offset, one broadcast value, four 16-row A vectors
 * (memory operands of the FMAs): 1.5 loads per multiply-add, the limit on this design. */

#define SP_A5_COLS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define SP_A5_PARTS(X, c) X(c, 0) X(c, 1) X(c, 2) X(c, 3)

__attribute__((target("avx512f")))
static void sp_uk_avx512(long nr, const float *pa, const float *bv, const int32_t *bo,
                         float *ps, float *ot, long ldo, int first, int end)
{
#define SP_A5_DECL(c) __m512 a##c##_0, a##c##_1, a##c##_2, a##c##_3;
    SP_A5_COLS(SP_A5_DECL)
#undef SP_A5_DECL
    long r;
    if (first) {
#define SP_A5_ZERO1(c, q) a##c##_##q = _mm512_setzero_ps();
#define SP_A5_ZERO(c) SP_A5_PARTS(SP_A5_ZERO1, c)
        SP_A5_COLS(SP_A5_ZERO)
#undef SP_A5_ZERO
#undef SP_A5_ZERO1
    } else {
#define SP_A5_LOAD1(c, q) a##c##_##q = _mm512_load_ps(ps + (c) * SP_A5_MB + 16 * (q));
#define SP_A5_LOAD(c) SP_A5_PARTS(SP_A5_LOAD1, c)
        SP_A5_COLS(SP_A5_LOAD)
#undef SP_A5_LOAD
#undef SP_A5_LOAD1
    }
    for (r = 0; r < nr; r++) {
        __m512 v;
        const float *a;
#define SP_A5_FMA1(c, q) a##c##_##q = _mm512_fmadd_ps(_mm512_load_ps(a + 16 * (q)), v, a##c##_##q);
#define SP_A5_FMA(c) a = pa + bo[c]; v = _mm512_set1_ps(bv[c]); SP_A5_PARTS(SP_A5_FMA1, c)
        SP_A5_COLS(SP_A5_FMA)
#undef SP_A5_FMA
#undef SP_A5_FMA1
        bv += SP_A5_NC;
        bo += SP_A5_NC;
    }
    if (end == SP_ADD) {
#define SP_A5_ADD1(c, q) _mm512_storeu_ps(ot + (c) * ldo + 16 * (q), \
        _mm512_add_ps(_mm512_loadu_ps(ot + (c) * ldo + 16 * (q)), a##c##_##q));
#define SP_A5_ADD(c) SP_A5_PARTS(SP_A5_ADD1, c)
        SP_A5_COLS(SP_A5_ADD)
#undef SP_A5_ADD
#undef SP_A5_ADD1
    } else if (end == SP_STORE) {
        const __m512 z = _mm512_setzero_ps();
#define SP_A5_STORE1(c, q) _mm512_storeu_ps(ot + (c) * ldo + 16 * (q), _mm512_add_ps(z, a##c##_##q));
#define SP_A5_STORE(c) SP_A5_PARTS(SP_A5_STORE1, c)
        SP_A5_COLS(SP_A5_STORE)
#undef SP_A5_STORE
#undef SP_A5_STORE1
    } else {
#define SP_A5_SPILL1(c, q) _mm512_store_ps(ps + (c) * SP_A5_MB + 16 * (q), a##c##_##q);
#define SP_A5_SPILL(c) SP_A5_PARTS(SP_A5_SPILL1, c)
        SP_A5_COLS(SP_A5_SPILL)
#undef SP_A5_SPILL
#undef SP_A5_SPILL1
    }
}

#endif /* x86 */

/* One MB x NC tile over nr compressed rows with the micro-kernel of `isa` (the layouts,
 * `first` and `end` are in the header comment). */
static void sp_micro(int isa, long nr, const float *pa, const float *bv, const int32_t *bo,
                     float *ps, float *ot, long ldo, int first, int end)
{
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) { sp_uk_avx512(nr, pa, bv, bo, ps, ot, ldo, first, end); return; }
    if (isa == SIMD_ISA_AVX2) { sp_uk_avx2(nr, pa, bv, bo, ps, ot, ldo, first, end); return; }
#endif
    sp_uk_scalar(nr, pa, bv, bo, ps, ot, ldo, first, end);
}

/* ---------------------------------------------------------------- packing */

/* Packed A block of row block ib: pa[k * mb + i] = A[ib*mb + i, k0 + k] for k < span (rows
 * past the end: 0). */
static void sp_pack_a(int isa, const float *A, long rows, long kp, int mb, long ib, long k0,
                      long span, float *pa)
{
    const long row0 = ib * mb, valid = rows - row0 < mb ? rows - row0 : mb;
    long i, k;
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) {
        simd_transpose_avx512(A + row0 * kp + k0, kp, valid, span, pa, mb, mb);
        return;
    }
#endif
    for (i = 0; i < mb; i++) {
        if (i < valid) {
            const float *src = A + (row0 + i) * kp + k0;
            for (k = 0; k < span; k++) pa[k * mb + i] = src[k];
        } else {
            for (k = 0; k < span; k++) pa[k * mb + i] = 0.0f;
        }
    }
}

/* Packed B block cb of the fold's compressed rows [f0, f0 + nr) of one pass (V, I: that
 * pass's values and indices, kc x cols): bv[r*nc + j] and bo[r*nc + j], the value and the
 * packed-A offset of column cb*nc + j (columns past the end: value 0, offset 0). */
static void sp_pack_b(const float *V, const uint8_t *I, long cols, int n, int m, int mb,
                      int nc, long f0, long nr, long g0, long cb, float *bv, int32_t *bo)
{
    const long c0 = cb * nc;
    const int width = cols - c0 < nc ? (int)(cols - c0) : nc;
    long r;
    int j;
    for (r = 0; r < nr; r++) {
        const long row = f0 + r;
        const int32_t base = (int32_t)((row / n - g0) * m * mb);
        const float *vrow = V + row * cols + c0;
        const uint8_t *irow = I + row * cols + c0;
        for (j = 0; j < width; j++) {
            bv[r * nc + j] = vrow[j];
            bo[r * nc + j] = base + (int32_t)irow[j] * mb;
        }
        for (; j < nc; j++) {
            bv[r * nc + j] = 0.0f;
            bo[r * nc + j] = 0;
        }
    }
}

/* out[i, c] = ot[c * ldt + i] for rows [i0, i1) and columns [c0, c1) of out (row-major,
 * cols columns). */
static void sp_unpack_out(int isa, const float *ot, long ldt, float *out, long cols, long i0,
                          long i1, long c0, long c1)
{
    long i, c, cb, ce;
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) {
        simd_transpose_avx512(ot + c0 * ldt + i0, ldt, c1 - c0, i1 - i0, out + i0 * cols + c0,
                              cols, c1 - c0);
        return;
    }
#endif
    for (cb = c0; cb < c1; cb += 64) {  /* 64-column blocks: a strided copy misses the cache */
        ce = cb + 64 < c1 ? cb + 64 : c1;
        for (i = i0; i < i1; i++)
            for (c = cb; c < ce; c++) out[i * cols + c] = ot[c * ldt + i];
    }
}

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

#endif /* SYSBENCH_SPARSE_MICRO_H */
