"""Run a Plan over real MPI ranks: compute layer by layer, exchange gradients with
non-blocking MPI Iallreduce, progress them between layer computations.

MPICH progresses a non-blocking collective only inside MPI calls unless its asynchronous
progress thread is on (MPIR_CVAR_ASYNC_PROGRESS=1). So after every layer computation the
executor tests every outstanding request (`polls` rounds of MPI_Test), which is what moves
the messages along; with the progress thread the tests only observe completion.

A program is any object with:
    layer_sizes                 gradient elements per layer (float32)
    start_step(step)            load the step's batch
    forward(l)                  forward of layer l
    backward(l, grad)           backward of layer l; writes its weight gradient into `grad`
                                (a float32 view of the flat buffer, layer l's slice)
    update(l, grad, scale)      SGD on layer l with the reduced (summed) gradient times scale
"""
from __future__ import annotations

import time

import numpy as np

from .schedules import Plan


def oversubscribed(comm) -> bool:
    """More ranks on this host than cores: a rank spinning in MPI_Wait steals its neighbour's core."""
    import os
    from mpi4py import MPI
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.size > (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    finally:
        local.Free()


def wait(request, polite: bool):
    """MPI_Wait, or, when the host is oversubscribed, MPI_Test in a loop that yields the core
    between tests (MPICH's Wait busy-polls)."""
    import os
    if not polite:
        request.Wait()
        return
    while not request.Test():
        os.sched_yield()


class Recorder:
    """Per-rank events (type, step, id, start, end) on a clock shared after a barrier."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.events: list = []
        self.issues: list = []       # (step, message id, after backward of layer)
        self.completions: list = []  # (step, message id, start, stop)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, kind, step, ident, start, end):
        self.events.append((kind, step, ident, start, end))


def run_plan(comm, program, plan: Plan, steps: int, scale: float, polls: int = 1,
             beat=None, fault=None, progress_interval_s: float = 0.0, link=None,
             after_step=None) -> tuple[Recorder, list]:
    """Train `steps` steps under `plan`; returns the recorder and the end of each step's backward.

    `beat(step, phase)` is called as work completes (the watchdog's heartbeat); `fault` is a
    test hook {"rank", "step", "mode": "die" | "hang"}. `link` (a costs.LinkCost) emulates a
    slower network than the one MPI runs on: a message counts as reduced only when MPI has
    reduced it and the emulated link has carried it (one message at a time in issue order,
    occupied for occupancy_s, then latency_s in flight), as a throttled NIC would.
    `after_step(step)` runs after each step's backward (its time falls in the next step's window).
    """

    L = plan.layers
    grads = np.zeros(plan.total_elements, dtype=np.float32)
    layer_grad = [grads[plan.offsets[l]:plan.offsets[l + 1]] for l in range(L)]
    views = [grads[m.start:m.stop] for m in plan.messages]
    requests: dict = {}            # message id -> (request, issue time, step)
    beat = beat or (lambda step, phase, waiting=False: None)
    poker = ProgressThread(comm, progress_interval_s) if progress_interval_s > 0 else None
    polite = oversubscribed(comm)
    try:
        return _run(comm, program, plan, steps, scale, polls, beat, fault, grads, layer_grad, views, requests,
                    polite, link, after_step)
    finally:
        if poker:
            poker.stop()


class ProgressThread:
    """Drives MPI's progress engine every `interval_s` while the main thread computes.

    numpy releases the GIL inside its kernels, so this thread's MPI_Iprobe (on a private
    duplicate communicator that never carries a message) runs alongside them and moves the
    outstanding Iallreduces along. Unlike MPICH's own asynchronous progress thread
    (MPIR_CVAR_ASYNC_PROGRESS=1), which spins on a core, it sleeps between pokes. Needs
    MPI_THREAD_MULTIPLE (mpi4py's default request)."""

    def __init__(self, comm, interval_s: float):
        import threading
        from mpi4py import MPI
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            raise RuntimeError("a progress thread needs MPI_THREAD_MULTIPLE")
        self.comm = comm.Dup()
        self.interval_s = interval_s
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._poke, daemon=True)
        self.thread.start()

    def _poke(self):
        from mpi4py import MPI
        while not self.halt.wait(self.interval_s):
            self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG)

    def stop(self):
        self.halt.set()
        self.thread.join()
        self.comm.Free()


