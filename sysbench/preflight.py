"""What `sysbench run` checks before the first case runs, so that a long run is not thrown away
at its end: the output can be written, the threshold means something, the case ids are unique.
"""
from __future__ import annotations

from pathlib import Path

from . import compare, output, suite as suite_mod
from .runner import available_cpus


class PreflightError(Exception):
    """The run cannot be started; `problems` are one-line messages."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def threads_warning(threads: int) -> str | None:
    """A warning when --threads asks for more threads than there are CPUs to run them.

    A warning, not an error: the numbers stay right and oversubscription can be what is being
    studied, but the timings then measure the scheduler as much as the kernels."""
    cpus = available_cpus()
    if threads > cpus:
        return (f"--threads {threads} is more than the {cpus} CPU(s) this process may use: "
                f"the threads will share cores and the timings will show it")
    return None


def check_run(suites: list[suite_mod.Suite], output_path: Path | None, threshold: float | None,
              threads: int) -> list[str]:
    """Raise PreflightError listing every reason the run cannot start; return warnings."""
    problems = suite_mod.duplicate_ids(suites)
    if output_path is not None:
        try:
            output.check_writable(output_path, "result")
        except output.OutputError as exc:
            problems.append(str(exc))
    if threshold is not None:
        try:
            compare.check_settings(threshold)
        except compare.CompareError as exc:
            problems.append(str(exc))
    if problems:
        raise PreflightError(problems)
    warning = threads_warning(threads)
    return [warning] if warning else []
