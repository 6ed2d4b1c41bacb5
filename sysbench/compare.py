"""Compare two results: model changes exactly, timings only when slower *and* significant.

A case is matched by its `id`. Its two halves are judged differently:
- deterministic figures (`metrics`, and the `params` and `array` that produced them) must be
  identical; any difference is a model change, reported with the old and the new value;
- a timing is a regression only when (stats.timing_verdict), on samples scaled to the
  machine's usual speed by the control probe timed around each, the median ratio new/base
  exceeds the threshold, AND exceeds the case's noise floor (the largest between-round spread
  either file shows, cubed: a run moves against another run by more than its rounds move),
  AND a one-sided Mann-Whitney U test on the samples says NEW is slower (p <= alpha).
  Improvements mirror the rule. Unstable samples are warned about.

Exit code of a comparison: 0 nothing wrong, 1 a regression, a model change or a newly failing
validation; 2 (raised as CompareError) files that cannot be read or compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import results
from .stats import (STABLE_SPREAD, finite_number, machine_drift, mann_whitney_u,  # noqa: F401 (re-exported)
                    own_adjusted, timing_verdict, within_round_spread)

SCHEMA = "sysbench.compare/1"
DEFAULT_THRESHOLD = 1.10
DEFAULT_ALPHA = 0.05
# Machine metadata that changes timings: a difference is warned about (git commit is not:
# comparing two commits is the point).
MACHINE_KEYS = ("cpu", "arch", "cores", "threads", "python", "numpy", "blas", "compiler_version",
                "cython", "openmp", "isa", "env")
# The ones that make timings incomparable: when one differs, a timing regression is shown but
# does not fail the comparison unless asked (--gate-timings). A software difference (numpy,
# compiler...) still gates: a slower numpy is the kind of regression CI is there to find.
TIMING_MACHINE_KEYS = ("cpu", "arch", "cores", "threads", "isa")


class CompareError(Exception):
    """The files cannot be compared (unreadable, not a result, malformed): exit 2."""


# ----------------------------------------------------------------------------------------
# Deterministic figures


def _same(a: Any, b: Any) -> bool:
    """Exact equality of two JSON leaves; 3 and 3.0 are equal, True and 1 are not, NaN is NaN."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def diff_values(old: Any, new: Any, path: str) -> list[dict]:
    """Every leaf that differs between two JSON values: [{path, old, new}]. Missing = None."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += diff_values(old.get(key), new.get(key), f"{path}.{key}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += diff_values(a, b, f"{path}[{i}]")
        return out
    return [] if _same(old, new) else [{"path": path, "old": old, "new": new}]


# ----------------------------------------------------------------------------------------
# Cases


@dataclass
class CaseComparison:
    id: str
    base_s: float | None = None        # median
    new_s: float | None = None
    ratio: float | None = None         # new / base medians
    p_value: float | None = None       # of the rank test on the samples, in the direction of the ratio
    noise: float | None = None         # the noise floor (stats.timing_verdict): between-round spread cubed
    reason: str = ""                   # why a slowdown past the threshold was not gated
    # regression | improvement | same | slower (not significant) | faster (not significant)
    # | slower (no samples to test) | faster (no samples to test) | no timing (model only)
    timing: str = "no timing"
    model_changes: list[dict] = field(default_factory=list)
    validation_failed: bool = False
    unstable: list[str] = field(default_factory=list)   # "base" and/or "new"
    spread: dict = field(default_factory=dict)          # robust spread of each side's samples
    gated: bool = True  # False: the machines differ, a timing regression is shown, not failed

    @property
    def failed(self) -> bool:
        return (bool(self.model_changes) or (self.timing == "regression" and self.gated)
                or self.validation_failed)

    @property
    def verdict(self) -> str:
        parts = []
        if self.model_changes:
            parts.append("model change")
        if self.validation_failed:
            parts.append("validation failed")
        if self.timing != "no timing" or not parts:
            parts.append(self.timing if self.gated or self.timing != "regression"
                         else "regression (not gated)")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"id": self.id, "verdict": self.verdict, "timing": self.timing,
                "base_median_s": self.base_s, "new_median_s": self.new_s, "ratio": self.ratio,
                "p_value": self.p_value, "noise_floor": self.noise, "reason": self.reason,
                "spread": self.spread, "gated": self.gated,
                "unstable": self.unstable, "validation_failed": self.validation_failed,
                "model_changes": self.model_changes}


@dataclass
class Comparison:
    base: str
    new: str
    threshold: float
    alpha: float
    cases: list[CaseComparison]
    only_in_base: list[str]
    only_in_new: list[str]
    warnings: list[str]
    timings_gated: bool = True
    machine_mismatch: list[str] = field(default_factory=list)  # TIMING_MACHINE_KEYS that differ

    def ids(self, predicate) -> list[str]:
        return [c.id for c in self.cases if predicate(c)]

    @property
    def regressions(self) -> list[str]:
        return self.ids(lambda c: c.timing == "regression")

    @property
    def improvements(self) -> list[str]:
        return self.ids(lambda c: c.timing == "improvement")

    @property
    def model_changes(self) -> list[str]:
        return self.ids(lambda c: bool(c.model_changes))

    @property
    def validation_failures(self) -> list[str]:
        return self.ids(lambda c: c.validation_failed)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.failed for c in self.cases) else 0

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "base": self.base, "new": self.new, "threshold": self.threshold,
                "alpha": self.alpha, "exit_code": self.exit_code, "regressions": self.regressions,
                "improvements": self.improvements, "model_changes": self.model_changes,
                "validation_failures": self.validation_failures,
                "only_in_base": self.only_in_base, "only_in_new": self.only_in_new,
                "timings_gated": self.timings_gated, "machine_mismatch": self.machine_mismatch,
                "warnings": self.warnings, "cases": [c.to_dict() for c in self.cases]}


def _samples(case: dict, label: str) -> tuple[list[float] | None, list[int] | None]:
    """(samples, their rounds) of a case's timing; (None, None) for a model-only case. A /1
    file's samples all count as one round."""
    timing = case.get("timing")
    if timing is None:
        return None, None
    if not isinstance(timing, dict):
        raise CompareError(f"{label}: case {case['id']!r}: 'timing' is not an object")
    samples = timing.get("samples_s")
    if samples is None and "samples_s" not in timing:
        median = timing.get("median_s")
        if finite_number(median):
            return [float(median)], None  # a median alone: reported, never tested
        raise CompareError(f"{label}: case {case['id']!r}: timing has neither 'samples_s' nor 'median_s'")
    if not isinstance(samples, list) or not samples or not all(finite_number(s) and s >= 0 for s in samples):
        raise CompareError(f"{label}: case {case['id']!r}: 'timing.samples_s' must be a "
                           "non-empty list of non-negative numbers")
    rounds = timing.get("sample_rounds")
    if rounds is None:
        rounds = [0] * len(samples)
    elif (not isinstance(rounds, list) or len(rounds) != len(samples)
          or not all(isinstance(r, int) and not isinstance(r, bool) for r in rounds)):
        raise CompareError(f"{label}: case {case['id']!r}: 'timing.sample_rounds' must list one "
                           "integer round per sample")
    return [float(s) for s in samples], rounds


