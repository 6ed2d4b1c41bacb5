"""The memory system beside the compute cycles: double-buffered operand SRAMs, DRAM bandwidth
stalls, traffic per operand, bandwidth, energy.

`memory_metrics(array, gemms, compute)` is the one entry the workloads call: `gemms` are the
(m, k, n) GEMMs the cycle model (models/systolic.py) ran back to back for the case and
`compute` the figures `add_cycles` made of them. Each GEMM is served by the kernel
(kernels/memory.pyx, semantics in models/memory_reference.py) with fresh buffers, as SCALE-Sim
runs each layer, and the figures are summed. Nothing is added for an array without memory
keys, so compute-only results stay as they were.

Conventions: one operand element is one memory word of `word_bytes` (default the dtype's
operand bytes), outputs included; SRAM capacities are KiB (1024 bytes); DRAM bandwidths are
whole words per cycle. An SRAM left unset holds its operand whole.
bandwidth_mode = "ideal": no stalls; the traffic, and the DRAM bandwidth the case would need
(average: words / compute cycles; peak: the fastest rate one prefetch batch or ofmap drain
needs to be in time). "user": stalls at the given bandwidths; total_cycles runs from the first
DRAM read of the first fill to the last DRAM write of the final drain.
"""
from __future__ import annotations

from math import ceil

import numpy as np

from ..hardware import Array
from . import energy as energy_model

OPERANDS = ("ifmap", "filter", "ofmap")


def has_memory(array: Array) -> bool:
    return any(getattr(array, key) is not None for key in
               ("ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb", "word_bytes", "dram_bw",
                "ifmap_dram_bw", "filter_dram_bw", "ofmap_dram_bw")) \
        or array.bandwidth_mode != "ideal" or array.scalesim_compat or array.energy is not None


def word_bytes(array: Array) -> int:
    return array.word_bytes or array.operand_bytes


def bandwidths(array: Array) -> tuple[float | None, float | None, float | None]:
    return tuple(getattr(array, f"{op}_dram_bw") or array.dram_bw for op in OPERANDS)


def sram_words(array: Array, op: str) -> int | None:
    kb = getattr(array, f"{op}_sram_kb")
    return None if kb is None else int(kb * 1024) // word_bytes(array)


def check_array(array: Array) -> list[tuple[str, str]]:
    """Cross-key problems of an array's memory keys: (key, message)."""
    problems = []
    R, C = array.rows, array.cols
    for op, need, what in (("ifmap", 2 * R * C, "two rows x cols tiles"),
                           ("filter", 2 * R * C, "two rows x cols tiles"),
                           ("ofmap", 2 * C, "two rows of cols outputs")):
        words = sram_words(array, op)
        if words is not None and words < need:
            problems.append((f"{op}_sram_kb", f"{getattr(array, op + '_sram_kb')} KiB holds {words} words of "
                             f"{word_bytes(array)} bytes; one fold needs {need} ({what} of the "
                             f"{R}x{C} array, one per half of the double buffer)"))
    for key in ("dram_bw",) + tuple(f"{op}_dram_bw" for op in OPERANDS):
        value = getattr(array, key)
        if value is not None and value != int(value):
            problems.append((key, f"must be a whole number of words per cycle, got {value}"))
    if array.bandwidth_mode == "user":
        missing = [op for op, bw in zip(OPERANDS, bandwidths(array)) if bw is None]
        if missing:
            problems.append(("bandwidth_mode", "user mode needs the DRAM bandwidth of every "
                             f"interface: set dram_bw or {', '.join(op + '_dram_bw' for op in missing)}"))
    return problems


