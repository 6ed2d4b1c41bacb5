"""train_recompute: one training step under a memory restraint (forward recompute).

The network (an MLP, a small CNN, or a list of layer specs) runs one SGD step in numpy
float32 under a schedule (store_all | full_recompute | checkpoint_every=K | budget=SIZE; see
sysbench.training.recompute). Every schedule gives the same loss, weight gradients and
updated weights bit for bit; they differ in peak activation memory and in how many layer
forwards run again.

Model (deterministic): per-schedule FLOPs (forward, backward, recompute), the FLOP-predicted
overhead against store_all, the memory figures of the step (a dry run through the same
memory tracker: peak activation, peak total, workspace), and the accelerator time of every
layer's GEMMs on the configured array (gemm_cycles; element-wise layers run on a vector
unit and are not counted). Measured: step time, the tracker's figures from the real run and
a memory-over-time series. Validation: the step against a plain layer-by-layer store-all
step, bit for bit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models.systolic import add_cycles, gemm_cycles
from ..training import network as nets
from ..training import recompute as rc
from ..training.optim import SGD, blas_threads
from .base import Key, Run, Timed, Validation, Workload

SERIES_POINTS = 400  # memory-over-time points kept in a result


def _network(p: dict, init: bool = True, seed: int = 0) -> nets.Network:
    return nets.build({k: v for k, v in p.items() if v is not None}, seed=seed, init=init)


def _downsample(series: list, points: int = SERIES_POINTS) -> list:
    """[event, activation bytes, total bytes] rows, every k-th plus the peak."""
    if not series:
        return []
    stride = max(1, -(-len(series) // points))
    keep = set(range(0, len(series), stride)) | {len(series) - 1}
    keep.add(max(range(len(series)), key=lambda i: series[i][2]))
    return [[series[i][0], series[i][2], series[i][3]] for i in sorted(keep)]


def step_gemms(net: nets.Network, ops: list) -> list[tuple[int, int, int]]:
    """Every GEMM the step runs: each F op's forward GEMMs (of its stage's layers), each
    layer's weight-gradient GEMMs, and the input-gradient GEMMs of every layer but the first."""
    spans = rc.stages_of(net)
    out = []
    for op, k in ops:
        if op == "F":
            for i in range(*spans[k - 1]):
                out += net.layers[i].gemms(net.shapes[i])["forward"]
        elif op == "B":
            for i in rc.backward_layers(net, spans, k):
                g = net.layers[i].gemms(net.shapes[i])
                out += g["backward"] + (g["backward_input"] if i > 0 else [])
    return out


def array_time(net, ops, array) -> dict:
    cache: dict = {}
    parts = []
    for dims in step_gemms(net, ops):
        if dims not in cache:
            cache[dims] = gemm_cycles(array, *dims)
        parts.append(cache[dims])
    if not parts:
        return {"cycles": 0, "macs": 0, "utilization": 0.0, "time_us": 0.0}
    total = add_cycles(parts, array)
    return {k: total[k] for k in ("cycles", "macs", "utilization", "time_us")}


def _network_form(p: dict) -> str:
    return "specs" if p["specs"] is not None else f"model = {p['model']!r}"


def _only(*forms: str):
    """Key.applies for a key only some network forms read: set on another, nothing reads it."""
    def applies(p: dict) -> str | None:
        form = _network_form(p)
        if form in forms:
            return None
        return f"it applies only to {' or '.join(forms)}; this case builds its network from {form}"
    return applies


@dataclass(frozen=True)
class RecomputePlan:
    net: nets.Network  # built without weights: shapes, FLOPs, memory
    chain: Any
    schedule: Any
    ops: tuple         # the schedule's program


@dataclass(frozen=True)
class RecomputeInputs:
    net: nets.Network  # with weights; the timed steps update them, the reset restores them
    x: np.ndarray
    target: np.ndarray
    seed: int
    initial: list      # the weights every step starts from


