"""Recompute schedules: identical results, memory under budget, optimality, tracker accuracy."""
from __future__ import annotations

import heapq
import itertools
import tracemalloc

import numpy as np
import pytest

from sysbench.training import network
from sysbench.training import recompute as rc
from sysbench.training.optim import SGD

NETWORKS = {
    "mlp-relu": lambda: network.mlp(5, 48, 8, in_features=20, seed=3),
    "mlp-gelu-mse": lambda: network.mlp(3, 32, 6, activation="gelu", loss="mse", seed=4),
    "cnn": lambda: network.cnn(channels=[4, 8, 8, 16], image=8, batch=3, seed=5),
    "specs": lambda: network.from_specs(
        [{"type": "conv2d", "out_channels": 6, "kernel": 3, "stride": 2, "padding": 1}, "gelu",
         {"type": "maxpool2d", "kernel": 3, "stride": 1}, {"type": "conv2d", "out_channels": 4, "kernel": 1},
         "relu", "flatten", "linear:12", "relu", "linear:5"], (4, 2, 9, 9), seed=6),
}


def schedules_for(net) -> list[str]:
    out = ["store_all", "full_recompute", "checkpoint_every=1", "checkpoint_every=2", "checkpoint_every=3",
           f"checkpoint_every={net.n + 4}", "budget=min", "budget=1/1"]
    chain = rc.chain_of(net)
    lo, hi = rc.minimum_budget(chain), rc.store_all_peak(chain)
    out += [f"budget={int(lo + f * (hi - lo))}" for f in (0.1, 0.3, 0.6)]
    return out


def step(net, x, target, schedule, initial):
    net.set_params(initial)
    result = rc.train_step(net, x, target, schedule, SGD(lr=0.05))
    weights = net.copy_params()
    net.set_params(initial)
    return result, weights


@pytest.mark.parametrize("name", list(NETWORKS))
def test_all_schedules_give_bit_identical_loss_grads_and_weights(name):
    net = NETWORKS[name]()
    x, target = net.make_batch(seed=1)
    initial = net.copy_params()
    ref, ref_weights = step(net, x, target, "store_all", initial)
    assert np.isfinite(ref.loss)
    changed = any(not np.array_equal(w[k], initial[i][k]) for i, w in enumerate(ref_weights) for k in w)
    assert changed  # the step did update something
    forwards = set()
    for schedule in schedules_for(net):
        result, weights = step(net, x, target, schedule, initial)
        forwards.add(result.layer_forwards)
        assert result.loss == ref.loss, schedule
        for i in range(net.n):
            for k in ref.grads[i]:
                assert np.array_equal(result.grads[i][k], ref.grads[i][k]), (schedule, i, k)
                assert np.array_equal(weights[i][k], ref_weights[i][k]), (schedule, i, k)
    assert len(forwards) > 2  # the schedules really differ in what they recompute


@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_buffer_pool_changes_no_bit(name):
    net = NETWORKS[name]()
    x, target = net.make_batch(seed=4)
    initial = net.copy_params()
    pool = rc.BufferPool()
    for schedule in ("store_all", "budget=min", "full_recompute"):
        ref, ref_weights = step(net, x, target, schedule, initial)
        for _ in range(2):  # the second step reuses the first one's buffers
            net.set_params(initial)
            result = rc.train_step(net, x, target, schedule, SGD(lr=0.05), pool=pool)
            assert result.loss == ref.loss, schedule
            for i in range(net.n):
                for k in ref.grads[i]:
                    assert np.array_equal(result.grads[i][k], ref.grads[i][k]), (schedule, i, k)
                    assert np.array_equal(net.layers[i].params[k], ref_weights[i][k]), (schedule, i, k)
    net.set_params(initial)


def test_steps_after_the_first_reuse_the_pools_buffers():
    net = network.mlp(4, 256, 64)  # 256 KiB weight gradients, 64 KiB activations
    x, target = net.make_batch()
    pool, allocated = rc.BufferPool(), []
    for _ in range(3):
        tracemalloc.start()
        rc.train_step(net, x, target, "store_all", SGD(lr=1e-4), pool=pool)
        allocated.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # the first step allocates its buffers (over 1 MiB of weight gradients alone); the
    # next ones only the loss's gradient, the bias gradients and the tracker's records
    assert allocated[0] > 1 << 20
    assert max(allocated[1:]) < allocated[0] / 5, allocated


