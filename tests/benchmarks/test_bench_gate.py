"""The CI gate itself, measured: does `sysbench compare` cry wolf on identical code (A/A), does
it catch a real slowdown (A/B), is the default run stable and quick, do 2 threads help?

Not in the default test run (pytest's addopts ignore tests/benchmarks). Run it on a quiet
machine, as the README says:

    python -m pytest tests/benchmarks/test_bench_gate.py -s

SYSBENCH_GATE_PAIRS sets the number of A/A pairs (default 10). Every figure is printed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

PAIRS = int(os.environ.get("SYSBENCH_GATE_PAIRS", "10"))


def sysbench_run(out, *args, env=None):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sysbench", "run", *args, "-o", str(out)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), elapsed


def compare(base, new):
    proc = subprocess.run([sys.executable, "-m", "sysbench", "compare", str(base), str(new), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_a_a_identical_code_is_never_a_regression(tmp_path):
    false_positives, walls, unstable = [], [], []
    previous = None
    for i in range(PAIRS + 1):
        out = tmp_path / f"aa{i}.json"
        doc, wall = sysbench_run(out)
        walls.append(wall)
        unstable.append(sum(1 for c in doc["cases"] if (c["timing"] or {}).get("stable") is False))
        if previous is not None:
            result = compare(previous, out)
            false_positives.append(len(result["regressions"]))
            worst = max((c["ratio"] or 1.0 for c in result["cases"]), default=1.0)
            print(f"A/A pair {i}: {len(result['regressions'])} regression(s) {result['regressions']}, "
                  f"largest median ratio {worst:.2f}x")
        previous = out
    print(f"A/A: {PAIRS} pairs of back-to-back quick runs; false positives per pair {false_positives} "
          f"(total {sum(false_positives)}); unstable cases per run {unstable}; "
          f"wall per run {min(walls):.1f}-{max(walls):.1f} s")
    assert sum(false_positives) == 0
    assert max(walls) <= 10.0, "the default run should take at most 10 s"
    assert sum(unstable) == 0, "on a quiet machine no case of the default run is unstable"


def test_a_b_scalar_kernels_are_caught(tmp_path):
    base, new = tmp_path / "base.json", tmp_path / "scalar.json"
    sysbench_run(base)
    sysbench_run(new, env={"SYSBENCH_ISA": "scalar"})
    result = compare(base, new)
    slowed, missed, wrongly = [], [], []
    for case in result["cases"]:
        ratio = case["ratio"]
        if ratio is None:
            continue
        called = case["timing"] == "regression"
        if ratio >= 2.0:
            slowed.append(f"{case['id']} {ratio:.1f}x")
            if not called:
                missed.append(case["id"])
        elif ratio < 1.10 and called:
            wrongly.append(case["id"])
        print(f"A/B {case['id']}: {ratio:.2f}x noise {case['noise_floor'] or 0:.2f}x -> {case['timing']}")
    print(f"A/B: {len(slowed)} case(s) slowed >= 2x by SYSBENCH_ISA=scalar, {len(missed)} missed "
          f"{missed}; {len(wrongly)} unslowed case(s) called a regression {wrongly}")
    assert slowed, "the scalar kernels should slow gemm, conv2d, sparse_gemm and sample"
    assert not missed and not wrongly


def test_two_threads_are_never_slower_than_one(tmp_path):
    one, _ = sysbench_run(tmp_path / "t1.json", "gemm", "--threads", "1")
    two, _ = sysbench_run(tmp_path / "t2.json", "gemm", "--threads", "2")
    t1 = {c["id"]: c["timing"]["median_s"] for c in one["cases"] if c["timing"]}
    t2 = {c["id"]: c["timing"]["median_s"] for c in two["cases"] if c["timing"]}
    slower = sorted(i for i in t1 if t2[i] > t1[i])
    speedups = sorted(t1[i] / t2[i] for i in t1)
    print(f"gemm --threads 2 vs 1: {len(slower)} of {len(t1)} case(s) slower on 2 threads {slower}; "
          f"median speed-up {speedups[len(speedups) // 2]:.2f}x (min {speedups[0]:.2f}x, max {speedups[-1]:.2f}x)")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU")
    assert not slower
