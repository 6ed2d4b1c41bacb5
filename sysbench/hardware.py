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

    @property
    def operand_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def accumulator_bytes(self) -> int:
        return 4  # fp32 or int32 accumulators

    def to_dict(self) -> dict:
        return asdict(self)


# key -> (type, check, help); the suite loader validates [arrays.*] tables against this
ARRAY_KEYS = {
    "rows": (int, "positive", "PE rows (the reduction dimension for ws and is)"),
    "cols": (int, "positive", "PE columns"),
    "dataflow": (str, tuple(DATAFLOWS), "ws | os | is"),
    "dtype": (str, tuple(DTYPES), "fp32 | bf16 | fp16 | int8"),
    "weight_load": (str, tuple(WEIGHT_LOADS), "serial | overlapped"),
    "clock_ghz": (float, "positive", "clock in GHz, for time_us"),
}
