"""The one suite loop: model every case, then time the numerics cases in interleaved rounds.

`run_suite` is used by the CLI (its progress bar is the `on_step` callback) and by the MPI
worker mode of `sysbench run`. It owns everything about timing:

- calibration: per case, a loop count `number` such that one sample (`number` calls) lasts
  at least `min_time` (timeit's autorange: 1, 2, 5, 10, 20, 50, ...); a sample's per-call
  time is its duration / number. With a per-call reset (a training step that restores its
  weights) only the calls are timed, the resets between them are not; a job that times
  itself (an MPI job) makes its own samples;
- rounds: every case is timed once per round, in the same case order each round (as asv
  does), so that slow drift of the machine lands inside each case's spread; each round
  starts with `warmup` untimed calls; every sample is kept with its round;
- threads: BLAS is held to the case's thread count while it is timed, and to one thread
  while references run (unless the kind's reference must sum like the kernel), so no idle
  BLAS pool spins on the core the next case needs; the garbage collector is off while a
  sample is taken;
- guarding: an input problem (CaseError, a working set past the memory limit) found before
  anything is timed is an InputError naming file, case and key (exit 2); any other failure
  of a case is that case's error, recorded, and the run goes on.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .stats import control_probe, summarize
from .suite import Case, SuiteError
from .sweep import Block, TableChunk, evaluate
from .sweep import chunks as sweep_chunks
from .workloads import registered_here, registry
from .workloads.base import CaseError, Run, SelfTimed, Workload

DEFAULT_ROUNDS = 3
DEFAULT_MIN_TIME = 0.005  # seconds per sample
# inputs kept alive between rounds up to this many bytes (beyond it they are rebuilt)
KEEP_INPUTS_BYTES = 512 * 2**20


class InputError(SuiteError):
    """Cases that cannot run as written, found before anything is timed: exit 2, one line each."""


@dataclass
class CaseResult:
    case: Case
    metrics: dict | None = None
    timing: dict | None = None
    validation: dict | None = None
    measured: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and (self.validation is None or self.validation["passed"])

    def to_dict(self) -> dict:
        c = self.case
        out = {
            "id": c.id,
            "suite": c.suite,
            "name": c.name,
            "kind": c.kind,
            "params": c.params_json(),
            "array": c.array.to_dict(),
            "numerics": c.numerics,
            "seed": c.seed,
            "metrics": self.metrics if self.metrics is not None else {},
            "timing": self.timing,
            "validation": self.validation,
        }
        if self.measured:
            out["measured"] = self.measured
        if self.error:
            out["error"] = self.error
        return out


def available_cpus() -> int:
    """CPUs this process may run on (affinity, cgroup cpusets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_threads(threads: int | None) -> int:
    """--threads: None or 1 -> 1 (reproducible default), 0 -> every CPU we may use."""
    if threads is None:
        return 1
    if threads == 0:
        return available_cpus()
    return threads


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can get without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _blas_limit(threads: int):
    """A context that holds numpy's BLAS (and OpenMP pools threadpoolctl knows) to `threads`."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def _nbytes(value: Any, seen: set | None = None) -> int:
    """Bytes of the numpy arrays reachable from `value` (dataclasses, dicts, lists)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v, seen) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, name), seen) for name in value.__dataclass_fields__)
    if hasattr(value, "__dict__"):
        return sum(_nbytes(v, seen) for v in vars(value).values())
    return 0


