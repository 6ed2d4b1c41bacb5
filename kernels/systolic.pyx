"""Bit-exact fast GEMM in the accumulation orders of a systolic array.

Three layers (as scikit-learn does it): Python wrappers that validate and raise a
ValueError naming the bad argument, typed memoryview shims, and nogil cores that call the
packing and register-blocked micro-kernels of ``systolic_micro.h``.

Orders (the numerics contract; every multiply-add is one fused fp32 operation):

* fold (ws, is): out = +0; for each fold of ``fold_depth`` reduction indices in order,
  psum = +0, psum = fmaf(a, b, psum) over the fold's k in increasing order, out = out + psum.
* chain (os): out = +0; out = fmaf(a, b, out) for k = 0..K-1.
* int8: exact int32 sums of int8 products.

The micro-kernel is chosen at run time (AVX-512F, AVX2+FMA or scalar fmaf); ``isa()``
names it, ``set_isa`` forces one (tests use this to check all paths give the same bits), and
the environment variable SYSBENCH_ISA picks one at import.
"""
import numpy as np

from cython.parallel cimport prange
from libc.math cimport fmaf
from libc.stdint cimport int8_t, int32_t


cdef extern from "systolic_micro.h" nogil:
    int SB_FOLD
    int SB_CHAIN
    int sb_isa_mr(int isa)
    int sb_isa_nr(int isa)
    void *simd_alloc(size_t count, size_t size)
    void simd_free(void *p)
    void sb_pack_a(int isa, const float *A, long lda, long i0, long rows, long k0, long kc,
                   int mr, float *dst)
    void sb_pack_b_panels(const float *B, long ldb, long k0, long kc, long j0, long cols,
                          int nr, long p0, long p1, float *dst)
    void sb_macro(int isa, int mode, long kc, long rows, long cols,
                  const float *pa, const float *pb, float *C, long ldc)


cdef extern from *:
    """
    static void sb_i8_row(const signed char *arow, const signed char *B, long K, long N,
                          int *orow)
    {
        long k, j;
        for (k = 0; k < K; k++) {
            const int aik = arow[k];
            const signed char *bk = B + k * N;
            for (j = 0; j < N; j++) orow[j] += aik * (int)bk[j];
        }
    }
    """
    void sb_i8_row(const int8_t *arow, const int8_t *B, long K, long N, int32_t *orow) nogil


# chain order: K block of the packed panels (accumulators reload from `out` between blocks)
CHAIN_KC = 256
# int8 K limit: 131071 * 128 * 128 < 2**31
I8_MAX_K = 131071

include "checks.pxi"
include "isa.pxi"


# blocking (in floats): packed B block per N block, packed A block per output tile
cdef long _nc_floats = 262144
cdef long _mc_floats = 24576
# threads > 1 pack all of A once when it takes at most this many floats (256 MiB)
cdef size_t _packed_a_max = 1 << 26


def _set_blocking(nc_floats, mc_floats):
    """Tune the cache blocking (floats of packed B per N block, of packed A per tile)."""
    global _nc_floats, _mc_floats
    _nc_floats, _mc_floats = int(nc_floats), int(mc_floats)


# ------------------------------------------------------------------ validation

def _operands(a, b, dtype):
    a = check_array(a, "a", (dtype,), 2)
    b = check_array(b, "b", (dtype,), 2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"shape mismatch: a is {a.shape[0]}x{a.shape[1]} and b is "
                         f"{b.shape[0]}x{b.shape[1]}; a.shape[1] must equal b.shape[0]")
    return a, b


# ------------------------------------------------------------------ fp32 GEMM

def gemm_f32(a, b, fold_depth, chain, threads=1):
    """float32 (M, N) = a (M x K) @ b (K x N) in fold order (chain=False, folds of
    ``fold_depth`` reduction indices) or chain order (chain=True, fold_depth ignored)."""
    a, b = _operands(a, b, np.float32)
    chain = check_bool(chain, "chain")
    threads = check_threads(threads)
    if chain:
        kc, mode = CHAIN_KC, SB_CHAIN
    else:
        kc, mode = check_int(fold_depth, "fold_depth", CONS_POSITIVE), SB_FOLD
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)  # first K block stores
    if _gemm_f32_shim(a, b, out, kc, mode, threads, _isa) != 0:
        raise MemoryError("could not allocate the packing buffers")
    return out


cdef int _gemm_f32_shim(const float[:, ::1] a, const float[:, ::1] b, float[:, ::1] out,
                        long kc, int mode, int threads, int isa_code):
    cdef int rc
    with nogil:
        rc = _gemm_f32_core(&a[0, 0], &b[0, 0], &out[0, 0], a.shape[0], a.shape[1],
                            b.shape[1], a.shape[1], b.shape[1], out.shape[1], kc, mode, threads,
                            isa_code)
    return rc


