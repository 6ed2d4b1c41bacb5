/* sample_simd.h: chunk scans for sysbench._kernels.sample.
 *
 * The summation order is the contract: a chunk's running sum starts at +0 and adds the
 * chunk's elements one at a time, first to last. So nothing here reassociates a sum;
 * the vector paths run 16 independent chunks side by side instead (lane k = chunk k):
 * they load 16 consecutive elements of each of 16 chunks, transpose the 16 x 16 block
 * in registers, then add its rows in order -- element j of every chunk at once.
 *
 * Paths: AVX-512F (16 lanes), AVX2 (two 8-lane halves), scalar. They are compiled with
 * __attribute__((target(...))) and picked at run time (simd.h), so one build runs on any
 * x86-64. All give the same bits (the same IEEE additions in the same
 * order); -ffp-contract=off keeps the compiler from fusing anything.
 */
#ifndef SYSBENCH_SAMPLE_SIMD_H
#define SYSBENCH_SAMPLE_SIMD_H

#include <math.h>

#include "simd.h"

#define SM_BAD_VALUE (-1)  /* a negative, NaN or infinite weight, or a sum that overflows */
#define SM_ALL_ZERO (-2)
#define SM_RESCAN (-3)     /* chunk_select: the row's target lies in a chunk still to rescan */
#define SM_LOST (-4)       /* a rescan found no index: cannot happen (internal check) */

#ifndef SM_PREFETCH
#define SM_PREFETCH 256  /* floats ahead of each chunk's loads */
#endif

/* 16 concurrent streams outrun the hardware prefetcher, so fetch ahead by hand: the line
 * SM_PREFETCH floats past position j of each chunk, or, once that is past the chunk's end,
 * in the chunk the same lane scans next (NULL: none). The rescans use it. Always inlined:
 * with the lane count a constant the loops unroll; as a real call, GCC 12 deleted them
 * (a loop doing nothing but prefetch counts as dead). */
__attribute__((always_inline))
static inline void sm_prefetch_lanes(const float *const *src, const float *const *next,
                                     long n, long j, int lanes)
{
    const long ahead = j + SM_PREFETCH;
    if (ahead < n) {
        for (int k = 0; k < lanes; k++) __builtin_prefetch(src[k] + ahead, 0, 3);
    } else if (next) {
        for (int k = 0; k < lanes; k++) __builtin_prefetch(next[k] + (ahead - n), 0, 3);
    }
}

/* The group scans fetch the next group's chunks instead, into L2, a chunk after another as
 * they lie in memory (consecutive chunks of a row are adjacent), spread over this group's
 * iterations: an iteration of `step` floats fetches the next `lanes * step / 16` of the
 * next group's lanes x ceil(n / 16) lines, where the cursor stands. 16 streams a few KB
 * long, one line of each at a time, ran at 0.67-0.88x numpy's one-stream read on Zen 4;
 * one stream of lines does not. */
typedef struct {
    const float *const *next;  /* the next group's chunks (NULL: none) */
    long per_lane, lane, line;  /* lines per chunk; the cursor */
} sm_next_lines;

__attribute__((always_inline))
static inline void sm_prefetch_next(sm_next_lines *pf, int lanes, int step)
{
    if (!pf->next) return;
    for (long i = 0; i < (long)lanes * step / 16 && pf->lane < lanes; i++) {
        __builtin_prefetch(pf->next[pf->lane] + 16 * pf->line, 0, 2);
        if (++pf->line == pf->per_lane) { pf->line = 0; pf->lane++; }
    }
}

/* ---- scalar: one chunk at a time ------------------------------------------------------ */

static void sm_group_scalar(const float *const *src, float *const *dst, long n,
                            float *total, float *minv)
{
    for (int k = 0; k < 16; k++) {
        const float *x = src[k];
        float acc = 0.0f, mn = 0.0f;
        for (long j = 0; j < n; j++) {
            acc = acc + x[j];
            if (dst) dst[k][j] = acc;
            if (!(x[j] >= mn)) mn = x[j];  /* NaN lands here too; the sum catches it anyway */
        }
        total[k] = acc;
        minv[k] = mn;
    }
}

