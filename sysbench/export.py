"""A result in other tools' formats: SCALE-Sim's COMPUTE_REPORT.csv, and one flat CSV.

COMPUTE_REPORT.csv (one per array, in FOLDER/<array name>/ as SCALE-Sim writes
<log dir>/<run_name>/) has SCALE-Sim v3's columns, each with SCALE-Sim's definition and
SCALE-Sim's count, so that it diffs line by line against SCALE-Sim's own:
    LayerID                       0, 1, ... in run order, per array; one row per GEMM on the
                                  array: a conv2d with groups = G gives G rows, as SCALE-Sim
                                  gives one per channel of a depthwise ("DP") layer
    Total Cycles (incl. prefetch) only for arrays with bandwidth_mode = "user" whose cases have
                                  the memory model's total_cycles (from the first DRAM read to
                                  the last DRAM write: SCALE-Sim's count, held to it by
                                  tests/test_memory.py); SCALE-Sim's CALC-mode estimate of it is
                                  not modelled, and SCALE-Sim v2 had no such column
    Total Cycles                  SCALE-Sim's count: sysbench's cycles - 1 (sysbench counts
                                  the cycle in which the last result leaves the array;
                                  models/systolic.py), plus the stall cycles (SCALE-Sim's
                                  USER-mode Total Cycles on every layer checked)
    Stall Cycles                  the memory model's stall_cycles, else 0
    Overall Util %                macs * 100 / (Total Cycles * rows * cols)
    Mapping Efficiency %          the unweighted mean over folds of mapped PEs / (rows * cols);
                                  within one GEMM it equals sysbench's mapping_efficiency
    Compute Util %                the unweighted mean over folds of mapped PEs * T /
                                  (rows * cols * SCALE-Sim's fold length): 2R + 2C + T - 3
                                  for ws and is, R + C + T - 2 for os
Floats are printed as SCALE-Sim prints them (Python's str). A grouped case's stall and
prefetch cycles are split evenly over its rows (the remainder on the first). An array with
weight_load = "overlapped" has no SCALE-Sim counterpart; its rows apply the same definitions
to sysbench's overlapped cycles.

The flat CSV (`--csv`) has one row per case in sysbench's own conventions: id, name, kind,
params.*, array.*, metrics.*, timing.median_s and validation.passed; lists are JSON.
"""
from __future__ import annotations

import csv
import io
import json
from math import ceil
from pathlib import Path

from .models.systolic import mapping
from .output import write_text

SYSTOLIC_KINDS = ("gemm", "conv2d")


class ExportError(Exception):
    """The result cannot be written in the asked format; one line."""


def _gemms(case: dict) -> tuple[int, int, int, int]:
    """(M, K, N, groups) of a gemm or conv2d case."""
    metrics = case.get("metrics") or {}
    if case["kind"] == "gemm":
        p = case["params"]
        return p["m"], p["k"], p["n"], 1
    return metrics["gemm_m"], metrics["gemm_k"], metrics["gemm_n"], metrics["groups"]


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (total % parts if index == 0 else 0)


