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
    int SB_STEP
    int sb_isa_mr(int isa)
    int sb_isa_nr(int isa)
    void *simd_alloc(size_t count, size_t size)
    void simd_free(void *p)
    float *sb_ws_take(size_t floats, size_t *got)
    void sb_ws_give(float *p, size_t floats)
    void sb_pack_a(int isa, const float *A, long lda, long i0, long rows, long k0, long kc,
                   int mr, float *dst, long ahead)
    void sb_pack_b_panels(const float *B, long ldb, long k0, long kc, long j0, long cols,
                          int nr, long p0, long p1, float *dst)
    void sb_pack_a_trans_panels(int isa, float *AT, long ldat, long k0, long kc, long i0,
                                long rows, int mr, long p0, long p1, float *dst,
                                const float *g, long ldg, float lr)
    void sb_pack_b_trans_panels(int isa, const float *BT, long ldbt, long k0, long kc, long j0,
                                long cols, int nr, long p0, long p1, float *dst)
    ctypedef struct sb_epilogue:
        const float *bias
        int relu
        const float *mask
        long ldm
    void sb_macro(int isa, int mode, long kc, long rows, long cols,
                  const float *pa, const float *pb, float *C, long ldc, float lr,
                  const float *pf, long pf_ld, long pf_rows, long pf_cols, const sb_epilogue *epi)


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


def _set_blocking(nc_floats, mc_floats):
    """Tune the cache blocking (floats of packed B per N block, of packed A per tile; each
    at least one panel). Returns the previous pair. The bits do not depend on it."""
    global _nc_floats, _mc_floats
    previous = (_nc_floats, _mc_floats)
    _nc_floats, _mc_floats = int(nc_floats), int(mc_floats)
    return previous


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


