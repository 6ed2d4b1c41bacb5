"""train_distributed over 2 real MPI ranks, started by the project's own launcher (mpiexec)."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

pytest.importorskip("mpi4py")

from sysbench.distributed.launcher import DistributedError, launch  # noqa: E402
from sysbench.distributed.programs import buffer_gradient  # noqa: E402
from sysbench.distributed.schedules import SCHEDULES  # noqa: E402
from conftest import suite_toml  # noqa: E402

MLP = {"model": "mlp", "layers": 3, "width": 64}
FAST = {"warmup": 1, "repeats": 2, "probe_steps": 1, "calibrate_repeats": 2}


def planned_steps(result):
    """Steps a job trains under its plan: warm-up, one more (each measured window needs the
    step before it), then per sample its steps and the step that holds the control probe."""
    return FAST["warmup"] + 1 + FAST["repeats"] * (result["steps_per_sample"] + 1)


def net_spec(schedule, **extra):
    return {"program": "net", "net": MLP, "batch": 32, "lr": 0.05, "schedule": schedule,
            "bucket_bytes": 20000, "portion_bytes": 4096, **FAST, **extra}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_two_ranks_train_to_identical_weights_bit_equal_to_one_process(schedule):
    r = launch(net_spec(schedule), ranks=2, timeout_s=60)
    ranks = r["per_rank"]
    assert len(ranks) == 2
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert np.array_equal(r["weights"], r["reference"])            # bit-equal on 2 ranks
    # the reference really trained: the weights moved away from their initial values
    init = launch_free_initial_weights()
    assert np.max(np.abs(r["reference"] - init)) > 1e-4
    # plain one-GEMM-per-layer training on the whole batch agrees within rounding
    assert np.max(np.abs(r["weights"] - r["full_batch"])) < 1e-5
    for rank in ranks:
        assert rank["reduced_once"]
        assert rank["reductions"] == r["plan"]["messages"] * planned_steps(r)


def launch_free_initial_weights():
    from sysbench.distributed.programs import NetProgram
    return NetProgram(net_spec("fifo"), 0, 2).weights()


@pytest.mark.parametrize("schedule", ["fifo", "split_priority"])
def test_every_gradient_is_reduced_exactly_once_in_value(schedule):
    # Integer gradients (exact in float32 under any summation order): the weights after
    # training are -lr * scale * (sum over steps and ranks of the gradients), which a missed
    # or repeated reduction would change.
    sizes = [300, 1000, 50]
    spec = {"program": "buffers", "layer_sizes": sizes, "schedule": schedule, "portion_bytes": 512,
            "lr": 0.5, "burn": 1000, **FAST}
    r = launch(spec, ranks=2, timeout_s=60)
    steps = r["steps_trained"]
    expected = []
    for l, n in enumerate(sizes):
        total = sum(buffer_gradient(rank, s, l, n).astype(np.float64) for s in range(steps) for rank in range(2))
        expected.append(-0.5 * 0.5 * total)
    assert np.array_equal(r["weights"], np.concatenate(expected).astype(np.float32))
    assert all(rank["reduced_once"] for rank in r["per_rank"])


def test_split_priority_issue_order_respects_priority():
    # A fixed, slow estimated link so that portions queue and lower layers must overtake.
    spec = net_spec("split_priority", portion_bytes=2048,
                    cost={"alpha_s": 1e-5, "beta_s_per_byte": 1e-4})
    r = launch(spec, ranks=2, timeout_s=60)
    layers = [tuple(ls) for ls in r["plan"]["message_layers"]]
    n_layers = len(r["layer_sizes"])
    for rank in r["per_rank"]:
        by_step = {}
        for step, mid, after in rank["issues"]:
            by_step.setdefault(step, []).append((mid, after))
        assert len(by_step) == planned_steps(r)
        for issued in by_step.values():
            assert sorted(m for m, _ in issued) == list(range(len(layers)))   # each portion once
            for i, (mid, after) in enumerate(issued):
                assert layers[mid][0] >= after            # never before its gradient exists
                # everything still waiting at this point (ready, issued later) ranks below it
                for later, _ in issued[i + 1:]:
                    if layers[later][0] >= after:         # ready by now
                        assert (layers[mid][0], mid) < (layers[later][0], later)
            order = [layers[m][0] for m, _ in issued]
            top_last = max(i for i, l in enumerate(order) if l == n_layers - 1)
            assert order.index(0) < top_last              # layer 0 preempted a queued top-layer portion


def test_a_killed_rank_ends_the_job_with_a_clear_error():
    spec = net_spec("fifo", fault={"rank": 1, "step": 1, "mode": "die"})
    start = time.monotonic()
    with pytest.raises(DistributedError) as exc:
        launch(spec, ranks=2, timeout_s=20)
    assert time.monotonic() - start < 20
    assert "rank 1" in str(exc.value) and "signal 9" in str(exc.value)


def test_a_sample_groups_as_many_steps_as_last_min_time():
    r = launch(net_spec("fifo", probe_steps=2, min_time=0.02), ranks=2, timeout_s=60)
    group = r["steps_per_sample"]
    assert group >= 2                                   # a step of this net is well under 20 ms
    assert r["measured_steps"] == FAST["repeats"] * group
    assert np.array_equal(r["weights"], r["reference"])  # the longer job still trains bit-equal
    # a control probe around every sample (the slower of the two around it), and one window
    # per sample left for it
    assert r["sample_stride"] == group + 1 and r["steps_trained"] == 2 + planned_steps(r)
    assert len(r["controls_s"]) == FAST["repeats"] and all(c > 0 for c in r["controls_s"])


def test_the_supervisor_records_how_its_rank_ended_and_ends_the_same_way(tmp_path):
    import os
    import subprocess
    import sys
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    for rank, body, code, record in [(3, suicide, -9, "signal 9"), (0, "raise SystemExit(4)", 4, "code 4")]:
        proc = subprocess.run([sys.executable, "-m", "sysbench.distributed.supervise", str(tmp_path), "--",
                               sys.executable, "-c", body], env={**os.environ, "PMI_RANK": str(rank)})
        assert proc.returncode == code
        assert (tmp_path / f"rank{rank}.exit").read_text().startswith(record + " ")


def test_the_rank_killed_first_is_named_whatever_mpiexec_lists(tmp_path):
    from sysbench.distributed.launcher import _explain
    for r in range(3):
        (tmp_path / f"rank{r}.pid").write_text(f"{100 + r} vm\n")
    (tmp_path / "rank2.exit").write_text("signal 9 1000.5\n")    # died first
    (tmp_path / "rank0.exit").write_text("signal 15 1000.9\n")   # ended by mpiexec after it
    hydra = "PID 100 RUNNING AT vm\n=   EXIT CODE: 9\n"      # mpiexec named only rank 0
    message = _explain(tmp_path, 3, hydra, 137, None)
    assert message.startswith("rank 2 on vm was killed by signal 9 (SIGKILL)"), message
    assert "rank 0" not in message


def test_a_hung_rank_ends_the_job_within_the_timeout():
    spec = net_spec("split_priority", fault={"rank": 1, "step": 1, "mode": "hang"})
    start = time.monotonic()
    with pytest.raises(DistributedError) as exc:
        launch(spec, ranks=2, timeout_s=2)
    elapsed = time.monotonic() - start
    assert elapsed < 20                   # timeout 2 s after the last progress, plus start-up under load
    message = str(exc.value)
    assert "rank 1 made no progress" in message and "timeout_s = 2" in message


def test_bad_rank_counts_are_refused_before_launch():
    with pytest.raises(ValueError, match="ranks"):
        launch(net_spec("fifo"), ranks=0, timeout_s=5)


def test_workload_through_the_runner(tmp_path):
    from sysbench import suite as suite_mod
    from sysbench.runner import run_case
    path = tmp_path / "d.toml"
    path.write_text(suite_toml({"name": "mlp", "kind": "train_distributed", "model": "mlp", "layers": 2, "width": 32,
                                "batch": 16, "ranks": 2, "schedule": "split_priority", "portion_kib": 1,
                                "repeats": 2, "warmup": 1}))
    case = suite_mod.load(str(path)).cases[0]
    result = run_case(case, 1)
    assert result.passed, result.validation
    m = result.measured
    assert m["bytes_per_step"] == result.metrics["gradient_bytes"]
    assert 0.0 <= m["overlap_fraction"] <= 1.0 and m["step_s"] > 0
    kinds = {e["type"] for e in m["timeline"]}
    assert {"forward", "backward", "allreduce"} <= kinds and {e["rank"] for e in m["timeline"]} == {0, 1}
    assert m["prediction"]["step_s"] > 0


def test_an_emulated_link_holds_each_message_for_its_wire_time():
    # 0.1 Gb/s: the 5,400-byte layer takes 0.43 ms on the emulated link (2 ranks: ring factor 1)
    sizes = [100, 1350, 50]
    spec = {"program": "buffers", "layer_sizes": sizes, "schedule": "fifo", "lr": 0.5, **FAST,
            "emulate_link": {"alpha_s": 1e-4, "beta_s_per_byte": 8 / 0.1e9}}
    r = launch(spec, ranks=2, timeout_s=60)
    assert r["emulated_link"] and r["cost"]["bandwidth_gbps"] == pytest.approx(0.1)
    for rank in r["per_rank"]:
        for e in rank["timeline"]:
            if e["type"] == "allreduce":
                wire = 2 * 1e-4 + e["bytes"] * 8 / 0.1e9
                assert e["end_s"] - e["start_s"] >= wire * 0.999


def test_under_your_own_mpiexec(tmp_path):
    import json
    import subprocess
    import sys
    from sysbench.distributed.launcher import find_mpiexec
    suite = tmp_path / "mine.toml"
    suite.write_text(suite_toml(
        {"name": "mlp", "kind": "train_distributed", "model": "mlp", "layers": 2, "width": 16, "batch": 8,
         "ranks": [2, 4], "schedule": "bucketed", "repeats": 2},
        {"name": "cal", "kind": "distributed_calibrate", "ranks": 2, "sizes": [4096, 65536], "repeats": 3}))
    out = tmp_path / "result.json"
    proc = subprocess.run([find_mpiexec(), "-n", "2", sys.executable, "-m", "sysbench", "run", "--mpi",
                           str(suite), "-o", str(out), "--rounds", "2"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    cases = {c["id"]: c for c in json.loads(out.read_text())["cases"]}
    assert set(cases) == {"mine/mlp[ranks=2]", "mine/cal"}          # the 4-rank case is not this job's
    assert cases["mine/mlp[ranks=2]"]["validation"]["passed"]
    assert cases["mine/cal"]["measured"]["calibration"]["beta_s_per_byte"] > 0
    assert cases["mine/mlp[ranks=2]"]["timing"]["rounds"] == 2   # one job per round
    assert proc.stderr.count("suite mine") == 1                     # rank 0 alone reports


def test_a_rank_that_raises_ends_the_job_with_its_message():
    spec = net_spec("fifo", net={"model": "mlp", "layers": 2, "width": 8, "activation": "tanh"})
    with pytest.raises(DistributedError) as exc:
        launch(spec, ranks=2, timeout_s=30)
    # every rank fails alike; whichever reports first ends the job
    assert re.search(r"rank [01]: ValueError", str(exc.value)) and "activation" in str(exc.value)


def test_a_job_not_validated_skips_its_references():
    # the runner validates a job's first round only; the later rounds' jobs need no
    # single-process reference training (Run.validates False)
    r = launch(net_spec("fifo", reference=False), ranks=2, timeout_s=60)
    assert "reference" not in r and "full_batch" not in r and r["weights"].size
