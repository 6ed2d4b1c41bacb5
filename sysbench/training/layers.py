"""Layers of the numpy training engine: Linear, ReLU, GELU, Conv2d (im2col), MaxPool2d, Flatten.

Every layer works in the dtype of its input (float32 for training, float64 for gradient
checks; `layer.astype(np.float64)` converts its parameters) and has:

    build(in_shape, rng) -> out_shape       create parameters (deterministic for a given rng;
                                            rng None: shapes only, parameters left unset)
    forward(x) -> (y, saved)                saved is what backward needs
    backward(grad_y, saved, need_input_grad=True) -> (grad_x or None, {param: grad})
    saved_of(x)                             the `saved` forward(x) returns, computed at no cost
A layer with accepts_out (Linear) also takes forward(x, out=) and backward(..., out=,
weight_out=): buffers to write y, grad_x and the weight gradient into (a BufferPool's).
One with fuses_relu (Linear) takes forward(x, relu=True) (y is then the following ReLU's
output) and backward(..., relu_input=True) (x is a ReLU's output, and grad_x comes out
as the gradient of that ReLU's input): the ReLU's element-wise pass, with its bits, made
on each tile of the layer's GEMM as it is finished.
One with fuses_sgd (Linear: "weight") takes backward(..., sgd_lr=) too: plain SGD's step
on that parameter (the same bits as optim.SGD's own step), taken by the weight-gradient
GEMM as it makes each tile, the gradient then not stored and not in the returned dict
(training.gemm.steps_unstored), or else in the input-gradient GEMM's pass over it.

`saved` is always built from the layer's input alone (a reference to x, or x's shape), never
a new buffer: a schedule that holds a layer's input can run that layer's backward without
running its forward again. A layer's `backward_reads` says what else may stand in for it:
ReLU's saved may be its output too (the same sign), Flatten's is only a shape. That is the
memory model the recompute schedules optimise (training/chain.py).

Per-layer figures for the schedules and the model (shapes include the batch):
    flops(in_shape) -> (forward, backward with input grad, backward without)
    gemms(in_shape) -> {"forward": [(m, k, n)], "backward": [...], "backward_input": [...]}
    workspace(in_shape, itemsize, need_input_grad) -> (forward bytes, backward bytes):
        transient buffers beyond the input, the output and the gradients, as the code below
        allocates them.
"""
from __future__ import annotations

import math

import numpy as np

from .gemm import input_gradient, output, steps_unstored, weight_gradient, weight_step
from .optim import sgd_update


