"""N:M sparsity by exact decomposition, and the sparse passes of a systolic array.

A weight matrix W (K x cols; K is the reduction dimension) obeys N:M when every group of
M consecutive rows (per column) holds at most N nonzeros. Groups run over the rows
[g*M, g*M + M); when K is not a multiple of M the last group is padded with zero rows
(Kp = G*M rows, G = ceil(K / M)).

* ``check(w, n, m)``: does W obey N:M; the per-group nonzero counts (G x cols, uint8).
* ``decompose(w, n, m)``: the fewest N:M matrices whose sum is W, P = ceil(max count / N),
  in compressed form: ``values`` (P, G*N, cols) float32 and ``indices`` (P, G*N, cols)
  uint8. In each group and column the nonzeros are taken in row order; the j-th goes to
  pass j // N, slot j % N (compressed row g*N + j % N) with its in-group index. Unused
  slots hold +0.0 with index 0. A zero of either sign is a zero: the parts hold only the
  nonzeros, so their sum is W with every -0.0 read as +0.0 (``canonical(w)``), bit for bit.
* ``reconstruct``/``expand``: the parts back as dense matrices, and their sum.
* ``permute(w, n, m)``: one permutation of the (padded) reduction dimension that balances
  nonzeros across groups; never more passes than the identity (which it falls back to).
* ``spmm(a, values, indices, n, m, fold_depth)``: A (rows x Kp) times the compressed
  passes, in the order below.

Sparse pass order (the numerics contract; every multiply-add is one fused fp32 operation):
out = +0; for each pass p in order, for each fold of ``fold_depth`` compressed rows in
order: psum = +0; psum = fmaf(A[i, g*M + q], v, psum) over the fold's compressed rows r in
increasing order (g = r // N, (v, q) the slot's value and index in column c);
out[i, c] = out[i, c] + psum. This is a ws array's fold order applied to the K*N/M
compressed reduction rows, every fold of every pass adding into one output accumulator.

Wrappers validate and raise a ValueError naming the bad argument; cores are nogil C loops.
spmm has one driver and a micro-kernel per ISA (sparse_micro.h), chosen at run time:
AVX-512F, AVX2+FMA or scalar fmaf, all with lanes along rows of A (the index becomes the
address of a packed A vector). All give the same bits; ``set_isa`` forces one (the tests
use it). decompose's loops are plain C compiled for AVX2 and baseline (target_clones).
"""
import numpy as np

from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memset

cdef extern from "sparse_micro.h" nogil:
    int sp_isa_mb(int isa)
    int sp_isa_nc(int isa)
    long sp_piece_rows(int isa, int n, int m)
    void *simd_alloc(size_t count, size_t size)
    void simd_free(void *p)
    int sp_count_group(const uint32_t *bits, long K, long cols, int m, long g, uint8_t *cnt)
    void sp_fill_group(const float *w, long K, long cols, int n, int m, long g, int slots,
                       long kc, float *values, uint8_t *indices)
    int SP_MAX_MB
    int SP_SPILL
    int SP_ADD
    int SP_STORE
    void sp_micro(int isa, long nr, const float *pa, const float *bv, const int32_t *bo,
                  float *ps, float *ot, long ldo, int first, int end)
    void sp_pack_a(int isa, const float *A, long rows, long kp, int mb, long ib, long k0,
                   long span, float *pa)
    void sp_pack_b(const float *V, const uint8_t *I, long cols, int n, int m, int mb, int nc,
                   long f0, long nr, long g0, long cb, float *bv, int32_t *bo)
    void sp_unpack_out(int isa, const float *ot, long ldt, float *out, long cols, long i0,
                       long i1, long c0, long c1)

MAX_M = 16  # in-group indices must fit the metadata (and the uint8 layout)

include "checks.pxi"
include "isa.pxi"


# ------------------------------------------------------------------ validation

def _nm(n, m):
    n = check_int(n, "n")
    m = check_int_range(m, "m", 2, MAX_M, " (an in-group index must fit)")
    if not 1 <= n < m:
        raise ValueError(f"n must satisfy 1 <= n < m = {m}, got {n}")
    return n, m


def _weights(w, name="w"):
    return check_array(w, name, (np.float32,), 2)


