"""`python -m sysbench.distributed.supervise OUTDIR -- COMMAND...`: run one rank's COMMAND as a
child and record how it ended in OUTDIR/rank<r>.exit.

mpiexec alone cannot say which rank died: when one is killed it ends the others with the same
signal and lists the processes in no fixed order (under load, only the rank it killed itself).
The child's parent is the one process that gets its exit status from the kernel, so each rank
gets a small parent that writes it down ("signal 9 <time>") and then ends the same way, so that
mpiexec sees what it would have seen without it. Only the standard library is imported here:
the supervisor must start fast and hold no MPI state (the child inherits the PMI descriptors).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _die_with_parent():
    """In the child: be killed if the supervisor is (mpiexec ends the job by killing its own
    children, which are the supervisors), so no rank outlives its job."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):   # not Linux: the process-group kill still ends it
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m sysbench.distributed.supervise OUTDIR -- COMMAND...\n")
        return 2
    outdir, command = Path(argv[0]), argv[2:]
    rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "x"))
    child = subprocess.Popen(command, close_fds=False, preexec_fn=_die_with_parent)
    # a signal meant for the rank (mpiexec forwards Ctrl-C) goes to the child, so that the
    # supervisor outlives it long enough to record how it ended
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, frame: child.send_signal(signum))
    code = child.wait()
    record = f"signal {-code}" if code < 0 else f"code {code}"
    try:
        (outdir / f"rank{rank}.exit").write_text(f"{record} {time.time():.6f}\n")
    except OSError:
        pass
    if code < 0:   # end as the child did
        if -code in FORWARDED:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