cdef int _current_isa() noexcept nogil:
    return _isa


cdef int _gemm_f32_core(const float *A, const float *B, float *C, long M, long K, long N,
                        long lda, long ldb, long ldc, long kc_max, int mode, int threads,
                        int isa_code) noexcept nogil:
    """threads > 1: A is packed once, every fold of it, by all threads; then the output is cut
    into blocks of whole columns and each block goes through every fold on one thread, taken
    dynamically. Two parallel regions and no barrier per fold: a fold of a 32-row array is
    microseconds of work, and a barrier waits for a thread the OS has descheduled (on a loaded
    2-core machine a fold-level split ran 2-10x slower on 2 threads than on 1). An output with
    too few columns is cut into blocks of rows instead (each repacks the small B). Every
    output element gets the same operations in the same order whatever the cut."""
    cdef int mr = sb_isa_mr(isa_code)
    cdef int nr = sb_isa_nr(isa_code)
    cdef long col_panels = (N + nr - 1) // nr
    cdef long row_panels = (M + mr - 1) // mr
    cdef long folds = (K + kc_max - 1) // kc_max
    cdef long blocks, per, b, lo, hi, t, pc, p
    cdef int failed = 0
    cdef float *packed_a
    if threads > 1 and col_panels >= 2 * threads and <size_t>row_panels * mr * K <= _packed_a_max:
        # blocks of at least 8 column panels when there are enough (a block's B stays in cache
        # while it streams all of A), at least one block per thread
        per = (col_panels + 4 * threads - 1) // (4 * threads)
        if per < 8:
            per = 8
        if per * threads > col_panels:
            per = (col_panels + threads - 1) // threads
        blocks = (col_panels + per - 1) // per
        packed_a = <float *>simd_alloc(<size_t>row_panels * mr * K, sizeof(float))
        if packed_a == NULL:
            return -1
        for t in prange(folds * row_panels, num_threads=threads, schedule="static"):
            pc = (t // row_panels) * kc_max
            p = t % row_panels
            sb_pack_a(isa_code, A, lda, p * mr, mr if M - p * mr > mr else M - p * mr, pc,
                      kc_max if K - pc > kc_max else K - pc, mr,
                      packed_a + row_panels * mr * pc + p * mr * (kc_max if K - pc > kc_max else K - pc))
        for b in prange(blocks, num_threads=threads, schedule="dynamic"):
            lo = b * per * nr
            hi = lo + per * nr if lo + per * nr < N else N
            failed += _gemm_f32_serial(A, packed_a, B + lo, C + lo, M, K, hi - lo, lda, ldb, ldc,
                                       kc_max, mode, isa_code) != 0
        simd_free(packed_a)
    elif threads > 1 and row_panels >= 2 * threads:
        per = (row_panels + 4 * threads - 1) // (4 * threads)
        blocks = (row_panels + per - 1) // per
        for b in prange(blocks, num_threads=threads, schedule="dynamic"):
            lo = b * per * mr
            hi = lo + per * mr if lo + per * mr < M else M
            failed += _gemm_f32_serial(A + lo * lda, NULL, B, C + lo * ldc, hi - lo, K, N, lda, ldb,
                                       ldc, kc_max, mode, isa_code) != 0
    else:                            # one thread, or too small to share
        return _gemm_f32_serial(A, NULL, B, C, M, K, N, lda, ldb, ldc, kc_max, mode, isa_code)
    return -1 if failed else 0


cdef int _gemm_f32_serial(const float *A, const float *packed_a, const float *B, float *C,
                          long M, long K, long N, long lda, long ldb, long ldc, long kc_max,
                          int mode, int isa_code) noexcept nogil:
    """BLIS loops on one thread: K blocks (pc; each a fold in fold order) > M chunks (pack
    A, unless packed_a holds every fold of it already: fold pc's panels at
    row_panels * mr * pc) > N blocks (pack B) > output tiles > micro-tiles (sb_macro). Row
    strides lda, ldb, ldc (elements) let a caller (tconv, a thread's block) pass sub-blocks
    of larger arrays."""
    cdef int mr = sb_isa_mr(isa_code)
    cdef int nr = sb_isa_nr(isa_code)
    cdef long row_panels = (M + mr - 1) // mr
    cdef long kc_cap = kc_max if kc_max < K else K
    # N block: about 1 MB of packed B; M chunk: up to 4096 rows of packed A
    cdef long nc_blk = (_nc_floats // kc_cap) // nr * nr
    if nc_blk < nr:
        nc_blk = nr
    if nc_blk > (N + nr - 1) // nr * nr:
        nc_blk = (N + nr - 1) // nr * nr
    cdef long mb_blk = 4096 // mr * mr
    if mb_blk > (M + mr - 1) // mr * mr:
        mb_blk = (M + mr - 1) // mr * mr
    # output tile: about 96 KB of packed A (mc rows) by the N block
    cdef long mc = (_mc_floats // kc_cap) // mr * mr
    if mc < mr:
        mc = mr
    if mc > mb_blk:
        mc = mb_blk
    cdef float *pa = NULL
    if packed_a == NULL:
        pa = <float *>simd_alloc(<size_t>mb_blk * kc_cap, sizeof(float))
    cdef float *pb = <float *>simd_alloc(<size_t>nc_blk * kc_cap, sizeof(float))
    if (packed_a == NULL and pa == NULL) or pb == NULL:
        simd_free(pa)
        simd_free(pb)
        return -1
    cdef const float *chunk
    cdef long pc, kc, ib, mb, jc, nb, p, npan, i0, rows
    pc = 0
    while pc < K:
        kc = kc_max if K - pc > kc_max else K - pc
        ib = 0
        while ib < M:
            mb = mb_blk if M - ib > mb_blk else M - ib
            if packed_a != NULL:
                chunk = packed_a + row_panels * mr * pc + ib * kc
            else:
                npan = (mb + mr - 1) // mr
                for p in range(npan):
                    sb_pack_a(isa_code, A, lda, ib + p * mr, mr if mb - p * mr > mr else mb - p * mr,
                              pc, kc, mr, pa + p * mr * kc)
                chunk = pa
            jc = 0
            while jc < N:
                nb = nc_blk if N - jc > nc_blk else N - jc
                sb_pack_b_panels(B, ldb, pc, kc, jc, nb, nr, 0, (nb + nr - 1) // nr, pb)
                i0 = 0
                while i0 < mb:
                    rows = mc if mb - i0 > mc else mb - i0
                    sb_macro(isa_code, mode + 2 if pc == 0 else mode, kc, rows, nb,
                             chunk + (i0 // mr) * mr * kc, pb, C + (ib + i0) * ldc + jc, ldc)
                    i0 += mc
                jc += nb
            ib += mb
        pc += kc
    simd_free(pa)
    simd_free(pb)
    return 0


# ------------------------------------------------------------------ int8 GEMM

def gemm_i8(a, b, threads=1):
    """int32 (M, N) = a (M x K, int8) @ b (K x N, int8), exact (K <= 131071)."""
    a, b = _operands(a, b, np.int8)
    threads = check_threads(threads)
    if a.shape[1] > I8_MAX_K:
        raise ValueError(f"K = a.shape[1] = {a.shape[1]} exceeds {I8_MAX_K}: "
                         "int32 accumulation could overflow")
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int32)
    _gemm_i8_shim(a, b, out, threads)
    return out


cdef void _gemm_i8_shim(const int8_t[:, ::1] a, const int8_t[:, ::1] b, int32_t[:, ::1] out,
                        int threads):
    cdef long M = a.shape[0], K = a.shape[1], N = b.shape[1], i
    with nogil:
        for i in prange(M, num_threads=threads, schedule="static"):
            sb_i8_row(&a[i, 0], &b[0, 0], K, N, &out[i, 0])


# ------------------------------------------------------------------ elementwise fmaf

def fmaf_array(a, b, c):
    """Elementwise fmaf(a, b, c) (one rounding) of broadcast-compatible float32 arrays."""
    arrays = []
    for name, x in (("a", a), ("b", b), ("c", c)):
        arrays.append(check_dtype(np.asarray(x), name, (np.float32,)))
    try:
        shape = np.broadcast_shapes(*(x.shape for x in arrays))
    except ValueError:
        raise ValueError("a, b and c are not broadcast-compatible: shapes "
                         + ", ".join(str(x.shape) for x in arrays)) from None
    flat = [np.ascontiguousarray(np.broadcast_to(x, shape)).reshape(-1) for x in arrays]
    out = np.empty(shape, dtype=np.float32)
    _fmaf_shim(flat[0], flat[1], flat[2], out.reshape(-1))
    return out


cdef void _fmaf_shim(const float[::1] a, const float[::1] b, const float[::1] c,
                     float[::1] out):
    cdef Py_ssize_t i, n = out.shape[0]
    with nogil:
        for i in range(n):
            out[i] = fmaf(a[i], b[i], c[i])
