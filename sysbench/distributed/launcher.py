"""Launch a distributed job on this machine: `mpiexec -n R python -m sysbench.distributed.worker`
(each rank under a small supervisor that records how it ended), wait for it with a timeout, turn
every way it can fail into one clear error.

The job ends, never hangs: each rank's watchdog exits when it sees no progress for timeout_s
(mpiexec then ends the others); as a backstop the launcher kills the whole process group when
no rank has reported progress (OUTDIR/rank<r>.beat, rewritten by each rank's watchdog as layers
complete) for timeout_s plus a grace period.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

STARTUP_S = 60.0     # MPI start-up and imports, before the first heartbeat
GRACE_S = 5.0


class DistributedError(RuntimeError):
    """The job failed: a rank died, hung, raised, or mpiexec could not start."""


def in_mpi_job() -> bool:
    """True when this process is one rank of a job of more than one rank (run under mpiexec)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "1").isdigit() and int(os.environ.get(var, "1")) > 1:
            return True
    return False


def find_mpiexec() -> str:
    """SYSBENCH_MPIEXEC, else the mpiexec beside this Python (the mpich wheel puts it there), else PATH."""
    env = os.environ.get("SYSBENCH_MPIEXEC")
    if env:
        return env
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise DistributedError("no mpiexec found: install the MPI wheel (pip install mpich) or set SYSBENCH_MPIEXEC")
    return found


def launch(spec: dict, ranks: int, timeout_s: float, threads: int = 1, async_progress: bool = False,
           keep: Path | None = None) -> dict:
    """Run `spec` on `ranks` local ranks; rank 0's result (with 'weights' loaded when written).

    However it ends (an error, Ctrl-C, SIGTERM from a CI cancel or `timeout`), the job's
    process group is killed and its temporary folder removed before launch returns or the
    signal takes effect."""
    if not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be a positive integer, got {ranks!r}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    spec = dict(spec, ranks=ranks, timeout_s=timeout_s)
    with _unwind_on_signals():
        tmp = tempfile.TemporaryDirectory(prefix="sysbench-mpi-")
        try:
            outdir = Path(keep) if keep else Path(tmp.name)
            outdir.mkdir(parents=True, exist_ok=True)
            return _run_job(spec, ranks, timeout_s, threads, async_progress, outdir)
        finally:
            tmp.cleanup()


def _run_job(spec: dict, ranks: int, timeout_s: float, threads: int, async_progress: bool,
             outdir: Path) -> dict:
    spec_path = outdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["MPIR_CVAR_ASYNC_PROGRESS"] = "1" if async_progress else "0"
    cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, "-m", "sysbench.distributed.supervise",
           str(outdir), "--", sys.executable, "-m", "sysbench.distributed.worker", str(spec_path), str(outdir)]
    with open(outdir / "mpiexec.log", "w+b") as log:
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        except OSError as exc:
            raise DistributedError(f"cannot start {cmd[0]}: {exc}") from None
        try:
            code = _wait(proc, outdir, ranks, timeout_s)
            log.seek(0)
            output = log.read().decode(errors="replace")
        finally:
            if proc.poll() is None:
                _kill(proc)
    if code is None:
        raise DistributedError(_explain(outdir, ranks, output, None,
                                        f"the job made no progress for {timeout_s:g} s (timeout_s) and was killed"))
    if code != 0 or not (outdir / "result.json").exists():
        raise DistributedError(_explain(outdir, ranks, output, code, None))
    result = json.loads((outdir / "result.json").read_text())
    for name in ("weights", "reference", "full_batch"):
        if (outdir / f"{name}.npy").exists():
            result[name] = np.load(outdir / f"{name}.npy")
    return result


# Signals that end a run; while a job runs they unwind launch() first (see _unwind_on_signals).
_ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


class _Interrupted(BaseException):
    """Raised by the signal handler so that launch's cleanup runs; never leaves launch()."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _unwind_on_signals():
    """While the block runs, SIGTERM / SIGINT / SIGHUP raise _Interrupted, so that the block's
    `finally`s kill the job and remove its folder (the default action of SIGTERM would end the
    process on the spot and leave both behind). Then the handler that was there before gets
    the signal: by default the process ends by that signal (exit status 128 + signum, 143 for
    SIGTERM), SIGINT raises KeyboardInterrupt as usual, and a handler the caller installed runs.
    A signal that was ignored stays ignored. Only the main thread can handle signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, pending = {}, []

    def interrupted(signum, frame):
        pending.append(signum)
        if len(pending) == 1:  # a second signal must not cut the cleanup the first one started
            raise _Interrupted(signum)

    for signum in _ENDING_SIGNALS:
        old = signal.getsignal(signum)
        if old in (signal.SIG_IGN, None):  # ignored (nohup), or set outside Python: leave it
            continue
        previous[signum] = old
        signal.signal(signum, interrupted)

    def restore():
        for signum, old in previous.items():
            signal.signal(signum, old)

    try:
        yield
    except _Interrupted as exc:
        restore()
        signal.raise_signal(exc.signum)  # the old handler, or the default action, now
        name = signal.Signals(exc.signum).name
        raise DistributedError(f"the job was stopped by {name}") from None  # a handler that returned
    finally:
        restore()


