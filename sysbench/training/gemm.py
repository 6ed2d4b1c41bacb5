"""The training engine's choice of GEMM for a Linear layer (measured on the MLP suite's
shapes: 2048 features, batch 256; this project's Xeon, numpy's OpenBLAS).

With numpy's BLAS on one thread, both float32 backward GEMMs go through the project's
chain-order kernel (sysbench._kernels.systolic.matmul_f32: per output a sum of fused
multiply-adds in k order, packed straight from the transposed operand): it ran the weight
gradient grad_y^T x (K = 256) 7-15% and the input gradient W^T grad_y^T 5-10% faster than
OpenBLAS, and the input gradient's pass over W also takes plain SGD's step on it
(input_gradient(sgd=)). The forward W x^T stays numpy's, which was faster. On more
threads every GEMM is numpy's: OpenBLAS scaled better there, and its threads, which spin
between calls, would take cores from the kernel's OpenMP threads.

The kernel's sums are the same at any thread count and on every SIMD path (numpy's
depend on its thread count: the workload's reference step runs on the case's threads).
The thread count is the limit numpy's BLAS runs under (threadpoolctl), so `--threads`
and blas_threads() reach both. Other dtypes (float64 gradient checks) use numpy.
"""
from __future__ import annotations

import numpy as np

from .optim import sgd_update

_blas = None  # numpy's BLAS libraries as threadpoolctl sees them (found once)


def blas_thread_count() -> int:
    """The thread limit numpy's BLAS runs under now (1 if none is found)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return max((lib.get_num_threads() for lib in _blas), default=1) or 1


def _kernel_for(*arrays) -> bool:
    """True when the chain-order kernel runs this GEMM: float32, BLAS on one thread."""
    return all(x is None or x.dtype == np.float32 for x in arrays) and blas_thread_count() == 1


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b (into out if given): the chain-order kernel or numpy's (see the module)."""
    if _kernel_for(a, b, out):
        from .._kernels import systolic

        return systolic.matmul_f32(a, b, out=out, threads=1)
    return np.matmul(a, b, out=out)


def output(weight: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x @ weight^T (batch, out), computed as weight @ x^T into out^T (see input_gradient):
    numpy's, in every dtype (OpenBLAS ran it 4-10% faster than the kernel here)."""
    return np.matmul(weight, x.T, out=None if out is None else out.T).T


def weight_gradient(grad_y: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """grad_y^T @ x (out, in) for grad_y (batch, out) and x (batch, in), into out if given."""
    return matmul(grad_y.T, x, out=out)


def input_gradient(weight: np.ndarray, grad_y: np.ndarray, out: np.ndarray | None = None,
                   sgd: tuple | None = None) -> np.ndarray:
    """grad_y @ weight (batch, in) for weight (out, in), computed as weight^T @ grad_y^T
    into out^T: a (batch, in) view of an (in, batch) buffer, as Linear lays it out.
    sgd: None or (weight_grad, lr): then weight -= lr * weight_grad once the product has
    read it (SGD's bits, optim.SGD; in float32 fused into the kernel's one pass over the
    weights)."""
    out_t = None if out is None else out.T
    if _kernel_for(weight, grad_y, out):
        from .._kernels import systolic

        sgd_t = None if sgd is None else (sgd[0].T, sgd[1])
        return systolic.matmul_f32(weight.T, grad_y.T, out=out_t, threads=1, sgd=sgd_t).T
    grad_x = np.matmul(weight.T, grad_y.T, out=out_t).T
    if sgd is not None:
        sgd_update(weight, sgd[0], sgd[1])
    return grad_x
