"""Layer and loss gradients against central finite differences in float64."""
from __future__ import annotations

import numpy as np
import pytest

from sysbench.training import layers as L
from sysbench.training import network
from sysbench.training.losses import MSE, SoftmaxCrossEntropy
from sysbench.training.optim import SGD
from sysbench.workloads.train_recompute import reference_step


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f() with respect to every element of x (in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def check_layer(layer, in_shape, seed=0, positive_margin=False):
    rng = np.random.default_rng(seed)
    layer.build(in_shape, np.random.default_rng([seed, 7]))
    layer.astype(np.float64)
    x = rng.standard_normal(in_shape)
    if positive_margin:  # keep inputs away from kinks (ReLU at 0, max-pool ties)
        x = np.sign(x) * (np.abs(x) + 0.05)
    y, _ = layer.forward(x)
    assert y.shape == layer.out_shape and y.dtype == np.float64
    r = rng.standard_normal(y.shape)  # objective: sum(y * r), so d/dy = r

    def objective():
        return float(np.sum(layer.forward(x)[0] * r))

    grad_x, grads = layer.backward(r, layer.saved_of(x))
    np.testing.assert_allclose(grad_x, numeric_grad(objective, x), rtol=1e-6, atol=1e-7)
    assert set(grads) == set(layer.params)
    for name, p in layer.params.items():
        np.testing.assert_allclose(grads[name], numeric_grad(objective, p), rtol=1e-6, atol=1e-7)
    none, grads2 = layer.backward(r, layer.saved_of(x), need_input_grad=False)
    assert none is None
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads2[name])


def test_linear():
    check_layer(L.Linear(5), (4, 7))
    check_layer(L.Linear(1, bias=False), (1, 3))


def test_relu():
    check_layer(L.ReLU(), (3, 11), positive_margin=True)


def test_gelu():
    check_layer(L.GELU(), (4, 9))


@pytest.mark.parametrize("kernel,stride,padding,shape", [
    (3, 1, 1, (2, 3, 6, 5)),
    (3, 2, 0, (1, 2, 7, 7)),
    ((2, 3), (2, 1), (1, 0), (2, 2, 5, 6)),
    (1, 1, 0, (1, 4, 3, 3)),
    (5, 3, 2, (1, 1, 4, 4)),  # stride > kernel / 2, ragged windows
])
def test_conv2d(kernel, stride, padding, shape):
    check_layer(L.Conv2d(3, kernel, stride, padding), shape)


def test_conv2d_matches_direct_definition():
    """The im2col forward against a loop over outputs straight from the definition."""
    rng = np.random.default_rng(3)
    layer = L.Conv2d(2, kernel=3, stride=2, padding=1)
    layer.build((1, 2, 5, 4), rng)
    layer.astype(np.float64)
    x = rng.standard_normal((1, 2, 5, 4))
    y, _ = layer.forward(x)
    w, b = layer.params["weight"], layer.params["bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for o in range(2):
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                patch = xp[0, :, 2 * i: 2 * i + 3, 2 * j: 2 * j + 3]
                assert y[0, o, i, j] == pytest.approx(np.sum(patch * w[o]) + b[o], rel=1e-12)


@pytest.mark.parametrize("kernel,stride,shape", [(2, None, (2, 3, 6, 4)), (3, 2, (1, 2, 7, 7)), (2, 1, (1, 1, 4, 5))])
def test_maxpool(kernel, stride, shape):
    rng = np.random.default_rng(1)
    layer = L.MaxPool2d(kernel, stride)
    layer.build(shape, rng)
    # distinct values, so no window has a tie and differences stay on one side
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) * 0.1
    y, _ = layer.forward(x)
    r = rng.standard_normal(y.shape)
    grad_x, _ = layer.backward(r, layer.saved_of(x))
    np.testing.assert_allclose(grad_x, numeric_grad(lambda: float(np.sum(layer.forward(x)[0] * r)), x, 1e-4),
                               rtol=1e-6, atol=1e-8)


def test_maxpool_ties_pick_the_first_maximum():
    layer = L.MaxPool2d(2)
    layer.build((1, 1, 2, 2), None)
    x = np.ones((1, 1, 2, 2))
    grad_x, _ = layer.backward(np.ones((1, 1, 1, 1)), x)
    assert grad_x.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]