class TrainRecompute(Workload):
    kind = "train_recompute"
    reference_uses_case_threads = True
    description = ("one SGD step under a recompute schedule (store_all, full_recompute, checkpoint_every, "
                   "optimal under a memory budget): identical results, memory, recompute cost, array time")
    keys = {
        "model": Key("str", default="mlp", choices=("mlp", "cnn"), help="mlp | cnn (not with specs)",
                     applies=_only("model = 'mlp'", "model = 'cnn'")),
        "layers": Key("int", default=None, minimum=1, applies=_only("model = 'mlp'", "model = 'cnn'"),
                      help="mlp: Linear+activation blocks (16); cnn: conv layers (len(channels))"),
        "specs": Key("list", default=None, help="layer specs instead of model: 'relu', 'linear:512', "
                     "{type = 'conv2d', out_channels = 16, kernel = 3, padding = 1}, ..."),
        "input": Key("list", default=None, help="per-sample input shape for specs, e.g. [3, 32, 32]",
                     applies=_only("specs")),
        "width": Key("int", default=2048, minimum=1, help="mlp: features of every Linear",
                     applies=_only("model = 'mlp'")),
        "in_features": Key("int", default=None, minimum=1, help="mlp: input features (default width)",
                           applies=_only("model = 'mlp'")),
        "batch": Key("int", default=32, minimum=1),
        "image": Key("int", default=32, minimum=1, help="cnn: input height = width", applies=_only("model = 'cnn'")),
        "in_channels": Key("int", default=3, minimum=1, help="cnn: input channels", applies=_only("model = 'cnn'")),
        "channels": Key("list", default=None, help="cnn: output channels per conv (default 32,32,64,64,128,128)",
                        applies=_only("model = 'cnn'")),
        "classes": Key("int", default=10, minimum=1, help="cnn: outputs of the last Linear",
                       applies=_only("model = 'cnn'")),
        "activation": Key("str", default="relu", choices=("relu", "gelu")),
        "loss": Key("str", default="cross_entropy", choices=("cross_entropy", "mse")),
        "schedule": Key("str", default="store_all", help=rc.SCHEDULE_FORMS),
        "lr": Key("float", default=0.01, help="SGD learning rate"),
    }

    def check(self, p, array):
        try:
            schedule = rc.parse_schedule(p["schedule"])
        except ValueError as exc:
            return [("schedule", str(exc))]
        if p["specs"] is not None and not p["input"]:
            return [("input", "a list of layer specs needs 'input', the per-sample input shape, e.g. [3, 32, 32]")]
        if p["input"] is not None and not all(isinstance(v, int) and v > 0 for v in p["input"]):
            return [("input", f"must be a list of positive integers, got {p['input']!r}")]
        if p["channels"] is not None and not (p["channels"] and all(isinstance(v, int) and v > 0
                                                                     for v in p["channels"])):
            return [("channels", f"must be a non-empty list of positive integers, got {p['channels']!r}")]
        if p["lr"] <= 0:
            return [("lr", f"must be positive, got {p['lr']}")]
        try:
            net = _network(p, init=False)
        except ValueError as exc:
            return [("specs" if p["specs"] is not None else "model", str(exc))]
        if p["loss"] == "cross_entropy" and len(net.shapes[-1]) != 2:
            return [("loss", f"cross_entropy needs a (batch, classes) output; the network gives {net.shapes[-1]}")]
        if schedule.kind == "budget":
            chain = rc.chain_of(net)
            budget, minimum = rc.budget_bytes(chain, schedule), rc.minimum_budget(chain)
            if budget < minimum:
                return [("schedule", str(rc.InfeasibleBudget(budget, minimum, rc.store_all_peak(chain))))]
        return []

    def plan(self, p, array):
        net = _network(p, init=False)
        chain = rc.chain_of(net)
        schedule = rc.parse_schedule(p.schedule)
        return RecomputePlan(net, chain, schedule, tuple(rc.program_for(chain, schedule)))

    def working_set(self, p, array, numerics):
        try:
            net = _network(p, init=False)
        except ValueError:
            return 0  # check() has reported it
        # weights, gradients, the updated copy kept for validation, the reference's gradients
        # and every activation of the store-all reference step
        chain = rc.chain_of(net)
        return 4 * net.param_bytes() + rc.store_all_peak(chain) if numerics else 0

    def model(self, p, array, plan):
        net, chain, schedule, ops = plan.net, plan.chain, plan.schedule, list(plan.ops)
        sim = rc.simulate(chain, ops)
        base_ops = rc.store_all(chain)
        base = rc.simulate(chain, base_ops)
        tracker = rc.dry_run(net, ops)
        one_forward = sum(chain.fcost[1:net.n + 1])
        backward = sum(net.backward_flops(i) for i in range(net.n))
        loss_flops = net.loss.flops(net.shapes[-1])
        recompute = sim["forward_flops"] - one_forward
        base_total = one_forward + backward + loss_flops
        acc = array_time(net, ops, array)
        acc_base = array_time(net, base_ops, array)
        metrics = {
            **acc,
            "schedule": str(schedule),
            "layers": net.n,
            "params": net.param_count(),
            "param_bytes": net.param_bytes(),
            "forward_flops": one_forward,
            "backward_flops": backward + loss_flops,
            "recompute_flops": recompute,
            "step_flops": base_total + recompute,
            "predicted_overhead": recompute / base_total,
            "layer_forwards": sim["layer_forwards"],
            "recomputed_layer_forwards": sim["layer_forwards"] - net.n,
            "peak_activation_bytes": sim["peak_activation_bytes"],
            "peak_with_workspace_bytes": sim["peak_with_workspace_bytes"],
            "peak_total_bytes": tracker.peak_total,
            "peak_workspace_bytes": tracker.peak_workspace,
            "store_all_peak_activation_bytes": base["peak_activation_bytes"],
            "activation_memory_ratio": sim["peak_activation_bytes"] / base["peak_activation_bytes"],
            "min_budget_bytes": rc.minimum_budget(chain),
            "array_overhead": acc["cycles"] / acc_base["cycles"] - 1 if acc_base["cycles"] else 0.0,
        }
        if schedule.kind == "budget":
            budget = rc.budget_bytes(chain, schedule)
            metrics["budget_bytes"] = budget
            if rc.budget_solver(chain) != "exact":  # a long chain: the persistent DP's schedule
                metrics["budget_solver"] = rc.budget_solver(chain)
            # what rotor's persistent-checkpoint DP would recompute under the same budget
            metrics["persistent_recompute_flops"] = rc.optimal_persistent(chain, budget)[0] - one_forward
        return metrics

    def inputs(self, p, array, plan, rng):
        seed = int(rng.integers(2**31))
        net = _network(p, seed=seed)
        x, target = net.make_batch(seed)
        return RecomputeInputs(net, x, target, seed, net.copy_params())

    def timed(self, run: Run) -> Timed:
        """One step from the initial weights per call (the reset restores them, untimed)."""
        inputs, ops, lr = run.inputs, list(run.plan.ops), run.params.lr
        net = inputs.net
        pool = rc.BufferPool()  # the steps of a visit reuse the first one's buffers (no page faults)

        def step():
            tracker = rc.MemoryTracker()
            tracker.add("params", net.param_bytes(), "param")
            return rc.run_program(net, inputs.x, inputs.target, ops, tracker, SGD(lr), pool=pool)

        return Timed(step, reset=lambda: net.set_params(inputs.initial))

    def observe(self, run: Run, output) -> dict:
        t = output.tracker
        return {"loss": output.loss, "peak_activation_bytes": t.peak_activation,
                "peak_total_bytes": t.peak_total, "peak_workspace_bytes": t.peak_workspace,
                "layer_forwards": output.layer_forwards, "memory_series": _downsample(t.series),
                "memory_series_columns": ["event", "activation_bytes", "total_bytes"]}

    def validate(self, run: Run, output) -> Validation:
        # After the timed calls the network holds the last step's updated weights. The network,
        # its weights and the batch are functions of the case's keys and seed; the schedule
        # changes none of them, so the cases of one network share a reference.
        inputs = run.inputs
        unstored = output.unstored  # stepped inside the backward, never stored: their
        # updated weights are compared, bit for bit as the rest
        output = {"loss": output.loss, "grads": output.grads, "weights": inputs.net.copy_params()}
        keys = {k: v for k, v in run.params.items() if k != "schedule"}
        cache_key = (json.dumps(keys, sort_keys=True, default=repr), inputs.seed, run.threads)
        ref = _REFERENCE.get(cache_key)
        if ref is None:
            _REFERENCE.clear()  # keep one (freed first): a suite runs the schedules of one network in a row
            ref = reference_step(inputs.net, inputs.x, inputs.target, inputs.initial, run.params.lr, run.threads)
            _REFERENCE[cache_key] = ref
        worst, differs = 0.0, []  # differs: what is not bit-identical, for the report
        if output["loss"] != ref["loss"]:
            differs.append(f"loss {output['loss']!r} vs {ref['loss']!r}")
        for what, mine, theirs in (("{} gradient", output["grads"], ref["grads"]),
                                   ("updated {}", output["weights"], ref["weights"])):
            if len(mine) != len(theirs):
                differs.append(f"{len(mine)} layers vs {len(theirs)}")
            for i, (a, b) in enumerate(zip(mine, theirs)):
                expected = set(b)
                if mine is output["grads"] and i in unstored:
                    expected.discard(inputs.net.layers[i].fuses_sgd)
                if set(a) != expected:
                    differs.append(f"layer {i + 1} parameters {sorted(a)} vs {sorted(expected)}")
                for name in sorted(set(a) & set(b)):
                    diff = np.abs(a[name].astype(np.float64) - b[name])
                    worst = max(worst, float(diff.max()) if diff.size else 0.0)
                    if not np.array_equal(a[name], b[name]):
                        differs.append(f"layer {i + 1} {what.format(name)}")
        detail = "" if not differs else "differs: " + ", ".join(differs[:3]) + (
            f" (+{len(differs) - 3} more)" if len(differs) > 3 else "")
        return Validation("store-all step, bit-identical loss, grads, weights", worst, not differs, "bit-exact",
                          detail=detail, extra={"loss": output["loss"]})

    def plots(self, cases):
        return recompute_plot(cases)


