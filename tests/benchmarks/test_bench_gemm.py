"""Speed of the bit-exact systolic GEMM against numpy matmul on the same float32 inputs.

Run with the machine's OpenBLAS tuning variables unset (they slow numpy down):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest tests/benchmarks/test_bench_gemm.py
Target: fp32 fold-order GEMM 1024^3 with fold depth 128 (a 128x128 ws array), one thread,
at least 0.5x numpy's speed measured in the same run, numpy's BLAS also held to one thread
(threadpoolctl) so that the ratio compares like with like.
"""
from __future__ import annotations


import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sysbench._kernels import systolic
from sysbench.numerics import gemm_error_bound

N = 1024
FOLD = 128
TARGET = 0.5


@pytest.fixture(scope="module")
def operands():
    rng = np.random.default_rng(2024)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    return a, b


def test_bench_numpy_matmul(benchmark, operands):
    a, b = operands
    with threadpool_limits(limits=1, user_api="blas"):
        benchmark(np.matmul, a, b)


@pytest.mark.parametrize("chain", (False, True), ids=("fold", "chain"))
def test_bench_gemm_f32(benchmark, operands, chain):
    a, b = operands
    benchmark.extra_info["isa"] = systolic.isa()
    benchmark(systolic.gemm_f32, a, b, FOLD, chain, 1)


def test_bench_gemm_f32_two_threads(benchmark, operands):
    a, b = operands
    benchmark(systolic.gemm_f32, a, b, FOLD, False, 2)


def test_fold_gemm_at_least_half_numpy_speed_and_bit_exact(benchmark, operands, best_time):
    a, b = operands
    got = benchmark(systolic.gemm_f32, a, b, FOLD, False, 1)
    ours = best_time(lambda: systolic.gemm_f32(a, b, FOLD, False, 1), repeat=15)
    with threadpool_limits(limits=1, user_api="blas"):
        theirs = best_time(lambda: np.matmul(a, b), repeat=15)
    ratio = theirs / ours
    benchmark.extra_info.update(isa=systolic.isa(), ours_s=ours, numpy_s=theirs, ratio=ratio)
    print(f"\nfold gemm {N}^3 fold {FOLD} [{systolic.isa()}, 1 thread]: {ours * 1e3:.2f} ms; "
          f"numpy matmul {theirs * 1e3:.2f} ms; speed ratio {ratio:.3f}")
    # bit-exact: the portable scalar fmaf path computes the same contract independently
    previous = systolic.set_isa("scalar")
    try:
        ref = systolic.gemm_f32(a, b, FOLD, False, 2)
    finally:
        systolic.set_isa(previous)
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.all(np.abs(got - exact) <= gemm_error_bound(a, b, N))
    assert ratio >= TARGET
