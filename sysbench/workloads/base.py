"""What every workload kind provides, and the typed keys its suite cases accept.

A kind is one module in sysbench/workloads/ that defines WORKLOAD, an instance of a
Workload subclass. The runner calls, per case:
    model(params, array)            deterministic figures (cycles, macs, bytes...)
    prepare(params, array, rng)     inputs, built outside the timed region
    measure(state, threads, warmup, repeats) -> (samples_s, output, measured)
                                    by default times run(state, threads) per repeat
    validate(state, output)         against an independent reference
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..hardware import Array

REQUIRED = object()


class CaseError(ValueError):
    """Bad input found while preparing a case (a file, its contents); names the key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Key:
    """One typed suite key.

    kind: int | float | str | bool | pair (int or [h, w]) | path | list | size (bytes,
    "64MiB") | any. `minimum` is inclusive. A list value sweeps (one case per element),
    except for pair/list keys, whose sweep is a list of lists (`kernel = [[1, 1], [3, 3]]`).
    """

    kind: str
    default: Any = REQUIRED
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    # applies(params) -> None when the key matters for these params, else the reason it does
    # not ("only with mode = 'sim'"); a key a case sets that does not apply is an error
    applies: Callable[[dict], str | None] | None = field(default=None, compare=False)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def is_sweep(self, value: Any) -> bool:
        if not isinstance(value, list):
            return False
        if self.kind == "list":  # a list of layer specs is one value; a list of lists sweeps
            return bool(value) and all(isinstance(v, list) for v in value)
        if self.kind == "pair":  # [3, 3] is one kernel; [[1, 1], 3] sweeps
            return any(isinstance(v, list) for v in value)
        return True

    def parse(self, value: Any) -> tuple[Any, str | None]:
        """(parsed value, None) or (None, error message)."""
        k = self.kind
        if k == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return None, f"must be an integer, got {value!r}"
        elif k == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None, f"must be a number, got {value!r}"
            value = float(value)
        elif k in ("str", "path"):
            if not isinstance(value, str):
                return None, f"must be a string, got {value!r}"
        elif k == "bool":
            if not isinstance(value, bool):
                return None, f"must be true or false, got {value!r}"
        elif k == "pair":
            if isinstance(value, list):
                if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                    return None, f"must be an integer or [h, w], got {value!r}"
                value = (value[0], value[1])
            elif isinstance(value, int) and not isinstance(value, bool):
                value = (value, value)
            else:
                return None, f"must be an integer or [h, w], got {value!r}"
        elif k == "list":
            if not isinstance(value, list):
                return None, f"must be a list, got {value!r}"
        elif k == "size":
            parsed = parse_size(value)
            if parsed is None:
                return None, f"must be a byte count or a string like '64MiB', got {value!r}"
            value = parsed
        if self.choices is not None and value not in self.choices:
            return None, f"must be one of {', '.join(map(str, self.choices))}; got {value!r}"
        if self.minimum is not None:
            numbers = value if isinstance(value, tuple) else (value,)
            if any(v < self.minimum for v in numbers):
                what = "positive" if self.minimum == 1 and k in ("int", "pair") else f">= {self.minimum}"
                return None, f"must be {what}, got {value!r}"
        return value, None


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any) -> int | None:
    """Bytes from an int or a string such as '512MiB', '1.5 GB', '4096'."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        amount = float(number)
    except ValueError:
        return None
    if unit not in _UNITS or amount < 0:
        return None
    return int(amount * _UNITS[unit])


# Keys every case accepts, whatever its kind.
COMMON_KEYS = {
    "name": Key("str", help="case name, unique in the suite"),
    "kind": Key("str", help="workload kind"),
    "array": Key("str", default=None, help="name of an [arrays.*] table"),
    "numerics": Key("bool", default=True, help="compute and validate the numbers (false: model only)"),
    "repeats": Key("int", default=5, minimum=1, help="timed repetitions"),
    "warmup": Key("int", default=1, minimum=0, help="untimed runs before timing"),
    "seed": Key("int", default=0, minimum=0, help="seed of the generated inputs"),
}


@dataclass
class Validation:
    reference: str
    max_abs_err: float
    passed: bool
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"reference": self.reference, "max_abs_err": self.max_abs_err, "passed": self.passed}
        if self.detail:
            out["detail"] = self.detail
        out.update(self.extra)
        return out


class Workload:
    kind: str = ""
    description: str = ""
    keys: dict[str, Key] = {}
    needs_array: bool = True

    def check(self, params: dict, array: Array) -> list[tuple[str, str]]:
        """Cross-key checks before anything runs: [(key, message)]."""
        return []

    def model(self, params: dict, array: Array) -> dict:
        raise NotImplementedError

    def prepare(self, params: dict, array: Array, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def run(self, state: Any, threads: int) -> Any:
        raise NotImplementedError

    def measure(self, state: Any, threads: int, warmup: int, repeats: int):
        """(samples in seconds, last output, measured figures). Times only run()."""
        for _ in range(warmup):
            self.run(state, threads)
        samples, output = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            output = self.run(state, threads)
            samples.append(time.perf_counter() - start)
        return samples, output, {}

    def validate(self, state: Any, output: Any) -> Validation:
        raise NotImplementedError

    def summary(self, metrics: dict) -> dict:
        """Columns for the report: cycles and utilization where the kind has them."""
        return {"cycles": metrics.get("cycles"), "utilization": metrics.get("utilization")}
