"""Programs for the schedules: the fixed ones (store_all, checkpoint_every, full_recompute)
and the dynamic programs that find the least recompute under a memory budget.
"""
from __future__ import annotations

import functools
import sys

from .chain import Chain, simulate
from .schedules import Schedule

def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


class InfeasibleBudget(ValueError):
    def __init__(self, budget: int, minimum: int, store_all_peak: int | None = None):
        text = (f"budget {format_bytes(budget)} ({budget} bytes) is below the minimum activation memory of "
                f"any schedule for this network: {format_bytes(minimum)} ({minimum} bytes)")
        if store_all_peak:
            text += f", {minimum / store_all_peak:.3f} of store_all's {format_bytes(store_all_peak)}"
        super().__init__(text)
        self.budget, self.minimum = budget, minimum


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


def _sweep_peak(c: Chain, s: int, k: int, t: int) -> int:
    """Peak of F(k) in a sweep from checkpoint a_s (held) with d_t live; a_{k-1} is dropped
    right after unless it is a_s."""
    return c.act[s] + (c.act[k - 1] if k - 1 > s else 0) + c.f_peak(k) + c.grad[t]


def _leaf_peak(c: Chain, s: int) -> int:
    return c.act[s] + c.b_peak(s + 1)


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
            if base + (act[j - 1] if j - 1 > p else 0) + c.f_peak(j) > m:
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
            return 0 if u == p and act[p] + c.b_peak(t) <= m else INF
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


