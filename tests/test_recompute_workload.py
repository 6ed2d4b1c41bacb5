"""The train_recompute workload: keys, errors, model figures, an end-to-end run."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
from conftest import check_of, drive, model_of

from sysbench import suite
from sysbench.hardware import Array
from sysbench.models.systolic import gemm_cycles
from sysbench.runner import run_case
from sysbench.workloads.base import keys_not_applying
from sysbench.workloads.train_recompute import WORKLOAD, step_gemms
from sysbench.training import network
from sysbench.training import recompute as rc

ARRAY = Array(rows=8, cols=8)


def params(**over):
    p = {key: spec.default for key, spec in WORKLOAD.keys.items()}
    p.update(layers=3, width=32, batch=4)
    p.update(over)
    return p


def write_suite(tmp_path, body: str):
    path = tmp_path / "s.toml"
    path.write_text('name = "t"\n[arrays.a]\nrows = 8\ncols = 8\n' + textwrap.dedent(body))
    return path


def test_model_figures_per_schedule():
    n, m = 6, 3  # 3 x (Linear + ReLU): 6 layers in 3 stages, each forward runs 2 layers
    base = model_of(WORKLOAD, params(), ARRAY)
    full = model_of(WORKLOAD, params(schedule="full_recompute"), ARRAY)
    assert base["recompute_flops"] == 0 and base["predicted_overhead"] == 0
    assert base["layer_forwards"] == n and full["layer_forwards"] == 2 * (m + m * (m - 1) // 2)
    assert full["peak_activation_bytes"] < base["peak_activation_bytes"] == base["store_all_peak_activation_bytes"]
    assert full["cycles"] > base["cycles"] and full["array_overhead"] > 0
    # the FLOP prediction: recomputed forward FLOPs over one store_all step's FLOPs
    assert full["predicted_overhead"] == pytest.approx(
        full["recompute_flops"] / (base["forward_flops"] + base["backward_flops"]))
    # (a Linear + ReLU stage keeps one tensor: store_all holds 5 of them, any schedule 4)
    tight = model_of(WORKLOAD, params(schedule="budget=9/10"), ARRAY)
    assert tight["peak_activation_bytes"] <= tight["budget_bytes"] == \
        base["store_all_peak_activation_bytes"] * 9 // 10
    assert tight["recompute_flops"] <= tight["persistent_recompute_flops"]
    for cached in vars(rc).values():  # deterministic: the same figures with every cache emptied
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    assert model_of(WORKLOAD, params(schedule="budget=9/10"), ARRAY) == tight


def test_array_cycles_are_the_sum_of_each_gemm():
    p = params(layers=2, width=16, batch=3)
    net = network.build(p, init=False)
    ops = rc.program_for(rc.chain_of(net), rc.parse_schedule("store_all"))
    dims = step_gemms(net, ops)
    # forward: 2 Linear; backward: 2 weight grads + 1 input grad (the first layer needs none)
    assert sorted(dims) == sorted([(3, 16, 16)] * 2 + [(16, 3, 16)] * 2 + [(3, 16, 16)])
    expected = sum(gemm_cycles(ARRAY, *d)["cycles"] for d in dims)
    assert model_of(WORKLOAD, p, ARRAY)["cycles"] == expected


@pytest.mark.parametrize("over,key,message", [
    ({"schedule": "budget=1KiB"}, "schedule", "below the minimum activation memory"),
    ({"schedule": "budget=1/64"}, "schedule", "of store_all"),
    ({"schedule": "keep_some"}, "schedule", "unknown schedule"),
    ({"specs": ["linear:4", "tanh"], "input": [8]}, "specs", "layer 2"),
    ({"specs": ["linear:4"]}, "input", "input shape"),
    ({"model": "cnn", "channels": [4, -1]}, "channels", "positive"),
    ({"lr": 0.0}, "lr", "positive"),
    ({"specs": [{"type": "conv2d", "out_channels": 2, "kernel": 3, "stride": 0}, "flatten", "linear:3"],
      "input": [1, 4, 4]}, "specs", "stride must be an integer >= 1"),
    ({"specs": [{"type": "conv2d", "out_channels": 2, "kernel": 3}], "input": [1, 4, 4]}, "loss", "classes"),
])
def test_check_errors_name_the_key(over, key, message):
    problems = check_of(WORKLOAD, params(**over), ARRAY)
    assert problems and problems[0][0] == key and message in problems[0][1]


def test_infeasible_budget_in_a_suite_is_an_error_before_running(tmp_path):
    path = write_suite(tmp_path, """
        [[cases]]
        name = "tight"
        kind = "train_recompute"
        array = "a"
        layers = 2
        width = 16
        batch = 2
        schedule = "budget=100"  # four 2x16 float32 buffers (a_0, a_k, d_k, d_k-1) = 512 bytes at least
    """)
    expected = r"case 'tight' key 'schedule': budget .* below the minimum .*\(512 bytes\)"
    with pytest.raises(suite.SuiteError, match=expected):
        suite.load(str(path))


def test_end_to_end_every_schedule_validates_and_measures_what_the_model_says(tmp_path):
    path = write_suite(tmp_path, """
        [[cases]]
        name = "cnn"
        kind = "train_recompute"
        array = "a"
        model = "cnn"
        channels = [4, 8]
        image = 8
        batch = 3
        repeats = 2
        warmup = 0
        schedule = ["store_all", "full_recompute", "checkpoint_every=2", "budget=9/10", "budget=min"]
    """)
    cases = suite.load(str(path)).cases
    assert len(cases) == 5
    losses = set()
    for case in cases:
        result = run_case(case, threads=1)
        assert result.error is None, result.error
        assert result.validation["passed"] and result.validation["error"] == 0.0
        m, measured = result.metrics, result.measured
        assert measured["peak_activation_bytes"] == m["peak_activation_bytes"]
        assert measured["peak_total_bytes"] == m["peak_total_bytes"]
        assert measured["layer_forwards"] == m["layer_forwards"]
        assert max(row[1] for row in measured["memory_series"]) == m["peak_activation_bytes"]
        assert result.timing["repeats"] == 2
        losses.add(measured["loss"])
    assert len(losses) == 1


def test_bundled_suite_loads_and_covers_every_schedule():
    cases = suite.load("recompute").cases
    schedules = {c.params["schedule"] for c in cases}
    assert {"store_all", "full_recompute", "budget=1/2", "budget=1/4", "budget=3/4", "budget=min"} <= schedules
    assert any(s.startswith("checkpoint_every=") for s in schedules)
    assert {c.params["model"] for c in cases} == {"mlp", "cnn"}


def test_long_chains_fall_back_to_the_persistent_dp():
    long = params(layers=rc.EXACT_MAX_LAYERS + 1, width=8, batch=2, schedule="budget=1/3")  # one stage a block
    metrics = model_of(WORKLOAD, long, ARRAY)
    assert metrics["budget_solver"] == "persistent"
    assert metrics["recompute_flops"] == metrics["persistent_recompute_flops"]
    assert metrics["peak_activation_bytes"] <= metrics["budget_bytes"]
    assert "budget_solver" not in model_of(WORKLOAD, params(schedule="budget=9/10"), ARRAY)


@pytest.mark.parametrize("threads", [1, 2])
def test_validation_holds_for_any_blas_thread_count(tmp_path, threads):
    # Large enough for OpenBLAS to split its sums over threads: the reference step must run
    # with the measured step's thread count, or the bits differ and validation fails.
    path = write_suite(tmp_path, """
        [[cases]]
        name = "wide"
        kind = "train_recompute"
        array = "a"
        layers = 2
        width = 512
        batch = 256
        repeats = 1
        warmup = 0
        schedule = "full_recompute"
    """)
    [case] = suite.load(str(path)).cases
    result = run_case(case, threads=threads)
    assert result.error is None, result.error
    assert result.validation["passed"], result.validation


def test_reference_is_not_reused_for_another_network_with_the_same_description(tmp_path):
    # Same seed, same layer descriptions and shapes; only the biases differ. A reference
    # cached on the network's description would validate the second case against the first.
    path = write_suite(tmp_path, """
        [[cases]]
        name = "net"
        kind = "train_recompute"
        array = "a"
        input = [8]
        batch = 4
        repeats = 1
        warmup = 0
        specs = [[{type = "linear", out_features = 16}, "relu", {type = "linear", out_features = 4}],
                 [{type = "linear", out_features = 16, bias = false}, "relu",
                  {type = "linear", out_features = 4, bias = false}]]
    """)
    cases = suite.load(str(path)).cases
    assert len(cases) == 2
    for case in cases:
        result = run_case(case, threads=1)
        assert result.error is None, result.error
        assert result.validation["passed"], (case.params["specs"], result.validation)


@pytest.mark.parametrize("over,key,message", [
    ({"model": "mlp", "input": [8]}, "input", "applies only to specs; this case builds its network from model = 'mlp'"),
    ({"model": "mlp", "channels": [4]}, "channels", "applies only to model = 'cnn'"),
    ({"model": "cnn", "in_features": 4}, "in_features", "applies only to model = 'mlp'"),
    ({"specs": ["linear:3"], "input": [4], "channels": [4]}, "channels", "builds its network from specs"),
    ({"model": "cnn", "channels": []}, "channels", "non-empty"),
])
def test_keys_the_network_would_ignore_are_errors(over, key, message):
    # as a suite reports it: the keys the case sets that do not apply, else check()'s problems
    problems = keys_not_applying(WORKLOAD.keys, params(**over), over) or check_of(WORKLOAD, params(**over), ARRAY)
    assert problems and problems[0][0] == key and message in problems[0][1], problems


def test_validation_fails_and_says_what_differs():
    p = params(schedule="checkpoint_every=2")
    state, output = drive(WORKLOAD, p, ARRAY)
    assert WORKLOAD.validate(state, output).passed
    grad = output.grads[2]["bias"]
    grad[1] = np.nextafter(grad[1], np.float32(np.inf))  # one ulp in one element
    result = WORKLOAD.validate(state, output)
    assert not result.passed and result.error > 0
    assert "layer 3 bias gradient" in result.detail
    net = state.inputs.net
    updated = net.copy_params()
    del updated[0]["bias"]
    net.copy_params = lambda: updated  # the weights the step left in the network
    result = WORKLOAD.validate(state, output)
    assert not result.passed and "layer 1 parameters ['weight'] vs ['bias', 'weight']" in result.detail


def test_flop_and_mac_counts_by_hand():
    # 3 x (Linear 32 -> 32 + ReLU), batch 4: a Linear forward is 2*4*32*32 + 4*32 (bias) = 8320
    # FLOPs, a ReLU 128. Backward: input and weight GEMMs + bias (16512), the first Linear
    # without its input gradient (8320), 128 per ReLU; the loss 5 * 4 * 32 = 640.
    m = model_of(WORKLOAD, params(schedule="full_recompute"), ARRAY)
    assert m["forward_flops"] == 3 * (8320 + 128)
    assert m["backward_flops"] == 8320 + 2 * 16512 + 3 * 128 + 640
    # before B(k), stages 1..k-1 (Linear + ReLU, 8448 FLOPs each) run again: 0, 8448, 16896
    assert m["recompute_flops"] == 25344
    # GEMMs of 4 x 32 x 32 = 4096 MACs: 3 forwards + 3 recomputed, 3 weight and 2 input gradients
    assert m["macs"] == (3 + 3 + 3 + 2) * 4096


def test_keys_with_defaults_the_network_does_not_read_are_suite_errors(tmp_path):
    path = write_suite(tmp_path, """
        [[cases]]
        name = "mlp-with-image"
        kind = "train_recompute"
        array = "a"
        image = 16
        [[cases]]
        name = "specs-with-model"
        kind = "train_recompute"
        array = "a"
        model = "mlp"
        specs = ["linear:4"]
        input = [8]
    """)
    with pytest.raises(suite.SuiteError) as info:
        suite.load(str(path))
    [image, model] = info.value.problems
    assert "case 'mlp-with-image' key 'image': not used by this case: it applies only to model = 'cnn'" in image
    assert "case 'specs-with-model' key 'model': not used by this case" in model and "from specs" in model