def groups(k, m):
    """Number of groups G = ceil(k / m) (the last one padded with zero rows)."""
    return -(-k // m)


def canonical(w):
    """W with -0.0 read as +0.0: what the sum of the decomposed parts equals, bit for bit."""
    return np.where(w == 0, np.float32(0), w).astype(np.float32)


# ------------------------------------------------------------------ group counts

def counts(w, m, threads=1):
    """Per-group nonzero counts (G x cols, uint8) of w (K x cols) for groups of m rows.
    Raises ValueError if w holds NaN or inf (naming the first bad row and column)."""
    w = _weights(w)
    m = check_int_range(m, "m", 1, MAX_M)
    threads = check_threads(threads)
    cdef long k = w.shape[0], cols = w.shape[1], G = groups(w.shape[0], m)
    out = np.empty((G, cols), dtype=np.uint8)
    bad = np.zeros(G, dtype=np.uint8)
    _counts_shim(w, m, out, bad, threads)
    if bad.any():
        finite = np.isfinite(w)
        r, c = np.argwhere(~finite)[0]
        raise ValueError(f"w must be finite: w[{r}, {c}] = {w[r, c]}")
    return out


cdef void _counts_shim(const float[:, ::1] w, int m, uint8_t[:, ::1] out, uint8_t[::1] bad,
                       int threads):
    cdef long K = w.shape[0], cols = w.shape[1], G = out.shape[0], g
    cdef const uint32_t *bits = <const uint32_t *>&w[0, 0]
    with nogil:
        for g in prange(G, num_threads=threads, schedule="static"):
            bad[g] = sp_count_group(bits, K, cols, m, g, &out[g, 0])


def passes_for(group_counts, n):
    """Fewest N:M matrices for these per-group counts: ceil(max count / n)."""
    top = int(group_counts.max()) if group_counts.size else 0
    return -(-top // n)


def check(w, n, m, threads=1):
    """(obeys, counts): True when every group of m rows has at most n nonzeros per column;
    counts is the per-group nonzero count array (G x cols, uint8)."""
    n, m = _nm(n, m)
    group_counts = counts(w, m, threads)
    return bool(group_counts.size == 0 or group_counts.max() <= n), group_counts


def lower_bound(w, n, m):
    """ceil(max over columns of ceil(column nonzeros / G) / n): no row order does better."""
    n, m = _nm(n, m)
    per_column = counts(w, m).sum(axis=0, dtype=np.int64)  # validates w (finite) too
    G = groups(w.shape[0], m)
    densest = -(-int(per_column.max()) // G)
    return -(-densest // n)


# ------------------------------------------------------------------ decompose

def decompose(w, n, m, threads=1):
    """(values, indices): the fewest N:M parts of w in compressed form, (P, G*n, cols)
    float32 and uint8 (see the module docstring for the slot order)."""
    n, m = _nm(n, m)
    w = _weights(w)
    threads = check_threads(threads)
    group_counts = counts(w, m, threads)
    P = passes_for(group_counts, n)
    cdef long G = group_counts.shape[0], cols = w.shape[1]
    values = np.empty((P, G * n, cols), dtype=np.float32)  # every slot is written
    indices = np.empty((P, G * n, cols), dtype=np.uint8)
    if P:
        _fill_shim(w, n, m, P, values, indices, threads)
    return values, indices


cdef void _fill_shim(const float[:, ::1] w, int n, int m, long P, float[:, :, ::1] values,
                     uint8_t[:, :, ::1] indices, int threads):
    cdef long K = w.shape[0], cols = w.shape[1], kc = values.shape[1], G = kc // n, g
    with nogil:
        for g in prange(G, num_threads=threads, schedule="static"):
            sp_fill_group(&w[0, 0], K, cols, n, m, g, P * n, kc, &values[0, 0, 0],
                          &indices[0, 0, 0])


def _compressed(values, indices, n, m):
    n, m = _nm(n, m)
    if not isinstance(values, np.ndarray) or values.dtype != np.float32 or values.ndim != 3:
        raise ValueError("values must be a 3-D float32 array (passes, G*n, cols)")
    if not isinstance(indices, np.ndarray) or indices.dtype != np.uint8 or \
            indices.shape != values.shape:
        raise ValueError(f"indices must be a uint8 array of the shape of values {values.shape}")
    if values.shape[1] % n or values.shape[1] == 0 or values.shape[2] == 0:
        raise ValueError(f"values.shape[1] = {values.shape[1]} must be a positive multiple "
                         f"of n = {n}, and cols positive")
    if indices.size and int(indices.max()) >= m:
        raise ValueError(f"indices must be < m = {m}, found {int(indices.max())}")
    return np.ascontiguousarray(values), np.ascontiguousarray(indices), n, m


def expand(values, indices, n, m, k):
    """The parts as dense matrices (P, k, cols): part p holds pass p's nonzeros in place."""
    values, indices, n, m = _compressed(values, indices, n, m)
    P, kc, cols = values.shape
    G = kc // n
    k = check_int(k, "k")
    if not (G - 1) * m < k <= G * m:
        raise ValueError(f"k = {k} does not match {G} groups of m = {m}")
    rows = (np.arange(kc) // n * m)[:, None] + indices.astype(np.int64)  # (P, kc, cols)
    parts = np.zeros((P, G * m, cols), dtype=np.float32)
    for p in range(P):
        nz = values[p] != 0
        parts[p, rows[p][nz], np.nonzero(nz)[1]] = values[p][nz]
    return parts[:, :k]


def reconstruct(values, indices, n, m, k):
    """The sum of the parts, added in pass order in float32 (== canonical(W) exactly)."""
    parts = expand(values, indices, n, m, k)
    total = np.zeros(parts.shape[1:], dtype=np.float32)
    for part in parts:
        total = total + part
    return total


# ------------------------------------------------------------------ permutation

def permute(w, n, m):
    """(perm, before, after, bound): perm (Kp,) int64 reorders the padded reduction
    dimension (new row j = old row perm[j]; perm[j] >= K is a padding row), balancing
    nonzeros across groups. before/after are the pass counts without/with it and bound the
    lower bound. When no order with fewer passes is found, perm is the identity.

    Greedy: rows by decreasing nonzeros, each into the group with room that keeps every
    per-column count <= cap and has the smallest count sum over the row's nonzero columns;
    cap = n * target for target from the lower bound up to before - 1, first success wins.
    """
    n, m = _nm(n, m)
    w = _weights(w)
    k, cols = w.shape
    G = groups(k, m)
    kp = G * m
    before = passes_for(counts(w, m), n)
    bound = lower_bound(w, n, m)
    identity = np.arange(kp, dtype=np.int64)
    if before <= bound:
        return identity, before, before, bound
    nz_rows, nz_cols = np.nonzero(w)
    row_ptr = np.zeros(kp + 1, dtype=np.int32)
    np.cumsum(np.bincount(nz_rows, minlength=kp), out=row_ptr[1:])
    col_idx = nz_cols.astype(np.int32)
    order = np.argsort(-np.diff(row_ptr), kind="stable").astype(np.int64)
    group_of = np.empty(kp, dtype=np.int64)
    for target in range(bound, before):
        if _assign_shim(row_ptr, col_idx, order, G, m, cols, n * target, group_of):
            perm = np.argsort(group_of, kind="stable").astype(np.int64)
            return perm, before, target, bound
    return identity, before, before, bound


cdef int _assign_shim(const int32_t[::1] row_ptr, const int32_t[::1] col_idx,
                      const int64_t[::1] order, long G, int m, long cols, int cap,
                      int64_t[::1] group_of) except -1:
    cdef uint16_t *cnt = <uint16_t *>simd_alloc(G * cols, sizeof(uint16_t))
    cdef int *fill = <int *>simd_alloc(G, sizeof(int))
    cdef int ok
    if cnt == NULL or fill == NULL:
        simd_free(cnt)
        simd_free(fill)
        raise MemoryError(f"permute: could not allocate the group counts ({G} x {cols})")
    with nogil:
        ok = _assign(&row_ptr[0], &col_idx[0] if col_idx.shape[0] else NULL, &order[0],
                     order.shape[0], G, m, cols, cap, cnt, fill, &group_of[0])
    simd_free(cnt)
    simd_free(fill)
    return ok


cdef int _assign(const int32_t *row_ptr, const int32_t *col_idx, const int64_t *order,
                 long nrows, long G, int m, long cols, int cap, uint16_t *cnt, int *fill,
                 int64_t *group_of) noexcept nogil:
    """1 when every row found a group with room keeping all counts <= cap, else 0."""
    cdef long t, row, g, best, j
    cdef long total, best_total
    cdef int feasible
    memset(cnt, 0, G * cols * sizeof(uint16_t))
    memset(fill, 0, G * sizeof(int))
    for t in range(nrows):
        row = order[t]
        best = -1
        best_total = -1
        for g in range(G):
            if fill[g] >= m:
                continue
            total = 0
            feasible = 1
            for j in range(row_ptr[row], row_ptr[row + 1]):
                if cnt[g * cols + col_idx[j]] >= cap:
                    feasible = 0
                    break
                total += cnt[g * cols + col_idx[j]]
            if feasible and (best < 0 or total < best_total):
                best, best_total = g, total
                if total == 0:
                    break
        if best < 0:
            return 0
        fill[best] += 1
        group_of[row] = best
        for j in range(row_ptr[row], row_ptr[row + 1]):
            cnt[best * cols + col_idx[j]] += 1
    return 1


# ------------------------------------------------------------------ sparse GEMM

def spmm(a, values, indices, n, m, fold_depth, threads=1):
    """float32 (rows, cols) = A (rows x G*m) times the compressed passes, in the sparse
    pass order of the module docstring (folds of ``fold_depth`` compressed rows)."""
    values, indices, n, m = _compressed(values, indices, n, m)
    a = check_array(a, "a", (np.float32,), 2)
    P, kc, cols = values.shape
    kp = kc // n * m
    if a.shape[1] != kp:
        raise ValueError(f"a must have {kp} columns (G = {kc // n} groups of m = {m}, pad with "
                         f"zero columns), got {a.shape[1]}")
    fold_depth = check_int(fold_depth, "fold_depth", CONS_POSITIVE)
    threads = check_threads(threads)
    if (kp + m) * SP_MAX_MB >= 2 ** 31:  # packed-A offsets (in floats) are int32
        raise ValueError(f"a has {kp} columns; spmm takes fewer than {2 ** 31 // SP_MAX_MB - m}")
    if P == 0:
        return np.zeros((a.shape[0], cols), dtype=np.float32)
    out = np.empty((a.shape[0], cols), dtype=np.float32)  # every element is written
    if _spmm_shim(a, values, indices, n, m, fold_depth, out, threads, _isa) != 0:
        raise MemoryError("spmm: could not allocate the packing buffers")
    return out


cdef int _spmm_shim(const float[:, ::1] a, const float[:, :, ::1] values,
                    const uint8_t[:, :, ::1] indices, int n, int m, long depth,
                    float[:, ::1] out, int threads, int isa_code):
    cdef int rc
    with nogil:
        rc = _spmm_core(&a[0, 0], a.shape[0], a.shape[1], &values[0, 0, 0], &indices[0, 0, 0],
                        values.shape[0], values.shape[1], values.shape[2], n, m, depth,
                        &out[0, 0], threads, isa_code)
    return rc


cdef int _spmm_core(const float *A, long rows, long kp, const float *V, const uint8_t *I,
                    long P, long kc, long cols, int n, int m, long depth, float *out,
                    int threads, int isa_code) noexcept nogil:
    """The one C entry of spmm, every ISA: out (rows x cols) = the passes in the sparse pass
    order, accumulated transposed in ot[c * ldt + i] (cols_pad x ldt). Per pass, per fold:
    pack the fold's compressed B (values and A offsets, NC columns per block); then tasks
    of one row block by a chunk of column blocks, spread over the threads: a task packs its
    row block's span of A (k-major, into the thread's buffer) and runs the fold in pieces
    that keep their packed A in L1 (psums wait in the thread's buffer between pieces);
    after the last fold it transposes its block of ot into out while that is in cache.
    Returns -1 when a buffer cannot be allocated, else 0."""
    cdef int mb = sp_isa_mb(isa_code), nc = sp_isa_nc(isa_code)
    cdef long rows_pad = (rows + mb - 1) // mb * mb, cols_pad = (cols + nc - 1) // nc * nc
    cdef long nib = rows_pad // mb, ncb = cols_pad // nc
    # a row of ot one cache line longer than rows_pad: a power-of-two stride would make the
    # output's loads and stores alias in the cache (and in the store buffer)
    cdef long ldt = rows_pad + 16
    cdef long nr_max = depth if depth < kc else kc
    cdef long span_max = ((nr_max + n - 1) // n + 1) * m
    cdef long piece = sp_piece_rows(isa_code, n, m)
    # column chunks per row block so that there are a few tasks per thread
    cdef long nchunk = 1
    if threads > 1 and nib < 4 * threads:
        nchunk = (4 * threads + nib - 1) // nib
        if nchunk > ncb:
            nchunk = ncb
    cdef long chunk = (ncb + nchunk - 1) // nchunk
    cdef size_t ps_floats = <size_t>chunk * nc * mb  # one task's psums, per thread
    cdef size_t pa_floats = <size_t>mb * span_max    # one row block's packed A, per thread
    cdef float *ot = <float *>simd_alloc(<size_t>cols_pad * ldt, sizeof(float))
    cdef float *pa = <float *>simd_alloc(<size_t>threads * pa_floats, sizeof(float))
    cdef float *bv = <float *>simd_alloc(<size_t>ncb * nr_max * nc, sizeof(float))
    cdef int32_t *bo = <int32_t *>simd_alloc(<size_t>ncb * nr_max * nc, sizeof(int32_t))
    cdef float *ps_all = <float *>simd_alloc(<size_t>threads * ps_floats, sizeof(float))
    cdef int rc = 0
    if ot == NULL or pa == NULL or bv == NULL or bo == NULL or ps_all == NULL:
        rc = -1
    else:
        _spmm_passes(A, rows, kp, V, I, P, kc, cols, n, m, depth, out, ot, ldt, ncb,
                     nib, nchunk, chunk, piece, pa, pa_floats, bv, bo, ps_all, ps_floats,
                     threads, isa_code)
    simd_free(ot)
    simd_free(pa)
    simd_free(bv)
    simd_free(bo)
    simd_free(ps_all)
    return rc


cdef void _spmm_passes(const float *A, long rows, long kp, const float *V, const uint8_t *I,
                       long P, long kc, long cols, int n, int m, long depth, float *out,
                       float *ot, long ldt, long ncb, long nib, long nchunk, long chunk, long piece,
                       float *pa_all, size_t pa_floats, float *bv, int32_t *bo,
                       float *ps_all, size_t ps_floats, int threads,
                       int isa_code) noexcept nogil:
    cdef int mb = sp_isa_mb(isa_code), nc = sp_isa_nc(isa_code)
    cdef long p, f0, f1, nr, g0, g1, span, cb, ib, t, c0, c1, cbi, s0, s1
    cdef int end
    cdef float *pa
    cdef float *ps
    for p in range(P):
        f0 = 0
        while f0 < kc:
            f1 = f0 + depth if kc - f0 > depth else kc
            nr = f1 - f0
            g0 = f0 // n
            g1 = (f1 - 1) // n + 1
            span = (g1 - g0) * m
            for cb in prange(ncb, num_threads=threads, schedule="static"):
                sp_pack_b(V + p * kc * cols, I + p * kc * cols, cols, n, m, mb, nc, f0, nr,
                          g0, cb, bv + cb * nr * nc, bo + cb * nr * nc)
            for t in prange(nib * nchunk, num_threads=threads, schedule="dynamic"):
                ib = t // nchunk
                c0 = (t % nchunk) * chunk
                c1 = c0 + chunk if ncb - c0 > chunk else ncb
                pa = pa_all + threadid() * pa_floats
                ps = ps_all + threadid() * ps_floats
                sp_pack_a(isa_code, A, rows, kp, mb, ib, g0 * m, span, pa)
                s0 = f0
                while s0 < f1:
                    s1 = s0 + piece if f1 - s0 > piece else f1
                    end = SP_SPILL
                    if s1 == f1:
                        end = SP_STORE if p == 0 and f0 == 0 else SP_ADD
                    for cbi in range(c0, c1):
                        sp_micro(isa_code, s1 - s0, pa,
                                 bv + cbi * nr * nc + (s0 - f0) * nc,
                                 bo + cbi * nr * nc + (s0 - f0) * nc,
                                 ps + (cbi - c0) * nc * mb, ot + cbi * nc * ldt + ib * mb,
                                 ldt, s0 == f0, end)
                    s0 = s1
                if p == P - 1 and f1 == kc:
                    sp_unpack_out(isa_code, ot, ldt, out, cols, ib * mb,
                                  min(rows, ib * mb + mb), c0 * nc, min(cols, c1 * nc))
            f0 = f1