def _aliases(conv: dict, dataflow: str, words: int, rows: int, cols: int):
    """SCALE-Sim's im2col address copies (compat only): for every input address, the set of
    every fetch-stream position that holds it."""
    from .memory_reference import conv_addresses  # the same address layout as the fixture
    h, w, kh, kw, c, f, s = (conv[k] for k in ("height", "width", "kh", "kw", "channels",
                                                "filters", "stride"))
    ifmap = conv_addresses(h, w, kh, kw, c, f, s)[0]
    pixels, window = ifmap.shape
    p, q = np.meshgrid(np.arange(pixels), np.arange(window), indexing="ij")
    if dataflow == "is":  # stationary: column blocks of the (window x pixels) matrix, row-major
        block, col = np.divmod(p, cols)
        width = np.where(block < ceil(pixels / cols) - 1, cols, pixels - (ceil(pixels / cols) - 1) * cols)
        rank = block * window * cols + q * width + col
    else:  # streamed: blocks of R columns stacked, read by antidiagonals, bottom row first
        t, j = (p, q) if dataflow == "ws" else (q, p)
        T = pixels if dataflow == "ws" else window
        block, col = np.divmod(j, rows)
        r = block * T + t
        order = np.lexsort((-r.ravel(), (r + col).ravel()))
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        rank = rank.reshape(p.shape)
    sets = (rank // ceil(words / 100)).ravel()
    addr = ifmap.ravel()
    order = np.argsort(addr, kind="stable")
    ptr = np.zeros(h * w * c + 1, dtype=np.int64)
    np.add.at(ptr, addr + 1, 1)
    conv_geom = np.array([(w - kw) // s + 1, s, kw, c, w], dtype=np.int64)
    return np.cumsum(ptr), sets[order].astype(np.int64), conv_geom


def simulate(array: Array, m: int, k: int, n: int, *, filter_element_bytes: int | None = None,
             conv: dict | None = None) -> dict:
    """Kernel figures for one GEMM (see kernels/memory.pyx OUTPUTS), in words."""
    from .._kernels import memory as kernel

    wb = word_bytes(array)
    elements = {"ifmap": m * k, "filter": k * n, "ofmap": m * n}
    sizes, bws = [], []
    for op, bw in zip(OPERANDS, bandwidths(array)):
        words = sram_words(array, op)
        scale = 1.0
        if op == "filter" and filter_element_bytes:
            scale = wb / filter_element_bytes  # a filter element is wider than a word
            words = None if words is None else int(words * scale)
        if words is None:  # unbounded: the operand fits whole, twice over
            words = 2 * elements[op] + 2 * array.rows * array.cols + 2
        sizes.append(max(words, 2))
        bws.append(max(1, int((bw or 1) * scale)))
    defects = tuple(kernel.DEFECT_BITS) if array.scalesim_compat else ()
    aliases = None
    if conv is not None and array.scalesim_compat and array.dataflow in ("ws", "os", "is"):
        aliases = _aliases(conv, array.dataflow, sizes[0], array.rows, array.cols)
    return kernel.simulate_gemm(array.dataflow, array.rows, array.cols, m, k, n,
                                weight_load=array.weight_load, sram_words=tuple(sizes),
                                bandwidth=tuple(bws), defects=defects,
                                ideal=array.bandwidth_mode == "ideal", aliases=aliases)


def memory_metrics(array: Array, gemms: list[tuple[int, int, int]], compute: dict, *,
                   filter_element_bytes: int | None = None, conv: dict | None = None) -> dict:
    """The memory figures of a case: {} for an array without memory keys.

    gemms: the (m, k, n) the cycle model ran; compute: their summed figures (add_cycles or
    gemm_cycles). filter_element_bytes: bytes of one filter element when it is not one word
    (sparse passes: the compressed value plus its index byte). conv: the convolution's
    geometry (height, width, kh, kw, channels, filters, stride) for SCALE-Sim's im2col
    address aliasing under scalesim_compat."""
    if not has_memory(array):
        return {}
    wb = word_bytes(array)
    fb = filter_element_bytes or wb
    runs = [simulate(array, m, k, n, filter_element_bytes=filter_element_bytes, conv=conv)
            for m, k, n in gemms]
    total = lambda key: sum(r[key] for r in runs)
    ideal = array.bandwidth_mode == "ideal"
    compute_cycles = compute["cycles"]
    stall = 0 if ideal else total("stall_cycles")
    fills = sum(max(r["ifmap_fill_cycles"], r["filter_fill_cycles"]) for r in runs)
    total_cycles = compute_cycles + fills if ideal else total("total_cycles")
    ob, ab = array.operand_bytes, array.accumulator_bytes
    sram_reads = {"ifmap": compute["ifmap_sram_read_bytes"] // ob,
                  "filter": compute["filter_sram_read_bytes"] // ob}
    ofmap_writes = compute["ofmap_sram_write_bytes"] // ab
    dram_words = {op: total(f"{op}_dram_words") for op in OPERANDS}
    out = {
        "bandwidth_mode": array.bandwidth_mode,
        "compute_cycles": compute_cycles,
        "stall_cycles": stall,
        "total_cycles": total_cycles,
        "memory_time_us": total_cycles / (array.clock_ghz * 1e3),
        "ifmap_dram_read_bytes": dram_words["ifmap"] * wb,
        "filter_dram_read_bytes": dram_words["filter"] * fb,
        "ofmap_dram_write_bytes": dram_words["ofmap"] * wb,
        "ifmap_sram_write_bytes": dram_words["ifmap"] * wb,
        "filter_sram_write_bytes": dram_words["filter"] * fb,
        "ofmap_sram_read_bytes": dram_words["ofmap"] * wb,
    }
    for op in OPERANDS:
        # words per cycle on the operand's DRAM interface, averaged over the whole run
        out[f"{op}_dram_bw_avg"] = dram_words[op] / total_cycles if total_cycles else 0.0
        peak = max((r[f"{op}_peak"] for r in runs), default=0.0)
        if ideal:
            out[f"{op}_dram_bw_needed"] = dram_words[op] / compute_cycles if compute_cycles else 0.0
            out[f"{op}_dram_bw_needed_peak"] = peak
        else:
            out[f"{op}_dram_bw_peak"] = peak
    out.update(energy_metrics(array, compute["macs"], sram_reads, ofmap_writes, dram_words,
                              total_cycles))
    return out


def energy_metrics(array: Array, macs: int, sram_reads: dict, ofmap_writes: int,
                   dram_words: dict, total_cycles: int) -> dict:
    """Energy per component (pJ), total, per MAC and the energy-delay product (J*s)."""
    e = dict(array.energy.values) if array.energy is not None else \
        energy_model.defaults(array.dtype, word_bytes(array))
    parts = {
        "mac": macs * e["mac_pj"],
        "ifmap_sram": sram_reads["ifmap"] * e["ifmap_sram_read_pj"]
        + dram_words["ifmap"] * e["ifmap_sram_write_pj"],
        "filter_sram": sram_reads["filter"] * e["filter_sram_read_pj"]
        + dram_words["filter"] * e["filter_sram_write_pj"],
        "ofmap_sram": ofmap_writes * e["ofmap_sram_write_pj"]
        + dram_words["ofmap"] * e["ofmap_sram_read_pj"],
        "dram": (dram_words["ifmap"] + dram_words["filter"]) * e["dram_read_pj"]
        + dram_words["ofmap"] * e["dram_write_pj"],
    }
    out = {f"energy_{name}_pj": value for name, value in parts.items()}
    total = sum(parts.values())
    seconds = total_cycles / (array.clock_ghz * 1e9)
    out["energy_pj"] = total
    out["energy_per_mac_pj"] = total / macs if macs else 0.0
    out["edp_js"] = total * 1e-12 * seconds
    if array.energy is not None and array.energy.area_um2 is not None:
        out["area_um2"] = array.energy.area_um2
    return out


def conv_geometry(p: dict) -> dict | None:
    """A conv2d case's geometry as SCALE-Sim lays its ifmap out (for compat aliasing), or None
    when SCALE-Sim has no such layer (padding, dilation, groups, batch > 1, unequal strides)."""
    (kh, kw), (sh, sw) = p["kernel"], p["stride"]
    if p["groups"] != 1 or p["batch"] != 1 or tuple(p["padding"]) != (0, 0) \
            or tuple(p["dilation"]) != (1, 1) or sh != sw:
        return None
    return {"height": p["height"], "width": p["width"], "kh": kh, "kw": kw,
            "channels": p["in_channels"], "filters": p["out_channels"], "stride": sh}
