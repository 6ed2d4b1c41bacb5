"""sample: the draws follow the distribution (chi-square) and the float64 reference."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sysbench._kernels import sample as kernel
from sysbench.workloads.sample import boundary_tolerance, compare_with_reference, emulate_cumulative

SIGNIFICANCE = 1e-4  # fixed seeds make each test deterministic; a correct sampler fails 1 in 10^4 seeds


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square with integer df, in closed form (no scipy):
    df = 1: erfc(sqrt(x/2)); df = 2: exp(-x/2); Q(x; k + 2) = Q(x; k) + (x/2)^(k/2) e^(-x/2) / Gamma(k/2 + 1)."""
    if x <= 0:
        return 1.0
    half = x / 2.0
    k = 2 if df % 2 == 0 else 1
    q = math.exp(-half) if k == 2 else math.erfc(math.sqrt(half))
    while k < df:
        q += math.exp((k / 2.0) * math.log(half) - half - math.lgamma(k / 2.0 + 1.0))
        k += 2
    return min(q, 1.0)


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's goodness of fit over the nonzero categories."""
    expected = counts.sum() * probs / probs.sum()
    keep = probs > 0
    assert expected[keep].min() >= 5, "too few expected draws per category for the test"
    stat = float(np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep]))
    return chi2_sf(stat, int(keep.sum()) - 1)


@pytest.mark.parametrize("x,df,p", [
    (3.841458820694124, 1, 0.05), (5.991464547107979, 2, 0.05), (11.070497693516351, 5, 0.05),
    (23.209251158954356, 10, 0.01), (16.918977604620448, 9, 0.05), (6.634896601021214, 1, 0.01),
])
def test_chi2_sf_matches_table_values(x, df, p):
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)


def test_chi2_sf_matches_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 7, 48, 49):
        for x in (0.5, df * 0.8, df + 3 * math.sqrt(2 * df), 4.0 * df):
            assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)


def small_distributions():
    rng = np.random.default_rng(2024)
    wide = rng.uniform(0.5, 1.5, 50)
    wide[[0, 17, 49]] = 0.0
    wide[31] = 0.01  # a rare category (expected ~20 draws in 10^5)
    return [
        ("eight", np.array([0.1, 0, 0.25, 0.05, 0.3, 0, 0.2, 0.1]), 3, 200_000),
        ("tiny-first-last", np.array([1e-4, 1.0, 2.0, 0.0, 1e-4]), 4, 200_000),
        ("fifty", wide, 7, 100_000),
        ("fifty-one-unit", wide, 1, 100_000),
        ("fifty-more-units", wide, 128, 100_000),
    ]


@pytest.mark.parametrize("name,weights,units,draws", small_distributions(),
                         ids=[d[0] for d in small_distributions()])
@pytest.mark.parametrize("method", ["full_scan", "chunk_select"])
def test_chi_square_goodness_of_fit(name, weights, units, draws, method):
    rng = np.random.default_rng(12345)
    probs = np.tile(weights.astype(np.float32), (draws, 1))
    indices = kernel.sample(probs, rng.random(draws), units, method, threads=2)
    counts = np.bincount(indices, minlength=weights.size)
    assert np.all(counts[weights == 0] == 0)  # zero weights are never drawn
    assert chi_square_pvalue(counts, weights.astype(np.float32).astype(np.float64)) > SIGNIFICANCE


def test_chi_square_rejects_a_biased_sampler():
    """The test has teeth: draws from a distribution 1% off are rejected."""
    right = np.array([0.1, 0, 0.25, 0.05, 0.3, 0, 0.2, 0.1])
    wrong = right.copy()
    wrong[2] += 0.01
    wrong[4] -= 0.01
    draws = 200_000
    rng = np.random.default_rng(12345)
    probs = np.tile(wrong.astype(np.float32), (draws, 1))
    counts = np.bincount(kernel.sample(probs, rng.random(draws), 3), minlength=8)
    assert chi_square_pvalue(counts, right) < SIGNIFICANCE


@pytest.mark.parametrize("units", [1, 16, 128])
@pytest.mark.parametrize("method", ["full_scan", "chunk_select"])
def test_agrees_with_float64_reference_except_boundary_cases(units, method):
    rng = np.random.default_rng(units)
    batch, vocab = 3000, 1000
    probs = rng.random((batch, vocab), dtype=np.float32)
    u = rng.random(batch)
    got = kernel.sample(probs, u, units, method, threads=2)
    check = compare_with_reference(probs, u, got, units)
    assert check["unexplained_rows"] == []
    assert check["mismatches"] <= check["boundary_cases"]
    # with ~1/vocab of the total per weight, few draws fall within the rounding bound
    assert check["boundary_cases"] < 0.1 * batch if units > 1 else check["boundary_cases"] < batch


@pytest.mark.parametrize("units", [1, 16, 128])
def test_observed_rounding_error_within_the_a_priori_bound(units):
    # widely spread magnitudes, so that rounding is real; the float32 cumulative values of
    # the contract stay within the Higham bound of the float64 ones, and the draws counted
    # as near a boundary by the error actually made cover every disagreement
    rng = np.random.default_rng(100 + units)
    batch, vocab = 2000, 1000
    probs = np.exp(rng.standard_normal((batch, vocab)) * 3).astype(np.float32)
    u = rng.random(batch)
    got = kernel.sample(probs, u, units, "chunk_select", threads=2)
    cum32 = emulate_cumulative(probs, units)
    cum64 = np.cumsum(probs.astype(np.float64), axis=1)
    error = np.max(np.abs(cum32 - cum64), axis=1) / cum64[:, -1]
    assert error.max() <= boundary_tolerance(vocab, units) / 2
    check = compare_with_reference(probs, u, got, units, cum32)
    assert check["unexplained_rows"] == []
    assert check["mismatches"] <= check["boundary_cases_observed"] < check["boundary_cases"]
    assert "boundary_cases_observed" not in compare_with_reference(probs, u, got, units)


def test_reference_check_flags_real_disagreements():
    rng = np.random.default_rng(9)
    probs = rng.random((200, 300), dtype=np.float32)
    u = rng.random(200)
    got = kernel.sample(probs, u, 16)
    assert compare_with_reference(probs, u, got, 16)["unexplained_rows"] == []
    off_by_one = np.where(got > 0, got - 1, got + 1)
    flagged = compare_with_reference(probs, u, off_by_one, 16)["unexplained_rows"]
    assert len(flagged) > 150  # all but the rare draws within the bound of a boundary
