"""Compare two results: model changes exactly, timings only when slower *and* significant.

A case is matched by its `id`. Its two halves are judged differently:
- deterministic figures (`metrics`, and the `params` and `array` that produced them) must be
  identical; any difference is a model change, reported with the old and the new value;
- a timing is a regression only when the median ratio new/base exceeds the threshold AND a
  one-sided Mann-Whitney U test on the raw samples says NEW is slower (p <= alpha). The test
  is rank-based, so one descheduled sample cannot make a regression on its own.
Improvements are reported the same way. Samples whose coefficient of variation is above
results.STABILITY_CV are warned about: their timings are not worth much.

Exit code of a comparison: 0 nothing wrong, 1 a regression, a model change or a newly failing
validation; 2 (raised as CompareError) files that cannot be read or compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import results

SCHEMA = "sysbench.compare/1"
DEFAULT_THRESHOLD = 1.10
DEFAULT_ALPHA = 0.05
# Exact U distribution up to this many (m * n) sample pairs when there are no ties;
# past it (or with ties) the normal approximation with tie correction is accurate enough.
EXACT_MAX_PAIRS = 2500
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
# Mann-Whitney U


@dataclass(frozen=True)
class UTest:
    u: float          # U of the first sample: pairs (x_i, y_j) with x_i > y_j, ties count 1/2
    p: float          # one-sided p-value for the requested alternative
    method: str       # "exact" or "normal"


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N; tied values all get the average of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and ordered[stop + 1] == ordered[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def u_distribution(m: int, n: int) -> list[int]:
    """How many of the C(m+n, m) orderings give U = 0 .. m*n (no ties).

    These are the coefficients of the Gaussian binomial [m+n choose m]_q
    = prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i), built one factor at a time with exact
    integers. Truncating at degree m*n is exact: dividing by (1 - q^i) as a power series
    only looks at lower degrees.
    """
    m, n = min(m, n), max(m, n)
    top = m * n
    coeffs = [1] + [0] * top
    for i in range(1, m + 1):
        shift = n + i
        for k in range(top, shift - 1, -1):   # times (1 - q^shift)
            coeffs[k] -= coeffs[k - shift]
        for k in range(i, top + 1):           # divided by (1 - q^i)
            coeffs[k] += coeffs[k - i]
    return coeffs


def mann_whitney_u(x, y, alternative: str = "greater") -> UTest:
    """One-sided Mann-Whitney U test that x is stochastically greater ("greater") or less
    ("less") than y. Exact distribution without ties and for small samples; otherwise the
    normal approximation with tie correction and continuity correction."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("samples must be finite")
    combined = np.concatenate([x, y])
    ranks = midranks(combined)
    u = float(ranks[:m].sum() - m * (m + 1) / 2)
    _, tie_sizes = np.unique(combined, return_counts=True)
    has_ties = bool(np.any(tie_sizes > 1))

    if not has_ties and m * n <= EXACT_MAX_PAIRS:
        counts = u_distribution(m, n)
        total = math.comb(m + n, m)
        k = int(round(u))
        tail = sum(counts[k:]) if alternative == "greater" else sum(counts[:k + 1])
        return UTest(u, tail / total, "exact")

    big_n = m + n
    tie_term = float(np.sum(tie_sizes.astype(np.float64) ** 3 - tie_sizes)) / (big_n * (big_n - 1))
    variance = m * n / 12 * ((big_n + 1) - tie_term)
    if variance <= 0:  # every value tied: no evidence either way
        return UTest(u, 1.0, "normal")
    mean = m * n / 2
    if alternative == "greater":
        z = (u - mean - 0.5) / math.sqrt(variance)
        p = 0.5 * math.erfc(z / math.sqrt(2))
    else:
        z = (u - mean + 0.5) / math.sqrt(variance)
        p = 0.5 * math.erfc(-z / math.sqrt(2))
    return UTest(u, min(1.0, p), "normal")


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
    p_value: float | None = None       # of the test in the direction of the ratio
    test: str | None = None            # "exact" / "normal"
    # regression | improvement | same | slower (not significant) | faster (not significant)
    # | slower (no samples to test) | faster (no samples to test) | no timing (model only)
    timing: str = "no timing"
    model_changes: list[dict] = field(default_factory=list)
    validation_failed: bool = False
    unstable: list[str] = field(default_factory=list)   # "base" and/or "new", with cv
    cv: dict = field(default_factory=dict)
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
                "p_value": self.p_value, "test": self.test, "cv": self.cv, "gated": self.gated,
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


