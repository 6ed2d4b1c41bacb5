"""Analytical cycle model of a systolic array running one GEMM (SCALE-Sim v3 mapping).

GEMM is A (M x K) times B (K x N). The operand matrix mapped onto the array is
Sr x Sc and the third dimension T is streamed:

    ws (K, N, M)    os (M, N, K)    is (K, M, N)

folds = ceil(Sr / R) * ceil(Sc / C). Per fold, with weight_load = "serial":
    ws, is: R (preload the stationary operand) + (R + C + T - 2) (stream, fill and drain)
    os:     R + C + T - 2 (operands enter skewed; the last product lands in PE (R-1, C-1))
SCALE-Sim v3 prints one cycle less than folds * per-fold (its issue #125); we count the
last cycle, so sysbench = SCALE-Sim + 1.

weight_load = "overlapped" double-buffers the stationary operand: fold f+1's preload (R
cycles, always <= the R + C + T - 2 cycles that fold f streams) runs in the shadow registers
while fold f streams, so only the first fold's preload is exposed:
    ws, is: R + folds * (R + C + T - 2);  os: nothing is preloaded, so it equals serial.
The cycle-stepped emulator (sysbench.models.emulator) counts the same cycles.
"""
from __future__ import annotations

from math import ceil

from ..hardware import Array


def mapping(dataflow: str, m: int, k: int, n: int) -> tuple[int, int, int]:
    """(Sr, Sc, T) for a GEMM of m x k times k x n."""
    if dataflow == "ws":
        return k, n, m
    if dataflow == "os":
        return m, n, k
    if dataflow == "is":
        return k, m, n
    raise ValueError(f"unknown dataflow {dataflow!r}")


def fold_cycles(dataflow: str, rows: int, cols: int, t: int) -> int:
    """Cycles of one fold that streams t vectors, without the preload (serial adds it)."""
    return rows + cols + t - 2


def gemm_cycles(array: Array, m: int, k: int, n: int) -> dict:
    """Deterministic model figures for one GEMM on `array`."""
    R, C = array.rows, array.cols
    sr, sc, t = mapping(array.dataflow, m, k, n)
    row_folds, col_folds = ceil(sr / R), ceil(sc / C)
    folds = row_folds * col_folds
    stream = fold_cycles(array.dataflow, R, C, t)
    preload = 0 if array.dataflow == "os" else R
    if array.weight_load == "serial":
        cycles = folds * (preload + stream)
    else:
        cycles = preload + folds * stream
    # Each fold reads its stationary tile once and streams its T vectors of the streamed
    # operand; ws/is write a partial sum per output per row fold, os writes each output once.
    if array.dataflow == "ws":
        ifmap_reads, filter_reads = m * k * col_folds, k * n
        ofmap_writes = m * n * row_folds
    elif array.dataflow == "is":
        ifmap_reads, filter_reads = m * k, k * n * col_folds
        ofmap_writes = m * n * row_folds
    else:
        ifmap_reads, filter_reads = m * k * col_folds, k * n * row_folds
        ofmap_writes = m * n
    return _figures(m * k * n, cycles, row_folds, col_folds, R * C, sr * sc, array.clock_ghz,
                    (ifmap_reads, filter_reads, ofmap_writes), (array.operand_bytes, array.accumulator_bytes))


def _figures(macs, cycles, row_folds, col_folds, cells, mapped, clock_ghz, accesses, word_bytes) -> dict:
    """The figures of gemm_cycles from its counts: Python ints for one GEMM or numpy columns
    for a table (the same expressions, so the same bits). accesses: (ifmap reads, filter
    reads, ofmap writes) in words; word_bytes: (operand bytes, accumulator bytes)."""
    ifmap_reads, filter_reads, ofmap_writes = accesses
    ob, ab = word_bytes
    folds = row_folds * col_folds
    return {
        "cycles": cycles,
        "macs": macs,
        "folds": folds,
        "row_folds": row_folds,
        "col_folds": col_folds,
        "utilization": macs / (cycles * cells),
        "mapping_efficiency": mapped / (folds * cells),
        "time_us": cycles / (clock_ghz * 1e3),
        "ifmap_sram_read_bytes": ifmap_reads * ob,
        "filter_sram_read_bytes": filter_reads * ob,
        "ofmap_sram_write_bytes": ofmap_writes * ab,
    }


