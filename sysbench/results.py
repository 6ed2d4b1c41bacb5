"""The result document (schema sysbench.result/2): build, save atomically, load.

/2 (this version): every timed case records how it was timed: `number` calls per sample
(calibrated to `min_time_s`), `rounds`, each sample's round (`sample_rounds`), the robust
`spread` and `stable` flag, per-round medians; validations name their `level` and `error_kind`.
/1 files (one burst of single-call samples) are still read by show and compare.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

from . import __version__

SCHEMA = "sysbench.result/2"
READABLE_SCHEMAS = ("sysbench.result/1", SCHEMA)

# Environment variables that change how many threads BLAS/OpenMP use, or which kernels they pick.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


class ResultError(Exception):
    """A result file that cannot be read or is not a sysbench result."""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _git_dirty() -> bool | None:
    """True when the working tree has uncommitted changes to tracked files."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def _compiler_version(cc: str | None) -> str | None:
    """First line of `CC --version` (the compiler that built the extensions, as Python records it)."""
    if not cc:
        return None
    try:
        out = subprocess.run(cc.split()[:1] + ["--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else None


def _version_of(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed, or no metadata
        return None


def _blas() -> str | None:
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # numpy's config layout is not a stable API
        return None


def machine_info(threads: int) -> dict:
    from . import kernel_isas, openmp_enabled
    from .runner import available_cpus

    cc = sysconfig.get_config_var("CC")
    info = {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cpus_available": available_cpus(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "blas": _blas(),
        "compiler": cc,
        "compiler_version": _compiler_version(cc),
        "cython": _version_of("Cython"),
        "openmp": openmp_enabled(),
        "sysbench": __version__,
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
        "env": {name: os.environ[name] for name in THREAD_ENV if name in os.environ},
        "isa": kernel_isas(),
    }
    return info


def unstable_cases(document: dict) -> list[dict]:
    """Cases whose timing was flagged unstable (robust spread above stats.STABLE_SPREAD)."""
    return [c for c in document.get("cases", [])
            if isinstance(c.get("timing"), dict) and c["timing"].get("stable") is False]


def build_document(suites: list[str], results, threads: int, settings: dict) -> dict:
    from .stats import STABLE_SPREAD

    settings = {**settings, "stable_spread": STABLE_SPREAD}
    return {
        "schema": SCHEMA,
        "suite": "+".join(suites),
        "suites": suites,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(threads),
        "settings": settings,
        "cases": [r.to_dict() for r in results],
    }


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, default=_json_default) + "\n"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save(document: dict, path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(document)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, dict) or document.get("schema") not in READABLE_SCHEMAS:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise ResultError(f"{path}: not a sysbench result this version reads (schema {found!r}; "
                          f"reads {', '.join(READABLE_SCHEMAS)})")
    if not isinstance(document.get("cases"), list):
        raise ResultError(f"{path}: 'cases' missing or not a list")
    return document