def _run(comm, program, plan, steps, scale, polls, beat, fault, grads, layer_grad, views, requests, polite, link,
         after_step):
    from mpi4py import MPI
    L = plan.layers
    comm.Barrier()
    rec = Recorder(time.perf_counter())
    boundaries = []
    ready = {}                 # emulated link: when each message has crossed it
    link_free = 0.0

    def complete(mid, when):
        _, issued, step = requests.pop(mid)
        m = plan.messages[mid]
        rec.add("allreduce", step, mid, issued, when)
        rec.completions.append((step, mid, m.start, m.stop))

    def progress():
        # Drive MPI's progress engine and note what has finished.
        for _ in range(polls):
            for mid in list(requests):
                if requests[mid][0].Test() and rec.now() >= ready.get(mid, 0.0):
                    complete(mid, rec.now())

    for step in range(steps + 1):
        if step < steps:
            program.start_step(step)
            beat(step, "forward")
        for l in range(L):
            if step > 0:
                pending = [mid for mid in plan.wait_before_fwd[l] if mid in requests]
                if pending:
                    start = rec.now()
                    beat(step, f"the wait for layer {l}'s all-reduce", waiting=True)
                    for mid in pending:
                        wait(requests[mid][0], polite)
                        idle = ready.get(mid, 0.0) - rec.now()
                        if idle > 0:
                            time.sleep(idle)       # the emulated link is still carrying it
                        complete(mid, rec.now())
                    rec.add("wait", step, l, start, rec.now())
                    beat(step, f"waited for layer {l}")
                for u in plan.update_before_fwd[l]:
                    start = rec.now()
                    program.update(u, layer_grad[u], scale)
                    rec.add("update", step, u, start, rec.now())
            if step == steps:
                continue
            start = rec.now()
            program.forward(l)
            rec.add("forward", step, l, start, rec.now())
            beat(step, f"forward of layer {l}")
            progress()
        if step == steps:
            boundaries.append(rec.now())
            break
        for l in reversed(range(L)):
            if fault and fault.get("rank") == comm.rank and fault.get("step") == step:
                _inject(fault)
            start = rec.now()
            program.backward(l, layer_grad[l])
            rec.add("backward", step, l, start, rec.now())
            beat(step, f"backward of layer {l}")
            for mid in plan.issue_after_bwd[l]:
                now = rec.now()
                requests[mid] = (comm.Iallreduce(MPI.IN_PLACE, views[mid], op=MPI.SUM), now, step)
                if link is not None:
                    nbytes = plan.messages[mid].nbytes
                    link_free = max(now, link_free) + link.occupancy_s(nbytes)
                    ready[mid] = link_free + link.latency_s(nbytes)
                rec.issues.append((step, mid, l))
            progress()
        boundaries.append(rec.now())
        if after_step is not None:
            after_step(step)
    return rec, boundaries


def _inject(fault):
    import os
    import signal
    if fault.get("mode") == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.get("mode") == "hang":
        while True:
            time.sleep(3600)


def step_metrics(rec: Recorder, boundaries: list, first: int = 1) -> list:
    """Per steady step k (k >= first): the window from the end of backward k-1 to that of k."""
    from .simulator import clip_intervals, overlap_fraction, union_length
    out = []
    compute_types = ("forward", "backward", "update")
    comm = [(a, b) for kind, _, _, a, b in rec.events if kind == "allreduce"]
    for k in range(max(first, 1), len(boundaries) - 1):
        lo, hi = boundaries[k - 1], boundaries[k]
        compute = sum(b - a for kind, _, _, a, b in rec.events
                      if kind in compute_types and a >= lo and b <= hi)
        step_s = hi - lo
        exposed = max(0.0, step_s - compute)
        inflight = union_length(clip_intervals(comm, lo, hi))
        out.append({"step_s": step_s, "compute_s": compute, "exposed_comm_s": exposed,
                    "comm_inflight_s": inflight, "overlap_fraction": overlap_fraction(exposed, inflight)})
    return out


def aggregate_steps(per_rank_steps: list) -> list:
    """Per step, the job's figures from every rank's: the step takes as long as its slowest
    rank (step_s max), the critical path computes as long as the slowest rank computes
    (compute_s max), and what remains is the communication the job exposed. A rank that waits
    for a slower one (load, skew) does not count that wait as communication."""
    from .simulator import overlap_fraction
    out = []
    for k in range(min(len(s) for s in per_rank_steps)):
        step = max(s[k]["step_s"] for s in per_rank_steps)
        compute = max(s[k]["compute_s"] for s in per_rank_steps)
        inflight = max(s[k]["comm_inflight_s"] for s in per_rank_steps)
        exposed = max(0.0, step - compute)
        out.append({"step_s": step, "compute_s": compute, "exposed_comm_s": exposed,
                    "comm_inflight_s": inflight, "overlap_fraction": overlap_fraction(exposed, inflight)})
    return out
