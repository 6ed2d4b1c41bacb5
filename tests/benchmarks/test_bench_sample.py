"""Speed of chunked cumulative-sum sampling against numpy and torch on the same float32 weights.

Run with the machine's OpenBLAS tuning variables unset:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest tests/benchmarks/test_bench_sample.py -s
Peers (same inputs, same thread count in one run; numpy is single-threaded anyway):
numpy cumsum + searchsorted, numpy probs.sum(axis=1) (one read of the array: the floor), and,
when torch is installed, torch.cumsum + torch.searchsorted and torch.multinomial.
Targets for chunk_select with 128 units at 64 x 128000, one thread: >= 3x faster than torch
cumsum + searchsorted, >= 10x faster than numpy cumsum + searchsorted, and no slower than
numpy's probs.sum(axis=1). test_chunk_select_ratios prints every ratio (run with -s).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from sysbench._kernels import sample as kernel

VOCAB = 128_000
UNITS = 128
SHAPES = {"64x128000": (64, VOCAB), "1x128000": (1, VOCAB)}
TARGETS = {"torch_cumsum_searchsorted": 3.0, "numpy_cumsum_searchsorted": 10.0, "numpy_sum": 1.0}


@pytest.fixture(scope="module", params=list(SHAPES))
def inputs(request):
    batch, vocab = SHAPES[request.param]
    rng = np.random.default_rng(2024)
    logits = rng.standard_normal((batch, vocab), dtype=np.float32) * np.float32(2.0)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return request.param, probs, rng.random(batch)


def numpy_cumsum_searchsorted(probs, u):
    cum = np.cumsum(probs, axis=1)
    return np.array([np.searchsorted(row, x * row[-1], side="right") for row, x in zip(cum, u)])


def torch_peers(threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)

    def cumsum_searchsorted(p, u):
        cum = torch.cumsum(p, dim=1)
        return torch.searchsorted(cum, (u * cum[:, -1]).unsqueeze(1), right=True)

    def multinomial(p, _u):
        return torch.multinomial(p, 1)

    return torch, cumsum_searchsorted, multinomial


def best_times(fns: dict, rounds=12) -> dict:
    """Best time of each callable, timed in interleaved rounds so that the load of a shared
    machine falls on all of them alike. Each timed call of a fast callable follows an untimed
    one, so that every callable finds the array in cache as its own last call left it."""
    best = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        best[name] = time.perf_counter() - t0
    fast = {name for name, t in best.items() if t < 0.01}
    for _ in range(rounds):
        for name, fn in fns.items():
            if name in fast:
                fn()
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("method", ["chunk_select", "full_scan"])
@pytest.mark.parametrize("units", [1, 16, UNITS])
def test_bench_sample(benchmark, inputs, method, units):
    _, probs, u = inputs
    benchmark.extra_info["isa"] = kernel.isa()
    benchmark(kernel.sample, probs, u, units, method, 1)


def test_bench_numpy_cumsum_searchsorted(benchmark, inputs):
    _, probs, u = inputs
    benchmark(numpy_cumsum_searchsorted, probs, u)


def test_bench_numpy_sum(benchmark, inputs):
    _, probs, _ = inputs
    benchmark(probs.sum, axis=1)


@pytest.mark.parametrize("peer", ["cumsum_searchsorted", "multinomial"])
def test_bench_torch(benchmark, inputs, peer):
    torch, cumsum_searchsorted, multinomial = torch_peers(1)
    _, probs, u = inputs
    p, ut = torch.from_numpy(probs), torch.from_numpy(u.astype(np.float32))
    benchmark(cumsum_searchsorted if peer == "cumsum_searchsorted" else multinomial, p, ut)


@pytest.mark.parametrize("threads", [1, 2])
def test_chunk_select_ratios(inputs, threads):
    """Every ratio printed (peer time / chunk_select time: > 1 means we are faster). The
    targets are asserted at 64 x 128000 with one thread: on two shared cores a two-thread run
    is at the mercy of other processes (and of torch's own OpenMP pool), so it is reported."""
    name, probs, u = inputs
    peers = best_times({
        "chunk_select": lambda: kernel.sample(probs, u, UNITS, "chunk_select", threads),
        "full_scan": lambda: kernel.sample(probs, u, UNITS, "full_scan", threads),
        "numpy_cumsum_searchsorted": lambda: numpy_cumsum_searchsorted(probs, u),
        "numpy_sum": lambda: probs.sum(axis=1),
    })
    # torch is timed after ours, not interleaved: on a loaded 2-core machine a 2-thread OpenMP
    # region stalls for whole scheduler ticks (4-30 ms) whenever the other core is busy, and
    # right after torch's own 2-thread runs it did so every time, which would time torch's
    # side effect rather than our kernel
    try:
        torch, cumsum_searchsorted, multinomial = torch_peers(threads)
    except pytest.skip.Exception:
        torch = None
    if torch is not None:
        p, ut = torch.from_numpy(probs), torch.from_numpy(u.astype(np.float32))
        peers.update(best_times({"torch_cumsum_searchsorted": lambda: cumsum_searchsorted(p, ut),
                                 "torch_multinomial": lambda: multinomial(p, ut)}))
    ours, full = peers.pop("chunk_select"), peers.pop("full_scan")
    ratios = {peer: t / ours for peer, t in peers.items()}
    print(f"\n{name} [{kernel.isa()}, {threads} thread(s), {UNITS} units]: chunk_select "
          f"{ours * 1e3:.3f} ms, full_scan {full * 1e3:.3f} ms")
    for peer, t in peers.items():
        print(f"  {peer:28s} {t * 1e3:9.3f} ms   ratio {ratios[peer]:7.2f}x")

    assert np.array_equal(kernel.sample(probs, u, UNITS, "chunk_select", threads),
                          kernel.sample(probs, u, UNITS, "full_scan", 1))
    if name == "64x128000" and threads == 1:
        for peer, target in TARGETS.items():
            if peer in ratios:
                assert ratios[peer] >= target, f"{peer}: {ratios[peer]:.2f}x < {target}x"
