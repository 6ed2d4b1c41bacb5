"""Discrete-event simulation of data-parallel training steps running a schedule's Plan.

Two resources: the compute stream (forward, backward and update of one layer at a time, in
program order) and the network, which carries one all-reduce at a time in the order the
messages are issued (collectives on one communicator are ordered) and costs each message
`cost(nbytes)` seconds (an alpha-beta model, see costs.py). A forward waits for the messages
its plan awaits; an all-reduce starts when it is issued and the network is free. The network
progresses by itself (an ideal NIC, or MPI with an asynchronous progress thread).

Steps are simulated back to back; the figures are those of the steady-state step, from the
end of one step's backward to the end of the next one's (so a step includes the waits and
updates that precede its forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .schedules import Plan


@dataclass
class SimResult:
    step_s: float
    compute_s: float
    exposed_comm_s: float
    comm_busy_s: float       # time the network carried an all-reduce, per step
    comm_inflight_s: float   # time at least one issued all-reduce was not yet complete
    overlap_fraction: float
    bytes_per_step: int
    timeline: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"step_s": self.step_s, "compute_s": self.compute_s,
                "exposed_comm_s": self.exposed_comm_s, "comm_busy_s": self.comm_busy_s,
                "comm_inflight_s": self.comm_inflight_s, "overlap_fraction": self.overlap_fraction,
                "bytes_per_step": self.bytes_per_step}


def union_length(intervals) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def clip_intervals(intervals, lo, hi):
    return [(max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi]


def overlap_fraction(exposed: float, comm: float) -> float:
    """Share of the communication time hidden behind compute."""
    if comm <= 0:
        return 1.0
    return min(1.0, max(0.0, 1.0 - exposed / comm))


PROGRESS = ("async", "polled")


def simulate(plan: Plan, fwd_s: Sequence[float], bwd_s: Sequence[float],
             cost: Callable[[int], float], update_s: Sequence[float] | None = None,
             steps: int = 3, timeline: bool = True, progress: str = "async",
             latency: Callable[[int], float] | None = None) -> SimResult:
    """Simulate `steps` steps (>= 2) of `plan`; figures of the last full step.

    progress = "async": the network moves data by itself (a NIC, or MPI with a progress
    thread on a spare core). "polled": MPI without a progress thread on cores that are all
    busy computing (shared-memory ranks): an all-reduce is CPU work done only while the rank
    waits for it, so nothing overlaps and its cost lands on the compute stream at the wait.

    latency(nbytes): the part of a message's time that does not occupy the network (then
    cost(nbytes) is only the occupancy): a message completes `latency` after its data has
    moved, while the next message already moves its data. None: cost occupies the network whole.
    """
    if progress not in PROGRESS:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS)}, got {progress!r}")
    L = plan.layers
    if len(fwd_s) != L or len(bwd_s) != L:
        raise ValueError(f"need one forward and one backward time per layer ({L})")
    if steps < 2:
        raise ValueError("steps must be >= 2 (the first step has no exchange before it)")
    update_s = update_s if update_s is not None else [0.0] * L
    msg_cost = [cost(m.nbytes) for m in plan.messages]
    msg_lat = [latency(m.nbytes) if latency else 0.0 for m in plan.messages]
    events: list = []
    t = 0.0
    link_free = 0.0
    done = [0.0] * len(plan.messages)     # completion time of the current step's messages
    boundaries = []                       # end of each step's backward
    comm_intervals = []                   # (issue, completion)
    busy_intervals = []
    queued: list = []                     # polled: issued, not yet worked off (issue order)
    issued_at = [0.0] * len(plan.messages)
    for step in range(steps + 1):         # the last round only awaits the final step's messages
        for l in range(L):
            if step > 0 and progress == "polled":
                need = set(plan.wait_before_fwd[l]) & set(queued)
                start_wait = t
                finish = t
                while need:
                    mid = queued.pop(0)
                    done[mid] = t + msg_cost[mid] + msg_lat[mid]
                    events.append(("allreduce", step - 1, mid, t, done[mid]))
                    t += msg_cost[mid]
                    finish = max(finish, done[mid])
                    comm_intervals.append((issued_at[mid], done[mid]))
                    need.discard(mid)
                t = max(t, finish)
                if t > start_wait:
                    events.append(("wait", step, l, start_wait, t))
            if step > 0:
                waits = [done[m] for m in plan.wait_before_fwd[l]]
                if waits and max(waits) > t:
                    events.append(("wait", step, l, t, max(waits)))
                    t = max(waits)
                for u in plan.update_before_fwd[l]:
                    if update_s[u]:
                        events.append(("update", step, u, t, t + update_s[u]))
                    t += update_s[u]
            if step == steps:
                continue
            events.append(("forward", step, l, t, t + fwd_s[l]))
            t += fwd_s[l]
        if step == steps:
            boundaries.append(t)
            break
        for l in reversed(range(L)):
            events.append(("backward", step, l, t, t + bwd_s[l]))
            t += bwd_s[l]
            for mid in plan.issue_after_bwd[l]:
                if progress == "polled":
                    queued.append(mid)
                    issued_at[mid] = t
                    continue
                start = max(t, link_free)
                link_free = start + msg_cost[mid]
                done[mid] = link_free + msg_lat[mid]
                comm_intervals.append((t, done[mid]))
                busy_intervals.append((start, link_free))
                events.append(("allreduce", step, mid, start, done[mid]))
        boundaries.append(t)
    # Steady state: from the end of backward of step `steps-2` to that of step `steps-1`.
    lo, hi = boundaries[steps - 2], boundaries[steps - 1]
    step_s = hi - lo
    compute_s = sum(fwd_s) + sum(bwd_s) + sum(update_s)
    exposed = max(0.0, step_s - compute_s)
    inflight = union_length(clip_intervals(comm_intervals, lo, hi))
    busy = sum(msg_cost)
    result = SimResult(step_s, compute_s, exposed, busy, inflight, overlap_fraction(exposed, inflight),
                       sum(m.nbytes for m in plan.messages))
    if timeline:
        result.timeline = [timeline_event(kind, step, ident, a, b, plan)
                           for kind, step, ident, a, b in events]
    return result


def timeline_event(kind, step, ident, start, end, plan: Plan, rank: int = 0) -> dict:
    event = {"rank": rank, "step": step, "type": kind, "start_s": start, "end_s": end}
    if kind == "allreduce":
        m = plan.messages[ident]
        event.update(message=ident, layer=m.layers[0], bytes=m.nbytes)
    else:
        event["layer"] = ident
    return event
