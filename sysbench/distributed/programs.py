"""What the ranks train, as layer-by-layer programs for the executor (see exchange.py).

NetProgram wraps a network of the shared training engine (sysbench.training): its
parameterised layers are the schedule's layers, each grouped with the parameter-free layers
(activations, pooling) that follow it. Gradients are written into the flat buffer that the
all-reduces read; the update is the engine's SGD on the reduced gradient times 1/ranks.

BufferProgram is plain float32 buffers with a deterministic gradient per (rank, step,
layer) and a burn of compute per layer: the exchange without a network, for tests.

`reference_weights` trains the same network in one process on the concatenated batch,
gradient-accumulated shard by shard in rank order, which is what the all-reduce sums.
"""
from __future__ import annotations

import numpy as np

SHARD_SEED = 1 << 21


def global_batch(shape_per_sample: tuple, classes: int, batch: int, seed: int, step: int, loss: str):
    """The step's concatenated batch (every rank makes it and takes its own rows)."""
    rng = np.random.default_rng([seed, SHARD_SEED, step])
    x = rng.standard_normal((batch, *shape_per_sample)).astype(np.float32)
    if loss == "cross_entropy":
        target = rng.integers(0, classes, size=batch)
    else:
        target = rng.standard_normal((batch, classes)).astype(np.float32)
    return x, target


def build_network(spec: dict, local_batch: int, init: bool = True):
    from ..training import network
    keys = dict(spec["net"], batch=local_batch)
    return network.build(keys, seed=spec.get("seed", 0), init=init)


class NetProgram:
    def __init__(self, spec: dict, rank: int, ranks: int, init: bool = True):
        """init=False: shapes, sizes and FLOPs only (no weights drawn: a model needs no numbers)."""
        from ..training import optim
        self.ranks, self.rank = ranks, rank
        self.global_batch_size = spec["batch"]
        self.local = self.global_batch_size // ranks
        self.net = build_network(spec, self.local, init)
        self.seed, self.loss_kind = spec.get("seed", 0), self.net.loss.kind
        self.sgd = optim.SGD(lr=spec.get("lr", 0.01))
        # schedule layer l = net layers groups[l]: a parameterised layer and the free ones after it
        groups, current = [], []
        for i, layer in enumerate(self.net.layers):
            if layer.params and current and any(self.net.layers[j].params for j in current):
                groups.append(current)
                current = []
            current.append(i)
        groups.append(current)
        if not any(self.net.layers[j].params for j in groups[0]):
            raise ValueError("the network has no parameters to train")
        self.groups = groups
        self.layer_sizes = [sum(p.size for j in g for p in self.net.layers[j].params.values()) for g in groups]
        self.step_offset = 0
        self.acts: dict = {}

    def flops(self) -> tuple[list, list]:
        fwd = [sum(self.net.forward_flops(j) for j in g) for g in self.groups]
        bwd = [sum(self.net.backward_flops(j) for j in g) for g in self.groups]
        return fwd, bwd

    def start_step(self, step: int):
        shape, out = self.net.shapes[0][1:], self.net.shapes[-1][1]
        x, target = global_batch(shape, out, self.global_batch_size, self.seed, self.step_offset + step,
                                 self.loss_kind)
        rows = slice(self.rank * self.local, (self.rank + 1) * self.local)
        self.x, self.target = np.ascontiguousarray(x[rows]), target[rows]
        self.acts = {0: self.x}
        self.saved = {}

    def forward(self, l: int):
        for j in self.groups[l]:
            y, self.saved[j] = self.net.forward_layer(j, self.acts[j])
            self.acts[j + 1] = y

    def backward(self, l: int, grad_out: np.ndarray):
        if l == len(self.groups) - 1:
            self.loss, self.grad = self.net.loss_and_grad(self.acts[self.net.n], self.target)
        pos = 0
        parts = []
        for j in reversed(self.groups[l]):
            self.grad, g = self.net.backward_layer(j, self.grad, self.saved[j], need_input_grad=j > 0)
            parts.append((j, g))
        for j, g in reversed(parts):          # flat layout: layer order, then the layer's param order
            for name in self.net.layers[j].params:
                flat = g[name].ravel()
                grad_out[pos:pos + flat.size] = flat
                pos += flat.size

    def update(self, l: int, reduced: np.ndarray, scale: float):
        apply_update(self.sgd, self.net, self.groups[l], reduced, scale)

    def weights(self) -> np.ndarray:
        return np.concatenate([p.ravel() for layer in self.net.layers for p in layer.params.values()])


