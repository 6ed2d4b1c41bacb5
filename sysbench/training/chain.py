"""The chain cost model of a training step: what each position holds and costs, and the
memory a program of F / D / B operations needs (see recompute.py for the operations).

Positions are *stages*, not layers: a stage is a layer whose backward reads its input,
followed by layers whose backward reads nothing of theirs (Flatten: a shape) and at most one
"tail" whose backward can read its output instead of its input (ReLU: the sign of either).
Inside a stage the tensors between layers are transient; the stage's output is what the
chain holds. So a Linear + ReLU block keeps one tensor (its ReLU output, as PyTorch does),
not two. A tail's backward reads the stage's output, which the next stage's backward reads
too: it runs at the end of that backward (B(k+1), or the loss for the last stage), in place
on the gradient, so the gradient at position k is the one of the tail's input.

Activations a_0 (the step's input) .. a_n are the stage outputs; stage k (1-based) computes
a_k from a_{k-1}; the loss is step N = n + 1. B(k) reads a_{k-1} and d_k and leaves d_{k-1}.
Memory above what is held:
    F(k)  fpeak[k]  (the stage's transient outputs at their worst; default |a_k|)
    B(k)  bpeak[k]  (from d_k to d_{k-1} at their worst; default |d_k| + |d_{k-1}|)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chain:
    """The sizes and costs the schedules need, positions 0..N (N = n + 1 is the loss)."""
    act: tuple        # act[k] = bytes of a_k (act[N] = 0)
    grad: tuple       # grad[k] = bytes of d_k (grad[0] = 0: never computed; grad[N] = 0)
    fcost: tuple      # fcost[k] = forward FLOPs of stage k (fcost[0] unused)
    ws_f: tuple       # workspace of F(k) beyond fpeak[k] at its worst
    ws_b: tuple       # workspace of B(k) beyond bpeak[k] at its worst (ws_b[N]: the loss)
    fpeak: tuple | None = None   # activation bytes of F(k) above the held ones (None: act)
    bpeak: tuple | None = None   # activation bytes of B(k) above the held ones (None: grad[k] + grad[k-1])
    layers: tuple | None = None  # layers[k] = layers in stage k (None: one each)

    @property
    def n(self) -> int:
        return len(self.act) - 2

    def f_peak(self, k: int) -> int:
        return self.act[k] if self.fpeak is None else self.fpeak[k]

    def b_peak(self, k: int) -> int:
        return self.grad[k] + self.grad[k - 1] if self.bpeak is None else self.bpeak[k]


def stages_of(net) -> list[tuple[int, int]]:
    """[(first layer, end layer)] of each stage, 0-based layer indices (see the module doc)."""
    out, start = [], 0
    for i, layer in enumerate(net.layers):
        if i == start:
            continue
        previous = net.layers[i - 1]
        closed = previous.backward_reads == "either" and i - 1 > start
        if closed or layer.backward_reads == "input":
            out.append((start, i))
            start = i
    out.append((start, net.n))
    return out


def has_tail(net, first: int, end: int) -> bool:
    """True when the stage's last layer is a tail (its backward runs in the next B; module doc)."""
    return end - 1 > first and net.layers[end - 1].backward_reads == "either"


def backward_layers(net, spans: list, k: int) -> list[int]:
    """The layers B(k) runs, in order: stage k's layers but its tail, last first, then
    the tail of stage k - 1 (k = len(spans) + 1: the loss step, then the last stage's tail)."""
    out = []
    if k <= len(spans):
        first, end = spans[k - 1]
        out = list(reversed(range(first, end - has_tail(net, first, end))))
    if k >= 2 and has_tail(net, *spans[k - 2]):
        out.append(spans[k - 2][1] - 1)
    return out


def forward_trace(net, first: int, end: int) -> tuple[int, int]:
    """(peak, workspace beyond it) of F over layers[first:end], in activation bytes above
    the held input, as the interpreter runs it (an in-place layer after the first writes
    over its input)."""
    size = net.activation_bytes
    live = peak = peak_ws = 0
    for i in range(first, end):
        ws = net.workspace(i)[0]
        if i > first and net.layers[i].inplace:
            peak_ws = max(peak_ws, live + ws)
            continue
        live += size(i + 1)
        peak, peak_ws = max(peak, live), max(peak_ws, live + ws)
        if i > first:
            live -= size(i)
    return peak, peak_ws - peak


