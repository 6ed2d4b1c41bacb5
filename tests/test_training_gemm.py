"""training.gemm: the Linear weight gradient's GEMM (the chain-order kernel for float32)."""
from __future__ import annotations

import numpy as np

from sysbench._kernels import systolic
from sysbench.training import gemm
from sysbench.training import layers as L
from sysbench.training.optim import blas_threads


def linear(batch=37, fin=50, fout=70, seed=0):
    layer = L.Linear(fout)
    layer.build((batch, fin), np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    x = rng.standard_normal((batch, fin), dtype=np.float32)
    grad_y = rng.standard_normal((batch, fout), dtype=np.float32)
    return layer, x, grad_y


def test_float32_weight_gradient_has_the_chain_bits_in_every_layout_and_thread_count():
    layer, x, grad_y = linear()
    want = systolic.gemm_f32(np.ascontiguousarray(grad_y.T), x, 1, True).view(np.uint32)
    # as run_program lays them out: (features, batch) buffers seen through .T
    x_t, grad_y_t = np.ascontiguousarray(x.T).T, np.ascontiguousarray(grad_y.T).T
    for threads in (1, 2):
        with blas_threads(threads):
            assert gemm.blas_thread_count() == threads
            for xs, gs in ((x, grad_y), (x_t, grad_y_t), (x_t, grad_y)):
                _, grads = layer.backward(gs, layer.saved_of(xs))
                assert np.array_equal(grads["weight"].view(np.uint32), want)
                out = np.empty_like(layer.params["weight"])
                _, grads = layer.backward(gs, layer.saved_of(xs), weight_out=out)
                assert grads["weight"] is out and np.array_equal(out.view(np.uint32), want)


def test_float32_weight_gradient_within_rounding_of_float64():
    layer, x, grad_y = linear(batch=300)
    _, grads = layer.backward(grad_y, x)
    exact = grad_y.T.astype(np.float64) @ x.astype(np.float64)
    scale = np.abs(grad_y.T).astype(np.float64) @ np.abs(x).astype(np.float64)
    assert np.all(np.abs(grads["weight"] - exact) <= 300 * 2.0 ** -24 * scale)


def test_float64_weight_gradient_is_numpys():
    layer, x, grad_y = linear()
    layer.astype(np.float64)
    x, grad_y = x.astype(np.float64), grad_y.astype(np.float64)
    _, grads = layer.backward(grad_y, x)
    assert np.array_equal(grads["weight"], grad_y.T @ x)