@pytest.mark.parametrize("name", list(NETWORKS))
def test_budget_schedules_stay_under_budget_measured_and_simulated(name):
    net = NETWORKS[name]()
    x, target = net.make_batch(seed=2)
    chain = rc.chain_of(net)
    lo, hi = rc.minimum_budget(chain), rc.store_all_peak(chain)
    previous_cost = None
    for budget in sorted({lo, lo + 1, (lo + hi) // 2, hi - 1, hi, 2 * hi}, reverse=True):
        cost, ops = rc.optimal(chain, budget)
        sim = rc.simulate(chain, ops)
        assert sim["peak_activation_bytes"] <= budget
        assert sim["forward_flops"] == cost
        result = rc.run_program(net, x, target, ops)
        assert result.tracker.peak_activation == sim["peak_activation_bytes"]
        assert result.tracker.peak_activation <= budget
        if previous_cost is not None:  # less memory never costs less
            assert cost >= previous_cost
        previous_cost = cost
    # with the whole store_all memory, no layer runs twice
    assert rc.optimal(chain, hi)[0] == sum(chain.fcost)


def test_fixed_schedules_recompute_what_they_should():
    net = network.mlp(4, 16, 2)  # 8 layers: 4 stages of Linear + ReLU
    chain = rc.chain_of(net)
    m = chain.n
    assert (net.n, m) == (8, 4)
    assert rc.simulate(chain, rc.store_all(chain))["layer_forwards"] == net.n
    # every stage forward runs its two layers
    assert rc.simulate(chain, rc.full_recompute(chain))["layer_forwards"] == 2 * (m + m * (m - 1) // 2)
    # every=3: checkpoints a_0, a_3; segments (3,4], (0,3] recompute 0 and 2 stages
    assert rc.simulate(chain, rc.checkpoint_every(chain, 3))["layer_forwards"] == 2 * (m + 0 + 2)
    assert rc.checkpoint_every(chain, 1) == rc.store_all(chain)
    # full_recompute holds the input, at most two activations of a sweep (one kept, one
    # made) and the gradient: 4 equal buffers; store_all the input, the 4 stage outputs
    # (the Linear outputs are transient) and a gradient
    size = chain.act[1]
    assert rc.simulate(chain, rc.full_recompute(chain))["peak_activation_bytes"] == chain.act[0] + 3 * size
    assert rc.store_all_peak(chain) == chain.act[0] + (m + 1) * size


def test_stages_keep_one_tensor_per_linear_relu_block():
    """A ReLU's backward reads its output's sign, so the Linear output it came from is never
    kept: the chain's positions are the blocks' outputs; GELU reads its input and keeps both."""
    relu = network.mlp(3, 8, 2)
    assert rc.stages_of(relu) == [(0, 2), (2, 4), (4, 6)]
    gelu = network.mlp(3, 8, 2, activation="gelu")
    assert rc.stages_of(gelu) == [(i, i + 1) for i in range(6)]
    cnn = network.cnn(channels=[2, 3], image=4, batch=1)  # conv relu conv relu pool flatten linear
    assert rc.stages_of(cnn) == [(0, 2), (2, 4), (4, 6), (6, 7)]  # pool + flatten: one stage
    assert rc.chain_of(cnn).act[1:] == tuple(cnn.activation_bytes(e) for e in (2, 4, 6, 7)) + (0,)


# ---- optimality against an exhaustive search -----------------------------------------------------

def _used(c: rc.Chain, held, d_at) -> int:
    """Activation memory of a state: held activations and the gradient at d_at."""
    return sum(c.act[k] for k in held) + c.grad[d_at]


def _backward_fits(c: rc.Chain, held, d_at, now, budget) -> bool:
    """B(d_at) may run: its input is held and its peak (chain.b_peak: from d_k to d_{k-1})
    fits."""
    return d_at - 1 in held and now - c.grad[d_at] + c.b_peak(d_at) <= budget


def brute_force(c: rc.Chain, budget: int):
    """Least forward cost over every program of F / D / B operations whose peak activation
    memory stays <= budget (Dijkstra over (held activations, gradient position)); None if
    none exists. Independent of the DP: any set of activations may be held at any time."""
    n, N = c.n, c.n + 1
    start = (frozenset([0]), N)
    if _used(c, *start) > budget:
        return None
    best = {start: 0}
    queue = [(0, 0, start)]
    tie = itertools.count()
    while queue:
        cost, _, (held, d_at) = heapq.heappop(queue)
        if cost > best.get((held, d_at), float("inf")):
            continue
        if d_at == 0:
            return cost
        now = _used(c, held, d_at)
        moves = []
        for k in range(1, min(n, d_at - 1) + 1):  # a forward at or past the gradient is no use
            if k - 1 in held and k not in held and now + c.f_peak(k) <= budget:
                moves.append((cost + c.fcost[k], (held | {k}, d_at)))
        for k in held:
            moves.append((cost, (held - {k}, d_at)))
        if _backward_fits(c, held, d_at, now, budget):
            moves.append((cost, (held, d_at - 1)))
        for new_cost, state in moves:
            if new_cost < best.get(state, float("inf")):
                best[state] = new_cost
                heapq.heappush(queue, (new_cost, next(tie), state))
    return None


def brute_force_persistent(c: rc.Chain, budget: int):
    """As brute_force, over persistent programs only: an activation held when a B operation
    runs stays held until the backward passes it (only activations made since the last B
    may be dropped). State: (kept, made since the last B, gradient position)."""
    n, N = c.n, c.n + 1
    start = (frozenset([0]), frozenset(), N)
    if _used(c, start[0], N) > budget:
        return None
    best = {start: 0}
    queue = [(0, 0, start)]
    tie = itertools.count()
    while queue:
        cost, _, (kept, fresh, d_at) = heapq.heappop(queue)
        if cost > best.get((kept, fresh, d_at), float("inf")):
            continue
        if d_at == 0:
            return cost
        held = kept | fresh
        now = _used(c, held, d_at)
        moves = []
        for k in range(1, min(n, d_at - 1) + 1):
            if k - 1 in held and k not in held and now + c.f_peak(k) <= budget:
                moves.append((cost + c.fcost[k], (kept, fresh | {k}, d_at)))
        moves += [(cost, (kept, fresh - {k}, d_at)) for k in fresh]
        moves += [(cost, (kept - {k}, fresh, d_at)) for k in kept if k >= d_at]  # passed by the backward
        if _backward_fits(c, held, d_at, now, budget):
            moves.append((cost, (held, frozenset(), d_at - 1)))
        for new_cost, state in moves:
            if new_cost < best.get(state, float("inf")):
                best[state] = new_cost
                heapq.heappush(queue, (new_cost, next(tie), state))
    return None


def random_chain(rng, n):
    act = [int(v) for v in rng.integers(1, 9, n + 1)] + [0]
    plain = [0] + act[1:n + 1] + [0]
    if rng.random() < 0.5:  # gradients sized unlike their activations
        plain = [0] + [int(v) for v in rng.integers(1, 9, n)] + [0]
    fcost = [0] + [int(v) for v in rng.integers(1, 20, n)] + [0]
    if rng.random() < 0.3:  # unit costs: the optimum is the fewest recomputed layer forwards
        fcost = [0] + [1] * n + [0]
    zeros = (0,) * (n + 2)
    if rng.random() < 0.5:
        return rc.Chain(tuple(act), tuple(plain), tuple(fcost), zeros, zeros)
    # stages: transient peaks inside F (above |a_k|) and B (above its start and its end)
    fpeak = [0] + [act[k] + int(rng.integers(0, 4)) for k in range(1, n + 1)] + [0]
    bpeak = [0] + [max(plain[k], plain[k - 1]) + int(rng.integers(0, 4)) for k in range(1, n + 2)]
    return rc.Chain(tuple(act), tuple(plain), tuple(fcost), zeros, zeros, tuple(fpeak), tuple(bpeak))


def test_budget_schedule_matches_exhaustive_optimum_on_small_chains():
    rng = np.random.default_rng(11)
    checked = beats_persistent = 0
    for trial in range(60):
        n = int(rng.integers(1, 7))
        c = random_chain(rng, n)
        lo, hi = rc.minimum_budget(c), rc.store_all_peak(c)
        assert brute_force(c, lo - 1) is None  # the minimum really is the minimum
        for budget in range(lo, hi + 1):
            expected = brute_force(c, budget)
            cost, ops = rc.optimal(c, budget)
            assert cost == expected, (c, budget)
            sim = rc.simulate(c, ops)
            assert sim["peak_activation_bytes"] <= budget and sim["forward_flops"] == cost
            if set(c.fcost[1:n + 1]) == {1}:
                assert sim["layer_forwards"] - n == expected - n  # recomputed forwards, counted
            persistent = rc.optimal_persistent(c, budget)[0]
            assert persistent == brute_force_persistent(c, budget), (c, budget)
            beats_persistent += cost < persistent
            checked += 1
    assert checked > 200
    assert beats_persistent > 0  # heterogeneous chains where dropping a checkpoint early pays


def test_budget_schedule_matches_exhaustive_optimum_on_a_real_network():
    net = network.cnn(channels=[2, 3], image=4, batch=1)  # conv relu conv relu pool flatten linear
    c = rc.chain_of(net)
    lo, hi = rc.minimum_budget(c), rc.store_all_peak(c)
    for budget in np.linspace(lo, hi, 12).astype(int):
        assert rc.optimal(c, int(budget))[0] == brute_force(c, int(budget))
        assert rc.optimal_persistent(c, int(budget))[0] == brute_force_persistent(c, int(budget))


# ---- errors --------------------------------------------------------------------------------------

def test_infeasible_budget_is_an_error_naming_the_minimum():
    net = network.mlp(4, 64, 8)
    chain = rc.chain_of(net)
    minimum = rc.minimum_budget(chain)
    with pytest.raises(rc.InfeasibleBudget, match=f"minimum .*{minimum} bytes") as info:
        rc.optimal(chain, minimum - 1)
    assert info.value.minimum == minimum
    with pytest.raises(rc.InfeasibleBudget, match="below the minimum"):
        rc.train_step(net, *net.make_batch(), "budget=1KiB")
    rc.optimal(chain, minimum)  # the minimum itself works


@pytest.mark.parametrize("text,message", [
    ("budget=0", "positive size"), ("budget=12 parsecs", "positive size"), ("budget=3/2", "fraction"),
    ("budget=1/0", "fraction"), ("budget=0/4", "fraction"),
    ("checkpoint_every=0", "positive integer"), ("checkpoint_every=x", "positive integer"),
    ("store", "unknown schedule"), ("full_recompute=2", "unknown schedule"),
])
def test_bad_schedules(text, message):
    with pytest.raises(ValueError, match=message):
        rc.parse_schedule(text)


def test_schedule_forms():
    assert rc.parse_schedule("budget=64MiB").budget == 64 * 2**20
    assert rc.parse_schedule(" budget = 1/4 ").fraction == rc.Fraction(1, 4)
    assert str(rc.parse_schedule("checkpoint_every=5")) == "checkpoint_every=5"
    assert rc.parse_schedule("budget=min").minimum


# ---- the tracker against tracemalloc -------------------------------------------------------------

# The tracker's peak within 5% of what numpy really allocated, plus 64 KiB: numpy's ufunc
# buffer (8192 elements, allocated by a broadcast in-place add such as Linear's bias) and
# Python's own small objects, which no buffer accounting sees.
TRACEMALLOC_TOLERANCE = 0.05
TRACEMALLOC_SLACK = 64 * 1024


@pytest.mark.parametrize("factory", [lambda: network.mlp(6, 512, 64),
                                     lambda: network.mlp(4, 256, 32, activation="gelu", loss="mse"),
                                     lambda: network.cnn(batch=4, channels=[16, 16, 32]),
                                     lambda: network.cnn(batch=16, channels=[8, 16], image=16, activation="gelu")])
def test_tracker_peak_agrees_with_tracemalloc(factory):
    net = factory()
    x, target = net.make_batch()
    chain = rc.chain_of(net)
    for schedule in ("store_all", "full_recompute", "checkpoint_every=2", "budget=min"):
        ops = rc.program_for(chain, rc.parse_schedule(schedule))
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            result = rc.run_program(net, x, target, ops, optimizer=SGD(1e-4))
            traced = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        # params and the input batch existed before tracing started: leave them out of the
        # tracker's figures (the input only while the tracker holds it, up to "free a0")
        input_held, tracked = True, 0
        for _, label, _, total in result.tracker.series:
            input_held &= label != "free a0"
            tracked = max(tracked, total - net.param_bytes() - (x.nbytes if input_held else 0))
        assert abs(traced - tracked) <= TRACEMALLOC_TOLERANCE * tracked + TRACEMALLOC_SLACK, \
            (schedule, traced, tracked)


def test_dry_run_equals_real_run():
    net = network.cnn(batch=2, channels=[4, 8], image=8)
    x, target = net.make_batch()
    shapes_only = network.cnn(batch=2, channels=[4, 8], image=8, init=False)
    for schedule in ("store_all", "checkpoint_every=2", "budget=min"):
        ops = rc.program_for(rc.chain_of(net), rc.parse_schedule(schedule))
        real = rc.run_program(net, x, target, ops, optimizer=SGD(1e-9)).tracker
        dry = rc.dry_run(shapes_only, ops)
        assert (dry.peak_activation, dry.peak_total, dry.peak_workspace) == \
               (real.peak_activation, real.peak_total, real.peak_workspace)
        assert [row[2:] for row in dry.series] == [row[2:] for row in real.series]


def test_cached_budget_programs_cannot_be_changed_by_a_caller():
    # optimal() is cached: a caller editing the program it got must not edit the next caller's
    chain = rc.chain_of(network.mlp(3, 16, 2))
    schedule = rc.parse_schedule("budget=min")
    ops = rc.program_for(chain, schedule)
    ops.append(("F", 1))
    assert rc.program_for(chain, schedule) == ops[:-1]
    assert isinstance(rc.optimal(chain, rc.minimum_budget(chain))[1], tuple)
