"""Memory-system reports from a result document's cases: the per-layer plots (cycles split
into compute and stall, energy per component) and SCALE-Sim's BANDWIDTH_REPORT.csv and
DETAILED_ACCESS_REPORT.csv rows. Cases without memory metrics are skipped.

Metric names (models/memory.py): compute_cycles, stall_cycles, total_cycles,
{ifmap,filter}_dram_read_bytes, ofmap_dram_write_bytes, {ifmap,filter}_sram_read_bytes,
ofmap_sram_write_bytes, *_dram_bw_avg, energy_{mac,ifmap_sram,filter_sram,ofmap_sram,dram}_pj.
"""
from __future__ import annotations

from .plots import Plot, new_figure, short_label

ENERGY_PARTS = ("mac", "ifmap_sram", "filter_sram", "ofmap_sram", "dram")
BANDWIDTH_HEADER = ("LayerID", "Avg IFMAP SRAM BW", "Avg FILTER SRAM BW", "Avg OFMAP SRAM BW",
                    "Avg IFMAP DRAM BW", "Avg FILTER DRAM BW", "Avg OFMAP DRAM BW")
DETAILED_HEADER = ("LayerID", "SRAM IFMAP Reads", "SRAM Filter Reads", "SRAM OFMAP Writes",
                   "DRAM IFMAP Reads", "DRAM Filter Reads", "DRAM OFMAP Writes")


def memory_cases(cases: list[dict]) -> list[dict]:
    return [c for c in cases if "stall_cycles" in (c.get("metrics") or {})]


def _words(case: dict, key: str, word_key: str = "word_bytes") -> float:
    array = case.get("array") or {}
    word = array.get(word_key) or {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}.get(array.get("dtype"), 4)
    return case["metrics"][key] / word


def bandwidth_rows(cases: list[dict]) -> list[tuple]:
    """BANDWIDTH_REPORT.csv rows, words per cycle over the case's total cycles (SCALE-Sim's
    columns; the SRAM figures count the words the array reads or writes)."""
    rows = []
    for i, case in enumerate(memory_cases(cases)):
        m = case["metrics"]
        total = m["total_cycles"] or 1
        ob = (case.get("array") or {}).get("dtype")
        operand = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}.get(ob, 4)
        rows.append((i, m["ifmap_sram_read_bytes"] / operand / total,
                     m["filter_sram_read_bytes"] / operand / total,
                     m["ofmap_sram_write_bytes"] / 4 / total,
                     m["ifmap_dram_bw_avg"], m["filter_dram_bw_avg"], m["ofmap_dram_bw_avg"]))
    return rows


def detailed_access_rows(cases: list[dict]) -> list[tuple]:
    """DETAILED_ACCESS_REPORT.csv rows where sysbench has the figure: access counts in words
    (SCALE-Sim's start/stop cycle columns are not kept)."""
    rows = []
    for i, case in enumerate(memory_cases(cases)):
        m = case["metrics"]
        operand = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}.get((case.get("array") or {}).get("dtype"), 4)
        rows.append((i, m["ifmap_sram_read_bytes"] // operand, m["filter_sram_read_bytes"] // operand,
                     m["ofmap_sram_write_bytes"] // 4, round(_words(case, "ifmap_dram_read_bytes")),
                     round(_words(case, "filter_dram_read_bytes")),
                     round(_words(case, "ofmap_dram_write_bytes"))))
    return rows


def _stacked_bars(rows: list[dict], parts: dict, ylabel: str, title: str):
    """A figure of one stacked bar per case: parts maps each legend label to its metric."""
    fig, axes = new_figure(max(7.0, 0.35 * len(rows) + 3), 5.0)
    ax = axes[0][0]
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    for label, metric in parts.items():
        values = [c["metrics"][metric] for c in rows]
        ax.bar(x, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(x, [short_label(c, drop_array=False) for c in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.suptitle(title)
    return fig


def cycles_plot(cases: list[dict]) -> list[Plot]:
    """Per-layer cycles split into compute and stall (stacked bars)."""
    rows = memory_cases(cases)
    if not rows:
        return []
    fig = _stacked_bars(rows, {"compute": "compute_cycles", "DRAM stall": "stall_cycles"}, "cycles",
                        "memory system: compute and stall cycles per case")
    return [Plot("memory-cycles", "memory system: compute and stall cycles",
                 "Per case, the compute cycles of the array and the cycles it waits for DRAM "
                 "(bandwidth_mode = user; ideal mode has no stall).", fig)]


def energy_plot(cases: list[dict]) -> list[Plot]:
    """Per-layer energy split by component (stacked bars, pJ)."""
    rows = [c for c in memory_cases(cases) if "energy_pj" in c["metrics"]]
    if not rows:
        return []
    fig = _stacked_bars(rows, {part.replace("_", " "): f"energy_{part}_pj" for part in ENERGY_PARTS},
                        "energy (pJ)", "memory system: energy per component")
    return [Plot("memory-energy", "memory system: energy per component",
                 "Per case, the energy of the MACs, each operand SRAM's reads and writes and the "
                 "DRAM traffic (pJ; the [energy] table or the documented defaults).", fig)]


def plots(cases: list[dict]) -> list[Plot]:
    return cycles_plot(cases) + energy_plot(cases)


def network_totals(cases: list[dict]) -> dict:
    """Sums over a network's layers; the EDP of the whole (energy x time), not a sum."""
    rows = memory_cases(cases)
    keys = ("compute_cycles", "stall_cycles", "total_cycles", "energy_pj")
    out = {k: sum(c["metrics"].get(k, 0) for c in rows) for k in keys}
    if rows:
        clock = (rows[0].get("array") or {}).get("clock_ghz", 1.0)
        out["edp_js"] = out["energy_pj"] * 1e-12 * out["total_cycles"] / (clock * 1e9)
    return out
