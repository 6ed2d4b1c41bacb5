"""The training engine's choice of GEMM for a Linear layer's backward pass.

In float32 both backward GEMMs go through the project's chain-order kernel
(sysbench._kernels.systolic.matmul_f32: per output a sum of fused multiply-adds in k
order, packed straight from the transposed operand): on the MLP suite's shapes (2048
features, batch 256) it ran the weight gradient grad_y^T x (K = 256) 7-15% and the input
gradient W^T grad_y^T (W read transposed) 5-10% faster than numpy's OpenBLAS on this
project's Xeon; the forward W x^T stays numpy's, which was faster there. The kernel's
sums are the same at any thread count and on every SIMD path; it runs on as many threads
as numpy's BLAS is limited to (threadpoolctl), so `--threads` and blas_threads() reach
it. Other dtypes (float64 gradient checks) use numpy.
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


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b (into out if given): the chain-order kernel when everything is float32."""
    if a.dtype == np.float32 and b.dtype == np.float32 and (out is None or out.dtype == np.float32):
        from .._kernels import systolic

        return systolic.matmul_f32(a, b, out=out, threads=blas_thread_count())
    return np.matmul(a, b, out=out)


def output(weight: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x @ weight^T (batch, out), computed as weight @ x^T into out^T (see input_gradient):
    numpy's, in every dtype (OpenBLAS ran it 4-20% faster than the kernel here)."""
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
    if weight.dtype == np.float32 and grad_y.dtype == np.float32 and (out is None or out.dtype == np.float32):
        from .._kernels import systolic

        sgd_t = None if sgd is None else (sgd[0].T, sgd[1])
        return systolic.matmul_f32(weight.T, grad_y.T, out=out_t, threads=blas_thread_count(), sgd=sgd_t).T
    grad_x = np.matmul(weight.T, grad_y.T, out=out_t).T
    if sgd is not None:
        weight_grad, lr = sgd
        weight -= weight.dtype.type(lr) * weight_grad
    return grad_x
