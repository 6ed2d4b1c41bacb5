"""Rich rendering of runs (to stderr; stdout is kept for --json)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

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


def fmt_pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _validation_cell(case: dict) -> str:
    if case.get("error"):
        return f"[red]error[/red] {case['error']}"
    v = case.get("validation")
    if v is None:
        return "[dim]model only[/dim]"
    mark = "[green]ok[/green]" if v["passed"] else "[red]FAIL[/red]"
    return f"{mark} {v['reference']} (max err {v['max_abs_err']:.2g})"


def _array_cell(array: dict) -> str:
    return f"{array['name']} {array['rows']}x{array['cols']} {array['dataflow']} {array['dtype']}"


def render_cases(document: dict, console: Console = stderr) -> None:
    """One table per suite: case, array, cycles, utilization, time, validation."""
    kinds = registry()
    by_suite: dict[str, list[dict]] = {}
    for case in document["cases"]:
        by_suite.setdefault(case.get("suite", document.get("suite", "")), []).append(case)
    for suite, cases in by_suite.items():
        table = Table(title=f"suite {suite}", title_justify="left", header_style="bold")
        table.add_column("case", overflow="fold")
        table.add_column("array")
        table.add_column("cycles", justify="right")
        table.add_column("util", justify="right")
        table.add_column("time (median)", justify="right")
        table.add_column("validation", overflow="fold")
        for case in cases:
            workload = kinds.get(case["kind"])
            summary = workload.summary(case["metrics"]) if workload else case["metrics"]
            timing = case.get("timing") or {}
            table.add_row(case["id"].split("/", 1)[-1], _array_cell(case["array"]),
                          fmt_int(summary.get("cycles")), fmt_pct(summary.get("utilization")),
                          fmt_time(timing.get("median_s")), _validation_cell(case))
        console.print(table)
    machine = document.get("machine", {})
    console.print(f"[dim]{machine.get('cpu', '?')} · {machine.get('threads', '?')} thread(s) · "
                  f"OpenMP {'on' if machine.get('openmp') else 'off'} · "
                  f"kernel ISA {machine.get('isa', '?')} · sysbench {machine.get('sysbench', '?')}[/dim]")


def render_summary(document: dict, console: Console = stderr) -> None:
    cases = document["cases"]
    failed = [c for c in cases if c.get("error") or (c.get("validation") and not c["validation"]["passed"])]
    validated = sum(1 for c in cases if c.get("validation"))
    if failed:
        console.print(f"[red]{len(failed)} of {len(cases)} case(s) failed validation:[/red] "
                      + ", ".join(c["id"] for c in failed))
    else:
        console.print(f"[green]{len(cases)} case(s) ran; {validated} validated, all passed[/green]")
