"""sample: multinomial sampling by parallel (chunked, two-level) cumulative sums.

A vector engine with `units` execution units samples one token per row of a batch of
`batch x vocab` nonnegative float32 weights: each unit scans its chunk of
L = ceil(vocab / units) weights, the units' totals are scanned, each chunk's offset is added
back, and the first index whose cumulative value exceeds u * total is picked. The kernel
(sysbench._kernels.sample) fixes the summation order, so `full_scan` (materialise, then
search) and `chunk_select` (totals, then rescan one chunk) return identical indices.

Validation: a float64 reference (numpy cumsum + searchsorted) must agree on every row except
boundary cases -- draws within the a-priori float32 error bound of a cumulative boundary --
which are counted; and a numpy float32 emulation of the same summation order must agree
exactly. The emulation's cumulative values also give the rounding error actually made, so
`boundary_cases_observed` counts the draws within that (much smaller) distance of a boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.vector import METHODS, chunk_length, vector_cycles
from ..numerics import gamma
from .base import Key, Run, Timed, Validation, Workload


@dataclass(frozen=True)
class SampleInputs:
    probs: np.ndarray     # (batch, vocab) float32 weights, top-k/top-p filtered
    uniforms: np.ndarray  # one U[0, 1) draw per row

DISTRIBUTIONS = {
    "softmax": "exp of N(0, 2^2) logits (unnormalised)",
    "uniform": "U[0, 1) weights",
    "zipf": "weight 1 / rank^1.1, ranks shuffled per row (a peaked LM-like distribution)",
}
MAX_UNITS = 1 << 20  # per-row chunk totals are held in memory; more units than this is a typo
EMULATE_MAX_ELEMENTS = 40_000_000  # numpy emulation of the summation order, when affordable


def softmax_weights(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Unnormalised float32 weights exp((logits - max) / temperature), formed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp((z - z.max(axis=1, keepdims=True)) / temperature).astype(np.float32)


def filter_top(weights: np.ndarray, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Zero all but the top-k weights (0: all), then all but the smallest set of the largest
    remaining weights whose float64 sum reaches top_p of their total. Ties go to the lower
    index (a stable sort), so the kept set is exactly defined."""
    out = np.array(weights, dtype=np.float32, copy=True)
    if top_k == 0 and top_p >= 1.0:
        return out
    order = np.argsort(-out, axis=1, kind="stable")
    keep = out.shape[1] if top_k == 0 else min(top_k, out.shape[1])
    for b in range(out.shape[0]):
        ranked = order[b, :keep]
        count = keep
        if top_p < 1.0:
            mass = np.cumsum(out[b, ranked].astype(np.float64))
            count = int(np.searchsorted(mass, top_p * mass[-1], side="left")) + 1
        dropped = np.ones(out.shape[1], dtype=bool)
        dropped[ranked[:count]] = False
        out[b, dropped] = 0.0
    return out


def random_weights(rng: np.random.Generator, batch: int, vocab: int, distribution: str,
                   temperature: float = 1.0) -> np.ndarray:
    if distribution == "softmax":
        logits = rng.standard_normal((batch, vocab), dtype=np.float32) * np.float32(2.0)
        return softmax_weights(logits, temperature)
    if distribution == "uniform":
        return rng.random((batch, vocab), dtype=np.float32)
    if distribution == "zipf":
        base = (1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** 1.1).astype(np.float32)
        return np.stack([base[rng.permutation(vocab)] for _ in range(batch)])
    raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")


def last_nonzero(row: np.ndarray) -> int:
    nz = np.flatnonzero(row)
    return int(nz[-1]) if nz.size else 0


def reference_indices(probs: np.ndarray, uniforms: np.ndarray):
    """float64 cumsum + searchsorted: (indices, cum64 rows, targets)."""
    cum = np.cumsum(probs.astype(np.float64), axis=1)
    targets = np.asarray(uniforms, dtype=np.float64) * cum[:, -1]
    idx = np.empty(probs.shape[0], dtype=np.int64)
    for b in range(probs.shape[0]):
        i = int(np.searchsorted(cum[b], targets[b], side="right"))
        idx[b] = i if i < probs.shape[1] else last_nonzero(probs[b])
    return idx, cum, targets


