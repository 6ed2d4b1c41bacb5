"""The workload protocol: what every kind provides, and the typed keys its suite cases accept.

A kind is one module in sysbench/workloads/ that defines WORKLOAD, an instance of a
Workload subclass. Its suite keys become a frozen `Params` dataclass (one per kind, made
from `keys`); the runner drives every kind through one contract:

    normalize(params, array) -> params     derived keys (pure: returns a new Params)
    check(params, array) -> [(key, msg)]   cross-key checks before anything runs
    working_set(params, array, numerics)   bytes the case needs (refused past the machine's)
    plan(params, array) -> Plan            the deterministic work (shapes, folds, decomposition);
                                           computed once per visit and shared by model and inputs
    model(params, array, plan) -> dict     deterministic figures (cycles, macs, bytes...)
    inputs(params, array, plan, rng)       generated operands, outside every timed region
    timed(run) -> Timed                    the call the runner times (and an optional reset)
    validate(run, output) -> Validation    against an independent reference
    observe(run, output) -> dict           non-deterministic figures of the last call (`measured`)
    summary(metrics) -> dict               the report's columns (cycles, utilization)
    plots(cases) -> [Plot]                 the kind's plots of saved result cases

The runner owns the timing loop (calibration, warm-up, rounds, the clock, thread limits);
a workload never times itself, except a kind whose timing happens inside another process
(an MPI job), which returns SelfTimed samples from its call.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Any, Callable

import numpy as np

from ..errors import KeyedError
from ..hardware import Array
from ..units import MAX_SIZE, parse_size

REQUIRED = object()
# An integer past this fits no 64-bit size in the kernels (and no machine).
MAX_INT = MAX_SIZE


class CaseError(KeyedError):
    """Bad input found while preparing a case (a file, its contents); names the key."""


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
            if abs(value) > MAX_INT:  # TOML integers are unbounded here; the kernels' are 64-bit
                return None, f"must be at most {MAX_INT} in size, got {value!r}"
        elif k == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None, f"must be a number, got {value!r}"
            try:
                value = float(value)
            except OverflowError:  # a TOML integer past float range
                return None, f"must be a finite number, got {value!r}"
            if not math.isfinite(value):  # nan/inf would run and be written as invalid JSON
                return None, f"must be a finite number, got {value!r}"
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
            if any(abs(v) > MAX_INT for v in value):
                return None, f"must be at most {MAX_INT} in size, got {value!r}"
        elif k == "list":
            if not isinstance(value, list):
                return None, f"must be a list, got {value!r}"
        elif k == "size":
            parsed = parse_size(value)
            if parsed is None:
                return None, f"must be a byte count (at most 8 EiB) or a string like '64MiB', got {value!r}"
            value = parsed
        if self.choices is not None and value not in self.choices:
            return None, f"must be one of {', '.join(map(str, self.choices))}; got {value!r}"
        if self.minimum is not None:
            numbers = value if isinstance(value, tuple) else (value,)
            if any(v < self.minimum for v in numbers):
                what = "positive" if self.minimum == 1 and k in ("int", "pair") else f">= {self.minimum}"
                return None, f"must be {what}, got {value!r}"
        return value, None


def keys_not_applying(keys: Mapping[str, Key], values: Mapping, set_keys) -> list[tuple[str, str]]:
    """(key, reason) for each of `set_keys` (the keys a case sets itself) that its `applies`
    says `values` (all the case's keys) do not read: the one "this key does not apply" check."""
    reasons = ((key, keys[key].applies(values)) for key in set_keys if keys[key].applies)
    return [(key, reason) for key, reason in reasons if reason]


# Keys every case accepts, whatever its kind.
COMMON_KEYS = {
    "name": Key("str", help="case name, unique in the suite"),
    "kind": Key("str", help="workload kind"),
    "array": Key("str", default=None, help="name of an [arrays.*] table"),
    "numerics": Key("bool", default=True, help="compute and validate the numbers (false: model only)"),
    "repeats": Key("int", default=5, minimum=1, help="timed samples per round"),
    "rounds": Key("int", default=3, minimum=1, help="rounds: every case is timed once per round, in suite order"),
    "min_time": Key("float", default=0.005, minimum=1e-6,
                    help="seconds one sample lasts at least (calls per sample calibrated to it)"),
    "warmup": Key("int", default=1, minimum=0, help="untimed calls at the start of every round"),
    "seed": Key("int", default=0, minimum=0, help="seed of the generated inputs"),
}


class Params(Mapping):
    """A case's parsed keys: a frozen dataclass (attributes) that also reads as a mapping,
    so shape helpers shared with tests and kernels take either."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __iter__(self):
        return (f.name for f in fields(self))

    def __len__(self) -> int:
        return len(fields(self))

    def replace(self, **changes) -> "Params":
        return replace(self, **changes)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.items()}


@dataclass
class Validation:
    """What the reference said. `error` is the largest deviation found, absolute or relative
    to the reference as `error_kind` says; `level` is the one word the report shows."""

    reference: str
    error: float
    passed: bool
    level: str = "in bound"  # bit-exact | exact | in bound | checked
    error_kind: str = "max_abs"  # max_abs | max_rel
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        error = self.error if self.error is None or math.isfinite(self.error) else None
        out = {"reference": self.reference, "level": self.level, "error": error,
               "error_kind": self.error_kind, "passed": bool(self.passed)}
        if self.detail:
            out["detail"] = self.detail
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Run:
    """One visit of a case: everything timed() and validate() may read."""

    params: Params
    array: Array
    plan: Any
    inputs: Any
    threads: int
    warmup: int
    repeats: int
    min_time: float = 0.0  # seconds a sample should last (a self-timed job groups its calls)
    validates: bool = True  # this visit's output goes to validate() (a job skips its reference when not)


@dataclass
class Timed:
    """The call the runner times. `reset` runs before every call, outside the timer (a
    training step restores its weights); a kind with a reset is timed one call per sample."""

    call: Callable[[], Any]
    reset: Callable[[], None] | None = None
    # the call returns SelfTimed (its warm-up and repeats happen inside): called once a round
    self_timed: bool = False
    # peers timed the same way beside the kernel ("dense" for sparse_gemm): name -> call
    peers: dict[str, Callable[[], Any]] = field(default_factory=dict)


@dataclass
class SelfTimed:
    """What a call returns when its time can only be measured inside it (the steps of an MPI
    job, timed on the ranks): its own samples in seconds, the output and extra figures, and
    the control probe time around each sample (stats.control_probe) when it took them."""

    samples: list[float]
    output: Any
    measured: dict = field(default_factory=dict)
    controls: list[float] | None = None


class Workload:
    kind: str = ""
    description: str = ""
    keys: dict[str, Key] = {}
    needs_array: bool = True
    # the reference sums like the kernel only with the case's BLAS thread count (numpy
    # training); otherwise validation holds BLAS to one thread
    reference_uses_case_threads: bool = False
    # a layer of a network on the array: a suite of them has network totals and plots
    network_layer: bool = False
    Params: type = Params

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "keys" in cls.__dict__:
            cls.Params = make_dataclass(f"{cls.__name__}Params", [(name, Any) for name in cls.keys],
                                        bases=(Params,), frozen=True, eq=True)
            # picklable by reference (worker processes of a sweep): found as Kind.Params
            cls.Params.__module__, cls.Params.__qualname__ = cls.__module__, f"{cls.__qualname__}.Params"

    def make_params(self, values: dict) -> Params:
        return self.Params(**{name: values.get(name) for name in self.keys})

    def normalize(self, params: Params, array: Array) -> Params:
        return params

    def check(self, params: Params, array: Array) -> list[tuple[str, str]]:
        return []

    def working_set(self, params: Params, array: Array, numerics: bool) -> int:
        """Bytes the case allocates at its peak (an estimate from shapes): its plan and
        model alone, or with numerics its inputs, outputs and reference too."""
        return 0

    def plan(self, params: Params, array: Array) -> Any:
        return None

    def model(self, params: Params, array: Array, plan: Any) -> dict:
        raise NotImplementedError

    def inputs(self, params: Params, array: Array, plan: Any, rng: np.random.Generator) -> Any:
        return None

    def timed(self, run: Run) -> Timed:
        raise NotImplementedError

    def validate(self, run: Run, output: Any) -> Validation:
        raise NotImplementedError

    def observe(self, run: Run, output: Any) -> dict:
        return {}

    def summary(self, metrics: dict) -> dict:
        """Columns for the report: cycles and utilization where the kind has them."""
        return {"cycles": metrics.get("cycles"), "utilization": metrics.get("utilization")}

    def plots(self, cases: list[dict]) -> list:
        """Plots (sysbench.plots.Plot) of this kind's cases of a saved result."""
        return []

    # The table path of design-space sweeps (sysbench.sweep): a kind that can model many
    # model-only cases at once as numpy columns overrides both; the figures must be the same
    # bits as model() per case.
    model_table = None  # (params columns, array columns per row) -> metric columns

    def check_table(self, params: dict, arrays: dict) -> list[tuple[int, str, str]]:
        """check() over table rows: [(row, key, message)]."""
        return []
