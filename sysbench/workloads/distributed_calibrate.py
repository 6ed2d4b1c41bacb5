"""distributed_calibrate: a measured all-reduce sweep over real MPI ranks, fitted to alpha-beta.

Times Iallreduce + Wait of float32 buffers of each size in `sizes` (median of `repeats` per
size, the slowest rank's), then fits t(n) = a + b n by least squares (relative error) and
reads alpha and beta off the ring model t = 2 (p-1) alpha + 2 (p-1)/p n beta (or the tree
model). `output` writes the fit as JSON, which a train_distributed case's `calibration` key
reads to pace split_priority and to drive the simulator.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..distributed.costs import ALGORITHMS, allreduce_time, fit_alpha_beta
from ..output import OutputError, check_writable, write_text
from ..units import parse_size
from .base import CaseError, Key, Run, SelfTimed, Timed, Validation, Workload

DEFAULT_SIZES = ["4KiB", "16KiB", "64KiB", "256KiB", "1MiB", "4MiB", "16MiB"]


class DistributedCalibrate(Workload):
    kind = "distributed_calibrate"
    description = "measured MPI all-reduce sweep over real ranks; least-squares alpha (latency) and beta (1/bandwidth)"
    needs_array = False
    keys = {
        "ranks": Key("int", default=2, minimum=2, help="MPI ranks (self-launched, or the mpiexec job it runs in)"),
        "sizes": Key("list", default=DEFAULT_SIZES, help="message sizes: bytes or strings like '64KiB'"),
        "algorithm": Key("str", default="ring", choices=ALGORITHMS, help="the model alpha and beta belong to"),
        "timeout_s": Key("float", default=60.0, minimum=0.1, help="a rank without progress this long ends the job"),
        "output": Key("path", default=None,
                      help="write the fit here as JSON (for train_distributed's calibration); "
                           "relative to the suite file"),
    }

    def check(self, params, array):
        sizes = [parse_size(s) for s in params["sizes"]]
        if any(s is None or s < 4 for s in sizes):
            return [("sizes", "every size must be a byte count from 4 bytes to 8 EiB ('64KiB' or an integer), "
                              f"got {params['sizes']!r}")]
        if len(set(sizes)) < 2:
            return [("sizes", "need at least two distinct sizes to fit alpha and beta")]
        if params["output"] and not Path(params["output"]).parent.is_dir():
            return [("output", f"{params['output']}: its directory does not exist")]
        if params["output"]:
            try:
                check_writable(params["output"], "calibration")
            except OutputError as exc:
                return [("output", str(exc))]
        return []

    def model(self, params, array, plan):
        return {"sizes_bytes": [parse_size(s) // 4 * 4 for s in params.sizes], "workers": params.ranks}

    def timed(self, run: Run) -> Timed:
        return Timed(lambda: self.sweep(run.params, run.repeats, run.threads), self_timed=True)

    def sweep(self, p, repeats, threads) -> SelfTimed:
        """One MPI job timing every size; the sample is the job's wall time."""
        from .train_distributed import execute
        spec = {"mode": "calibrate", "sizes_bytes": self.model(p, None, None)["sizes_bytes"],
                "repeats": max(3, repeats)}
        start = time.perf_counter()
        result = execute(spec, p.ranks, p.timeout_s, threads)
        elapsed = time.perf_counter() - start
        if result is None:
            return SelfTimed([elapsed], None)
        cal = result["calibration"]
        cal.update(fit_alpha_beta(cal["sizes_bytes"], cal["times_s"], p.ranks, p.algorithm))
        if p.output:
            try:
                write_text(p.output, json.dumps(cal, indent=1, allow_nan=False) + "\n")
            except (OSError, ValueError) as exc:
                why = getattr(exc, "strerror", None) or exc
                raise CaseError("output", f"{p.output}: cannot write: {why}") from None
        return SelfTimed([elapsed], cal, {"calibration": cal})

    def validate(self, run: Run, output) -> Validation:
        if output is None:
            return Validation("validated on rank 0", 0.0, True, "checked")
        # The fit must reproduce the sweep it came from (the model is two straight lines' worth
        # of freedom; a poor fit means the sweep was too noisy to trust).
        worst = 0.0
        for n, t in zip(output["sizes_bytes"], output["times_s"]):
            model = allreduce_time(n, output["workers"], output["alpha_s"], output["beta_s_per_byte"],
                                   output["algorithm"])
            worst = max(worst, abs(model - t) / t)
        ok = output["beta_s_per_byte"] > 0 and worst < 1.0
        return Validation("alpha-beta fit vs sweep", worst, ok, "checked", error_kind="max_rel",
                          detail="" if ok else "the sweep is too noisy for a fit")


WORKLOAD = DistributedCalibrate()
