"""sample kernel and workload: identical methods, exact summation order, edge cases, errors."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import check_of, drive, model_of

from sysbench._kernels import sample as kernel
from sysbench.hardware import Array
from sysbench.models.vector import vector_cycles
from sysbench.workloads.sample import (WORKLOAD, compare_with_reference, emulate_cumulative,
                                       emulate_indices, filter_top, random_weights,
                                       softmax_weights)

METHODS = ("full_scan", "chunk_select")
ISAS = kernel.available_isas()

# (batch, vocab, units): one chunk, V < U, V = U, ragged last chunk, empty trailing chunks,
# fewer rows than a 16-lane group, several groups, chunks shorter and longer than 16.
SHAPES = [(1, 1, 1), (1, 1, 128), (3, 5, 4), (2, 5, 128), (4, 16, 16), (5, 100, 7),
          (17, 1000, 16), (40, 333, 128), (2, 4099, 1), (33, 4099, 1), (20, 3000, 3),
          (3, 10, 4), (19, 257, 16), (2, 40000, 128)]


@pytest.fixture(autouse=True)
def small_teams(monkeypatch, restore_isa):
    # every stage takes all the threads it is given, so that small shapes exercise the teams
    monkeypatch.setattr(kernel, "MIN_ELEMENTS_PER_THREAD", 1)


def test_small_stages_run_on_one_thread(monkeypatch):
    monkeypatch.setattr(kernel, "MIN_ELEMENTS_PER_THREAD", 1 << 17)
    assert kernel._team(128_000, 2) == 1 and kernel._team(64 * 128_000, 2) == 2
    assert kernel._team(64 * 128_000, 1) == 1 and kernel._team(0, 4) == 1


def weights(rng, batch, vocab):
    """Widely spread magnitudes, so that any change of summation order changes the bits."""
    return np.exp(rng.standard_normal((batch, vocab)) * 4).astype(np.float32)


def test_isa_switching():
    assert kernel.isa() in ISAS and "scalar" in ISAS
    with pytest.raises(ValueError, match="isa must be one of"):
        kernel.set_isa("sse9")


@pytest.mark.parametrize("value,expected,warned", [("scalar", "scalar", False),
                                                    ("sse9", kernel.available_isas()[0], True)])
def test_isa_env_var(value, expected, warned):
    # a name the CPU cannot run is ignored with a warning, never an unimportable module
    env = dict(os.environ, SYSBENCH_ISA=value)
    code = "from sysbench._kernels import sample; print(sample.isa())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
    assert ("SYSBENCH_ISA ignored" in out.stderr) == warned


def emulated_chunk_totals(probs, units):
    """Each chunk summed from +0 in order (np.add.accumulate is strictly sequential)."""
    batch, vocab = probs.shape
    length = -(-vocab // units)
    padded = np.zeros((batch, units * length), dtype=np.float32)
    padded[:, :vocab] = probs
    return np.cumsum(padded.reshape(batch, units, length), axis=2, dtype=np.float32)[:, :, -1]


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("batch,vocab,units", SHAPES)
def test_cumulative_bits_match_emulation_on_every_path(batch, vocab, units):
    rng = np.random.default_rng(batch * 1000 + vocab + units)
    probs = weights(rng, batch, vocab)
    expected = emulate_cumulative(probs, units)
    totals = emulated_chunk_totals(probs, units)
    for isa in ISAS:
        kernel.set_isa(isa)
        for threads in (1, 2):
            assert same_bits(kernel.cumulative(probs, units, threads=threads), expected), (isa, threads)
            assert same_bits(kernel.chunk_totals(probs, units, threads=threads), totals), (isa, threads)
    assert np.all(np.diff(expected, axis=1) >= 0)  # the contract's cumulative is monotone


@pytest.mark.parametrize("batch,vocab,units", SHAPES)
def test_methods_identical_across_paths_and_threads(batch, vocab, units):
    rng = np.random.default_rng(7 * batch + vocab + 13 * units)
    probs = weights(rng, batch, vocab)
    probs[rng.random((batch, vocab)) < 0.3] = 0.0
    probs[:, 0] += 1.0  # keep every row sampleable
    for trial in range(3):
        u = rng.random(batch)
        expected = emulate_indices(probs, u, units)
        for isa in ISAS:
            kernel.set_isa(isa)
            for threads in (1, 2):
                for method in METHODS:
                    got = kernel.sample(probs, u, units, method, threads)
                    assert got.dtype == np.int64
                    assert np.array_equal(got, expected), (isa, threads, method, trial)
        assert np.all(probs[np.arange(batch), expected] > 0)


@pytest.mark.parametrize("units", [1, 8, 9, 128])
def test_rescans_of_full_and_short_chunks_in_several_lane_groups(units):
    # V = 1003: with 8 units, 7 chunks of 126 and a short one of 121; draws spread over the
    # whole row (u = 1 included) so that the picked chunks are full and short, in groups of
    # 16 rows with a ragged last group
    rng = np.random.default_rng(units)
    probs = weights(rng, 50, 1003)
    u = np.linspace(0.0, 1.0, 50)
    expected = emulate_indices(probs, u, units)
    for isa in ISAS:
        kernel.set_isa(isa)
        for threads in (1, 2):
            for method in METHODS:
                assert np.array_equal(kernel.sample(probs, u, units, method, threads), expected)


def draw(probs, u, units=4):
    """Both methods must agree; returns their index list."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float32))
    u = np.atleast_1d(np.asarray(u, dtype=np.float64))
    a = kernel.sample(probs, u, units, "full_scan")
    b = kernel.sample(probs, u, units, "chunk_select")
    assert np.array_equal(a, b)
    return a.tolist()


