"""The runner owns timing: calibrated loop counts, interleaved rounds, resets outside the timer,
peers timed by the same rules, thread limits, and every phase of a case guarded."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import suite_toml

from sysbench import runner, stats, suite as suite_mod
from sysbench.workloads import register, unregister
from sysbench.workloads.base import CaseError, Key, Run, SelfTimed, Timed, Validation, Workload

LOG: list = []


@dataclass(frozen=True)
class SleepInputs:
    token: int


class Sleeper(Workload):
    """A call of a known duration that logs every visit, so tests can see the runner's order."""

    kind = "test_sleeper"
    needs_array = False
    keys = {"call_us": Key("float", default=50.0, minimum=0), "fail": Key("str", default="")}

    def model(self, p, array, plan):
        if p.fail == "model":
            raise RuntimeError("model exploded")
        if p.fail == "input":
            raise CaseError("call_us", "a bad file")
        return {"cycles": 1}

    def inputs(self, p, array, plan, rng):
        return SleepInputs(int(rng.integers(1 << 30)))

    def timed(self, run: Run) -> Timed:
        LOG.append(("visit", run.params.call_us))
        if run.params.fail == "run":
            raise ValueError("kernel exploded")

        def call():
            end = time.perf_counter() + run.params.call_us * 1e-6
            while time.perf_counter() < end:
                pass
            return run.inputs.token
        return Timed(call)

    def validate(self, run: Run, output) -> Validation:
        return Validation("itself", 0.0, output == run.inputs.token, "exact")


class Resetting(Sleeper):
    kind = "test_resetting"
    keys = dict(Sleeper.keys)

    def timed(self, run):
        state = {"dirty": False}

        def call():
            assert not state["dirty"], "the reset did not run before this call"
            state["dirty"] = True
            end = time.perf_counter() + run.params.call_us * 1e-6
            while time.perf_counter() < end:
                pass
            return run.inputs.token

        def reset():
            time.sleep(0.002)  # slow, and outside the timer
            state["dirty"] = False
        return Timed(call, reset=reset)


class Jobbed(Sleeper):
    kind = "test_jobbed"
    keys = dict(Sleeper.keys)

    def timed(self, run):
        def job():
            LOG.append(("job", run.repeats, run.warmup))
            return SelfTimed([1e-3] * run.repeats, run.inputs.token, {"ranks": 2})
        return Timed(job, self_timed=True)


@pytest.fixture(autouse=True)
def kinds():
    for kind in (Sleeper(), Resetting(), Jobbed()):
        register(kind)
    LOG.clear()
    yield
    for kind in ("test_sleeper", "test_resetting", "test_jobbed"):
        unregister(kind)


def cases(write_suite, *tables: dict, **top):
    """The cases of a suite made of these [[cases]] tables (and top-level tables such as defaults)."""
    return suite_mod.load(str(write_suite(suite_toml(*tables, **top)))).cases


def test_calibration_reaches_min_time(write_suite):
    [case] = cases(write_suite, dict(name="s", kind="test_sleeper", call_us=40, min_time=0.004, repeats=3,
                                           rounds=1))
    [result] = runner.run_suite([case])
    t = result.timing
    # 4 ms of 40 us calls: about 100 calls (fewer when a descheduled trial already lasted 4 ms;
    # the exact sequence is test_calibrate_*'s), on the 1-2-5 sequence, the last trial >= min_time
    assert t["number"] in (1, 2, 5, 10, 20, 50, 100, 200) and t["calibration"][-1][0] == t["number"]
    assert t["calibration"][-1][1] >= 0.004 and all(trial[1] < 0.004 for trial in t["calibration"][:-1])
    # per call, not per sample (a sample lasts >= 4 ms; one descheduled sample may not)
    assert min(t["samples_s"]) >= 35e-6 and statistics.median(t["samples_s"]) <= 400e-6
    assert t["min_time_s"] == 0.004 and t["repeats"] == 3 and result.validation["passed"]


def test_calibrate_follows_the_1_2_5_sequence(monkeypatch):
    # a call of exactly 0.3 ms (a fake clock: the machine's load plays no part)
    monkeypatch.setattr(runner, "_time_calls", lambda call, number, reset=None: (3e-4, 3e-4, None))
    number, trials = runner.calibrate(lambda: None, 0.004)
    # 1 call (0.3 ms) -> aim at 4 ms * 1.1 / 0.3 ms = 14.7 -> 20 calls = 6 ms >= 4 ms
    assert [n for n, _ in trials] == [1, 20] and number == 20
    assert trials[-1][1] == pytest.approx(20 * 3e-4)


