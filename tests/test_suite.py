"""Suite loading: sweeps, defaults, and every listed bad input reported with file, case, key."""
from pathlib import Path

import pytest
from conftest import suite_toml

from sysbench import suite
from sysbench.workloads.base import Key, parse_size

GOOD = suite_toml(
    {"name": "g", "kind": "gemm", "array": ["a", "b"], "m": [1, 2], "k": 3, "n": 4},
    {"name": "c", "kind": "conv2d", "height": 5, "width": 7, "in_channels": 4, "out_channels": 6,
     "kernel": [[1, 1], [3, 2]], "groups": 2},
    name="t", defaults={"repeats": 2, "array": "a"},
    arrays={"a": {"rows": 8, "cols": 4, "dataflow": "os"}, "b": {"rows": 4, "cols": 4}})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def test_sweep_and_defaults(tmp_path):
    s = suite.load(write(tmp_path, GOOD))
    ids = [c.id for c in s.cases]
    assert ids == ["t/g[array=a,m=1]", "t/g[array=a,m=2]", "t/g[array=b,m=1]", "t/g[array=b,m=2]",
                   "t/c[kernel=1x1]", "t/c[kernel=3x2]"]
    assert len(set(ids)) == len(ids)
    g = s.cases[0]
    assert g.repeats == 2 and g.warmup == 1 and g.array.rows == 8 and g.array.dataflow == "os"
    assert s.cases[2].array.name == "b" and s.cases[2].array.dataflow == "ws"  # array default
    c = s.cases[5]
    assert c.params["kernel"] == (3, 2) and c.params["stride"] == (1, 1) and c.params["groups"] == 2


BAD_CASES = [
    # (snippet replacing the gemm case, expected key, expected fragment)
    ('name = "g"\nkind = "gemm"\nm = 1\nkk = 3\nn = 4\nk = 1', "kk", "did you mean 'k'"),
    ('name = "g"\nkind = "gemm"\nm = "x"\nk = 3\nn = 4', "m", "must be an integer"),
    ('name = "g"\nkind = "gemm"\nm = 0\nk = 3\nn = 4', "m", "must be positive"),
    ('name = "g"\nkind = "gemm"\nm = 1\nk = 3', "n", "missing"),
    ('name = "g"\nkind = "gemm"\narray = "zz"\nm = 1\nk = 3\nn = 4', "array", "no array named 'zz'"),
    ('name = "g"\nkind = "gmm"\nm = 1\nk = 3\nn = 4', "kind", "did you mean 'gemm'"),
    ('name = "g"\nkind = "conv2d"\nheight = 5\nwidth = 5\nin_channels = 3\nout_channels = 4\n'
     'kernel = 3\ngroups = 2', "groups", "not divisible"),
    ('name = "g"\nkind = "conv2d"\nheight = 2\nwidth = 5\nin_channels = 3\nout_channels = 3\n'
     'kernel = 3', "kernel", "does not fit"),
    ('name = "g"\nkind = "conv2d"\nheight = 5\nwidth = 5\nin_channels = 3\nout_channels = 3\n'
     'kernel = [3, 3, 3]', "kernel", "[h, w]"),
]


@pytest.mark.parametrize("snippet,key,fragment", BAD_CASES)
def test_bad_case_names_file_case_key(tmp_path, snippet, key, fragment):
    text = '[arrays.a]\nrows = 4\ncols = 4\n[defaults]\narray = "a"\n[[cases]]\n' + snippet + "\n"
    path = write(tmp_path, text)
    with pytest.raises(suite.SuiteError) as info:
        suite.load(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: case 'g' key '{key}':"), problem
    assert fragment in problem


@pytest.mark.parametrize("table,key,fragment", [
    ("dataflow = \"xs\"", "dataflow", "must be one of ws, os, is"),
    ("dtype = \"fp8\"", "dtype", "must be one of"),
    ("rows = -1", "rows", "must be positive"),
    ("colz = 3", "colz", "did you mean 'cols'"),
    ("weight_load = 1", "weight_load", "must be a string"),
])
def test_bad_array_key(tmp_path, table, key, fragment):
    path = write(tmp_path, f"[arrays.a]\n{table}\n[[cases]]\nname = \"g\"\nkind = \"gemm\"\narray = \"a\"\n"
                           "m = 1\nk = 1\nn = 1\n")
    with pytest.raises(suite.SuiteError) as info:
        suite.load(path)
    assert any(p.startswith(f"{path}: array 'a' key '{key}':") and fragment in p for p in info.value.problems), \
        info.value.problems


def test_all_errors_collected_together(tmp_path):
    text = ('bogus = 1\n[arrays.a]\nrows = 0\n[[cases]]\nname = "x"\nkind = "gemm"\narray = "a"\nm = -1\nk = 1\nn = 1\n'
            '[[cases]]\nname = "y"\nkind = "nope"\n')
    with pytest.raises(suite.SuiteError) as info:
        suite.load(write(tmp_path, text))
    text = "\n".join(info.value.problems)
    assert "unknown top-level key" in text and "array 'a' key 'rows'" in text
    assert "case 'y' key 'kind'" in text and "case 'x' key 'm'" in text
    assert "no array named" not in text  # the invalid array's own errors are enough
    assert len(info.value.problems) >= 4


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(suite.SuiteError, match="not valid TOML"):
        suite.load(write(tmp_path, "name = \n"))
    with pytest.raises(suite.SuiteError, match="no such suite file"):
        suite.load(str(tmp_path / "absent.toml"))
    with pytest.raises(suite.SuiteError, match="did you mean 'quick'"):
        suite.load("quik")


def test_bundled_suites_load():
    bundled = suite.bundled_suites()
    assert {"quick", "gemm", "resnet50"} <= set(bundled)
    for name in bundled:
        assert suite.load(name).cases


def test_resnet50_has_53_convolutions_and_fc():
    s = suite.load("resnet50")
    per_array = [c for c in s.cases if c.array.name == "a32"]
    assert sum(c.kind == "conv2d" for c in per_array) == 53
    assert sum(c.kind == "gemm" for c in per_array) == 1
    assert not any(c.numerics for c in s.cases)


def test_key_parsing():
    assert Key("pair").parse(3) == ((3, 3), None)
    assert Key("pair").is_sweep([3, 3]) is False and Key("pair").is_sweep([[1, 1], 3]) is True
    assert Key("int").parse(True)[1] and Key("float").parse(2) == (2.0, None)
    assert parse_size("64MiB") == 64 * 2**20 and parse_size("1.5 kB") == 1500 and parse_size(10) == 10
    assert parse_size("12 parsecs") is None and parse_size(-1) is None