@pytest.mark.parametrize("units", [1, 2, 16, 128])
def test_vocab_one(units):
    assert draw(np.full((3, 1), 0.5), [0.0, 0.5, np.nextafter(1.0, 0.0)], units) == [0, 0, 0]


@pytest.mark.parametrize("units", [1, 3, 5, 8, 128])
def test_small_vocab_by_hand(units):
    # cumulative 1..5, target u * 5: the first index whose cumulative exceeds it
    probs = np.ones((5, 5))
    assert draw(probs, [0.0, 0.19, 0.2, 0.5, 0.99], units) == [0, 0, 1, 2, 4]


@pytest.mark.parametrize("units", [1, 7, 16, 128])
def test_one_nonzero(units):
    probs = np.zeros((6, 1000), dtype=np.float32)
    probs[:, 537] = 3.0
    u = [0.0, 1e-12, 0.3, 0.5, 0.999, np.nextafter(1.0, 0.0)]
    assert draw(probs, u, units) == [537] * 6


@pytest.mark.parametrize("units", [1, 2, 3, 4, 16])
def test_zeros_at_both_ends(units):
    row = [0, 0, 0, 1, 2, 3, 0, 0, 0]
    u = [0.0, 1 / 6 - 1e-9, 1 / 6 + 1e-9, 0.5 - 1e-9, 0.5 + 1e-9, np.nextafter(1.0, 0.0), 1.0]
    assert draw([row] * len(u), u, units) == [3, 3, 4, 4, 5, 5, 5]


@pytest.mark.parametrize("units", [1, 3, 16])
def test_negative_zero_is_a_zero_weight(units):
    row = [-0.0, 1.0, -0.0, 1.0, -0.0]
    assert draw([row] * 3, [0.0, 0.7, 1.0], units) == [1, 3, 3]


@pytest.mark.parametrize("units", [1, 4, 16, 128])
def test_target_equal_to_total_returns_last_nonzero(units):
    # u = 1 makes the target the total itself: no cumulative value exceeds it. The tiny
    # last weight is absorbed by rounding (the cumulative stops growing at index 2), yet it
    # is the last nonzero weight, so it is the one returned; the zero after it never is.
    row = [1.0, 0.0, 1.0, 1e-9, 0.0]
    assert draw([row, row], [1.0, np.nextafter(1.0, 0.0)], units) == [3, 2]


