"""Running a program: one real training step (or a dry run with sizes only) that follows a
schedule's F / D / B operations, with every buffer counted by one MemoryTracker."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .chain import backward_layers, chain_of, stages_of
from .buffers import BufferPool
from .memory import MemoryTracker
from .optim import SGD
from .schedules import Schedule, parse_schedule
from .solvers import program_for

@dataclass
class StepResult:
    loss: float
    grads: list                    # per layer: {param name: gradient}, but `unstored`'s
    tracker: MemoryTracker
    layer_forwards: int
    forward_flops: int
    seconds: float = 0.0
    events: list = field(default_factory=list)
    unstored: set = field(default_factory=set)  # layers whose backward stepped their fuses_sgd
    # parameter without storing its gradient (so grads[i] has no entry for it)


class _Placeholder:
    """Stands for a buffer in a dry run: only its size."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def dry_run(net, ops: list, optimizer: bool = True) -> MemoryTracker:
    """The tracker a real run of `ops` fills (peaks, series), without computing anything.
    The network may be built without weights (network.build(..., init=False))."""
    return run_program(net, None, None, ops, optimizer=True if optimizer else None, dry=True).tracker


def run_program(net, x: np.ndarray, target: np.ndarray, ops: list, tracker: MemoryTracker | None = None,
                optimizer=None, dry: bool = False, pool: BufferPool | None = None) -> StepResult:
    """One training step following `ops` (over the chain's stages, chain.stages_of); every
    buffer goes through `tracker`, in the order chain.forward_trace / backward_trace
    assume. With an optimizer, each layer's weights are updated right after its backward
    (while they and its gradients are in cache; no later operation of a program reads
    them), and the weight gradients freed at the end. pool: reuse the buffers of earlier
    steps (the same numbers; the previous step's result, its gradients, is overwritten).
    dry: sizes only (see dry_run)."""
    if pool is not None and not dry:
        pool.new_step()
    else:
        pool = None
    if tracker is None:
        tracker = MemoryTracker()
        tracker.add("params", net.param_bytes(), "param")
    if dry:
        x = _Placeholder(net.activation_bytes(0))
    spans = stages_of(net)
    n = len(spans)
    N = n + 1
    held = {0: x}
    handles = {0: tracker.hold("a0", x)}
    d = None
    d_handle = None
    loss = None
    grads: list = [None] * net.n
    grad_handles = []
    forwards = flops = 0
    eager = optimizer is not None and _forwards_end_before_backward(ops)
    # eager plain SGD: a layer that can steps its weights inside its backward (in its
    # weight-gradient GEMM, or in the pass of the input gradient that reads them); `fused`
    # names the layers that did
    sgd_lr = optimizer.fused_lr() if eager and not dry and hasattr(optimizer, "fused_lr") else None
    # a dry run's optimizer is a workload's plain SGD: fused where a real one would be
    fuses = eager if dry else sgd_lr is not None
    fused: set = set()
    for op, k in ops:
        if op == "F":
            held[k], handles[k] = _forward_stage(net, spans[k - 1], held[k - 1], k, tracker, dry, pool)
            forwards += spans[k - 1][1] - spans[k - 1][0]
            flops += sum(net.forward_flops(i) for i in range(*spans[k - 1]))
        elif op == "D":
            array = held.pop(k)
            tracker.remove(handles.pop(k))
            if pool is not None and k > 0:  # a_0 is the caller's
                pool.give(array)
            del array
        elif k == N:
            ws = tracker.add("ws loss", net.loss_workspace(), "workspace")
            if dry:
                loss, d = 0.0, _Placeholder(net.activation_bytes(net.n))
            else:
                loss, d = net.loss_and_grad(held[n], target)
            d_handle = tracker.hold(f"d{n}", d, "gradient")
            tracker.remove(ws)
            d, d_handle = _backward(net, spans, k, held[n], d, d_handle, tracker, grads, grad_handles, dry, pool,
                                    sgd_lr, fused, fuses)
        else:
            d, d_handle = _backward(net, spans, k, held[k - 1], d, d_handle, tracker, grads, grad_handles, dry,
                                    pool, sgd_lr, fused, fuses)
            if eager:
                for i in backward_layers(net, spans, k):
                    if net.layers[i].params:
                        done = (net.layers[i].fuses_sgd,) if i in fused else ()
                        _update(net, i, grads, optimizer, tracker, dry, done)
    if held or d is not None:
        raise RuntimeError(f"schedule left activations {sorted(held)} held")  # programs are checked
    if optimizer is not None:
        if not eager:
            for i in range(net.n):
                _update(net, i, grads, optimizer, tracker, dry)
        for h in grad_handles:
            tracker.remove(h)
    unstored = {i for i in fused if net.layers[i].fuses_sgd not in grads[i]}
    return StepResult(loss, grads, tracker, forwards, flops, unstored=unstored)


def _forwards_end_before_backward(ops) -> bool:
    """True when no F(k) follows B(k): a stage's weights are not read after its backward."""
    done = set()
    for op, k in ops:
        if op == "B":
            done.add(k)
        elif op == "F" and k in done:
            return False
    return True


def _update(net, i, grads, optimizer, tracker, dry, done=()):
    """The optimizer's step for layer i but its parameters in `done` (stepped in its
    backward); the step's workspace is counted while it runs either way."""
    layer = net.layers[i]
    if dry:  # the plain SGD of a workload's step
        ws = tracker.add("ws sgd", SGD().workspace([layer]), "workspace")
    else:
        ws = tracker.add("ws sgd", optimizer.workspace([layer]), "workspace")
        optimizer.step_layer(i, layer, grads[i], done)
    tracker.remove(ws)


