"""The sysbench command line: thin parsing and rendering around suite, runner and results."""
from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__, compare as compare_mod, export, importers, output as output_mod, preflight, report
from . import results, sinks, sweep, suite as suite_mod
from .runner import InputError, SweepError, available_cpus, resolve_threads, run_suite, total_steps
from .sweep import Block
from .workloads import registry

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmarks and cycle models for systolic-array accelerator techniques.")


def fail(message: str, code: int = 2) -> None:
    """A usage or input error: the message on stderr, no traceback."""
    fail_all([message], code)


def fail_all(messages: list[str], code: int = 2) -> None:
    """Several problems, each distinct one once, one line each, then exit."""
    for message in dict.fromkeys(messages):
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
    processes: int = typer.Option(2, "--processes", min=1,
                                  help="share each case's rounds among this many processes, run one after "
                                       "another (a process's memory placement then shows between rounds)"),
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
    jobs: int = typer.Option(1, "--jobs", "-j", min=None,
                             help="processes for the model-only cases (0: every CPU this process may use); "
                                  "timed cases run one at a time unless --parallel-timed"),
    parallel_timed: bool = typer.Option(False, "--parallel-timed",
                                        help="with --jobs N: also time N cases at a time (faster, but their "
                                             "timings share the machine; compare does not gate them)"),
    executor: Optional[str] = typer.Option(None, "--executor",
                                           help="'mpi': spread the model-only cases over an mpi4py.futures pool "
                                                "(mpiexec -n N python -m mpi4py.futures -m sysbench run ...)"),
    top: int = typer.Option(10, "--top", help="past a few hundred cases: show the best N array configurations"),
    by: str = typer.Option("cycles", "--by", help="rank configurations by cycles | utilization | energy | edp"),
    table: bool = typer.Option(False, "--table", help="the full table of cases, however many there are"),
    yes: bool = typer.Option(False, "--yes", help=f"run a sweep of more than {10**7:,} cases"),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="a SCALE-Sim .cfg for the imported files (.csv, .onnx)"),
    batch: int = typer.Option(1, "--batch", help="batch of the imported files"),
    mpi: bool = typer.Option(False, "--mpi", hidden=True,
                             help="run inside an mpiexec job: every rank runs the suite's MPI cases whose "
                                  "ranks equal the job's size; rank 0 reports and writes the result"),
) -> None:
    """Run suites (or import and run SCALE-Sim topologies and ONNX models): validate every
    case, print a report, write a versioned JSON result."""
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
    if (config is not None or batch != 1) and not any(importers.handles(spec) for spec in specs):
        fail("--config and --batch are for imported files (a SCALE-Sim topology .csv, an ONNX model .onnx)")
    loaded, problems = [], []
    for spec in specs:
        try:
            if importers.handles(spec):
                imported, notes = importers.load(spec, config, batch)
                print_notes(notes)
                loaded.append(imported)
            else:
                loaded.append(suite_mod.load(spec))
        except suite_mod.SuiteError as exc:
            problems.extend(exc.problems)
    if problems:
        fail_all(problems)
    items = [item for s in loaded for item in s.items]
    rank = 0
    if mpi:
        items, rank = _mpi_cases(items)
    if filter_text:
        items = _filtered(items, filter_text)
        if not items:
            fail(f"--filter {filter_text!r} matches no case")
    n_threads = resolve_threads(threads)
    n_cases = sum(len(i) if isinstance(i, Block) else 1 for i in items)
    if n_cases > sweep.MAX_CASES and not yes:
        fail(f"the run has {n_cases:,} cases, more than {sweep.MAX_CASES:,}: narrow the sweep, or pass --yes "
             f"to run it anyway")
    if top < 1:
        fail(f"--top must be positive, got {top}")
    if by not in sinks.OBJECTIVES:
        fail(f"--by must be one of {', '.join(sinks.OBJECTIVES)}, got {by!r}")
    if jobs < 0:
        fail(f"--jobs must be 0 (every CPU) or more, got {jobs}")
    try:  # everything that would make the finished run useless, found before it starts
        for warning in preflight.check_run(loaded, output if rank == 0 else None, threshold, n_threads):
            if rank == 0:
                warn(warning)
    except preflight.PreflightError as exc:
        fail_all(exc.problems)
    pool = _executor(jobs, executor) if rank == 0 else None
    timed_workers = 1
    if parallel_timed:
        if executor is not None or pool is None:
            fail("--parallel-timed goes with --jobs N (N > 1, or 0 on a machine with several CPUs)")
        timed_workers = jobs if jobs > 0 else available_cpus()
        warn(f"--parallel-timed: {timed_workers} cases are timed at a time; they share this machine's cores, "
             f"caches and memory bandwidth, so their timings are not comparable with a serial run's "
             f"(compare shows them but does not gate on them)")
    signal.signal(signal.SIGTERM, _terminate)  # a CI cancel or `timeout`: clean up as Ctrl-C does

    quiet = rank != 0
    # ranks time in their own job, --parallel-timed groups in theirs; no spawning under an MPI executor
    processes = 1 if mpi or timed_workers > 1 or executor is not None else processes
    settings = {"threads": n_threads, "repeats": repeats, "rounds": rounds, "min_time": min_time, "processes": processes,
                "filter": filter_text, "jobs": jobs, "executor": executor, "parallel_timed": timed_workers}
    controls: list = []  # the machine's canary, every round (compare's between-run control)
    settings["controls"] = controls
    header = results.document_header([s.name for s in loaded], n_threads, settings)
    kinds = registry()
    summary = sinks.Summary({i.kind for i in items if kinds[i.kind].network_layer})
    collected = sinks.Collected(keep_all=base_document is not None or as_json)
    outcome = {"passed": True}
    try:
        with contextlib.ExitStack() as stack:
            streams = []
            if output is not None and not quiet:
                handle = stack.enter_context(output_mod.writing(output))
                streams.append(sinks.CsvSink(handle) if sinks.is_csv(output) else sinks.JsonSink(handle, header))

            def emit(result):
                outcome["passed"] &= sinks.passed(result)
                for sink in (*streams, summary, collected):
                    sink.add(result)

            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=report.stderr, transient=False, disable=quiet) as progress:
                task = progress.add_task("running", total=total_steps(items, rounds))

                def on_step(label, stage, count):
                    progress.update(task, description=f"{label} {stage}", advance=count)

                try:
                    run_suite(items, n_threads, repeats, rounds, min_time, memory_limit, on_step, emit, pool, controls,
                              timed_workers, prepare=sinks.render_csv if pool and output and sinks.is_csv(output)
                              else None, processes=processes)
                except InputError as exc:
                    progress.stop()
                    _abandon(stack, streams)  # nothing is written: the output's temporary file goes
                    fail_all(exc.problems)
                except SweepError as exc:
                    progress.stop()
                    _abandon(stack, streams)
                    fail(str(exc))
                except KeyboardInterrupt:
                    progress.stop()
                    _abandon(stack, streams)
                    fail("interrupted: nothing written", 130)
                except Terminated:
                    progress.stop()
                    _abandon(stack, streams)
                    fail("terminated (SIGTERM): nothing written", 143)
                finally:
                    if pool is not None:
                        pool.shutdown(cancel_futures=True)
                progress.update(task, description="done")
            for sink in streams:
                sink.close()
    except OSError as exc:  # the output could not take what was written (a full disk, /dev/full)
        fail(f"{output}: cannot write the result: {exc.strerror or exc}")
    if quiet:
        raise typer.Exit(0 if outcome["passed"] else 1)

    document = dict(header, cases=collected.cases)
    if collected.overflow and not table:
        report.render_sweep(summary, top=top, by=by)
    else:
        report.render_cases(document)
        if collected.overflow:
            report.stderr.print(f"[dim](the first {sinks.TABLE_LIMIT} of {n_cases:,} cases)[/dim]")
    report.render_summary(document, summary=summary if collected.overflow else None)
    if output:
        report.stderr.print(f"result written to {'standard output' if str(output) == '-' else output}")
    if as_json:
        sys.stdout.write(results.dumps(document))
    code = 0 if outcome["passed"] else 1
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


