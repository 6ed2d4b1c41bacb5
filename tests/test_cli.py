"""The command line end to end: exit codes, one-line errors, results written atomically.

In-process through Typer's CliRunner (one real process: `python -m sysbench` itself)."""
import json
import os
import subprocess
import sys
import traceback
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from sysbench import cli, results

SMALL = """
name = "small"
[arrays.a]
rows = 4
cols = 4
dataflow = "{dataflow}"
dtype = "{dtype}"
[[cases]]
name = "g"
kind = "gemm"
array = "a"
m = 5
k = 9
n = 3
repeats = 2
[[cases]]
name = "c"
kind = "conv2d"
array = "a"
batch = 2
height = 5
width = 6
in_channels = 4
out_channels = 4
kernel = [3, 2]
padding = 1
groups = 2
repeats = 1
"""


def sysbench(*args, cwd=None):
    """Run the CLI in this process; returncode/stdout/stderr as a subprocess would give (a
    traceback the CLI let escape lands in stderr, where the tests look for one)."""
    previous = os.getcwd()
    os.chdir(cwd or previous)
    try:
        result = CliRunner().invoke(cli.app, [str(a) for a in args])
    finally:
        os.chdir(previous)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=stderr)


def test_python_m_sysbench_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "sysbench", "run", "resnet50", "--filter", "fc[array=a32"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "fc" in proc.stderr, proc.stderr