#if SIMD_X86

/* ---- AVX-512: 16 chunks in the 16 lanes ------------------------------------------------ */

__attribute__((target("avx512f")))
static void sm_group_avx512(const float *const *src, const float *const *next,
                            float *const *dst, long n,
                            float *total, float *minv)
{
    __m512 acc = _mm512_setzero_ps(), mn = _mm512_setzero_ps();
    __m512 r[16];
    long j = 0;
    sm_next_lines pf = {next, (n + 15) / 16, 0, 0};
    for (;; j += 16) {
        const long left = n - j;
        if (left <= 0) break;
        /* the ragged tail loads zeros past the end: adding +0 to a running sum >= +0 is exact */
        const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        sm_prefetch_next(&pf, 16, 16);
        for (int k = 0; k < 16; k++) r[k] = _mm512_maskz_loadu_ps(m, src[k] + j);
        simd_transpose16_avx512(r);
        __m512 m01 = _mm512_min_ps(r[0], r[1]), m23 = _mm512_min_ps(r[2], r[3]);
        __m512 m45 = _mm512_min_ps(r[4], r[5]), m67 = _mm512_min_ps(r[6], r[7]);
        __m512 m89 = _mm512_min_ps(r[8], r[9]), mab = _mm512_min_ps(r[10], r[11]);
        __m512 mcd = _mm512_min_ps(r[12], r[13]), mef = _mm512_min_ps(r[14], r[15]);
        m01 = _mm512_min_ps(_mm512_min_ps(m01, m23), _mm512_min_ps(m45, m67));
        m89 = _mm512_min_ps(_mm512_min_ps(m89, mab), _mm512_min_ps(mcd, mef));
        mn = _mm512_min_ps(mn, _mm512_min_ps(m01, m89));
        if (dst) {
            for (int k = 0; k < 16; k++) { acc = _mm512_add_ps(acc, r[k]); r[k] = acc; }
            simd_transpose16_avx512(r);
            for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(dst[k] + j, m, r[k]);
        } else {
            for (int k = 0; k < 16; k++) acc = _mm512_add_ps(acc, r[k]);
        }
    }
    _mm512_storeu_ps(total, acc);
    _mm512_storeu_ps(minv, mn);
}

/* ---- AVX2: two halves of 8 chunks ------------------------------------------------------ */

__attribute__((target("avx2"), always_inline))
static inline void sm_transpose8(__m256 r[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2f128_ps(s[q], s[4 + q], 0x20);
        r[4 + q] = _mm256_permute2f128_ps(s[q], s[4 + q], 0x31);
    }
}

__attribute__((target("avx2")))
static void sm_group8_avx2(const float *const *src, const float *const *next,
                           float *const *dst, long n,
                           float *total, float *minv)
{
    __m256 acc = _mm256_setzero_ps(), mn = _mm256_setzero_ps();
    __m256 r[8];
    long j = 0;
    sm_next_lines pf = {next, (n + 15) / 16, 0, 0};
    for (;; j += 8) {
        const long left = n - j;
        if (left <= 0) break;
        const int take = left >= 8 ? 8 : (int)left;
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(take), lane);
        sm_prefetch_next(&pf, 8, 8);
        for (int k = 0; k < 8; k++) r[k] = _mm256_maskload_ps(src[k] + j, m);
        sm_transpose8(r);
        __m256 m01 = _mm256_min_ps(r[0], r[1]), m23 = _mm256_min_ps(r[2], r[3]);
        __m256 m45 = _mm256_min_ps(r[4], r[5]), m67 = _mm256_min_ps(r[6], r[7]);
        mn = _mm256_min_ps(mn, _mm256_min_ps(_mm256_min_ps(m01, m23), _mm256_min_ps(m45, m67)));
        if (dst) {
            for (int k = 0; k < 8; k++) { acc = _mm256_add_ps(acc, r[k]); r[k] = acc; }
            sm_transpose8(r);
            for (int k = 0; k < 8; k++) _mm256_maskstore_ps(dst[k] + j, m, r[k]);
        } else {
            for (int k = 0; k < 8; k++) acc = _mm256_add_ps(acc, r[k]);
        }
    }
    _mm256_storeu_ps(total, acc);
    _mm256_storeu_ps(minv, mn);
}

