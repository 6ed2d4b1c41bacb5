"""Plots of a result document (matplotlib, the optional `plot` extra).

Each builder looks for the cases of its kind and returns nothing when there are none, so
a report shows only what the result holds:
    network      per-layer cycles and utilization of a suite's gemm/conv2d layers, per array
    sparse       dense vs sparse cycles of sparse_gemm cases
    tconv        strided-tiling vs zero-insertion MACs (and cycles) of tconv2d cases
    recompute    activation memory over time of train_recompute cases, one line per schedule
    distributed  Gantt of compute and gradient exchange per rank of train_distributed cases
Figures are built with matplotlib.figure.Figure (no pyplot: no global state, no display).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


INSTALL_HINT = "plots need matplotlib: pip install 'sysbench[plot]' (or pip install matplotlib)"


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None


@dataclass
class Plot:
    id: str        # stable: the PNG file name and the HTML anchor
    title: str
    caption: str
    figure: Any


SYSTOLIC_KINDS = ("gemm", "conv2d")


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _first(mapping: dict, names) -> float | None:
    """The first of `names` that `mapping` holds as a number."""
    for name in names:
        value = _number(mapping.get(name))
        if value is not None:
            return value
    return None


def _label(case: dict, drop_array: bool = True) -> str:
    """The case id without its suite prefix (and without the array of the sweep tag)."""
    label = case["id"].split("/", 1)[-1]
    if drop_array and "[" in label and label.endswith("]"):
        name, tag = label[:-1].split("[", 1)
        kept = [part for part in tag.split(",") if not part.strip().startswith("array=")]
        label = name + (f"[{','.join(kept)}]" if kept else "")
    return label


def _cases(document: dict, kind: str) -> list[dict]:
    return [c for c in document.get("cases", []) if c.get("kind") == kind and isinstance(c.get("metrics"), dict)]


def _grouped_bars(ax, labels: list[str], series: dict[str, list[float | None]], log: bool | str = False) -> None:
    """One group of bars per label, one bar per series (missing values are left out).

    log="auto": a log axis only when the values span more than two decades (on a log axis
    a small range makes the shorter bars look like nothing)."""
    import numpy as np

    if log == "auto":
        positive = [v for values in series.values() for v in values if v is not None and v > 0]
        log = bool(positive) and max(positive) / min(positive) > 100

    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        heights = [v if v is not None else 0.0 for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(x, labels, rotation=90 if len(labels) > 8 else 0, fontsize=7 if len(labels) > 20 else 9)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    if log:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


# ----------------------------------------------------------------------------------------


def network_plots(document: dict) -> list[Plot]:
    """Per suite: the gemm/conv2d layers in suite order, cycles (log) and utilization per array."""
    by_suite: dict[str, list[dict]] = {}
    for kind_case in document.get("cases", []):
        if kind_case.get("kind") in SYSTOLIC_KINDS and isinstance(kind_case.get("metrics"), dict):
            by_suite.setdefault(kind_case.get("suite") or document.get("suite", ""), []).append(kind_case)
    plots = []
    for suite, cases in by_suite.items():
        layers: list[str] = []
        arrays: list[str] = []
        table: dict[tuple[str, str], dict] = {}
        for case in cases:
            layer, array = _label(case), (case.get("array") or {}).get("name", "?")
            if layer not in layers:
                layers.append(layer)
            if array not in arrays:
                arrays.append(array)
            table[layer, array] = case["metrics"]
        if len(layers) < 2:
            continue
        fig, axes = _figure(min(18.0, max(8.0, 0.2 * len(layers) * max(1, len(arrays)) + 3)), 7.5, rows=2, sharex=True)
        cycles = {a: [_first(table.get((layer, a), {}), ("cycles",)) for layer in layers] for a in arrays}
        util = {a: [_first(table.get((layer, a), {}), ("utilization",)) for layer in layers] for a in arrays}
        _grouped_bars(axes[0][0], layers, cycles, log="auto")
        axes[0][0].set_ylabel("cycles")
        _grouped_bars(axes[1][0], layers, {a: [None if v is None else 100 * v for v in vals]
                                           for a, vals in util.items()})
        axes[1][0].set_ylabel("utilization (%)")
        axes[1][0].set_ylim(0, 100)
        fig.suptitle(f"{suite}: per-layer cycles and utilization")
        plots.append(Plot(f"network-{suite}", f"{suite}: per-layer cycles and utilization",
                          f"{len(layers)} layers on {', '.join(arrays)}; cycles from the systolic model, "
                          "utilization = MACs / (cycles x PEs).", fig))
    return plots


# Names the sparse_gemm workload may give its dense and sparse cycle counts.
SPARSE_CYCLES = ("cycles_sparse", "sparse_cycles", "cycles")
DENSE_CYCLES = ("cycles_dense", "dense_cycles")


def sparse_plot(document: dict) -> list[Plot]:
    rows = []
    for case in _cases(document, "sparse_gemm"):
        dense, sparse = _first(case["metrics"], DENSE_CYCLES), _first(case["metrics"], SPARSE_CYCLES)
        if dense is not None and sparse is not None:
            rows.append((_label(case, drop_array=False), dense, sparse))
    if not rows:
        return []
    labels = [r[0] for r in rows]
    fig, axes = _figure(max(7.0, 0.45 * len(rows) + 3), 5.0)
    _grouped_bars(axes[0][0], labels, {"dense": [r[1] for r in rows], "sparse (all passes)": [r[2] for r in rows]},
                  log="auto")
    axes[0][0].set_ylabel("cycles")
    fig.suptitle("sparse_gemm: dense vs N:M sparse cycles")
    return [Plot("sparse", "sparse_gemm: dense vs sparse cycles",
                 "Cycles of the dense GEMM against the sum over the N:M sparse passes.", fig)]


def tconv_plot(document: dict) -> list[Plot]:
    rows = []
    for case in _cases(document, "tconv2d"):
        m = case["metrics"]
        strided, zeros = _first(m, ("macs",)), _first(m, ("macs_zero_insertion",))
        if strided is not None and zeros is not None:
            rows.append((_label(case, drop_array=False), strided, zeros,
                         _first(m, ("cycles",)), _first(m, ("cycles_zero_insertion",))))
    if not rows:
        return []
    labels = [r[0] for r in rows]
    with_cycles = all(r[3] is not None and r[4] is not None for r in rows)
    fig, axes = _figure(max(7.0, 0.45 * len(rows) + 3), 8.0 if with_cycles else 4.5,
                        rows=2 if with_cycles else 1, sharex=True)
    _grouped_bars(axes[0][0], labels, {"strided tiling": [r[1] for r in rows],
                                       "zero insertion": [r[2] for r in rows]}, log="auto")
    axes[0][0].set_ylabel("MACs")
    if with_cycles:
        _grouped_bars(axes[1][0], labels, {"strided tiling": [r[3] for r in rows],
                                           "zero insertion": [r[4] for r in rows]}, log="auto")
        axes[1][0].set_ylabel("cycles")
    fig.suptitle("tconv2d: strided tiling vs zero insertion")
    return [Plot("tconv", "tconv2d: strided vs zero-insertion MACs",
                 "MACs (and array cycles) of strided tiling per kernel element against zero insertion.", fig)]


def _memory_series(case: dict) -> tuple[list[float], list[float]] | None:
    """(x, activation bytes) from a memory-over-time series in the case's metrics or measured.

    train_recompute writes `memory_series` points [event, activation_bytes, total_bytes] and
    names them in `memory_series_columns`; without such names, a list of numbers, of
    [t, bytes, ...] / [t, label, bytes, ...] points, of dicts, or a dict of parallel lists.
    """
    for part in ("metrics", "measured"):
        holder = case.get(part) or {}
        for key, value in holder.items():
            if "memory" not in key or key.endswith("_columns") or not isinstance(value, (list, dict)):
                continue
            columns = holder.get(f"{key}_columns")
            parsed = _parse_series(value, columns if isinstance(columns, list) else None)
            if parsed:
                return parsed
    return None


def _parse_series(value, columns: list | None = None) -> tuple[list[float], list[float]] | None:
    if isinstance(value, dict):
        xs = next((value[k] for k in ("t", "time", "step", "event", "index", "x")
                   if isinstance(value.get(k), list)), None)
        ys = next((value[k] for k in ("activation_bytes", "activations", "bytes", "live_bytes", "y")
                   if isinstance(value.get(k), list)), None)
        if ys and all(_number(y) is not None for y in ys):
            xs = xs if xs and len(xs) == len(ys) else list(range(len(ys)))
            return [float(x) for x in xs], [float(y) for y in ys]
        return None
    if len(value) < 2:
        return None
    if all(_number(v) is not None for v in value):
        return list(range(len(value))), [float(v) for v in value]
    y_column = None
    if columns:
        y_column = next((i for i, name in enumerate(columns) if "activation" in str(name)), None)
    xs, ys = [], []
    for i, point in enumerate(value):
        if isinstance(point, (list, tuple)) and point:
            numbers = [_number(v) for v in point]
            if y_column is not None:
                y = numbers[y_column] if y_column < len(numbers) else None
            else:   # the first number after the x column
                y = next((n for n in numbers[1:] if n is not None), None)
            if numbers[0] is None or y is None:
                return None
            xs.append(numbers[0])
            ys.append(y)
        elif isinstance(point, dict):
            x = _first(point, ("t", "time", "step", "event", "index"))
            y = _first(point, ("activation_bytes", "activations", "bytes", "live_bytes"))
            if y is None:
                return None
            xs.append(float(i) if x is None else x)
            ys.append(y)
        else:
            return None
    return xs, ys


def recompute_plot(document: dict) -> list[Plot]:
    lines = []
    for case in _cases(document, "train_recompute"):
        series = _memory_series(case)
        if series:
            budget = _first(case["metrics"], ("budget_bytes", "budget"))
            lines.append((_label(case, drop_array=False), series, budget))
    if not lines:
        return []
    fig, axes = _figure(9.0, 5.0)
    ax = axes[0][0]
    peak = max(max(ys) for _, (_, ys), _ in lines)
    unit, scale = next(((u, f) for u, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)) if peak >= f), ("B", 1))
    for label, (xs, ys), budget in lines:
        (line,) = ax.step(xs, [y / scale for y in ys], where="post", label=label)
        if budget:
            ax.axhline(budget / scale, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("event (allocation / release)")
    ax.set_ylabel(f"live activation memory ({unit})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("train_recompute: activation memory over one step")
    return [Plot("recompute", "train_recompute: memory over time",
                 "Live activation memory through one training step per schedule; dotted: the budget.", fig)]


# Event types of a timeline by lane; anything else (e.g. "wait", idle time) is left as a gap.
COMPUTE_WORDS = ("compute", "forward", "backward", "fwd", "bwd", "update")
EXCHANGE_WORDS = ("comm", "exchange", "reduce", "send", "recv")


def _timeline_events(case: dict) -> list[dict] | None:
    """[{rank, lane: compute|exchange, start, end, what}] from a case's timeline."""
    for part in ("measured", "metrics"):
        holder = case.get(part) or {}
        for key, value in holder.items():
            if "timeline" not in key:
                continue
            events = _parse_timeline(value)
            if events:
                return events
    return None