def _human(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


@dataclass
class _Timing:
    """How one case is timed, fixed on its first visit."""

    number: int = 1
    calibration: list = field(default_factory=list)  # [[number, seconds of one trial], ...]
    samples: list = field(default_factory=list)
    cpu_samples: list = field(default_factory=list)
    own_jobs: bool = False  # self-timed: every round is a job (processes) of its own
    rounds: list = field(default_factory=list)
    controls: list = field(default_factory=list)  # control_probe() after each sample
    peers: dict = field(default_factory=dict)  # name -> _Timing
    numbers: list = field(default_factory=list)   # `number` of each further timing process

    def merge(self, record: dict, first_round: int) -> None:
        """Add the samples of a timing record made in another process, its rounds numbered
        from first_round (its calls per sample are its own calibration's)."""
        offset = first_round - min(record["sample_rounds"], default=0)
        self.samples += record["samples_s"]
        self.rounds += [r + offset for r in record["sample_rounds"]]
        self.controls += record.get("controls_s") or []
        self.cpu_samples += record.get("cpu_samples_s") or []
        self.numbers.append(record["number"])
        self.own_jobs |= record.get("rounds_in_own_jobs", False)
        for name, peer in (record.get("peers") or {}).items():
            if name in self.peers:
                self.peers[name].samples += peer["samples_s"]
                self.peers[name].rounds += [r + offset for r in peer["sample_rounds"]]


def _time_calls(call: Callable[[], Any], number: int, reset=None) -> tuple[float, float, Any]:
    """(wall seconds per call, cpu seconds per call, last output) of one sample: `number`
    calls back to back, or with a reset before each call, outside the timer."""
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        if reset is None:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(number):
                output = call()
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        else:
            wall = cpu = 0.0
            for _ in range(number):
                reset()
                start, start_cpu = time.perf_counter(), time.process_time()
                output = call()
                wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - start_cpu
    finally:
        if gc_was_on:
            gc.enable()
    return wall / number, cpu / number, output


RESET_BUDGET = 20  # a calibration trial with resets stops growing past min_time x this, resets included


def calibrate(call: Callable[[], Any], min_time: float, reset=None) -> tuple[int, list]:
    """timeit's autorange: the smallest of 1, 2, 5, 10, 20, 50, ... calls lasting min_time.
    With a per-call reset only the calls count toward min_time, and the count stops growing
    where a trial (resets included) takes RESET_BUDGET x min_time: a slow reset must not
    make a sample take seconds."""
    trials = []
    number = 1
    while True:
        started = time.perf_counter()
        per_call, _, _ = _time_calls(call, number, reset)
        trials.append([number, per_call * number])
        if per_call * number >= min_time or number >= 10**9:
            return number, trials
        # jump close to the target, then round up to the 1-2-5 sequence
        wanted = max(number * 2, int(min_time / max(per_call, 1e-9) * 1.1))
        decade = 10 ** (len(str(wanted)) - 1)
        upcoming = next(m * decade for m in (1, 2, 5, 10) if m * decade >= wanted)
        if reset is not None:
            most = int(RESET_BUDGET * min_time / ((time.perf_counter() - started) / number))
            if most <= number:
                return number, trials
            upcoming = min(upcoming, most)
        number = upcoming


class _CaseRun:
    """A case across the run: its workload, params, results and timing state."""

    def __init__(self, case: Case, workload: Workload):
        self.case, self.workload = case, workload
        self.result = CaseResult(case)
        self.timing = _Timing()
        self.plan: Any = None
        self.inputs: Any = None
        self.visits = 0

    def where(self, key: str) -> str:
        return f"{self.case.source}: case {self.case.name!r} key {key!r}"


def _size(item) -> int:
    return len(item) if isinstance(item, Block) else 1


def total_steps(items: list, rounds: int | None = None) -> int:
    """The progress total of run_suite: one per case modelled (a block's rows included) and
    one per timed visit."""
    return sum(_size(item) for item in items) + sum(1 + (rounds or item.rounds) for item in items
                                                      if isinstance(item, Case) and item.numerics)


class SweepError(Exception):
    """A worker of the model phase died or failed: the cases it held are lost (exit 2)."""


MODEL_BATCH = 256  # model-only cases per task of a parallel model phase


def _model_tasks(items: list) -> list[tuple]:
    """The model phase cut into tasks, in order: ("cases", [model-only Case]), ("block", Block,
    start, stop), ("timed", Case). Model-only work is what an executor may spread."""
    tasks, batch = [], []
    for item in items:
        if isinstance(item, Block):
            if batch:
                tasks.append(("cases", batch))
                batch = []
            tasks += [("block", item, start, stop) for start, stop in sweep_chunks(item)]
        elif item.numerics:
            if batch:
                tasks.append(("cases", batch))
                batch = []
            tasks.append(("timed", item))
        else:
            batch.append(item)
            if len(batch) == MODEL_BATCH:
                tasks.append(("cases", batch))
                batch = []
    if batch:
        tasks.append(("cases", batch))
    return tasks


def model_task(task: tuple, memory_limit: int | None = None, prepare: Callable | None = None):
    """One model-only task: a TableChunk, or [(CaseResult, problems)]. Runs in a worker
    process; prepare(chunk) there too (the output a sink would otherwise make in the parent)."""
    if task[0] == "block":
        chunk = evaluate(*task[1:])
        if prepare is not None and not chunk.problems:
            prepare(chunk)
        return chunk
    kinds = registry()
    out = []
    for case in task[1]:
        run, problems = _CaseRun(case, kinds[case.kind]), []
        _model(run, memory_limit, problems)
        out.append((run.result, problems))
    return out


def _task_ids(task: tuple) -> str:
    if task[0] == "block":
        block, start, stop = task[1:]
        return f"{stop - start} case(s) of {block.suite}/{block.name} (rows {start}..{stop - 1})"
    cases = task[1]
    return f"{len(cases)} case(s) {cases[0].id} .. {cases[-1].id}" if len(cases) > 1 else cases[0].id


def run_suite(items: list, threads: int = 1, repeats: int | None = None, rounds: int | None = None,
              min_time: float | None = None, max_memory: int | None = None,
              on_step: Callable[[str, str, int], None] | None = None,
              emit: Callable[[Any], None] | None = None, executor=None, controls: list | None = None,
              timed_workers: int = 1, prepare: Callable | None = None, processes: int = 1,
              validate: bool = True) -> list:
    """Model every case, then time and validate the numerics cases in rounds.

    items: Case or sweep.Block (a model-only grid modelled as a table). Results, in suite
    order, are CaseResult per case and TableChunk per block chunk; with `emit` each goes there
    as soon as it and every one before it is final (nothing is kept: memory stays flat),
    otherwise they are returned. executor: a concurrent.futures executor for the model-only
    work (--jobs, mpi4py.futures); timed cases run here, one at a time, unless timed_workers > 1
    (--parallel-timed): then the executor times that many groups of them at once, each group
    in rounds as here (their timings share the machine: the result says so).
    repeats, rounds, min_time: override every case's. on_step(label, stage, count) as work
    completes. Raises InputError before any timing when a case cannot run as written, and
    SweepError when a worker dies. controls: a list that receives the canary() figures of
    every recorded round (when there are timed cases). prepare: with an executor, called on
    each table chunk in its worker (sinks.render_csv formats a CSV's rows there). processes:
    the rounds are shared among this process and processes - 1 fresh ones, one after another
    (as pyperf spawns worker processes): what a process's own state (its memory placement, its
    core) does to a case then shows between rounds, where compare's noise floor sees it, rather
    than only between two runs. validate=False: time only (a fresh timing process: this one
    validates and observes)."""
    kinds = registry()
    limit = max_memory if max_memory is not None else available_memory()
    problems: list[str] = []
    slots: list = []  # results in order; a _CaseRun while its case still has to be timed
    emitted = 0

    def flush():
        nonlocal emitted
        while emit is not None and emitted < len(slots) and not isinstance(slots[emitted], _CaseRun):
            emit(slots[emitted])
            slots[emitted] = None  # emitted: no longer held
            emitted += 1

    tasks = _model_tasks(items)
    remote = [t for t in tasks if t[0] != "timed"]
    mapped = iter(executor.map(model_task, remote, [limit] * len(remote), [prepare] * len(remote))
                  if executor is not None else (model_task(t, limit) for t in remote))
    for task in tasks:
        if task[0] == "timed":
            run = _CaseRun(task[1], kinds[task[1].kind])
            _model(run, limit, problems)
            slots.append(run if run.result.error is None else run.result)
            if on_step:
                on_step(task[1].id, "model", 1)
            continue
        try:
            done = next(mapped)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a worker died (BrokenProcessPool) or the executor failed
            lost = [_task_ids(t) for t in remote[remote.index(task):]]
            raise SweepError(f"the model phase lost its worker ({type(exc).__name__}: {exc}); lost "
                             f"{'; '.join(lost[:3])}{f' and {len(lost) - 3} more task(s)' if len(lost) > 3 else ''}"
                             ) from None
        if isinstance(done, TableChunk):
            problems += done.problems
            slots.append(done)
            label, count = f"{done.block.suite}/{done.block.name}", len(done)
        else:
            for result, found in done:
                problems += found
                slots.append(result)
            label, count = done[-1][0].case.id, len(done)
        if on_step:
            on_step(label, "model", count)
        if not problems:
            flush()
    if problems:
        raise InputError(problems)

    timed = [r for r in slots if isinstance(r, _CaseRun)]
    n_rounds = {r.case.id: rounds or r.case.rounds for r in timed}
    if timed and executor is not None and timed_workers > 1:
        _time_in_parallel(timed, executor, timed_workers, (threads, repeats, rounds, min_time, limit),
                          on_step, n_rounds, controls)
        timed = []
    # the rounds timed in this process (a kind registered here only: all of them)
    here = {r.case.id: _rounds_here(n_rounds[r.case.id], 1 if registered_here(r.case.kind) else processes)
            for r in timed}
    for index in [None] + list(range(max(here.values(), default=0))) if timed else []:
        kept_bytes = 0
        if index is not None and controls is not None:
            with _blas_limit(1):
                controls.append(canary())
        for run in timed:
            if (index is not None and index >= here[run.case.id]) or run.result.error:
                continue
            try:
                _visit(run, threads, repeats or run.case.repeats, min_time or run.case.min_time, index,
                       validate)
            except CaseError as exc:
                run.result.error = f"{run.where(exc.key)}: {exc}"
            except Exception as exc:  # noqa: BLE001 - a failing case is reported and the run goes on
                run.result.error = f"{type(exc).__name__}: {exc}"
            if run.result.error:
                run.plan = run.inputs = None
            else:
                kept_bytes += _nbytes(run.inputs) + _nbytes(run.plan)
                if kept_bytes > KEEP_INPUTS_BYTES:  # rebuilt next round, deterministically
                    kept_bytes -= _nbytes(run.inputs) + _nbytes(run.plan)
                    run.plan = run.inputs = None
            if on_step:
                on_step(run.case.id, "warm-up" if index is None else f"round {index + 1}", 1)
    for process in range(1, processes if timed else 1):
        _time_in_fresh_process(timed, n_rounds, process, processes, (threads, repeats, min_time, limit),
                               on_step, controls)
    for run in timed:
        if run.timing.samples and run.result.error is None:
            run.result.timing = _timing_record(run, min_time or run.case.min_time)
        run.plan = run.inputs = None
    slots = [r.result if isinstance(r, _CaseRun) else r for r in slots]
    flush()
    return [] if emit is not None else slots


def _time_in_parallel(timed: list, executor, workers: int, settings: tuple, on_step, n_rounds: dict,
                      controls: list | None) -> None:
    """--parallel-timed: the timed cases dealt round-robin into `workers` groups, each timed by
    time_group in a worker; every run's result is replaced by the worker's."""
    groups = [g for g in (timed[i::workers] for i in range(workers)) if g]
    futures = [executor.submit(time_group, [run.case for run in group], *settings) for group in groups]
    for group, future in zip(groups, futures):
        try:
            results, group_controls = future.result()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a worker died or the executor failed
            lost = [run.case.id for g in groups[groups.index(group):] for run in g]
            raise SweepError(f"a timing worker was lost ({type(exc).__name__}: {exc}); lost "
                             f"{', '.join(lost[:3])}{f' and {len(lost) - 3} more' if len(lost) > 3 else ''}"
                             ) from None
        for run, result in zip(group, results):
            run.result, run.plan, run.inputs = result, None, None
            if on_step:
                on_step(run.case.id, "timed", 1 + n_rounds[run.case.id])
        if controls is not None:
            controls += group_controls


def _rounds_here(count: int, processes: int, process: int = 0) -> int:
    """How many of a case's `count` rounds process `process` of `processes` times (the first,
    this one, takes what does not divide evenly)."""
    share, extra = divmod(count, processes)
    return share + (extra if process == 0 else 0)


def _time_in_fresh_process(timed: list, n_rounds: dict, process: int, processes: int, settings: tuple,
                           on_step, controls: list | None) -> None:
    """Time the rounds of process `process` in a fresh interpreter (spawned: nothing of this
    process's memory layout) and add its samples to each case's, numbered after the rounds
    before them. Interrupted, the process is stopped as a CI cancel stops this one (SIGTERM:
    a job it runs cleans up its ranks) before the interruption goes on."""
    import multiprocessing
    share = {run.case.id: _rounds_here(n_rounds[run.case.id], processes, process) for run in timed}
    runs = [run for run in timed if run.result.error is None and not registered_here(run.case.kind)
            and share[run.case.id]]
    if not runs:
        return
    cases = [dataclasses.replace(run.case, rounds=share[run.case.id]) for run in runs]
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_timing_process, args=(send, cases, settings), daemon=True)
    worker.start()
    send.close()
    try:
        try:
            results, its_controls = receive.recv()
        except EOFError:
            worker.join()
            raise SweepError(f"the timing process {process + 1} of {processes} ended without its results "
                             f"(exit code {worker.exitcode}); rerun with --processes 1 to time in this one") from None
        worker.join()
    except BaseException:
        if worker.is_alive():
            worker.terminate()
            worker.join(30)
            if worker.is_alive():
                worker.kill()
        raise
    finally:
        receive.close()
    if controls is not None:
        controls += its_controls
    for run, result in zip(runs, results):
        if result.error is not None:
            run.result.error = f"in timing process {process + 1}: {result.error}"
        elif result.timing:
            run.timing.merge(result.timing, max(run.timing.rounds, default=-1) + 1)
        if on_step:
            on_step(run.case.id, f"process {process + 1}", result.timing["rounds"] if result.timing else 0)


