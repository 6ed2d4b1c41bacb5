"""Plots of a result document (matplotlib, the optional `plot` extra).

This module knows no kind: it draws the per-layer cycles and utilization of every suite whose
cases are network layers (kinds with `network_layer`), and asks each kind for its own plots
(`Workload.plots`), so a report shows only what the result holds. The helpers below
(new_figure, grouped_bars, short_label, first_number) are what the kinds draw with.
Figures are built with matplotlib.figure.Figure (no pyplot: no global state, no display).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


class PlotDataError(Exception):
    """A kind's cases hold values its plots cannot draw (a damaged result the schema lets by:
    `measured` is each kind's own)."""

# What a plot of bad data raises; anything else is a bug in the plot and stays a traceback.
_DATA_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError)


INSTALL_HINT = "plots need matplotlib: pip install 'sysbench[plot]' (or pip install matplotlib)"


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs):
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


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def first_number(mapping: dict, names) -> float | None:
    """The first of `names` that `mapping` holds as a number."""
    for name in names:
        value = number(mapping.get(name))
        if value is not None:
            return value
    return None


def short_label(case: dict, drop_array: bool = True) -> str:
    """The case id without its suite prefix (and without the array of the sweep tag)."""
    label = case["id"].split("/", 1)[-1]
    if drop_array and "[" in label and label.endswith("]"):
        name, tag = label[:-1].split("[", 1)
        kept = [part for part in tag.split(",") if not part.strip().startswith("array=")]
        label = name + (f"[{','.join(kept)}]" if kept else "")
    return label


def grouped_bars(ax, labels: list[str], series: dict[str, list[float | None]], log: bool | str = False) -> None:
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


def network_plots(document: dict, layer_kinds: set[str] | None = None) -> list[Plot]:
    """Per suite: its network layers in suite order, cycles (log) and utilization per array.
    layer_kinds: the kinds whose cases are layers (default: every kind with `network_layer`)."""
    if layer_kinds is None:
        from .workloads import registry

        layer_kinds = {k for k, w in registry().items() if w.network_layer}
    by_suite: dict[str, list[dict]] = {}
    for kind_case in document.get("cases", []):
        if kind_case.get("kind") in layer_kinds and isinstance(kind_case.get("metrics"), dict):
            by_suite.setdefault(kind_case.get("suite") or document.get("suite", ""), []).append(kind_case)
    plots = []
    for suite, cases in by_suite.items():
        layers: list[str] = []
        arrays: list[str] = []
        table: dict[tuple[str, str], dict] = {}
        for case in cases:
            layer, array = short_label(case), (case.get("array") or {}).get("name", "?")
            if layer not in layers:
                layers.append(layer)
            if array not in arrays:
                arrays.append(array)
            table[layer, array] = case["metrics"]
        if len(layers) < 2:
            continue
        width = min(18.0, max(8.0, 0.2 * len(layers) * max(1, len(arrays)) + 3))
        fig, axes = new_figure(width, 7.5, rows=2, sharex=True)
        cycles = {a: [first_number(table.get((layer, a), {}), ("cycles",)) for layer in layers] for a in arrays}
        util = {a: [first_number(table.get((layer, a), {}), ("utilization",)) for layer in layers] for a in arrays}
        grouped_bars(axes[0][0], layers, cycles, log="auto")
        axes[0][0].set_ylabel("cycles")
        grouped_bars(axes[1][0], layers, {a: [None if v is None else 100 * v for v in vals]
                                           for a, vals in util.items()})
        axes[1][0].set_ylabel("utilization (%)")
        axes[1][0].set_ylim(0, 100)
        fig.suptitle(f"{suite}: per-layer cycles and utilization")
        plots.append(Plot(f"network-{suite}", f"{suite}: per-layer cycles and utilization",
                          f"{len(layers)} layers on {', '.join(arrays)}; cycles from the systolic model, "
                          "utilization = MACs / (cycles x PEs).", fig))
    return plots


DESIGN_SPACE_MIN = 4  # array configurations of one suite before its design-space plot is drawn


def design_space_plots(document: dict) -> list[Plot]:
    """Per suite swept over arrays: each configuration's network cycles against its PEs,
    coloured by utilization, the Pareto front of (cycles, PEs) drawn through it."""
    from .sinks import Summary, pareto
    from .workloads import registry

    kinds = registry()
    summary = Summary({k for k in {c.get("kind") for c in document.get("cases", [])}
                       if k in kinds and kinds[k].network_layer})
    for case in document.get("cases", []):
        summary.add_case_dict(case)
    plots = []
    rows = summary.configurations()
    for suite in dict.fromkeys(r["suite"] for r in rows):
        mine = [r for r in rows if r["suite"] == suite]
        if len(mine) < DESIGN_SPACE_MIN:
            continue
        fig, axes = new_figure(8.0, 5.5)
        ax = axes[0][0]
        points = ax.scatter([r["pes"] for r in mine], [r["cycles"] for r in mine],
                            c=[100 * r["utilization"] for r in mine], cmap="viridis", s=18)
        front = sorted(pareto(mine), key=lambda r: r["pes"])
        ax.plot([r["pes"] for r in front], [r["cycles"] for r in front], color="tab:red", marker="o",
                linewidth=1, markersize=4, label=f"Pareto front ({len(front)})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("PEs (rows x cols)")
        ax.set_ylabel("network cycles")
        fig.colorbar(points, ax=ax, label="utilization (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.suptitle(f"{suite}: design space ({len(mine)} array configurations)")
        plots.append(Plot(f"design-space-{suite}", f"{suite}: cycles vs PEs",
                          "Network cycles of every array configuration against its PEs, coloured by "
                          "utilization; red: the configurations no other beats on both.", fig))
    return plots


def build_plots(document: dict) -> list[Plot]:
    """The network plots, then each kind's own plots of its cases, kinds in registry order."""
    from .workloads import registry

    require_matplotlib()
    kinds = registry()
    cases = [c for c in document.get("cases", []) if isinstance(c.get("metrics"), dict)]
    from . import memory_report

    plots = _drawn("network", lambda: network_plots(document))
    plots += _drawn("memory-system", lambda: memory_report.plots(cases))  # any case with its metrics
    for kind, workload in kinds.items():
        mine = [c for c in cases if c.get("kind") == kind]
        if mine:
            plots += _drawn(kind, lambda: workload.plots(mine))
    return plots


def _drawn(what: str, build) -> list[Plot]:
    """build(), or PlotDataError (one line) when the cases hold values it cannot draw."""
    try:
        return build()
    except _DATA_ERRORS as exc:
        raise PlotDataError(f"damaged result: its {what} cases cannot be plotted "
                            f"({type(exc).__name__}: {exc})") from None