def backward_trace(net, layers: list, start: int) -> tuple[int, int]:
    """(peak, workspace beyond it) of a backward over `layers` (backward_layers), from a
    gradient of `start` bytes: an in-place layer rewrites the gradient, any other allocates
    its input's gradient (none for the network's first layer) before freeing its own."""
    size = net.activation_bytes
    live = peak = peak_ws = start
    for i in layers:
        ws = net.workspace(i)[1]
        if i > 0 and net.layers[i].inplace:
            peak_ws = max(peak_ws, live + ws)
            continue
        if i > 0:
            live += size(i)
        peak, peak_ws = max(peak, live), max(peak_ws, live + ws)
        live -= size(i + 1)
    return peak, peak_ws - peak


def chain_of(net) -> Chain:
    spans = stages_of(net)
    n = len(spans)
    ends = [0] + [end for _, end in spans]
    act = [net.activation_bytes(e) for e in ends] + [0]
    # d_k is the gradient of stage k's tail input when it has a tail (the tail ran in place)
    grad = [0] + [net.activation_bytes(b - has_tail(net, a, b)) for a, b in spans] + [0]
    fcost = [0] + [sum(net.forward_flops(i) for i in range(a, b)) for a, b in spans] + [0]
    forward = [forward_trace(net, a, b) for a, b in spans]
    fpeak = [0] + [f[0] for f in forward] + [0]
    ws_f = [0] + [f[1] for f in forward] + [0]
    backward = [backward_trace(net, backward_layers(net, spans, k), grad[k]) for k in range(1, n + 1)]
    loss = net.activation_bytes(net.n)  # the loss's d_n, then the last stage's tail in place
    last = backward_trace(net, backward_layers(net, spans, n + 1), loss)
    bpeak = [0] + [b[0] for b in backward] + [loss]
    ws_b = [0] + [b[1] for b in backward] + [max(net.loss_workspace(), sum(last) - loss)]
    layers = [0] + [b - a for a, b in spans] + [0]
    return Chain(tuple(act), tuple(grad), tuple(fcost), tuple(ws_f), tuple(ws_b), tuple(fpeak),
                 tuple(bpeak), tuple(layers))


def simulate(c: Chain, ops: list) -> dict:
    """Peak activation memory (also with workspace), forward FLOPs and checks of a program,
    without numbers."""
    N = c.n + 1
    held = {0}
    d_at = N  # position of the live gradient
    current = c.act[0]
    peak = peak_ws = current
    flops = forwards = 0
    for op, k in ops:
        if op == "F":
            if k - 1 not in held or k in held or not 1 <= k <= c.n:
                raise ValueError(f"bad program: F({k}) with held {sorted(held)}")
            peak = max(peak, current + c.f_peak(k))
            peak_ws = max(peak_ws, current + c.f_peak(k) + c.ws_f[k])
            held.add(k)
            current += c.act[k]
            flops += c.fcost[k]
            forwards += 1 if c.layers is None else c.layers[k]
        elif op == "D":
            held.remove(k)
            current -= c.act[k]
        else:
            if k != d_at or k - 1 not in held:
                raise ValueError(f"bad program: B({k}) with gradient at {d_at}, held {sorted(held)}")
            base = current - c.grad[k]
            peak = max(peak, base + c.b_peak(k))
            peak_ws = max(peak_ws, base + c.b_peak(k) + c.ws_b[k])
            current = base + c.grad[k - 1]
            d_at = k - 1
    if d_at != 0 or held:
        raise ValueError(f"bad program: ends with gradient at {d_at}, held {sorted(held)}")
    return {"peak_activation_bytes": peak, "peak_with_workspace_bytes": peak_ws, "forward_flops": flops,
            "layer_forwards": forwards}