def _layout(x, name):
    """(C-contiguous array to read, stored transposed?) of a 2-D float32 operand: a C array
    as it is, an F array (such as the .T of a C array) through its C-contiguous transpose."""
    x = check_dtype(x, name, (np.float32,)) if isinstance(x, np.ndarray) else x
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got ndim={x.ndim}")
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def matmul_f32(a, b, out=None, threads=1, sgd=None, step=None, bias=None, relu=False, relu_mask=None):
    """float32 a (M x K) @ b (K x N) in chain order (the bits of gemm_f32(a, b, 0, True)),
    reading C- or F-contiguous operands in place (an F one, such as x.T, is packed from its
    transpose; other layouts are copied). out: None (a new C array) or a float32 (M, N)
    array, C- or F-contiguous, written in place and returned. Empty K gives zeros.

    sgd: None or (grad, lr): once the product has read a, a -= lr * grad in place (a
    writeable array; grad float32 of a's shape; lr * grad rounded, then the difference:
    numpy's np.subtract(a, np.multiply(grad, np.float32(lr)), out=a)). With a and grad
    both F-contiguous and a C or no out (a Linear layer's W.T in its input gradient), the
    update is made as a is packed, in the one pass that reads it.

    step: None or lr: out = out - lr * (a @ b) instead of out = a @ b (out required: the
    parameter; lr * product rounded, then the difference: plain SGD's bits on the product
    numpy-style, np.subtract(out, np.multiply(a @ b, np.float32(lr)), out=out)). With K <=
    CHAIN_KC and a C-contiguous out, each tile of the product is stepped with as it is
    made and never stored: a weight gradient taken only for SGD costs no memory traffic
    of its own. Not with sgd.

    bias (float32, M), relu, relu_mask (float32, M x N): then, in this order, out += bias
    per row (Linear's bias), out = np.maximum(out, 0) (its ReLU), out = the gradient
    through a ReLU whose output is relu_mask (np.multiply(out, relu_mask > 0), then
    out += 0: where relu_mask > 0 the product, else +0), with numpy's bits. With a
    C-contiguous out (and mask), on each tile of the last K block while it is in cache
    (systolic_micro.h's epilogue); else as those numpy passes afterwards. Not with step."""
    a_given = a
    if sgd is not None and step is not None:
        raise ValueError("sgd and step cannot be combined")
    relu = check_bool(relu, "relu")
    epilogue = bias is not None or relu or relu_mask is not None
    if step is not None and epilogue:
        raise ValueError("step cannot be combined with bias, relu or relu_mask")
    if sgd is not None:
        sgd_grad, sgd_lr = _sgd_args(a, sgd)
    if step is not None:
        if out is None:
            raise ValueError("step needs out: the parameter to step")
        step = _learning_rate(step, "step must be a learning rate (a number)")
    a, trans_a = _layout(a, "a")
    b, trans_b = _layout(b, "b")
    threads = check_threads(threads)
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(f"shape mismatch: a is {M}x{K} and b is {Kb}x{N}; "
                         "a.shape[1] must equal b.shape[0]")
    if out is None:
        out = np.empty((M, N), dtype=np.float32)
    else:
        out = check_dtype(out, "out", (np.float32,)) if isinstance(out, np.ndarray) else out
        if not isinstance(out, np.ndarray) or out.shape != (M, N):
            raise ValueError(f"out must be a float32 array of shape {(M, N)}, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        if not (out.flags.c_contiguous or out.flags.f_contiguous) or not out.flags.writeable:
            raise ValueError("out must be a writeable C- or F-contiguous array")
    if bias is not None:
        bias = _float32_operand(bias, "bias", (M,))
    if relu_mask is not None:
        relu_mask = _float32_operand(relu_mask, "relu_mask", (M, N))
    # the epilogue in the kernel: on a C out (the kernel's own layout), bias and mask
    in_kernel = (epilogue and out.flags.c_contiguous and M > 0 and N > 0 and K > 0
                 and (bias is None or bias.flags.c_contiguous)
                 and (relu_mask is None or relu_mask.flags.c_contiguous))
    # trans_a: a is a_given's own memory (an F array, read through its transpose)
    fused = (sgd is not None and trans_a and sgd_grad.flags.f_contiguous and out.flags.c_contiguous
             and M > 0 and N > 0 and K > 0)
    if step is not None and not (out.flags.c_contiguous and 0 < K <= CHAIN_KC and M > 0 and N > 0):
        # the product first, then the step: the same bits
        np.subtract(out, np.multiply(matmul_f32(a_given, b, threads=threads), step), out=out)
        return out
    if M == 0 or N == 0:
        pass
    elif K == 0:
        out[...] = 0
    elif step is not None:
        rc = _matmul_shim(a, b, out, M, K, N, trans_a, trans_b, threads, None, step, True)
        if rc != 0:
            raise MemoryError("could not allocate the packing buffers")
    else:
        if out.flags.c_contiguous:
            rc = _matmul_shim(a, b, out, M, K, N, trans_a, trans_b, threads,
                              sgd_grad.T if fused else None, sgd_lr if fused else 0.0, False,
                              bias if in_kernel else None, relu and in_kernel,
                              relu_mask if in_kernel else None)
        else:  # out^T = b^T a^T: fmaf(x, y, acc) is symmetric in x and y, so the same bits
            rc = _matmul_shim(b, a, out.T, N, K, M, not trans_b, not trans_a, threads, None, 0.0)
        if rc != 0:
            raise MemoryError("could not allocate the packing buffers")
    if epilogue and not in_kernel:
        _epilogue_passes(out, bias, relu, relu_mask)
    if sgd is not None and not fused:
        np.subtract(a_given, np.multiply(sgd_grad, np.float32(sgd_lr)), out=a_given)
    return out


def _epilogue_passes(out, bias, relu, relu_mask):
    """matmul_f32's epilogue as numpy passes over out (the bits the kernel's has)."""
    if bias is not None:
        out += bias[:, None]
    if relu:
        np.maximum(out, np.float32(0), out=out)
    if relu_mask is not None:
        np.multiply(out, relu_mask > 0, out=out)
        out += np.float32(0)


def _float32_operand(x, name, shape):
    """x checked as a float32 array of `shape` (ValueError naming it otherwise)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != shape:
        raise ValueError(f"{name} must be a float32 array of shape {shape}, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    return x


def _sgd_args(a, sgd):
    """(grad, lr as float32) of matmul_f32's sgd argument, checked against a."""
    if not isinstance(sgd, tuple) or len(sgd) != 2:
        raise ValueError(f"sgd must be a (grad, lr) pair, got {sgd!r}")
    grad, lr = sgd
    if not isinstance(a, np.ndarray) or not a.flags.writeable:
        raise ValueError("sgd updates a in place: a must be a writeable numpy array")
    if not isinstance(grad, np.ndarray) or grad.dtype != np.float32 or grad.shape != a.shape:
        raise ValueError(f"sgd's grad must be a float32 array of a's shape {a.shape}, got "
                         f"{getattr(grad, 'dtype', type(grad).__name__)} {getattr(grad, 'shape', '')}")
    return grad, _learning_rate(lr, "sgd's lr must be a number")


def _learning_rate(lr, message):
    """lr as float32, or ValueError(message, got lr) when it is not a number."""
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise ValueError(f"{message}, got {lr!r}")
    return np.float32(lr)


cdef int _matmul_shim(const float[:, ::1] a, const float[:, ::1] b, float[:, ::1] out,
                      long M, long K, long N, bint trans_a, bint trans_b, int threads,
                      object sgd_grad_t, float lr, bint step=False, object bias=None,
                      bint relu=False, object relu_mask=None):
    """sgd_grad_t: None, or the C-contiguous transpose of the gradient of the stored a.
    step: out = out - lr * (a @ b) instead (K <= CHAIN_KC). bias (contiguous, M), relu,
    relu_mask (C-contiguous, M x N): the epilogue (matmul_f32)."""
    cdef int rc
    cdef long kc = CHAIN_KC
    cdef const float[:, ::1] g
    cdef const float *gp = NULL
    cdef long ldg = 0
    cdef const float[::1] bias_v
    cdef const float[:, ::1] mask_v
    cdef sb_epilogue epi = _no_epilogue()
    if sgd_grad_t is not None:
        g = sgd_grad_t
        gp = &g[0, 0]
        ldg = g.shape[1]
    if bias is not None:
        bias_v = bias
        epi.bias = &bias_v[0]
    if relu_mask is not None:
        mask_v = relu_mask
        epi.mask = &mask_v[0, 0]
        epi.ldm = mask_v.shape[1]
    epi.relu = relu
    with nogil:
        rc = _gemm_f32_split(&a[0, 0], &b[0, 0], &out[0, 0], M, K, N, a.shape[1], b.shape[1],
                             out.shape[1], kc, SB_STEP if step else SB_CHAIN, threads, _isa, trans_a,
                             trans_b, gp, ldg, lr, epi)
    return rc


cdef inline sb_epilogue _no_epilogue() noexcept nogil:
    cdef sb_epilogue e
    e.bias = NULL
    e.relu = 0
    e.mask = NULL
    e.ldm = 0
    return e


cdef inline sb_epilogue _epilogue_at(sb_epilogue e, long i, long j) noexcept nogil:
    """e for the block of C that starts at row i, column j of e's."""
    if e.bias != NULL:
        e.bias = e.bias + i
    if e.mask != NULL:
        e.mask = e.mask + i * e.ldm + j
    return e


cdef int _gemm_f32_split(const float *A, const float *B, float *C, long M, long K, long N,
                         long lda, long ldb, long ldc, long kc_max, int mode, int threads,
                         int isa_code, bint trans_a, bint trans_b, const float *sgd_g, long ldg,
                         float lr, sb_epilogue epi) noexcept nogil:
    """Every GEMM on `threads` threads, as one parallel region: each thread computes a whole
    single-threaded GEMM (_gemm_f32_core_t) on its share of the output's rows (of its
    columns when there are fewer rows and no SGD is fused), packing its own blocks. The
    threads meet once per call rather than at every packing step and fold: a fold of a
    32-row array is microseconds of work, and each meeting waits for a thread the OS has
    descheduled (a fold-level split ran 2 to 10x slower on 2 threads than on 1 on a loaded
    2-core machine). Every output element is summed the same way whatever the split."""
    cdef int mr = sb_isa_mr(isa_code)
    cdef int nr = sb_isa_nr(isa_code)
    cdef bint by_rows = M >= N or sgd_g != NULL  # a fused SGD must see each row of A once
    cdef long unit = mr if by_rows else nr
    cdef long units = ((M if by_rows else N) + unit - 1) // unit
    cdef int parts = threads if threads < units else <int>units
    cdef long t, lo, hi
    cdef int rc = 0, failed = 0
    if parts <= 1:
        return _gemm_f32_core_t(A, B, C, M, K, N, lda, ldb, ldc, kc_max, mode, isa_code,
                                trans_a, trans_b, sgd_g, ldg, lr, epi)
    for t in prange(parts, num_threads=parts, schedule="static"):
        lo = units * t // parts * unit
        hi = units * (t + 1) // parts * unit
        if by_rows:
            if hi > M:
                hi = M
            rc = _gemm_f32_core_t(A + (lo if trans_a else lo * lda), B, C + lo * ldc, hi - lo, K, N,
                                  lda, ldb, ldc, kc_max, mode, isa_code, trans_a, trans_b,
                                  NULL if sgd_g == NULL else sgd_g + lo, ldg, lr, _epilogue_at(epi, lo, 0))
        else:
            if hi > N:
                hi = N
            rc = _gemm_f32_core_t(A, B + (lo * ldb if trans_b else lo), C + lo, M, K, hi - lo,
                                  lda, ldb, ldc, kc_max, mode, isa_code, trans_a, trans_b,
                                  NULL, 0, lr, _epilogue_at(epi, 0, lo))  # lr: SB_STEP's
        failed += rc != 0  # a reduction
    return -1 if failed else 0


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
    """C = A @ B on `threads` threads (_gemm_f32_split). Row strides lda, ldb, ldc
    (elements) let a caller (tconv) pass sub-blocks of larger arrays."""
    return _gemm_f32_split(A, B, C, M, K, N, lda, ldb, ldc, kc_max, mode, threads, isa_code,
                           0, 0, NULL, 0, 0.0, _no_epilogue())


cdef int _gemm_f32_core_t(const float *A, const float *B, float *C, long M, long K, long N,
                          long lda, long ldb, long ldc, long kc_max, int mode, int isa_code,
                          int trans_a, int trans_b, const float *sgd_g, long ldg,
                          float lr, sb_epilogue epi) noexcept nogil:
    """One thread's GEMM, BLIS loops: K blocks (pc; each a fold in fold order) > M chunks
    (pack A) > N blocks (pack B) > output tiles > micro-tiles (sb_macro); with one N block,
    B is packed first and each M chunk is one output tile. Operands may be
    stored transposed: trans_a: A points at A^T (K x M, row stride lda); trans_b: B at B^T
    (N x K, row stride ldb). Only the packing differs, so the bits are those of the
    untransposed call. sgd_g (only with trans_a; NULL for none): A^T = A^T - lr * sgd_g as
    it is packed (the caller's A must be writeable). mode SB_STEP (K <= kc_max, one K
    block): C = C - lr * (A @ B), the product never stored (sb_macro). epi: the epilogue
    (at C's top-left), on each tile of the last K block."""
    cdef int first_mode = mode if mode == SB_STEP else mode + 2  # the first K block's
    cdef int mr = sb_isa_mr(isa_code)
    cdef int nr = sb_isa_nr(isa_code)
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
    # one N block: B is packed once per K block, then A one output tile at a time, each
    # multiplied while its packing is still in cache, the next tile's A fetched meanwhile
    # (packing 4096 rows first sent them to L3 and back: the MLP's store_all step 1-2%
    # slower). Several N blocks: A is packed once per M chunk (a fused SGD must see each
    # row of A once) and B once per N block.
    cdef bint b_once = N <= nc_blk
    if b_once:
        mb_blk = mc
    # one workspace for both packed blocks (pb starts on a cache line)
    cdef size_t pa_floats = (<size_t>mb_blk * kc_cap + 15) // 16 * 16
    cdef size_t ws_floats
    cdef float *pa = sb_ws_take(pa_floats + <size_t>nc_blk * kc_cap, &ws_floats)
    if pa == NULL:
        return -1
    cdef float *pb = pa + pa_floats
    cdef long pc, kc, ib, mb, jc, nb, p, npan, i0, rows, nxt, pf_ld, pf_rows, pf_cols
    cdef const float *pf
    cdef bint epi_any = epi.bias != NULL or epi.relu or epi.mask != NULL
    cdef sb_epilogue epi_tile
    pc = 0
    while pc < K:
        kc = kc_max if K - pc > kc_max else K - pc
        if b_once:
            _pack_b_block(B, ldb, pc, kc, 0, N, nr, trans_b, isa_code, pb)
        ib = 0
        while ib < M:
            mb = mb_blk if M - ib > mb_blk else M - ib
            npan = (mb + mr - 1) // mr
            if trans_a:
                sb_pack_a_trans_panels(isa_code, <float *>A, lda, pc, kc, ib, mb, mr, 0, npan, pa,
                                       sgd_g, ldg, lr)
            else:
                for p in range(npan):
                    i0 = ib + p * mr
                    sb_pack_a(isa_code, A, lda, i0, mr if mb - p * mr > mr else mb - p * mr,
                              pc, kc, mr, pa + p * mr * kc, M - i0 - mr)
            # one N block: the next tile's A, fetched while this one is multiplied
            nxt = mc if M - ib - mb > mc else M - ib - mb
            if not b_once or nxt <= 0:
                pf, pf_ld, pf_rows, pf_cols = NULL, 0, 0, 0
            elif trans_a:
                pf, pf_ld, pf_rows, pf_cols = A + pc * lda + ib + mb, lda, kc, nxt
            else:
                pf, pf_ld, pf_rows, pf_cols = A + (ib + mb) * lda + pc, lda, nxt, kc
            jc = 0
            while jc < N:
                nb = nc_blk if N - jc > nc_blk else N - jc
                if not b_once:
                    _pack_b_block(B, ldb, pc, kc, jc, nb, nr, trans_b, isa_code, pb)
                i0 = 0
                while i0 < mb:
                    rows = mc if mb - i0 > mc else mb - i0
                    epi_tile = _epilogue_at(epi, ib + i0, jc)
                    sb_macro(isa_code, first_mode if pc == 0 else mode, kc, rows, nb,
                             pa + (i0 // mr) * mr * kc, pb, C + (ib + i0) * ldc + jc, ldc, lr,
                             pf, pf_ld, pf_rows, pf_cols,
                             &epi_tile if epi_any and pc + kc == K else NULL)
                    i0 += mc
                jc += nb
            ib += mb
        pc += kc
    sb_ws_give(pa, ws_floats)
    return 0


cdef inline void _pack_b_block(const float *B, long ldb, long pc, long kc, long jc, long nb,
                               int nr, bint trans_b, int isa_code, float *pb) noexcept nogil:
    """Pack B's block (K block pc, kc deep; columns jc to jc + nb) as its panels."""
    cdef long npan = (nb + nr - 1) // nr
    if trans_b:
        sb_pack_b_trans_panels(isa_code, B, ldb, pc, kc, jc, nb, nr, 0, npan, pb)
    else:
        sb_pack_b_panels(B, ldb, pc, kc, jc, nb, nr, 0, npan, pb)


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
