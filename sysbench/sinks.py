"""Where a run's results go as they finish: the JSON document, a CSV of one row per case, the
summaries a big sweep prints instead of a wall of rows, and the rich table of a normal run.

Each sink takes run_suite's results in suite order (a CaseResult per case, a TableChunk of
many rows per sweep block) without holding them, so a million-case sweep runs in flat memory.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile

import numpy as np

from .hardware import ARRAY_KEYS
from .results import _json_default, null_non_finite
from .sweep import TableChunk

TABLE_LIMIT = 300  # past this many cases the terminal shows summaries, not one row per case
ARRAY_COLUMNS = ("name",) + tuple(ARRAY_KEYS)
FIRST_COLUMNS = ("id", "suite", "name", "kind", "numerics", "error", "validation", "median_s", "spread")


def case_dicts(result):
    """The result-document cases of one result."""
    if isinstance(result, TableChunk):
        yield from result.case_dicts()
    else:
        yield null_non_finite(result.to_dict())


def passed(result) -> bool:
    return True if isinstance(result, TableChunk) else result.passed


# ----------------------------------------------------------------------------------------
# JSON: the versioned document, cases streamed between its head and its tail


class JsonSink:
    """The document's head, then its cases as they come, then (at close) its settings, which
    the run fills in as it goes (the canary of every round)."""

    def __init__(self, handle, header: dict):
        self.handle, self.first, self.header = handle, True, header
        head = json.dumps({k: v for k, v in header.items() if k != "settings"}, indent=2, allow_nan=False,
                          default=_json_default)
        handle.write((head[:-2] + ',\n  "cases": [').encode())

    def add(self, result) -> None:
        for case in case_dicts(result):
            text = json.dumps(case, indent=2, allow_nan=False, default=_json_default)
            self.handle.write(((",\n" if not self.first else "\n") + _indent(text)).encode())
            self.first = False

    def close(self) -> None:
        settings = json.dumps(self.header.get("settings", {}), indent=2, allow_nan=False, default=_json_default)
        self.handle.write(("\n  ],\n  \"settings\": " + settings.replace("\n", "\n  ") + "\n}\n").encode())


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# ----------------------------------------------------------------------------------------
# CSV: one row per case (id, params, array keys, metrics, timing, validation), for pandas


class CsvSink:
    """Rows go to a temporary body file as results arrive; the header, which knows every
    column only at the end, is written before the body when the sink closes. A row written
    before a column first appeared is shorter: pandas.read_csv reads its missing cells as NaN."""

    def __init__(self, handle):
        self.handle = handle
        self.body = tempfile.TemporaryFile("w+b")   # bytes: a worker's rows are copied, not re-encoded
        self.line = io.StringIO()
        self.writer = csv.writer(self.line)
        self.columns: dict[str, int] = {name: index for index, name in enumerate(FIRST_COLUMNS)}

    def _column(self, name: str) -> int:
        if name not in self.columns:
            self.columns[name] = len(self.columns)
        return self.columns[name]

    def add(self, result) -> None:
        if isinstance(result, TableChunk):
            self._add_table(result)
        else:
            self._add_case(null_non_finite(result.to_dict()))

    def _add_case(self, case: dict) -> None:
        row = {"id": case["id"], "suite": case["suite"], "name": case["name"], "kind": case["kind"],
               "numerics": case["numerics"], "error": case.get("error") or ""}
        validation, timing = case.get("validation"), case.get("timing")
        row["validation"] = "" if validation is None else ("passed" if validation["passed"] else "failed")
        row["median_s"] = "" if timing is None else timing["median_s"]
        row["spread"] = "" if timing is None or timing.get("spread") is None else timing["spread"]
        for key, value in case["params"].items():
            row[f"params.{key}"] = _cell(value)
        for key in ARRAY_COLUMNS:
            row[f"array.{key}"] = _cell(case["array"].get(key))
        for key, value in case["metrics"].items():
            if not isinstance(value, (dict, list)) or key.endswith("_histogram"):
                row[key] = _cell(value)
        cells = [""] * (max(self._column(k) for k in row) + 1)
        for key, value in row.items():
            cells[self.columns[key]] = value
        self.line.seek(0)
        self.line.truncate()
        self.writer.writerow(cells)
        self.body.write(self.line.getvalue().encode())

    def _add_table(self, chunk: TableChunk) -> None:
        rendered = chunk.rendered.get("csv")
        if rendered is not None:   # formatted by a worker (render_csv) for the columns it saw
            names, text = rendered
            if names[:len(self.columns)] == tuple(self.columns):
                for name in names[len(self.columns):]:
                    self._column(name)
                self.body.write(text)   # bytes
                return
        self.body.write(table_rows(chunk, self.columns))

    def close(self) -> None:
        text = io.StringIO()
        csv.writer(text).writerow(self.columns)
        self.handle.write(text.getvalue().encode())
        self.body.seek(0)
        shutil.copyfileobj(self.body, self.handle, 1 << 20)
        self.body.close()


def _table_layout(chunk: TableChunk, column_index: dict[str, int]):
    """What a chunk's rows are made of, in the order of `column_index` (name -> position),
    which gets the chunk's new columns: per array of the block the literal texts around the
    varying fields (the constant columns and that array's settings), and the varying fields
    as (kind, values), kind "d" integers, "r" floats (written as repr), "s" text, "q" text
    quoted where CSV needs it."""
    block = chunk.block
    constant = {"suite": block.suite, "name": block.name, "kind": block.kind, "numerics": False}
    varying: dict[str, tuple[str, object]] = {"id": ("q", chunk.ids)}
    for key, values in chunk.params.items():
        if values.ndim > 1 or values.dtype == object:
            varying[f"params.{key}"] = ("q", [_cell(v) for v in values.tolist()])
        else:
            varying[f"params.{key}"] = _field(values)
    arrays = [a.to_dict() for a in block.arrays]
    per_array: dict[str, list[str]] = {}   # array.* columns that differ between arrays
    for key in dict.fromkeys(k for a in arrays for k in a):
        cells = _quoted([_cell(a.get(key)) for a in arrays])
        if len(set(cells)) == 1:
            constant[f"array.{key}"] = cells[0]
        else:
            per_array[f"array.{key}"] = cells
    params = list(varying)
    for key, values in chunk.metrics.items():
        varying[key] = _field(values)
    for name in (*constant, *params, *per_array, *varying):
        column_index.setdefault(name, len(column_index))
    templates = []
    for a in range(len(arrays)):
        pieces, text = [], ""
        for position, name in enumerate(column_index):
            comma = "," if position else ""
            if name in varying:
                pieces.append(text + comma)
                text = ""
            else:
                text += comma + str(per_array[name][a] if name in per_array else constant.get(name, ""))
        templates.append(pieces + [text])
    fields = [varying[name] for name in column_index if name in varying]
    return templates, fields


def table_rows(chunk: TableChunk, column_index: dict[str, int]) -> bytes:
    """The CSV rows of a chunk (see _table_layout), written by the csvtext kernel: about
    2 us a row, most of it the floats' shortest repr (%-formatting took 4, csv.writer 13)."""
    from ._kernels import csvtext

    templates, fields = _table_layout(chunk, column_index)
    return csvtext.rows(templates, fields, chunk.array_index)


def table_rows_reference(chunk: TableChunk, column_index: dict[str, int]) -> bytes:
    """The same rows through Python's %-format, one template per array: the kernel's reference."""
    templates, fields = _table_layout(chunk, column_index)
    codes = {"d": "%d", "r": "%r", "s": "%s", "q": "%s"}
    formats = [p[0].replace("%", "%%") + "".join(codes[kind] + piece.replace("%", "%%")
                                                for (kind, _), piece in zip(fields, p[1:]))
               for p in templates]
    columns = [values.tolist() if isinstance(values, np.ndarray) else _quoted(values) if kind == "q" else values
               for kind, values in fields]
    rows = zip(chunk.array_index.tolist(), zip(*columns)) if columns else ((a, ()) for a in chunk.array_index.tolist())
    return "".join([formats[a] % row + "\n" for a, row in rows]).encode()


def render_csv(chunk: TableChunk) -> None:
    """In a worker of the model phase (run_suite's `prepare`): the chunk's CSV rows, formatted
    for the columns a sink has after this block alone, so that the parent only writes them
    (with --jobs N the formatting, most of a big sweep's time, runs on N cores)."""
    columns = {name: index for index, name in enumerate(FIRST_COLUMNS)}
    text = table_rows(chunk, columns)   # adds the chunk's columns
    chunk.rendered["csv"] = (tuple(columns), text)


def _field(values: np.ndarray) -> tuple[str, object]:
    kind = values.dtype.kind
    return ("d", values) if kind in "iub" else ("r", values) if kind == "f" else ("s", values.tolist())


def _quoted(texts: list) -> list[str]:
    """CSV quoting where a cell needs it (a comma, a quote, a line break)."""
    search = _NEEDS_QUOTES.search
    texts = [t if type(t) is str else str(t) for t in texts]
    return ['"' + t.replace('"', '""') + '"' if search(t) else t for t in texts]


_NEEDS_QUOTES = re.compile('[,"\n\r]')


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return value


# ----------------------------------------------------------------------------------------
# Summaries: network totals per array configuration, the best N, the Pareto front


class Summary:
    """Per suite and array configuration, the totals over its network-layer cases (kinds with
    network_layer): cycles, MACs, and with the memory system total cycles and energy."""

    def __init__(self, layer_kinds: set[str]):
        self.layer_kinds = layer_kinds
        self.cases = 0
        self.validated = 0
        self.failed: list[str] = []  # ids of cases that failed validation or raised
        self.kinds: dict[str, int] = {}
        self.totals: dict[tuple[str, str], dict] = {}   # (suite, array name) -> sums and the array

    def _entry(self, suite: str, array: dict) -> dict:
        key = (suite, array["name"])
        if key not in self.totals:
            self.totals[key] = {"suite": suite, "array": array, "layers": 0, "cycles": 0, "macs": 0,
                                "total_cycles": 0, "energy_pj": 0.0, "memory": True}
        return self.totals[key]

    def add(self, result) -> None:
        if isinstance(result, TableChunk):
            block = result.block
            self.cases += len(result)
            self.kinds[block.kind] = self.kinds.get(block.kind, 0) + len(result)
            if block.kind not in self.layer_kinds:
                return
            counts = np.bincount(result.array_index, minlength=len(block.arrays))
            cycles = np.bincount(result.array_index, weights=result.metrics["cycles"], minlength=len(block.arrays))
            macs = np.bincount(result.array_index, weights=result.metrics["macs"], minlength=len(block.arrays))
            for index in np.flatnonzero(counts):
                entry = self._entry(block.suite, block.arrays[index].to_dict())
                entry["layers"] += int(counts[index])
                entry["cycles"] += int(cycles[index])  # exact: float64 holds these sums below 2^53
                entry["macs"] += int(macs[index])
                entry["memory"] = False
            return
        self.cases += 1
        case = result.case
        self.validated += result.validation is not None
        if not result.passed:
            self.failed.append(case.id)
        self.kinds[case.kind] = self.kinds.get(case.kind, 0) + 1
        if case.kind in self.layer_kinds:
            self.add_case_dict({"kind": case.kind, "suite": case.suite, "array": case.array.to_dict(),
                                "metrics": result.metrics or {}})

    def add_case_dict(self, case: dict) -> None:
        """One case's figures into the totals: a result-document case (report --html reads a
        saved one), whatever a damaged file holds in it."""
        metrics = case.get("metrics") if isinstance(case.get("metrics"), dict) else {}
        array = case.get("array") if isinstance(case.get("array"), dict) else None
        if (case.get("kind") not in self.layer_kinds or array is None or not isinstance(metrics.get("cycles"), int)
                or not all(isinstance(array.get(k), int) for k in ("rows", "cols"))):
            return
        entry = self._entry(str(case.get("suite", "")), array)
        entry["layers"] += 1
        entry["cycles"] += metrics["cycles"]
        entry["macs"] += metrics.get("macs", 0) if isinstance(metrics.get("macs"), int) else 0
        if isinstance(metrics.get("total_cycles"), int) and isinstance(metrics.get("energy_pj"), (int, float)):
            entry["total_cycles"] += metrics["total_cycles"]
            entry["energy_pj"] += metrics["energy_pj"]
        else:
            entry["memory"] = False

    def configurations(self) -> list[dict]:
        """One row per (suite, array configuration): totals, utilization, PEs, time, energy, EDP."""
        out = []
        for entry in self.totals.values():
            array = entry["array"]
            pes = array["rows"] * array["cols"]
            cycles = entry["total_cycles"] if entry["memory"] else entry["cycles"]
            clock = array.get("clock_ghz")
            clock = clock if isinstance(clock, (int, float)) and not isinstance(clock, bool) and clock > 0 else 1.0
            seconds = cycles / (clock * 1e9)
            row = {"suite": entry["suite"], "array": array["name"], "pes": pes, "layers": entry["layers"],
                   "cycles": cycles, "compute_cycles": entry["cycles"], "macs": entry["macs"],
                   "utilization": entry["macs"] / (entry["cycles"] * pes) if entry["cycles"] else 0.0,
                   "time_s": seconds, "energy_pj": entry["energy_pj"] if entry["memory"] else None}
            row["edp"] = row["energy_pj"] * 1e-12 * seconds if row["energy_pj"] is not None else None
            out.append(row)
        return out


OBJECTIVES = {"cycles": ("cycles", False), "utilization": ("utilization", True),
              "energy": ("energy_pj", False), "edp": ("edp", False)}


def best(rows: list[dict], n: int, by: str) -> list[dict]:
    """The n best configurations by an objective (ties: fewer PEs first, then name)."""
    key, descending = OBJECTIVES[by]
    usable = [r for r in rows if r[key] is not None]
    return sorted(usable, key=lambda r: ((-r[key] if descending else r[key]), r["pes"], r["array"]))[:n]


def pareto(rows: list[dict], objectives=("cycles", "pes")) -> list[dict]:
    """The configurations no other beats on every objective (all minimised), by the first."""
    usable = [r for r in rows if all(r[k] is not None for k in objectives)]
    ordered = sorted(usable, key=lambda r: tuple(r[k] for k in objectives))
    front = []
    for row in ordered:
        if not any(all(other[k] <= row[k] for k in objectives) and any(other[k] < row[k] for k in objectives)
                   for other in front):
            front.append(row)
    return front


class Collected:
    """The first TABLE_LIMIT + 1 case dicts (enough to know a run is not small), or all of them."""

    def __init__(self, keep_all: bool):
        self.keep_all, self.cases, self.overflow = keep_all, [], False

    def add(self, result) -> None:
        if self.overflow and not self.keep_all:
            return
        for case in case_dicts(result):
            self.cases.append(case)
            if not self.keep_all and len(self.cases) > TABLE_LIMIT:
                self.overflow = True
                return


def is_csv(path) -> bool:
    return path is not None and str(path).lower().endswith(".csv")
