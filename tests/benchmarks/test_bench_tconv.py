"""Speed of transposed convolution by strided tiling per kernel element, on the layers of the
bundled `tconv` suite (128x128 ws fp32 array, bit-exact array GEMMs), against two peers
measured in the same run with the same number of threads (best of interleaved rounds of a
few calls each, best_times):

* zero insertion on the same array (dilate, pad, im2col conv): target >= 2x faster for every
  stride-2 layer, batch 1 and 8;
* torch CPU conv_transpose2d (oneDNN, plain fp32, no array order): target at most torch's
  time at batch 8 and 1.5x at batch 1 (TORCH_TARGET), except the layers in SHORT_OF_TARGET,
  which are held to the highest ratio measured on the CPUs the project runs on instead, so
  that a regression still fails. Skipped when torch is not installed.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest tests/benchmarks/test_bench_tconv.py -s

`-s` prints one line per layer with both times and the ratio. SYSBENCH_BENCH_THREADS sets the
threads (default 1) for the kernels and for torch. The ratios use the best of interleaved
rounds, so that a burst of load from other processes hits both sides alike; with one thread
they time the calling thread's CPU time (time.thread_time), which a busy machine's
descheduling does not inflate (add --benchmark-timer=time.thread_time for the table too).
With more threads they use wall time, and an oversubscribed machine makes OpenMP's
barriers, and so those figures, meaningless.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from sysbench import suite
from sysbench.workloads import tconv2d as T

THREADS = int(os.environ.get("SYSBENCH_BENCH_THREADS", "1"))
ZERO_INSERTION_TARGET = 2.0  # strided at least this many times faster, stride-2 layers
TORCH_TARGET = {8: 1.0, 1: 1.5}  # strided at most this many times torch's time, by batch
# (layer, batch, threads) that miss TORCH_TARGET in some runs on some of the project's CPUs:
# the bound is the highest ratio measured (best of interleaved rounds) with some room. On the
# 2-core Intel Xeon (AVX-512, FP16, AMX; oneDNN's best path), since threads own whole blocks of
# output channels and the per-tap kernel runs there (session of 2026-12-03, four runs at each
# thread count), every layer is 0.67-0.98 at batch 8, 1 and 2 threads (before: DCGAN 256->128
# 1.04-1.11 and stride 1 1.02-1.04 at 2 threads). On an AMD EPYC Zen 5 (AVX-512) every layer
# is at most 0.94 at batch 8, 1 and 2 threads, since
# the systolic B packing lost its `rep movsq` (DCGAN 512->256 1.09-1.38 -> 0.73-0.83; session
# of 2026-12-02, two runs of this file at each thread count). On an AMD EPYC Zen 3
# (AVX2 only) stride 1 stays at 1.08-1.15 at 1 and 2 threads: 9 taps of 64 channels each end
# in the per-element rounding the README's order asks for, and the 6 x 16 micro-kernel runs at
# ~97 GFLOP/s there, where oneDNN's single chain runs the layer at ~95; the rest <= 0.94.
# On an AMD EPYC Zen 4 (AVX-512 on 256-bit units) DCGAN 512->256, 256->128 and stride 1
# measure 0.95-1.11 at 1 and 2 threads (1.11 once for 512->256, else at most 1.05), 128->64
# 0.91-0.98, the rest <= 0.95 (second session of 2026-12-02, three runs at each thread count,
# after the phase path's packing, store and part-kernel changes). Third Zen 4 session
# (2026-12-03, fused taps and direct stores): those three 0.94-1.06 at 1 and 2 threads,
# stride 1 0.96-1.06, the rest <= 0.98 (one 2-thread run on a loaded moment: 128->64 1.16,
# stride 3 1.14). Fourth Zen 4 session (x in place, 8-row weight pack in registers,
# image-major scatter): every layer 0.82-1.00 at 1 thread and 0.85-0.98 at 2 (four runs
# each; one 2-thread run on a loaded moment had DCGAN 256->128 at 1.17). Owned blocks and
# the new rounds of best_times are not measured on Zen 3, 4 or 5 yet.
SHORT_OF_TARGET = {(name, 8, threads): bound for threads in (1, 2) for name, bound in (
    ("dcgan-256-128-h8", 1.15), ("dcgan-128-64-h16", 1.15), ("s1-64-64-h32-k3", 1.25),
    ("dcgan-512-256-h4", 1.15))}

CASES = suite.load("tconv").cases
IDS = [f"{c.name}-b{c.params['batch']}" for c in CASES]


def operands(case):
    rng = np.random.default_rng(case.seed)
    inputs = T.WORKLOAD.inputs(case.params, case.array, T.WORKLOAD.plan(case.params, case.array), rng)
    return inputs.x, inputs.w, case.params, case.array


def best_times(*fns, budget_s=2.0, min_rounds=3, max_rounds=15, group=3):
    """Best time of each function over interleaved rounds, `group` calls of each in a row per
    round: the first call of a group can find the other side's OpenMP threads still spinning
    on the cores (torch and the kernels each bring their own libgomp), the next ones find
    the machine as their own last call left it, as a user's loop does. On two threads of an
    Intel Xeon, our layers right after a torch call ran 6-12% slower than right after their
    own (torch right after ours: -9% to +5%), which one call a round charged to us: stride 1
    measured 1.02-1.04x torch's time there, 0.86-0.89x with each side timed alone."""
    clock = time.thread_time if THREADS == 1 else time.perf_counter
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    start, rounds = time.perf_counter(), 0
    while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() - start < budget_s):
        for i, fn in enumerate(fns):
            for _ in range(group):
                t0 = clock()
                fn()
                best[i] = min(best[i], clock() - t0)
        rounds += 1
    return best


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_strided_vs_zero_insertion(benchmark, case):
    x, w, p, array = operands(case)
    benchmark.group = f"tconv {case.name} b{p['batch']}"
    out = benchmark(T.tconv2d_strided, x, w, p, array, THREADS)
    ours, theirs = best_times(lambda: T.tconv2d_strided(x, w, p, array, THREADS),
                             lambda: T.tconv2d_zero_insertion(x, w, p, array, THREADS))
    ratio = theirs / ours
    model = T.WORKLOAD.model(p, array, T.WORKLOAD.plan(p, array))
    benchmark.extra_info.update(strided_s=ours, zero_insertion_s=theirs, ratio=ratio,
                                mac_saving=model["mac_saving"], threads=THREADS)
    print(f"\n{case.name} b{p['batch']} [{THREADS} thread(s)]: strided {ours * 1e3:.2f} ms, "
          f"zero insertion {theirs * 1e3:.2f} ms, speed-up {ratio:.2f}x "
          f"(MAC saving {model['mac_saving']:.2f}x, model cycle speed-up {model['speedup']:.2f}x)")
    # the two computations agree (each within its bound of the exact value)
    baseline = T.tconv2d_zero_insertion(x, w, p, array, THREADS)
    assert np.all(np.abs(out - baseline) <= T.error_bound(x, w, p) + T.error_bound(x, w, p, True))
    if p["stride"] == (2, 2):
        assert ratio >= ZERO_INSERTION_TARGET


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_strided_vs_torch(benchmark, case):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    x, w, p, array = operands(case)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)

    def torch_layer():
        with torch.no_grad():
            return torch.nn.functional.conv_transpose2d(
                tx, tw, stride=p["stride"], padding=p["padding"], output_padding=p["output_padding"],
                dilation=p["dilation"], groups=p["groups"])

    batch = p["batch"]
    benchmark.group = f"tconv {case.name} b{batch} vs torch"
    out = benchmark(T.tconv2d_strided, x, w, p, array, THREADS)
    ours, theirs = best_times(lambda: T.tconv2d_strided(x, w, p, array, THREADS), torch_layer)
    ratio = ours / theirs
    benchmark.extra_info.update(strided_s=ours, torch_s=theirs, time_ratio=ratio, threads=THREADS)
    target = SHORT_OF_TARGET.get((case.name, batch, THREADS), TORCH_TARGET[batch])
    print(f"\n{case.name} b{batch} [{THREADS} thread(s)]: strided {ours * 1e3:.2f} ms, torch "
          f"{theirs * 1e3:.2f} ms, strided/torch time {ratio:.2f} (target <= {target})")
    assert np.all(np.abs(out - torch_layer().numpy()) <= 2 * T.error_bound(x, w, p, True))
    assert ratio <= target