@pytest.mark.parametrize("units", [1, 5, 16, 128])
def test_denormal_weights_are_exact_integers(units):
    # multiples of the smallest denormal add exactly, so the draw is integer arithmetic
    rng = np.random.default_rng(units)
    counts = rng.integers(0, 50, size=(64, 300))
    counts[:, 0] = 1
    tiny = np.float32(2.0 ** -149)
    probs = (counts * tiny).astype(np.float32)
    assert np.array_equal(probs.astype(np.float64) / 2.0 ** -149, counts)  # no flush to zero
    u = rng.random(64)
    cum = np.cumsum(counts, axis=1)
    expected = [int(np.argmax(cum[b] > u[b] * cum[b, -1])) for b in range(64)]
    for isa in ISAS:
        kernel.set_isa(isa)
        assert draw(probs, u, units) == expected


@pytest.mark.parametrize("units", [1, 16, 128])
def test_huge_dynamic_range(units):
    rng = np.random.default_rng(11)
    exponents = rng.integers(-40, 38, size=(32, 2000))
    probs = (10.0 ** exponents / 4.0).astype(np.float32)  # 2.5e-41 (denormal) .. 2.5e36
    probs[rng.random(probs.shape) < 0.2] = 0.0
    u = rng.random(32)
    got = draw(probs, u, units)
    assert got == emulate_indices(probs, u, units).tolist()
    assert np.all(probs[np.arange(32), got] > 0)
    check = compare_with_reference(probs, u, np.array(got), units)
    assert not check["unexplained_rows"]


BAD_ROWS = [
    (lambda p: p.__setitem__((2, 17), -0.5), r"probs row 2: weight at index 17 is negative"),
    (lambda p: p.__setitem__((1, 0), np.nan), r"probs row 1: weight at index 0 is NaN"),
    (lambda p: p.__setitem__((3, 99), np.inf), r"probs row 3: weight at index 99 is infinite"),
    (lambda p: p.__setitem__((0, 5), -np.inf), r"probs row 0: weight at index 5 is infinite"),
    (lambda p: p.__setitem__(2, 0.0), r"probs row 2: all weights are zero"),
    (lambda p: p.__setitem__(1, 3e38), r"probs row 1: the weights' float32 sum overflows"),
    (lambda p: p.__setitem__((3, -1), -1e-45), r"probs row 3: weight at index 99 is negative"),
]


@pytest.mark.parametrize("corrupt,message", BAD_ROWS)
@pytest.mark.parametrize("units", [1, 16, 128])
def test_bad_rows_raise_naming_the_row(corrupt, message, units):
    probs = np.ones((4, 100), dtype=np.float32)
    corrupt(probs)
    for isa in ISAS:
        kernel.set_isa(isa)
        for method in METHODS:
            with pytest.raises(ValueError, match=message):
                kernel.sample(probs, np.full(4, 0.5), units, method)