def assert_clean_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.mark.parametrize("dataflow,dtype", [("ws", "fp32"), ("os", "bf16"), ("is", "int8"), ("ws", "fp16")])
def test_run_writes_validated_result(tmp_path, dataflow, dtype):
    suite = tmp_path / "s.toml"
    suite.write_text(SMALL.format(dataflow=dataflow, dtype=dtype))
    out = tmp_path / "out" / "r.json"
    proc = sysbench("run", str(suite), "--output", str(out), "--json", "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    doc = results.load(out)
    assert json.loads(proc.stdout) == doc
    assert doc["schema"] == "sysbench.result/2" and doc["machine"]["threads"] == 2
    cases = {c["id"]: c for c in doc["cases"]}
    assert set(cases) == {"small/g", "small/c"}
    for case in cases.values():
        assert case["validation"]["passed"] and "emulator" in case["validation"]["reference"]
        assert case["timing"]["repeats"] * case["timing"]["rounds"] == len(case["timing"]["samples_s"])
        assert case["timing"]["min_s"] <= case["timing"]["median_s"] <= case["timing"]["max_s"]
        assert case["metrics"]["cycles"] > 0
    assert cases["small/c"]["params"]["kernel"] == [3, 2]
    assert (cases["small/g"]["timing"]["repeats"], cases["small/c"]["timing"]["repeats"]) == (2, 1)
    assert not list(out.parent.glob("*.tmp"))  # no temp file left behind


def test_default_run_is_quick_suite_from_any_directory(tmp_path):
    proc = sysbench("run", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["suite"] == "quick" and all(c["validation"]["passed"] for c in doc["cases"] if c["validation"])
    assert "suite quick" in proc.stderr  # the report table went to stderr


def test_filter_repeats_and_model_only(tmp_path):
    proc = sysbench("run", "resnet50", "--filter", "conv1[", "--repeats", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [c["id"] for c in doc["cases"]] == ["resnet50/conv1[array=a32]", "resnet50/conv1[array=a128]"]
    assert all(c["timing"] is None and c["validation"] is None for c in doc["cases"])


def test_show_renders_saved_result(tmp_path):
    out = tmp_path / "r.json"
    assert sysbench("run", "resnet50", "--filter", "fc", "-o", str(out)).returncode == 0
    proc = sysbench("show", str(out))
    assert proc.returncode == 0 and "fc" in proc.stderr and "49,024" in proc.stderr


def test_list():
    proc = sysbench("list")
    assert proc.returncode == 0
    for word in ("quick", "resnet50", "gemm", "conv2d"):
        assert word in proc.stderr


def test_bad_suite_key_is_exit_2_one_line(tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text(SMALL.format(dataflow="ws", dtype="fp32").replace("m = 5", "mm = 5"))
    proc = sysbench("run", str(suite))
    assert_clean_error(proc, f"{suite}: case 'g' key 'mm': unknown key for kind 'gemm' (did you mean 'm'?)",
                       "case 'g' key 'm': missing")


def test_suite_errors_print_brackets_verbatim(tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text('[defaults]\nrepeets = 3\n[[cases]]\nname = "g"\nkind = "gemm"\nm = 1\nk = 1\nn = 1\n')
    assert_clean_error(sysbench("run", str(suite)),
                       f"{suite}: [defaults] key 'repeets': unknown key (did you mean 'repeats'?)",
                       "case 'g' key 'array': missing and the suite defines no [arrays.*]")


@pytest.mark.parametrize("args,fragment", [
    (["run", "no_such_suite"], "no bundled suite or file"),
    (["run", "missing.toml"], "missing.toml: no such suite file"),
    (["run", "quick", "--filter", "zzz"], "matches no case"),
    (["show", "missing.json"], "missing.json: no such file"),
])
def test_usage_errors(args, fragment, tmp_path):
    assert_clean_error(sysbench(*args, cwd=tmp_path), fragment)


def test_show_rejects_corrupt_and_foreign_json(tmp_path):
    corrupt = tmp_path / "c.json"
    corrupt.write_text("{not json")
    assert_clean_error(sysbench("show", str(corrupt)), "not valid JSON")
    foreign = tmp_path / "f.json"
    foreign.write_text(json.dumps({"schema": "other/9", "cases": []}))
    assert_clean_error(sysbench("show", str(foreign)), "not a sysbench result", "other/9")


def test_unwritable_output_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = sysbench("run", "resnet50", "--filter", "fc[array=a32", "-o", str(blocker / "r.json"))
    assert_clean_error(proc, "cannot write the result")


def test_failed_validation_is_exit_1(tmp_path, monkeypatch):
    # Break the fast kernel's result and check the runner reports it: exit 1, case marked FAIL.
    from typer.testing import CliRunner

    from sysbench import cli
    from sysbench.workloads import gemm

    def broken(self, run):
        return gemm.Timed(lambda: run.inputs.a @ run.inputs.b + 1)

    monkeypatch.setattr(gemm.Gemm, "timed", broken)
    suite = tmp_path / "s.toml"
    suite.write_text(SMALL.format(dataflow="ws", dtype="fp32"))
    result = CliRunner().invoke(cli.app, ["run", str(suite), "--filter", "small/g"])
    assert result.exit_code == 1


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    results.save({"schema": results.SCHEMA, "cases": []}, path)
    before = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        results.save({"schema": results.SCHEMA, "cases": [1]}, path)
    assert path.read_text() == before and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("array_table,case_extra,fragment", [
    ("rows = 4", "mm = 3", "case 'g' key 'mm': unknown key for kind 'gemm' (did you mean 'm'?)"),
    ("rows = 4", "m = 2.5", "case 'g' key 'm': must be an integer"),
    ("rows = 4", "m = -3", "case 'g' key 'm': must be positive"),
    ("rows = 0", "m = 3", "array 'a' key 'rows': must be positive"),
    ('dataflow = "rs"', "m = 3", "array 'a' key 'dataflow': must be one of ws, os, is"),
    ('dtype = "fp64"', "m = 3", "array 'a' key 'dtype': must be one of fp32, bf16, fp16, int8"),
])
def test_every_listed_bad_input_is_exit_2_one_line(tmp_path, array_table, case_extra, fragment):
    suite = tmp_path / "bad.toml"
    suite.write_text(f'[arrays.a]\n{array_table}\n[[cases]]\nname = "g"\nkind = "gemm"\narray = "a"\n'
                     f'k = 2\nn = 2\n{case_extra}\n')
    proc = sysbench("run", str(suite))
    assert_clean_error(proc, fragment)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines) and len(lines) <= 2, proc.stderr


@pytest.mark.parametrize("case_body,fragment", [
    ('kind = "gemm"\narray = "nope"\nm = 1\nk = 1\nn = 1', "case 'g' key 'array': no array named 'nope'"),
    ('kind = "gem"\nm = 1', "case 'g' key 'kind': unknown kind 'gem' (did you mean 'gemm'?)"),
])
def test_missing_array_and_unknown_kind(tmp_path, case_body, fragment):
    suite = tmp_path / "bad.toml"
    suite.write_text(f'[arrays.a]\nrows = 4\n[[cases]]\nname = "g"\n{case_body}\n')
    assert_clean_error(sysbench("run", str(suite)), fragment)
