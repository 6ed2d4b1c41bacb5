"""All-reduce cost models (Thakur, Rabenseifner & Gropp 2005) and their calibration.

alpha is the per-message latency in seconds, beta the time per byte on a link (1 / bandwidth).
For p workers and an n-byte buffer:
    ring   2 (p - 1) alpha + 2 (p - 1) / p * n * beta      (reduce-scatter then all-gather)
    tree   2 ceil(log2 p) (alpha + n * beta)                  (binomial reduce then broadcast)
One worker communicates nothing and costs 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil, log2

import numpy as np

ALGORITHMS = ("ring", "tree")


@dataclass(frozen=True)
class LinkCost:
    alpha_s: float
    beta_s_per_byte: float
    workers: int
    algorithm: str = "ring"

    @classmethod
    def from_link(cls, gbps: float, latency_us: float, workers: int, algorithm: str = "ring") -> "LinkCost":
        """A link of `gbps` gigabits per second and `latency_us` microseconds per message."""
        return cls(latency_us * 1e-6, 8.0 / (gbps * 1e9), workers, algorithm)

    def allreduce_s(self, nbytes: int) -> float:
        return allreduce_time(nbytes, self.workers, self.alpha_s, self.beta_s_per_byte, self.algorithm)

    # The simulator splits a message's cost into the time it occupies the links (the beta
    # term) and its latency (the alpha term): the next all-reduce can start moving data
    # while this one's last hops are still in flight, as outstanding non-blocking
    # collectives do. occupancy_s + latency_s == allreduce_s.
    def occupancy_s(self, nbytes: int) -> float:
        return allreduce_time(nbytes, self.workers, 0.0, self.beta_s_per_byte, self.algorithm)

    def latency_s(self, nbytes: int) -> float:
        return allreduce_time(nbytes, self.workers, self.alpha_s, 0.0, self.algorithm)

    def to_dict(self) -> dict:
        out = {"alpha_s": self.alpha_s, "beta_s_per_byte": self.beta_s_per_byte,
               "bandwidth_gbps": 8e-9 / self.beta_s_per_byte if self.beta_s_per_byte else None,
               "workers": self.workers, "algorithm": self.algorithm}
        if not self.beta_s_per_byte:  # unbounded, and strict JSON has no Infinity
            out["bandwidth_note"] = "no link: beta is 0 (one worker exchanges nothing)"
        return out


def allreduce_time(nbytes: int, workers: int, alpha: float, beta: float, algorithm: str = "ring") -> float:
    p = workers
    if p <= 1:
        return 0.0
    if algorithm == "ring":
        return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * beta
    if algorithm == "tree":
        return 2 * ceil(log2(p)) * (alpha + nbytes * beta)
    raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")


def fit_alpha_beta(sizes_bytes, times_s, workers: int, algorithm: str = "ring") -> dict:
    """Least-squares fit of t = a + b n to a measured sweep, then alpha and beta of the model.

    ring: a = 2 (p-1) alpha, b = 2 (p-1)/p beta; tree: a = 2 ceil(log2 p) alpha, b = 2 ceil(log2 p) beta.
    alpha is clipped at 0 (a negative intercept is noise). Returns alpha, beta and the fit's
    largest relative error over the sweep.
    """
    n = np.asarray(sizes_bytes, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    if n.size < 2 or np.unique(n).size < 2:
        raise ValueError("the sweep needs at least two distinct sizes")
    # Weighted by 1/t so that small and large messages count alike (relative error).
    w = 1.0 / np.maximum(t, 1e-12)
    design = np.stack([np.ones_like(n), n], axis=1) * w[:, None]
    (a, b), *_ = np.linalg.lstsq(design, t * w, rcond=None)
    a, b = max(float(a), 0.0), max(float(b), 1e-15)
    p = workers
    if algorithm == "ring":
        alpha, beta = a / (2 * (p - 1)), b * p / (2 * (p - 1))
    else:
        steps = 2 * ceil(log2(p))
        alpha, beta = a / steps, b / steps
    predicted = a + b * n
    rel = np.abs(predicted - t) / t
    return {"alpha_s": alpha, "beta_s_per_byte": beta, "bandwidth_gbps": 8e-9 / beta,
            "intercept_s": a, "slope_s_per_byte": b, "max_rel_err": float(rel.max()),
            "workers": p, "algorithm": algorithm}
