"""The training engine's choice of GEMM for a Linear layer (measured on the MLP suite's
shapes: 2048 features, batch 256, against numpy's OpenBLAS).

All three float32 GEMMs of a Linear layer go through the project's chain-order kernel
(sysbench._kernels.systolic.matmul_f32: per output a sum of fused multiply-adds in k order,
packed straight from the transposed operand) at any thread count, and the input gradient's
pass over W also takes plain SGD's step on it (input_gradient(sgd=)). On one thread the
kernel ran the weight gradient grad_y^T x (K = 256) 7-15% and the input gradient 5-10%
faster than OpenBLAS on the project's Xeon. The forward W x^T was OpenBLAS's on one thread
until its packing of W prefetched the next panel's rows (sb_pack_a): since then the
step with the kernel's forward runs 3-5% faster there (in the step W comes from memory,
where packing it had cost 13-16% of the GEMM). On more threads a step without OpenBLAS
matters more: its threads, which spin after each call, take cores from the kernel's OpenMP
threads (a recompute schedule, which alternated the two, ran 25% slower), and an unfused
SGD is a serial pass over every weight (14% of a two-thread step on Zen 4). On Zen 4 at two
threads the kernel ran each of the three GEMMs 5-13% faster than OpenBLAS. Small GEMMs on
several threads run on one thread of the kernel (KERNEL_THREADED_MIN_MACS).

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


# On several threads, a GEMM of fewer multiply-adds runs on one thread of the kernel: in a
# network whose other GEMMs are OpenBLAS's (Conv2d's im2col products), the kernel's OpenMP
# threads and OpenBLAS's spin against each other (the CNN suite's 10-class Linear on two
# threads of the kernel made a two-thread step 11% slower); one thread opens no OpenMP
# region. (It was numpy's: on one thread of the kernel, the sums, and so SGD's unstored
# step, training.weight_step, are the same at every thread count.) The MLP suite's GEMMs
# have 2^30.
KERNEL_THREADED_MIN_MACS = 1 << 24


def _kernel_threads(m: int, k: int, n: int, *arrays) -> int:
    """The thread count the chain-order kernel runs (m x k) @ (k x n) on, 0 for numpy's:
    float32 (any other dtype is numpy's), on one thread below KERNEL_THREADED_MIN_MACS
    multiply-adds."""
    if not all(x is None or x.dtype == np.float32 for x in arrays):
        return 0
    threads = blas_thread_count()
    return threads if m * k * n >= KERNEL_THREADED_MIN_MACS else 1


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b (into out if given): the chain-order kernel or numpy's (see _kernel_threads)."""
    threads = _kernel_threads(a.shape[0], a.shape[1], b.shape[-1], a, b, out)
    if threads:
        from .._kernels import systolic

        return systolic.matmul_f32(a, b, out=out, threads=threads)
    return np.matmul(a, b, out=out)


def output(weight: np.ndarray, x: np.ndarray, out: np.ndarray | None = None, bias: np.ndarray | None = None,
           relu: bool = False) -> np.ndarray:
    """x @ weight^T (batch, out), computed as weight @ x^T into out^T (see input_gradient):
    the kernel's or numpy's (see _kernel_threads); then + bias (if given) and, with relu,
    np.maximum(y, 0): in the kernel, on each tile as it is finished (matmul_f32's epilogue),
    else as numpy passes, with the same bits."""
    out_t = None if out is None else out.T
    threads = _kernel_threads(*weight.shape, x.shape[0], weight, x, out)
    if threads:
        from .._kernels import systolic

        return systolic.matmul_f32(weight, x.T, out=out_t, threads=threads, bias=bias, relu=relu).T
    y = np.matmul(weight, x.T, out=out_t).T
    if bias is not None:
        y += bias
    if relu:
        np.maximum(y, y.dtype.type(0), out=y)
    return y


def weight_gradient(grad_y: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """grad_y^T @ x (out, in) for grad_y (batch, out) and x (batch, in), into out if given."""
    return matmul(grad_y.T, x, out=out)


def steps_unstored(batch: int, dtype) -> bool:
    """Whether weight_step takes SGD's step on a Linear's weight without storing its
    gradient: float32 and one K block of the kernel (batch <= CHAIN_KC). Shapes and dtype
    only, so that a dry run (interpreter.dry_run) counts the same memory as the real one."""
    from .._kernels import systolic

    return np.dtype(dtype) == np.float32 and 0 < batch <= systolic.CHAIN_KC


def weight_step(grad_y: np.ndarray, x: np.ndarray, weight: np.ndarray, lr: float,
                scratch: np.ndarray | None = None) -> None:
    """weight -= lr * (grad_y^T @ x), plain SGD's bits on weight_gradient's sums (the
    kernel's chain order: weight_gradient's for float32 at any thread count). Where
    steps_unstored, each tile of the gradient is stepped with as the kernel makes it and
    never stored (matmul_f32(step=)): the 16 MB gradient of a 2048 x 2048 Linear is neither
    written nor read again; else the gradient first (into scratch if given: a buffer of
    weight's shape), then optim.sgd_update."""
    threads = _kernel_threads(weight.shape[0], grad_y.shape[0], weight.shape[1], grad_y, x, weight)
    if threads and steps_unstored(grad_y.shape[0], weight.dtype):
        from .._kernels import systolic

        systolic.matmul_f32(grad_y.T, x, out=weight, threads=threads, step=lr)
        return
    # not float32 or more than one K block: the gradient (scratch, or a transient), then the
    # step (the bits of weight_gradient's route)
    sgd_update(weight, weight_gradient(grad_y, x, out=scratch), lr)


def input_gradient(weight: np.ndarray, grad_y: np.ndarray, out: np.ndarray | None = None,
                   sgd: tuple | None = None, relu_output: np.ndarray | None = None) -> np.ndarray:
    """grad_y @ weight (batch, in) for weight (out, in), computed as weight^T @ grad_y^T
    into out^T: a (batch, in) view of an (in, batch) buffer, as Linear lays it out.
    sgd: None or (weight_grad, lr): then weight -= lr * weight_grad once the product has
    read it (SGD's bits, optim.SGD; in float32 fused into the kernel's one pass over the
    weights). relu_output (batch, in): the gradient comes out through the ReLU whose output
    it is (ReLU.backward_inplace's bits; in the kernel, on each tile as it is finished)."""
    out_t = None if out is None else out.T
    threads = _kernel_threads(weight.shape[1], weight.shape[0], grad_y.shape[0], weight, grad_y, out,
                              relu_output)
    if threads:
        from .._kernels import systolic

        sgd_t = None if sgd is None else (sgd[0].T, sgd[1])
        mask_t = None if relu_output is None else relu_output.T
        return systolic.matmul_f32(weight.T, grad_y.T, out=out_t, threads=threads, sgd=sgd_t, relu_mask=mask_t).T
    grad_x = np.matmul(weight.T, grad_y.T, out=out_t).T
    if sgd is not None:
        sgd_update(weight, sgd[0], sgd[1])
    if relu_output is not None:
        np.multiply(grad_x, relu_output > 0, out=grad_x)
        grad_x += grad_x.dtype.type(0)
    return grad_x