def emulate_cumulative(probs: np.ndarray, units: int) -> np.ndarray:
    """The kernel's cumulative values from their definition, in numpy float32.

    np.cumsum (add.accumulate) adds strictly in order, so this is the same summation order:
    per chunk from +0, chunk offsets = exclusive in-order scan of the totals, then add-back.
    Padding the last chunks with zeros changes nothing (adding +0 is exact).
    """
    B, V = probs.shape
    L = chunk_length(V, units)
    padded = np.zeros((B, units * L), dtype=np.float32)
    padded[:, :V] = probs
    local = np.cumsum(padded.reshape(B, units, L), axis=2, dtype=np.float32)
    scanned = np.cumsum(local[:, :, -1], axis=1, dtype=np.float32)
    offsets = np.concatenate([np.zeros((B, 1), np.float32), scanned[:, :-1]], axis=1)
    return (offsets[:, :, None] + local).reshape(B, units * L)[:, :V]


def emulate_indices(probs: np.ndarray, uniforms: np.ndarray, units: int,
                    cum: np.ndarray | None = None) -> np.ndarray:
    """Indices from the emulated float32 cumulative values (the kernel's exact contract);
    `cum`: emulate_cumulative(probs, units) when already computed."""
    if cum is None:
        cum = emulate_cumulative(probs, units)
    targets = np.asarray(uniforms, dtype=np.float64) * cum[:, -1].astype(np.float64)
    idx = np.empty(probs.shape[0], dtype=np.int64)
    for b in range(probs.shape[0]):
        above = np.flatnonzero(cum[b] > targets[b])
        idx[b] = above[0] if above.size else last_nonzero(probs[b])
    return idx


def boundary_tolerance(vocab: int, units: int) -> float:
    """Bound, relative to the row total, on how far the float64 reference's cumulative values
    and target can be from the kernel's: every float32 cumulative value goes through at most
    L + U additions of nonnegative terms (error <= gamma(L + U) * total, Higham Thm 4.4) and
    the target inherits the total's; float64 adds gamma64(V) for each of the two."""
    u64 = 2.0 ** -53
    return 1.01 * (2 * gamma(chunk_length(vocab, units) + units + 1) + 4 * (vocab + 2) * u64)


def compare_with_reference(probs: np.ndarray, uniforms: np.ndarray, indices: np.ndarray,
                           units: int, cum32: np.ndarray | None = None) -> dict:
    """Agreement with the float64 reference; every disagreement must be a boundary case
    (within the a-priori bound). With `cum32` (emulate_cumulative(probs, units)), also
    `boundary_cases_observed`: rows whose draw lies within the rounding error actually made
    (the row's largest |cum32 - cum64| plus that of the target) of a float64 boundary."""
    ref, cum, targets = reference_indices(probs, uniforms)
    V = probs.shape[1]
    rel_tol = boundary_tolerance(V, units)
    if cum32 is not None:
        targets32 = np.asarray(uniforms, dtype=np.float64) * cum32[:, -1].astype(np.float64)
    boundary, boundary_observed, mismatches, unexplained = 0, 0, 0, []
    for b in range(probs.shape[0]):
        tol = rel_tol * cum[b, -1]
        r, k, t = int(ref[b]), int(indices[b]), targets[b]
        below = cum[b, r - 1] if r > 0 else 0.0
        if t - below <= tol or cum[b, r] - t <= tol:
            boundary += 1
        if cum32 is not None:  # row by row: no (B, V) float64 temporaries next to cum
            observed = float(np.max(np.abs(cum32[b] - cum[b]))) + abs(targets32[b] - t)
            if t - below <= observed or cum[b, r] - t <= observed:
                boundary_observed += 1
        if k == r:
            continue
        mismatches += 1
        if not 0 <= k < V:
            unexplained.append(b)
        elif k > r and cum[b, k - 1] - t > tol:
            unexplained.append(b)
        elif k < r and t - cum[b, k] > tol:
            unexplained.append(b)
    check = {"mismatches": mismatches, "boundary_cases": boundary,
             "unexplained_rows": unexplained, "relative_tolerance": rel_tol}
    if cum32 is not None:
        check["boundary_cases_observed"] = boundary_observed
    return check