def add_cycles(parts: list[dict], array: Array) -> dict:
    """Sum several GEMMs' figures run back to back on one array (layers, groups, passes)."""
    out = {key: sum(p[key] for p in parts) for key in
           ("cycles", "macs", "folds", "ifmap_sram_read_bytes", "filter_sram_read_bytes",
            "ofmap_sram_write_bytes")}
    cells = array.rows * array.cols
    out["utilization"] = out["macs"] / (out["cycles"] * cells) if out["cycles"] else 0.0
    mapped = sum(p["mapping_efficiency"] * p["folds"] for p in parts)
    out["mapping_efficiency"] = mapped / out["folds"] if out["folds"] else 0.0
    out["time_us"] = out["cycles"] / (array.clock_ghz * 1e3)
    return out


# ----------------------------------------------------------------------------------------
# The same model over a table of (layer, array) rows, for design-space sweeps: numpy columns
# in, numpy columns out, the same figures bit for bit as gemm_cycles / add_cycles per row.

DATAFLOW_CODES = {"ws": 0, "os": 1, "is": 2}


def gemm_cycles_table(arrays: dict, m, k, n) -> dict:
    """gemm_cycles for every row. arrays: columns rows, cols, dataflow (DATAFLOW_CODES),
    serial (bool: weight_load == "serial"), operand_bytes, clock_ghz; m, k, n: int64 columns."""
    import numpy as np

    R, C, flow = arrays["rows"], arrays["cols"], arrays["dataflow"]
    ws, os_, is_ = flow == 0, flow == 1, flow == 2
    sr = np.where(ws | is_, k, m)
    sc = np.where(is_, m, n)
    t = np.where(ws, m, np.where(os_, k, n))
    row_folds, col_folds = -(-sr // R), -(-sc // C)
    folds = row_folds * col_folds
    stream = R + C + t - 2
    preload = np.where(os_, 0, R)
    cycles = np.where(arrays["serial"], folds * (preload + stream), preload + folds * stream)
    ifmap_reads = np.where(is_, m * k, m * k * col_folds)
    filter_reads = np.where(ws, k * n, np.where(is_, k * n * col_folds, k * n * row_folds))
    ofmap_writes = np.where(os_, m * n, m * n * row_folds)
    return _figures(m * k * n, cycles, row_folds, col_folds, R * C, sr * sc, arrays["clock_ghz"],
                    (ifmap_reads, filter_reads, ofmap_writes), (arrays["operand_bytes"], 4))


def repeat_table(part: dict, times, arrays: dict) -> dict:
    """add_cycles([part] * times) for every row (`times` >= 1: groups of a layer)."""
    import numpy as np

    out = {key: part[key] * times for key in ("cycles", "macs", "folds", "ifmap_sram_read_bytes",
                                              "filter_sram_read_bytes", "ofmap_sram_write_bytes")}
    cells = arrays["rows"] * arrays["cols"]
    out["utilization"] = np.where(out["cycles"] > 0, out["macs"] / np.maximum(out["cycles"] * cells, 1), 0.0)
    # add_cycles sums mapping_efficiency * folds over the parts one at a time: the same
    # additions in the same order, so that the float is the same bits
    weighted = part["mapping_efficiency"] * part["folds"]
    mapped = weighted.copy()
    for extra in range(1, int(times.max()) if len(times) else 1):
        more = times > extra
        mapped[more] = mapped[more] + weighted[more]
    out["mapping_efficiency"] = np.where(out["folds"] > 0, mapped / np.maximum(out["folds"], 1), 0.0)
    out["time_us"] = out["cycles"] / (arrays["clock_ghz"] * 1e3)
    return out
