"""Cycle model of a vector engine of U execution units (the `sample` workload's machine)."""
from __future__ import annotations

import math

METHODS = ("full_scan", "chunk_select")


def chunk_length(vocab: int, units: int) -> int:
    return -(-vocab // units)


def vector_cycles(vocab: int, units: int, method: str, batch: int = 1) -> dict:
    """Cycles of one row and of the batch on a vector engine of `units` units.

    Each unit handles one element per cycle of its chunk of L = ceil(vocab / units); the U
    chunk totals are scanned in order by one unit, one addition per cycle (the order the
    numerics fix; a log-depth tree would round differently); a priority encoder over the
    units takes ceil(log2 U) cycles. Rows run back to back.
      full_scan:    local scans L, totals scan U, target 1, add-back L, compare L + log2 U
      chunk_select: local totals L, totals scan U, target 1, pick chunk 1 + log2 U,
                    rescan of the picked chunk L (add, add offset, compare: one per cycle)
    """
    L = chunk_length(vocab, units)
    encode = math.ceil(math.log2(units)) if units > 1 else 0
    if method == "full_scan":
        phases = {"local_scan": L, "totals_scan": units, "target": 1, "add_back": L,
                  "compare_select": L + encode}
        element_ops = 3 * vocab  # scan, add-back, compare: each element once
        bytes_read, bytes_written = 12 * vocab, 8 * vocab  # inputs, add-back, compare / two writes
    elif method == "chunk_select":
        phases = {"local_totals": L, "totals_scan": units, "target": 1,
                  "chunk_select": 1 + encode, "rescan": L}
        element_ops = vocab + L
        bytes_read, bytes_written = 4 * (vocab + L), 0
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    row = sum(phases.values())
    return {
        "cycles": batch * row,
        "cycles_per_row": row,
        "phases_per_row": phases,
        "chunk_length": L,
        "utilization": element_ops / (units * row),
        "bytes_read": batch * bytes_read,
        "bytes_written": batch * bytes_written,
    }