def test_rounds_interleave_cases_in_suite_order(write_suite):
    loaded = cases(write_suite, dict(name="a", kind="test_sleeper", call_us=10),
                   dict(name="b", kind="test_sleeper", call_us=20),
                   defaults=dict(rounds=3, repeats=2, min_time=0.0005))
    done = runner.run_suite(loaded)
    assert [v for _, v in LOG] == [10, 20] * 4   # the warm-up round, then a, b, a, b, a, b
    for result in done:
        assert result.timing["sample_rounds"] == [0, 0, 1, 1, 2, 2] and result.timing["rounds"] == 3
        assert len(result.timing["round_medians_s"]) == 3


def test_cli_rounds_override_and_steps(write_suite):
    loaded = cases(write_suite, dict(name="a", kind="test_sleeper", min_time=0.0005),
                   dict(name="m", kind="test_sleeper", numerics=False))
    steps = []
    done = runner.run_suite(loaded, repeats=1, rounds=2,
                            on_step=lambda label, stage, count: steps.append((label.split("/")[-1], stage, count)))
    assert steps == [("a", "model", 1), ("m", "model", 1), ("a", "warm-up", 1), ("a", "round 1", 1),
                     ("a", "round 2", 1)]
    assert sum(count for *_, count in steps) == runner.total_steps(loaded, 2)
    assert done[1].timing is None and done[1].metrics == {"cycles": 1}


def test_rounds_are_shared_with_a_fresh_process(write_suite):
    loaded = cases(write_suite, dict(name="g", kind="gemm", array="a", m=8, k=8, n=8),
                   dict(name="s", kind="test_sleeper", call_us=10),
                   arrays={"a": {"rows": 4, "cols": 4}}, defaults=dict(rounds=3, repeats=2, min_time=0.0005))
    steps = []
    g, s = runner.run_suite(loaded, processes=2, on_step=lambda label, stage, count: steps.append(count))
    # gemm: 2 rounds here, the third in a spawned process, numbered after them, with its own calibration
    assert g.error is None and g.validation["passed"]
    assert g.timing["sample_rounds"] == [0, 0, 1, 1, 2, 2] and len(g.timing["process_numbers"]) == 2
    assert len(g.timing["controls_s"]) == 6 and g.timing["rounds"] == 3
    # a kind registered in this process only is unknown to a fresh one: all its rounds here
    assert s.timing["sample_rounds"] == [0, 0, 1, 1, 2, 2] and "process_numbers" not in s.timing
    assert sum(steps) == runner.total_steps(loaded)


def test_a_fresh_timing_process_times_without_validating(write_suite):
    """The fresh process's share (time_group with validate=False) is timed, and neither its
    references nor its observations run there: this process validated the case already."""
    loaded = cases(write_suite, dict(name="g", kind="gemm", array="a", m=8, k=8, n=8),
                   arrays={"a": {"rows": 4, "cols": 4}}, defaults=dict(rounds=1, repeats=2, min_time=0.0005))
    [timed], _ = runner.time_group(loaded, 1, None, None, None, 1 << 30, validate=False)
    assert timed.error is None and timed.validation is None and len(timed.timing["samples_s"]) == 2
    [validated], _ = runner.time_group(loaded, 1, None, None, None, 1 << 30)
    assert validated.validation["passed"] and len(validated.timing["samples_s"]) == 2


def test_reset_runs_before_every_call_outside_the_timer(write_suite):
    [case] = cases(write_suite, dict(name="r", kind="test_resetting", repeats=4, rounds=2, warmup=1, call_us=0))
    [result] = runner.run_suite([case])
    assert result.error is None and result.validation["passed"]
    t = result.timing
    # calibrated on the calls alone; the 2 ms resets stop the count growing (RESET_BUDGET)
    assert t["number"] > 1 and len(t["samples_s"]) == 8
    assert t["number"] * 0.002 <= runner.RESET_BUDGET * 0.005 * 2.5
    assert max(t["samples_s"]) < 0.002   # the 2 ms reset is not in any sample