def _controls(case: dict, label: str, samples: list | None) -> list[float] | None:
    """The control probe time of every sample (timing.controls_s), None when the file has none."""
    controls = (case.get("timing") or {}).get("controls_s")
    if controls is None or samples is None:
        return None
    if not isinstance(controls, list) or len(controls) != len(samples) or not all(finite_number(c) and c > 0
                                                                                 for c in controls):
        raise CompareError(f"{label}: case {case['id']!r}: 'timing.controls_s' must list one positive "
                           "number per sample")
    return [float(c) for c in controls]


def compare_timing(result: CaseComparison, base: dict, new: dict, base_label: str, new_label: str,
                   threshold: float, alpha: float, drift: float | None = None) -> None:
    base_samples, base_rounds = _samples(base, base_label)
    new_samples, new_rounds = _samples(new, new_label)
    base_controls, new_controls = _controls(base, base_label, base_samples), _controls(new, new_label, new_samples)
    for side, samples, rounds, controls in (("base", base_samples, base_rounds, base_controls),
                                            ("new", new_samples, new_rounds, new_controls)):
        if samples:
            spread = within_round_spread(own_adjusted(samples, controls)[0], rounds or [0] * len(samples))
            result.spread[side] = spread
            if spread is not None and spread > STABLE_SPREAD:
                result.unstable.append(side)
    if not base_samples or not new_samples:
        result.timing = "no timing"
        return
    result.base_s, result.new_s = float(np.median(base_samples)), float(np.median(new_samples))
    if base_rounds is None or new_rounds is None:
        result.ratio = result.new_s / result.base_s if result.base_s else None
        slower = result.ratio is not None and result.ratio > threshold
        faster = result.ratio is not None and result.ratio < 1 / threshold
        result.timing = "same" if not (slower or faster) else \
            f"{'slower' if slower else 'faster'} (no samples to test)"
        return
    own_jobs = all((case.get("timing") or {}).get("rounds_in_own_jobs") is True for case in (base, new))
    verdict = timing_verdict(base_samples, base_rounds, new_samples, new_rounds, threshold, alpha, drift,
                             base_controls, new_controls, own_jobs)
    result.timing, result.ratio, result.noise = verdict.word, verdict.ratio, verdict.noise
    if verdict.base_s is not None:
        result.base_s, result.new_s = verdict.base_s, verdict.new_s
    result.p_value, result.reason = verdict.p, verdict.reason


def _validation_failed(case: dict) -> bool:
    if case.get("error"):
        return True
    v = case.get("validation")
    return isinstance(v, dict) and v.get("passed") is False


