"""Design-space sweeps: array families, the table path against the per-case path, the same
result serially, over processes and over mpi4py.futures ranks, summaries, CSV, faults."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import model_of, suite_toml
from typer.testing import CliRunner

from sysbench import cli, results, runner, sinks, suite as suite_mod, sweep
from sysbench.runner import CaseResult
from sysbench.workloads import registry

SWEEP = """
name = "dse"
[defaults]
numerics = false
array = "a"
[arrays.a]
rows = [4, 8]
cols = [4, 16]
dataflow = ["ws", "os", "is"]
weight_load = ["serial", "overlapped"]
[[cases]]
name = "fc"
kind = "gemm"
m = [1, 7, 64]
k = [3, 32]
n = 17
[[cases]]
name = "conv"
kind = "conv2d"
height = 9
width = [9, 12]
in_channels = 8
out_channels = 8
kernel = [[1, 1], 3]
stride = [[1, 1], [2, 2]]
padding = 1
groups = [1, 2, 8]
"""


def invoke(*args):
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_array_keys_sweep_into_a_named_family(write_suite):
    suite = suite_mod.load(str(write_suite(SWEEP)))
    [fc, conv] = suite.items
    assert isinstance(fc, sweep.Block) and len(fc) == 24 * 6 and len(conv) == 24 * 24
    names = [a.name for a in fc.arrays]
    assert len(names) == 24 and names[0] == "a[rows=4,cols=4,dataflow=ws,weight_load=serial]"
    assert names[-1] == "a[rows=8,cols=16,dataflow=is,weight_load=overlapped]"
    first = fc.cases(0, 1)[0]
    assert first.id == "dse/fc[array=a[rows=4,cols=4,dataflow=ws,weight_load=serial],m=1,k=3]"
    assert (first.array.rows, first.array.cols, first.array.weight_load) == (4, 4, "serial")
    assert len(suite) == len(suite.cases) == 144 + 576


def test_a_numerics_case_takes_the_whole_family_as_cases(write_suite):
    suite = suite_mod.load(str(write_suite(SWEEP.replace("numerics = false", "numerics = true"))))
    assert not any(isinstance(item, sweep.Block) for item in suite.items)
    assert len(suite.items) == 144 + 576


def test_the_table_path_gives_the_per_case_figures_bit_for_bit(write_suite):
    suite = suite_mod.load(str(write_suite(SWEEP)))
    for block in suite.items:
        chunk = sweep.evaluate(block, 0, len(block))
        assert not chunk.problems
        for row, case in zip(chunk.case_dicts(), block.cases()):
            expected = CaseResult(case, model_of(registry()[case.kind], case.params, case.array)).to_dict()
            assert json.loads(results.dumps(row)) == json.loads(results.dumps(expected)), case.id


@pytest.mark.parametrize("seed", range(4))
def test_table_path_on_random_layers(seed, write_suite):
    rng = np.random.default_rng(seed)
    dims = lambda: ", ".join(str(int(v)) for v in rng.integers(1, 300, 3))  # noqa: E731
    text = f"""
        [defaults]
        numerics = false
        array = "a"
        [arrays.a]
        rows = [{dims()}]
        cols = [{dims()}]
        dataflow = ["ws", "os", "is"]
        weight_load = ["serial", "overlapped"]
        dtype = ["fp32", "int8"]
        [[cases]]
        name = "g"
        kind = "gemm"
        m = [{dims()}]
        k = [{dims()}]
        n = [{dims()}]
        """
    [block] = suite_mod.load(str(write_suite(text))).items
    chunk = sweep.evaluate(block, 0, len(block))
    for row, case in zip(chunk.case_dicts(), block.cases()):
        assert row["metrics"] == model_of(registry()["gemm"], case.params, case.array), case.id


def test_table_checks_are_the_per_case_checks(write_suite):
    suite = write_suite(SWEEP.replace("groups = [1, 2, 8]", "groups = [1, 3]"))
    result = invoke("run", suite)
    assert result.exit_code == 2
    assert "case 'conv' key 'groups': in_channels = 8 is not divisible by groups = 3" in result.stderr


def _model_half(document: dict) -> list:
    return [{k: c[k] for k in ("id", "params", "array", "metrics")} for c in document["cases"]]


def test_serial_jobs_and_csv_agree(write_suite, tmp_path):
    suite = write_suite(SWEEP)
    serial, jobs, table = tmp_path / "serial.json", tmp_path / "jobs.json", tmp_path / "r.csv"
    assert invoke("run", suite, "-o", serial).exit_code == 0
    assert invoke("run", suite, "-o", jobs, "--jobs", "2").exit_code == 0
    a, b = results.load(serial), results.load(jobs)
    assert _model_half(a) == _model_half(b) and len(a["cases"]) == 720
    assert invoke("run", suite, "-o", table).exit_code == 0
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [c["id"] for c in a["cases"]]
    for row, case in zip(rows, a["cases"]):
        assert int(row["cycles"]) == case["metrics"]["cycles"] and int(row["array.rows"]) == case["array"]["rows"]
        assert float(row["utilization"]) == case["metrics"]["utilization"]  # repr round-trips
        if case["kind"] == "conv2d":
            assert row["params.kernel"] == "x".join(map(str, case["params"]["kernel"]))
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(table)
    assert len(frame) == 720 and frame["cycles"].sum() == sum(c["metrics"]["cycles"] for c in a["cases"])


def test_two_mpi4py_futures_workers_give_the_serial_result(write_suite, tmp_path):
    pytest.importorskip("mpi4py")
    from sysbench.distributed.launcher import find_mpiexec

    suite = write_suite(SWEEP)
    serial, mpi = tmp_path / "serial.json", tmp_path / "mpi.json"
    assert invoke("run", suite, "-o", serial).exit_code == 0
    proc = subprocess.run([find_mpiexec(), "-n", "3", sys.executable, "-m", "mpi4py.futures", "-m", "sysbench",
                           "run", str(suite), "--executor", "mpi", "-o", str(mpi)],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "MPIR_CVAR_ASYNC_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _model_half(results.load(serial)) == _model_half(results.load(mpi))


def test_summary_best_and_pareto_by_hand(write_suite, tmp_path):
    # one 64 x 64 x 64 GEMM on four ws arrays (serial preload): per fold 2R + C + 64 - 2 cycles,
    # folds = ceil(64/R) * ceil(64/C):  8x8: 64 folds x 86 = 5504;  8x16: 32 x 94 = 3008;
    # 16x8: 16 x ... (4 row folds x 8 col folds = 32) x 102 = 3264;  16x16: 16 x 110 = 1760
    suite = write_suite("""
        [arrays.a]
        rows = [8, 16]
        cols = [8, 16]
        [[cases]]
        name = "g"
        kind = "gemm"
        array = "a"
        numerics = false
        m = 64
        k = 64
        n = 64
        """)
    loaded = suite_mod.load(str(suite))
    summary = sinks.Summary({"gemm"})
    runner.run_suite(loaded.items, emit=summary.add)
    rows = {r["array"]: r for r in summary.configurations()}
    cycles = {name.split("[")[1].rstrip("]"): r["cycles"] for name, r in rows.items()}
    assert cycles == {"rows=8,cols=8": 5504, "rows=8,cols=16": 3008, "rows=16,cols=8": 3264,
                      "rows=16,cols=16": 1760}
    assert [r["cycles"] for r in sinks.best(list(rows.values()), 2, "cycles")] == [1760, 3008]
    # (cycles, PEs): 8x16 (3008, 128) beats 16x8 (3264, 128); 8x8 has the fewest PEs
    front = sinks.pareto(list(rows.values()))
    assert [(r["cycles"], r["pes"]) for r in front] == [(1760, 256), (3008, 128), (5504, 64)]


def test_big_sweeps_show_summaries_not_rows(write_suite):
    result = invoke("run", write_suite(SWEEP), "--top", "3", "--by", "utilization")
    assert result.exit_code == 0
    assert "best 3 of 24 configurations by utilization" in result.stderr
    assert "Pareto front of (cycles, PEs)" in result.stderr and "720 case(s) ran" in result.stderr
    assert "fc[array=" not in result.stderr   # no wall of rows
    assert "fc[array=" in invoke("run", write_suite(SWEEP), "--table").stderr


@pytest.mark.parametrize("args,fragment", [
    (["--jobs", "-1"], "--jobs must be 0 (every CPU) or more"),
    (["--executor", "dask://localhost:1"], "the executor is 'mpi'"),
    (["--executor", "mpi"], "--executor mpi runs inside an MPI job"),
    (["--by", "speed"], "--by must be one of cycles, utilization, energy, edp"),
])
def test_bad_sweep_options_are_one_line(write_suite, args, fragment):
    result = invoke("run", write_suite(SWEEP), *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.stderr


def test_an_absurd_sweep_needs_yes(write_suite, monkeypatch):
    monkeypatch.setattr(sweep, "MAX_CASES", 100)
    result = invoke("run", write_suite(SWEEP))
    assert result.exit_code == 2 and "720 cases, more than 100" in result.stderr and "--yes" in result.stderr
    assert invoke("run", write_suite(SWEEP), "--yes").exit_code == 0


def _die(task, limit=None, prepare=None):
    os._exit(9)  # a worker killed mid-task


def test_a_worker_that_dies_loses_its_cases_and_writes_nothing(write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "model_task", _die)
    monkeypatch.setattr(sweep, "CHUNK_ROWS", 64)
    out = tmp_path / "r.json"
    result = invoke("run", write_suite(SWEEP), "--jobs", "2", "-o", out)
    assert result.exit_code == 2
    assert "the model phase lost its worker" in result.stderr and "dse/fc" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".r.json.*"))


TIMED = suite_toml(dict(name="g", kind="gemm", array="a", m=[8, 16, 24], k=32, n=16, repeats=2, rounds=2,
                        min_time=0.0001), name="timed", arrays={"a": {"rows": 8, "cols": 8}})

def test_parallel_timed_cases_are_opt_in_and_not_gated(write_suite, tmp_path):
    suite = write_suite(TIMED)
    serial, parallel = tmp_path / "serial.json", tmp_path / "parallel.json"
    assert invoke("run", suite, "-o", serial, "--jobs", "2").exit_code == 0
    result = invoke("run", suite, "-o", parallel, "--jobs", "2", "--parallel-timed")
    assert result.exit_code == 0 and "--parallel-timed: 2 cases are timed at a time" in result.stderr
    a, b = results.load(serial), results.load(parallel)
    assert a["settings"]["parallel_timed"] == 1 and b["settings"]["parallel_timed"] == 2
    assert _model_half(a) == _model_half(b)                    # same cases, same order
    for case in b["cases"]:
        assert case["validation"]["passed"] and len(case["timing"]["samples_s"]) == 2 * 2
        assert case["timing"]["sample_rounds"] == [0, 0, 1, 1]
    assert len(b["settings"]["controls"]) == 2 * 2              # each worker's canary, every round
    compared = invoke("compare", serial, parallel)
    # the report wraps at the terminal width: compare the words, not the line breaks
    assert "timed cases in parallel (--parallel-timed)" in " ".join((compared.stderr + compared.stdout).split())


def test_parallel_timed_needs_jobs(write_suite):
    result = invoke("run", write_suite(TIMED), "--parallel-timed")
    assert result.exit_code == 2 and "--parallel-timed goes with --jobs N" in result.stderr


def test_csv_rows_formatted_in_workers_are_the_parents(write_suite, tmp_path, monkeypatch):
    suite = write_suite(SWEEP)   # two blocks of two kinds: the second one's columns are new
    serial, jobs = tmp_path / "s.csv", tmp_path / "j.csv"
    assert invoke("run", suite, "-o", serial).exit_code == 0
    assert invoke("run", suite, "-o", jobs, "--jobs", "2").exit_code == 0
    assert serial.read_bytes() == jobs.read_bytes()
    # a worker's rows are taken as they are when they extend the sink's columns, else remade
    blocks = suite_mod.load(str(suite)).items
    chunks = [sweep.evaluate(block, 0, len(block)) for block in blocks]
    for chunk in chunks:
        sinks.render_csv(chunk)
    remade = []
    table_rows = sinks.table_rows
    monkeypatch.setattr(sinks, "table_rows", lambda chunk, columns: remade.append(chunk) or table_rows(chunk, columns))
    with open(tmp_path / "w.csv", "wb") as handle:
        sink = sinks.CsvSink(handle)
        for chunk in chunks:
            sink.add(chunk)
        sink.close()
    assert remade == chunks[1:] and (tmp_path / "w.csv").read_bytes() == serial.read_bytes()