class Terminated(BaseException):
    """SIGTERM arrived: unwind (temporary files removed), then exit 143."""


def _terminate(signum, frame):
    raise Terminated()


def _abandon(stack: contextlib.ExitStack, streams: list) -> None:
    """Close the output without writing it: its temporary file is removed, the target untouched."""
    try:
        stack.__exit__(RuntimeError, RuntimeError("abandoned"), None)
    except RuntimeError:
        pass
    streams.clear()


def _filtered(items: list, text: str) -> list:
    """The items whose case ids contain `text`; a block keeps the rows that match, as cases."""
    out = []
    for item in items:
        if isinstance(item, Block):
            for start, stop in sweep.chunks(item):
                ids = item.ids(item.option_indices(start, stop), stop - start)
                rows = [start + i for i, case_id in enumerate(ids) if text in case_id]
                out += [case for row in rows for case in item.cases(row, row + 1)]
        elif text in item.id:
            out.append(item)
    return out


def _executor(jobs: int, address: str | None):
    """The executor for the model-only work: None (this process), processes, or mpi4py.futures."""
    if address is not None:
        if address != "mpi":
            fail(f"--executor {address!r}: the executor is 'mpi' (mpi4py.futures under mpiexec)")
        try:
            return sweep.mpi_executor()
        except sweep.SweepSetupError as exc:
            fail(str(exc))
    workers = jobs if jobs > 0 else available_cpus()
    if workers == 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


