"""Bounded fuzz of the command line (issue 14): generated suite documents and damaged result
files, run in-process. Whatever the input: never a traceback, an exit code in {0, 1, 2}, no
partial or temporary file left, and a result file only when it is a valid one.

Derandomized so that the default run is reproducible and quick (well under a minute);
SYSBENCH_FUZZ=N runs N random examples per test instead.
"""
from __future__ import annotations

import copy
import json
import math
import os
import traceback
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
tomli_w = pytest.importorskip("tomli_w")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sysbench import cli, results  # noqa: E402
from sysbench.hardware import ARRAY_KEYS  # noqa: E402
from sysbench.workloads import registry  # noqa: E402
from sysbench.workloads.base import COMMON_KEYS  # noqa: E402

EXTRA = int(os.environ.get("SYSBENCH_FUZZ", "0"))


def bounded(examples: int):
    return settings(max_examples=EXTRA or examples, derandomize=not EXTRA, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def assert_clean(result, folder: Path):
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        "".join(traceback.format_exception(result.exception)[-4:]))
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []   # no temporary file


# ----------------------------------------------------------------------------------------
# Suites

KINDS = registry()
# Text a key may meet: valid words for some key, sizes, schedules, N:M, and nonsense.
WORDS = sorted({c for w in KINDS.values() for k in w.keys.values() if k.choices for c in k.choices}
               | {c for _, rule, _ in ARRAY_KEYS.values() if isinstance(rule, tuple) for c in rule}
               | {"", "x", "2:4", "1:2", "5:4", "64KiB", "1e400", "nan", "budget=1/4", "budget=1e400",
                  "checkpoint_every=2", "budget=min", "-1", "a", "b"})

scalars = st.one_of(
    st.integers(-2, 16),
    st.sampled_from([0, 1, 2, 3, 4, 8, 2**70]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.5, 1.0, 1e-3, 1e308]),
    st.booleans(),
    st.sampled_from(WORDS),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.lists(st.lists(st.integers(0, 4), max_size=3), max_size=2))
small_ints = st.one_of(st.integers(-1, 16), st.just(2**70))
odd_floats = st.one_of(st.floats(-2, 64), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e-9, 1e308]))
TYPED = {
    "int": small_ints,
    "float": odd_floats,
    "bool": st.booleans(),
    "pair": st.one_of(small_ints, st.lists(small_ints, min_size=2, max_size=2)),
    "size": st.sampled_from([0, 4096, "64KiB", "1e400", "nan", "-1", "8EiB"]),
    "list": st.lists(st.one_of(small_ints, st.sampled_from(["4KiB", "1e400", "linear:4", "relu"])), max_size=3),
}


def typed_values(kind: str, choices=None, sweep: bool = True):
    """Mostly a value of the key's own type (so the case gets past the type check to the
    model), sometimes anything; a sweep (a list of such values) now and then."""
    if kind == "str":
        own = st.sampled_from(sorted(map(str, choices))) if choices else st.sampled_from(WORDS)
    else:
        own = TYPED.get(kind, scalars)
    one = st.one_of(own, own, own, own, values)
    return st.one_of(one, one, one, st.lists(one, min_size=1, max_size=3)) if sweep else one


mutations = st.sampled_from([0, 0, 1, 1, 2])


# A small valid case of every kind; the generator mutates these (a mostly valid suite reaches
# the model and the run, where random keys alone stop at the first unknown key).
TEMPLATES = {
    "gemm": {"array": "a", "m": 4, "k": 8, "n": 4},
    "conv2d": {"array": "a", "height": 5, "width": 5, "in_channels": 2, "out_channels": 2, "kernel": 3},
    "tconv2d": {"array": "a", "height": 3, "width": 3, "in_channels": 2, "out_channels": 2, "kernel": 3,
                "stride": 2},
    "sparse_gemm": {"array": "a", "m": 4, "k": 8, "n": 4, "nm": "2:4"},
    "sample": {"vocab": 16, "units": 4},
    "train_recompute": {"array": "a", "layers": 3, "width": 8, "batch": 4, "schedule": "budget=1/2"},
    "train_distributed": {"mode": "sim", "layers": 2, "width": 8, "batch": 8, "workers": 4},
    "distributed_calibrate": {"sizes": [4096, 65536]},
}
MPI_KINDS = ("train_distributed", "distributed_calibrate")   # numerics would launch mpiexec
assert set(TEMPLATES) == set(KINDS), "a new kind needs a template here"


