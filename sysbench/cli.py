"""The sysbench command line: thin parsing and rendering around suite, runner and results."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__, compare as compare_mod, output as output_mod, preflight, report, results
from . import suite as suite_mod
from .runner import InputError, resolve_threads, run_suite, total_steps
from .workloads import registry

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmarks and cycle models for systolic-array accelerator techniques.")


def fail(message: str, code: int = 2) -> None:
    """A usage or input error: the message on stderr, no traceback."""
    # escape: ids ("gemm[k=64]") and hints ("sysbench[plot]") are not rich markup
    report.stderr.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    report.stderr.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sysbench {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Benchmarks and cycle models for systolic-array accelerator techniques."""


GATE_HELP = ("fail on timing regressions even when the machines differ (default: gate timings only "
             "when CPU, arch, cores, threads and ISA match; --no-gate-timings: never)")


@app.command()
def run(
    suites: List[str] = typer.Argument(None, help="bundled suite names or .toml files (default: quick)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the JSON result here"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON result on stdout"),
    filter_text: Optional[str] = typer.Option(None, "--filter", "-k", help="run only cases whose id contains TEXT"),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=0,
                                          help="kernel threads (default 1; 0 = every CPU this process may use)"),
    repeats: Optional[int] = typer.Option(None, "--repeats", "-r", min=1,
                                          help="override every case's samples per round"),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1,
                                         help="override every case's rounds (each round times every case once)"),
    min_time: Optional[float] = typer.Option(None, "--min-time", min=1e-6,
                                             help="override every case's seconds per sample (calls per sample "
                                                  "are calibrated to it)"),
    max_memory: Optional[str] = typer.Option(None, "--max-memory",
                                             help="refuse cases needing more memory than this "
                                                  "(default: what the machine has available), e.g. 8GiB"),
    baseline: Optional[Path] = typer.Option(None, "--baseline",
                                            help="compare the run against this result (as `compare`)"),
    threshold: float = typer.Option(compare_mod.DEFAULT_THRESHOLD, "--threshold",
                                    help="with --baseline: slowdown ratio that counts"),
    gate_timings: Optional[bool] = typer.Option(None, "--gate-timings/--no-gate-timings",
                                                help="with --baseline: " + GATE_HELP),
    mpi: bool = typer.Option(False, "--mpi", hidden=True,
                             help="run inside an mpiexec job: every rank runs the suite's MPI cases whose "
                                  "ranks equal the job's size; rank 0 reports and writes the result"),
) -> None:
    """Run suites: validate every case, print a report, write a versioned JSON result."""
    from .units import parse_size

    base_document = None
    if baseline is not None:
        try:
            base_document = compare_mod.load(baseline)
        except compare_mod.CompareError as exc:
            fail(str(exc))
    memory_limit = None
    if max_memory is not None:
        memory_limit = parse_size(max_memory)
        if memory_limit is None:
            fail(f"--max-memory: must be a byte count or a size like '8GiB', got {max_memory!r}")
    specs = suites or ["quick"]
    loaded, problems = [], []
    for spec in specs:
        try:
            loaded.append(suite_mod.load(spec))
        except suite_mod.SuiteError as exc:
            problems.extend(exc.problems)
    if problems:
        fail_all(problems)
    cases = [c for s in loaded for c in s.cases]
    rank = 0
    if mpi:
        cases, rank = _mpi_cases(cases)
    if filter_text:
        cases = [c for c in cases if filter_text in c.id]
        if not cases:
            fail(f"--filter {filter_text!r} matches no case")
    n_threads = resolve_threads(threads)
    try:  # everything that would make the finished run useless, found before it starts
        for warning in preflight.check_run(loaded, output if rank == 0 else None, threshold, n_threads):
            if rank == 0:
                warn(warning)
    except preflight.PreflightError as exc:
        fail_all(exc.problems)

    quiet = rank != 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=report.stderr, transient=False, disable=quiet) as progress:
        task = progress.add_task("running", total=total_steps(cases, rounds))

        def on_step(case, stage):
            progress.update(task, description=f"{case.id} {stage}", advance=1)

        try:
            done = run_suite(cases, n_threads, repeats, rounds, min_time, memory_limit, on_step)
        except InputError as exc:
            progress.stop()
            fail_all(exc.problems)
        except KeyboardInterrupt:
            progress.stop()
            fail("interrupted: nothing written", 130)
        progress.update(task, description="done")
    if quiet:
        raise typer.Exit(0 if all(r.passed for r in done) else 1)

    settings = {"threads": n_threads, "repeats": repeats, "rounds": rounds, "min_time": min_time,
                "filter": filter_text}
    document = results.build_document([s.name for s in loaded], done, n_threads, settings)
    report.render_cases(document)
    report.render_summary(document)
    if output:
        try:
            results.save(document, output)
        except OSError as exc:
            fail(f"{output}: cannot write the result: {exc.strerror or exc}")
        report.stderr.print(f"result written to {'standard output' if str(output) == '-' else output}")
    if as_json:
        sys.stdout.write(results.dumps(document))
    code = 0 if all(r.passed for r in done) else 1
    if base_document is not None:
        try:
            comparison = compare_mod.compare_documents(base_document, document, str(baseline),
                                                       str(output or "this run"), threshold,
                                                       gate_timings=gate_timings)
        except compare_mod.CompareError as exc:
            fail(str(exc))
        report.render_comparison(comparison)
        code = max(code, comparison.exit_code)
    if code:
        raise typer.Exit(code)