def _wait(proc, outdir: Path, ranks: int, timeout_s: float):
    """mpiexec's exit code, or None after killing a job whose ranks stopped beating."""
    started = time.monotonic()
    last_change, last_seen = started, None
    while True:
        try:
            return proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        beats = tuple(_read(outdir / f"rank{r}.beat") for r in range(ranks))
        if beats != last_seen:
            last_seen, last_change = beats, now
        limit = timeout_s + GRACE_S + (STARTUP_S if not any(beats) else 0.0)
        if now - last_change > limit:
            _kill(proc)
            return None


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _explain(outdir: Path, ranks: int, output: str, code, headline) -> str:
    """One message: which rank failed and how, from the ranks' own reports and mpiexec's."""
    errors = [_read(outdir / f"rank{r}.error") for r in range(ranks)]
    errors = [e for e in errors if e]
    if headline or (errors and all("blocked in" in e for e in errors)):
        behind = _behind(outdir, ranks)
        if behind is not None:
            errors.append(behind)
    started = {}   # rank -> (pid, host) of the ranks that wrote their pid file
    for r in range(ranks):
        fields = _read(outdir / f"rank{r}.pid").split()
        if fields:
            started[r] = (fields[0], fields[1] if len(fields) == 2 else "its host")
    pids = {pid: r for r, (pid, _) in started.items()}
    lines = [headline] if headline else []
    lines += errors
    # each rank's supervisor recorded how it ended; the first one killed by a signal is the one
    # that died (mpiexec then ends the others, with the same signal)
    killed = _killed_first(outdir, ranks, started)
    if killed and not errors:
        lines.append(killed + "; mpiexec ended the job")
    # mpiexec reports every process that ended badly (the one that died, and those it then
    # ended itself), in no fixed order: name each of them
    reported = []
    for pid, host, status in re.findall(r"PID (\d+) RUNNING AT (\S+)\s*=\s*EXIT CODE: (\d+)", output):
        who = f"rank {pids[pid]}" if pid in pids else f"process {pid}"
        status = int(status)
        how = (_killed_by(status) if 0 < status < 32 and status in signal.Signals._value2member_map_
               else f"exited with code {status}")
        entry = f"{who} on {host} {how}"
        if entry not in reported:
            reported.append(entry)
    if reported and not errors and not killed:
        lines.append(", ".join(sorted(reported)) + "; mpiexec ended the job")
    if not lines:
        tail = " | ".join(l.strip() for l in output.strip().splitlines()[-5:] if l.strip())
        lines.append(f"mpiexec exited with code {code}" + (f": {tail}" if tail else ""))
    missing = [r for r in range(ranks) if r not in started]
    if missing and len(missing) < ranks:
        lines.append(f"ranks {missing} never started")
    return "; ".join(lines)


def _killed_first(outdir: Path, ranks: int, started: dict) -> str | None:
    ends = []
    for r in range(ranks):
        fields = _read(outdir / f"rank{r}.exit").split()
        if len(fields) == 3 and fields[0] == "signal" and fields[1].isdigit():
            ends.append((float(fields[2]), r, int(fields[1])))
    if not ends:
        return None
    _, r, signum = min(ends)
    return f"rank {r} on {started[r][1] if r in started else 'its host'} {_killed_by(signum)}"


def _killed_by(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "unknown signal"
    return f"was killed by signal {signum} ({name})"


def _behind(outdir: Path, ranks: int) -> str | None:
    """Every rank beats the same sequence up to the final gather, so when only ranks waiting
    on their peers reported (or none did), the rank with the fewest beats is the one that
    stopped: SIGSTOPped, or stuck where its own watchdog cannot run."""
    counts = {}
    for r in range(ranks):
        fields = _read(outdir / f"rank{r}.beat").split()
        counts[r] = (int(fields[1]), fields[0]) if len(fields) == 2 and fields[1].isdigit() else (0, "start-up")
    low = min(c for c, _ in counts.values())
    laggards = [r for r, (c, _) in counts.items() if c == low]
    if ranks < 2 or len(laggards) != 1:
        return None
    r = laggards[0]
    return f"rank {r} is the one behind (last reported at step {counts[r][1]}; the others went further)"