def _timing_process(send, cases: list, settings: tuple) -> None:
    """A fresh timing process: time these cases, send their results and canary figures."""
    threads, repeats, min_time, limit = settings
    send.send(time_group(cases, threads, repeats, None, min_time, limit, validate=False))
    send.close()


def time_group(cases: list, threads, repeats, rounds, min_time, memory_limit,
               validate: bool = True) -> tuple[list, list]:
    """One --parallel-timed group, or a fresh timing process's cases (validate=False), in a
    worker process: its results and its canary figures."""
    controls: list = []
    results = run_suite(cases, threads, repeats, rounds, min_time, memory_limit, controls=controls,
                        validate=validate)
    return results, controls


def run_case(case: Case, threads: int = 1, repeats: int | None = None, rounds: int | None = 1) -> CaseResult:
    """One case through run_suite (an InputError is raised, not returned)."""
    return run_suite([case], threads, repeats, rounds)[0]


def case_results(results: list) -> list[CaseResult]:
    """run_suite's results with every table chunk as CaseResults (small runs, tests)."""
    out = []
    for result in results:
        if isinstance(result, TableChunk):
            out += [CaseResult(case, metrics) for case, metrics in zip(result.block.cases(result.start, result.stop),
                                                                       result.metric_rows())]
        else:
            out.append(result)
    return out


