"""Rich rendering of runs (to stderr; stdout is kept for --json)."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .plots import PlotDataError, PlotUnavailable  # noqa: F401  (re-exported for the CLI)
from .workloads import registry

stderr = Console(stderr=True)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_int(value) -> str:
    return "-" if value is None else f"{value:,}"


def fmt_energy(picojoules) -> str:
    if picojoules is None:
        return "-"
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if picojoules >= scale:
            return f"{picojoules / scale:.3g} {unit}"
    return f"{picojoules:.3g} pJ"


def fmt_pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def check_word(case: dict) -> str:
    """One word for the validation: bit-exact | exact | in bound | checked | FAIL | error | model."""
    if case.get("error"):
        return "error"
    v = case.get("validation")
    if not isinstance(v, dict):
        return "model"
    if not v.get("passed"):
        return "FAIL"
    return str(v.get("level") or "ok")


_WORD_STYLE = {"error": "red", "FAIL": "bold red", "model": "dim"}


def _array_cell(array: dict, uses_array: bool) -> str:
    return f"{array.get('name')} {array.get('dataflow')}" if uses_array else "-"


def _columns(head: list[str], rows: list[list[str]], styles: list[tuple], right: set[int]) -> str:
    """Rows as aligned text with rich markup: a bold header, a rule, the check word styled, an
    unstable spread in yellow."""
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    check, spread = head.index("check"), head.index("±")

    def line(cells, style=None):
        out = []
        for i, cell in enumerate(cells):
            text = escape(str(cell))
            pad = " " * (widths[i] - len(str(cell)))
            text = pad + text if i in right or i == spread else text + (pad if i < len(cells) - 1 else "")
            if style is not None and i == check:
                text = f"[{style[1]}]{text}[/]"
            elif style is not None and i == spread and style[0]:
                text = f"[yellow]{text}[/]"
            out.append(text)
        return " " + "  ".join(out)

    lines = [f"[bold]{line(head)}[/bold]", " " + "─" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [line(row, style) for row, style in zip(rows, styles)]
    return "\n".join(lines)


def render_cases(document: dict, console: Console = stderr, verbose: bool = False) -> None:
    """One table per suite: case, array, cycles, utilization, time, spread, check (one word).
    verbose: also the error and the reference each case was checked against.

    Laid out here in plain columns (a rich Table measures every cell: ~1 ms a row, the
    largest cost of a model-only run of a network)."""
    kinds = registry()
    by_suite: dict[str, list[dict]] = {}
    for case in document["cases"]:
        by_suite.setdefault(case.get("suite", document.get("suite", "")), []).append(case)
    for suite, cases in by_suite.items():
        memory = any("total_cycles" in (c.get("metrics") or {}) for c in cases)
        head = ["case", "array", "cycles", "util"] + (["stall", "energy"] if memory else []) + ["time", "±", "check"]
        if verbose:
            head += ["error", "reference"]
        rows, styles = [], []
        for case in cases:
            workload = kinds.get(case["kind"])
            metrics = case.get("metrics") or {}
            summary = workload.summary(metrics) if workload else metrics
            timing = case.get("timing") or {}
            validation = case.get("validation") or {}
            word = check_word(case)
            spread = timing.get("spread")
            row = [case["id"].split("/", 1)[-1], _array_cell(case["array"], workload is None or workload.needs_array),
                   fmt_int(summary.get("cycles")), fmt_pct(summary.get("utilization"))]
            if memory:
                row += [fmt_int(metrics.get("stall_cycles")), fmt_energy(metrics.get("energy_pj"))]
            row += [fmt_time(timing.get("median_s")), "-" if spread is None else f"{100 * spread:.0f}%", word]
            if verbose:
                err = validation.get("error", validation.get("max_abs_err"))
                detail = case.get("error") or validation.get("reference", "")
                if validation.get("detail"):
                    detail += f" ({validation['detail']})"
                row += ["-" if not isinstance(err, (int, float)) else f"{err:.2g}", str(detail)]
            rows.append(row)
            styles.append((timing.get("stable") is False, _WORD_STYLE.get(word, "green")))
        console.print(f"[italic]suite {escape(suite)}[/italic]", highlight=False)
        console.print(_columns(head, rows, styles, right={2, 3, 4, 5, 6, 7} if memory else {2, 3, 4, 5}),
                      highlight=False, soft_wrap=True)
        for line in network_totals(cases):
            console.print(f"[dim]{escape(line)}[/dim]", highlight=False)
        errors = [c for c in cases if c.get("error")]
        if errors and not verbose:
            for case in errors:
                console.print(f"[red]error[/red] {escape(case['id'])}: {escape(str(case['error']))}", highlight=False)
    machine = document.get("machine", {})
    timed = [c["timing"] for c in document["cases"] if isinstance(c.get("timing"), dict)]
    rounds = sorted({t.get("rounds") for t in timed} - {None})
    speed = (" at the machine's usual speed (control probe)"
             if any(t.get("sensitivity") is not None for t in timed) else "")
    console.print(f"[dim]{machine.get('cpu', '?')} · {machine.get('threads', '?')} thread(s) · "
                  f"OpenMP {'on' if machine.get('openmp') else 'off'} · "
                  f"kernel ISA {isa_text(machine.get('isa'))} · sysbench {machine.get('sysbench', '?')} · "
                  f"time = median per call over {'/'.join(map(str, rounds)) or '-'} round(s)"
                  f"{speed}, "
                  f"± = robust spread[/dim]")


def isa_text(isa) -> str:
    """A result's kernel ISAs: one name when every kernel runs the same path."""
    if isinstance(isa, dict):
        paths = sorted(set(isa.values()))
        return paths[0] if len(paths) == 1 else ", ".join(f"{k} {v}" for k, v in sorted(isa.items()))
    return str(isa or "?")


