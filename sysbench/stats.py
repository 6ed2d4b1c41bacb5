"""The statistics of timing samples, in one place: runner, results and compare use these.

- `sensitivity`, `adjusted`: a case's samples as if taken at the machine's usual speed, by the
  control probe timed around every sample (`control_probe`) and the case's own sensitivity;
- `summarize(samples, rounds, controls)`: median, min, max, mean, stdev, the robust spread within
  rounds (1.4826 * MAD / median per round, a standard deviation estimate that one descheduled
  sample cannot move; the median over rounds), the per-round medians and their spread, all
  of the adjusted samples;
- `stable`: spread <= STABLE_SPREAD (pyperf warns at 10% too);
- `mann_whitney_u`: the one-sided rank test (exact without ties, else normal approximation);
- `timing_verdict`: the rule compare gates on (see its docstring).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np

# A case whose robust spread of samples exceeds this is flagged unstable.
STABLE_SPREAD = 0.10
# Exact U distribution up to this many (m * n) sample pairs when there are no ties;
# past it (or with ties) the normal approximation with tie correction is accurate enough.
EXACT_MAX_PAIRS = 2500
MAD_TO_SIGMA = 1.4826  # MAD * this estimates the standard deviation of a normal sample
# The machine's own speed moves under the samples: on the 2-vCPU VMs this project runs on, a
# shared host halves the speed of a pure-Python loop for 0.1-1 s at a time, and the kernels
# slow 1.3-1.9x with it. A control probe timed around every sample sees it, and a case's
# sensitivity to it is learnt from the samples themselves (see `sensitivity`).
MAX_SENSITIVITY = 1.5        # a case's time moves at most this power of the control's
STATE_STEP = math.log(1.15)  # controls this far apart (in log) were taken in different machine states
MIN_STATE_PAIRS = 5          # sample pairs across states needed to learn a sensitivity
MAX_PAIRS = 20000            # Theil-Sen slopes computed per file at most (evenly thinned past it)
# A run moves a case against another run by more than its rounds move against each other (the
# process's own state: its memory placement, its core, the host's neighbours over those
# seconds, which no round of that run can see): in 40 A/A pairs of `quick` (680 case
# comparisons) on the project's 2-vCPU VM the largest shift was 2.5x the between-round
# spread, in log; the floor is that spread to this power. The price: a case whose rounds
# spread 1.26x cannot gate a 2x slowdown (compare prints each case's floor).
RUN_TO_RUN = 3.0
# ... and for a case whose every round is a job of its own (an MPI job: fresh processes each
# round), whose between-round spread already sees what a new process does: its largest A/A
# shift was 1.8x its between-round spread, in log.
RUN_TO_RUN_JOBS = 2.0


CONTROL_LOOP = 4000  # iterations of control_probe's loop: about 0.1 ms on a 3-4 GHz core


def control_probe() -> float:
    """Seconds of a fixed pure-Python loop, timed after every sample (by the runner, and between
    the sample groups of an MPI job by its ranks): the yardstick of the machine's own speed at
    that moment (a shared host halves such a loop's speed for 0.1-1 s at a time), by which
    `adjusted` takes it out of the samples. None of it is sysbench's code."""
    start = time.perf_counter()
    total = 0
    for i in range(CONTROL_LOOP):
        total += i * i
    return time.perf_counter() - start


def finite_number(value) -> bool:
    """A finite JSON number (not a boolean): what a result file's timing figures must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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


def sensitivity(files) -> float | None:
    """How strongly a case's time follows the machine's speed: the slope of log(sample time)
    on log(control probe time), a Theil-Sen estimate (the median of pairwise slopes) over the
    pairs of samples of one file whose controls differ by at least STATE_STEP, i.e. that were
    taken in different machine states. Pairs never span two files, so whatever shifts one
    file against the other (a regression) does not enter. Clipped to [0, MAX_SENSITIVITY];
    None when fewer than MIN_STATE_PAIRS such pairs exist (each file stayed in one state).
    `files`: [(samples, controls), ...]."""
    slopes = []
    for samples, controls in files:
        if not controls or len(controls) != len(samples) or len(samples) < 2:
            continue
        log_s, log_c = np.log(np.asarray(samples, float)), np.log(np.asarray(controls, float))
        i, j = np.triu_indices(len(log_s), 1)
        if i.size > MAX_PAIRS:
            pick = np.linspace(0, i.size - 1, MAX_PAIRS).astype(np.int64)
            i, j = i[pick], j[pick]
        dc = log_c[i] - log_c[j]
        apart = np.abs(dc) >= STATE_STEP
        slopes.append((log_s[i] - log_s[j])[apart] / dc[apart])
    slopes = np.concatenate(slopes) if slopes else np.empty(0)
    if slopes.size < MIN_STATE_PAIRS:
        return None
    return float(np.clip(np.median(slopes), 0.0, MAX_SENSITIVITY))


def adjusted(samples, controls, beta: float | None, reference: float) -> list[float]:
    """The samples as if taken at the machine's usual speed: each times (reference / its
    control) ** beta, reference the fastest control. Unchanged without beta or controls."""
    if beta is None or not controls:
        return list(samples)
    return [s * (reference / c) ** beta for s, c in zip(samples, controls)]


def _has_controls(samples, controls) -> bool:
    return bool(controls) and len(controls) == len(samples)


def own_adjusted(samples, controls) -> tuple[list[float], float | None]:
    """One file's samples adjusted by its own sensitivity (what its result records), and that
    sensitivity; the samples as they are without controls."""
    if not _has_controls(samples, controls):
        return list(samples), None
    beta = sensitivity([(samples, controls)])
    return adjusted(samples, controls, beta, min(controls)), beta


def summarize(samples: list[float], rounds: list[int] | None = None, controls: list[float] | None = None) -> dict:
    """The figures a result records of a case's per-call samples (seconds); with a control
    probe time per sample, of the samples `adjusted` to the machine's usual speed by the
    case's own `sensitivity` (recorded). `spread` (and so `stable`) is the within-round spread;
    drift between rounds is `round_spread`, the noise floor compare holds a slowdown against."""
    rounds = rounds if rounds is not None else [0] * len(samples)
    extra = {}
    if _has_controls(samples, controls):
        extra = {"control_s": statistics.median(controls)}
        samples, extra["sensitivity"] = own_adjusted(samples, controls)
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
        **extra,
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
    p: float | None       # one-sided Mann-Whitney U on the (adjusted) samples
    reason: str = ""
    base_s: float | None = None  # the medians the ratio is of (of the samples each side keeps)
    new_s: float | None = None


def machine_drift(base_controls: list[dict] | None, new_controls: list[dict] | None) -> float | None:
    """How far the machine itself moved between two runs: the largest ratio (either way) of the
    median canary time of any probe. None when either run has no controls."""
    def times(controls) -> dict[str, list[float]]:  # what a (perhaps damaged) file says, probe by probe
        out: dict[str, list[float]] = {}
        for entry in controls if isinstance(controls, list) else []:
            for probe, value in (entry.items() if isinstance(entry, dict) else ()):
                if finite_number(value) and value > 0:
                    out.setdefault(str(probe), []).append(float(value))
        return out

    base, new = times(base_controls), times(new_controls)
    ratios = [max(b / n, n / b) for probe in set(base) & set(new)
              for b, n in [(statistics.median(base[probe]), statistics.median(new[probe]))]]
    return max(ratios) if ratios else None


def control_drift(base: list[float] | None, new: list[float] | None) -> float | None:
    """How far the machine moved between the two runs around one case: the ratio (either way)
    of the median control probe time of each side. None without controls."""
    if not base or not new:
        return None
    b, n = statistics.median(base), statistics.median(new)
    return max(b / n, n / b) if b > 0 and n > 0 else None


def timing_verdict(base: list[float], base_rounds: list[int], new: list[float], new_rounds: list[int],
                   threshold: float, alpha: float, drift: float | None = None,
                   base_controls: list[float] | None = None, new_controls: list[float] | None = None,
                   own_jobs: bool = False) -> Verdict:
    """A case is a regression only when all three hold, on samples adjusted to the machine's
    usual speed when both files time a control probe around every sample (`adjusted`, by the
    case's `sensitivity` learnt from both files' samples):
    1. ratio = median(new) / median(base) exceeds `threshold`;
    2. the ratio exceeds the noise floor: the largest between-round spread (largest round
       median / smallest) seen in either file, to the power RUN_TO_RUN (RUN_TO_RUN_JOBS when
       every round of both files was a job of its own, `own_jobs`): how far the same code moved
       between the rounds of one run, widened by how much further a run moves against another
       (a shift between two runs that the rounds of one run also show is noise, whatever a
       test on samples says); and how far the machine moved between the two runs as far as
       the adjustment may not have taken it out: the drift of the case's control probes to
       the power MAX_SENSITIVITY - sensitivity (all of MAX_SENSITIVITY when each file stayed
       in one machine state), or for files without controls the drift of the run's canary
       (`drift`, machine_drift);
    3. a one-sided Mann-Whitney U test on the samples says new is slower, p <= alpha.
    Improvements mirror the rule. Fewer than 2 rounds a side (no between-round spread to learn
    the floor from): never gated."""
    if not base or not new:
        return Verdict("no timing", None, None, None)
    if _has_controls(base, base_controls) and _has_controls(new, new_controls):
        beta = sensitivity([(base, base_controls), (new, new_controls)])
        reference = min(min(base_controls), min(new_controls))
        base, new = adjusted(base, base_controls, beta, reference), adjusted(new, new_controls, beta, reference)
        # what the adjustment may have left of the machine's move between the two files: the
        # case's time follows the control at most to MAX_SENSITIVITY, beta of it adjusted
        # (a sensitivity learnt from short bursts within a file can understate a file-long
        # state: an A/A pair moved a case 1.33x with beta 0.25 while its controls moved 1.6x)
        moved = control_drift(base_controls, new_controls)
        unexplained = MAX_SENSITIVITY - (beta if beta is not None else 0.0)
        drift = moved ** unexplained if moved else None
    base_median, new_median = statistics.median(base), statistics.median(new)
    if base_median <= 0:
        return Verdict("same", None, None, None, "base median is zero")
    ratio = new_median / base_median
    verdict = lambda *args: Verdict(*args, base_s=base_median, new_s=new_median)  # noqa: E731
    base_meds, new_meds = round_medians(base, base_rounds), round_medians(new, new_rounds)
    spreads = [s for s in (round_spread(base_meds), round_spread(new_meds)) if s is not None]
    power = RUN_TO_RUN_JOBS if own_jobs else RUN_TO_RUN
    floors = ([max(spreads) ** power] if spreads else []) + ([drift] if drift is not None else [])
    noise = max(floors) if floors else None
    slower, faster = ratio > threshold, ratio < 1 / threshold
    if not (slower or faster):
        return verdict("same", ratio, noise, None)
    direction = "slower" if slower else "faster"
    floor = noise or 1.0
    beyond_noise = ratio > floor if slower else ratio < 1 / floor
    if min(len(base_meds), len(new_meds)) < 2:
        return verdict(f"{direction} (not significant)", ratio, noise, None,
                       "fewer than 2 rounds a side: no between-round spread to hold it against")
    test = mann_whitney_u(new, base, alternative="greater" if slower else "less")
    if test.p > alpha:
        return verdict(f"{direction} (not significant)", ratio, noise, test.p,
                       f"samples: p = {test.p:.3g} > {alpha}")
    if not beyond_noise:
        return verdict(f"{direction} (within noise)", ratio, noise, test.p,
                       f"{ratio:.2f}x is inside the between-round noise floor {floor:.2f}x")
    return verdict("regression" if slower else "improvement", ratio, noise, test.p)