def _parse_timeline(value) -> list[dict]:
    raw: list[tuple[Any, dict]] = []
    if isinstance(value, dict):   # {rank: [events]}
        for rank, events in value.items():
            if isinstance(events, list):
                raw += [(rank, e) for e in events if isinstance(e, dict)]
    elif isinstance(value, list):
        for index, e in enumerate(value):
            if isinstance(e, dict):
                raw.append((e.get("rank", e.get("worker", 0)), e))
            elif isinstance(e, list):   # one list of events per rank
                raw += [(index, ev) for ev in e if isinstance(ev, dict)]
    events = []
    for rank, e in raw:
        start = _first(e, ("start", "start_s", "t0", "begin"))
        end = _first(e, ("end", "end_s", "stop", "t1", "finish"))
        if end is None and start is not None:
            duration = _first(e, ("duration", "duration_s", "dt"))
            end = None if duration is None else start + duration
        if start is None or end is None:
            continue
        what = str(next((e[k] for k in ("kind", "type", "what", "event", "category", "phase", "op") if k in e), ""))
        lane = "exchange" if any(w in what.lower() for w in EXCHANGE_WORDS) else (
            "compute" if any(w in what.lower() for w in COMPUTE_WORDS) else None)
        if lane:
            events.append({"rank": rank, "lane": lane, "start": start, "end": end, "what": what})
    return events


