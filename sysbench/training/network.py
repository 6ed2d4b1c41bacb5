"""A network is a chain (Sequential) of layers plus a loss, built with a fixed batch size.

Activations are numbered a_0 (the step's input) .. a_n (the last layer's output); layer i
(0-based) maps a_i to a_{i+1}. Forward and backward run one layer at a time
(forward_layer / backward_layer), so that a schedule decides what is kept between them.

Layer specs (a suite's `layers` list, or Python): a string for a layer without settings
("relu", "gelu", "flatten", "maxpool2d"), "linear:OUT", or a table
{type = "conv2d", out_channels = 32, kernel = 3, stride = 1, padding = 1}.
"""
from __future__ import annotations

import math

import numpy as np

from .layers import LAYER_TYPES, Conv2d, Flatten, Layer, Linear, MaxPool2d
from .losses import LOSSES

ACTIVATIONS = {"relu", "gelu"}


class Network:
    def __init__(self, layers: list[Layer], input_shape: tuple, loss: str = "cross_entropy",
                 seed: int = 0, dtype=np.float32, init: bool = True):
        if not layers:
            raise ValueError("a network needs at least one layer")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; one of {', '.join(LOSSES)}")
        self.layers = layers
        self.loss = LOSSES[loss]()
        self.dtype = np.dtype(dtype)
        self.seed = seed
        shapes = [tuple(input_shape)]
        for i, layer in enumerate(layers):
            try:
                # one generator per layer: a layer's weights do not depend on the others
                rng = np.random.default_rng([seed, i]) if init else None
                shapes.append(layer.build(shapes[-1], rng))
            except ValueError as exc:
                raise ValueError(f"layer {i + 1} ({layer.describe()}): {exc}") from None
        if self.dtype != np.float32:
            for layer in layers:
                layer.astype(self.dtype)
        self.shapes = shapes

    @property
    def n(self) -> int:
        return len(self.layers)

    @property
    def batch(self) -> int:
        return self.shapes[0][0]

    def forward_layer(self, i: int, x: np.ndarray):
        """(a_{i+1}, saved) from a_i."""
        return self.layers[i].forward(x)

    def backward_layer(self, i: int, grad_y: np.ndarray, saved, need_input_grad: bool = True):
        """(d loss / d a_i or None, weight grads of layer i) from d loss / d a_{i+1}."""
        return self.layers[i].backward(grad_y, saved, need_input_grad)

    def loss_and_grad(self, output: np.ndarray, target: np.ndarray):
        """(loss, d loss / d a_n)."""
        return self.loss.forward_backward(output, target)

    # sizes and costs, for the schedules and the model
    def activation_bytes(self, k: int) -> int:
        return math.prod(self.shapes[k]) * self.dtype.itemsize

    def param_bytes(self) -> int:
        return sum(p.nbytes for layer in self.layers for p in layer.params.values())

    def param_count(self) -> int:
        return sum(p.size for layer in self.layers for p in layer.params.values())

    def forward_flops(self, i: int) -> int:
        return self.layers[i].flops(self.shapes[i])[0]

    def backward_flops(self, i: int) -> int:
        return self.layers[i].flops(self.shapes[i])[2 if i == 0 else 1]

    def workspace(self, i: int) -> tuple[int, int]:
        return self.layers[i].workspace(self.shapes[i], self.dtype.itemsize, need_input_grad=i > 0)

    def loss_workspace(self) -> int:
        return self.loss.workspace(self.shapes[-1], self.dtype.itemsize)

    def make_batch(self, seed: int = 0):
        """A deterministic input batch and target for this network's loss."""
        rng = np.random.default_rng([seed, 1 << 20])
        x = rng.standard_normal(self.shapes[0]).astype(self.dtype)
        out = self.shapes[-1]
        if self.loss.kind == "cross_entropy":
            target = rng.integers(0, out[1], size=out[0])
        else:
            target = rng.standard_normal(out).astype(self.dtype)
        return x, target

    def copy_params(self) -> list[dict]:
        return [{k: v.copy() for k, v in layer.params.items()} for layer in self.layers]

    def set_params(self, params: list[dict]) -> None:
        for layer, p in zip(self.layers, params):
            for k, v in p.items():
                layer.params[k][...] = v

    def describe(self) -> list[str]:
        return [f"{layer.describe()} -> {self.shapes[i + 1]}" for i, layer in enumerate(self.layers)]


