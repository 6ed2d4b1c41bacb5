"""Recompute schedules: which activations a training step keeps, and when it runs forward again.

The chain. Activations a_0 (the step's input) .. a_n; layer k (1-based here) computes a_k
from a_{k-1}. The loss is step N = n + 1: it reads a_n and produces the gradient d_n.
Backward step B(k) reads a_{k-1} (a layer's `saved` is built from its input) and d_k and
produces d_{k-1}. A schedule is a program of four operations:

    F(k)  forward layer k from a_{k-1}; hold a_k
    D(k)  discard a_k
    B(k)  backward of layer k (B(N) is the loss); d_k is freed, d_{k-1} is held
          (d_0, the input's gradient, is never computed)

Every schedule runs B(N), B(n), ..., B(1) once each, in that order, on the same values: the
loss, the weight gradients and the updated weights are bit-identical across schedules. Only
the F operations (how often a layer's forward runs) and what is held differ.

Memory (the MemoryTracker's "activation memory"): held activations + live gradients.
F(k) needs held + |a_k| + |d_live|; B(k) needs held + |d_k| + |d_{k-1}|. A layer's
workspace (im2col columns, masks) is CPU scratch that an accelerator streams: simulate()
reports the peak with it too, but budgets limit activation memory.

Schedules:
    store_all            keep everything (one forward per layer)
    full_recompute       keep only a_0 (and a_n until the loss); before each B(k) recompute
                         a_{k-1} from a_0: n(n-1)/2 extra layer forwards
    checkpoint_every=k   keep a_0, a_k, a_2k, ...; each segment is recomputed once, holding
                         its activations, then run backward
    budget=SIZE          the least recompute (in FLOPs) under a peak activation memory of SIZE
                         bytes ("64MiB"; "1/4" = a fraction of store_all's peak; "min" =
                         the least memory any schedule needs): dynamic programming over
                         (checkpoint, gradient position, memory) as Griewank's revolve and
                         Beaumont et al.'s rotor (2019), with each layer's own sizes and
                         costs, extended past persistent checkpoints (see optimal(); chains
                         longer than EXACT_MAX_LAYERS use the persistent DP).
"""
from __future__ import annotations

import functools
import re
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..units import parse_size
from .memory import MemoryTracker

SCHEDULE_FORMS = ("store_all | full_recompute | checkpoint_every=K | "
                  "budget=SIZE (bytes, '64MiB', '1/4' of store_all's peak, or 'min')")


class InfeasibleBudget(ValueError):
    def __init__(self, budget: int, minimum: int, store_all_peak: int | None = None):
        text = (f"budget {format_bytes(budget)} ({budget} bytes) is below the minimum activation memory of "
                f"any schedule for this network: {format_bytes(minimum)} ({minimum} bytes)")
        if store_all_peak:
            text += f", {minimum / store_all_peak:.3f} of store_all's {format_bytes(store_all_peak)}"
        super().__init__(text)
        self.budget, self.minimum = budget, minimum


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Schedule:
    kind: str                      # store_all | full_recompute | checkpoint_every | budget
    every: int = 0                 # checkpoint_every
    budget: int = 0                # budget in bytes (0: use fraction)
    fraction: Fraction | None = None
    minimum: bool = False          # budget=min: the least memory any schedule needs

    def __str__(self) -> str:
        if self.kind == "checkpoint_every":
            return f"checkpoint_every={self.every}"
        if self.kind == "budget":
            if self.minimum:
                return "budget=min"
            return f"budget={self.fraction}" if self.fraction is not None else f"budget={self.budget}"
        return self.kind


