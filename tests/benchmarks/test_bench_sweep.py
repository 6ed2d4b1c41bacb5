"""Design-space sweeps end to end: configurations per second through `sysbench run` (TOML to a
written CSV), at --jobs 1 and 2, peak memory, and the time split into expand (suite loading),
model, write and render. Targets (issue 17): >= 100,000 layer-configurations per second per
core end to end; the 1M sweep under 1 GB peak RSS; the 10,800-case sweep (108 arrays x 100
GEMM shapes, 13.7 s before the table path) at least 20x faster, i.e. under 0.685 s.

    python -m pytest tests/benchmarks/test_bench_sweep.py -s
"""
from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import time

import pytest

ARRAYS = {  # rows x cols x dataflow members of the swept family
    10_000: ([8, 16, 32, 64, 128], [8, 16, 32, 64, 128]),
    100_000: ([8, 16, 24, 32, 48, 64, 96, 128, 192, 256], [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]),
    1_000_000: ([4, 8, 12, 16, 24, 32, 48, 64, 96, 128], [4, 8, 12, 16, 24, 32, 48, 64, 96, 128]),
}


def sweep_suite(n: int) -> str:
    rows, cols = ARRAYS[n]
    arrays = len(rows) * len(cols) * 3
    shapes = n // arrays  # GEMM shapes: m values x 10 k x 10 n
    m = [16 * (i + 1) for i in range(max(1, shapes // 100))]
    return f"""name = "sweep{n}"
[defaults]
numerics = false
array = "a"
[arrays.a]
rows = {rows}
cols = {cols}
dataflow = ["ws", "os", "is"]
[[cases]]
name = "g"
kind = "gemm"
m = {m}
k = {[64 * (i + 1) for i in range(10)]}
n = {[32 * (i + 1) for i in range(10)]}
"""


def the_10800_sweep() -> str:
    """The issue's sweep: 108 arrays (6 rows x 6 cols x 3 dataflows) x 100 GEMM shapes."""
    return """name = "dse"
[defaults]
numerics = false
array = "a"
[arrays.a]
rows = [8, 16, 32, 64, 128, 256]
cols = [8, 16, 32, 64, 128, 256]
dataflow = ["ws", "os", "is"]
[[cases]]
name = "g"
kind = "gemm"
m = [64, 128, 256, 512, 1024]
k = [64, 256, 1024, 4096]
n = [64, 128, 256, 512, 1024]
"""


def end_to_end(path, out, jobs: int) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `sysbench run` process (with --jobs 2, the larger of
    its own and its workers'). Its own peak is its VmHWM: Linux carries ru_maxrss across
    exec, so a child of a large pytest process would report the parent's size (3.9 GB
    after the other benchmarks of a `pytest tests/benchmarks` run)."""
    code = ("import resource, runpy, sys; sys.argv = ['sysbench'] + sys.argv[1:];"
            "\ntry: runpy.run_module('sysbench', run_name='__main__')"
            "\nfinally:"
            "\n    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
            "\n    try: own = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
            "\n    except (OSError, StopIteration): pass"
            "\n    print(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "run", str(path), "-o", str(out), "--jobs", str(jobs)],
                          capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    own_kib, workers_kib = (int(v) for v in proc.stderr.strip().splitlines()[-1].split())
    return wall, (own_kib if jobs == 1 else max(own_kib, workers_kib)) / 1024


def split(path, out) -> dict:
    """The same run in this process, phase by phase."""
    from rich.console import Console

    from sysbench import output, report, runner, sinks, suite

    times = {}
    start = time.perf_counter()
    loaded = suite.load(str(path))
    times["expand"] = time.perf_counter() - start
    chunks = []
    start = time.perf_counter()
    runner.run_suite(loaded.items, emit=chunks.append)
    times["model"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = sinks.Summary({"gemm"})
    with output.writing(out) as handle:
        csv = sinks.CsvSink(handle)
        for chunk in chunks:
            csv.add(chunk)
            summary.add(chunk)
        csv.close()
    times["write"] = time.perf_counter() - start
    start = time.perf_counter()
    report.render_sweep(summary, Console(file=io.StringIO(), width=100))
    times["render"] = time.perf_counter() - start
    return times


@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000])
def test_configurations_per_second(n, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(sweep_suite(n))
    from sysbench import suite

    cases = len(suite.load(str(path)))
    phases = split(path, tmp_path / "split.csv")
    lines = []
    for jobs in (1, 2):
        wall, rss = end_to_end(path, tmp_path / f"r{jobs}.csv", jobs)
        lines.append(f"--jobs {jobs}: {wall:.2f} s, {cases / wall:,.0f} configurations/s, peak RSS {rss:.0f} MiB")
        if jobs == 1 and n == 1_000_000:
            assert rss < 1024, f"peak RSS {rss:.0f} MiB"
        if jobs == 1 and n >= 100_000:
            assert cases / wall >= 100_000, lines[-1]
    print(f"\n{cases:,} configurations: " + "; ".join(lines) + " | in-process split: "
          + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items()))


def test_the_10800_case_sweep_is_20x_faster(tmp_path):
    path = tmp_path / "dse.toml"
    path.write_text(the_10800_sweep())
    best = min(end_to_end(path, tmp_path / "r.csv", 1)[0] for _ in range(3))
    print(f"\n10,800-case sweep, whole process: {best:.3f} s ({13.7 / best:.0f}x faster than 13.7 s)")
    assert best <= 13.7 / 20


def test_resnet50_model_only_as_a_whole_process():
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "sysbench", "run", "resnet50"], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "COLUMNS": "100"})
        walls.append(time.perf_counter() - start)
        assert proc.returncode == 0
    help_walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sysbench", "--help"], capture_output=True, timeout=60)
        help_walls.append(time.perf_counter() - start)
    print(f"\nsysbench run resnet50 (108 model-only cases): best {min(walls):.3f} s, median "
          f"{sorted(walls)[2]:.3f} s; sysbench --help: best {min(help_walls):.3f} s")
    assert min(walls) <= 0.45
