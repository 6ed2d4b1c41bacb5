"""train_distributed without MPI: schedules' plans, cost models, the simulator on hand-computed
timelines, the ResNet-50 sizes, and the checks that run before anything launches."""
from __future__ import annotations

from conftest import check_of, drive, model_of, suite_toml  # noqa: F401

import pytest

from sysbench import suite as suite_mod
from sysbench.distributed.costs import LinkCost, allreduce_time, fit_alpha_beta
from sysbench.distributed.models import resnet50
from sysbench.distributed.schedules import SCHEDULES, check_plan, make_plan
from sysbench.distributed.simulator import simulate

SHAPES = [[1], [7], [1000, 1], [3, 5, 7, 11], [4096, 4096, 10], [100000, 3, 70000, 2, 1]]


@pytest.mark.parametrize("sizes", SHAPES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("knob", [4, 1000, 65536, 1 << 30])
def test_every_plan_reduces_every_gradient_exactly_once(schedule, sizes, knob):
    paced = {"bwd_s": [1e-3] * len(sizes), "cost": lambda n: 1e-4 + n * 1e-9}
    plan = make_plan(schedule, sizes, bucket_bytes=knob, portion_bytes=knob, **paced)
    assert check_plan(plan) == []
    unpaced = make_plan(schedule, sizes, bucket_bytes=knob, portion_bytes=knob)
    assert check_plan(unpaced) == []


def test_check_plan_catches_a_double_reduction():
    plan = make_plan("fifo", [3, 4])
    plan.issue_after_bwd[0].append(1)       # layer 1's message again
    assert any("issued twice" in p for p in check_plan(plan))


def test_bucketed_packs_in_backward_order_like_ddp():
    # 200-element buckets: layers 3 (50) + 2 (300) close the first bucket, 1 + 0 the second
    plan = make_plan("bucketed", [100, 100, 300, 50], bucket_bytes=800)
    spans = [(m.start, m.stop, m.layers) for m in plan.messages]
    assert spans == [(200, 550, (2, 3)), (0, 200, (0, 1))]
    assert plan.issue_after_bwd == [[1], [], [0], []]


def test_split_priority_cuts_portions_and_gates_each_forward_on_its_own_layer():
    plan = make_plan("split_priority", [10, 3], portion_bytes=16)   # 4 elements a portion
    assert [(m.start, m.stop, m.layers[0], m.portion) for m in plan.messages] == \
        [(0, 4, 0, 0), (4, 8, 0, 1), (8, 10, 0, 2), (10, 13, 1, 0)]
    assert plan.wait_before_fwd == [[0, 1, 2], [3]]
    assert plan.update_before_fwd == [[0], [1]]


def test_split_priority_lower_layers_preempt_queued_higher_ones():
    # A slow link: only one portion fits between two layer computations, so layer 3's
    # portions queue, and each lower layer's portions overtake them as they appear.
    sizes = [256] * 4                          # 1 KiB each, 4 portions of 256 B
    plan = make_plan("split_priority", sizes, portion_bytes=256, bwd_s=[1.0] * 4, cost=lambda n: 0.9)
    layer = {m.id: m.layers[0] for m in plan.messages}
    first_points = [[layer[m] for m in plan.issue_after_bwd[l]] for l in (3, 2, 1)]
    # after b3 (t=1, next point t=2): link free at 1 -> two portions, busy until 2.8;
    # after b2 (t=2, next 3): one (2.8 -> 3.7); after b1 (t=3, next 4): one (3.7 -> 4.6)
    assert first_points == [[3, 3], [2], [1]]
    last = [(layer[m], plan.messages[m].portion) for m in plan.issue_after_bwd[0]]
    assert last == sorted(last)                        # the rest go lowest layer first
    assert last[0] == (0, 0) and last[-1][0] == 3      # layer 0 jumped ahead of layer 3's queue


def test_cost_models_by_hand():
    assert allreduce_time(1000, 4, 1.0, 0.01, "ring") == pytest.approx(2 * 3 * 1 + 2 * 3 / 4 * 1000 * 0.01)
    assert allreduce_time(1000, 4, 1.0, 0.01, "tree") == pytest.approx(2 * 2 * (1 + 10))
    assert allreduce_time(1000, 1, 1.0, 0.01) == 0.0
    link = LinkCost.from_link(10.0, 5.0, 8)     # 10 Gb/s: 0.8 ns per byte
    assert link.beta_s_per_byte == pytest.approx(0.8e-9)
    assert link.allreduce_s(10**6) == pytest.approx(14 * 5e-6 + 14 / 8 * 10**6 * 0.8e-9)


@pytest.mark.parametrize("algorithm", ["ring", "tree"])
def test_fit_recovers_alpha_and_beta(algorithm):
    sizes = [4096, 65536, 1 << 20, 8 << 20]
    times = [allreduce_time(n, 4, 7e-6, 2e-10, algorithm) for n in sizes]
    fit = fit_alpha_beta(sizes, times, 4, algorithm)
    assert fit["alpha_s"] == pytest.approx(7e-6, rel=1e-6)
    assert fit["beta_s_per_byte"] == pytest.approx(2e-10, rel=1e-6)
    with pytest.raises(ValueError):
        fit_alpha_beta([4096, 4096], [1.0, 1.0], 2)


def test_simulator_sequential_by_hand():
    # f = 1, 1; b = 2, 2; one 3 s all-reduce after backward. Step 0: f0 [0,1] f1 [1,2]
    # b1 [2,4] b0 [4,6], all-reduce [6,9]. Step 1: wait [6,9], f0 [9,10] f1 [10,11],
    # b1 [11,13] b0 [13,15], all-reduce [15,18]. Steady step = 6 .. 15.
    plan = make_plan("sequential", [5, 5])
    sim = simulate(plan, [1, 1], [2, 2], lambda n: 3.0, steps=2)
    assert (sim.step_s, sim.compute_s, sim.exposed_comm_s, sim.comm_inflight_s) == (9, 6, 3, 3)
    assert sim.overlap_fraction == 0
    step1 = [(e["type"], e.get("layer"), e["start_s"], e["end_s"]) for e in sim.timeline if e["step"] == 1]
    assert step1 == [("wait", 0, 6, 9), ("forward", 0, 9, 10), ("forward", 1, 10, 11),
                     ("backward", 1, 11, 13), ("backward", 0, 13, 15), ("allreduce", 0, 15, 18)]


def test_simulator_split_priority_by_hand():
    # One portion per layer, 3 s each. Plan: layer 1's portion after b1, layer 0's after b0.
    # Step 0: b1 [2,4] -> m1 [4,7]; b0 [4,6] -> m0 queued behind m1: [7,10].
    # Step 1: f0 waits for m0 until 10, f0 [10,11]; m1 done at 7 so f1 [11,12] at once;
    # b1 [12,14] -> m1 [14,17]; b0 [14,16] -> m0 [17,20]. Steady step 6 .. 16 = 10 s, 4 exposed;
    # in flight inside [6,16]: [6,10] and [14,16] = 6 s; overlap 1 - 4/6.
    plan = make_plan("split_priority", [1, 1], portion_bytes=4, bwd_s=[2, 2], cost=lambda n: 3.0)
    assert plan.issue_after_bwd == [[0], [1]]
    sim = simulate(plan, [1, 1], [2, 2], lambda n: 3.0, steps=2)
    assert (sim.step_s, sim.exposed_comm_s, sim.comm_inflight_s) == (10, 4, 6)
    assert sim.overlap_fraction == pytest.approx(1 / 3)
    comm = [(e["message"], e["start_s"], e["end_s"]) for e in sim.timeline if e["type"] == "allreduce"]
    assert comm == [(1, 4, 7), (0, 7, 10), (1, 14, 17), (0, 17, 20)]


def test_simulator_polled_progress_by_hand():
    # Without a progress thread on busy cores the all-reduces are worked off at the wait, in
    # issue order: step 1 waits [6,12] for m1 [6,9] then m0 [9,12]; f0 [12,13] f1 [13,14]
    # b1 [14,16] b0 [16,18]. Steady step 6 .. 18 = 12 s, 6 exposed. In flight (issued, not
    # complete) inside [6,18]: [6,12] and step 1's m1, issued at 16 and pending: 8 s.
    plan = make_plan("split_priority", [1, 1], portion_bytes=4, bwd_s=[2, 2], cost=lambda n: 3.0)
    sim = simulate(plan, [1, 1], [2, 2], lambda n: 3.0, steps=2, progress="polled")
    assert (sim.step_s, sim.exposed_comm_s, sim.comm_inflight_s) == (12, 6, 8)
    assert sim.overlap_fraction == pytest.approx(0.25)
    step1 = [(e["type"], e.get("message", e.get("layer")), e["start_s"], e["end_s"])
             for e in sim.timeline if e["start_s"] >= 6 and e["start_s"] < 18]
    assert step1 == [("allreduce", 1, 6, 9), ("allreduce", 0, 9, 12), ("wait", 0, 6, 12),
                     ("forward", 0, 12, 13), ("forward", 1, 13, 14), ("backward", 1, 14, 16),
                     ("backward", 0, 16, 18)]


def test_simulator_pipelines_latency_by_hand():
    # fifo, 2 layers, each message 1 s on the network then 2 s of latency. Step 0: b1 [2,4]
    # -> m1 data [4,5], done 7; b0 [4,6] -> m0 data [6,7], done 9. Step 1: wait [6,9];
    # f0 [9,10] f1 [10,11] b1 [11,13] -> m1 [13,14] done 16; b0 [13,15] -> m0 [15,16] done 18.
    # Without pipelining m0 would queue behind m1's latency: data [7,8], done 10.
    plan = make_plan("fifo", [1, 1])
    sim = simulate(plan, [1, 1], [2, 2], lambda n: 1.0, steps=2, latency=lambda n: 2.0)
    comm = [(e["message"], e["start_s"], e["end_s"]) for e in sim.timeline if e["type"] == "allreduce"]
    assert comm == [(1, 4, 7), (0, 6, 9), (1, 13, 16), (0, 15, 18)]
    assert (sim.step_s, sim.exposed_comm_s, sim.comm_busy_s) == (9, 3, 2)
    whole = simulate(plan, [1, 1], [2, 2], lambda n: 3.0, steps=2)
    assert [(e["message"], e["start_s"], e["end_s"]) for e in whole.timeline if e["type"] == "allreduce"][:2] \
        == [(1, 4, 7), (0, 7, 10)]


def test_link_cost_splits_into_occupancy_and_latency():
    for algorithm in ("ring", "tree"):
        link = LinkCost(5e-6, 0.8e-9, 8, algorithm)
        assert link.occupancy_s(12345) + link.latency_s(12345) == pytest.approx(link.allreduce_s(12345))


def test_resnet50_has_torchvisions_parameter_count():
    params, flops = resnet50()
    assert sum(params) == 25_557_032 and len(params) == 54
    assert sum(flops) / 2 == pytest.approx(4.09e9, rel=0.01)   # ~4.1 GMACs per image


def test_simulator_sweeps_to_4096_workers_quickly():
    import time
    params, flops = resnet50()
    fwd = [f * 32 / 20e12 for f in flops]
    start = time.perf_counter()
    for workers in (8, 4096):
        for schedule in SCHEDULES:
            link = LinkCost.from_link(100, 5, workers)
            plan = make_plan(schedule, params, portion_bytes=1 << 20, bwd_s=[2 * f for f in fwd], cost=link.occupancy_s)
            sim = simulate(plan, fwd, [2 * f for f in fwd], link.occupancy_s, latency=link.latency_s)
            assert sim.step_s >= sim.compute_s
    assert time.perf_counter() - start < 5


def load_case(tmp_path, name, kind, **keys):
    """The suite of one [[cases]] table with these keys (written as TOML)."""
    path = tmp_path / "s.toml"
    path.write_text(suite_toml({"name": name, "kind": kind, **keys}))
    return suite_mod.load(str(path))


def suite_error(tmp_path, name="bad", kind="train_distributed", **keys) -> str:
    """What loading a suite of that one case says is wrong."""
    with pytest.raises(suite_mod.SuiteError) as exc:
        load_case(tmp_path, name, kind, **keys)
    return str(exc.value)


def test_an_unusable_rank_count_is_an_error_before_launch(tmp_path):
    message = suite_error(tmp_path, model="mlp", layers=2, width=8, batch=10, ranks=3)
    assert "case 'bad' key 'ranks'" in message and "cannot split batch = 10" in message
    assert "simulator-only" in suite_error(tmp_path, model="resnet50", ranks=2)


@pytest.mark.parametrize("lr", [0, -0.5])
def test_a_non_positive_learning_rate_is_a_suite_error(tmp_path, lr):
    message = suite_error(tmp_path, model="mlp", layers=2, width=8, batch=8, lr=lr)
    assert "case 'bad' key 'lr': must be positive" in message


def test_sim_suite_loads_and_models(tmp_path):
    suite = load_case(tmp_path, "s", "train_distributed", mode="sim", model="resnet50", local_batch=32,
                      workers=[8, 4096], schedule=["sequential", "split_priority"])
    from sysbench.workloads import registry
    w = registry()["train_distributed"]
    for case in suite.cases:
        m = model_of(w, case.params, case.array)
        assert m["parameters"] == 25_557_032 and m["step_s"] >= m["compute_s"] > 0
        assert m["bytes_sent_per_rank"] == round(2 * (m["workers"] - 1) / m["workers"] * m["gradient_bytes"])


def test_calibration_file_drives_the_simulator(tmp_path):
    from sysbench.workloads.base import CaseError
    from sysbench.workloads.train_distributed import load_calibration
    good = tmp_path / "cal.json"
    good.write_text('{"alpha_s": 1e-5, "beta_s_per_byte": 8e-10}')
    suite = load_case(tmp_path, "s", "train_distributed", mode="sim", model="resnet50", local_batch=32, workers=64,
                      calibration=str(good))
    from sysbench.workloads import registry
    case = suite.cases[0]
    with_file = model_of(registry()["train_distributed"], case.params, case.array)
    same_link = dict(case.params, calibration=None, link_gbps=10.0, link_latency_us=10.0)
    assert with_file["step_s"] == model_of(registry()["train_distributed"], same_link, case.array)["step_s"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"alpha": 1}')
    with pytest.raises(CaseError, match="alpha_s and beta_s_per_byte"):
        load_calibration(str(bad))
    with pytest.raises(CaseError, match="cannot read"):
        load_calibration(str(tmp_path / "missing.json"))


def test_the_reference_training_reports_progress_every_layer():
    # Rank 0 trains the single-process reference after the job's last step; it must beat as
    # training does, or the launcher's backstop would kill a long reference as a hung job.
    from sysbench.distributed.programs import NetProgram, full_batch_weights, reference_weights
    spec = {"program": "net", "net": {"model": "mlp", "layers": 3, "width": 8}, "batch": 8, "lr": 0.05}
    layers = len(NetProgram(spec, 0, 2).layer_sizes)
    beats = []
    reference_weights(spec, 2, 3, lambda step, phase: beats.append(step))
    assert beats == [s for s in range(3) for _ in range(2 * 2 * layers)]   # 2 shards, forward + backward
    beats.clear()
    full_batch_weights(spec, 3, lambda step, phase: beats.append(step))
    assert beats == [s for s in range(3) for _ in range(2 * layers)]


def test_the_watchdog_publishes_every_beat_for_the_launcher(tmp_path):
    # The launcher's backstop watches rank<r>.beat: beats within one step (one per layer)
    # must change it too, or a step longer than timeout_s would look like a hang.
    import time
    from sysbench.distributed.worker import Watchdog
    dog = Watchdog(0, 60.0, tmp_path)
    beat_file = tmp_path / "rank0.beat"
    seen = set()
    try:
        for layer in range(3):
            dog.beat(7, f"backward of layer {layer}")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (not beat_file.exists() or beat_file.read_text() in seen):
                time.sleep(0.01)
            seen.add(beat_file.read_text())
    finally:
        dog.stop()
    assert len(seen) == 3


def test_a_job_failure_names_the_rank_that_fell_behind(tmp_path):
    # Only a rank blocked on its peers reported (the stuck one's watchdog could not run, e.g.
    # it was stopped): the beat counts say which rank stopped.
    from sysbench.distributed.launcher import _explain
    (tmp_path / "rank0.beat").write_text("8 155\n")
    (tmp_path / "rank1.beat").write_text("6 140\n")
    (tmp_path / "rank0.error").write_text("rank 0 made no progress for 4.0 s (timeout_s = 3) at step 8, "
                                          "blocked in the wait for layer 0's all-reduce\n")
    message = _explain(tmp_path, 2, "", 75, None)
    assert message.startswith("rank 0 made no progress")
    assert "rank 1 is the one behind (last reported at step 6" in message
    (tmp_path / "rank1.beat").write_text("8 155\n")            # level: nobody to blame
    assert "behind" not in _explain(tmp_path, 2, "", 75, None)


def test_calibration_output_and_input_resolve_alike_from_any_directory(tmp_path, monkeypatch):
    # distributed_calibrate's `output` and train_distributed's `calibration` are both relative
    # to the suite file, so the pair works whatever directory sysbench runs from.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    suite = load_case(tmp_path, "cal", "distributed_calibrate", sizes=[4096, 65536], output="cal.json")
    assert suite.cases[0].params["output"] == str(tmp_path / "cal.json")
    message = suite_error(tmp_path, "cal", "distributed_calibrate", sizes=[4096, 65536], output="no/such/dir/cal.json")
    assert "case 'cal' key 'output'" in message and "directory does not exist" in message


@pytest.mark.parametrize("model, key, value", [("mlp", "channels", [8, 16]), ("mlp", "image", 16),
                                               ("cnn", "width", 64), ("resnet50", "layers", 3)])
def test_a_network_key_the_model_does_not_read_is_a_suite_error(tmp_path, model, key, value):
    mode = "sim" if model == "resnet50" else "mpi"
    message = suite_error(tmp_path, mode=mode, model=model, batch=8, **{key: value})
    assert f"case 'bad' key '{key}': not used by this case: model = '{model}' reads only" in message


def test_keys_of_the_other_mode_are_suite_errors(tmp_path):
    from sysbench import suite

    path = tmp_path / "s.toml"
    path.write_text('[[cases]]\nname = "sim"\nkind = "train_distributed"\nmode = "sim"\nmodel = "resnet50"\n'
                    'ranks = [2, 4]\nworkers = 8\nprogress_us = 100\n'
                    '[[cases]]\nname = "mpi"\nkind = "train_distributed"\nlink_gbps = 10\ndevice_tflops = 3\n'
                    '[[cases]]\nname = "ok"\nkind = "train_distributed"\nemulate_link = true\nlink_gbps = 10\n')
    with pytest.raises(suite.SuiteError) as info:
        suite.load(str(path))
    problems = info.value.problems
    expected = [("sim", "ranks", "mode = \"mpi\""), ("sim", "progress_us", "mode = \"mpi\""),
                ("mpi", "link_gbps", "emulate_link = true"), ("mpi", "device_tflops", "mode = \"sim\"")]
    assert len(problems) == len(expected), problems  # the ranks sweep is reported once
    for (case, key, fragment), problem in zip(expected, problems):
        assert f"case '{case}' key '{key}': not used by this case" in problem and fragment in problem