def network_totals(cases: list[dict]) -> list[str]:
    """For a suite made of network layers (kinds with `network_layer`), one line per array:
    the layers run back to back — total cycles, MACs, utilization and time."""
    kinds = registry()
    if not cases or not all(kinds.get(c["kind"]) and kinds[c["kind"]].network_layer for c in cases):
        return []
    by_array: dict[str, list[dict]] = {}
    for case in cases:
        metrics = case["metrics"]
        # a layer counts when its model gave both figures (a damaged or model-less case does not)
        if all(isinstance(metrics.get(k), int) for k in ("cycles", "macs")):
            by_array.setdefault(case["array"]["name"], []).append(case)
    lines = []
    for name, layers in by_array.items():
        if len(layers) < 2:
            continue
        array = layers[0]["array"]
        cycles = sum(c["metrics"]["cycles"] for c in layers)
        macs = sum(c["metrics"]["macs"] for c in layers)
        utilization = macs / (cycles * array["rows"] * array["cols"]) if cycles else 0.0
        line = (f"total of {len(layers)} layers on {name} ({array['rows']}x{array['cols']} "
                f"{array['dataflow']}): {cycles:,} cycles, {macs:,} MACs, utilization "
                f"{100 * utilization:.1f}%")
        clock = array.get("clock_ghz")
        if clock:
            line += f", {cycles / (clock * 1e3):,.1f} µs at {clock:g} GHz"
        if all("total_cycles" in c["metrics"] for c in layers):
            from .memory_report import network_totals as memory_totals

            mem = memory_totals(layers)
            line += (f"; with the memory system {mem['total_cycles']:,} cycles ({mem['stall_cycles']:,} stalled), "
                     f"{fmt_energy(mem['energy_pj'])}, EDP {mem['edp_js']:.3g} J·s")
        lines.append(line)
    return lines


def render_summary(document: dict, console: Console = stderr, summary=None) -> None:
    """One line: how many cases ran, validated, failed (from `summary`, a sinks.Summary, when
    the document holds only the first cases of a big run); then the unstable ones."""
    cases = document["cases"]
    if summary is None:
        failed = [c["id"] for c in cases if c.get("error") or (c.get("validation") and not c["validation"]["passed"])]
        total, validated = len(cases), sum(1 for c in cases if c.get("validation"))
    else:
        failed, total, validated = summary.failed, summary.cases, summary.validated
    if failed:
        shown = ", ".join(failed[:20]) + (f" and {len(failed) - 20} more" if len(failed) > 20 else "")
        console.print(f"[red]{len(failed)} of {total:,} case(s) failed:[/red] " + escape(shown))
    else:
        console.print(f"[green]{total:,} case(s) ran; {validated:,} validated, all passed[/green]")
    render_stability(document, console)


PARETO_SHOWN = 50