def fail_all(problems: list[str]) -> None:
    """Several input errors, each distinct one once, one line each, then exit 2."""
    for line in dict.fromkeys(problems):
        report.stderr.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _mpi_cases(cases):
    """(the cases this mpiexec job runs, this rank): the MPI cases whose ranks equal its size."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    mine = [c for c in cases if c.params.get("mode", "mpi") == "mpi" and c.params.get("ranks") == comm.size]
    if not mine:
        if comm.rank == 0:
            report.stderr.print(f"[red]error:[/red] no MPI case (train_distributed mode mpi, "
                                f"distributed_calibrate) with ranks = {comm.size}", highlight=False)
        raise typer.Exit(2)
    return mine, comm.rank


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
            table.add_row(name, str(len(s.cases)), escape(s.description))
        except suite_mod.SuiteError as exc:
            table.add_row(name, "-", f"[red]invalid: {escape(exc.problems[0])}[/red]")
    report.stderr.print(table)
    kinds = Table(title="workload kinds", title_justify="left", header_style="bold")
    kinds.add_column("kind")
    kinds.add_column("description")
    kinds.add_column("keys")
    for kind, workload in registry().items():
        kinds.add_row(kind, escape(workload.description), ", ".join(workload.keys))
    report.stderr.print(kinds)


@app.command()
def show(file: Path = typer.Argument(..., help="a result JSON written by `sysbench run`"),
         verbose: bool = typer.Option(False, "--verbose", "-v",
                                      help="also each case's reference and error text")) -> None:
    """Render a saved result."""
    try:
        document = results.load(file)
    except results.ResultError as exc:
        fail(str(exc))
    report.stderr.print(f"[bold]{document.get('suite')}[/bold] · created {document.get('created')}")
    report.render_cases(document, verbose=verbose)
    report.render_summary(document)


@app.command()
def compare(
    base: Path = typer.Argument(..., help="the baseline result JSON"),
    new: Path = typer.Argument(..., help="the result JSON to judge"),
    threshold: float = typer.Option(compare_mod.DEFAULT_THRESHOLD, "--threshold",
                                    help="slowdown ratio new/base that counts as a regression (when also significant)"),
    alpha: float = typer.Option(compare_mod.DEFAULT_ALPHA, "--alpha",
                                help="significance level of the Mann-Whitney U test"),
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON on stdout"),
    gate_timings: Optional[bool] = typer.Option(None, "--gate-timings/--no-gate-timings", help=GATE_HELP),
) -> None:
    """Compare two results. Exit 0 no regression, 1 regression or model change, 2 bad files.

    A model change is any deterministic figure (metrics, params, array) that is not identical. \
A timing is a regression only when all three hold: the median per-call time is slower than \
--threshold; that ratio exceeds the case's noise floor (the largest between-round spread, \
slowest round median / fastest, that either file shows); and a one-sided Mann-Whitney U test \
on the per-round medians gives p <= --alpha (3 rounds a side: every new round slower than \
every base round). Improvements mirror the rule.
    """
    try:
        comparison = compare_mod.compare_files(base, new, threshold, alpha, gate_timings)
    except compare_mod.CompareError as exc:
        fail(str(exc))
    report.render_comparison(comparison)
    if as_json:
        sys.stdout.write(json.dumps(comparison.to_dict(), indent=2) + "\n")
    raise typer.Exit(comparison.exit_code)


@app.command("report")
def report_(
    file: Path = typer.Argument(..., help="a result JSON written by `sysbench run`"),
    html: Optional[Path] = typer.Option(None, "--html", help="write an HTML report with the plots here"),
    png: Optional[Path] = typer.Option(None, "--png", help="write each plot as a PNG into this folder"),
) -> None:
    """Plots of a saved result as HTML and/or PNG (needs matplotlib: the plot extra of the package)."""
    if html is None and png is None:
        fail("say where to write the report: --html OUT.html and/or --png FOLDER")
    try:
        document = results.load(file)
        if html is not None:
            output_mod.check_writable(html, "report")
        if png is not None:
            output_mod.check_folder(png, "plots")
    except (results.ResultError, output_mod.OutputError) as exc:
        fail(str(exc))
    try:
        written = report.write_plots(document, html=html, png_dir=png, source=str(file))
    except report.PlotUnavailable as exc:
        fail(str(exc))
    except report.PlotDataError as exc:
        fail(f"{file}: {exc}")
    except OSError as exc:
        fail(f"{exc.filename or html or png}: cannot write the report: {exc.strerror or exc}")
    for path in written:
        report.stderr.print(f"written {path}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