def _mpi_cases(items):
    """(the cases this mpiexec job runs, this rank): the MPI cases whose ranks equal its size."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    mine = [c for c in items if not isinstance(c, Block) and c.params.get("mode", "mpi") == "mpi"
            and c.params.get("ranks") == comm.size]
    if not mine:
        if comm.rank == 0:
            report.stderr.print(f"[red]error:[/red] no MPI case (train_distributed mode mpi, "
                                f"distributed_calibrate) with ranks = {comm.size}", highlight=False)
        raise typer.Exit(2)
    return mine, comm.rank


def print_notes(notes: list[str]) -> None:
    for line in notes:
        report.stderr.print(f"[dim]note:[/dim] {escape(line)}", highlight=False, soft_wrap=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="a SCALE-Sim topology (.csv) or an ONNX model (.onnx)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="a SCALE-Sim .cfg: the array"),
    batch: int = typer.Option(1, "--batch", help="batch size (binds an ONNX model's symbolic batch)"),
    array: Optional[str] = typer.Option(None, "--array",
                                        help="the array's name with --config; else one of "
                                             f"{', '.join(importers.DEFAULT_ARRAYS)} (default: all)"),
    numerics: bool = typer.Option(False, "--numerics", help="compute outputs too (generated inputs); "
                                                             "default: cycle model only"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="the suite file (default: "
                                         "FILE's name with .toml, here); - for stdout"),
) -> None:
    """Write a suite from a SCALE-Sim topology (+ .cfg) or an ONNX model, one case per layer."""
    target = Path(output) if output not in (None, "-") else None
    if output is None:
        target = Path(file.stem + ".toml")
    try:
        text, notes = importers.load_suite_source(file, config, batch, array, numerics)
        suite = importers.validate(text, file)
    except suite_mod.SuiteError as exc:
        for line in exc.problems:
            report.stderr.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    print_notes(notes)
    if target is None:
        sys.stdout.write(text)
        return
    try:
        output_mod.write_text(target, text)
    except OSError as exc:
        fail(f"{target}: cannot write the suite: {exc.strerror or exc}")
    report.stderr.print(f"suite written to {target}: {len(suite.cases)} cases", highlight=False)


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
A timing is a regression only when all three hold, on samples scaled to the machine's usual \
speed by the control probe timed around each: the median per-call time is slower than \
--threshold; that ratio exceeds the case's noise floor (the largest between-round spread, \
slowest round median / fastest, that either file shows, cubed: a run moves more against \
another run than its rounds move); and a one-sided Mann-Whitney U test on the samples gives \
p <= --alpha. Improvements mirror the rule.
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
    scalesim: Optional[Path] = typer.Option(None, "--scalesim",
                                            help="write SCALE-Sim's COMPUTE_REPORT.csv per array into this folder"),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="write one CSV row per case (for pandas) here"),
) -> None:
    """Plots of a saved result as HTML and/or PNG (needs matplotlib: the plot extra of the
    package); SCALE-Sim's COMPUTE_REPORT.csv; a flat CSV."""
    if html is None and png is None and scalesim is None and csv_out is None:
        fail("say where to write the report: --scalesim FOLDER, --csv OUT.csv, --html OUT.html and/or --png FOLDER")
    try:
        document = results.load(file)
        if html is not None:
            output_mod.check_writable(html, "report")
        if png is not None:
            output_mod.check_folder(png, "plots")
    except (results.ResultError, output_mod.OutputError) as exc:
        fail(str(exc))
    written = []
    try:
        if scalesim:
            written += export.write_scalesim(document, scalesim)
        if csv_out:
            written.append(export.write_csv(document, csv_out))
        if html or png:
            written += report.write_plots(document, html=html, png_dir=png, source=str(file))
    except (export.ExportError, report.PlotUnavailable) as exc:
        fail(str(exc))
    except report.PlotDataError as exc:
        fail(f"{file}: {exc}")
    except OSError as exc:
        fail(f"{exc.filename or html or png or scalesim or csv_out}: cannot write the report: {exc.strerror or exc}")
    for path in written:
        report.stderr.print(f"written {path}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
