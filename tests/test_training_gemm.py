"""training.gemm: a Linear layer's GEMMs (the chain-order kernel for float32, but numpy's
forward on one thread)."""
from __future__ import annotations

import numpy as np
import pytest

from sysbench._kernels import systolic
from sysbench.training import gemm, network
from sysbench.training import layers as L
from sysbench.training import recompute as rc
from sysbench.training.optim import SGD, blas_threads
from sysbench.workloads.train_recompute import reference_step


def linear(batch=37, fin=50, fout=70, seed=0):
    layer = L.Linear(fout)
    layer.build((batch, fin), np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    x = rng.standard_normal((batch, fin), dtype=np.float32)
    grad_y = rng.standard_normal((batch, fout), dtype=np.float32)
    return layer, x, grad_y


def test_float32_backward_gemms_are_the_kernels_at_any_thread_count(monkeypatch):
    monkeypatch.setattr(gemm, "KERNEL_THREADED_MIN_MACS", 0)  # this small layer too
    layer, x, grad_y = linear()
    w = layer.params["weight"]
    chain_w = systolic.gemm_f32(np.ascontiguousarray(grad_y.T), x, 1, True).view(np.uint32)
    chain_x = systolic.gemm_f32(np.ascontiguousarray(w.T), np.ascontiguousarray(grad_y.T), 1, True).T
    # as run_program lays them out: (features, batch) buffers seen through .T
    x_t, grad_y_t = np.ascontiguousarray(x.T).T, np.ascontiguousarray(grad_y.T).T
    for threads in (1, 2):
        with blas_threads(threads):
            assert gemm.blas_thread_count() == threads
            for xs, gs in ((x, grad_y), (x_t, grad_y_t), (x_t, grad_y)):
                grad_x, grads = layer.backward(gs, layer.saved_of(xs))
                assert np.array_equal(grads["weight"].view(np.uint32), chain_w)
                assert np.array_equal(grad_x.view(np.uint32), chain_x.view(np.uint32))
                out = np.empty_like(w)
                _, grads = layer.backward(gs, layer.saved_of(xs), weight_out=out)
                assert grads["weight"] is out and np.array_equal(out.view(np.uint32), chain_w)


def test_float32_forward_is_the_kernels_on_any_thread_count(monkeypatch):
    monkeypatch.setattr(gemm, "KERNEL_THREADED_MIN_MACS", 0)  # this small layer too
    layer, x, _ = linear(batch=64, fin=1500, fout=90)  # K past OpenBLAS's K block: the sums differ
    w = layer.params["weight"]
    chain = systolic.gemm_f32(w, np.ascontiguousarray(x.T), 1, True).T
    x_t = np.ascontiguousarray(x.T).T
    for threads in (1, 2):
        with blas_threads(threads):
            for xs in (x, x_t):
                want = chain
                out = np.empty((90, 64), dtype=np.float32).T  # a (features, batch) buffer
                assert np.array_equal(gemm.output(w, xs).view(np.uint32), want.view(np.uint32))
                assert gemm.output(w, xs, out=out) is not None
                assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
    assert not np.array_equal(np.matmul(w, x.T).T, chain)  # the test tells the two apart


def test_small_float32_gemms_on_several_threads_run_on_one_thread_of_the_kernel(monkeypatch):
    layer, x, grad_y = linear(batch=64, fin=1500, fout=90)
    w = layer.params["weight"]
    macs = 64 * 1500 * 90
    want_w = systolic.gemm_f32(np.ascontiguousarray(grad_y.T), x, 1, True)
    want_x = systolic.gemm_f32(np.ascontiguousarray(w.T), np.ascontiguousarray(grad_y.T), 1, True).T
    want_y = systolic.gemm_f32(w, np.ascontiguousarray(x.T), 1, True).T
    real, used = systolic.matmul_f32, []
    monkeypatch.setattr(systolic, "matmul_f32", lambda *a, threads=1, **k: used.append(threads) or real(
        *a, threads=threads, **k))
    for threshold, threads in ((macs + 1, 1), (macs, 2)):
        monkeypatch.setattr(gemm, "KERNEL_THREADED_MIN_MACS", threshold)
        used.clear()
        with blas_threads(2):
            grad_x, grads = layer.backward(grad_y, layer.saved_of(x))
            y = gemm.output(w, x)
        assert used == [threads] * 3
        assert np.array_equal(grads["weight"].view(np.uint32), want_w.view(np.uint32))
        assert np.array_equal(grad_x.view(np.uint32), want_x.view(np.uint32))
        assert np.array_equal(y.view(np.uint32), want_y.view(np.uint32))
    assert not np.array_equal(np.matmul(w, x.T).T, want_y)  # numpy's sums differ here


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


@pytest.mark.parametrize("threads", (1, 2))
def test_linear_backward_with_sgd_lr_steps_the_weight_as_sgd_does(threads):
    """float32 with batch <= CHAIN_KC: stepped inside the weight-gradient GEMM, no weight
    gradient returned; a larger batch or float64: the gradient, and the step in the input
    gradient's pass. The weights' bits are SGD's either way."""
    for dtype, batch, unstored in ((np.float32, 37, True), (np.float32, systolic.CHAIN_KC, True),
                                   (np.float32, systolic.CHAIN_KC + 1, False), (np.float64, 37, False)):
        layer, x, grad_y = linear(batch=batch, seed=3)
        layer.astype(dtype)
        x, grad_y = x.astype(dtype), np.ascontiguousarray(grad_y.T.astype(dtype)).T  # as run_program's
        assert layer.steps_unstored(grad_y.shape, dtype) == unstored
        before = {k: v.copy() for k, v in layer.params.items()}
        plain = L.Linear(70)
        plain.params = {k: v.copy() for k, v in before.items()}
        with blas_threads(threads):
            grad_x, grads = layer.backward(grad_y, x, sgd_lr=0.05)
            want_x, want = plain.backward(grad_y, x)
        assert np.array_equal(grad_x, want_x)  # from the weights before the step
        assert ("weight" in grads) != unstored
        if not unstored:
            assert np.array_equal(grads["weight"], want["weight"])
        assert np.array_equal(grads["bias"], want["bias"])
        SGD(0.05).step_layer(0, plain, want)
        assert not np.array_equal(plain.params["weight"], before["weight"])  # the step changes bits
        assert np.array_equal(layer.params["weight"].view(np.uint8), plain.params["weight"].view(np.uint8)), \
            (dtype, batch)
        assert np.array_equal(layer.params["bias"], before["bias"])  # the caller's to step


@pytest.mark.parametrize("isa", systolic.available_isas())
def test_matmul_step_is_sgd_on_the_product_in_every_layout_isa_and_thread_count(isa):
    previous = systolic.isa()
    systolic.set_isa(isa)
    try:
        _check_matmul_step()
    finally:
        systolic.set_isa(previous)


def _check_matmul_step():
    rng = np.random.default_rng(5)
    for m, k, n in ((1, 1, 1), (13, 5, 29), (50, 256, 33), (70, 257, 9), (25, 0, 4), (40, 64, 100)):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        p = rng.standard_normal((m, n), dtype=np.float32)
        p[0, 0] = np.inf  # non-finite parameters step as numpy's do
        want = np.subtract(p, np.multiply(systolic.matmul_f32(a, b), np.float32(0.3)))
        for a_in in (a, np.asfortranarray(a)):
            for threads in (1, 2):
                for out in (p.copy(), np.asfortranarray(p)):
                    got = systolic.matmul_f32(a_in, b, out=out, threads=threads, step=0.3)
                    assert got is out and np.array_equal(out.view(np.uint32), want.view(np.uint32)), (m, k, n)
    with pytest.raises(ValueError, match="needs out"):
        systolic.matmul_f32(a, b, step=0.1)
    with pytest.raises(ValueError, match="cannot be combined"):
        systolic.matmul_f32(a, b, out=p.copy(), step=0.1, sgd=(a.copy(), 0.1))
    with pytest.raises(ValueError, match="learning rate"):
        systolic.matmul_f32(a, b, out=p.copy(), step="0.1")


@pytest.mark.parametrize("threads,batch", ((1, 24), (2, 24), (1, 300)))
def test_a_step_with_fused_sgd_has_the_unfused_weights(threads, batch, monkeypatch):
    """run_program fuses plain SGD into the Linear layers' backward (eager schedules); the
    weights after the step equal the workload's reference step's (every activation kept,
    SGD afterwards, unfused) in every schedule. With momentum nothing is fused, and the
    schedules still agree."""
    fused = []  # per Linear backward: how its weight was stepped
    real, real_step = gemm.input_gradient, gemm.weight_step
    monkeypatch.setattr(L, "input_gradient", lambda *a, sgd=None, **k: fused.append(
        "input pass" if sgd is not None else "no") or real(*a, sgd=sgd, **k))
    monkeypatch.setattr(L, "weight_step", lambda *a, **k: fused.append("unstored") or real_step(*a, **k))
    real_update = L.sgd_update
    monkeypatch.setattr(L, "sgd_update", lambda *a, **k: fused.append("after") or real_update(*a, **k))
    # the unstored step's product has a single K block
    fused_as = "input pass" if batch > systolic.CHAIN_KC else "unstored"
    net = network.build({"model": "mlp", "layers": 3, "width": 40, "batch": batch}, seed=2)
    x, target = net.make_batch(2)
    initial = net.copy_params()
    want = {"plain": reference_step(net, x, target, initial, 0.1, threads)["weights"]}
    for name, optimizer, fuses in (("plain", lambda: SGD(0.1), True), ("momentum", lambda: SGD(0.1, momentum=0.9),
                                                                       False)):
        for schedule in ("store_all", "full_recompute", "checkpoint_every=2"):
            net.set_params(initial)
            ops = rc.program_for(rc.chain_of(net), rc.parse_schedule(schedule))
            fused.clear()
            with blas_threads(threads):
                rc.run_program(net, x, target, ops, optimizer=optimizer(), pool=rc.BufferPool())
            if fuses:  # every Linear steps its own weight, the first (no input gradient) after its gradient
                if fused_as == "unstored":
                    assert fused == ["no", "unstored"] * 2 + ["unstored"], fused
                else:
                    assert fused == ["input pass"] * 2 + ["after"], fused
            else:
                assert fused == ["no", "no"], fused
            got = net.copy_params()
            want.setdefault(name, got)  # momentum: store_all's
            for mine, theirs in zip(got, want[name]):
                for key in theirs:
                    assert np.array_equal(mine[key], theirs[key]), (name, schedule, key)