class Sample(Workload):
    kind = "sample"
    description = ("multinomial sampling by chunked two-level cumulative sums over U vector "
                   "units: identical indices for full_scan and chunk_select, cycles per row/batch")
    needs_array = False
    keys = {
        "vocab": Key("int", minimum=1, help="weights per row (V)"),
        "batch": Key("int", default=1, minimum=1, help="rows, one draw each (B)"),
        "units": Key("int", default=16, minimum=1, help="execution units = chunks per row (U)"),
        "method": Key("str", default="chunk_select", choices=METHODS,
                      help="full_scan (materialise the cumulative sums, then search) | "
                           "chunk_select (chunk totals, then rescan one chunk)"),
        "distribution": Key("str", default="softmax", choices=tuple(DISTRIBUTIONS),
                            help="generated weights: " + "; ".join(f"{k}: {v}" for k, v in DISTRIBUTIONS.items())),
        "temperature": Key("float", default=1.0, help="softmax only: weights exp(logit / T)"),
        "top_k": Key("int", default=0, minimum=0, help="keep the k largest weights per row (0: all)"),
        "top_p": Key("float", default=1.0, help="then keep the smallest set of largest weights "
                                                "holding this fraction of the mass (1: all)"),
    }

    def check(self, params, array):
        problems = []
        if params["units"] > MAX_UNITS:
            problems.append(("units", f"must be <= {MAX_UNITS}, got {params['units']}"))
        if not params["temperature"] > 0:
            problems.append(("temperature", f"must be > 0, got {params['temperature']}"))
        elif params["temperature"] != 1.0 and params["distribution"] != "softmax":
            problems.append(("temperature", "applies to softmax logits only (distribution = \"softmax\")"))
        if params["top_k"] > params["vocab"]:
            problems.append(("top_k", f"must be <= vocab ({params['vocab']}), got {params['top_k']}"))
        if not 0 < params["top_p"] <= 1:
            problems.append(("top_p", f"must lie in (0, 1], got {params['top_p']}"))
        return problems

    def working_set(self, p, array, numerics):
        # weights (float32) and their float64 reference cumulative sums, the float32 emulation
        # and its float64 copy (row by row)
        return 4 * p.batch * p.vocab * 4 + 16 * p.vocab if numerics else 0

    def model(self, p, array, plan):
        figures = vector_cycles(p.vocab, p.units, p.method, p.batch)
        figures["time_us"] = figures["cycles"] / (array.clock_ghz * 1e3)
        figures["time_us_per_row"] = figures["cycles_per_row"] / (array.clock_ghz * 1e3)
        return figures

    def inputs(self, p, array, plan, rng):
        probs = random_weights(rng, p.batch, p.vocab, p.distribution, p.temperature)
        probs = filter_top(probs, p.top_k, p.top_p)  # outside the timed region
        return SampleInputs(probs, rng.random(p.batch))

    def timed(self, run: Run) -> Timed:
        from .._kernels import sample as kernel  # imported late: `sysbench list` needs no build

        probs, uniforms, p, threads = run.inputs.probs, run.inputs.uniforms, run.params, run.threads
        return Timed(lambda: kernel.sample(probs, uniforms, p.units, p.method, threads))

    def validate(self, run: Run, output) -> Validation:
        from .._kernels import sample as kernel

        probs, uniforms, units = run.inputs.probs, run.inputs.uniforms, run.params.units
        V = probs.shape[1]
        rows = np.arange(probs.shape[0])
        in_range = bool(np.all((output >= 0) & (output < V)))
        nonzero = in_range and bool(np.all(probs[rows, np.clip(output, 0, V - 1)] > 0))
        emulate = probs.size <= EMULATE_MAX_ELEMENTS
        cum32 = emulate_cumulative(probs, units) if emulate else None
        check = compare_with_reference(probs, uniforms, output, units, cum32)
        extra = {"mismatches": check["mismatches"], "boundary_cases": check["boundary_cases"],
                 "unexplained_mismatches": len(check["unexplained_rows"]),
                 "relative_tolerance": check["relative_tolerance"]}
        if emulate:
            extra["boundary_cases_observed"] = check["boundary_cases_observed"]
        passed = in_range and nonzero and not check["unexplained_rows"]
        detail = []
        if emulate:
            exact = bool(np.array_equal(emulate_indices(probs, uniforms, units, cum32), output))
            extra["emulation_exact"] = exact
            passed = passed and exact
            if not exact:
                detail.append("indices differ from the float32 emulation of the summation order")
        if not in_range:
            detail.append("an index is out of range")
        elif not nonzero:
            detail.append("a zero-weight index was returned")
        if check["unexplained_rows"]:
            detail.append(f"rows {check['unexplained_rows'][:5]} disagree with the float64 "
                          "reference beyond the rounding bound")
        # error: the float32 row total (chunk totals added in order, as the kernel
        # forms it) against the float64 sum, relative to the latter
        chunk_totals = kernel.chunk_totals(probs, units)
        total32 = np.zeros(probs.shape[0], dtype=np.float32)
        for c in range(chunk_totals.shape[1]):
            total32 = total32 + chunk_totals[:, c]
        total64 = probs.astype(np.float64).sum(axis=1)
        max_rel = float(np.max(np.abs(total32.astype(np.float64) - total64) / total64))
        return Validation("float64 searchsorted; fp32 emulation" if emulate else "float64 searchsorted",
                          max_rel, passed, "bit-exact" if emulate else "in bound", error_kind="max_rel",
                          detail="; ".join(detail), extra=extra)


WORKLOAD = Sample()
