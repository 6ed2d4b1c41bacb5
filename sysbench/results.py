"""The result document (schema sysbench.result/1): build, save atomically, load."""
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

SCHEMA = "sysbench.result/1"

# A case whose timing samples vary more than this (standard deviation / mean) is flagged
# unstable: pyperf warns at the same 10%. Its timings should not be trusted for a comparison.
STABILITY_CV = 0.10

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
    from . import openmp_enabled

    cc = sysconfig.get_config_var("CC")
    info = {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
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
    }
    try:
        from ._kernels import systolic

        info["isa"] = systolic.isa()
    except (ImportError, AttributeError):
        pass
    return info


def stability(samples: list[float], limit: float = STABILITY_CV) -> tuple[float | None, bool | None]:
    """(coefficient of variation, stable?) of timing samples; (None, None) below two samples."""
    if len(samples) < 2:
        return None, None
    values = np.asarray(samples, dtype=np.float64)
    mean = float(values.mean())
    cv = float(values.std(ddof=1) / mean) if mean > 0 else 0.0
    return cv, cv <= limit


def mark_stability(case: dict, limit: float = STABILITY_CV) -> dict:
    """Add `cv` and `stable` to a case's timing (in place; returns the case)."""
    timing = case.get("timing")
    if isinstance(timing, dict) and isinstance(timing.get("samples_s"), list):
        timing["cv"], timing["stable"] = stability(timing["samples_s"], limit)
    return case


def unstable_cases(document: dict) -> list[dict]:
    """Cases whose timing was flagged unstable (cv above the threshold)."""
    return [c for c in document.get("cases", [])
            if isinstance(c.get("timing"), dict) and c["timing"].get("stable") is False]


def build_document(suites: list[str], results, threads: int, settings: dict) -> dict:
    settings = {**settings, "stability_cv": STABILITY_CV}
    return {
        "schema": SCHEMA,
        "suite": "+".join(suites),
        "suites": suites,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(threads),
        "settings": settings,
        "cases": [mark_stability(r.to_dict()) for r in results],
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
    return write_atomic(path, dumps(document))


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write atomically: a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise ResultError(f"{path}: not a {SCHEMA} document (schema: {found!r})")
    if not isinstance(document.get("cases"), list):
        raise ResultError(f"{path}: 'cases' missing or not a list")
    return document
