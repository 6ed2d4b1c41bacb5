"""Issue 14, one test (or a few) per defect, each built from the issue's repro: nothing lost,
nothing damaged, no traceback. In-process through Typer's CliRunner unless a real process is
the point (signals)."""
from __future__ import annotations

import copy
import json
import math
import os
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sysbench import __version__, cli, output, results, suite as suite_mod
from sysbench.workloads.base import Key, parse_size

ONE_CASE = "gemm[k=64]"   # one small case of the bundled quick suite
GEMM = """
name = "{name}"
[arrays.a]
rows = 4
cols = 4
[[cases]]
name = "g"
kind = "gemm"
array = "a"
m = 4
k = {k}
n = 4
repeats = 2
"""


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = errors(result)
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "case(s) ran" not in result.stderr   # found before the run


def write_suite(tmp_path, name="s", k=4, file=None) -> Path:
    path = tmp_path / (file or f"{name}.toml")
    path.write_text(GEMM.format(name=name, k=k))
    return path


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".probe"))]


@pytest.fixture
def umask():
    old = os.umask(0o022)

    def set_mask(mask):
        os.umask(mask)
    yield set_mask
    os.umask(old)


# ----------------------------------------------------------------------------------------
# 1, 11, 13: where -o writes


def test_1_through_a_symlink_the_target_is_replaced_and_the_link_kept(tmp_path):
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("{}")
    link.symlink_to("real.json")
    result = invoke("run", "-k", ONE_CASE, "-o", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert results.load(real)["cases"][0]["id"] == f"quick/{ONE_CASE}"
    assert leftovers(tmp_path) == []


def test_1_a_fifo_reader_gets_the_document_and_the_fifo_stays(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    got = {}

    def read():
        with open(fifo) as handle:   # blocks until the writer opens
            got["text"] = handle.read()
    reader = threading.Thread(target=read)
    reader.start()
    result = invoke("run", "-k", ONE_CASE, "-o", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(got["text"])["schema"] == results.SCHEMA


def test_1_an_open_pipe_as_dev_fd_is_streamed_like_process_substitution(tmp_path):
    read_end, write_end = os.pipe()   # what bash's >(cmd) hands over as /dev/fd/N
    chunks = []
    reader = threading.Thread(target=lambda: chunks.append(os.read(read_end, 1 << 20)))
    try:
        reader.start()
        result = invoke("run", "-k", ONE_CASE, "-o", f"/dev/fd/{write_end}")
    finally:
        os.close(write_end)
    reader.join(timeout=60)
    data = b"".join(chunks)
    while True:
        more = os.read(read_end, 1 << 20)
        if not more:
            break
        data += more
    os.close(read_end)
    assert result.exit_code == 0, result.output
    assert json.loads(data)["schema"] == results.SCHEMA


def test_1_dash_is_standard_output():
    result = invoke("run", "-k", ONE_CASE, "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["cases"][0]["id"] == f"quick/{ONE_CASE}"


def test_1_a_character_device_is_written_into_not_replaced(tmp_path):
    # Our own /dev/full and /dev/null (major 1, minors 7 and 3), so that a regression could
    # never replace the machine's.
    full, null = tmp_path / "full", tmp_path / "null"
    try:
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making device nodes needs root")
    assert invoke("run", "-k", ONE_CASE, "-o", null).exit_code == 0
    result = invoke("run", "-k", ONE_CASE, "-o", full)
    assert result.exit_code == 2 and "No space left on device" in errors(result)[0]
    for device in (full, null):
        assert stat.S_ISCHR(os.stat(device).st_mode)
    assert leftovers(tmp_path) == []


def test_11_a_new_file_gets_its_mode_from_the_umask(tmp_path, umask):
    out = tmp_path / "r.json"
    output.write_text(out, "{}")
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    umask(0o077)
    output.write_text(tmp_path / "private.json", "{}")
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


def test_11_overwriting_keeps_the_files_mode(tmp_path, umask):
    out = tmp_path / "r.json"
    out.write_text("old")
    out.chmod(0o644)
    umask(0o077)   # would give 0600 to a new file
    result = invoke("run", "-k", ONE_CASE, "-o", out)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert results.load(out)["schema"] == results.SCHEMA


def test_1_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text("old")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        output.write_text(out, "new")
    assert out.read_text() == "old" and leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["parent-is-a-file", "directory"])
def test_13_an_unwritable_output_is_found_before_the_run(tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "r.json" if where == "parent-is-a-file" else tmp_path
    result = invoke("run", "-k", ONE_CASE, "-o", target)
    assert_one_line_error(result, str(target), "cannot write the result")


def test_13_check_writable_creates_nothing(tmp_path):
    output.check_writable(tmp_path / "new" / "deeper" / "r.json")
    output.check_writable(tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_1_report_html_goes_through_the_same_rules(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run.json"
    assert invoke("run", "-k", ONE_CASE, "-o", run).exit_code == 0
    real, link = tmp_path / "real.html", tmp_path / "link.html"
    real.write_text("")
    link.symlink_to(real)
    assert invoke("report", run, "--html", link).exit_code == 0
    assert link.is_symlink() and "<html>" in real.read_text()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(invoke("report", run, "--png", blocker), "not a directory")


# ----------------------------------------------------------------------------------------
# 3, 10: compare


def _doc(*ids, **machine):
    base = {"cpu": "CPU A", "arch": "x86_64", "cores": 2, "threads": 1, **machine}
    return {"schema": results.SCHEMA, "suite": "t", "created": "2026-01-01T00:00:00+00:00",
            "machine": base, "cases": [_case(i) for i in ids]}


def _case(case_id, scale=1.0, cycles=100):
    samples = [scale * (1e-3 + i * 1e-6) for i in range(12)]   # 3 rounds of 4: a testable timing
    return {"id": case_id, "name": case_id, "kind": "gemm", "params": {},
            "array": {"name": "a", "rows": 4, "cols": 4, "dataflow": "ws", "dtype": "fp32"},
            "metrics": {"cycles": cycles},
            "timing": {"median_s": samples[6], "samples_s": samples, "sample_rounds": [i // 4 for i in range(12)]},
            "validation": {"reference": "r", "error": 0.0, "passed": True}}


def _files(tmp_path, base, new):
    a, b = tmp_path / "base.json", tmp_path / "new.json"
    a.write_text(json.dumps(base))
    b.write_text(json.dumps(new))
    return a, b


def test_3_no_case_in_common_is_exit_2(tmp_path):
    a, b = _files(tmp_path, _doc("t/x"), _doc("t/y"))
    assert_one_line_error(invoke("compare", a, b), "no case id in common")


def test_3_run_against_the_wrong_baseline_is_exit_2(tmp_path):
    a, _ = _files(tmp_path, _doc("t/x"), _doc("t/y"))
    result = invoke("run", "-k", ONE_CASE, "--baseline", a)
    assert result.exit_code == 2 and "no case id in common" in errors(result)[0]


def _slower(tmp_path, **machine):
    new = _doc("t/x", **machine)
    new["cases"][0] = _case("t/x", scale=2.0)
    return _files(tmp_path, _doc("t/x"), new)


def test_10_a_timing_regression_on_another_machine_is_shown_not_gated(tmp_path):
    a, b = _slower(tmp_path, cpu="CPU B")
    result = invoke("compare", a, b, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["regressions"] == ["t/x"] and out["timings_gated"] is False
    assert out["machine_mismatch"] == ["cpu"] and "not gated" in out["cases"][0]["verdict"]
    assert "not gated" in result.stderr
    assert invoke("compare", a, b, "--gate-timings").exit_code == 1


def test_10_on_the_same_machine_timings_gate(tmp_path):
    a, b = _slower(tmp_path)
    assert invoke("compare", a, b).exit_code == 1
    assert invoke("compare", a, b, "--no-gate-timings").exit_code == 0


def test_10_a_model_change_gates_on_any_machine(tmp_path):
    new = _doc("t/x", cpu="CPU B", cores=64)
    new["cases"][0] = _case("t/x", cycles=101)
    a, b = _files(tmp_path, _doc("t/x"), new)
    result = invoke("compare", a, b)
    assert result.exit_code == 1 and "model change" in result.stderr


def test_10_run_baseline_on_another_machine_does_not_gate_timings(tmp_path):
    base = tmp_path / "base.json"
    assert invoke("run", "-k", ONE_CASE, "-o", base).exit_code == 0
    doc = json.loads(base.read_text())
    doc["machine"]["cpu"] = "some other CPU"
    for sample_list in (doc["cases"][0]["timing"]["samples_s"],):
        sample_list[:] = [s / 1000 for s in sample_list]   # the baseline was 1000x faster
    base.write_text(json.dumps(doc))
    result = invoke("run", "-k", ONE_CASE, "--baseline", base)
    assert result.exit_code == 0, result.stderr
    assert "not gated" in result.stderr


def test_10_cython_version_is_recorded_without_a_cython_distribution():
    from sysbench._kernels import config
    info = results.machine_info(1)
    assert info["cython"] == config.cython_version()
    major, minor = (int(p) for p in info["cython"].split(".")[:2])
    assert (major, minor) >= (3, 0)   # pyproject's build requirement


# ----------------------------------------------------------------------------------------
# 6, 8: numbers


@pytest.mark.parametrize("where,text", [
    ("array 'a' key 'clock_ghz'", "[arrays.a]\nclock_ghz = nan\n[[cases]]\nname = 'g'\nkind = 'gemm'\n"
                                  "array = 'a'\nm = 4\nk = 4\nn = 4\n"),
    ("case 't' key 'temperature'", "[[cases]]\nname = 't'\nkind = 'sample'\nvocab = 10\ntemperature = inf\n"),
    ("case 'd' key 'link_gbps'", "[[cases]]\nname = 'd'\nkind = 'train_distributed'\nmode = 'sim'\n"
                                 "link_gbps = -inf\n"),
    ("case 'd' key 'timeout_s'", "[[cases]]\nname = 'd'\nkind = 'train_distributed'\ntimeout_s = nan\n"),
    ("case 'd' key 'lr'", "[[cases]]\nname = 'd'\nkind = 'train_distributed'\nlr = nan\n"),
    ("case 'd' key 'bucket_mib'", "[[cases]]\nname = 'd'\nkind = 'train_distributed'\nbucket_mib = nan\n"
                                  "schedule = 'bucketed'\n"),
    ("case 'r' key 'schedule'", "[arrays.a]\n[[cases]]\nname = 'r'\nkind = 'train_recompute'\narray = 'a'\n"
                                "schedule = 'budget=1e400'\n"),
    ("case 'c' key 'sizes'", "[[cases]]\nname = 'c'\nkind = 'distributed_calibrate'\n"
                             "sizes = ['1e400', '4KiB']\n"),
    ("case 'g' key 'm'", "[arrays.a]\n[[cases]]\nname = 'g'\nkind = 'gemm'\narray = 'a'\n"
                         "m = 99999999999999999999\nk = 4\nn = 4\n"),
])
def test_6_8_non_finite_and_overflowing_numbers_are_one_line_errors(tmp_path, where, text):
    path = tmp_path / "n.toml"
    path.write_text(text)
    assert_one_line_error(invoke("run", path), where)


def test_6_key_and_size_parsers_refuse_non_finite_values():
    for value in (math.nan, math.inf, -math.inf, 10**400):
        assert Key("float").parse(value)[1] is not None
    for text in ("nan", "inf", "1e400", "1e400KiB", "-1", "9e18GiB"):
        assert parse_size(text) is None, text
    assert parse_size("1.5KiB") == 1536 and parse_size(2**63 - 1) == 2**63 - 1
    assert Key("size").parse("nanMiB")[1] is not None


def test_6_results_are_strict_json():
    with pytest.raises(ValueError):
        results.dumps({"x": math.nan})
    case = {"id": "x", "validation": {"max_abs_err": math.inf}, "metrics": {"m": [1.0, math.nan]}}
    results.null_non_finite(case)
    assert case["validation"]["max_abs_err"] is None and case["metrics"]["m"] == [1.0, None]
    assert case["non_finite"] == {"validation.max_abs_err": "inf", "metrics.m[1]": "nan"}
    json.loads(results.dumps(case), parse_constant=lambda name: pytest.fail(name))


def test_6_the_unbounded_bandwidth_of_one_rank_is_null_with_a_reason():
    from sysbench.distributed.costs import LinkCost
    one = LinkCost(0.0, 0.0, 1).to_dict()
    assert one["bandwidth_gbps"] is None and "one worker" in one["bandwidth_note"]
    assert LinkCost.from_link(10.0, 5.0, 2).to_dict()["bandwidth_gbps"] == pytest.approx(10.0)


def test_6_a_result_with_nan_is_refused_on_load(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_doc("t/x")).replace('"cycles": 100', '"cycles": NaN'))
    assert_one_line_error(invoke("show", path), "not strict JSON", "NaN")


# ----------------------------------------------------------------------------------------
# 7: show and report check the schema first


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "r.json"
    assert invoke("run", "-k", "gemm", "-o", path).exit_code == 0
    return json.loads(path.read_text())


@pytest.mark.parametrize("command", ["show", "report", "compare"])
def test_7_a_case_whose_metrics_is_null_is_one_line(tmp_path, saved_run, command):
    damaged = copy.deepcopy(saved_run)
    damaged["cases"][1]["metrics"] = None
    path = tmp_path / "d.json"
    path.write_text(json.dumps(damaged))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(saved_run))
    args = {"show": [path], "report": [path, "--html", tmp_path / "x.html"], "compare": [good, path]}[command]
    assert_one_line_error(invoke(command, *args), str(path), f"case {damaged['cases'][1]['id']!r}",
                          "metrics", "must be object")
    assert not (tmp_path / "x.html").exists()


def test_7_the_published_schema_is_valid_and_fits_what_run_writes(saved_run):
    import jsonschema
    schema = results.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["enum"] == list(results.READABLE_SCHEMAS)
    assert results.schema_problem(saved_run) is None
    baseline = Path(__file__).resolve().parent.parent / "results" / "quick.json"
    assert results.schema_problem(json.loads(baseline.read_text())) is None


# ----------------------------------------------------------------------------------------
# 12, 13: duplicate ids and the smaller ones


def test_12_the_same_suite_twice_is_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "d.json"
    assert_one_line_error(invoke("run", "quick", "quick", "-o", out), "given more than once")
    assert not out.exists()


def test_12_two_suites_of_one_name_clash_by_id(tmp_path):
    a = write_suite(tmp_path, "same", file="a.toml")
    b = write_suite(tmp_path, "same", file="b.toml")
    assert_one_line_error(invoke("run", a, b), "'same/g'", "a.toml and", "b.toml", "distinct `name`s")


def test_12_a_sweep_listing_a_value_twice(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GEMM.format(name="s", k="[4, 4]"))
    assert_one_line_error(invoke("run", path), "'s/g[k=4]' appears more than once")


def test_12_duplicate_ids_unit():
    quick = suite_mod.load("quick")
    assert suite_mod.duplicate_ids([quick]) == []
    assert len(suite_mod.duplicate_ids([quick, quick])) == 1


def test_13_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"sysbench {__version__}"


def test_13_each_distinct_error_once(tmp_path):
    path = tmp_path / "rep.toml"   # one bad combination, swept over five learning rates
    path.write_text("[[cases]]\nname = 'd'\nkind = 'train_distributed'\nbatch = 10\nranks = 3\n"
                    "lr = [0.1, 0.2, 0.3, 0.4, 0.5]\n")
    assert_one_line_error(invoke("run", path), "key 'ranks'", "cannot split batch = 10")


def test_13_a_directory_is_named_as_a_directory(tmp_path):
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    assert_one_line_error(invoke("run", folder), "is a directory")
    assert_one_line_error(invoke("show", tmp_path), "is a directory")
    weights = tmp_path / "w.npy"
    weights.mkdir()
    suite = tmp_path / "sp.toml"
    suite.write_text(f"[arrays.a]\n[[cases]]\nname = 's'\nkind = 'sparse_gemm'\narray = 'a'\nm = 4\n"
                     f"weights = '{weights}'\n")
    result = invoke("run", suite)
    assert result.exit_code == 2 and "is a directory" in result.stderr, result.stderr


@pytest.mark.parametrize("threshold", ["0", "0.5", "-1", "nan", "inf"])
def test_13_a_meaningless_threshold_is_refused_before_the_run(threshold):
    assert_one_line_error(invoke("run", "-k", ONE_CASE, "--threshold", threshold), "--threshold")


def test_13_more_threads_than_cpus_is_a_warning(monkeypatch):
    from sysbench import preflight
    monkeypatch.setattr(preflight, "available_cpus", lambda: 2)
    result = invoke("run", "-k", ONE_CASE, "--threads", "64")
    assert result.exit_code == 0
    assert "warning: --threads 64 is more than the 2 CPU(s)" in result.stderr
    assert "warning: --threads" not in invoke("run", "-k", ONE_CASE, "--threads", "2").stderr