def canary() -> dict[str, float]:
    """A control measurement of the machine itself, taken every round: fixed work of four
    kinds (streaming memory traffic, cache-missing reads, numpy's BLAS, the interpreter), best
    of three each, none of it
    sysbench's own code (a change to a kernel must not move its own yardstick). A machine that
    got slower between two runs (a neighbour's load on the host, a clock step) shows it here
    too; compare holds case slowdowns against it."""
    rng = np.random.default_rng(0)
    source = rng.random(1 << 21)  # 16 MiB
    target = np.empty_like(source)
    a, b = rng.random((128, 128)), rng.random((128, 128))
    scattered = rng.integers(0, source.size, 1 << 18)  # cache-missing reads, as a scatter-add does

    def interpreter():
        total = 0
        for i in range(20000):
            total += i * i
        return total

    probes = {"memory": lambda: np.copyto(target, source), "gather": lambda: source.take(scattered),
              "blas": lambda: a @ b, "python": interpreter}
    out = {}
    for name, probe in probes.items():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            probe()
            best = min(best, time.perf_counter() - start)
        out[name] = best
    return out


def _model(run: _CaseRun, memory_limit: int | None, problems: list[str]) -> None:
    case, workload = run.case, run.workload
    try:
        need = workload.working_set(case.params, case.array, case.numerics)
        if memory_limit is not None and need > memory_limit:
            hint = "; numerics = false gives the model alone" if case.numerics else ""
            problems.append(f"{case.source}: case {case.name!r}: needs about {_human(need)} of memory, "
                            f"more than the {_human(memory_limit)} available (--max-memory){hint}")
            return
        run.plan = workload.plan(case.params, case.array)
        run.result.metrics = workload.model(case.params, case.array, run.plan)
    except CaseError as exc:
        problems.append(f"{run.where(exc.key)}: {exc}")
    except Exception as exc:  # noqa: BLE001
        run.result.error = f"model: {type(exc).__name__}: {exc}"
        run.plan = None
    if not case.numerics:
        run.plan = None