def parse_schedule(text: str) -> Schedule:
    """'store_all', 'full_recompute', 'checkpoint_every=4', 'budget=64MiB', 'budget=1/4'."""
    raw = str(text).strip()
    name, eq, arg = (part.strip() for part in raw.partition("="))
    if name in ("store_all", "full_recompute") and not eq:
        return Schedule(name)
    if name == "checkpoint_every" and eq:
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"checkpoint_every needs a positive integer, got {arg!r}")
        return Schedule(name, every=int(arg))
    if name == "budget" and eq:
        if arg == "min":
            return Schedule(name, minimum=True)
        if re.fullmatch(r"\d+\s*/\s*\d+", arg):
            numerator, denominator = (int(v) for v in arg.split("/"))
            if denominator == 0:
                raise ValueError(f"a budget fraction must be in (0, 1], got {arg}")
            frac = Fraction(numerator, denominator)
            if not 0 < frac <= 1:
                raise ValueError(f"a budget fraction must be in (0, 1], got {arg}")
            return Schedule(name, fraction=frac)
        size = parse_size(arg)
        if size is None or size <= 0:
            raise ValueError("budget must be a positive size (at most 8 EiB) such as 64MiB or 1000000 (bytes), "
                             f"or a fraction "
                             f"such as 1/4, got {arg!r}")
        return Schedule(name, budget=size)
    raise ValueError(f"unknown schedule {raw!r}; one of {SCHEDULE_FORMS}")


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


# ---- programs --------------------------------------------------------------------------

def store_all(c: Chain) -> list:
    """F(1..n), then the loss and B(n)..B(1), each dropping the activation it consumed."""
    backward = [op for k in range(c.n, 0, -1) for op in (("B", k), ("D", k - 1))]
    return [("F", k) for k in range(1, c.n + 1)] + [("B", c.n + 1), ("D", c.n)] + backward


def checkpoint_every(c: Chain, every: int) -> list:
    n = c.n
    ops = []
    for k in range(1, n + 1):  # forward: keep a_0, a_every, a_2every, ... and a_n
        ops.append(("F", k))
        if (k - 1) % every and k - 1 > 0:
            ops.append(("D", k - 1))
    ops += [("B", n + 1), ("D", n)]
    end = n
    while end > 0:  # segment (start, end]: recompute its inside, then backward through it
        start = (end - 1) // every * every
        ops += [("F", k) for k in range(start + 1, end)]
        for k in range(end, start, -1):
            ops += [("B", k), ("D", k - 1)]
        end = start
    return ops


def full_recompute(c: Chain) -> list:
    n = c.n
    ops = []
    for k in range(1, n + 1):
        ops.append(("F", k))
        if k - 1 > 0:
            ops.append(("D", k - 1))
    ops += [("B", n + 1), ("D", n)]
    for k in range(n, 0, -1):  # a_{k-1} from a_0, holding one activation at a time
        for j in range(1, k):
            ops.append(("F", j))
            if j - 1 > 0:
                ops.append(("D", j - 1))
        ops += [("B", k), ("D", k - 1)]
    return ops


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


# ---- the optimal schedule under a budget -------------------------------------------------

def _sweep_peak(c: Chain, s: int, k: int, t: int) -> int:
    """Peak of F(k) in a sweep from checkpoint a_s (held) with d_t live; a_{k-1} is dropped
    right after unless it is a_s."""
    return c.act[s] + (c.act[k - 1] if k - 1 > s else 0) + c.act[k] + c.grad[t]


def _leaf_peak(c: Chain, s: int) -> int:
    return c.act[s] + c.grad[s + 1] + c.grad[s]


@functools.lru_cache(maxsize=64)  # check(), model() and the DPs all ask; the Chain is the whole input
def minimum_budget(c: Chain) -> int:
    """The least peak activation memory of any schedule (the DP's space, which the tests
    check against an exhaustive search)."""
    memo: dict = {}

    def need(s: int, t: int) -> int:
        if t == s + 1:
            return _leaf_peak(c, s)
        key = (s, t)
        if key not in memo:
            best, sweep = None, 0
            for j in range(s + 1, t):
                sweep = max(sweep, _sweep_peak(c, s, j, t))
                here = max(sweep, c.act[s] + need(j, t), need(s, j))
                best = here if best is None else min(best, here)
            memo[key] = best
        return memo[key]

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10 * len(c.act) + 100))
    try:
        return need(0, c.n + 1)
    finally:
        sys.setrecursionlimit(old)


