"""Cycle model of N:M sparse passes on the systolic array.

Per pass the foundation model (models.systolic.gemm_cycles) with the reduction K replaced by
the compressed K*N/M, summed over passes; index metadata (one uint8 per stored value) is read
with the values and counted in the SRAM bytes, not in the cycles.
"""
from __future__ import annotations

from .systolic import add_cycles, gemm_cycles


def worthwhile(passes: int, sn: int, sm: int) -> bool:
    """The converter's route: sparse when passes * N / M < 1 (fewer streamed reduction rows
    than dense), written in integers."""
    return passes * sn < sm


def fold_depth(array, compressed_k: int) -> int:
    """Compressed rows per fold: the array rows (ws, is); os keeps a whole pass in the PE."""
    return max(compressed_k, 1) if array.dataflow == "os" else array.rows


def sparse_cycles(array, m: int, compressed_k: int, n: int, passes: int) -> dict:
    """Sum over passes of the foundation model with K -> K*N/M; index bytes (uint8) read
    alongside the values."""
    if passes == 0:
        return {"cycles": 0, "macs": 0, "folds": 0, "utilization": 0.0, "mapping_efficiency": 0.0,
                "time_us": 0.0, "ifmap_sram_read_bytes": 0, "filter_sram_read_bytes": 0,
                "ofmap_sram_write_bytes": 0, "index_sram_read_bytes": 0}
    out = add_cycles([gemm_cycles(array, m, compressed_k, n)] * passes, array)
    out["index_sram_read_bytes"] = passes * compressed_k * n
    return out