def apply_update(sgd, net, group, reduced: np.ndarray, scale: float):
    """SGD on the layers of `group` with gradient `reduced * scale` (one flat slice)."""
    g = reduced * np.float32(scale)
    pos = 0
    for j in group:
        layer = net.layers[j]
        grads = {}
        for name, p in layer.params.items():
            grads[name] = g[pos:pos + p.size].reshape(p.shape)
            pos += p.size
        sgd.step([layer], [grads])


def _gradients(p: "NetProgram", step: int, offsets: np.ndarray, beat, what: str, where: str = "") -> np.ndarray:
    """One step's forward and backward of program `p`; its flat weight gradient."""
    flat = np.empty(offsets[-1], dtype=np.float32)
    p.start_step(step)
    for l in range(len(offsets) - 1):
        p.forward(l)
        beat(step, f"{what} forward of layer {l}{where}")
    for l in reversed(range(len(offsets) - 1)):
        p.backward(l, flat[offsets[l]:offsets[l + 1]])
        beat(step, f"{what} backward of layer {l}{where}")
    return flat


def reference_weights(spec: dict, ranks: int, steps: int, beat=None) -> np.ndarray:
    """Single-process training on the concatenated batch, shard gradients summed in rank order.
    `beat(step, phase)` is called after every layer computation (a watchdog's heartbeat)."""
    beat = beat or (lambda step, phase: None)
    programs = [NetProgram(spec, r, ranks) for r in range(ranks)]
    main = programs[0]
    L = len(main.layer_sizes)
    offsets = np.concatenate([[0], np.cumsum(main.layer_sizes)]).astype(int)
    for p in programs[1:]:
        p.net = main.net      # one set of weights; each program only picks its shard
    for step in range(steps):
        total = None
        for p in programs:
            flat = _gradients(p, step, offsets, beat, "the reference's", f" (shard {p.rank})")
            total = flat if total is None else total + flat   # rank order
        for l in range(L):
            main.update(l, total[offsets[l]:offsets[l + 1]], 1.0 / ranks)
    return main.weights()


def full_batch_weights(spec: dict, steps: int, beat=None) -> np.ndarray:
    """Plain single-process training on the whole batch at once (one GEMM per layer)."""
    beat = beat or (lambda step, phase: None)
    p = NetProgram(spec, 0, 1)
    L = len(p.layer_sizes)
    offsets = np.concatenate([[0], np.cumsum(p.layer_sizes)]).astype(int)
    for step in range(steps):
        flat = _gradients(p, step, offsets, beat, "the whole-batch")
        for l in range(L):
            p.update(l, flat[offsets[l]:offsets[l + 1]], 1.0)
    return p.weights()


class BufferProgram:
    """Layers of plain float32 buffers: gradient of (rank, step, layer) is deterministic,
    weights w -= lr * scale * reduced. `burn` elements of work per layer make time pass."""

    def __init__(self, spec: dict, rank: int, ranks: int):
        self.layer_sizes = list(spec["layer_sizes"])
        self.rank, self.lr = rank, spec.get("lr", 0.01)
        self.weights_ = [np.zeros(s, dtype=np.float32) for s in self.layer_sizes]
        self.burn = np.ones(spec.get("burn", 0) or 1, dtype=np.float32)
        self.step_offset = 0

    def start_step(self, step):
        self.step = self.step_offset + step

    def forward(self, l):
        np.sqrt(self.burn, out=self.burn)

    def backward(self, l, grad_out):
        np.sqrt(self.burn, out=self.burn)
        grad_out[:] = buffer_gradient(self.rank, self.step, l, grad_out.size)

    def update(self, l, reduced, scale):
        self.weights_[l] -= np.float32(self.lr) * (reduced * np.float32(scale))

    def weights(self):
        return np.concatenate(self.weights_)


def buffer_gradient(rank: int, step: int, layer: int, size: int) -> np.ndarray:
    """Small integers (exact in float32 under any summation order) unique to (rank, step, layer)."""
    i = np.arange(size, dtype=np.int64)
    return ((i * 7 + rank * 131 + step * 17 + layer * 5) % 64).astype(np.float32)
