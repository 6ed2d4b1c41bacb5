"""The chain cost model of a training step: what each position holds and costs, and the
memory a program of F / D / B operations needs (see recompute.py for the operations).

Activations a_0 (the step's input) .. a_n; layer k (1-based) computes a_k from a_{k-1}; the
loss is step N = n + 1. Backward step B(k) reads a_{k-1} and d_k and produces d_{k-1}.
F(k) needs held + |a_k| + |d_live|; B(k) needs held + |d_k| + |d_{k-1}|.
"""
from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Chain:
    """The sizes and costs the schedules need, positions 0..N (N = n + 1 is the loss)."""
    act: tuple        # act[k] = bytes of a_k (act[N] = 0)
    grad: tuple       # grad[k] = bytes of d_k (grad[0] = 0: never computed; grad[N] = 0)
    fcost: tuple      # fcost[k] = forward FLOPs of layer k (fcost[0] unused)
    ws_f: tuple       # forward workspace of layer k
    ws_b: tuple       # backward workspace of step k (ws_b[N]: the loss)

    @property
    def n(self) -> int:
        return len(self.act) - 2


def chain_of(net) -> Chain:
    n = net.n
    act = [net.activation_bytes(k) for k in range(n + 1)] + [0]
    grad = [0] + act[1:n + 1] + [0]
    fcost = [0] + [net.forward_flops(i) for i in range(n)] + [0]
    ws = [net.workspace(i) for i in range(n)]
    ws_f = [0] + [w[0] for w in ws] + [0]
    ws_b = [0] + [w[1] for w in ws] + [net.loss_workspace()]
    return Chain(tuple(act), tuple(grad), tuple(fcost), tuple(ws_f), tuple(ws_b))


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
            peak = max(peak, current + c.act[k])
            peak_ws = max(peak_ws, current + c.act[k] + c.ws_f[k])
            held.add(k)
            current += c.act[k]
            flops += c.fcost[k]
            forwards += 1
        elif op == "D":
            held.remove(k)
            current -= c.act[k]
        else:
            if k != d_at or k - 1 not in held:
                raise ValueError(f"bad program: B({k}) with gradient at {d_at}, held {sorted(held)}")
            peak = max(peak, current + c.grad[k - 1])
            peak_ws = max(peak_ws, current + c.grad[k - 1] + c.ws_b[k])
            current += c.grad[k - 1] - c.grad[k]
            d_at = k - 1
    if d_at != 0 or held:
        raise ValueError(f"bad program: ends with gradient at {d_at}, held {sorted(held)}")
    return {"peak_activation_bytes": peak, "peak_with_workspace_bytes": peak_ws, "forward_flops": flops,
            "layer_forwards": forwards}