def _index(document: dict, label: str) -> dict[str, dict]:
    """Cases by id, checking the shape compare relies on."""
    index = {}
    for i, case in enumerate(document["cases"]):
        if not isinstance(case, dict) or not isinstance(case.get("id"), str):
            raise CompareError(f"{label}: case #{i + 1} has no string 'id'")
        if case["id"] in index:
            raise CompareError(f"{label}: case id {case['id']!r} appears twice")
        if not isinstance(case.get("metrics"), dict):
            raise CompareError(f"{label}: case {case['id']!r}: 'metrics' missing or not an object")
        index[case["id"]] = case
    return index


def machine_warnings(base: dict, new: dict) -> list[str]:
    """One warning per machine property that differs (timings are then not comparable)."""
    a, b = base.get("machine") or {}, new.get("machine") or {}
    out = []
    for key in MACHINE_KEYS:
        if key in a and key in b and a[key] != b[key]:
            out.append(f"machine {key} differs: base {a[key]!r}, new {b[key]!r}")
    for label, machine in (("base", a), ("new", b)):
        if machine.get("git_dirty"):
            out.append(f"{label} was run from a working tree with uncommitted changes")
    return out


def machine_mismatch(base: dict, new: dict) -> list[str]:
    """The TIMING_MACHINE_KEYS both documents record and that differ."""
    a, b = base.get("machine") or {}, new.get("machine") or {}
    return [key for key in TIMING_MACHINE_KEYS
            if a.get(key) is not None and b.get(key) is not None and a[key] != b[key]]


def check_settings(threshold: float, alpha: float = DEFAULT_ALPHA) -> None:
    """CompareError for a threshold or alpha that means nothing (checked before a run too)."""
    if not (math.isfinite(threshold) and threshold >= 1.0):
        raise CompareError(f"--threshold must be a finite ratio new/base >= 1.0 (1.10 = 10% slower), "
                           f"got {threshold}")
    if not 0.0 < alpha < 1.0:
        raise CompareError(f"--alpha must be between 0 and 1, got {alpha}")


def compare_documents(base: dict, new: dict, base_label: str = "BASE", new_label: str = "NEW",
                      threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA,
                      gate_timings: bool | None = None) -> Comparison:
    """gate_timings: True fails on timing regressions whatever the machines, False never, None
    (the default) only when the machines match (no TIMING_MACHINE_KEYS differ)."""
    check_settings(threshold, alpha)
    base_cases, new_cases = _index(base, base_label), _index(new, new_label)
    if not set(base_cases) & set(new_cases):
        raise CompareError(f"{base_label} ({len(base_cases)} cases) and {new_label} ({len(new_cases)} cases) "
                           f"have no case id in common: nothing to compare (is this the right baseline?)")
    mismatch = machine_mismatch(base, new)
    settings = lambda doc: doc.get("settings") or {}  # noqa: E731
    parallel = [label for label, doc in ((base_label, base), (new_label, new))
                if (settings(doc).get("parallel_timed") or 1) > 1]
    gated = gate_timings if gate_timings is not None else not (mismatch or parallel)
    drift = machine_drift(settings(base).get("controls") or None, settings(new).get("controls") or None)
    compared = []
    for case_id, old in base_cases.items():
        if case_id not in new_cases:
            continue
        cur = new_cases[case_id]
        result = CaseComparison(case_id)
        for part in ("params", "array", "metrics"):
            result.model_changes += diff_values(old.get(part), cur.get(part), part)
        result.validation_failed = _validation_failed(cur)
        compare_timing(result, old, cur, base_label, new_label, threshold, alpha, drift)
        result.gated = gated
        compared.append(result)
    warnings = machine_warnings(base, new)
    if not gated:
        why = (f"the machines differ ({', '.join(mismatch)})" if mismatch and gate_timings is None
               else f"{' and '.join(parallel)} timed cases in parallel (--parallel-timed)"
               if parallel and gate_timings is None else "--no-gate-timings")
        warnings.append(f"timings are shown but not gated: {why}; model changes and validation still "
                        f"gate" + (" (--gate-timings gates timings anyway)" if gate_timings is None else ""))
    for result in compared:
        for side in result.unstable:
            warnings.append(f"{result.id}: unstable {side} timing (spread {100 * result.spread[side]:.1f}% > "
                            f"{100 * STABLE_SPREAD:.0f}%): its verdict is unreliable")
        if result.reason:
            warnings.append(f"{result.id}: {result.ratio:.2f}x but {result.reason}: not called a "
                            f"{'regression' if result.ratio > 1 else 'improvement'}")
    return Comparison(base_label, new_label, threshold, alpha, compared,
                      only_in_base=[i for i in base_cases if i not in new_cases],
                      only_in_new=[i for i in new_cases if i not in base_cases],
                      warnings=warnings, timings_gated=gated, machine_mismatch=mismatch)


def load(path) -> dict:
    """A result document, or CompareError with a one-line reason."""
    try:
        return results.load(path)
    except results.ResultError as exc:
        raise CompareError(str(exc)) from None


def compare_files(base_path, new_path, threshold: float = DEFAULT_THRESHOLD,
                  alpha: float = DEFAULT_ALPHA, gate_timings: bool | None = None) -> Comparison:
    return compare_documents(load(base_path), load(new_path), str(base_path), str(new_path),
                             threshold, alpha, gate_timings)