class Layer:
    kind = "layer"
    has_params = False
    accepts_out = False
    fuses_sgd = None  # a parameter backward(..., sgd_lr=) steps itself (Linear's weight)
    # forward(x, relu=True) also applies a ReLU that follows it, and backward(...,
    # relu_input=True) the backward of one that precedes it (Linear: in its GEMMs' epilogue)
    fuses_relu = False
    # what backward reads of this layer's tensors: "input" (its saved_of(x)), "either" (its
    # input or its output give the same saved: ReLU's sign), "nothing" (Flatten: a shape)
    backward_reads = "input"
    # forward_inplace / backward_inplace may overwrite their argument (the recompute chain
    # uses them inside a stage, where the argument is not needed afterwards)
    inplace = False

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.in_shape: tuple | None = None
        self.out_shape: tuple | None = None

    def build(self, in_shape: tuple, rng: np.random.Generator) -> tuple:
        self.in_shape = tuple(in_shape)
        self.out_shape = self.output_shape(self.in_shape)
        return self.out_shape

    def output_shape(self, in_shape: tuple) -> tuple:
        return tuple(in_shape)

    def saved_of(self, x: np.ndarray):
        return x

    def saved_of_shape(self, in_shape: tuple):
        """saved for a layer whose backward reads nothing of its tensors (backward_reads = "nothing")."""
        raise NotImplementedError(f"{self.kind}'s backward reads its input")

    def forward(self, x: np.ndarray):
        raise NotImplementedError

    def backward(self, grad_y: np.ndarray, saved, need_input_grad: bool = True):
        raise NotImplementedError

    def steps_unstored(self, in_shape: tuple, dtype) -> bool:
        """Whether backward(sgd_lr=) steps fuses_sgd's parameter without returning its
        gradient (Linear's, gemm.steps_unstored)."""
        return False

    def flops(self, in_shape: tuple) -> tuple[int, int, int]:
        n = math.prod(in_shape)
        return n, n, 0

    def gemms(self, in_shape: tuple) -> dict:
        return {"forward": [], "backward": [], "backward_input": []}

    def workspace(self, in_shape: tuple, itemsize: int, need_input_grad: bool = True) -> tuple[int, int]:
        return 0, 0

    def astype(self, dtype) -> "Layer":
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        return self

    def describe(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return f"{self.describe()} {self.in_shape}->{self.out_shape}"


def _uniform(rng: np.random.Generator | None, bound: float, shape: tuple) -> np.ndarray:
    """PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    rng None: shapes only (an uninitialised buffer, for models that need no numbers)."""
    if rng is None:
        return np.empty(shape, dtype=np.float32)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Linear(Layer):
    """y = x W^T + b, W stored (out, in) as in PyTorch.

    y and grad_x come out as transposed views of (features, batch) buffers: W @ x^T ran
    faster than x @ W^T (on OpenBLAS, which had the forward first), and a (features, batch)
    input is read the same way by the next Linear; the element-wise layers between keep the
    layout. The GEMMs are training.gemm's (the chain-order kernel for float32)."""

    kind = "linear"
    has_params = True
    accepts_out = True
    fuses_sgd = "weight"  # backward(sgd_lr=) updates this parameter
    fuses_relu = True

    def __init__(self, out_features: int, bias: bool = True):
        super().__init__()
        self.out_features = _int(out_features, "out_features", 1)
        self.bias = _flag(bias, "bias")

    def output_shape(self, in_shape):
        if len(in_shape) != 2:
            raise ValueError(f"linear needs a (batch, features) input, got shape {in_shape}; add a flatten first")
        return (in_shape[0], self.out_features)

    def build(self, in_shape, rng):
        out = super().build(in_shape, rng)
        fan_in = in_shape[1]
        bound = 1.0 / math.sqrt(fan_in)
        self.params = {"weight": _uniform(rng, bound, (self.out_features, fan_in))}
        if self.bias:
            self.params["bias"] = _uniform(rng, bound, (self.out_features,))
        return out

    def forward(self, x, out=None, relu=False):
        """out: a (batch, out) buffer laid out (features, batch), as BufferPool.take_transposed.
        relu: y is the following ReLU's output (fuses_relu)."""
        y = output(self.params["weight"], x, out=out, bias=self.params["bias"] if self.bias else None, relu=relu)
        return y, x

    def backward(self, grad_y, saved, need_input_grad=True, out=None, weight_out=None, sgd_lr=None,
                 relu_input=False):
        """sgd_lr: also take plain SGD's step on the weight (optim.SGD.fused_lr; the caller
        steps the other parameters): where gemm.steps_unstored, inside the weight-gradient
        GEMM, which then returns no weight gradient; else in the pass of the input gradient
        that reads W (or, with no input gradient, after the weight gradient). relu_input:
        x is a ReLU's output, and grad_x the gradient of that ReLU's input (fuses_relu)."""
        x = saved
        weight = self.params["weight"]
        relu_output = x if relu_input else None
        if sgd_lr is not None and self.steps_unstored(x.shape, grad_y.dtype):
            # the input gradient reads W before the weight gradient steps it, tile by tile
            grads = {"bias": grad_y.sum(axis=0)} if self.bias else {}
            grad_x = input_gradient(weight, grad_y, out=out, relu_output=relu_output) if need_input_grad else None
            weight_step(grad_y, x, weight, sgd_lr, scratch=weight_out)
            return grad_x, grads
        grads = {"weight": weight_gradient(grad_y, x, out=weight_out)}
        if self.bias:
            grads["bias"] = grad_y.sum(axis=0)
        grad_x = None
        sgd = None if sgd_lr is None else (grads["weight"], sgd_lr)
        if need_input_grad:
            grad_x = input_gradient(weight, grad_y, out=out, sgd=sgd, relu_output=relu_output)
        elif sgd is not None:
            sgd_update(weight, *sgd)
        return grad_x, grads

    def steps_unstored(self, in_shape, dtype) -> bool:
        """Whether backward(sgd_lr=) steps the weight inside the weight-gradient GEMM and
        returns no weight gradient (gemm.steps_unstored)."""
        return steps_unstored(in_shape[0], dtype)

    def flops(self, in_shape):
        b, fin = in_shape
        mm = 2 * b * fin * self.out_features
        bias = b * self.out_features if self.bias else 0
        return mm + bias, 2 * mm + bias, mm + bias

    def gemms(self, in_shape):
        b, fin = in_shape
        out = self.out_features
        return {"forward": [(b, fin, out)], "backward": [(out, b, fin)], "backward_input": [(b, out, fin)]}

    def describe(self):
        return f"linear({self.out_features})"


class ReLU(Layer):
    """max(x, 0). backward needs only where x > 0, which is where its output is > 0: saved
    may be the input or the output."""

    kind = "relu"
    backward_reads = "either"
    inplace = True

    def forward(self, x):
        return np.maximum(x, x.dtype.type(0)), x

    def forward_inplace(self, x):
        return np.maximum(x, x.dtype.type(0), out=x)

    def backward(self, grad_y, saved, need_input_grad=True):
        if not need_input_grad:
            return None, {}
        return self.backward_inplace(grad_y.copy(order="K"), saved), {}  # the layout of grad_y

    def backward_inplace(self, grad_y, saved):
        """The gradient written over grad_y: grad_y where saved > 0, else +0 (grad_y * 0
        may be -0, and -0 + +0 is +0; two passes, four times faster than np.where)."""
        np.multiply(grad_y, saved > 0, out=grad_y)
        grad_y += grad_y.dtype.type(0)
        return grad_y

    def workspace(self, in_shape, itemsize, need_input_grad=True):
        return 0, math.prod(in_shape) if need_input_grad else 0  # the boolean mask


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class GELU(Layer):
    """GELU, tanh approximation (PyTorch's approximate='tanh'):
    y = x/2 (1 + tanh(u)), u = c (x + a x^3)."""

    kind = "gelu"

    def _tanh_u(self, x):
        t = x * x
        t *= x
        t *= x.dtype.type(_GELU_A)
        t += x
        t *= x.dtype.type(_GELU_C)
        return np.tanh(t, out=t)

    def forward(self, x):
        y = self._tanh_u(x)
        y += x.dtype.type(1)
        y *= x
        y *= x.dtype.type(0.5)
        return y, x

    def backward(self, grad_y, saved, need_input_grad=True):
        if not need_input_grad:
            return None, {}
        x = saved
        one, half = x.dtype.type(1), x.dtype.type(0.5)
        t = self._tanh_u(x)
        # dy/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 a x^2)
        du = x * x
        du *= x.dtype.type(3 * _GELU_A)
        du += one
        du *= x.dtype.type(_GELU_C)
        du *= x
        du *= half
        sq = t * t  # third buffer: 1 - t^2
        np.subtract(one, sq, out=sq)
        du *= sq
        del sq
        t += one
        t *= half
        t += du
        del du
        t *= grad_y
        return t, {}

    def flops(self, in_shape):
        n = math.prod(in_shape)
        return 9 * n, 18 * n, 0

    def workspace(self, in_shape, itemsize, need_input_grad=True):
        n = math.prod(in_shape) * itemsize
        return 0, 2 * n if need_input_grad else 0  # t becomes grad_x; du and 1 - t^2 are transient


def _int(v, name: str, minimum: int) -> int:
    """v as an int >= minimum, or a ValueError naming the setting (suite values arrive unchecked)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _pair(v, name: str = "value", minimum: int = 1) -> tuple[int, int]:
    """An int or a [height, width] pair, each an integer >= minimum."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an integer or a [height, width] pair, got {v!r}")
        return _int(v[0], name, minimum), _int(v[1], name, minimum)
    v = _int(v, name, minimum)
    return v, v