def _visit(run: _CaseRun, threads: int, repeats: int, min_time: float, round_index: int | None,
           validate: bool = True) -> None:
    """One visit of a timed case. round_index None: the warm-up round (calibration, warm-up
    calls and validation, nothing recorded): the first moments of a run (the clock ramping
    up, caches and pages cold) otherwise make every case's first round the slow one."""
    case, workload, timing = run.case, run.workload, run.timing
    if run.plan is None:
        run.plan = workload.plan(case.params, case.array)
    if run.inputs is None:
        run.inputs = workload.inputs(case.params, case.array, run.plan, np.random.default_rng(case.seed))
    first = run.visits == 0  # the visit that calibrates and validates
    ctx = Run(case.params, case.array, run.plan, run.inputs, threads, case.warmup, repeats, min_time,
              validates=first and validate)
    spec = workload.timed(ctx)
    if round_index is None and spec.self_timed:
        return  # a job times its own warm-up: its first round validates (visits stays 0)
    run.visits += 1
    output = None
    with _blas_limit(threads):
        for _ in range(0 if spec.self_timed else case.warmup):
            if spec.reset is not None:
                spec.reset()
            output = spec.call()
        if first and not spec.self_timed:
            timing.number, timing.calibration = calibrate(spec.call, min_time, spec.reset)
        if first:
            for name, peer in spec.peers.items():
                peer_timing = timing.peers.setdefault(name, _Timing())
                peer_timing.number, peer_timing.calibration = calibrate(peer, min_time)
        if round_index is None:
            if output is None or spec.reset is not None:
                if spec.reset is not None:
                    spec.reset()
                output = spec.call()
        else:
            before = min(control_probe() for _ in range(3)) if spec.self_timed else control_probe()
            for _ in range(repeats):
                wall, cpu, output = _time_calls(spec.call, timing.number, spec.reset)
                if isinstance(output, SelfTimed):
                    timing.own_jobs = True
                    timing.samples += output.samples
                    timing.rounds += [round_index] * len(output.samples)
                    if output.controls is not None and len(output.controls) == len(output.samples):
                        timing.controls += output.controls
                    else:  # a job that times no controls: the slower of those around it
                        control = max(before, min(control_probe() for _ in range(3)))
                        timing.controls += [control] * len(output.samples)
                    if first:
                        run.result.measured.update(output.measured)
                    output = output.output
                    break  # the job ran all its repeats inside
                timing.samples.append(wall)
                timing.cpu_samples.append(cpu)
                timing.rounds.append(round_index)
                # a sample's control: the slower of the probes just before and just after it
                after = control_probe()
                timing.controls.append(max(before, after))
                before = after
            for name, peer in spec.peers.items():
                peer_timing = timing.peers[name]
                for _ in range(repeats):
                    wall, _, _ = _time_calls(peer, peer_timing.number)
                    peer_timing.samples.append(wall)
                    peer_timing.rounds.append(round_index)
    if first and validate:
        with _blas_limit(threads if workload.reference_uses_case_threads else 1):
            run.result.validation = workload.validate(ctx, output).to_dict()
            run.result.measured.update(workload.observe(ctx, output))


