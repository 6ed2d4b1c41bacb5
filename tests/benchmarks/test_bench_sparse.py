"""Speed of the N:M kernels.

Run with the machine's OpenBLAS tuning variables unset (they slow numpy down):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest tests/benchmarks/test_bench_sparse.py -s
Targets:
* decompose of a 4096 x 4096 fp32 matrix at density 0.5 into 2:4 parts: at least 10x a
  straightforward vectorised numpy implementation (below) measured in the same run, one
  thread each; GB/s of weights processed is reported.
* the compressed 2:4 sparse GEMM (one pass, K*N/M = 512 compressed rows) on 1024^3 against
  the dense fast kernel (gemm_f32, fold depth 128: a 128x128 ws array) on the same weights,
  one thread each: the target is faster than dense, since it does half the multiply-adds.
  The ratio is reported; the assertion only guards against falling far behind (0.75x),
  because on a CPU with two 512-bit FMA pipes the per-column selection of A (a load per
  multiply-add) costs about as much as the multiply-adds saved (see the README).
"""
from __future__ import annotations


import numpy as np
import pytest

from sysbench._kernels import sparse, systolic
from sysbench.numerics import gemm_error_bound

BIG = 4096
N = 1024
FOLD = 128


def decompose_numpy(w, n, m):
    """The straightforward vectorised version: rank of each nonzero in its group by a
    cumulative sum, then one fancy-indexed scatter into the passes."""
    k, cols = w.shape
    groups = -(-k // m)
    padded = np.zeros((groups * m, cols), dtype=np.float32)
    padded[:k] = w
    grouped = padded.reshape(groups, m, cols)
    nonzero = grouped != 0
    rank = np.cumsum(nonzero, axis=1) - 1
    passes = -(-int(nonzero.sum(axis=1).max()) // n)
    values = np.zeros((passes, groups * n, cols), dtype=np.float32)
    indices = np.zeros((passes, groups * n, cols), dtype=np.uint8)
    g, q, c = np.nonzero(nonzero)
    r = rank[g, q, c]
    values[r // n, g * n + r % n, c] = grouped[g, q, c]
    indices[r // n, g * n + r % n, c] = q
    return values, indices


@pytest.fixture(scope="module")
def big_weights():
    rng = np.random.default_rng(2024)
    w = rng.standard_normal((BIG, BIG), dtype=np.float32)
    w[rng.random((BIG, BIG)) >= 0.5] = 0
    return w


def nm_weights(rng, k, cols, n, m):
    """Weights pruned to N:M already: every group keeps n random positions per column."""
    w = rng.standard_normal((k, cols), dtype=np.float32)
    keep = np.argsort(rng.random((k // m, m, cols)), axis=1)[:, :n]
    mask = np.zeros((k // m, m, cols), dtype=bool)
    np.put_along_axis(mask, keep, True, axis=1)
    return np.where(mask.reshape(k, cols), w, np.float32(0))


def test_bench_decompose(benchmark, big_weights):
    benchmark.extra_info["gb_per_s"] = None
    values, _ = benchmark(sparse.decompose, big_weights, 2, 4, 1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gb_per_s"] = big_weights.nbytes / benchmark.stats.stats.min / 1e9
    assert values.shape == (2, BIG // 2, BIG)


def test_bench_decompose_two_threads(benchmark, big_weights):
    benchmark(sparse.decompose, big_weights, 2, 4, 2)


def test_bench_decompose_numpy(benchmark, big_weights):
    benchmark.pedantic(decompose_numpy, args=(big_weights, 2, 4), rounds=3, iterations=1)


def test_decompose_at_least_10x_numpy(big_weights, best_time):
    ours = best_time(lambda: sparse.decompose(big_weights, 2, 4, 1), repeat=7)
    theirs = best_time(lambda: decompose_numpy(big_weights, 2, 4), repeat=3)
    gbps = big_weights.nbytes / ours / 1e9
    written = sum(x.nbytes for x in sparse.decompose(big_weights, 2, 4, 1))
    print(f"\ndecompose {BIG}x{BIG} fp32 density 0.5 -> 2:4 [1 thread]: {ours * 1e3:.1f} ms "
          f"({gbps:.2f} GB/s of weights read, {(big_weights.nbytes + written) / ours / 1e9:.2f} GB/s "
          f"read + written); numpy {theirs * 1e3:.0f} ms; speed-up {theirs / ours:.1f}x")
    got, expected = sparse.decompose(big_weights, 2, 4, 1), decompose_numpy(big_weights, 2, 4)
    assert np.array_equal(got[0].view(np.uint32), expected[0].view(np.uint32))
    assert np.array_equal(got[1], expected[1])
    assert theirs / ours >= 10


@pytest.fixture(scope="module", params=[(2, 4), (1, 4), (2, 8)], ids=["2:4", "1:4", "2:8"])
def gemm_case(request):
    n, m = request.param
    rng = np.random.default_rng(7)
    w = nm_weights(rng, N, N, n, m)
    a = rng.standard_normal((N, N), dtype=np.float32)
    values, indices = sparse.decompose(w, n, m)
    assert values.shape[0] == 1
    return n, m, a, w, values, indices


def test_bench_spmm(benchmark, gemm_case):
    n, m, a, w, values, indices = gemm_case
    benchmark.extra_info["isa"] = sparse.isa()
    benchmark(sparse.spmm, a, values, indices, n, m, FOLD, 1)


def test_bench_dense_same_weights(benchmark, gemm_case):
    n, m, a, w, values, indices = gemm_case
    benchmark(systolic.gemm_f32, a, w, FOLD, False, 1)


def test_spmm_against_dense(gemm_case, best_time):
    n, m, a, w, values, indices = gemm_case
    sparse_s = best_time(lambda: sparse.spmm(a, values, indices, n, m, FOLD, 1), repeat=15)
    dense_s = best_time(lambda: systolic.gemm_f32(a, w, FOLD, False, 1), repeat=15)
    ratio = dense_s / sparse_s
    print(f"\nspmm {n}:{m} {N}^3 [{sparse.isa()}, 1 thread]: {sparse_s * 1e3:.2f} ms; dense gemm_f32 "
          f"[{systolic.isa()}] {dense_s * 1e3:.2f} ms; speed-up over dense {ratio:.2f}x "
          f"(MACs: {n}/{m} of dense; target > 1)")
    got = sparse.spmm(a, values, indices, n, m, FOLD, 1)
    # another micro-kernel path (on AVX-512: the AVX2 kernel) must give the same bits; a
    # CPU with only the scalar path has nothing to compare with
    other = next((isa for isa in sparse.available_isas() if isa != sparse.isa()), None)
    if other is not None:
        previous = sparse.set_isa(other)
        try:
            ref = sparse.spmm(a, values, indices, n, m, FOLD, 2)
        finally:
            sparse.set_isa(previous)
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    exact = a.astype(np.float64) @ w.astype(np.float64)
    assert np.all(np.abs(got - exact) <= gemm_error_bound(a, w, N))
    assert ratio >= 0.75
