"""Run one case: model, inputs, warm-up, timed repeats of the kernel, validation."""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import numpy as np

from .suite import Case
from .workloads import registry
from .workloads.base import CaseError


class InputError(Exception):
    """A case's inputs are unusable (bad file, bad data): exit 2, one line."""


@dataclass
class CaseResult:
    case: Case
    metrics: dict
    timing: dict | None = None
    validation: dict | None = None
    measured: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and (self.validation is None or self.validation["passed"])

    def to_dict(self) -> dict:
        c = self.case
        out = {
            "id": c.id,
            "suite": c.suite,
            "name": c.name,
            "kind": c.kind,
            "params": c.params_json(),
            "array": c.array.to_dict(),
            "numerics": c.numerics,
            "seed": c.seed,
            "metrics": self.metrics,
            "timing": self.timing,
            "validation": self.validation,
        }
        if self.measured:
            out["measured"] = self.measured
        if self.error:
            out["error"] = self.error
        return out


def resolve_threads(threads: int | None) -> int:
    """--threads: None or 1 -> 1 (reproducible default), 0 -> every core."""
    if threads is None:
        return 1
    if threads == 0:
        return os.cpu_count() or 1
    return threads


def timing_summary(samples: list[float]) -> dict:
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "mean_s": statistics.fmean(samples),
        "stdev_s": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "repeats": len(samples),
        "samples_s": samples,
    }


def run_case(case: Case, threads: int, repeats: int | None = None) -> CaseResult:
    workload = registry()[case.kind]
    metrics = workload.model(case.params, case.array)
    result = CaseResult(case, metrics)
    if not case.numerics:
        return result
    rng = np.random.default_rng(case.seed)
    try:
        state = workload.prepare(case.params, case.array, rng)
        samples, output, measured = workload.measure(state, threads, case.warmup, repeats or case.repeats)
        result.timing = timing_summary(samples)
        result.measured = measured
        result.validation = workload.validate(state, output).to_dict()
    except CaseError as exc:
        raise InputError(f"{case.source}: case {case.name!r} key {exc.key!r}: {exc}") from None
    except Exception as exc:  # a failing case is reported and the run goes on (exit 1)
        result.error = f"{type(exc).__name__}: {exc}"
    return result