def _fuses_relu(net, i: int, j: int) -> bool:
    """Whether layer i makes the element-wise pass of the ReLU j, which follows it in the
    forward or precedes it in the backward, on its own output (Layer.fuses_relu)."""
    return net.layers[i].fuses_relu and net.layers[j].kind == "relu"


def _forward_stage(net, span, x, k, tracker, dry, pool):
    """a_k from a_{k-1} through the stage's layers; the tensors between them are transient
    (an in-place layer after the first writes over its input, or, for a ReLU after a layer
    that fuses_relu, is applied by that layer). Returns (a_k, its handle)."""
    first, end = span
    y, handle = x, None
    fused_relu = None  # the ReLU the previous layer applied
    for i in range(first, end):
        layer = net.layers[i]
        ws = tracker.add(f"ws F{k}", net.workspace(i)[0], "workspace")
        if i > first and layer.inplace:
            if not dry and i != fused_relu:
                y = layer.forward_inplace(y)
            tracker.remove(ws)
            continue
        extra = {}
        if i + 1 < end and net.layers[i + 1].inplace and _fuses_relu(net, i, i + 1):
            extra["relu"], fused_relu = True, i + 1
        if dry:
            out = _Placeholder(net.activation_bytes(i + 1))
        elif pool is not None and layer.accepts_out:
            out = layer.forward(y, out=pool.take_transposed(net.shapes[i + 1], net.dtype), **extra)[0]
        else:
            out = layer.forward(y, **extra)[0]  # saved: rebuilt at B
        new = tracker.hold(f"a{k}" if i == end - 1 else f"a{k}:{i - first}", out)
        tracker.remove(ws)
        if handle is not None:
            tracker.remove(handle)
            if pool is not None:
                pool.give(y)  # a transient between the stage's layers
        y, handle = out, new
        del out
    return y, handle


def _backward(net, spans, k, x, d, d_handle, tracker, grads, grad_handles, dry, pool, sgd_lr=None, fused_sgd=None,
              fuses=False):
    """The layers of B(k) (chain.backward_layers) from the gradient d: stage k's first layer
    reads a_{k-1} (x), as does stage k-1's tail, which rewrites the gradient in place; the
    layers between read nothing. sgd_lr: a layer with fuses_sgd takes that SGD step itself,
    and its index goes into `fused_sgd`; where the layer steps_unstored, its weight gradient
    is not stored (nor, in a dry run with `fuses`, counted). Where stage k - 1's tail is a
    ReLU and stage k's first layer, which runs just before it, fuses_relu, that layer's
    backward makes the ReLU's pass (both read a_{k-1}). Returns (d_{k-1} or None, its
    handle)."""
    n = len(spans)
    first = spans[k - 1][0] if k <= n else None
    order = backward_layers(net, spans, k)
    tail = spans[k - 2][1] - 1 if k >= 2 else None
    fused_relu = tail if order[-2:] == [first, tail] and _fuses_relu(net, first, tail) else None
    for i in order:
        layer = net.layers[i]
        ws = tracker.add(f"ws B{k}", net.workspace(i)[1], "workspace")
        if dry:
            saved = None
        elif i == first or (k >= 2 and i == spans[k - 2][1] - 1):  # reads a_{k-1}
            saved = layer.saved_of(x)
        else:
            saved = layer.saved_of_shape(net.shapes[i])
        if i > 0 and layer.inplace:
            # (a fused ReLU's mask is still counted as its workspace: a conservative bound)
            if not dry and i != fused_relu:
                d = layer.backward_inplace(d, saved)
            grads[i] = {}
        else:
            if dry:
                d_in = _Placeholder(net.activation_bytes(i)) if i > 0 else None
                skip = (layer.fuses_sgd if fuses and layer.fuses_sgd
                        and layer.steps_unstored(net.shapes[i], net.dtype) else None)
                grads[i] = {name: _Placeholder(p.nbytes) for name, p in layer.params.items() if name != skip}
            else:
                extra = {}
                if sgd_lr is not None and layer.fuses_sgd:
                    extra["sgd_lr"] = sgd_lr
                    fused_sgd.add(i)
                if i == first and fused_relu is not None:
                    extra["relu_input"] = True
                if pool is not None and layer.accepts_out:
                    extra["out"] = pool.take_transposed(net.shapes[i], net.dtype) if i > 0 else None
                    extra["weight_out"] = pool.lend(pool.take(layer.params["weight"].shape, net.dtype))
                d_in, grads[i] = layer.backward(d, saved, need_input_grad=i > 0, **extra)
                del extra
            new_handle = tracker.hold(f"d{i}", d_in, "gradient") if d_in is not None else None
            for name, g in grads[i].items():
                grad_handles.append(tracker.hold(f"g{i + 1}.{name}", g, "weight_grad"))
            if pool is not None:
                pool.give(d)
            del d  # before the tracker frees it, so the two agree
            tracker.remove(d_handle)
            d, d_handle = d_in, new_handle
            del d_in
        del saved
        tracker.remove(ws)
    return d, d_handle


def train_step(net, x, target, schedule: Schedule | str, optimizer=None, tracker: MemoryTracker | None = None,
               pool: BufferPool | None = None):
    """One step of `schedule` (a Schedule or its text)."""
    if isinstance(schedule, str):
        schedule = parse_schedule(schedule)
    ops = program_for(chain_of(net), schedule)
    start = time.perf_counter()
    result = run_program(net, x, target, ops, tracker, optimizer, pool=pool)
    result.seconds = time.perf_counter() - start
    return result