def test_a_reset_call_that_lasts_min_time_is_one_call_a_sample(write_suite):
    [case] = cases(write_suite, dict(name="r", kind="test_resetting", repeats=2, rounds=1, warmup=1,
                                     call_us=500, min_time=1e-4))
    [result] = runner.run_suite([case])
    assert result.timing["number"] == 1 and [n for n, _ in result.timing["calibration"]] == [1]


def test_self_timed_calls_run_once_a_round_with_their_own_samples(write_suite):
    [case] = cases(write_suite, dict(name="j", kind="test_jobbed", repeats=3, rounds=2, warmup=2))
    [result] = runner.run_suite([case])
    assert LOG == [("job", 3, 2), ("job", 3, 2)]    # no warm-up round or calls, no calibration: one job a round
    assert result.timing["samples_s"] == [1e-3] * 6 and result.timing["sample_rounds"] == [0, 0, 0, 1, 1, 1]
    assert result.measured == {"ranks": 2}


def test_a_failing_case_is_recorded_and_the_run_goes_on(write_suite):
    loaded = cases(write_suite, dict(name="boom", kind="test_sleeper", fail=["model", "run"]),
                   dict(name="fine", kind="test_sleeper"), defaults=dict(min_time=0.0005, repeats=1))
    done = {r.case.id: r for r in runner.run_suite(loaded)}
    assert "model exploded" in done[loaded[0].id].error and done[loaded[0].id].timing is None
    assert "kernel exploded" in done[loaded[1].id].error and not done[loaded[1].id].passed
    assert done[loaded[2].id].passed and done[loaded[2].id].timing["rounds"] == 3


def test_input_errors_stop_before_anything_is_timed(write_suite):
    loaded = cases(write_suite, dict(name="fine", kind="test_sleeper"),
                   dict(name="bad", kind="test_sleeper", fail="input"))
    with pytest.raises(runner.InputError) as info:
        runner.run_suite(loaded)
    assert info.value.problems == [f"{loaded[1].source}: case 'bad' key 'call_us': a bad file"]
    assert LOG == []   # nothing was timed


def test_working_set_past_the_limit_is_refused_with_a_hint(write_suite):
    loaded = cases(write_suite, dict(name="huge", kind="gemm", array="a", m=100000, k=100000, n=100000),
                   arrays={"a": {"rows": 4}})
    with pytest.raises(runner.InputError) as info:
        runner.run_suite(loaded, max_memory=2**30)
    [line] = info.value.problems
    assert "case 'huge'" in line and "more than the 1.0 GiB available" in line and "numerics = false" in line


def test_blas_is_held_to_the_case_threads_while_timing_and_one_while_validating(write_suite, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "_blas_limit", lambda threads: seen.append(threads) or _nothing())
    [case] = cases(write_suite, dict(name="s", kind="test_sleeper", min_time=0.0005, rounds=2, repeats=1))
    runner.run_suite([case], threads=2)
    assert seen == [2, 1, 2, 2]   # the warm-up round, its validation, rounds 1 and 2 timed


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_threads_zero_means_the_cpus_we_may_use(monkeypatch):
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert runner.resolve_threads(0) == 3 and runner.resolve_threads(None) == 1


# ----------------------------------------------------------------------------------------
# statistics against scipy (an oracle: the test extra installs it)


@pytest.mark.parametrize("seed", range(6))
def test_mann_whitney_against_scipy(seed):
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x, y = rng.normal(1.0, 0.2, 3 + seed), rng.normal(1.1, 0.2, 4 + seed)
    if seed % 2:
        x, y = np.round(x, 1), np.round(y, 1)   # ties: the normal approximation
    for alternative in ("greater", "less"):
        ours = stats.mann_whitney_u(x, y, alternative)
        method = "exact" if ours.method == "exact" else "asymptotic"
        theirs = scipy_stats.mannwhitneyu(x, y, alternative=alternative, method=method, use_continuity=True)
        assert ours.u == pytest.approx(theirs.statistic)
        assert ours.p == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-12)


def test_robust_spread_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    samples = rng.lognormal(0, 0.1, 31)
    expected = scipy_stats.median_abs_deviation(samples, scale="normal") / np.median(samples)
    assert stats.robust_spread(samples) == pytest.approx(expected, rel=1e-3)  # 1.4826 vs 1/Phi^-1(3/4)
    outlier = np.append(samples, 100.0)   # one descheduled sample barely moves it
    assert stats.robust_spread(outlier) < 1.2 * stats.robust_spread(samples)
