"""The accelerator description: a systolic array and its clock.

Suites name arrays under [arrays.NAME]; every key has a default so a case can use the
built-in array when its kind needs none of the systolic settings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

DATAFLOWS = {
    "ws": "weight stationary: weights held in the PEs, inputs stream, partial sums flow down",
    "os": "output stationary: each PE accumulates one output, inputs and weights stream",
    "is": "input stationary: inputs held in the PEs, weights stream, partial sums flow down",
}
DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}  # operand bytes
BANDWIDTH_MODES = ("ideal", "user")
WEIGHT_LOADS = {
    "serial": "every fold pays its stationary preload",
    "overlapped": "the next fold's stationary operand loads while the current fold streams",
}


@dataclass(frozen=True)
class Array:
    name: str = "default"
    rows: int = 32
    cols: int = 32
    dataflow: str = "ws"
    dtype: str = "fp32"
    weight_load: str = "serial"
    clock_ghz: float = 1.0
    # The memory system (models/memory.py). None: unbounded SRAM / bandwidth not given.
    ifmap_sram_kb: float | None = None
    filter_sram_kb: float | None = None
    ofmap_sram_kb: float | None = None
    word_bytes: int | None = None  # bytes per SRAM/DRAM word; None: the dtype's operand bytes
    dram_bw: float | None = None  # words per cycle on every DRAM interface not given below
    ifmap_dram_bw: float | None = None
    filter_dram_bw: float | None = None
    ofmap_dram_bw: float | None = None
    bandwidth_mode: str = "ideal"  # ideal: no stalls, report the bandwidth needed | user: stalls
    scalesim_compat: bool = False  # reproduce SCALE-Sim v3's documented memory-model defects
    energy: object = None  # models.energy.Energy from the suite's [energy] table; None: defaults

    @property
    def operand_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def accumulator_bytes(self) -> int:
        return 4  # fp32 or int32 accumulators

    def to_dict(self) -> dict:
        """Every setting; the memory keys only where they differ from their defaults, so a
        compute-only array reads as it did before the memory system existed. Made once per
        array (a sweep's chunks and sinks ask for it per chunk) and copied per call."""
        cached = self.__dict__.get("_as_dict")
        if cached is None:
            cached = self._make_dict()
            object.__setattr__(self, "_as_dict", cached)   # frozen: not a field, so not compared
        return {k: dict(v) if isinstance(v, dict) else v for k, v in cached.items()}

    def _make_dict(self) -> dict:
        out = asdict(self)
        for key in MEMORY_KEYS:
            if out[key] == MEMORY_DEFAULTS[key]:
                del out[key]
        if self.energy is None:
            del out["energy"]
        else:
            out["energy"] = {**dict(self.energy.values), "sources": list(self.energy.sources)}
        return out


# key -> (type, check, help); the suite loader validates [arrays.*] tables against this
ARRAY_KEYS = {
    "rows": (int, "positive", "PE rows (the reduction dimension for ws and is)"),
    "cols": (int, "positive", "PE columns"),
    "dataflow": (str, tuple(DATAFLOWS), "ws | os | is"),
    "dtype": (str, tuple(DTYPES), "fp32 | bf16 | fp16 | int8"),
    "weight_load": (str, tuple(WEIGHT_LOADS), "serial | overlapped"),
    "clock_ghz": (float, "positive", "clock in GHz, for time_us"),
    "ifmap_sram_kb": (float, "positive",
                      "ifmap SRAM capacity in KiB (both halves of its double buffer; unset: holds the operand)"),
    "filter_sram_kb": (float, "positive", "filter SRAM capacity in KiB (both halves; unset: holds the operand)"),
    "ofmap_sram_kb": (float, "positive", "ofmap SRAM capacity in KiB (both halves; unset: holds the outputs)"),
    "word_bytes": (int, "positive", "bytes per memory word, one operand element (default: the dtype's operand bytes)"),
    "dram_bw": (float, "positive", "DRAM bandwidth in whole words per cycle for every interface not set below"),
    "ifmap_dram_bw": (float, "positive", "ifmap DRAM read bandwidth, whole words per cycle"),
    "filter_dram_bw": (float, "positive", "filter DRAM read bandwidth, whole words per cycle"),
    "ofmap_dram_bw": (float, "positive", "ofmap DRAM write bandwidth, whole words per cycle"),
    "bandwidth_mode": (str, BANDWIDTH_MODES, "ideal (no stalls; reports the bandwidth needed) | user (stalls)"),
    "scalesim_compat": (bool, None, "reproduce SCALE-Sim v3's documented memory-model defects"),
}
MEMORY_KEYS = tuple(list(ARRAY_KEYS)[6:])
assert MEMORY_KEYS[0] == "ifmap_sram_kb" and "energy" not in MEMORY_KEYS
MEMORY_DEFAULTS = {key: Array.__dataclass_fields__[key].default for key in MEMORY_KEYS}
