"""Training-step time per recompute schedule, measured overhead against the FLOP prediction,
and store_all against PyTorch CPU on the same MLP.

Run with the machine's OpenBLAS tuning variables unset (they slow numpy down):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest tests/benchmarks/test_bench_recompute.py -s
Everything runs with the same thread count (SYSBENCH_BENCH_THREADS, default 1) for numpy's
BLAS (threadpoolctl) and torch (set_num_threads). Ratios use the process's CPU time
(time.process_time), best of several interleaved rounds: on a machine shared with other
work, wall time mostly measures the neighbours; with one compute thread CPU time is what the
step itself costs (wall times are printed too).

Targets:
  - full_recompute and budget schedules on the MLP: measured step-time ratio to store_all
    within 10% of the FLOP-predicted ratio 1 + recompute FLOPs / store_all step FLOPs;
  - store_all step on the MLP (16 x Linear 2048 + ReLU, batch 256) no slower than torch
    (TARGET, asserted at every thread count: STEP_BOUND), and its activation memory once the
    loss has run (the input, what backward keeps, the loss's own) no more than torch's
    saved tensors at the same point.
The CNN's ratios are reported, not asserted: its im2col copies and element-wise layers cost
time that FLOPs do not count.
With -s a table of peak memory and step time per schedule is printed at the end.
"""
from __future__ import annotations

import os
import time

import pytest
from threadpoolctl import threadpool_limits

from sysbench.hardware import Array
from sysbench.training import network
from sysbench.training import recompute as rc
from sysbench.training.optim import SGD
from sysbench.workloads.train_recompute import WORKLOAD

THREADS = int(os.environ.get("SYSBENCH_BENCH_THREADS", "1"))
TOLERANCE = 0.10
NETS = {
    "mlp": {"model": "mlp", "layers": 16, "width": 2048, "batch": 256},
    "cnn": {"model": "cnn", "channels": [32, 32, 64, 64, 128, 128], "image": 32, "batch": 32},
}
SCHEDULES = {
    "mlp": ["store_all", "checkpoint_every=4", "budget=1/2", "budget=1/4", "budget=min", "full_recompute"],
    "cnn": ["store_all", "checkpoint_every=3", "budget=3/4", "budget=min", "full_recompute"],
}
ASSERTED = ("full_recompute", "budget=")
TARGET = 1.0  # store_all step time / torch's
# asserted: the target itself. On the shared 2-core Xeon (Sapphire Rapids; 2026-12-04, with
# the ReLU passes in the GEMMs' epilogue) the ratio measured 0.84-0.94 at one thread and
# 0.84-0.96 at two over seven runs each (README); torch's own time moves by up to 25% from
# session to session there, ours by ~5%
STEP_BOUND = {1: TARGET, 2: TARGET}
TABLE: dict = {}


def workload_model(keys: dict, array: Array) -> dict:
    """The workload's model figures for a case (its keys as a dict), through the protocol."""
    p = WORKLOAD.normalize(WORKLOAD.make_params(keys), array)
    return WORKLOAD.model(p, array, WORKLOAD.plan(p, array))


class Setup:
    def __init__(self, name):
        keys = {k: spec.default for k, spec in WORKLOAD.keys.items() if not spec.required}
        keys.update(NETS[name])
        self.keys = keys
        self.net = network.build(NETS[name], seed=0)
        self.x, self.target = self.net.make_batch(0)
        self.initial = self.net.copy_params()
        self.chain = rc.chain_of(self.net)
        self.pool = rc.BufferPool()

    def ops(self, schedule):
        return rc.program_for(self.chain, rc.parse_schedule(schedule))

    def step(self, ops):
        # one pool per network: every step after the first reuses its buffers, as a
        # workload's repeats do
        return rc.run_program(self.net, self.x, self.target, ops, optimizer=SGD(0.01), pool=self.pool)

    def restore(self):
        self.net.set_params(self.initial)

    def best_of(self, ops, repeats, clock=time.process_time):
        times = []
        for _ in range(repeats):
            self.restore()
            start = clock()
            self.step(ops)
            times.append(clock() - start)
        return min(times)


@pytest.fixture(scope="module", params=list(NETS))
def setup(request):
    s = Setup(request.param)
    with threadpool_limits(limits=THREADS, user_api="blas"):
        s.best_of(s.ops("store_all"), 1)  # warm-up: page faults, BLAS buffers
    s.name = request.param
    return s