def test_flatten():
    check_layer(L.Flatten(), (2, 3, 2, 2))


def test_losses():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((5, 4))
    target = rng.integers(0, 4, 5)
    ce = SoftmaxCrossEntropy()
    loss, grad = ce.forward_backward(logits, target)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), target])), rel=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda: ce.forward_backward(logits, target)[0], logits),
                               rtol=1e-6, atol=1e-8)
    mse = MSE()
    out, tgt = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    loss, grad = mse.forward_backward(out, tgt)
    assert loss == pytest.approx(np.mean((out - tgt) ** 2), rel=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda: mse.forward_backward(out, tgt)[0], out), rtol=1e-6, atol=1e-9)


def test_whole_network_gradient_float64():
    """Chained forward/backward of a small CNN equals finite differences of the loss."""
    net = network.from_specs([{"type": "conv2d", "out_channels": 2, "kernel": 3, "padding": 1}, "gelu",
                              "maxpool2d", "flatten", "linear:3"], (2, 1, 4, 4), seed=5, dtype=np.float64)
    x, target = net.make_batch(1)

    def loss():
        a = x
        for i in range(net.n):
            a = net.forward_layer(i, a)[0]
        return net.loss_and_grad(a, target)[0]

    # the plain store-all step train_recompute validates against (it restores the weights)
    grads = reference_step(net, x, target, net.copy_params(), lr=0.01, threads=1)["grads"]
    for i in (0, 4):
        w = net.layers[i].params["weight"]
        np.testing.assert_allclose(grads[i]["weight"], numeric_grad(loss, w), rtol=1e-5, atol=1e-8)


def test_init_is_deterministic_by_seed_and_float32():
    a, b, c = network.mlp(2, 8, 4, seed=1), network.mlp(2, 8, 4, seed=1), network.mlp(2, 8, 4, seed=2)
    assert a.layers[0].params["weight"].dtype == np.float32
    assert np.array_equal(a.layers[2].params["weight"], b.layers[2].params["weight"])
    assert not np.array_equal(a.layers[2].params["weight"], c.layers[2].params["weight"])


def test_sgd_step():
    net = network.mlp(1, 3, 2)
    w0 = net.layers[0].params["weight"].copy()
    g = np.full_like(w0, 2.0)
    SGD(lr=0.5).step(net.layers[:1], [{"weight": g, "bias": np.zeros(3, np.float32)}])
    np.testing.assert_array_equal(net.layers[0].params["weight"], w0 - np.float32(1.0))