@functools.lru_cache(maxsize=64)
def optimal_persistent(c: Chain, budget: int) -> tuple[int, tuple]:
    """(forward FLOPs, program) of the best *persistent* schedule under `budget`: a
    checkpoint, once kept, stays until the backward reaches it. This is the DP of revolve
    and rotor; with heterogeneous sizes a non-persistent schedule can be cheaper (optimal()).

    P(s, t, m): a_s is held and d_t live, both inside m bytes; run B(t) .. B(s+1).
      t = s + 1: B(t), D(s) if its peak fits.
      else: for a checkpoint j in (s, t): sweep forward s -> j keeping only a_j, solve
            P(j, t, m - |a_s|) (a_s stays held), then P(s, j, m).
    The top problem is P(0, N, budget)."""
    minimum = minimum_budget(c)
    if budget < minimum:
        raise InfeasibleBudget(budget, minimum, store_all_peak(c))
    memo: dict = {}

    def cost(s: int, t: int, m: int):
        if t == s + 1:
            return 0 if _leaf_peak(c, s) <= m else None
        key = (s, t, m)
        if key in memo:
            return memo[key][0]
        best, choice, sweep_flops = None, None, 0
        for j in range(s + 1, t):
            if _sweep_peak(c, s, j, t) > m:
                break  # every later checkpoint needs this forward too
            sweep_flops += c.fcost[j]
            right = cost(j, t, m - c.act[s])
            if right is None:
                continue
            left = cost(s, j, m)
            if left is None:
                continue
            total = sweep_flops + right + left
            if best is None or total < best:
                best, choice = total, j
        memo[key] = (best, choice)
        return best

    def program(s: int, t: int, m: int) -> list:
        if t == s + 1:
            return [("B", t), ("D", s)]
        j = memo[(s, t, m)][1]
        ops = []
        for k in range(s + 1, j + 1):
            ops.append(("F", k))
            if k - 1 > s:
                ops.append(("D", k - 1))
        return ops + program(j, t, m - c.act[s]) + program(s, j, m)

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10 * len(c.act) + 100))
    try:
        total = cost(0, c.n + 1, budget)
        if total is None:  # cannot happen when budget >= minimum; kept as a guard
            raise InfeasibleBudget(budget, minimum)
        return total, tuple(program(0, c.n + 1, budget))  # a tuple: the cache hands out the same one
    finally:
        sys.setrecursionlimit(old)