def layer_from_spec(spec) -> Layer:
    """One layer from a spec string or table (see the module docstring)."""
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        name = name.strip().lower()
        if name == "linear":
            if not arg.strip().isdigit() or int(arg) < 1:
                raise ValueError(f"{spec!r}: write 'linear:OUT' with a positive OUT")
            return Linear(int(arg))
        if name not in LAYER_TYPES or arg:
            raise ValueError(f"{spec!r} is not a layer; one of {', '.join(LAYER_TYPES)} (or 'linear:OUT')")
        if name == "conv2d":
            raise ValueError("conv2d needs a table: {type = \"conv2d\", out_channels = N, kernel = K}")
        return LAYER_TYPES[name]()
    if isinstance(spec, dict):
        settings = dict(spec)
        name = str(settings.pop("type", "")).lower()
        if name not in LAYER_TYPES:
            raise ValueError(f"{spec!r}: 'type' must be one of {', '.join(LAYER_TYPES)}")
        if name == "linear" and "out" in settings:
            settings["out_features"] = settings.pop("out")
        try:
            return LAYER_TYPES[name](**settings)
        except TypeError as exc:
            raise ValueError(f"{spec!r}: {exc}") from None
    raise ValueError(f"a layer spec is a string or a table, got {spec!r}")


def from_specs(specs: list, input_shape: tuple, loss: str = "cross_entropy", seed: int = 0,
               dtype=np.float32, init: bool = True) -> Network:
    layers = []
    for i, spec in enumerate(specs):
        try:
            layers.append(layer_from_spec(spec))
        except ValueError as exc:
            raise ValueError(f"layer {i + 1}: {exc}") from None
    return Network(layers, input_shape, loss, seed, dtype, init)


def _activation(name: str) -> Layer:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(sorted(ACTIVATIONS))}, got {name!r}")
    return LAYER_TYPES[name]()


def mlp(layers: int = 16, width: int = 2048, batch: int = 256, in_features: int | None = None,
        activation: str = "relu", loss: str = "cross_entropy", seed: int = 0, dtype=np.float32,
        init: bool = True) -> Network:
    """`layers` x (Linear width -> width + activation); the first Linear takes in_features
    (default width). The last block's output (width logits) feeds the loss."""
    chain = []
    for _ in range(layers):
        chain += [Linear(width), _activation(activation)]
    return Network(chain, (batch, in_features or width), loss, seed, dtype, init)


def cnn(channels=(32, 32, 64, 64, 128, 128), image: int = 32, batch: int = 32, in_channels: int = 3,
        classes: int = 10, pool_every: int = 2, activation: str = "relu", loss: str = "cross_entropy",
        seed: int = 0, dtype=np.float32, init: bool = True) -> Network:
    """A small CNN: conv3x3 (padding 1) + activation per entry of `channels`, a 2x2 max-pool
    after every `pool_every` convolutions (while the image is at least 2x2), then flatten and
    a Linear to `classes`."""
    chain: list[Layer] = []
    size = image
    for i, c in enumerate(channels):
        chain += [Conv2d(c, kernel=3, padding=1), _activation(activation)]
        if pool_every and (i + 1) % pool_every == 0 and size >= 2:
            chain.append(MaxPool2d(2))
            size //= 2
    chain += [Flatten(), Linear(classes)]
    return Network(chain, (batch, in_channels, image, image), loss, seed, dtype, init)


def build(params: dict, seed: int = 0, init: bool = True) -> Network:
    """A network from suite keys: model ("mlp" | "cnn"), layers (a depth) or specs (a list
    of layer specs, with "input" the per-sample input shape), width, batch, image,
    in_channels, channels, classes, activation, loss. init=False: shapes only (no weights)."""
    model = params.get("model", "mlp")
    batch = params.get("batch", 32)
    common = {"loss": params.get("loss", "cross_entropy"), "seed": seed, "init": init}
    layers = params.get("layers")
    if isinstance(params.get("specs"), list):
        layers = params["specs"]
    if isinstance(layers, list):
        shape = params.get("input")
        if not shape:
            raise ValueError("a list of layer specs needs 'input', the per-sample input shape, e.g. [3, 32, 32]")
        return from_specs(layers, (batch, *shape), **common)
    if model == "mlp":
        return mlp(layers if layers is not None else 16, params.get("width", 2048), batch,
                   params.get("in_features"), params.get("activation", "relu"), **common)
    if model == "cnn":
        channels = params.get("channels") or [32, 32, 64, 64, 128, 128]
        if layers is not None:  # a depth: repeat/trim the channel list
            channels = [channels[min(i, len(channels) - 1)] for i in range(layers)]
        return cnn(channels, params.get("image", 32), batch, params.get("in_channels", 3),
                   params.get("classes", 10), 2, params.get("activation", "relu"), **common)
    raise ValueError(f"model must be mlp or cnn (or give 'layers' as a list), got {model!r}")