def _flag(v, name: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false, got {v!r}")
    return v


def _out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, ph, pw):
    if not (ph or pw):
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _window(a, r, s, ho, wo, sh, sw):
    """a[:, :, r::sh, s::sw] restricted to ho x wo positions (one kernel tap, all outputs)."""
    return a[:, :, r: r + sh * (ho - 1) + 1: sh, s: s + sw * (wo - 1) + 1: sw]


class Conv2d(Layer):
    """2-D convolution (NCHW, groups = 1) as one im2col GEMM; weight (out, in, kh, kw).

    The im2col reduction index runs over (in_channel, kernel row, kernel column), PyTorch's
    weight flattening. backward rebuilds the columns from the input rather than keeping them
    (they are kh*kw times the input)."""

    kind = "conv2d"
    has_params = True

    def __init__(self, out_channels: int, kernel=3, stride=1, padding=0, bias: bool = True):
        super().__init__()
        self.out_channels = _int(out_channels, "out_channels", 1)
        self.kernel, self.stride = _pair(kernel, "kernel"), _pair(stride, "stride")
        self.padding = _pair(padding, "padding", minimum=0)
        self.bias = _flag(bias, "bias")

    def output_shape(self, in_shape):
        if len(in_shape) != 4:
            raise ValueError(f"conv2d needs an NCHW input, got shape {in_shape}")
        b, c, h, w = in_shape
        ho = _out(h, self.kernel[0], self.stride[0], self.padding[0])
        wo = _out(w, self.kernel[1], self.stride[1], self.padding[1])
        if ho < 1 or wo < 1:
            raise ValueError(f"conv2d kernel {self.kernel} does not fit the padded {h}x{w} input")
        return (b, self.out_channels, ho, wo)

    def build(self, in_shape, rng):
        out = super().build(in_shape, rng)
        cin = in_shape[1]
        kh, kw = self.kernel
        bound = 1.0 / math.sqrt(cin * kh * kw)
        self.params = {"weight": _uniform(rng, bound, (self.out_channels, cin, kh, kw))}
        if self.bias:
            self.params["bias"] = _uniform(rng, bound, (self.out_channels,))
        return out

    def _cols(self, x):
        """Columns (B*Ho*Wo, C*kh*kw) of x: one strided copy per kernel tap, from a padded
        copy of x. (A compiled loop was tried: numpy's strided copies were as fast.)"""
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        _, _, ho, wo = self.output_shape(x.shape)
        xp = _pad(x, ph, pw)
        cols = np.empty((b, ho, wo, c, kh, kw), dtype=x.dtype)
        for r in range(kh):
            for s in range(kw):
                cols[:, :, :, :, r, s] = _window(xp, r, s, ho, wo, sh, sw).transpose(0, 2, 3, 1)
        return cols.reshape(b * ho * wo, c * kh * kw)

    def forward(self, x):
        b = x.shape[0]
        _, o, ho, wo = self.output_shape(x.shape)
        cols = self._cols(x)
        ym = cols @ self.params["weight"].reshape(o, -1).T
        del cols
        y = np.empty((b, o, ho, wo), dtype=x.dtype)
        ym = ym.reshape(b, ho, wo, o).transpose(0, 3, 1, 2)
        if self.bias:
            np.add(ym, self.params["bias"][:, None, None], out=y)
        else:
            y[...] = ym
        return y, x

    def backward(self, grad_y, saved, need_input_grad=True):
        x = saved
        b = x.shape[0]
        _, o, ho, wo = grad_y.shape
        gm = np.ascontiguousarray(grad_y.transpose(0, 2, 3, 1)).reshape(b * ho * wo, o)
        grads = {}
        cols = self._cols(x)
        grads["weight"] = (gm.T @ cols).reshape(self.params["weight"].shape)
        del cols
        if self.bias:
            grads["bias"] = gm.sum(axis=0)
        if not need_input_grad:
            return None, grads
        gcols = gm @ self.params["weight"].reshape(o, -1)
        del gm
        return self._col2im(gcols, x.shape), grads

    def _col2im(self, gcols, shape):
        """The input gradient from the columns' gradient: one strided add per kernel tap
        into a padded buffer, then crop."""
        b, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        _, _, ho, wo = self.output_shape(shape)
        gcols = gcols.reshape(b, ho, wo, c, kh, kw)
        gxp = np.zeros((b, c, h + 2 * ph, w + 2 * pw), dtype=gcols.dtype)
        for r in range(kh):
            for s in range(kw):
                _window(gxp, r, s, ho, wo, sh, sw)[...] += gcols[:, :, :, :, r, s].transpose(0, 3, 1, 2)
        del gcols
        if ph or pw:
            gxp = np.ascontiguousarray(gxp[:, :, ph: ph + h, pw: pw + w])
        return gxp

    def flops(self, in_shape):
        m, k, n = self.gemms(in_shape)["forward"][0]
        mm = 2 * m * k * n
        bias = m * n if self.bias else 0
        return mm + bias, 2 * mm + bias, mm + bias

    def gemms(self, in_shape):
        b, c, _, _ = in_shape
        _, o, ho, wo = self.output_shape(in_shape)
        m, k = b * ho * wo, c * self.kernel[0] * self.kernel[1]
        return {"forward": [(m, k, o)], "backward": [(o, m, k)], "backward_input": [(m, o, k)]}

    def workspace(self, in_shape, itemsize, need_input_grad=True):
        b, c, h, w = in_shape
        _, o, ho, wo = self.output_shape(in_shape)
        ph, pw = self.padding
        m, k = b * ho * wo, c * self.kernel[0] * self.kernel[1]
        cols, ym = m * k * itemsize, m * o * itemsize  # ym: the GEMM output (and gm in backward)
        out = ym  # y has as many elements as the GEMM output
        gx = b * c * h * w * itemsize
        # The tracker counts workspace + output (y, or the input gradient) at once, so each
        # figure is the op's peak of transient buffers + output, less the output.
        padded = b * c * (h + 2 * ph) * (w + 2 * pw) * itemsize if (ph or pw) else 0
        forward = max(padded + cols, cols + ym, ym + out) - out
        gxp = b * c * (h + 2 * ph) * (w + 2 * pw) * itemsize
        crop = gx if (ph or pw) else 0
        if need_input_grad:  # gm + (xp + cols), then gm + gcols, then gcols + gxp (+ its crop)
            backward = max(ym + padded + cols, ym + cols, cols + gxp + crop) - gx
        else:
            backward = ym + padded + cols
        return max(forward, 0), max(backward, 0)

    def describe(self):
        return (f"conv2d({self.out_channels}, k={self.kernel[0]}x{self.kernel[1]}, "
                f"s={self.stride[0]}, p={self.padding[0]})")