def render_sweep(summary, console: Console = stderr, top: int = 10, by: str = "cycles") -> None:
    """A big run's terminal report: what ran, the best `top` array configurations by `by`, and
    the Pareto front of (cycles, PEs) — its cost does not grow with the number of cases."""
    from .sinks import best, pareto

    kinds = ", ".join(f"{n:,} {k}" for k, n in summary.kinds.items())
    console.print(f"[bold]{summary.cases:,} cases[/bold] ({kinds}); totals per array configuration over its "
                  f"network layers (--table: every case)", highlight=False)
    rows = summary.configurations()
    if not rows:
        return
    energy = any(r["energy_pj"] is not None for r in rows)
    for suite in dict.fromkeys(r["suite"] for r in rows):
        mine = [r for r in rows if r["suite"] == suite]
        for title, chosen in ((f"best {top} of {len(mine):,} configurations by {by}", best(mine, top, by)),
                              ("Pareto front of (cycles, PEs)", pareto(mine))):
            table = Table(title=f"suite {escape(suite)}: {title}", title_justify="left", header_style="bold",
                          box=box.SIMPLE_HEAD, pad_edge=False)
            for name, justify in (("array", "left"), ("PEs", "right"), ("layers", "right"), ("cycles", "right"),
                                  ("util", "right"), ("time", "right")):
                table.add_column(name, justify=justify, overflow="fold" if name == "array" else None)
            if energy:
                table.add_column("energy", justify="right")
                table.add_column("EDP J·s", justify="right")
            for r in chosen[:PARETO_SHOWN]:  # best() already keeps `top`
                row = [escape(r["array"]), fmt_int(r["pes"]), fmt_int(r["layers"]), fmt_int(r["cycles"]),
                       fmt_pct(r["utilization"]), fmt_time(r["time_s"])]
                if energy:
                    row += [fmt_energy(r["energy_pj"]), "-" if r["edp"] is None else f"{r['edp']:.3g}"]
                table.add_row(*row)
            console.print(table)


def render_stability(document: dict, console: Console = stderr) -> None:
    """Warn, in one line, about cases whose timing samples vary too much to be compared."""
    from .results import unstable_cases
    from .stats import STABLE_SPREAD

    unstable = unstable_cases(document)
    if not unstable:
        return
    listed = ", ".join(f"{c['id']} ({fmt_pct(c['timing'].get('spread'))})" for c in unstable)
    console.print(f"[yellow]warning:[/yellow] unstable timing (robust spread > {100 * STABLE_SPREAD:.0f}%) in "
                  f"{len(unstable)} case(s): {escape(listed)}; rerun with more --rounds or a larger --min-time "
                  f"on a quieter machine before comparing them", highlight=False)


_VERDICT_STYLE = {"regression": "bold red", "improvement": "green", "same": "dim",
                  "no timing": "dim", "model change": "bold red", "validation failed": "bold red"}


def _verdict_cell(verdict: str) -> str:
    parts = []
    for part in verdict.split("; "):
        style = _VERDICT_STYLE.get(part, "yellow")
        parts.append(f"[{style}]{part}[/{style}]")
    return "; ".join(parts)


