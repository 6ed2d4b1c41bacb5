"""The training engine's choice of GEMM for a Linear layer's weight gradient.

float32 weight gradients go through the project's chain-order kernel
(sysbench._kernels.systolic.matmul_f32: a sum of fused multiply-adds in k order, packed
straight from the transposed operand); on the MLP suite's shapes (K = batch = 256, a
2048 x 2048 output) it runs 7-15% faster than numpy's OpenBLAS here, whose forward and
input-gradient GEMMs stay faster than the kernel's and are kept. Its sums are the same at
any thread count and on every SIMD path, and it runs on as many threads as numpy's BLAS
is limited to (threadpoolctl), so `--threads` and blas_threads() reach it too.
Other dtypes (float64 gradient checks) use numpy.
"""
from __future__ import annotations

import numpy as np

_blas = None  # numpy's BLAS libraries as threadpoolctl sees them (found once)


def blas_thread_count() -> int:
    """The thread limit numpy's BLAS runs under now (1 if none is found)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return max((lib.get_num_threads() for lib in _blas), default=1) or 1


def weight_gradient(grad_y: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """grad_y^T @ x (out, in) for grad_y (batch, out) and x (batch, in), into out if given."""
    if grad_y.dtype == np.float32 and x.dtype == np.float32 and (out is None or out.dtype == np.float32):
        from .._kernels import systolic

        return systolic.matmul_f32(grad_y.T, x, out=out, threads=blas_thread_count())
    return np.matmul(grad_y.T, x, out=out)