#endif

/* total[k], minv[k] for 16 chunks of length n starting at src[k]; with dst, the running
 * sums go to dst[k][0..n). minv is only used to spot negative weights. */
static void sm_group16(int isa, const float *const *src, const float *const *next,
                       float *const *dst, long n, float *total, float *minv)
{
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) { sm_group_avx512(src, next, dst, n, total, minv); return; }
    if (isa == SIMD_ISA_AVX2) {
        sm_group8_avx2(src, next, dst, n, total, minv);
        sm_group8_avx2(src + 8, next ? next + 8 : NULL, dst ? dst + 8 : NULL, n, total + 8,
                       minv + 8);
        return;
    }
#endif
    sm_group_scalar(src, dst, n, total, minv);
}

/* ---- the chunk layout ------------------------------------------------------------------
 * A row of V weights is cut into U chunks of L = ceil(V / U) elements: chunk c holds
 * [c L, min((c + 1) L, V)). The first V / L chunks are full, then at most one is shorter,
 * and when U > ceil(V / L) the last chunks are empty. Scan work is grouped 16 chunks at a
 * time: first all full chunks of all rows (row-major), then the short chunk of every row.
 */

static long sm_group_count(long B, long V, long L)
{
    const long nfull = V / L, rem = V - nfull * L;
    return (B * nfull + 15) / 16 + (rem ? (B + 15) / 16 : 0);
}

/* Where group g's 16 lanes read: src[k] (and the (row, chunk) in where[k]); returns how
 * many lanes are real and sets *n to the chunks' length. Lanes past the last chunk repeat
 * lane 0 (same values to the same place). */
static int sm_group_lanes(long B, long V, long U, long L, long g, const float *probs,
                          const float **src, long *where, long *n)
{
    const long nfull = V / L;
    const long gfull = (B * nfull + 15) / 16;
    const long count_all = g < gfull ? B * nfull : B;
    const long first = (g < gfull ? g : g - gfull) * 16;
    const int count = count_all - first < 16 ? (int)(count_all - first) : 16;
    *n = g < gfull ? L : V - nfull * L;
    for (int k = 0; k < 16; k++) {
        const long s = first + (k < count ? k : 0);
        const long b = g < gfull ? s / nfull : s;
        const long c = g < gfull ? s % nfull : nfull;
        src[k] = probs + b * V + c * L;
        where[k] = b * U + c;
    }
    return count;
}

/* Scan group g: chunk totals and minima into totals/mins (B x U); running sums into work
 * (B x V) when work is not NULL. */
static void sm_scan_group(int isa, const float *probs, long B, long V, long U, long L, long g,
                          float *work, float *totals, float *mins)
{
    const float *src[16], *next[16];
    float *dst[16];
    float tot[16], mn[16];
    long where[16], next_where[16], n, next_n;
    const int count = sm_group_lanes(B, V, U, L, g, probs, src, where, &n);
    const int has_next = g + 1 < sm_group_count(B, V, L);
    if (has_next) sm_group_lanes(B, V, U, L, g + 1, probs, next, next_where, &next_n);
    for (int k = 0; k < 16; k++) dst[k] = work ? work + (src[k] - probs) : NULL;
    sm_group16(isa, src, has_next ? next : NULL, work ? dst : NULL, n, tot, mn);
    for (int k = 0; k < count; k++) {
        totals[where[k]] = tot[k];
        mins[where[k]] = mn[k];
    }
}