class MaxPool2d(Layer):
    """Max over kh x kw windows; ties pick the first maximum in row-major window order
    (as PyTorch). backward finds the maxima again from the input."""

    kind = "maxpool2d"

    def __init__(self, kernel=2, stride=None, padding=0):
        super().__init__()
        self.kernel = _pair(kernel, "kernel")
        self.stride = _pair(stride, "stride") if stride is not None else self.kernel
        if padding:
            raise ValueError("maxpool2d: padding is not supported")

    def output_shape(self, in_shape):
        if len(in_shape) != 4:
            raise ValueError(f"maxpool2d needs an NCHW input, got shape {in_shape}")
        b, c, h, w = in_shape
        ho, wo = _out(h, self.kernel[0], self.stride[0], 0), _out(w, self.kernel[1], self.stride[1], 0)
        if ho < 1 or wo < 1:
            raise ValueError(f"maxpool2d kernel {self.kernel} is larger than the {h}x{w} input")
        return (b, c, ho, wo)

    def _index_dtype(self):
        """int16 holds a window position up to 32767 taps; a larger (global) pool needs int32."""
        return np.dtype(np.int16 if self.kernel[0] * self.kernel[1] <= 2**15 else np.int32)

    def _argmax(self, x):
        """(max values, index of the first maximum in each window as r*kw + s)."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        _, _, ho, wo = self.output_shape(x.shape)
        best = np.array(_window(x, 0, 0, ho, wo, sh, sw))
        index = np.zeros(best.shape, dtype=self._index_dtype())
        for r in range(kh):
            for s in range(kw):
                if r == 0 and s == 0:
                    continue
                tap = _window(x, r, s, ho, wo, sh, sw)
                larger = tap > best
                np.copyto(best, tap, where=larger)
                index[larger] = r * kw + s
        return best, index

    def forward(self, x):
        return self._argmax(x)[0], x

    def backward(self, grad_y, saved, need_input_grad=True):
        if not need_input_grad:
            return None, {}
        x = saved
        (kh, kw), (sh, sw) = self.kernel, self.stride
        _, _, ho, wo = grad_y.shape
        _, index = self._argmax(x)
        grad_x = np.zeros_like(x)
        zero = grad_y.dtype.type(0)
        for r in range(kh):
            for s in range(kw):
                _window(grad_x, r, s, ho, wo, sh, sw)[...] += np.where(index == r * kw + s, grad_y, zero)
        return grad_x, {}

    def flops(self, in_shape):
        n = math.prod(self.output_shape(in_shape)) * self.kernel[0] * self.kernel[1]
        return n, 2 * n, 0

    def workspace(self, in_shape, itemsize, need_input_grad=True):
        n = math.prod(self.output_shape(in_shape))
        # forward: the index and one boolean mask; backward adds the recomputed maxima
        # and a masked gradient per tap
        index = self._index_dtype().itemsize
        return n * (index + 1), n * (itemsize + index + 1 + itemsize)

    def describe(self):
        return f"maxpool2d({self.kernel[0]}x{self.kernel[1]}, s={self.stride[0]})"


class Flatten(Layer):
    """(batch, ...) -> (batch, features). The output is a copy so that it is a buffer of
    its own, which the memory model counts like every other layer output."""

    kind = "flatten"
    backward_reads = "nothing"

    def output_shape(self, in_shape):
        return (in_shape[0], math.prod(in_shape[1:]))

    def saved_of(self, x):
        return x.shape

    def saved_of_shape(self, in_shape):
        return tuple(in_shape)

    def forward(self, x):
        return x.reshape(x.shape[0], -1).copy(), x.shape

    def backward(self, grad_y, saved, need_input_grad=True):
        if not need_input_grad:
            return None, {}
        return grad_y.reshape(saved).copy(), {}

    def flops(self, in_shape):
        return 0, 0, 0


LAYER_TYPES = {"linear": Linear, "relu": ReLU, "gelu": GELU, "conv2d": Conv2d,
               "maxpool2d": MaxPool2d, "flatten": Flatten}
