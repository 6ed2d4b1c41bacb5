"""Gradient-exchange schedules: which all-reduce messages a step sends, and when.

The model's weight gradients live in one flat float32 buffer, layer 0 first, so every
message is a contiguous slice [start, stop). Backward produces layer L-1's gradient first
and layer 0's last; the next step's forward needs layer 0 first. A schedule is a `Plan`:

    issue_after_bwd[l]    messages issued (in this order) right after backward of layer l
    wait_before_fwd[l]    messages that must be reduced before the next step's forward of l
    update_before_fwd[l]  layers whose SGD update is applied just before that forward

Schedules:
    sequential      all backward, then one all-reduce of everything
    fifo            each layer's gradient all-reduced as soon as it is produced
    bucketed        PyTorch DDP: layers packed in backward order into buckets of at least
                    bucket_bytes (a layer is never split); a bucket goes when it is full
    split_priority  (P3 / ByteScheduler) every layer cut into portions of portion_bytes;
                    at each point between layer computations the ready portions are sent
                    lowest layer first, and only as many as keep the link busy until the
                    next point: a lower layer's portions produced later overtake (preempt)
                    higher layers' portions still queued. The next step's forward of layer
                    l starts as soon as layer l's portions are reduced.

The real MPI executor and the simulator both run the same Plan, so what is measured and what
is simulated is the same schedule. Issue decisions depend only on the plan, never on when a
rank sees a message complete, because every rank must start its collectives in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

SCHEDULES = ("sequential", "fifo", "bucketed", "split_priority")
ITEM_BYTES = 4  # float32 gradients


@dataclass(frozen=True)
class Message:
    id: int
    start: int            # element offsets in the flat gradient buffer
    stop: int
    layers: tuple         # layers whose gradients it holds, ascending
    ready_after: int      # the layer whose backward completes it (its lowest layer)
    portion: int = 0      # index of the portion within its layer (split_priority)

    @property
    def nbytes(self) -> int:
        return (self.stop - self.start) * ITEM_BYTES

    @property
    def priority(self) -> tuple:
        return (self.layers[0], self.portion)


@dataclass
class Plan:
    schedule: str
    layer_sizes: list
    offsets: list                 # offsets[l] .. offsets[l+1] is layer l in the flat buffer
    messages: list
    issue_after_bwd: list         # per layer: [message id, ...]
    wait_before_fwd: list         # per layer: [message id, ...]
    update_before_fwd: list       # per layer: [layer, ...]
    notes: dict = field(default_factory=dict)

    @property
    def layers(self) -> int:
        return len(self.layer_sizes)

    @property
    def total_elements(self) -> int:
        return self.offsets[-1]

    def issue_order(self) -> list:
        """Message ids in the order one step issues them (backward order of the points)."""
        return [m for l in reversed(range(self.layers)) for m in self.issue_after_bwd[l]]

    def to_dict(self) -> dict:
        return {"schedule": self.schedule, "messages": len(self.messages),
                "message_bytes": [m.nbytes for m in self.messages],
                "message_layers": [list(m.layers) for m in self.messages],
                "issue_order": self.issue_order(), **self.notes}


def _offsets(sizes: Sequence[int]) -> list:
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return out


def _sync_plan(name, sizes, offsets, messages, issue_after_bwd, notes=None) -> Plan:
    """Every message reduced and every layer updated before the next step's first forward."""
    L = len(sizes)
    wait = [[] for _ in range(L)]
    update = [[] for _ in range(L)]
    wait[0] = [m.id for m in messages]
    update[0] = list(range(L))
    return Plan(name, list(sizes), offsets, messages, issue_after_bwd, wait, update, notes or {})


