"""The sysbench command line: thin parsing and rendering around suite, runner and results."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import report, results, suite as suite_mod
from .runner import InputError, resolve_threads, run_case
from .workloads import registry

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmarks and cycle models for systolic-array accelerator techniques.")


def fail(message: str, code: int = 2) -> None:
    """A usage or input error: the message on stderr, no traceback."""
    report.stderr.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    suites: List[str] = typer.Argument(None, help="bundled suite names or .toml files (default: quick)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the JSON result here"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON result on stdout"),
    filter_text: Optional[str] = typer.Option(None, "--filter", "-k", help="run only cases whose id contains TEXT"),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=0, help="kernel threads (default 1; 0 = all cores)"),
    repeats: Optional[int] = typer.Option(None, "--repeats", "-r", min=1, help="override every case's repeats"),
) -> None:
    """Run suites: validate every case, print a report, write a versioned JSON result."""
    specs = suites or ["quick"]
    loaded, problems = [], []
    for spec in specs:
        try:
            loaded.append(suite_mod.load(spec))
        except suite_mod.SuiteError as exc:
            problems.extend(exc.problems)
    if problems:
        for line in problems:
            report.stderr.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    cases = [c for s in loaded for c in s.cases]
    if filter_text:
        cases = [c for c in cases if filter_text in c.id]
        if not cases:
            fail(f"--filter {filter_text!r} matches no case")
    n_threads = resolve_threads(threads)

    done = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=report.stderr, transient=False) as progress:
        task = progress.add_task("running", total=len(cases))
        for case in cases:
            progress.update(task, description=case.id)
            try:
                done.append(run_case(case, n_threads, repeats))
            except InputError as exc:
                progress.stop()
                fail(str(exc))
            progress.advance(task)
        progress.update(task, description="done")

    settings = {"threads": n_threads, "repeats": repeats, "filter": filter_text}
    document = results.build_document([s.name for s in loaded], done, n_threads, settings)
    report.render_cases(document)
    report.render_summary(document)
    if output:
        try:
            results.save(document, output)
        except OSError as exc:
            fail(f"{output}: cannot write the result: {exc.strerror or exc}")
        report.stderr.print(f"result written to {output}")
    if as_json:
        sys.stdout.write(results.dumps(document))
    if not all(r.passed for r in done):
        raise typer.Exit(1)


@app.command("list")
def list_() -> None:
    """Bundled suites and workload kinds, with one-line descriptions."""
    from rich.table import Table

    table = Table(title="bundled suites", title_justify="left", header_style="bold")
    table.add_column("suite")
    table.add_column("cases", justify="right")
    table.add_column("description")
    for name in sorted(suite_mod.bundled_suites()):
        try:
            s = suite_mod.load(name)
            table.add_row(name, str(len(s.cases)), s.description)
        except suite_mod.SuiteError as exc:
            table.add_row(name, "-", f"[red]invalid: {exc.problems[0]}[/red]")
    report.stderr.print(table)
    kinds = Table(title="workload kinds", title_justify="left", header_style="bold")
    kinds.add_column("kind")
    kinds.add_column("description")
    kinds.add_column("keys")
    for kind, workload in registry().items():
        kinds.add_row(kind, workload.description, ", ".join(workload.keys))
    report.stderr.print(kinds)


@app.command()
def show(file: Path = typer.Argument(..., help="a result JSON written by `sysbench run`")) -> None:
    """Render a saved result."""
    try:
        document = results.load(file)
    except results.ResultError as exc:
        fail(str(exc))
    report.stderr.print(f"[bold]{document.get('suite')}[/bold] · created {document.get('created')}")
    report.render_cases(document)
    report.render_summary(document)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