def test_bad_specs_are_clear_errors():
    with pytest.raises(ValueError, match="layer 2"):
        network.from_specs(["linear:4", "softmax"], (2, 3))
    with pytest.raises(ValueError, match="flatten"):
        network.from_specs([{"type": "conv2d", "out_channels": 2, "kernel": 3}, "linear:4"], (1, 1, 4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        network.from_specs([{"type": "conv2d", "out_channels": 2, "kernel": 5}], (1, 1, 4, 4))


@pytest.mark.parametrize("spec,message", [
    ({"type": "conv2d", "out_channels": 0, "kernel": 3}, "out_channels must be an integer >= 1, got 0"),
    ({"type": "conv2d", "out_channels": 2.5, "kernel": 3}, "out_channels must be an integer >= 1, got 2.5"),
    ({"type": "conv2d", "out_channels": 2, "kernel": 0}, "kernel must be an integer >= 1, got 0"),
    ({"type": "conv2d", "out_channels": 2, "kernel": [3]}, r"kernel must be an integer or a \[height, width\]"),
    ({"type": "conv2d", "out_channels": 2, "kernel": 3, "stride": 0}, "stride must be an integer >= 1, got 0"),
    ({"type": "conv2d", "out_channels": 2, "kernel": 3, "padding": -1}, "padding must be an integer >= 0, got -1"),
    ({"type": "conv2d", "out_channels": 2, "kernel": 3, "bias": "no"}, "bias must be true or false"),
    ({"type": "linear", "out_features": "4"}, "out_features must be an integer >= 1, got '4'"),
    ({"type": "linear", "out_features": True}, "out_features must be an integer >= 1, got True"),
    ({"type": "maxpool2d", "kernel": 2, "stride": [1, 0]}, "stride must be an integer >= 1, got 0"),
])
def test_bad_layer_settings_are_clear_errors(spec, message):
    # values from a suite file reach the constructors unchecked: a ValueError naming the
    # setting, never a ZeroDivisionError or TypeError from deep inside build()
    with pytest.raises(ValueError, match=f"layer 1: .*{message}"):
        network.from_specs([spec, "flatten", "linear:3"], (1, 1, 4, 4))


def test_global_maxpool_wider_than_int16_positions():
    # 182 x 182 = 33124 window positions: more than an int16 index holds
    layer = L.MaxPool2d(182)
    layer.build((1, 2, 182, 182), None)
    x = np.zeros((1, 2, 182, 182), dtype=np.float32)
    x[0, 0, 181, 180] = 1.0
    x[0, 1, 0, 3] = 1.0
    y, _ = layer.forward(x)
    assert y.ravel().tolist() == [1.0, 1.0]
    grad_x, _ = layer.backward(np.array([2.0, 3.0], dtype=np.float32).reshape(1, 2, 1, 1), x)
    assert np.argwhere(grad_x).tolist() == [[0, 0, 181, 180], [0, 1, 0, 3]]
    assert grad_x[0, 0, 181, 180] == 2.0 and grad_x[0, 1, 0, 3] == 3.0


def test_relu_backward_reads_input_or_output_and_in_place_gives_the_same_bits():
    relu = L.ReLU()
    relu.build((4, 50), None)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 50)).astype(np.float32)
    x[0, :5] = 0.0  # the kink: no gradient through 0
    g = rng.standard_normal((4, 50)).astype(np.float32)
    y, _ = relu.forward(x)
    expected = np.where(x > 0, g, np.float32(0))  # +0 where the input is <= 0
    for saved in (x, y):
        out, _ = relu.backward(g, saved)
        assert out.tobytes() == expected.tobytes()
        assert relu.backward_inplace(g.copy(), saved).tobytes() == expected.tobytes()
    assert relu.forward_inplace(x.copy()).tobytes() == y.tobytes()
    assert relu.backward_reads == "either" and L.Flatten.backward_reads == "nothing"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_a_fused_relu_has_the_two_layers_bits(dtype, bias):
    """Linear.forward(relu=True) is Linear then ReLU, and backward(relu_input=True) is
    Linear's backward then the backward of the ReLU whose output x is, bit for bit: in the
    kernel's epilogue (float32, also into buffers laid out as the pool's) and as numpy
    passes (float64); with and without the fused SGD step."""
    rng = np.random.default_rng(4)
    batch, fin, fout = 40, 70, 33
    x = np.maximum(rng.standard_normal((batch, fin)), 0).astype(dtype)  # a ReLU's output: zeros
    g = rng.standard_normal((batch, fout)).astype(dtype)
    for out_buffers in (False, True):
        linear, relu = L.Linear(fout, bias=bias), L.ReLU()
        linear.build((batch, fin), np.random.default_rng(1))
        linear.astype(dtype)
        relu.build((batch, fout), None)
        pool = (lambda rows, cols: np.empty((cols, rows), dtype).T) if out_buffers else (lambda rows, cols: None)
        want_y = relu.forward(linear.forward(x)[0])[0]
        got_y = linear.forward(x, out=pool(batch, fout), relu=True)[0]
        assert got_y.tobytes() == want_y.tobytes()
        for sgd_lr in (None, 0.1):
            initial = linear.params["weight"].copy()
            want_gx, want_grads = linear.backward(g, x, sgd_lr=sgd_lr)
            want_gx = relu.backward_inplace(want_gx, x)
            want_w = linear.params["weight"].copy()
            linear.params["weight"][...] = initial
            got_gx, got_grads = linear.backward(g, x, out=pool(batch, fin), sgd_lr=sgd_lr, relu_input=True)
            assert got_gx.tobytes() == want_gx.tobytes() and np.any(got_gx == 0) and np.any(got_gx != 0)
            assert linear.params["weight"].tobytes() == want_w.tobytes()
            assert want_grads.keys() == got_grads.keys()
            for key in want_grads:
                assert got_grads[key].tobytes() == want_grads[key].tobytes()
            linear.params["weight"][...] = initial
