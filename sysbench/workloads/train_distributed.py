"""train_distributed: data-parallel training with gradient exchange overlapped with backward.

mode = "mpi": real ranks. The case launches `mpiexec -n ranks python -m
sysbench.distributed.worker` itself (or, when sysbench already runs under mpiexec, uses the
job it is in), trains the network on `batch` samples per step split evenly over the ranks,
and exchanges gradients with non-blocking Iallreduce under the case's schedule (see
sysbench.distributed.schedules). Every rank must end with bit-identical weights, equal to
single-process training on the concatenated batch: bit for bit with 2 ranks (a + b is the
same in any order); with more ranks the MPI library's summation order differs from rank
order, so the weights agree within steps * (ranks - 1) * 2^-23 * max(1, max |w|).

mode = "sim": the discrete-event simulator runs the same schedule code for `workers` workers
over links of `link_gbps` and `link_latency_us` (ring or tree all-reduce), compute from FLOPs
at `device_tflops`. Nothing is trained; the plan is checked and the figures are the model's.

Metrics: step time, compute time, exposed (non-overlapped) communication, the time any
all-reduce was in flight, overlap fraction = 1 - exposed / in-flight, gradient bytes and bytes
each rank sends (ring model), and per-rank timelines of compute and communication events.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from ..distributed.costs import ALGORITHMS, LinkCost
from ..distributed.exchange import aggregate_steps
from ..distributed.schedules import SCHEDULES, check_plan, make_plan
from .base import CaseError, Key, Run, SelfTimed, Timed, Validation, Workload

MODELS = ("mlp", "cnn", "resnet50")
# The network keys each model reads; setting another one would be silently ignored.
MODEL_KEYS = {"mlp": ("layers", "width"), "cnn": ("layers", "image", "in_channels", "channels", "classes"),
              "resnet50": ("image", "classes")}
UNIT_ROUNDOFF = 2.0 ** -23


def network_keys(p: dict) -> dict:
    keys = {"model": p["model"], "layers": p["layers"], "width": p["width"], "image": p["image"],
            "in_channels": p["in_channels"], "classes": p["classes"]}
    if p["channels"]:
        keys["channels"] = p["channels"]
    return {k: v for k, v in keys.items() if v is not None}


def _mpi_only(p: dict) -> str | None:
    return None if p["mode"] == "mpi" else "only real MPI runs read it (mode = \"mpi\")"


def _sim_only(p: dict) -> str | None:
    return None if p["mode"] == "sim" else "only the simulator reads it (mode = \"sim\")"


def _read_by_model(key: str):
    """Key.applies for a network key: only some models read it."""
    def applies(p: dict) -> str | None:
        model = p["model"]
        if key in MODEL_KEYS[model]:
            return None
        return f"model = {model!r} reads only {', '.join(MODEL_KEYS[model])}"
    return applies


def _link_keys(p: dict) -> str | None:
    if p["mode"] == "sim" or p["emulate_link"]:
        return None
    return "a real MPI run reads the link only with emulate_link = true"


class TrainDistributed(Workload):
    kind = "train_distributed"
    description = ("data-parallel SGD over MPI ranks: gradient all-reduce overlapped with backward; "
                   "a simulator to 4096 workers")
    needs_array = False
    keys = {
        "mode": Key("str", default="mpi", choices=("mpi", "sim"), help="mpi: real ranks; sim: the simulator"),
        "model": Key("str", default="mlp", choices=MODELS, help="mlp | cnn (training engine) | resnet50 (sim only)"),
        "layers": Key("int", default=None, minimum=1, help="mlp/cnn depth", applies=_read_by_model("layers")),
        "width": Key("int", default=None, minimum=1, help="mlp width", applies=_read_by_model("width")),
        "image": Key("int", default=None, minimum=1, help="cnn image size", applies=_read_by_model("image")),
        "in_channels": Key("int", default=None, minimum=1, help="cnn input channels",
                           applies=_read_by_model("in_channels")),
        "channels": Key("list", default=None, help="cnn channels per convolution", applies=_read_by_model("channels")),
        "classes": Key("int", default=None, minimum=2, help="cnn classes", applies=_read_by_model("classes")),
        "batch": Key("int", default=64, minimum=1, help="global batch per step (split over ranks/workers)"),
        "local_batch": Key("int", default=None, minimum=1,
                           help="batch per rank/worker; when set, the global batch is local_batch x ranks/workers"),
        "lr": Key("float", default=0.01, help="SGD learning rate"),
        "ranks": Key("int", default=2, minimum=1, help="MPI ranks (mode mpi)", applies=_mpi_only),
        "workers": Key("int", default=8, minimum=1, help="simulated workers (mode sim)", applies=_sim_only),
        "schedule": Key("str", default="split_priority", choices=SCHEDULES, help="gradient exchange schedule"),
        "bucket_mib": Key("float", default=25.0, minimum=1e-3, help="bucketed: bucket size in MiB"),
        "portion_kib": Key("float", default=256.0, minimum=1e-3, help="split_priority: portion size in KiB"),
        "timeout_s": Key("float", default=60.0, minimum=0.1, help="a rank without progress this long ends the job"),
        "progress_us": Key("int", default=0, minimum=0, applies=_mpi_only,
                           help="mpi: a helper thread pokes MPI progress every N us (0: only between layers)"),
        "link_gbps": Key("float", default=10.0, minimum=1e-6, applies=_link_keys,
                         help="sim (and mpi with emulate_link): link bandwidth, Gb/s"),
        "link_latency_us": Key("float", default=5.0, minimum=0, applies=_link_keys,
                               help="sim (and mpi with emulate_link): per-message latency, us"),
        "emulate_link": Key("bool", default=False, applies=_mpi_only,
                            help="mpi: a message is reduced only once a link of "
                                 "link_gbps/link_latency_us has carried it"),
        "algorithm": Key("str", default="ring", choices=ALGORITHMS, help="all-reduce cost model"),
        "device_tflops": Key("float", default=20.0, minimum=1e-6, applies=_sim_only,
                             help="sim: sustained compute throughput"),
        "calibration": Key("path", default=None, help="JSON written by distributed_calibrate: alpha/beta to use"),
    }

    # ------------------------------------------------------------------ checks and model
    def normalize(self, params, array):
        """local_batch sets the global batch: local_batch x ranks (mpi) or workers (sim)."""
        if not params.local_batch:
            return params
        workers = params.workers if params.mode == "sim" else params.ranks
        return params.replace(batch=params.local_batch * workers)

    def check(self, params, array):
        problems = []
        mode, model = params["mode"], params["model"]
        if not params["lr"] > 0:
            problems.append(("lr", f"must be positive, got {params['lr']!r}"))
        if mode == "mpi":
            if model == "resnet50":
                problems.append(("model", "resnet50 is simulator-only (mode = \"sim\"); use mlp or cnn"))
            ranks, batch = params["ranks"], params["batch"]
            if batch % ranks:
                problems.append(("ranks", f"ranks = {ranks} cannot split batch = {batch} evenly "
                                          f"(batch must be a multiple of ranks)"))
            if model != "resnet50":
                try:
                    from ..training import network
                    network.build(dict(network_keys(params), batch=max(1, batch // ranks)), init=False)
                except ValueError as exc:
                    problems.append(("model", f"cannot build the network: {exc}"))
        elif params["batch"] % params["workers"]:
            problems.append(("workers", f"workers = {params['workers']} cannot split batch = {params['batch']} evenly"))
        return problems

    def sizes_and_flops(self, params):
        """(gradient elements per schedule layer, forward FLOPs per layer for the whole local batch)."""
        p = params
        if p["model"] == "resnet50":
            from ..distributed.models import resnet50
            sizes, per_sample = resnet50(p["image"] or 224, p["classes"] or 1000)
            local = p["batch"] // (p["workers"] if p["mode"] == "sim" else p["ranks"])
            return sizes, [f * local for f in per_sample]
        from ..distributed.programs import NetProgram
        ranks = p["workers"] if p["mode"] == "sim" else p["ranks"]
        prog = NetProgram(self.spec(p), 0, ranks, init=False)
        fwd, _ = prog.flops()
        return prog.layer_sizes, fwd

    def link_cost(self, params, workers):
        if params["calibration"]:
            data = load_calibration(params["calibration"])
            return LinkCost(data["alpha_s"], data["beta_s_per_byte"], workers, params["algorithm"])
        return LinkCost.from_link(params["link_gbps"], params["link_latency_us"], workers, params["algorithm"])

    def plan_messages(self, params, sizes, bwd_s, cost):
        return make_plan(params["schedule"], sizes, bucket_bytes=int(params["bucket_mib"] * 2**20),
                         portion_bytes=int(params["portion_kib"] * 2**10), bwd_s=bwd_s, cost=cost.occupancy_s)

    def model(self, params, array, plan):
        from ..distributed.simulator import simulate
        workers = params["workers"] if params["mode"] == "sim" else params["ranks"]
        sizes, fwd_flops = self.sizes_and_flops(params)
        grad_bytes = 4 * sum(sizes)
        if params["algorithm"] == "ring":
            bytes_sent = int(round(2 * (workers - 1) / workers * grad_bytes))
        else:
            bytes_sent = int(grad_bytes * (1 if workers > 1 else 0))
        out = {"workers": workers, "parameters": sum(sizes), "layers": len(sizes), "gradient_bytes": grad_bytes,
               "bytes_sent_per_rank": bytes_sent,
               "flops_per_step": 3 * sum(fwd_flops)}
        if params["mode"] != "sim":
            return out
        throughput = params["device_tflops"] * 1e12
        fwd = [f / throughput for f in fwd_flops]
        bwd = [2 * f / throughput for f in fwd_flops]
        cost = self.link_cost(params, workers)
        plan = self.plan_messages(params, sizes, bwd, cost)
        sim = simulate(plan, fwd, bwd, cost.occupancy_s, timeline=False, latency=cost.latency_s)
        out.update(messages=len(plan.messages), **sim.to_dict())
        return out

    # ------------------------------------------------------------------ real runs
    def spec(self, p) -> dict:
        return {"program": "net", "net": network_keys(p), "batch": p["batch"], "lr": p["lr"],
                "schedule": p["schedule"], "bucket_bytes": int(p["bucket_mib"] * 2**20),
                "portion_bytes": int(p["portion_kib"] * 2**10), "progress_us": p["progress_us"],
                "emulate_link": {"alpha_s": p["link_latency_us"] * 1e-6,
                                 "beta_s_per_byte": 8.0 / (p["link_gbps"] * 1e9),
                                 "algorithm": p["algorithm"]} if p["emulate_link"] else None}

    def inputs(self, params, array, plan, rng):
        if params.mode != "sim":
            return {"calibration": load_calibration(params.calibration)} if params.calibration else {}
        workers = params.workers
        sizes, fwd_flops = self.sizes_and_flops(params)
        throughput = params.device_tflops * 1e12
        return {"sizes": sizes, "fwd": [f / throughput for f in fwd_flops],
                "bwd": [2 * f / throughput for f in fwd_flops], "cost": self.link_cost(params, workers)}

    def timed(self, run: Run) -> Timed:
        p, inputs = run.params, run.inputs
        if p.mode == "sim":
            from ..distributed.simulator import simulate

            def simulated():
                plan = self.plan_messages(p, inputs["sizes"], inputs["bwd"], inputs["cost"])
                return plan, simulate(plan, inputs["fwd"], inputs["bwd"], inputs["cost"].occupancy_s,
                                      latency=inputs["cost"].latency_s)
            return Timed(simulated)
        spec = dict(self.spec(p), warmup=run.warmup, repeats=run.repeats, seed=0, min_time=run.min_time,
                    reference=run.validates)  # the single-process references: only for validation
        if "calibration" in inputs:
            spec["cost"] = {k: inputs["calibration"][k] for k in ("alpha_s", "beta_s_per_byte")}
        return Timed(lambda: self.job(spec, p.ranks, p.timeout_s, run.threads), self_timed=True)

    def job(self, spec, ranks, timeout_s, threads) -> SelfTimed:
        """One MPI job: its steps are the samples (the slowest rank's step time)."""
        result = execute(spec, ranks, timeout_s, threads)
        if result is None:  # a rank other than 0 of a job launched by the user
            return SelfTimed([0.0], None)
        per_rank = result["per_rank"]
        windows = aggregate_steps([r["steps"] for r in per_rank])
        # a sample is the median of steps_per_sample consecutive steps (as many as last
        # min_time): on a shared host a step's time has a long tail (a rank preempted for a
        # millisecond or two), which moved the mean of a sample's steps 2-6% and the median
        # 0.6-2%; the window after each sample holds the ranks' control probe and is left out
        group = result.get("steps_per_sample", 1)
        stride = result.get("sample_stride", group)
        samples = [statistics.median(s["step_s"] for s in windows[i:i + group])
                   for i in range(0, len(windows) - group + 1, stride)]
        steps = [s for i, s in enumerate(windows) if i % stride < group]
        controls = result.get("controls_s") or None
        med = lambda key: statistics.median(s[key] for s in steps)
        measured = {
            "step_s": statistics.median(samples), "steps_per_sample": group, "compute_s": med("compute_s"),
            "exposed_comm_s": med("exposed_comm_s"), "comm_inflight_s": med("comm_inflight_s"),
            "overlap_fraction": med("overlap_fraction"),
            "bytes_per_step": 4 * sum(result["layer_sizes"]),
            "allreduces_per_step": result["plan"]["messages"],
            "cost_model": result["cost"], "calibration": result["calibration"],
            "prediction": self.predict(result),
            "prediction_async": self.predict(result, "async"),
            "timeline": [e for r in per_rank for e in r["timeline"]],
            "issue_order": per_rank[0]["issues"][-result["plan"]["messages"]:],
        }
        return SelfTimed(samples, result, measured,
                         controls[:len(samples)] if controls and len(controls) >= len(samples) else None)

    def observe(self, run: Run, output) -> dict:
        if run.params.mode != "sim":
            return {}
        _, sim = output
        last = [e for e in sim.timeline if e["step"] >= 1]
        return {"simulated": sim.to_dict(), "timeline": last if len(last) <= 2000 else last[:2000]}

    def predict(self, result, progress: str | None = None) -> dict:
        """The simulator on this run's own plan, measured layer times and fitted alpha/beta.

        progress: "polled" (MPI progress only in MPI calls, on cores busy computing: the
        default unless the run had a progress thread) or "async" (an ideal NIC)."""
        if progress is None:
            progress = "async" if result.get("progress_us") or result.get("emulated_link") else "polled"
        from ..distributed.simulator import simulate
        times = {k: [max(r["layer_times"][k][l] for r in result["per_rank"]) for l in range(len(result["layer_sizes"]))]
                 for k in ("forward", "backward", "update")}
        cost = LinkCost(result["cost"]["alpha_s"], result["cost"]["beta_s_per_byte"], result["ranks"],
                        result["cost"].get("algorithm", "ring"))
        est = result["estimates"]["backward"]
        p = result["plan"]
        plan = make_plan(result["schedule"], result["layer_sizes"], bucket_bytes=p.get("bucket_bytes", 25 << 20),
                         portion_bytes=p.get("portion_bytes", 1 << 18), bwd_s=est, cost=cost.occupancy_s)
        sim = simulate(plan, times["forward"], times["backward"], cost.occupancy_s, times["update"],
                       latency=cost.latency_s, timeline=False, progress=progress)
        return dict(sim.to_dict(), progress=progress)

    # ------------------------------------------------------------------ validation
    def validate(self, run: Run, output) -> Validation:
        p = run.params
        if p.mode == "sim":
            plan, output = output
            problems = check_plan(plan)
            sane = output.step_s >= output.compute_s - 1e-12 and output.exposed_comm_s <= output.comm_inflight_s + 1e-9
            if not sane:
                problems.append("simulated step shorter than its compute, or more exposed than in-flight communication")
            return Validation("plan check", 0.0, not problems, "checked", detail="; ".join(problems[:3]))
        if output is None:
            return Validation("validated on rank 0", 0.0, True, "checked")
        per_rank = output["per_rank"]
        problems = []
        hashes = {r["weights_sha256"] for r in per_rank}
        if len(hashes) != 1:
            problems.append(f"ranks ended with {len(hashes)} different weight sets")
        if not all(r["reduced_once"] for r in per_rank):
            problems.append("some step did not all-reduce every gradient exactly once")
        w, ref = output["weights"], output["reference"]
        err = float(np.max(np.abs(w.astype(np.float64) - ref))) if w.size else 0.0
        ranks = output["ranks"]
        if ranks <= 2:
            tol, rule = 0.0, "bit-equal"
        else:
            tol = output["steps_trained"] * (ranks - 1) * UNIT_ROUNDOFF * max(1.0, float(np.max(np.abs(ref))))
            rule = f"within steps*(ranks-1)*2^-23*max(1,|w|) = {tol:.3g}"
        if err > tol:
            problems.append(f"weights differ from single-process training by {err:.3g} ({rule})")
        full_err = float(np.max(np.abs(w.astype(np.float64) - output["full_batch"])))
        return Validation(f"single process, {rule}", err, not problems, "bit-exact" if ranks <= 2 else "in bound",
                          detail="; ".join(problems),
                          extra={"ranks_identical": len(hashes) == 1, "tolerance": tol,
                                 "max_abs_err_vs_full_batch_gemm": full_err})

    def summary(self, metrics):
        return {"cycles": None, "utilization": None}

    def plots(self, cases):
        return distributed_plot(cases)


def distributed_plot(cases: list[dict], max_cases: int = 8) -> list:
    """Gantt of compute and gradient exchange per rank, from each case's recorded timeline."""
    from ..plots import Plot, new_figure, short_label

    lanes = {"forward": "compute", "backward": "compute", "update": "compute", "allreduce": "exchange"}
    timelines = []
    for case in cases:
        events = [e for e in (case.get("measured") or {}).get("timeline") or []
                  if isinstance(e, dict) and e.get("type") in lanes]
        if events:
            timelines.append((short_label(case, drop_array=False), events))
    if not timelines:
        return []
    shown = timelines[:max_cases]
    fig, axes = new_figure(10.0, 1.2 + 1.6 * len(shown) + 0.25 * sum(len({e.get("rank", 0) for e in ev})
                                                                    for _, ev in shown), rows=len(shown))
    colors = {"compute": "tab:blue", "exchange": "tab:orange"}
    for ax, (label, events) in zip((row[0] for row in axes), shown):
        ranks = sorted({e.get("rank", 0) for e in events})
        yticks, ylabels = [], []
        for i, rank in enumerate(ranks):
            for j, lane in enumerate(("compute", "exchange")):
                y = i * 2.5 + j
                spans = [(e["start_s"], e["end_s"] - e["start_s"]) for e in events
                         if e.get("rank", 0) == rank and lanes[e["type"]] == lane]
                if spans:
                    ax.broken_barh(spans, (y - 0.4, 0.8), facecolors=colors[lane])
                yticks.append(y)
                ylabels.append(f"rank {rank} {lane}")
        ax.set_yticks(yticks, ylabels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1][0].set_xlabel("time (s)")
    fig.suptitle("train_distributed: compute and gradient exchange per rank")
    note = f" (first {max_cases} of {len(timelines)} cases)" if len(timelines) > max_cases else ""
    return [Plot("distributed", "train_distributed: timeline per rank",
                 "Gantt of compute (blue) and gradient exchange (orange) per rank" + note + ".", fig)]


def load_calibration(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CaseError("calibration", f"{path}: cannot read a calibration JSON: {exc}") from None
    if not all(isinstance(data.get(k), (int, float)) for k in ("alpha_s", "beta_s_per_byte")):
        raise CaseError("calibration", f"{path}: needs numbers alpha_s and beta_s_per_byte "
                                       f"(write it with a distributed_calibrate case's `output`)")
    return data


def execute(spec: dict, ranks: int, timeout_s: float, threads: int):
    """Launch the ranks, or, already under mpiexec, run on COMM_WORLD (rank 0 gets the result)."""
    from ..distributed import launcher
    if launcher.in_mpi_job():
        from mpi4py import MPI
        from ..distributed.worker import run_spec
        comm = MPI.COMM_WORLD
        if comm.size != ranks:
            raise CaseError("ranks", f"the case needs ranks = {ranks} but mpiexec started {comm.size}")
        return run_spec(comm, dict(spec, ranks=ranks, timeout_s=timeout_s))
    # A DistributedError (a rank killed, hung or failing) is this case's failure, not a
    # mistake in the suite: it propagates, and the runner records it and goes on.
    return launcher.launch(spec, ranks, timeout_s, threads)


WORKLOAD = TrainDistributed()
