"""The sysbench command line: thin parsing and rendering around suite, runner and results."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import compare as compare_mod, export, importers, report, results, suite as suite_mod
from .runner import InputError, resolve_threads, run_case
from .workloads import registry

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmarks and cycle models for systolic-array accelerator techniques.")


def fail(message: str, code: int = 2) -> None:
    """A usage or input error: the message on stderr, no traceback."""
    # escape: ids ("gemm[k=64]") and hints ("sysbench[plot]") are not rich markup
    report.stderr.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    suites: List[str] = typer.Argument(None, help="bundled suite names or .toml files (default: quick)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the JSON result here"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON result on stdout"),
    filter_text: Optional[str] = typer.Option(None, "--filter", "-k", help="run only cases whose id contains TEXT"),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=0,
                                          help="kernel threads (default 1; 0 = all cores)"),
    repeats: Optional[int] = typer.Option(None, "--repeats", "-r", min=1, help="override every case's repeats"),
    baseline: Optional[Path] = typer.Option(None, "--baseline",
                                            help="compare the run against this result (as `compare`)"),
    threshold: float = typer.Option(compare_mod.DEFAULT_THRESHOLD, "--threshold",
                                    help="with --baseline: slowdown ratio that counts"),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="a SCALE-Sim .cfg for the imported files (.csv, .onnx)"),
    batch: int = typer.Option(1, "--batch", help="batch of the imported files"),
) -> None:
    """Run suites (or import and run SCALE-Sim topologies and ONNX models): validate every
    case, print a report, write a versioned JSON result."""
    base_document = None
    if baseline is not None:
        try:
            base_document = compare_mod.load(baseline)
        except compare_mod.CompareError as exc:
            fail(str(exc))
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
        for line in problems:
            report.stderr.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
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
    code = 0 if all(r.passed for r in done) else 1
    if base_document is not None:
        try:
            comparison = compare_mod.compare_documents(base_document, document, str(baseline),
                                                       str(output or "this run"), threshold)
        except compare_mod.CompareError as exc:
            fail(str(exc))
        report.render_comparison(comparison)
        code = max(code, comparison.exit_code)
    if code:
        raise typer.Exit(code)


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
        results.write_atomic(target, text)
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
def show(file: Path = typer.Argument(..., help="a result JSON written by `sysbench run`")) -> None:
    """Render a saved result."""
    try:
        document = results.load(file)
    except results.ResultError as exc:
        fail(str(exc))
    report.stderr.print(f"[bold]{document.get('suite')}[/bold] · created {document.get('created')}")
    report.render_cases(document)
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
) -> None:
    """Compare two results. Exit 0 no regression, 1 regression or model change, 2 bad files."""
    try:
        comparison = compare_mod.compare_files(base, new, threshold, alpha)
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
    except results.ResultError as exc:
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
    except OSError as exc:
        fail(f"{exc.filename or html or png or scalesim or csv_out}: cannot write the report: {exc.strerror or exc}")
    for path in written:
        report.stderr.print(f"written {path}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
