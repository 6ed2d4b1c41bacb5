"""The statistics of timing samples, in one place: runner, results and compare use these.

- `summarize(samples, rounds)`: median, min, max, mean, stdev, the robust spread within
  rounds (1.4826 * MAD / median per round, a standard deviation estimate that one descheduled
  sample cannot move; the median over rounds), the per-round medians and their spread;
- `stable`: spread <= STABLE_SPREAD (pyperf warns at 10% too);
- `mann_whitney_u`: the one-sided rank test (exact without ties, else normal approximation);
- `timing_verdict`: the rule compare gates on (see its docstring).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

# A case whose robust spread of samples exceeds this is flagged unstable.
STABLE_SPREAD = 0.10
# Exact U distribution up to this many (m * n) sample pairs when there are no ties;
# past it (or with ties) the normal approximation with tie correction is accurate enough.
EXACT_MAX_PAIRS = 2500
MAD_TO_SIGMA = 1.4826  # MAD * this estimates the standard deviation of a normal sample


def robust_spread(samples) -> float | None:
    """1.4826 * median absolute deviation / median; None below two samples."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size < 2:
        return None
    median = float(np.median(values))
    if median <= 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(values - median)) / median)


def round_medians(samples, rounds) -> list[float]:
    """Median of each round's samples, in round order."""
    by_round: dict[int, list[float]] = {}
    for value, r in zip(samples, rounds):
        by_round.setdefault(int(r), []).append(float(value))
    return [statistics.median(by_round[r]) for r in sorted(by_round)]


def round_spread(medians: list[float]) -> float | None:
    """Largest / smallest round median: how far the same code moved between rounds."""
    if len(medians) < 2 or min(medians) <= 0:
        return None
    return max(medians) / min(medians)


def within_round_spread(samples, rounds) -> float | None:
    """The median over rounds of each round's robust spread: how much the samples of one
    moment scatter (sample noise), apart from how far rounds moved (round_spread)."""
    by_round: dict[int, list[float]] = {}
    for value, r in zip(samples, rounds):
        by_round.setdefault(int(r), []).append(float(value))
    spreads = [robust_spread(v) for v in by_round.values() if len(v) >= 2]
    return statistics.median(spreads) if spreads else robust_spread(samples)


def summarize(samples: list[float], rounds: list[int] | None = None) -> dict:
    """The figures a result records of a case's per-call samples (seconds). `spread` (and so
    `stable`) is the within-round spread; drift between rounds is `round_spread`, the noise
    floor compare holds a slowdown against."""
    rounds = rounds if rounds is not None else [0] * len(samples)
    medians = round_medians(samples, rounds)
    spread = within_round_spread(samples, rounds)
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "mean_s": statistics.fmean(samples),
        "stdev_s": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "spread": spread,
        "stable": None if spread is None else spread <= STABLE_SPREAD,
        "round_medians_s": medians,
        "round_spread": round_spread(medians),
    }


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
# The decision rule


@dataclass(frozen=True)
class Verdict:
    word: str             # regression | improvement | same | slower/faster (not significant) | ...
    ratio: float | None   # median of all new samples / median of all base samples
    noise: float | None   # the noise floor: the larger between-round spread of the two files
    p: float | None       # one-sided Mann-Whitney U on the per-round medians
    reason: str = ""


def machine_drift(base_controls: list[dict] | None, new_controls: list[dict] | None) -> float | None:
    """How far the machine itself moved between two runs: the largest ratio (either way) of the
    median canary time of any probe. None when either run has no controls."""
    def times(controls) -> dict[str, list[float]]:  # what a (perhaps damaged) file says, probe by probe
        out: dict[str, list[float]] = {}
        for entry in controls if isinstance(controls, list) else []:
            for probe, value in (entry.items() if isinstance(entry, dict) else ()):
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                        and value > 0:
                    out.setdefault(str(probe), []).append(float(value))
        return out

    base, new = times(base_controls), times(new_controls)
    ratios = [max(b / n, n / b) for probe in set(base) & set(new)
              for b, n in [(statistics.median(base[probe]), statistics.median(new[probe]))]]
    return max(ratios) if ratios else None


def timing_verdict(base: list[float], base_rounds: list[int], new: list[float], new_rounds: list[int],
                   threshold: float, alpha: float, drift: float | None = None) -> Verdict:
    """A case is a regression only when all three hold:
    1. ratio = median(new) / median(base) exceeds `threshold`;
    2. the ratio exceeds the noise floor: the largest between-round spread (largest round
       median / smallest) seen in either file, i.e. what the same code did between rounds, and
       the machine's own drift between the two runs (`drift`: its canary, see machine_drift);
    3. a one-sided Mann-Whitney U test on the *per-round medians* says new is slower, p <= alpha
       (rounds, not samples, are the independent draws: samples of one round share the
       machine's state of that moment). With 3 rounds a side the smallest p is 1/20, so every
       new round must be slower than every base round.
    Improvements mirror the rule. Fewer rounds than the test can decide on: never gated."""
    if not base or not new:
        return Verdict("no timing", None, None, None)
    base_median, new_median = statistics.median(base), statistics.median(new)
    if base_median <= 0:
        return Verdict("same", None, None, None, "base median is zero")
    ratio = new_median / base_median
    base_meds, new_meds = round_medians(base, base_rounds), round_medians(new, new_rounds)
    spreads = [s for s in (round_spread(base_meds), round_spread(new_meds), drift) if s is not None]
    noise = max(spreads) if spreads else None
    slower, faster = ratio > threshold, ratio < 1 / threshold
    if not (slower or faster):
        return Verdict("same", ratio, noise, None)
    direction = "slower" if slower else "faster"
    floor = noise or 1.0
    beyond_noise = ratio > floor if slower else ratio < 1 / floor
    if min(len(base_meds), len(new_meds)) < 2:
        return Verdict(f"{direction} (not significant)", ratio, noise, None,
                       "fewer than 2 rounds a side: no between-round evidence")
    test = mann_whitney_u(new_meds, base_meds, alternative="greater" if slower else "less")
    if test.p > alpha:
        return Verdict(f"{direction} (not significant)", ratio, noise, test.p,
                       f"per-round medians: p = {test.p:.3g} > {alpha}")
    if not beyond_noise:
        return Verdict(f"{direction} (within noise)", ratio, noise, test.p,
                       f"{ratio:.2f}x is inside the between-round noise floor {floor:.2f}x")
    return Verdict("regression" if slower else "improvement", ratio, noise, test.p)
