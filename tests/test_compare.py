"""sysbench compare: Mann-Whitney U, the per-round decision rule, exact model diffs, verdicts
and exit codes on crafted pairs."""
import itertools
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from sysbench import cli, results
from sysbench.compare import CompareError, compare_documents, diff_values
from sysbench.stats import (MAX_SENSITIVITY, RUN_TO_RUN, RUN_TO_RUN_JOBS, adjusted, mann_whitney_u, midranks,
                            own_adjusted, round_medians, sensitivity, summarize, timing_verdict,
                            u_distribution)

MS = 1e-3


# ----------------------------------------------------------------------------------------
# Mann-Whitney U against hand-worked values and brute-force enumeration


def brute_force_u(x, y):
    """U by its definition: pairs with x > y, ties counting one half."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)


def permutation_p(x, y, alternative):
    """Exact permutation p-value: every way of splitting the pooled values into |x| and |y|."""
    pooled = list(x) + list(y)
    observed = brute_force_u(x, y)
    hits = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(x)):
        xs = [pooled[i] for i in chosen]
        ys = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        u = brute_force_u(xs, ys)
        hits += (u >= observed) if alternative == "greater" else (u <= observed)
        total += 1
    return hits / total


def test_u_hand_example():
    # x entirely above y: U = 3 * 3 = 9; only 1 of the C(6, 3) = 20 orderings is that extreme.
    test = mann_whitney_u([4, 5, 6], [1, 2, 3], "greater")
    assert (test.u, test.method) == (9.0, "exact") and test.p == pytest.approx(1 / 20)
    assert mann_whitney_u([4, 5, 6], [1, 2, 3], "less").p == 1.0


@pytest.mark.parametrize("m,n", [(1, 1), (1, 6), (2, 3), (3, 3), (4, 5), (5, 5), (6, 3)])
def test_u_distribution_counts_every_ordering(m, n):
    counts = [0] * (m * n + 1)
    for chosen in itertools.combinations(range(m + n), m):   # positions of x in the sorted pool
        x = list(chosen)
        y = [i for i in range(m + n) if i not in chosen]
        counts[int(brute_force_u(x, y))] += 1
    assert u_distribution(m, n) == counts
    assert sum(u_distribution(m, n)) == math.comb(m + n, m)


def test_u_distribution_large_is_exact_integers():
    counts = u_distribution(40, 40)
    assert sum(counts) == math.comb(80, 40) and counts == counts[::-1]   # symmetric about mn/2
    assert counts[0] == counts[1] == 1 and counts[2] == 2


@pytest.mark.parametrize("seed", range(6))
def test_exact_p_matches_permutation_test(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(2, 7, size=2)
    x = list(rng.normal(0.3 * seed, 1, m))
    y = list(rng.normal(0, 1, n))
    for alternative in ("greater", "less"):
        test = mann_whitney_u(x, y, alternative)
        assert test.method == "exact"
        assert test.u == brute_force_u(x, y)
        assert test.p == pytest.approx(permutation_p(x, y, alternative), rel=1e-12)


def test_normal_approximation_with_ties_hand_worked():
    # pooled 1 2 2 2 3 3 -> midranks 1, 3, 3, 3, 5.5, 5.5; x = 1 2 2 has rank sum 7, U = 7 - 6 = 1.
    # mean mn/2 = 4.5; ties of 3 and 2: sum(t^3 - t) = 24 + 6 = 30, N(N-1) = 30,
    # var = 9/12 * (7 - 30/30) = 4.5. greater: z = (1 - 4.5 - 0.5)/sqrt(4.5) = -1.8856 -> p = 0.97033;
    # less: z = (1 - 4.5 + 0.5)/sqrt(4.5) = -1.41421 -> p = 0.078650.
    greater = mann_whitney_u([1, 2, 2], [2, 3, 3], "greater")
    less = mann_whitney_u([1, 2, 2], [2, 3, 3], "less")
    assert greater.method == less.method == "normal" and greater.u == 1.0
    assert greater.p == pytest.approx(0.97033, abs=2e-5)
    assert less.p == pytest.approx(0.078650, abs=2e-6)


def test_midranks_average_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_all_tied_is_never_significant():
    assert mann_whitney_u([1.0] * 5, [1.0] * 5).p == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_against_scipy_when_installed(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(1.0, 0.3, 12), 1)   # rounded: ties
    y = np.round(rng.normal(1.2, 0.3, 15), 1)
    for alternative in ("greater", "less"):
        ours = mann_whitney_u(x, y, alternative)
        theirs = stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic", use_continuity=True)
        assert ours.u == pytest.approx(theirs.statistic) and ours.p == pytest.approx(theirs.pvalue, rel=1e-9)
    xs, ys = rng.normal(size=6), rng.normal(size=7)
    theirs = stats.mannwhitneyu(xs, ys, alternative="greater", method="exact")
    assert mann_whitney_u(xs, ys).p == pytest.approx(theirs.pvalue, rel=1e-12)


def test_bad_samples_are_value_errors():
    with pytest.raises(ValueError, match="at least one"):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        mann_whitney_u([float("nan")], [1.0])
    with pytest.raises(ValueError, match="alternative"):
        mann_whitney_u([1.0], [2.0], "two-sided")


# ----------------------------------------------------------------------------------------
# Crafted documents


def make_case(case_id, rounds=None, **metrics):
    """A case timed in `rounds` (a list of rounds, each a list of per-call seconds)."""
    timing = None
    if rounds is not None:
        samples = [s for r in rounds for s in r]
        timing = {"median_s": float(np.median(samples)), "repeats": len(rounds[0]), "rounds": len(rounds),
                  "samples_s": samples, "sample_rounds": [i for i, r in enumerate(rounds) for _ in r]}
    return {"id": case_id, "name": case_id, "kind": "gemm", "params": {"m": 4, "k": 4, "n": 4},
            "array": {"name": "a", "rows": 4, "cols": 4, "dataflow": "ws", "dtype": "fp32"},
            "metrics": {"cycles": 1000, "macs": 64, "utilization": 0.004, **metrics},
            "timing": timing, "validation": None if rounds is None else
            {"reference": "float64", "level": "in bound", "error": 0.0, "passed": True}}


MACHINE = {"cpu": "Test CPU", "arch": "x86_64", "cores": 2, "threads": 1, "python": "3.11.7",
           "numpy": "2.0", "openmp": True, "git_commit": "abc", "git_dirty": False}


def make_doc(*cases, **machine):
    return {"schema": results.SCHEMA, "suite": "t", "created": "2026-01-01T00:00:00+00:00",
            "machine": {**MACHINE, **machine}, "settings": {}, "cases": [dict(c) for c in cases]}


ROUND = [1.00 * MS, 1.01 * MS, 0.99 * MS, 1.02 * MS, 0.98 * MS]
TIGHT = [ROUND, [s * 1.001 for s in ROUND], [s * 0.999 for s in ROUND]]  # 3 rounds, round medians apart


def scaled(rounds, *factors):
    """Each round times its factor (one factor: every round)."""
    factors = factors * len(rounds) if len(factors) == 1 else factors
    return [[s * f for s in r] for r, f in zip(rounds, factors)]


# noisy within and between rounds: round medians 1.0, 1.3, 0.8 ms and 1.2, 0.9, 1.4 ms
NOISY_BASE = [[1.0 * MS, 0.3 * MS, 2.5 * MS, 0.6 * MS, 1.8 * MS], [1.3 * MS, 0.4 * MS, 2.2 * MS, 1.9 * MS, 0.9 * MS],
              [0.8 * MS, 0.2 * MS, 1.6 * MS, 0.5 * MS, 2.0 * MS]]
NOISY_NEW = [[0.35 * MS, 2.9 * MS, 1.2 * MS, 0.7 * MS, 2.1 * MS], [0.9 * MS, 0.5 * MS, 1.5 * MS, 0.6 * MS, 2.4 * MS],
             [1.4 * MS, 0.8 * MS, 2.6 * MS, 1.1 * MS, 2.0 * MS]]


def write(tmp_path, name, document):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def invoke(*args):
    return CliRunner().invoke(cli.app, list(args))


def compare_cli(tmp_path, base, new, *extra):
    result = invoke("compare", write(tmp_path, "base.json", base), write(tmp_path, "new.json", new), "--json", *extra)
    out = json.loads(result.stdout) if result.exit_code in (0, 1) else None
    return result, out


def test_identical_is_exit_0(tmp_path):
    doc = make_doc(make_case("t/a", TIGHT), make_case("t/model-only"))
    result, out = compare_cli(tmp_path, doc, doc)
    assert result.exit_code == 0, result.stderr
    assert out["regressions"] == out["model_changes"] == out["only_in_base"] == out["only_in_new"] == []
    verdicts = {c["id"]: c["verdict"] for c in out["cases"]}
    assert verdicts == {"t/a": "same", "t/model-only": "no timing"}
    assert "t/a" in result.stderr and "0 regression(s)" in result.stderr


def test_two_times_slower_with_tight_samples_is_regression(tmp_path):
    base = make_doc(make_case("t/a", TIGHT), make_case("t/b", TIGHT))
    new = make_doc(make_case("t/a", scaled(TIGHT, 2)), make_case("t/b", TIGHT))
    result, out = compare_cli(tmp_path, base, new)
    assert result.exit_code == 1
    assert out["regressions"] == ["t/a"] and out["model_changes"] == []
    case = out["cases"][0]
    assert case["ratio"] == pytest.approx(2.0)
    # the test runs on the samples: every new one above every base one (exact U)
    n = sum(len(r) for r in TIGHT)
    assert case["p_value"] == pytest.approx(1 / math.comb(2 * n, n))
    assert case["noise_floor"] == pytest.approx((1.001 / 0.999) ** RUN_TO_RUN)
    assert "regression" in result.stderr and "2.00x" in result.stderr


def test_noisy_twenty_percent_slower_is_not_a_regression_but_warned(tmp_path):
    base, new = make_doc(make_case("t/noisy", NOISY_BASE)), make_doc(make_case("t/noisy", NOISY_NEW))
    result, out = compare_cli(tmp_path, base, new)
    assert result.exit_code == 0, result.stderr
    case = out["cases"][0]
    assert case["ratio"] > 1.1 and case["p_value"] > 0.05
    assert case["verdict"] == "slower (not significant)" and out["regressions"] == []
    assert sorted(case["unstable"]) == ["base", "new"]
    assert any("t/noisy" in w and "unstable" in w for w in out["warnings"])
    assert any("t/noisy" in w and "p = " in w for w in out["warnings"])
    assert "warning" in result.stderr and "unstable" in result.stderr


def test_below_threshold_is_same_even_if_significant(tmp_path):
    base = make_doc(make_case("t/a", TIGHT))
    new = make_doc(make_case("t/a", scaled(TIGHT, 1.05)))
    result, out = compare_cli(tmp_path, base, new)
    assert result.exit_code == 0 and out["cases"][0]["verdict"] == "same"
    # a tighter threshold makes the same 5% slowdown a regression
    result, out = compare_cli(tmp_path, base, new, "--threshold", "1.02")
    assert result.exit_code == 1 and out["regressions"] == ["t/a"]


def test_improvement_is_reported_exit_0(tmp_path):
    base = make_doc(make_case("t/a", TIGHT))
    new = make_doc(make_case("t/a", scaled(TIGHT, 1 / 3)))
    result, out = compare_cli(tmp_path, base, new)
    assert result.exit_code == 0 and out["improvements"] == ["t/a"]
    assert "improvement" in result.stderr


def test_changed_cycle_count_is_model_change(tmp_path):
    base = make_doc(make_case("t/a", TIGHT), make_case("t/b"))
    new = make_doc(make_case("t/a", TIGHT), make_case("t/b", cycles=1001))
    result, out = compare_cli(tmp_path, base, new)
    assert result.exit_code == 1
    assert out["model_changes"] == ["t/b"] and out["regressions"] == []
    changes = out["cases"][1]["model_changes"]
    assert changes == [{"path": "metrics.cycles", "old": 1000, "new": 1001}]
    assert "model change" in result.stderr and "metrics.cycles: 1000 -> 1001" in result.stderr


def test_float_metric_must_match_exactly_and_params_count(tmp_path):
    base = make_doc(make_case("t/a", utilization=0.1))
    new = make_doc(make_case("t/a", utilization=0.1 + 1e-17 * 10))   # one ulp away
    assert compare_cli(tmp_path, base, new)[0].exit_code == 1
    changed = make_case("t/a")
    changed["params"] = {"m": 4, "k": 8, "n": 4}
    result, out = compare_cli(tmp_path, make_doc(make_case("t/a")), make_doc(changed))
    assert result.exit_code == 1 and out["cases"][0]["model_changes"][0]["path"] == "params.k"


def test_nested_metric_diffs_name_their_path():
    old = {"per_layer": [{"cycles": 5}, {"cycles": 7}], "passes": 2}
    new = {"per_layer": [{"cycles": 5}, {"cycles": 8}], "passes": 2, "extra": True}
    assert diff_values(old, new, "metrics") == [
        {"path": "metrics.per_layer[1].cycles", "old": 7, "new": 8},
        {"path": "metrics.extra", "old": None, "new": True}]
    assert diff_values({"x": 1}, {"x": 1.0}, "m") == [] and diff_values({"x": 1}, {"x": True}, "m") != []
    assert diff_values({"x": float("nan")}, {"x": float("nan")}, "m") == []


def test_failed_validation_in_new_is_exit_1(tmp_path):
    broken = make_case("t/a", TIGHT)
    broken["validation"] = {**broken["validation"], "passed": False}
    result, out = compare_cli(tmp_path, make_doc(make_case("t/a", TIGHT)), make_doc(broken))
    assert result.exit_code == 1 and out["validation_failures"] == ["t/a"]


def test_cases_in_only_one_file_are_listed(tmp_path):
    base = make_doc(make_case("t/a", TIGHT), make_case("t/gone", TIGHT))
    new = make_doc(make_case("t/a", TIGHT), make_case("t/added", TIGHT))
    result, out = compare_cli(tmp_path, base, new)
    assert result.exit_code == 0
    assert out["only_in_base"] == ["t/gone"] and out["only_in_new"] == ["t/added"]
    assert "only in base (1): t/gone" in result.stderr and "only in new (1): t/added" in result.stderr


def test_machine_mismatch_is_warned(tmp_path):
    base = make_doc(make_case("t/a", TIGHT))
    new = make_doc(make_case("t/a", TIGHT), cpu="Other CPU", threads=2, git_commit="def")
    result, out = compare_cli(tmp_path, base, new)
    assert result.exit_code == 0
    warned = " ".join(out["warnings"])
    assert "machine cpu differs" in warned and "machine threads differs" in warned
    assert "git_commit" not in warned   # comparing two commits is the point


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_corrupt_json_is_exit_2(tmp_path):
    good = write(tmp_path, "good.json", make_doc(make_case("t/a", TIGHT)))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema": "sysbench.result/1", "cases": [')
    assert_one_line_error(invoke("compare", good, str(corrupt)), "corrupt.json", "not valid JSON")
    assert_one_line_error(invoke("compare", str(tmp_path / "missing.json"), good), "missing.json: no such file")


def test_wrong_schema_is_exit_2(tmp_path):
    good = write(tmp_path, "good.json", make_doc(make_case("t/a", TIGHT)))
    foreign = write(tmp_path, "foreign.json", {"schema": "pytest-benchmark/4", "cases": []})
    assert_one_line_error(invoke("compare", foreign, good), "foreign.json", "not a sysbench result",
                          "pytest-benchmark/4")
    no_id = make_doc(make_case("t/a", TIGHT))
    del no_id["cases"][0]["id"]
    assert_one_line_error(invoke("compare", good, write(tmp_path, "noid.json", no_id)), "case #1", "'id'")
    bad_samples = make_doc(make_case("t/a", TIGHT))
    bad_samples["cases"][0]["timing"]["samples_s"] = "fast"
    assert_one_line_error(invoke("compare", good, write(tmp_path, "bad.json", bad_samples)),
                          "bad.json", "t/a", "samples_s")
    twice = make_doc(make_case("t/a", TIGHT), make_case("t/a", TIGHT))
    assert_one_line_error(invoke("compare", write(tmp_path, "twice.json", twice), good), "appears twice")


def test_threshold_below_one_is_exit_2(tmp_path):
    good = write(tmp_path, "good.json", make_doc(make_case("t/a", TIGHT)))
    assert_one_line_error(invoke("compare", good, good, "--threshold", "0.9"), "--threshold")


def test_compare_documents_api_raises_compare_error():
    with pytest.raises(CompareError, match="metrics"):
        compare_documents(make_doc({"id": "x"}), make_doc(make_case("t/a")))


# ----------------------------------------------------------------------------------------
# Samples and metadata in real results; run --baseline


SUITE = """
name = "cmp"
[arrays.a]
rows = {rows}
cols = 4
[[cases]]
name = "g"
kind = "gemm"
array = "a"
m = 6
k = 5
n = 7
repeats = 4
[[cases]]
name = "model"
kind = "gemm"
array = "a"
m = 30
k = 20
n = 10
numerics = false
"""


def test_samples_and_metadata_round_trip(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(rows=4))
    out = tmp_path / "r.json"
    result = invoke("run", str(suite), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    printed, saved = json.loads(result.stdout), results.load(out)
    assert printed == saved
    timing = {c["id"]: c["timing"] for c in saved["cases"]}
    g = timing["cmp/g"]
    samples = g["samples_s"]
    assert g["repeats"] == 4 and g["rounds"] == 3 and len(samples) == 12 and all(s > 0 for s in samples)
    assert g["sample_rounds"] == [0] * 4 + [1] * 4 + [2] * 4
    assert g["number"] >= 1 and g["min_time_s"] == 0.005
    assert g["calibration"][-1][0] == g["number"] and g["calibration"][-1][1] >= g["min_time_s"]
    assert len(g["controls_s"]) == len(samples) and all(c > 0 for c in g["controls_s"])
    expected = summarize(samples, g["sample_rounds"], g["controls_s"])
    assert g["spread"] == pytest.approx(expected["spread"]) and g["stable"] == expected["stable"]
    assert g["round_medians_s"] == round_medians(own_adjusted(samples, g["controls_s"])[0], g["sample_rounds"])
    assert timing["cmp/model"] is None
    machine = saved["machine"]
    for key in ("cpu", "cores", "threads", "python", "numpy", "blas", "compiler", "compiler_version",
                "openmp", "sysbench", "git_commit", "git_dirty", "arch", "cython", "env"):
        assert key in machine, key
    assert machine["threads"] == 1 and isinstance(machine["openmp"], bool)
    assert saved["settings"]["stable_spread"] == 0.10
    # A saved document loads back identically, samples bit for bit.
    again = tmp_path / "again.json"
    results.save(saved, again)
    assert results.load(again) == saved
    assert invoke("compare", str(out), str(again)).exit_code == 0


def test_run_with_baseline(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(rows=4))
    base = tmp_path / "base.json"
    assert invoke("run", str(suite), "-o", str(base)).exit_code == 0
    # Same model: no model change; a huge threshold keeps a shared machine's noise out of it.
    result = invoke("run", str(suite), "--baseline", str(base), "--threshold", "1000")
    assert result.exit_code == 0, result.stderr
    assert "2 compared" in result.stderr and "0 model change(s)" in result.stderr
    # A different array is a model change: exit 1, with the old and new values.
    suite.write_text(SUITE.format(rows=8))
    result = invoke("run", str(suite), "--baseline", str(base), "--threshold", "1000")
    assert result.exit_code == 1
    assert "model change" in result.stderr and "array.rows: 4 -> 8" in result.stderr
    # An unreadable baseline stops before anything runs.
    (tmp_path / "bad.json").write_text("[]")
    assert_one_line_error(invoke("run", str(suite), "--baseline", str(tmp_path / "bad.json")), "bad.json")


def test_medians_without_samples_are_never_called_significant(tmp_path):
    old_style = make_case("t/a", TIGHT)
    del old_style["timing"]["samples_s"], old_style["timing"]["sample_rounds"]  # kept only the median
    result, out = compare_cli(tmp_path, make_doc(old_style), make_doc(make_case("t/a", scaled(TIGHT, 2))))
    assert result.exit_code == 0
    assert out["cases"][0]["verdict"] == "slower (no samples to test)" and out["cases"][0]["p_value"] is None


def test_schema_1_samples_are_one_round_and_never_gated(tmp_path):
    # a /1 file: one burst of samples, no rounds; 2x slower is reported, not gated
    old = make_case("t/a", TIGHT)
    del old["timing"]["sample_rounds"]
    base = dict(make_doc(old), schema="sysbench.result/1")
    result, out = compare_cli(tmp_path, base, make_doc(make_case("t/a", scaled(TIGHT, 2))))
    assert result.exit_code == 0 and out["cases"][0]["verdict"] == "slower (not significant)"
    assert "fewer than 2 rounds" in out["cases"][0]["reason"]


# ----------------------------------------------------------------------------------------
# The decision rule on crafted rounds (stats.timing_verdict)


def rounds_of(rounds):
    return [s for r in rounds for s in r], [i for i, r in enumerate(rounds) for _ in r]


def verdict(base, new, threshold=1.10, alpha=0.05):
    return timing_verdict(*rounds_of(base), *rounds_of(new), threshold, alpha)


def test_one_round_of_five_shifted_is_not_a_regression():
    # the new file's third round ran 1.2x slower (a neighbour's load, a clock step): the median of
    # all its samples barely moves, and that round's own spread is the noise floor
    v = verdict(TIGHT, scaled(TIGHT, 1.0, 1.0, 1.2))
    assert v.word == "same" and v.ratio < 1.02 and v.noise == pytest.approx((1.2 * 0.999 / 1.0) ** RUN_TO_RUN)


def test_every_round_shifted_with_a_tight_spread_is_a_regression():
    v = verdict(TIGHT, scaled(TIGHT, 1.3))
    n = sum(len(r) for r in TIGHT)
    assert v.word == "regression" and v.ratio == pytest.approx(1.3) and v.p == pytest.approx(1 / math.comb(2 * n, n))
    assert verdict(scaled(TIGHT, 1.3), TIGHT).word == "improvement"


def test_a_shift_inside_the_between_round_noise_is_not_a_regression():
    # new rounds at 1.12, 1.2 and 1.35 ms: every new sample above every base one and the median
    # 1.2x past the 1.10 threshold, but the new file itself moved 1.2x between rounds
    v = verdict(TIGHT, scaled(TIGHT, 1.12, 1.2, 1.35))
    assert v.ratio > 1.10 and v.p < 0.05
    assert v.word == "slower (within noise)" and v.noise == pytest.approx((1.35 * 0.999 / (1.12 * 1.0)) ** RUN_TO_RUN)
    assert v.ratio < v.noise


def test_rounds_that_disagree_raise_the_floor():
    # two of three new rounds 2x slower, one not: the median is 2x, but the new file moved 2x
    # between its own rounds
    v = verdict(TIGHT, scaled(TIGHT, 2.0, 2.0, 0.99))
    assert v.word == "slower (within noise)" and v.ratio == pytest.approx(2.0, rel=0.02) and v.ratio < v.noise


def controlled(rounds, controls_by_round):
    """Samples, rounds and a control time per sample (one per round, as `controls_by_round`)."""
    samples, sample_rounds = rounds_of(rounds)
    return samples, sample_rounds, [controls_by_round[r] for r in sample_rounds]


def verdict_with_controls(base, base_controls, new, new_controls):
    b, br, bc = controlled(base, base_controls)
    n, nr, nc = controlled(new, new_controls)
    return timing_verdict(b, br, n, nr, 1.10, 0.05, None, bc, nc)


QUIET_RUN = [1e-4] * 3  # the control probe at its usual 0.1 ms in every round


def test_the_sensitivity_is_learnt_within_files_only():
    # the case runs 1.4x slower where the control probe runs 2x slower: slope log 1.4 / log 2
    samples, _, controls = controlled(scaled(TIGHT, 1.0, 1.4, 1.0), [1e-4, 2e-4, 1e-4])
    assert sensitivity([(samples, controls)]) == pytest.approx(math.log(1.4) / math.log(2), abs=0.02)
    # a shift of a whole file (a regression) against another does not enter it
    other = [s * 3 for s in samples]
    assert sensitivity([(samples, controls), (other, controls)]) == pytest.approx(math.log(1.4) / math.log(2),
                                                                                  abs=0.02)
    # one machine state throughout each file: nothing to learn from
    assert sensitivity([(samples, [1e-4] * len(samples))]) is None
    # adjusted to the fastest control, the slowed round falls back in line
    fixed = adjusted(samples, controls, sensitivity([(samples, controls)]), 1e-4)
    assert max(fixed) / min(fixed) < 1.05


def test_rounds_the_machine_slowed_are_adjusted_for():
    # the new file's middle round ran while the host slowed the machine (the control probe
    # twice its usual time, the case 1.4x): without controls the floor is (1.4x)^2, with them
    # the round is adjusted back and the floor is the tight rounds' own
    shifted = scaled(TIGHT, 1.0, 1.4, 1.0)
    plain = verdict(TIGHT, shifted)
    v = verdict_with_controls(TIGHT, QUIET_RUN, shifted, [1e-4, 2e-4, 1e-4])
    assert v.word == "same" and v.ratio == pytest.approx(1.0, abs=0.01) and v.noise < 1.02 < plain.noise


def test_a_run_the_machine_slowed_throughout_is_within_the_drift():
    # every new sample taken on a slowed machine, every base one on a quiet one: no file shows
    # both states, so the sensitivity is unknown and the control drift (2x) to the power
    # MAX_SENSITIVITY is the floor
    v = verdict_with_controls(TIGHT, QUIET_RUN, scaled(TIGHT, 1.4), [2e-4] * 3)
    assert v.word == "slower (within noise)" and v.noise == pytest.approx(2.0 ** MAX_SENSITIVITY)


def test_a_file_long_machine_state_is_not_explained_away_by_a_burst_sensitivity():
    # the base file's middle round saw a burst (control 2x) the case did not feel (learnt
    # sensitivity ~0); the whole new file ran on a machine 1.6x slower by its controls, the
    # case 1.33x: what the sensitivity did not adjust, 1.6x to MAX_SENSITIVITY, is the floor
    v = verdict_with_controls(TIGHT, [1e-4, 2e-4, 1e-4], scaled(TIGHT, 1.33), [1.6e-4] * 3)
    assert v.word == "slower (within noise)"
    assert v.noise == pytest.approx(1.6 ** MAX_SENSITIVITY, rel=0.05)
    # the same file-long state and a real 3x slowdown: still a regression
    v = verdict_with_controls(TIGHT, [1e-4, 2e-4, 1e-4], scaled(TIGHT, 3.0), [1.6e-4] * 3)
    assert v.word == "regression"


def test_a_real_slowdown_is_caught_beside_slowed_rounds():
    # 3x slower in every round; one round of each file on a slowed machine (1.5x, control 2x)
    v = verdict_with_controls(scaled(TIGHT, 1.0, 1.0, 1.5), [1e-4, 1e-4, 2e-4],
                              scaled(TIGHT, 4.5, 3.0, 3.0), [2e-4, 1e-4, 1e-4])
    assert v.word == "regression" and v.ratio == pytest.approx(3.0, rel=0.02)


def test_summarize_reports_the_adjusted_samples():
    samples, sample_rounds, controls = controlled(scaled(TIGHT, 1.0, 1.0, 1.6), [1e-4, 1e-4, 2e-4])
    record = summarize(samples, sample_rounds, controls)
    assert record["sensitivity"] == pytest.approx(math.log(1.6) / math.log(2), abs=0.02)
    assert record["round_spread"] < 1.02 and record["control_s"] == pytest.approx(1e-4)
    assert record["median_s"] == pytest.approx(float(np.median(samples[:2 * len(TIGHT[0])])), rel=0.01)


def test_rounds_in_jobs_of_their_own_widen_the_floor_less():
    # an MPI case's every round is a new job: its between-round spread already sees what a new
    # process does, so the floor is that spread to RUN_TO_RUN_JOBS, not RUN_TO_RUN
    noisy = scaled(TIGHT, 1.0, 1.3, 1.15)
    b, br = rounds_of(noisy)
    n, nr = rounds_of(scaled(noisy, 2.0))
    shared = timing_verdict(b, br, n, nr, 1.10, 0.05)
    jobs = timing_verdict(b, br, n, nr, 1.10, 0.05, own_jobs=True)
    assert shared.word == "slower (within noise)" and shared.noise == pytest.approx(1.3 ** RUN_TO_RUN, rel=0.01)
    assert jobs.word == "regression" and jobs.noise == pytest.approx(1.3 ** RUN_TO_RUN_JOBS, rel=0.01)