def _timing_record(run: _CaseRun, min_time: float) -> dict:
    timing = run.timing
    controls = timing.controls if len(timing.controls) == len(timing.samples) else None
    record = summarize(timing.samples, timing.rounds, controls)
    record.update({
        "number": timing.number,
        "min_time_s": min_time,
        "rounds": len(set(timing.rounds)),
        "repeats": len(timing.samples) // max(1, len(set(timing.rounds))),
        "calibration": timing.calibration,
        "samples_s": timing.samples,
        "sample_rounds": timing.rounds,
    })
    if timing.numbers:
        record["process_numbers"] = [timing.number] + timing.numbers
    if timing.own_jobs:
        record["rounds_in_own_jobs"] = True
    if controls:
        record["controls_s"] = controls
    if timing.cpu_samples and len(timing.cpu_samples) == len(timing.samples):
        record["cpu_samples_s"] = timing.cpu_samples
    if timing.peers:
        record["peers"] = {}
        for name, peer in timing.peers.items():
            summary = summarize(peer.samples, peer.rounds)
            record["peers"][name] = {
                "median_s": summary["median_s"], "min_s": summary["min_s"], "spread": summary["spread"],
                "number": peer.number, "samples_s": peer.samples, "sample_rounds": peer.rounds,
                # peer time / kernel time: above 1, the kernel is faster than the peer
                "ratio": summary["median_s"] / record["median_s"] if record["median_s"] else None,
            }
    return record
