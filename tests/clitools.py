"""Running the sysbench command line in a subprocess, as a user does."""
import os
import subprocess
import sys


def sysbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sysbench", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, timeout=600)


def assert_clean_error(proc, *fragments):
    """Exit 2 with one line on stderr holding every fragment, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
