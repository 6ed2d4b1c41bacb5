"""The per-rank entry point of a distributed job.

    mpiexec -n R python -m sysbench.distributed.worker SPEC.json OUTDIR

Every rank runs the spec (a JSON object the launcher writes, see run_spec) and rank 0 writes
OUTDIR/result.json with everything gathered. Each rank writes OUTDIR/rank<r>.pid at start,
OUTDIR/rank<r>.beat as work completes, and OUTDIR/rank<r>.error when it fails or its watchdog
sees no progress for timeout_s seconds (then it exits, and mpiexec ends the other ranks).

Under your own mpiexec (a cluster), the suite loop is `sysbench run --mpi` itself:

    mpiexec -n R [-f hosts] python -m sysbench run --mpi distributed --filter mlp -o result.json

which runs the suite's MPI cases (train_distributed with mode = "mpi", distributed_calibrate)
whose `ranks` equals R on COMM_WORLD; rank 0 validates, reports and writes the result.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np


class Watchdog:
    """Ends this rank (and so the job) when no work completes for `timeout_s` seconds.

    Its thread also rewrites OUTDIR/rank<r>.beat whenever beats came in since its last look,
    so that the launcher's backstop sees the same progress (every layer, not every step)
    without the timed loop doing any file I/O."""

    def __init__(self, rank: int, timeout_s: float, outdir: Path | None):
        self.rank, self.timeout_s, self.outdir = rank, timeout_s, outdir
        self.last = time.monotonic()
        self.where = "starting"
        self.step = -1
        self.beats = 0
        self.stopped = False
        self.waiting = False
        threading.Thread(target=self._watch, daemon=True).start()

    def beat(self, step, phase, waiting=False):
        self.last = time.monotonic()
        self.where = phase
        self.waiting = waiting
        self.step = step
        self.beats += 1

    def stop(self):
        self.stopped = True

    def _watch(self):
        written = 0
        while not self.stopped:
            time.sleep(min(0.1, self.timeout_s / 10))
            beats = self.beats
            if self.outdir and beats != written:
                written = beats
                try:
                    (self.outdir / f"rank{self.rank}.beat").write_text(f"{self.step} {beats}\n")
                except OSError:
                    pass
            idle = time.monotonic() - self.last
            # A rank blocked on its peers waits a little longer, so that the rank that is
            # actually stuck reports first (and mpiexec then ends the job).
            limit = self.timeout_s + (min(1.0, self.timeout_s) if self.waiting else 0.0)
            if idle > limit and not self.stopped:
                message = (f"rank {self.rank} made no progress for {idle:.1f} s (timeout_s = {self.timeout_s:g})"
                           f" at step {self.step}, " + (f"blocked in {self.where}" if self.waiting
                                                         else f"after {self.where}"))
                write_error(self.outdir, self.rank, message)
                sys.stderr.write(f"sysbench worker: {message}\n")
                sys.stderr.flush()
                os._exit(75)


def write_error(outdir, rank, message):
    if outdir:
        try:
            (Path(outdir) / f"rank{rank}.error").write_text(message + "\n")
        except OSError:
            pass


def calibrate(comm, sizes_bytes, repeats: int, beat=None) -> dict:
    """Median time of Iallreduce+Wait per size (the slowest rank's), and the alpha-beta fit."""
    from mpi4py import MPI
    from .costs import fit_alpha_beta
    from .exchange import oversubscribed, wait
    polite = oversubscribed(comm)
    medians = []
    for nbytes in sizes_bytes:
        buf = np.ones(max(1, nbytes // 4), dtype=np.float32)
        wait(comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM), polite)   # warm-up (connections, buffers)
        samples = []
        for _ in range(repeats):
            comm.Barrier()
            start = time.perf_counter()
            wait(comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM), polite)
            samples.append(time.perf_counter() - start)
            if beat:
                beat(-1, f"an all-reduce of {nbytes} bytes (calibration)")
        medians.append(float(np.median(samples)))
    times = np.array(medians)
    comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)   # identical on every rank
    sizes = [max(1, n // 4) * 4 for n in sizes_bytes]
    out = {"sizes_bytes": sizes, "times_s": times.tolist()}
    if comm.size > 1:
        out.update(fit_alpha_beta(sizes, times, comm.size))
    return out


def make_program(spec, rank, ranks):
    from .programs import BufferProgram, NetProgram
    return BufferProgram(spec, rank, ranks) if spec.get("program") == "buffers" else NetProgram(spec, rank, ranks)


def layer_times(rec, L, first_step=0):
    """Median per-layer forward, backward and update seconds over the recorded steps."""
    per = {k: [[] for _ in range(L)] for k in ("forward", "backward", "update")}
    for kind, step, ident, a, b in rec.events:
        if kind in per and step >= first_step:
            per[kind][ident].append(b - a)
    return {k: [float(np.median(v)) if v else 0.0 for v in lists] for k, lists in per.items()}


def reduced_once(plan, completions) -> dict:
    """Per step: does the set of completed all-reduces cover every gradient element exactly once?"""
    by_step: dict = {}
    for step, mid, start, stop in completions:
        by_step.setdefault(step, []).append((start, stop))
    ok = {}
    for step, spans in by_step.items():
        spans.sort()
        pos, good = 0, True
        for start, stop in spans:
            good &= start == pos
            pos = stop
        ok[step] = good and pos == plan.total_elements
    return ok


def run_spec(comm, spec: dict, outdir: Path | None = None) -> dict | None:
    """Run one spec on `comm`; rank 0 returns the gathered result, the others None."""

    rank, ranks = comm.rank, comm.size
    if spec.get("ranks") not in (None, ranks):
        raise RuntimeError(f"the job has {ranks} ranks but the case asks for ranks = {spec['ranks']}")
    dog = Watchdog(rank, spec.get("timeout_s", 60.0), outdir)
    try:
        if spec.get("mode") == "calibrate":
            cal = calibrate(comm, spec["sizes_bytes"], spec.get("repeats", 5), dog.beat)
            dog.stop()
            return {"ranks": ranks, "calibration": cal} if rank == 0 else None
        return _train(comm, spec, dog, outdir)
    finally:
        dog.stop()


def _train(comm, spec, dog, outdir):
    from mpi4py import MPI
    from .costs import LinkCost
    from .exchange import run_plan, step_metrics
    from .schedules import make_plan
    from .simulator import timeline_event
    from ..stats import control_probe

    rank, ranks = comm.rank, comm.size
    program = make_program(spec, rank, ranks)
    sizes = program.layer_sizes
    L = len(sizes)
    scale = 1.0 / ranks
    polls = spec.get("polls", 1)
    calibration = None
    link = None
    if spec.get("emulate_link"):
        e = spec["emulate_link"]
        cost = link = LinkCost(e["alpha_s"], e["beta_s_per_byte"], ranks, e.get("algorithm", "ring"))
    elif spec.get("cost"):
        cost = LinkCost(spec["cost"]["alpha_s"], spec["cost"]["beta_s_per_byte"], ranks)
    elif ranks > 1:
        largest = max(spec.get("portion_bytes", 0), max(sizes) * 4, 4096)
        sweep = sorted({4096, 65536, min(largest, 1 << 20), min(sum(sizes) * 4, 8 << 20)})
        calibration = calibrate(comm, sweep, spec.get("calibrate_repeats", 5), dog.beat)
        cost = LinkCost(calibration["alpha_s"], calibration["beta_s_per_byte"], ranks)
    else:
        cost = LinkCost(0.0, 0.0, 1)

    # Probe: a few plain steps to measure each layer; every rank plans from the slowest rank's times.
    probe = make_plan("sequential", sizes)
    probe_steps = spec.get("probe_steps", 2)
    rec, _ = run_plan(comm, program, probe, probe_steps, scale, polls, dog.beat)
    times = layer_times(rec, L)
    flat = np.array(times["forward"] + times["backward"] + times["update"], dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.MAX)
    estimates = {"forward": flat[:L].tolist(), "backward": flat[L:2 * L].tolist(), "update": flat[2 * L:].tolist()}

    plan = make_plan(spec["schedule"], sizes, bucket_bytes=spec.get("bucket_bytes", 25 << 20),
                     portion_bytes=spec.get("portion_bytes", 64 << 10), bwd_s=estimates["backward"],
                     cost=cost.occupancy_s)
    program.step_offset = probe_steps
    # steps per sample: as many as last min_time by the warm probe steps (the first is cold);
    # the slowest rank's figure, so that every rank runs the same number of steps
    warm = layer_times(rec, L, first_step=1 if probe_steps > 1 else 0)
    probe_step_s = np.array([sum(warm["forward"]) + sum(warm["backward"]) + sum(warm["update"])])
    comm.Allreduce(MPI.IN_PLACE, probe_step_s, op=MPI.MAX)
    group = max(1, math.ceil(spec.get("min_time", 0.0) / probe_step_s[0])) if probe_step_s[0] > 0 else 1
    # Before the first sample and after each sample's `group` steps every rank times the
    # control probe; a sample's control is the slowest rank's probe, the slower of the two
    # around it (as the runner takes them). The step window that holds a pause is measured but
    # is no sample's (stride group + 1); the first pause falls in the last warm-up window.
    first = 1 + spec.get("warmup", 1)
    stride = group + 1
    steps = first + spec.get("repeats", 3) * stride
    probes = []

    def pause(step):
        if step >= first - 2 and (step - first + 2) % stride == 0:
            probe = np.array([control_probe()])
            comm.Allreduce(MPI.IN_PLACE, probe, op=MPI.MAX)
            probes.append(float(probe[0]))

    fault = spec.get("fault")
    rec, boundaries = run_plan(comm, program, plan, steps, scale, polls, dog.beat, fault,
                               spec.get("progress_us", 0) * 1e-6, link, pause)
    dog.beat(steps, "training done")

    metrics = step_metrics(rec, boundaries, first)
    bracketed = len(probes) == spec.get("repeats", 3) + 1    # no pause before step 0 (warmup 0)
    controls = [max(a, b) for a, b in zip(probes, probes[1:])] if bracketed else probes
    measured_times = layer_times(rec, L, first)
    weights = program.weights()
    keep = spec.get("timeline_steps", 2)
    timeline = [timeline_event(kind, step, ident, a, b, plan, rank)
                for kind, step, ident, a, b in rec.events if step >= steps - keep]
    mine = {
        "rank": rank, "pid": os.getpid(), "host": socket.gethostname(),
        "weights_sha256": hashlib.sha256(weights.tobytes()).hexdigest(),
        "steps": metrics, "layer_times": measured_times,
        "reduced_once": all(reduced_once(plan, rec.completions).values()),
        "reductions": len(rec.completions), "issues": rec.issues, "timeline": timeline,
    }
    gathered = comm.gather(mine, root=0)
    if rank != 0:
        return None
    references = {}
    if spec.get("reference", True) and spec.get("program") != "buffers":
        # Here, not in the launching process: the same BLAS thread count as the ranks', so
        # the same bits (OpenBLAS's sums depend on its thread count). It beats like training
        # does: a long reference must not look like a hung rank.
        from .programs import full_batch_weights, reference_weights
        references = {"reference": reference_weights(spec, ranks, probe_steps + steps, dog.beat),
                      "full_batch": full_batch_weights(spec, probe_steps + steps, dog.beat)}
    return {**references, "ranks": ranks, "progress_us": spec.get("progress_us", 0),
            "emulated_link": link is not None, "schedule": plan.schedule, "plan": plan.to_dict(),
            "layer_sizes": sizes, "steps_trained": probe_steps + steps, "measured_steps": spec.get("repeats", 3) * group,
            "steps_per_sample": group, "sample_stride": stride, "controls_s": controls,
            "calibration": calibration, "cost": cost.to_dict(), "estimates": estimates,
            "per_rank": gathered, "weights": weights}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--suite":
        sys.stderr.write("the suite loop under your own mpiexec is now: "
                         "mpiexec -n R python -m sysbench run --mpi SUITE [--filter TEXT] [-o FILE]\n")
        return 2
    if len(argv) != 2:
        sys.stderr.write("usage: python -m sysbench.distributed.worker SPEC.json OUTDIR\n"
                         "   (a suite under your own mpiexec: python -m sysbench run --mpi SUITE)\n")
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    outdir = Path(argv[1])
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    (outdir / f"rank{comm.rank}.pid").write_text(f"{os.getpid()} {socket.gethostname()}\n")
    try:
        result = run_spec(comm, spec, outdir)
    except Exception as exc:  # one line for the launcher, then end the whole job
        write_error(outdir, comm.rank, f"rank {comm.rank}: {type(exc).__name__}: {exc}")
        sys.stderr.write(f"sysbench worker rank {comm.rank}: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        comm.Abort(3)
        return 3
    if result is not None:
        for name in ("weights", "reference", "full_batch"):
            array = result.pop(name, None)
            if array is not None:
                np.save(outdir / f"{name}.npy", array)
        tmp = outdir / "result.json.tmp"
        tmp.write_text(json.dumps(result))
        tmp.replace(outdir / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
