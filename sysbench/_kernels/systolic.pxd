# C-level entry points of sysbench._kernels.systolic for other kernels (tconv cimports them
# so that it calls the array GEMM without a Python call per GEMM). Cython looks for a
# module's .pxd beside the module, here in the package; the source is kernels/systolic.pyx.

# The SIMD path systolic.set_isa() chose (an SB_ISA_* code of systolic_micro.h).
cdef int _current_isa() noexcept nogil

# C (M x N, row stride ldc) = A (M x K, lda) @ B (K x N, ldb) in float32, in the array's
# order: mode SB_FOLD (0) with kc_max = the fold depth, or SB_CHAIN (1) with kc_max = the
# packing block (CHAIN_KC). Returns 0, or -1 when the packing buffers cannot be allocated.
cdef int _gemm_f32_core(const float *A, const float *B, float *C, long M, long K, long N,
                        long lda, long ldb, long ldc, long kc_max, int mode, int threads,
                        int isa_code) noexcept nogil

# The `mode` values of _gemm_f32_core (SB_FOLD and SB_CHAIN in systolic_micro.h).
cdef enum:
    GEMM_FOLD = 0
    GEMM_CHAIN = 1
