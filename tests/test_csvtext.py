"""The CSV row writer (kernels/csvtext.pyx) against Python's %-format and csv.writer, and a
sweep's rows through it against the %-format reference, byte for byte."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from conftest import suite_toml

from sysbench import sinks, suite as suite_mod, sweep
from sysbench._kernels import csvtext

EDGE_INTS = np.array([0, 1, -1, 9, 10, -10, 2**31, -(2**31), 2**63 - 1, -(2**63)], dtype=np.int64)
EDGE_FLOATS = np.array([0.0, -0.0, 1.0, 0.1, 1 / 3, 1e16, 1e15, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308,
                        np.inf, -np.inf, np.nan, 123456789.125, -2.5], dtype=np.float64)
TEXTS = ["plain", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "", "100%", "%d %s", "ünï"]


def by_format(templates, columns, index):
    codes = {"d": "%d", "r": "%r", "s": "%s", "q": "%s"}
    formats = [t[0].replace("%", "%%") + "".join(codes[k] + p.replace("%", "%%") for (k, _), p in zip(columns, t[1:]))
               for t in templates]
    values = [list(v) if k != "q" else sinks._quoted(list(v)) for k, v in columns]
    values = [[x.item() if isinstance(x, np.generic) else x for x in v] for v in values]
    return "".join(formats[i] % row + "\n" for i, row in zip(index, zip(*values))).encode()


@pytest.mark.parametrize("seed", range(5))
def test_rows_are_the_percent_format_of_every_kind(seed):
    rng = np.random.default_rng(seed)
    n = 200
    columns = [("d", rng.choice(EDGE_INTS, n)), ("r", rng.choice(EDGE_FLOATS, n)),
               ("r", rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)),
               ("s", list(rng.choice(TEXTS, n))), ("q", list(rng.choice(TEXTS, n))),
               ("d", rng.integers(-10**12, 10**12, n)), ("d", rng.integers(0, 2, n).astype(bool))]
    templates = [["", ",x,", ",", ",%,", ",", ",", ",", ""], ["a%", ",", ",,", ",", ",y", ",", ",", ",end"]]
    index = rng.integers(0, 2, n)
    assert csvtext.rows(templates, columns, index) == by_format(templates, columns, index)


def test_quoted_text_reads_back_through_the_csv_module():
    text = csvtext.rows([["", ",end"]], [("q", TEXTS)], np.zeros(len(TEXTS), dtype=np.int64)).decode()
    assert list(csv.reader(io.StringIO(text, newline=""))) == [[t, "end"] for t in TEXTS]


def test_no_rows_and_no_fields():
    assert csvtext.rows([["a", "b"]], [("d", np.zeros(0, dtype=np.int64))], np.zeros(0, dtype=np.int64)) == b""
    assert csvtext.rows([["const"]], [], np.zeros(3, dtype=np.int64)) == b"const\nconst\nconst\n"


@pytest.mark.parametrize("templates,columns,index,fragment", [
    ([["", ""]], [("x", [1])], [0], "kind must be"),
    ([["", ""]], [("d", np.arange(2))], [0], "column 0 has 2 value(s) for 1 row(s)"),
    ([["", "", ""]], [("d", np.arange(1))], [0], "template 0 has 3 literal(s)"),
    ([["", ""]], [("d", np.arange(1))], [1], "must index the 1 template(s)"),
    ([["", ""]], [("d", np.arange(1))], [[0]], "must be 1-D"),
])
def test_bad_arguments_name_what_is_wrong(templates, columns, index, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        csvtext.rows(templates, columns, np.array(index))


SWEEP = suite_toml(
    dict(name="fc", kind="gemm", m=[1, 7, 64], k=[3, 32, 100], n=[17, 5]),
    dict(name="conv", kind="conv2d", height=9, width=[9, 12], in_channels=8, out_channels=8, kernel=[[1, 1], 3],
         stride=[[1, 1], [2, 2]], groups=[1, 8]),
    name="w", defaults=dict(numerics=False, array="a"),
    arrays={"a": dict(rows=[4, 8, 32], cols=[4, 16], dataflow=["ws", "os"], clock_ghz=[1.0, 0.7])})

def test_a_sweeps_rows_are_the_reference_rows(write_suite):
    columns, reference = {}, {}
    for block in suite_mod.load(str(write_suite(SWEEP))).items:
        chunk = sweep.evaluate(block, 0, len(block))
        assert sinks.table_rows(chunk, columns) == sinks.table_rows_reference(chunk, reference)
        assert columns == reference