@st.composite
def suite_documents(draw):
    doc = {"name": draw(st.sampled_from(["fz", "fz", "quick", ""]))}
    arrays = {"a": {"rows": 4, "cols": 4}}
    for _ in range(draw(st.sampled_from([0, 0, 0, 1]))):   # mutate the array
        key = draw(st.sampled_from(sorted(ARRAY_KEYS)))
        typ, rule, _ = ARRAY_KEYS[key]
        arrays["a"][key] = draw(typed_values("float" if typ is float else typ.__name__,
                                             rule if isinstance(rule, tuple) else None, sweep=False))
    if draw(st.integers(0, 9)) == 0:
        arrays["b"] = {draw(st.sampled_from(sorted(ARRAY_KEYS) + ["bogus"])): draw(values)}
    doc["arrays"] = arrays
    if draw(st.integers(0, 4)) == 0:
        doc["defaults"] = {draw(st.sampled_from(["repeats", "seed", "warmup", "array"])): draw(values)}
    cases = []
    for index in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(sorted(TEMPLATES)))
        case = {"name": f"c{index}", "kind": kind, **TEMPLATES[kind], "repeats": 1, "warmup": 0,
                "numerics": kind not in MPI_KINDS and draw(st.booleans())}
        keys = sorted(set(KINDS[kind].keys) | {"array", "repeats", "warmup", "seed"})
        for _ in range(draw(mutations)):
            what = draw(st.sampled_from(["set", "set", "set", "delete", "unknown", "kind"]))
            if what == "set":
                key = draw(st.sampled_from(keys))
                spec = KINDS[kind].keys.get(key) or COMMON_KEYS[key]
                case[key] = draw(typed_values(spec.kind, spec.choices))
            elif what == "delete":
                case.pop(draw(st.sampled_from(sorted(case))), None)
            elif what == "unknown":
                case["unknown_key"] = draw(values)
            else:
                case["kind"] = draw(st.sampled_from(sorted(KINDS) + ["nope"]))
        if case.get("kind") in MPI_KINDS:
            case["numerics"] = False
        cases.append(case)
    doc["cases"] = cases
    return doc


@bounded(100)
@given(document=suite_documents())
def test_generated_suites_never_crash(tmp_path_factory, document):
    folder = tmp_path_factory.mktemp("suite")
    path = folder / "fz.toml"
    path.write_text(tomli_w.dumps(document))
    out = folder / "out.json"
    result = invoke("run", path, "-o", out)
    assert_clean(result, folder)
    if result.exit_code == 2:
        assert not out.exists()
        assert result.stderr.startswith("error:"), result.stderr
    else:
        assert results.load(out)["cases"]


# ----------------------------------------------------------------------------------------
# Damaged result files

SMALL_RUN = """
name = "fz"
[arrays.a]
rows = 4
cols = 4
[arrays.mem]
rows = 4
cols = 4
ifmap_sram_kb = 1
filter_sram_kb = 1
ofmap_sram_kb = 1
dram_bw = 2
bandwidth_mode = "user"
[[cases]]
name = "g"
kind = "gemm"
array = "a"
m = 4
k = [4, 9]
n = 4
repeats = 3
[[cases]]
name = "layer"
kind = "conv2d"
array = "mem"
height = 6
width = 6
in_channels = 4
out_channels = 4
kernel = [1, 3]
numerics = false
[[cases]]
name = "conv"
kind = "conv2d"
array = "a"
height = 4
width = 4
in_channels = 2
out_channels = 2
kernel = 3
numerics = false
[[cases]]
name = "sim"
kind = "train_distributed"
mode = "sim"
layers = 2
width = 8
batch = 8
workers = 4
repeats = 2
"""


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("good")
    (folder / "s.toml").write_text(SMALL_RUN)
    out = folder / "good.json"
    result = invoke("run", folder / "s.toml", "-o", out)
    assert result.exit_code == 0, result.output
    return out, json.loads(out.read_text())


def _paths(value, prefix=()):
    """Every path into a JSON value (the root excluded)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    out = []
    for key, child in items:
        out.append(prefix + (key,))
        out += _paths(child, prefix + (key,))
    return out


json_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=5), st.just([]), st.just({}), st.just([None]), st.just({"id": 1}))


@st.composite
def damaged_texts(draw, document):
    how = draw(st.sampled_from(["replace", "replace", "delete", "truncate", "nan", "bytes"]))
    text = json.dumps(document)
    if how == "truncate":
        return text[:draw(st.integers(0, len(text) - 1))].encode()
    if how == "bytes":
        return draw(st.binary(max_size=40))
    if how == "nan":
        return text.replace('"cycles": ', '"cycles": NaN, "was": ', 1).encode()
    damaged = copy.deepcopy(document)
    path = draw(st.sampled_from(_paths(damaged)))
    parent = damaged
    for key in path[:-1]:
        parent = parent[key]
    if how == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return json.dumps(damaged).encode()


@bounded(100)
@given(data=st.data())
def test_damaged_results_are_refused_in_one_line_or_read(tmp_path_factory, good_run, data):
    good, document = good_run
    folder = tmp_path_factory.mktemp("damaged")
    damaged = folder / "d.json"
    damaged.write_bytes(data.draw(damaged_texts(document)))
    for args in (("show", damaged), ("compare", good, damaged), ("compare", damaged, good)):
        result = invoke(*args)
        assert_clean(result, folder)
        if result.exit_code == 2:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


@bounded(15)
@given(data=st.data())
def test_damaged_results_never_crash_the_report(tmp_path_factory, good_run, data):
    pytest.importorskip("matplotlib")
    good, document = good_run
    folder = tmp_path_factory.mktemp("report")
    damaged = folder / "d.json"
    damaged.write_bytes(data.draw(damaged_texts(document)))
    html = folder / "r.html"
    result = invoke("report", damaged, "--html", html)
    assert_clean(result, folder)
    assert html.exists() == (result.exit_code == 0)