def make_plan(schedule: str, layer_sizes: Sequence[int], *, bucket_bytes: int = 25 * 2**20,
              portion_bytes: int = 64 * 2**10, bwd_s: Sequence[float] | None = None,
              cost: Callable[[int], float] | None = None) -> Plan:
    """The Plan of `schedule` for layers of `layer_sizes` float32 gradients.

    split_priority paces its issues with the estimated backward time of each layer (`bwd_s`)
    and the estimated all-reduce time of a message (`cost(nbytes)`); without them it sends
    every portion as soon as it is ready (lowest layer first within a point).
    """
    sizes = [int(s) for s in layer_sizes]
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"layer_sizes must be positive element counts, got {list(layer_sizes)!r}")
    L = len(sizes)
    offsets = _offsets(sizes)
    issue = [[] for _ in range(L)]

    if schedule == "sequential":
        messages = [Message(0, 0, offsets[-1], tuple(range(L)), 0)]
        issue[0] = [0]
        return _sync_plan(schedule, sizes, offsets, messages, issue)

    if schedule == "fifo":
        messages = [Message(l, offsets[l], offsets[l + 1], (l,), l) for l in range(L)]
        for l in range(L):
            issue[l] = [l]
        return _sync_plan(schedule, sizes, offsets, messages, issue)

    if schedule == "bucketed":
        if bucket_bytes < ITEM_BYTES:
            raise ValueError(f"bucket_bytes must hold at least one gradient, got {bucket_bytes}")
        messages, current = [], []
        for l in reversed(range(L)):  # DDP fills buckets in backward order
            current.append(l)
            full = sum(sizes[i] for i in current) * ITEM_BYTES >= bucket_bytes
            if full or l == 0:
                lo, hi = min(current), max(current)
                messages.append(Message(len(messages), offsets[lo], offsets[hi + 1],
                                        tuple(range(lo, hi + 1)), lo))
                issue[lo].append(messages[-1].id)
                current = []
        return _sync_plan(schedule, sizes, offsets, messages, issue, {"bucket_bytes": bucket_bytes})

    if schedule == "split_priority":
        return _split_priority(sizes, offsets, portion_bytes, bwd_s, cost)

    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def _split_priority(sizes, offsets, portion_bytes, bwd_s, cost) -> Plan:
    L = len(sizes)
    per = max(1, portion_bytes // ITEM_BYTES)
    messages, by_layer = [], [[] for _ in range(L)]
    for l in range(L):
        for i, start in enumerate(range(offsets[l], offsets[l + 1], per)):
            m = Message(len(messages), start, min(start + per, offsets[l + 1]), (l,), l, i)
            messages.append(m)
            by_layer[l].append(m)
    paced = bwd_s is not None and cost is not None
    if paced and len(bwd_s) != L:
        raise ValueError(f"bwd_s needs one time per layer ({L}), got {len(bwd_s)}")

    issue = [[] for _ in range(L)]
    queue: list = []          # ready, not yet issued
    now = link_free = 0.0     # estimated times from the start of backward
    for l in reversed(range(L)):
        queue.extend(by_layer[l])
        queue.sort(key=lambda m: m.priority)   # lowest layer first: preempts what is queued
        if not paced or l == 0:
            # Nothing new arrives after layer 0's backward: the rest go, in priority order.
            issued, queue = queue, []
        else:
            now += bwd_s[l]
            link_free = max(link_free, now)
            horizon = now + bwd_s[l - 1]        # the next point between layer computations
            issued = []
            while queue and link_free < horizon:
                m = queue.pop(0)
                issued.append(m)
                link_free += cost(m.nbytes)
        issue[l] = [m.id for m in issued]
    wait = [[m.id for m in by_layer[l]] for l in range(L)]
    update = [[l] for l in range(L)]
    return Plan("split_priority", list(sizes), offsets, messages, issue, wait, update,
                {"portion_bytes": per * ITEM_BYTES, "paced": paced})


def check_plan(plan: Plan) -> list:
    """Problems with a plan (empty when sound): every gradient element in exactly one message,
    every message issued exactly once and no earlier than its gradients exist, every message
    awaited before the forward that needs its layers, every layer updated once after that."""
    problems = []
    cover = [0] * plan.total_elements if plan.total_elements <= 10_000_000 else None
    issued_at = {}
    for l, ids in enumerate(plan.issue_after_bwd):
        for mid in ids:
            if mid in issued_at:
                problems.append(f"message {mid} issued twice")
            issued_at[mid] = l
    for m in plan.messages:
        if m.id not in issued_at:
            problems.append(f"message {m.id} never issued")
        elif issued_at[m.id] > m.ready_after:
            problems.append(f"message {m.id} issued after backward of layer {issued_at[m.id]}, "
                            f"before its layer {m.ready_after} has a gradient")
        if plan.offsets[m.layers[0]] > m.start or plan.offsets[m.layers[-1] + 1] < m.stop:
            problems.append(f"message {m.id} spans elements outside its layers")
        if cover is not None:
            for i in range(m.start, m.stop):
                cover[i] += 1
    if cover is not None and any(c != 1 for c in cover):
        bad = next(i for i, c in enumerate(cover) if c != 1)
        problems.append(f"gradient element {bad} is in {cover[bad]} messages (must be 1)")
    awaited = {}
    for l, ids in enumerate(plan.wait_before_fwd):
        for mid in ids:
            awaited.setdefault(mid, l)
    for m in plan.messages:
        if m.id not in awaited:
            problems.append(f"message {m.id} never awaited")
        elif awaited[m.id] > m.layers[0]:
            problems.append(f"message {m.id} awaited after the forward of its layer {m.layers[0]}")
    updated = [l for ls in plan.update_before_fwd for l in ls]
    if sorted(updated) != list(range(plan.layers)):
        problems.append(f"layers updated {sorted(updated)}, each must be updated once")
    return problems