def _short_value(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def render_comparison(comparison, console: Console = stderr, max_changes: int = 8) -> None:
    """The compare table (case, base, new, ratio, p, verdict), model changes, warnings, summary."""
    table = Table(title=escape(f"{comparison.base} -> {comparison.new} "
                               f"(threshold {comparison.threshold:g}x, alpha {comparison.alpha:g})"),
                  title_justify="left", header_style="bold")
    table.add_column("case", overflow="fold")
    table.add_column("base", justify="right")
    table.add_column("new", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("noise", justify="right")
    table.add_column("p", justify="right")
    table.add_column("verdict", overflow="fold")
    for case in comparison.cases:
        ratio = "-" if case.ratio is None else f"{case.ratio:.2f}x"
        noise = "-" if case.noise is None else f"{case.noise:.2f}x"
        p = "-" if case.p_value is None else f"{case.p_value:.2g}"
        flag = " [yellow](unstable)[/yellow]" if case.unstable else ""
        table.add_row(escape(case.id), fmt_time(case.base_s), fmt_time(case.new_s), ratio, noise, p,
                      _verdict_cell(case.verdict) + flag)
    console.print(table)
    for case in comparison.cases:
        if not case.model_changes:
            continue
        console.print(f"[bold red]model change[/bold red] {escape(case.id)}:", highlight=False)
        for change in case.model_changes[:max_changes]:
            console.print(escape(f"    {change['path']}: {_short_value(change['old'])} -> "
                                 f"{_short_value(change['new'])}"), highlight=False)
        if len(case.model_changes) > max_changes:
            console.print(f"    ... and {len(case.model_changes) - max_changes} more (see --json)")
    for label, ids in (("only in base", comparison.only_in_base), ("only in new", comparison.only_in_new)):
        if ids:
            console.print(f"[yellow]{label} ({len(ids)}):[/yellow] " + escape(", ".join(ids)), highlight=False)
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    counts = [f"{len(comparison.cases)} compared", f"{len(comparison.regressions)} regression(s)",
              f"{len(comparison.model_changes)} model change(s)",
              f"{len(comparison.improvements)} improvement(s)"]
    if comparison.validation_failures:
        counts.append(f"{len(comparison.validation_failures)} validation failure(s)")
    style = "red" if comparison.exit_code else "green"
    console.print(f"[{style}]{', '.join(counts)}[/{style}]")


# ----------------------------------------------------------------------------------------
# HTML / PNG report


def write_plots(document: dict, html=None, png_dir=None, source: str = "") -> list:
    """Render the plots of a result; write an HTML page (plots embedded) and/or one PNG per plot.

    Raises PlotUnavailable (one line, with the install command) without matplotlib."""
    import io
    from pathlib import Path

    from . import output, plots

    figures = plots.build_plots(document)
    images = {}
    for plot in figures:
        buffer = io.BytesIO()
        plot.figure.savefig(buffer, format="png", dpi=100)
        images[plot.id] = buffer.getvalue()
    written = []
    if png_dir is not None:
        folder = Path(png_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for plot in figures:
            target = folder / f"{plot.id}.png"
            output.write_bytes(target, images[plot.id])
            written.append(target)
    if html is not None:
        target = Path(html)
        output.write_text(target, html_page(document, figures, images, source))
        written.append(target)
    return written


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3;text-align:left}td.n{text-align:right}img{max-width:100%;border:1px solid #eee}
.warn{color:#a60}.fail{color:#c00}.ok{color:#070}figcaption{color:#555;font-size:13px}"""


def html_page(document: dict, figures, images: dict, source: str = "") -> str:
    import base64
    from html import escape

    kinds = registry()
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sysbench report: "
             f"{escape(str(document.get('suite', '')))}</title><style>{_CSS}</style></head><body>",
             f"<h1>sysbench report: {escape(str(document.get('suite', '')))}</h1>",
             f"<p>{escape(source)} · created {escape(str(document.get('created', '?')))}</p>"]
    machine = document.get("machine") or {}
    parts.append("<h2>Machine</h2><table>" + "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in machine.items()) + "</table>")
    if figures:
        parts.append("<h2>Plots</h2><ul>" + "".join(
            f"<li><a href='#plot-{escape(p.id)}'>{escape(p.title)}</a></li>" for p in figures) + "</ul>")
    else:
        parts.append("<p>No plots: the result holds no case of a kind that plots.</p>")
    for plot in figures:
        data = base64.b64encode(images[plot.id]).decode("ascii")
        parts.append(f"<section id='plot-{escape(plot.id)}'><h3>{escape(plot.title)}</h3><figure>"
                     f"<img alt='{escape(plot.title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{escape(plot.caption)}</figcaption></figure></section>")
    parts.append("<h2>Cases</h2><table><tr><th>case</th><th>kind</th><th>array</th><th>cycles</th>"
                 "<th>util</th><th>time (median)</th><th>spread</th><th>validation</th></tr>")
    for case in document.get("cases", []):
        workload = kinds.get(case.get("kind"))
        metrics = case.get("metrics") or {}
        summary = workload.summary(metrics) if workload else metrics
        timing = case.get("timing") or {}
        spread = timing.get("spread")
        cv_cell = "-" if spread is None else (f"<span class='warn'>{100 * spread:.0f}% unstable</span>"
                                              if timing.get("stable") is False else f"{100 * spread:.1f}%")
        v = case.get("validation")
        if case.get("error"):
            v_cell = f"<span class='fail'>error: {escape(str(case['error']))}</span>"
        elif v is None:
            v_cell = "model only"
        else:
            v_cell = (f"<span class='{'ok' if v.get('passed') else 'fail'}'>"
                      f"{escape(check_word(case))}</span> {escape(str(v.get('reference', '')))}")
        array = case.get("array") or {}
        parts.append(f"<tr><td>{escape(str(case.get('id')))}</td><td>{escape(str(case.get('kind')))}</td>"
                     f"<td>{escape(str(array.get('name', '')))}</td>"
                     f"<td class='n'>{escape(fmt_int(summary.get('cycles')))}</td>"
                     f"<td class='n'>{escape(fmt_pct(summary.get('utilization')))}</td>"
                     f"<td class='n'>{escape(fmt_time(timing.get('median_s')))}</td>"
                     f"<td class='n'>{cv_cell}</td><td>{v_cell}</td></tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)