/* ---- one row: offsets, target, select ---------------------------------------------------- */

/* The largest float <= t: for a float c, c > t exactly when c > sm_floor_float(t). */
static float sm_floor_float(double t)
{
    float f = (float)t;
    if ((double)f > t) f = nextafterf(f, -INFINITY);
    return f;
}

static long sm_last_nonzero(const float *x, long V)
{
    long i = V - 1;
    while (i > 0 && x[i] == 0.0f) i--;
    return i;
}

/* Row total = the chunk totals added in order from +0; checks the row. Returns 0 or a
 * negative status. */
static int sm_row_total(const float *totals, const float *mins, long U, float *total)
{
    float acc = 0.0f;
    int negative = 0;
    for (long c = 0; c < U; c++) {
        acc = acc + totals[c];
        if (!(mins[c] >= 0.0f)) negative = 1;
    }
    *total = acc;
    if (negative || !isfinite(acc)) return SM_BAD_VALUE;
    if (acc == 0.0f) return SM_ALL_ZERO;
    return 0;
}

/* chunk_select, first half: the chunk whose range of cumulative values holds the target.
 * Returns a status < 0 (SM_RESCAN: rescan *chunk from *offset against *target) or, when no
 * value exceeds the target, the index itself (the last nonzero one). */
static long sm_pick_chunk(const float *x, long V, long U, const float *totals,
                          const float *mins, double u, int64_t *chunk, float *offset,
                          float *target)
{
    float total;
    const int status = sm_row_total(totals, mins, U, &total);
    if (status) return status;
    const float t = sm_floor_float(u * (double)total);
    float off = 0.0f;
    for (long c = 0; c < U; c++) {
        const float next = off + totals[c];  /* = the last cumulative value of chunk c */
        if (next > t) {
            *chunk = c;
            *offset = off;
            *target = t;
            return SM_RESCAN;
        }
        off = next;
    }
    return sm_last_nonzero(x, V);  /* the target equals the total */
}

/* chunk_select, second half: 16 rescans side by side (lane k: the chunk at src[k], of n
 * elements, with offset off[k] and target t[k]); hit[k] = first j whose cumulative value
 * off[k] + running sum > t[k], or -1. Stops when every lane has its hit. */
static void sm_rescan_scalar(const float *const *src, long n, const float *off, const float *t,
                             long *hit)
{
    for (int k = 0; k < 16; k++) {
        float acc = 0.0f;
        hit[k] = -1;
        for (long j = 0; j < n; j++) {
            acc = acc + src[k][j];
            const float cum = off[k] + acc;
            if (cum > t[k]) { hit[k] = j; break; }
        }
    }
}

#if SIMD_X86

__attribute__((target("avx512f")))
static void sm_rescan_avx512(const float *const *src, long n, const float *off, const float *t,
                             long *hit)
{
    const __m512 offv = _mm512_loadu_ps(off), tv = _mm512_loadu_ps(t);
    __m512 acc = _mm512_setzero_ps();
    __m512 r[16];
    __mmask16 found = 0;
    for (int k = 0; k < 16; k++) hit[k] = -1;
    /* padding past the end repeats the last cumulative value, so it never makes a new hit */
    for (long j = 0; j < n && found != (__mmask16)0xFFFF; j += 16) {
        const long left = n - j;
        const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        sm_prefetch_lanes(src, NULL, n, j, 16);
        for (int k = 0; k < 16; k++) r[k] = _mm512_maskz_loadu_ps(m, src[k] + j);
        simd_transpose16_avx512(r);
        for (int k = 0; k < 16; k++) {
            acc = _mm512_add_ps(acc, r[k]);
            const __mmask16 now = _mm512_mask_cmp_ps_mask((__mmask16)~found,
                                                          _mm512_add_ps(offv, acc), tv, _CMP_GT_OQ);
            if (now) {
                for (int lane = 0; lane < 16; lane++)
                    if (now & (1u << lane)) hit[lane] = j + k;
                found |= now;
            }
        }
    }
}