def test_step_time_per_schedule(benchmark, setup):
    """One benchmark per network: every schedule; the store_all ratio checks run here too."""
    s = setup
    rows = []
    for schedule in SCHEDULES[s.name]:
        model = workload_model({**s.keys, "schedule": schedule}, Array(rows=128, cols=128))
        ops = s.ops(schedule)
        rounds = 2 if model["predicted_overhead"] > 2 else 4
        times, base_times, wall = [], [], []
        with threadpool_limits(limits=THREADS, user_api="blas"):
            for _ in range(rounds):  # interleaved with store_all: both see the same machine load
                base_times.append(s.best_of(s.ops("store_all"), 1))
                start = time.perf_counter()
                times.append(s.best_of(ops, 1))
                wall.append(time.perf_counter() - start)
        seconds = min(times)
        measured, predicted = seconds / min(base_times), 1 + model["predicted_overhead"]
        rows.append((schedule, model["peak_activation_bytes"], model["store_all_peak_activation_bytes"],
                     model["peak_total_bytes"], seconds, min(wall), measured, predicted, model["layer_forwards"]))
    TABLE[s.name] = rows
    with threadpool_limits(limits=THREADS, user_api="blas"):
        benchmark.extra_info.update({"net": s.name, "threads": THREADS,
                                     "rows": [list(map(lambda v: v if isinstance(v, str) else float(v), r))
                                              for r in rows]})
        benchmark.pedantic(s.step, args=(s.ops("store_all"),), setup=s.restore, rounds=2, iterations=1)
    s.restore()
    if s.name == "mlp":
        for schedule, *_, measured, predicted, _forwards in rows:
            if schedule.startswith(ASSERTED):
                assert abs(measured / predicted - 1) <= TOLERANCE, (schedule, measured, predicted)


def torch_mlp(torch, net):
    layers = []
    for layer in net.layers:
        if layer.kind == "linear":
            lin = torch.nn.Linear(*reversed(layer.params["weight"].shape))
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.params["weight"]))
                lin.bias.copy_(torch.from_numpy(layer.params["bias"]))
            layers.append(lin)
        else:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def test_store_all_activation_memory_vs_torch():
    """What each keeps for backward once the loss has run: torch's saved tensors (distinct
    storages, parameters excluded) against our tracker's activation memory at that point."""
    torch = pytest.importorskip("torch")
    s = Setup("mlp")
    model = torch_mlp(torch, s.net)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.CrossEntropyLoss()(model(torch.from_numpy(s.x)), torch.from_numpy(s.target))
    theirs = sum(saved.values())
    del loss
    result = rc.dry_run(s.net, s.ops("store_all"))
    after_loss = next(act for _, label, act, _ in result.series if label == f"d{s.chain.n}")
    ratio = after_loss / theirs
    print(f"\nstore_all MLP activation memory after the loss: ours {after_loss / 2**20:.1f} MiB, "
          f"torch {theirs / 2**20:.1f} MiB, ratio {ratio:.3f} (target <= 1)")
    assert ratio <= 1.0


def test_store_all_vs_torch(benchmark):
    torch = pytest.importorskip("torch")
    s = Setup("mlp")
    torch.set_num_threads(THREADS)
    model = torch_mlp(torch, s.net)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, target = torch.from_numpy(s.x), torch.from_numpy(s.target)
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), target)
        loss.backward()
        opt.step()
        return loss.item()

    torch_loss = torch_step()
    ours = s.step(s.ops("store_all"))
    assert ours.loss == pytest.approx(torch_loss, rel=1e-4)  # the same computation
    torch_times, our_times = [], []
    with threadpool_limits(limits=THREADS, user_api="blas"):
        for _ in range(6):  # interleaved, so both see the same machine load
            start = time.process_time()
            torch_step()
            torch_times.append(time.process_time() - start)
            s.restore()
            start = time.process_time()
            s.step(s.ops("store_all"))
            our_times.append(time.process_time() - start)
        ratio = min(our_times) / min(torch_times)
        benchmark.extra_info.update({"torch_s": min(torch_times), "ours_s": min(our_times), "ratio": ratio})
        benchmark.pedantic(s.step, args=(s.ops("store_all"),), setup=s.restore, rounds=1, iterations=1)
    bound = STEP_BOUND.get(THREADS, STEP_BOUND[2])
    print(f"\nstore_all MLP step, {THREADS} thread(s), CPU time: ours {min(our_times):.3f} s, "
          f"torch {min(torch_times):.3f} s, "
          f"ratio {ratio:.2f} (target <= {TARGET}; {'met' if ratio <= TARGET else 'NOT met'}; "
          f"asserted: <= {bound})")
    assert ratio <= bound


def teardown_module(module):
    if not TABLE:
        return
    print(f"\n\nstep time and memory per schedule ({THREADS} thread(s)); ratio = step / store_all step")
    print(f"{'net':4} {'schedule':20} {'peak act MiB':>12} {'of store_all':>12} {'peak total MiB':>14} "
          f"{'cpu s':>7} {'wall s':>7} {'measured':>9} {'predicted':>9} {'fwd':>5}")
    for name, rows in TABLE.items():
        for schedule, peak, base_peak, total, seconds, wall, measured, predicted, forwards in rows:
            print(f"{name:4} {schedule:20} {peak / 2**20:12.2f} {peak / base_peak:12.3f} {total / 2**20:14.1f} "
                  f"{seconds:7.3f} {wall:7.3f} {measured:9.3f} {predicted:9.3f} {forwards:5d}")
