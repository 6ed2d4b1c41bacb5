"""Running a program: one real training step (or a dry run with sizes only) that follows a
schedule's F / D / B operations, with every buffer counted by one MemoryTracker."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .chain import chain_of
from .memory import MemoryTracker
from .schedules import Schedule, parse_schedule
from .solvers import program_for

@dataclass
class StepResult:
    loss: float
    grads: list                    # per layer: {param name: gradient}
    tracker: MemoryTracker
    layer_forwards: int
    forward_flops: int
    seconds: float = 0.0
    events: list = field(default_factory=list)


class _Placeholder:
    """Stands for a buffer in a dry run: only its size."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def dry_run(net, ops: list, optimizer: bool = True) -> MemoryTracker:
    """The tracker a real run of `ops` fills (peaks, series), without computing anything.
    The network may be built without weights (network.build(..., init=False))."""
    return run_program(net, None, None, ops, optimizer=True if optimizer else None, dry=True).tracker


def run_program(net, x: np.ndarray, target: np.ndarray, ops: list, tracker: MemoryTracker | None = None,
                optimizer=None, dry: bool = False) -> StepResult:
    """One training step following `ops`; every buffer goes through `tracker`. With an
    optimizer, the weights are updated and the weight gradients freed at the end.
    dry: sizes only (see dry_run)."""
    if tracker is None:
        tracker = MemoryTracker()
        tracker.add("params", net.param_bytes(), "param")
    if dry:
        x = _Placeholder(net.activation_bytes(0))
    n = net.n
    N = n + 1
    held = {0: x}
    handles = {0: tracker.hold("a0", x)}
    d = None
    d_handle = None
    loss = None
    grads: list = [None] * n
    grad_handles = []
    forwards = flops = 0
    for op, k in ops:
        if op == "F":
            ws = tracker.add(f"ws F{k}", net.workspace(k - 1)[0], "workspace")
            if dry:
                y = _Placeholder(net.activation_bytes(k))
            else:
                y = net.forward_layer(k - 1, held[k - 1])[0]  # saved is rebuilt at B(k)
            held[k] = y
            handles[k] = tracker.hold(f"a{k}", y)
            del y  # held[k] is its only reference: D(k) frees it
            tracker.remove(ws)
            forwards += 1
            flops += net.forward_flops(k - 1)
        elif op == "D":
            del held[k]
            tracker.remove(handles.pop(k))
        elif k == N:
            ws = tracker.add("ws loss", net.loss_workspace(), "workspace")
            if dry:
                loss, d = 0.0, _Placeholder(net.activation_bytes(n))
            else:
                loss, d = net.loss_and_grad(held[n], target)
            d_handle = tracker.hold(f"d{n}", d, "gradient")
            tracker.remove(ws)
        else:
            layer = net.layers[k - 1]
            ws = tracker.add(f"ws B{k}", net.workspace(k - 1)[1], "workspace")
            if dry:
                d_in = _Placeholder(net.activation_bytes(k - 1)) if k > 1 else None
                grads[k - 1] = {name: _Placeholder(p.nbytes) for name, p in layer.params.items()}
            else:
                d_in, grads[k - 1] = net.backward_layer(k - 1, d, layer.saved_of(held[k - 1]),
                                                        need_input_grad=k > 1)
            new_handle = tracker.hold(f"d{k - 1}", d_in, "gradient") if d_in is not None else None
            for name, g in grads[k - 1].items():
                grad_handles.append(tracker.hold(f"g{k}.{name}", g, "weight_grad"))
            del d  # before the tracker frees it, so the two agree
            tracker.remove(ws)
            tracker.remove(d_handle)
            d, d_handle = d_in, new_handle
            del d_in
    if held or d is not None:
        raise RuntimeError(f"schedule left activations {sorted(held)} held")  # programs are checked
    if optimizer is not None:
        if dry:
            largest = max((p.nbytes for layer in net.layers for p in layer.params.values()), default=0)
            ws = tracker.add("ws sgd", largest, "workspace")
        else:
            ws = tracker.add("ws sgd", optimizer.workspace(net.layers), "workspace")
            optimizer.step(net.layers, grads)
        tracker.remove(ws)
        for h in grad_handles:
            tracker.remove(h)
    return StepResult(loss, grads, tracker, forwards, flops)


def train_step(net, x, target, schedule: Schedule | str, optimizer=None, tracker: MemoryTracker | None = None):
    """One step of `schedule` (a Schedule or its text)."""
    if isinstance(schedule, str):
        schedule = parse_schedule(schedule)
    ops = program_for(chain_of(net), schedule)
    start = time.perf_counter()
    result = run_program(net, x, target, ops, tracker, optimizer)
    result.seconds = time.perf_counter() - start
    return result