@pytest.mark.parametrize("call,message", [
    (lambda: kernel.sample(np.ones(5, np.float32), [0.5], 2), "2-D"),
    (lambda: kernel.sample(np.ones((1, 5)), [0.5], 2), "float32"),
    (lambda: kernel.sample(np.ones((1, 0), np.float32), [0.5], 2), "at least one column"),
    (lambda: kernel.sample(np.ones((2, 5), np.float32), [0.5], 2), "one value per row"),
    (lambda: kernel.sample(np.ones((3, 5), np.float32), [[0.1, 0.2, 0.3]], 2), "1-D"),
    (lambda: kernel.sample(np.ones((1, 5), np.float32), [1.5], 2), r"uniforms\[0\]"),
    (lambda: kernel.sample(np.ones((2, 5), np.float32), [0.5, -0.1], 2), r"uniforms\[1\]"),
    (lambda: kernel.sample(np.ones((1, 5), np.float32), [np.nan], 2), r"uniforms\[0\]"),
    (lambda: kernel.sample(np.ones((1, 5), np.float32), [0.5], 0), "units"),
    (lambda: kernel.sample(np.ones((1, 5), np.float32), [0.5], 2, "scan"), "method"),
    (lambda: kernel.sample(np.ones((1, 5), np.float32), [0.5], 2, threads=0), "threads"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_empty_batch_and_non_contiguous_input():
    assert kernel.sample(np.ones((0, 7), np.float32), [], 3).shape == (0,)
    rng = np.random.default_rng(3)
    wide = weights(rng, 6, 200)
    view = wide[:, ::2]  # strided: copied, same answer as the contiguous copy
    u = rng.random(6)
    assert np.array_equal(kernel.sample(view, u, 8), kernel.sample(np.ascontiguousarray(view), u, 8))


# ---- workload --------------------------------------------------------------------------

def params(**kw):
    base = {"vocab": 1000, "batch": 4, "units": 16, "method": "chunk_select", "distribution": "softmax",
            "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    base.update(kw)
    return base


def test_cycle_model_by_hand():
    # V = 10, U = 4: L = 3; log2(4) = 2 cycles of priority encoding
    full = vector_cycles(10, 4, "full_scan", batch=5)
    assert full["phases_per_row"] == {"local_scan": 3, "totals_scan": 4, "target": 1,
                                      "add_back": 3, "compare_select": 5}
    assert full["cycles_per_row"] == 16 and full["cycles"] == 80
    assert full["utilization"] == pytest.approx(30 / (4 * 16))
    select = vector_cycles(10, 4, "chunk_select", batch=5)
    assert select["phases_per_row"] == {"local_totals": 3, "totals_scan": 4, "target": 1,
                                        "chunk_select": 3, "rescan": 3}
    assert select["cycles_per_row"] == 14 and select["cycles"] == 70
    assert select["bytes_read"] == 5 * 4 * 13 and select["bytes_written"] == 0
    one = vector_cycles(7, 1, "chunk_select")  # one unit: no encoder, one total
    assert one["cycles_per_row"] == 7 + 1 + 1 + 1 + 7
    figures = model_of(WORKLOAD, params(vocab=10, units=4, batch=5, method="full_scan"),
                             Array(clock_ghz=2.0))
    assert figures["time_us"] == pytest.approx(80 / 2000) and figures["time_us_per_row"] == pytest.approx(16 / 2000)


@pytest.mark.parametrize("distribution", ["softmax", "uniform", "zipf"])
@pytest.mark.parametrize("method", METHODS)
def test_workload_runs_and_validates(distribution, method):
    p = params(distribution=distribution, method=method, vocab=3000, batch=8, units=7)
    state, out = drive(WORKLOAD, p, Array(), seed=5, threads=2)
    assert state.inputs.probs.dtype == np.float32 and state.inputs.probs.shape == (8, 3000)
    result = WORKLOAD.validate(state, out)
    assert result.passed, result.detail
    assert result.extra["emulation_exact"] and result.extra["unexplained_mismatches"] == 0
    extra = result.extra
    assert extra["mismatches"] <= extra["boundary_cases_observed"] <= extra["boundary_cases"]
    assert 0 <= result.error < 1e-4


def test_validation_catches_wrong_indices():
    state, good = drive(WORKLOAD, params(distribution="uniform", vocab=500, batch=8), Array(), seed=2)
    assert WORKLOAD.validate(state, good).passed
    far = (good + 250) % 500  # far from every draw's boundary
    assert not WORKLOAD.validate(state, far).passed
    state.inputs.probs[0, 123] = 0.0
    zero = good.copy()
    zero[0] = 123
    result = WORKLOAD.validate(state, zero)
    assert not result.passed and "zero-weight" in result.detail


def test_seed_reproducibility():
    p = params(vocab=5000, batch=16)
    first, out_first = drive(WORKLOAD, p, Array(), seed=42, threads=1)
    again, out_again = drive(WORKLOAD, p, Array(), seed=42, threads=2)
    other, _ = drive(WORKLOAD, p, Array(), seed=43)
    assert np.array_equal(first.inputs.probs, again.inputs.probs)
    assert np.array_equal(first.inputs.uniforms, again.inputs.uniforms)
    assert np.array_equal(out_first, out_again)
    assert not np.array_equal(first.inputs.uniforms, other.inputs.uniforms)


def test_random_weights_distributions():
    rng = np.random.default_rng(0)
    zipf = random_weights(rng, 2, 100, "zipf")
    assert sorted(zipf[0].tolist()) == sorted(zipf[1].tolist()) and zipf.max() == 1.0
    assert random_weights(rng, 3, 10, "softmax").max(axis=1).tolist() == [1.0, 1.0, 1.0]


def test_softmax_temperature():
    logits = np.array([[0.0, 1.0, 3.0, -2.0]], dtype=np.float32)
    w = softmax_weights(logits, 0.5)
    assert w.dtype == np.float32
    assert np.allclose(w[0], np.exp((logits[0] - 3.0) / 0.5), rtol=1e-7)
    assert w[0, 2] == 1.0  # the largest logit's weight is exactly exp(0)


def test_top_k_and_top_p_keep_exactly_defined_sets():
    w = np.array([[0.1, 0.4, 0.2, 0.4, 0.05, 0.3]], dtype=np.float32)
    # top-2: the two 0.4s; top-3 adds the 0.3; an exact tie goes to the lower index
    assert np.flatnonzero(filter_top(w, top_k=2)[0]).tolist() == [1, 3]
    assert np.flatnonzero(filter_top(w, top_k=3)[0]).tolist() == [1, 3, 5]
    tie = np.array([[1.0, 2.0, 2.0, 2.0]], dtype=np.float32)
    assert np.flatnonzero(filter_top(tie, top_k=2)[0]).tolist() == [1, 2]
    # total 1.45; sorted 0.4, 0.4, 0.3, 0.2, 0.1, 0.05 -> cumulative 0.4, 0.8, 1.1, 1.3, ...
    assert np.flatnonzero(filter_top(w, top_p=0.5)[0]).tolist() == [1, 3]  # 0.8 >= 0.725
    assert np.flatnonzero(filter_top(w, top_p=0.6)[0]).tolist() == [1, 3, 5]  # 0.8 < 0.87 <= 1.1
    assert np.flatnonzero(filter_top(w, top_p=1e-9)[0]).tolist() == [1]
    assert np.flatnonzero(filter_top(w, top_k=4, top_p=0.99)[0]).tolist() == [1, 2, 3, 5]
    kept = filter_top(w, top_k=3)
    assert np.array_equal(kept[0, [1, 3, 5]], w[0, [1, 3, 5]])  # kept weights are untouched
    assert np.array_equal(filter_top(w), w)


def test_top_k_one_is_greedy_decoding():
    p = params(vocab=2000, batch=32, top_k=1)
    state, out = drive(WORKLOAD, p, Array(), seed=4)
    logits_argmax = np.argmax(random_weights(np.random.default_rng(4), 32, 2000, "softmax"), axis=1)
    assert np.array_equal(out, logits_argmax)
    assert WORKLOAD.validate(state, out).passed


def test_check_rejects_bad_filters():
    assert check_of(WORKLOAD, params(temperature=0.0), Array())[0][0] == "temperature"
    assert check_of(WORKLOAD, params(temperature=0.7, distribution="zipf"), Array())[0][0] == "temperature"
    assert check_of(WORKLOAD, params(top_k=1001), Array())[0][0] == "top_k"
    assert check_of(WORKLOAD, params(top_p=0.0), Array())[0][0] == "top_p"
    assert check_of(WORKLOAD, params(top_p=1.5), Array())[0][0] == "top_p"
    assert check_of(WORKLOAD, params(units=1 << 21), Array())[0][0] == "units"
    assert check_of(WORKLOAD, params(units=5000, vocab=10), Array()) == []  # V < U is allowed
    assert check_of(WORKLOAD, params(temperature=0.7, top_k=50, top_p=0.9), Array()) == []


def test_suite_cases_and_errors(tmp_path):
    from sysbench.suite import SuiteError, load

    suite = load("sample")
    assert len(suite.cases) == 3 * 2 * 3 * 2
    assert {c.params["units"] for c in suite.cases} == {1, 16, 128}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[cases]]\nname = "s"\nkind = "sample"\nvocab = 10\nmethod = "scan"\nunits = 0\n')
    with pytest.raises(SuiteError) as err:
        load(str(bad))
    text = str(err.value)
    assert "case 's' key 'method'" in text and "case 's' key 'units'" in text


def test_quick_suite_sample_cases_run():
    from sysbench.runner import run_case
    from sysbench.suite import load

    cases = [c for c in load("quick").cases if c.kind == "sample"]
    assert cases
    for case in cases:
        result = run_case(case, threads=1, repeats=1)
        assert result.timing["rounds"] == 1 and result.timing["number"] >= 1
        assert result.passed, result.validation