@functools.lru_cache(maxsize=64)
def optimal(c: Chain, budget: int) -> tuple[int, tuple]:
    """(forward FLOPs, program) of the schedule with the least forward FLOPs whose peak
    activation memory is <= budget, over all programs of F / D / B operations (the tests
    hold it to an exhaustive search). Raises InfeasibleBudget naming the minimum.

    T(p, t, u, m): a_p is held and d_t live, both inside m bytes; run B(t) .. B(u+1), so
    the gradient ends at d_u (u >= p); a_p is consumed by B(p+1) when u = p, otherwise it
    is dropped (possibly early: "last use").
      t = u:             nothing to do (drop a_p).
      t = p + 1, u = p:  B(t), D(p) if its peak fits.
      else, for j in (p, t) reachable by a sweep p -> j that keeps only a_j:
        keep a_p:   T(j, t, v, m - |a_p|) then T(p, v, u, m), for v in [max(j, u), t)
        last use:   (u > p, u >= j) drop a_p after the sweep, then T(j, t, u, m)
    The top problem is T(0, N, 0, budget). Rotor's persistent DP is the case v = j
    without "last use"; dropping a checkpoint that is in the way of a large gradient and
    recomputing it later from an earlier one is what the two extra choices add."""
    minimum = minimum_budget(c)
    if budget < minimum:
        raise InfeasibleBudget(budget, minimum, store_all_peak(c))
    act, grad, fcost = c.act, c.grad, c.fcost
    memo: dict = {}
    INF = float("inf")

    tables: dict = {}

    def table(p: int, t: int, m: int):
        """For one sweep origin a_p with d_t live: keep[v] = the best (sweep p -> j, then
        T(j, t, v) with a_p held) over j <= v, and last[u] = the same with a_p dropped after
        the sweep (memory m). Shared by every stopping point u: this keeps the DP at
        O(n^4) memory-states work instead of O(n^5)."""
        key = (p, t, m)
        hit = tables.get(key)
        if hit is not None:
            return hit
        keep: dict = {}
        last: dict = {}
        sweep, base = 0, act[p] + grad[t]
        for j in range(p + 1, t):
            if base + (act[j - 1] if j - 1 > p else 0) + act[j] > m:
                break  # every later checkpoint needs this forward too
            sweep += fcost[j]
            for v in range(j, t):
                total = sweep + cost(j, t, v, m - act[p])
                if total < keep.get(v, (INF,))[0]:
                    keep[v] = (total, j)
                total = sweep + cost(j, t, v, m)
                if total < last.get(v, (INF,))[0]:
                    last[v] = (total, j)
        tables[key] = (keep, last)
        return keep, last

    def cost(p: int, t: int, u: int, m: int):
        if t == u:
            return 0
        if t == p + 1:
            return 0 if u == p and act[p] + grad[t] + grad[p] <= m else INF
        key = (p, t, u, m)
        hit = memo.get(key)
        if hit is not None:
            return hit[0]
        keep, last = table(p, t, m)
        best, choice = INF, None
        if u > p and u in last:
            best, choice = last[u][0], ("last", last[u][1], u)
        for v in range(max(u, p + 1), t):
            if v in keep and keep[v][0] < best:
                total = keep[v][0] + cost(p, v, u, m)
                if total < best:
                    best, choice = total, ("keep", keep[v][1], v)
        memo[key] = (best, choice)
        return best

    def program(p: int, t: int, u: int, m: int) -> list:
        if t == u:
            return [("D", p)]
        if t == p + 1:
            return [("B", t), ("D", p)]
        how, j, v = memo[(p, t, u, m)][1]
        ops = []
        for k in range(p + 1, j + 1):
            ops.append(("F", k))
            if k - 1 > p:
                ops.append(("D", k - 1))
        if how == "last":
            return ops + [("D", p)] + program(j, t, u, m)
        return ops + program(j, t, v, m - act[p]) + program(p, v, u, m)

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20 * len(act) + 200))
    try:
        total = cost(0, c.n + 1, 0, budget)
        if total == INF:  # cannot happen when budget >= minimum; kept as a guard
            raise InfeasibleBudget(budget, minimum)
        return int(total), tuple(program(0, c.n + 1, 0, budget))  # a tuple: the cache hands out the same one
    finally:
        sys.setrecursionlimit(old)


def store_all_peak(c: Chain) -> int:
    return simulate(c, store_all(c))["peak_activation_bytes"]


def budget_bytes(c: Chain, schedule: Schedule) -> int:
    if schedule.minimum:
        return minimum_budget(c)
    if schedule.fraction is not None:
        return int(store_all_peak(c) * schedule.fraction)
    return schedule.budget


# optimal() does O(n^4) work per memory level: about 10 s at 64 layers. Longer chains use
# the persistent DP (O(n^3)), which is optimal among persistent schedules.
EXACT_MAX_LAYERS = 64


def budget_solver(c: Chain) -> str:
    return "exact" if c.n <= EXACT_MAX_LAYERS else "persistent"


def best_under_budget(c: Chain, budget: int) -> tuple[int, tuple]:
    """optimal() for chains up to EXACT_MAX_LAYERS layers, optimal_persistent() beyond."""
    return optimal(c, budget) if budget_solver(c) == "exact" else optimal_persistent(c, budget)


def program_for(c: Chain, schedule: Schedule) -> list:
    if schedule.kind == "store_all":
        return store_all(c)
    if schedule.kind == "full_recompute":
        return full_recompute(c)
    if schedule.kind == "checkpoint_every":
        return checkpoint_every(c, schedule.every)
    return list(best_under_budget(c, budget_bytes(c, schedule))[1])


# ---- running a program ------------------------------------------------------------------

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