def _rank_order(rank) -> tuple:
    """Numeric ranks (2 before 10, "3" as 3) first, then any other labels by name."""
    text = str(rank)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def distributed_plot(document: dict, max_cases: int = 8) -> list[Plot]:
    timelines = []
    for case in _cases(document, "train_distributed"):
        events = _timeline_events(case)
        if events:
            timelines.append((_label(case, drop_array=False), events))
    if not timelines:
        return []
    shown = timelines[:max_cases]
    fig, axes = _figure(10.0, 1.2 + 1.6 * len(shown) + 0.25 * sum(len({e["rank"] for e in ev}) for _, ev in shown),
                        rows=len(shown))
    colors = {"compute": "tab:blue", "exchange": "tab:orange"}
    for ax, (label, events) in zip((row[0] for row in axes), shown):
        ranks = sorted({e["rank"] for e in events}, key=_rank_order)
        yticks, ylabels = [], []
        for i, rank in enumerate(ranks):
            for j, lane in enumerate(("compute", "exchange")):
                y = i * 2.5 + j
                spans = [(e["start"], e["end"] - e["start"]) for e in events if e["rank"] == rank and e["lane"] == lane]
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


BUILDERS = (network_plots, sparse_plot, tconv_plot, recompute_plot, distributed_plot)


def build_plots(document: dict) -> list[Plot]:
    require_matplotlib()
    plots = []
    for builder in BUILDERS:
        plots += builder(document)
    return plots