def fold_averages(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> tuple[float, float]:
    """SCALE-Sim's (mapping efficiency, compute utilization) of one GEMM: per-fold values
    averaged without weights, summed in SCALE-Sim's fold order (column folds outer)."""
    sr, sc, t = mapping(dataflow, m, k, n)
    cells = rows * cols
    fold_length = rows + cols + t - 2 if dataflow == "os" else 2 * rows + 2 * cols + t - 3
    mapping_sum = compute_sum = 0.0
    row_folds, col_folds = ceil(sr / rows), ceil(sc / cols)
    for fc in range(col_folds):
        cols_used = min(cols, sc - fc * cols)
        for fr in range(row_folds):
            used = min(rows, sr - fr * rows) * cols_used
            mapping_sum += used / cells
            compute_sum += (used * t) / (cells * fold_length)
    folds = row_folds * col_folds
    return mapping_sum / folds, compute_sum / folds


def compute_report(cases: list[dict]) -> str:
    """COMPUTE_REPORT.csv text for cases run on one array."""
    prefetch = any("total_cycles" in (c.get("metrics") or {}) and c["array"].get("bandwidth_mode") == "user"
                   for c in cases)
    header = "LayerID, " + ("Total Cycles (incl. prefetch), " if prefetch else "") + \
        "Total Cycles, Stall Cycles, Overall Util %, Mapping Efficiency %, Compute Util %,\n"
    lines, layer = [header], 0
    for case in cases:
        metrics, array = case["metrics"], case["array"]
        m, k, n, groups = _gemms(case)
        rows, cols = array["rows"], array["cols"]
        mapping_eff, compute_util = fold_averages(array["dataflow"], rows, cols, m, k, n)
        for g in range(groups):
            cycles = _share(metrics["cycles"], groups, g) - 1
            stall = _share(metrics.get("stall_cycles", 0), groups, g)
            total = cycles + stall
            items = [total, stall, (m * k * n * 100) / (total * rows * cols), mapping_eff * 100, compute_util * 100]
            if prefetch:
                items.insert(0, _share(metrics.get("total_cycles", total + 1), groups, g))
            lines.append(f"{layer}, " + ", ".join(str(x) for x in items) + ",\n")
            layer += 1
    return "".join(lines)


def write_scalesim(document: dict, folder) -> list[Path]:
    """FOLDER/<array>/COMPUTE_REPORT.csv for each array the result's gemm/conv2d cases ran on."""
    by_array: dict[str, list[dict]] = {}
    for case in document["cases"]:
        if case.get("kind") in SYSTOLIC_KINDS and case.get("metrics") and case.get("array"):
            by_array.setdefault(case["array"].get("name", "default"), []).append(case)
    if not by_array:
        kinds = sorted({c.get("kind", "?") for c in document["cases"]})
        raise ExportError(f"no gemm or conv2d case to write as a SCALE-Sim report (kinds here: {', '.join(kinds)})")
    from .memory_report import bandwidth_rows, detailed_access_rows

    written = []
    for name, cases in by_array.items():
        reports = {"COMPUTE_REPORT.csv": compute_report(cases)}
        if bandwidth_rows(cases):  # the memory system ran: SCALE-Sim's two memory reports too
            reports["BANDWIDTH_REPORT.csv"] = _rows(BANDWIDTH_COLUMNS, bandwidth_rows(cases))
            reports["DETAILED_ACCESS_REPORT.csv"] = _rows(ACCESS_COLUMNS, detailed_access_rows(cases))
        for file, text in reports.items():
            target = Path(folder) / name / file
            write_text(target, text)
            written.append(target)
    return written


BANDWIDTH_COLUMNS = ("LayerID", "Avg IFMAP SRAM BW", "Avg FILTER SRAM BW", "Avg OFMAP SRAM BW",
                     "Avg IFMAP DRAM BW", "Avg FILTER DRAM BW", "Avg OFMAP DRAM BW")
# SCALE-Sim's start and stop cycle columns are not kept by sysbench's model: counts only
ACCESS_COLUMNS = ("LayerID", "SRAM IFMAP Reads", "SRAM Filter Reads", "SRAM OFMAP Writes",
                  "DRAM IFMAP Reads", "DRAM Filter Reads", "DRAM OFMAP Writes")


def _rows(columns, rows) -> str:
    """SCALE-Sim's CSV style: ", " between cells, a trailing comma on every line."""
    return "".join(", ".join(map(str, row)) + ",\n" for row in [columns, *rows])


def _cell(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def flat_rows(document: dict) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per case, every param, array key and metric."""
    rows, columns = [], {"id": None, "name": None, "kind": None}
    for case in document["cases"]:
        row = {"id": case.get("id"), "name": case.get("name"), "kind": case.get("kind")}
        for part in ("params", "array", "metrics"):
            for key, value in (case.get(part) or {}).items():
                row[f"{part}.{key}"] = _cell(value)
        row["timing.median_s"] = _cell((case.get("timing") or {}).get("median_s"))
        row["validation.passed"] = _cell((case.get("validation") or {}).get("passed"))
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


def write_csv(document: dict, path) -> Path:
    columns, rows = flat_rows(document)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, out.getvalue())
    return Path(path)