def recompute_plot(cases: list[dict]) -> list:
    """Live activation memory through one step, one line per schedule (and its budget)."""
    from ..plots import Plot, new_figure, short_label

    lines = []
    for case in cases:
        measured = case.get("measured") or {}
        series = measured.get("memory_series")
        if isinstance(series, list) and series:
            xs, ys = [point[0] for point in series], [point[1] for point in series]
            lines.append((short_label(case, drop_array=False), (xs, ys), case["metrics"].get("budget_bytes")))
    if not lines:
        return []
    fig, axes = new_figure(9.0, 5.0)
    ax = axes[0][0]
    peak = max(max(ys) for _, (_, ys), _ in lines)
    unit, scale = next(((u, f) for u, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)) if peak >= f), ("B", 1))
    for label, (xs, ys), budget in lines:
        (line,) = ax.step(xs, [y / scale for y in ys], where="post", label=label)
        if budget:
            ax.axhline(budget / scale, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("event (allocation / release)")
    ax.set_ylabel(f"live activation memory ({unit})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("train_recompute: activation memory over one step")
    return [Plot("recompute", "train_recompute: memory over time",
                 "Live activation memory through one training step per schedule; dotted: the budget.", fig)]


_REFERENCE: dict = {}  # (case keys without the schedule, seed, threads) -> the last reference


def reference_step(net, x, target, initial, lr, threads) -> dict:
    """A plain step (every activation kept, no tracker, no program) from `initial` weights,
    with numpy's BLAS on `threads` threads like the measured step (OpenBLAS's sums depend on
    its thread count)."""
    saved_params = net.copy_params()
    net.set_params(initial)
    with blas_threads(threads):
        acts, saved = [x], []
        for i in range(net.n):
            y, s = net.forward_layer(i, acts[-1])
            acts.append(y)
            saved.append(s)
        loss, grad = net.loss_and_grad(acts[-1], target)
        del acts
        grads = [None] * net.n
        for i in reversed(range(net.n)):
            grad, grads[i] = net.backward_layer(i, grad, saved[i], need_input_grad=i > 0)
        del saved
        SGD(lr).step(net.layers, grads)
    value = {"loss": loss, "grads": grads, "weights": net.copy_params()}
    net.set_params(saved_params)
    return value


WORKLOAD = TrainRecompute()