def _samples(case: dict, label: str) -> tuple[float | None, list[float] | None]:
    """(median, samples) of a case's timing; (None, None) for a model-only case."""
    timing = case.get("timing")
    if timing is None:
        return None, None
    if not isinstance(timing, dict):
        raise CompareError(f"{label}: case {case['id']!r}: 'timing' is not an object")
    samples = timing.get("samples_s")
    if samples is not None:
        if (not isinstance(samples, list) or not samples
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                           and math.isfinite(s) and s >= 0 for s in samples)):
            raise CompareError(f"{label}: case {case['id']!r}: 'timing.samples_s' must be a "
                               "non-empty list of non-negative numbers")
        return float(np.median(samples)), [float(s) for s in samples]
    median = timing.get("median_s")
    if isinstance(median, (int, float)) and not isinstance(median, bool):
        return float(median), None
    raise CompareError(f"{label}: case {case['id']!r}: timing has neither 'samples_s' nor 'median_s'")


def compare_timing(result: CaseComparison, base: dict, new: dict, base_label: str, new_label: str,
                   threshold: float, alpha: float) -> None:
    result.base_s, base_samples = _samples(base, base_label)
    result.new_s, new_samples = _samples(new, new_label)
    for side, samples in (("base", base_samples), ("new", new_samples)):
        if samples:
            cv, stable = results.stability(samples)
            result.cv[side] = cv
            if stable is False:
                result.unstable.append(side)
    if result.base_s is None or result.new_s is None:
        result.timing = "no timing"
        return
    if result.base_s == 0:
        result.ratio = math.inf if result.new_s > 0 else 1.0
    else:
        result.ratio = result.new_s / result.base_s
    direction = ("slower" if result.ratio > threshold
                 else "faster" if result.ratio < 1 / threshold else None)
    if direction is None:
        result.timing = "same"
        return
    if base_samples is None or new_samples is None:
        result.timing = f"{direction} (no samples to test)"
        return
    test = mann_whitney_u(new_samples, base_samples,
                          alternative="greater" if direction == "slower" else "less")
    result.p_value, result.test = test.p, test.method
    significant = test.p <= alpha
    if direction == "slower":
        result.timing = "regression" if significant else "slower (not significant)"
    else:
        result.timing = "improvement" if significant else "faster (not significant)"


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
    gated = gate_timings if gate_timings is not None else not mismatch
    compared = []
    for case_id, old in base_cases.items():
        if case_id not in new_cases:
            continue
        cur = new_cases[case_id]
        result = CaseComparison(case_id)
        for part in ("params", "array", "metrics"):
            result.model_changes += diff_values(old.get(part), cur.get(part), part)
        result.validation_failed = _validation_failed(cur)
        compare_timing(result, old, cur, base_label, new_label, threshold, alpha)
        result.gated = gated
        compared.append(result)
    warnings = machine_warnings(base, new)
    if not gated:
        why = (f"the machines differ ({', '.join(mismatch)})" if mismatch and gate_timings is None
               else "--no-gate-timings")
        warnings.append(f"timings are shown but not gated: {why}; model changes and validation still "
                        f"gate" + (" (--gate-timings gates timings anyway)" if gate_timings is None else ""))
    for result in compared:
        for side in result.unstable:
            warnings.append(f"{result.id}: unstable {side} timing (cv {100 * result.cv[side]:.1f}% > "
                            f"{100 * results.STABILITY_CV:.0f}%): its verdict is unreliable")
        if result.timing.endswith("(not significant)"):
            warnings.append(f"{result.id}: {result.ratio:.2f}x but not significant "
                            f"(p = {result.p_value:.3g} > {alpha}): not called a "
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