__attribute__((target("avx2")))
static void sm_rescan8_avx2(const float *const *src, long n, const float *off, const float *t,
                            long *hit)
{
    const __m256 offv = _mm256_loadu_ps(off), tv = _mm256_loadu_ps(t);
    const __m256i lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 acc = _mm256_setzero_ps();
    __m256 r[8];
    int found = 0;
    for (int k = 0; k < 8; k++) hit[k] = -1;
    for (long j = 0; j < n && found != 0xFF; j += 8) {
        const long left = n - j;
        const int take = left >= 8 ? 8 : (int)left;
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(take), lane_ids);
        sm_prefetch_lanes(src, NULL, n, j, 8);
        for (int k = 0; k < 8; k++) r[k] = _mm256_maskload_ps(src[k] + j, m);
        sm_transpose8(r);
        for (int k = 0; k < 8; k++) {
            acc = _mm256_add_ps(acc, r[k]);
            const int now = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_add_ps(offv, acc), tv,
                                                             _CMP_GT_OQ)) & ~found;
            if (now) {
                for (int lane = 0; lane < 8; lane++)
                    if (now & (1 << lane)) hit[lane] = j + k;
                found |= now;
            }
        }
    }
}

#endif

static void sm_rescan16(int isa, const float *const *src, long n, const float *off,
                        const float *t, long *hit)
{
#if SIMD_X86
    if (isa == SIMD_ISA_AVX512) { sm_rescan_avx512(src, n, off, t, hit); return; }
    if (isa == SIMD_ISA_AVX2) {
        sm_rescan8_avx2(src, n, off, t, hit);
        sm_rescan8_avx2(src + 8, n, off + 8, t + 8, hit + 8);
        return;
    }
#endif
    sm_rescan_scalar(src, n, off, t, hit);
}

/* Rescan the picked chunks (all of length n) of rows[0..count), count <= 16; lanes past
 * count repeat lane 0. Writes each row's index into out. */
static void sm_rescan_rows(int isa, const float *probs, long V, long L, long n,
                           const int64_t *rows, int count, const int64_t *chunk,
                           const float *offset, const float *target, int64_t *out)
{
    const float *src[16];
    float off[16], t[16];
    long hit[16];
    for (int k = 0; k < 16; k++) {
        const int64_t b = rows[k < count ? k : 0];
        src[k] = probs + b * V + chunk[b] * L;
        off[k] = offset[b];
        t[k] = target[b];
    }
    sm_rescan16(isa, src, n, off, t, hit);
    for (int k = 0; k < count; k++) {
        const int64_t b = rows[k];
        out[b] = hit[k] < 0 ? SM_LOST : chunk[b] * L + hit[k];
    }
}

/* full_scan: add each chunk's offset to its running sums in work (in place), giving the
 * row's cumulative sums, then binary-search them. */
static long sm_full_scan_row(const float *x, long V, long U, long L, const float *totals,
                             const float *mins, double u, float *work)
{
    float total;
    const int status = sm_row_total(totals, mins, U, &total);
    if (status) return status;
    float offset = 0.0f;
    for (long c = 0; c < U && c * L < V; c++) {
        const long start = c * L, end = start + L < V ? start + L : V;
        for (long i = start; i < end; i++) work[i] = offset + work[i];
        offset = offset + totals[c];
    }
    const float target = sm_floor_float(u * (double)total);
    if (!(work[V - 1] > target)) return sm_last_nonzero(x, V);
    long lo = 0, hi = V - 1;  /* first index with work[i] > target lies in [lo, hi] */
    while (lo < hi) {
        const long mid = lo + (hi - lo) / 2;
        if (work[mid] > target) hi = mid; else lo = mid + 1;
    }
    return lo;
}

#endif
