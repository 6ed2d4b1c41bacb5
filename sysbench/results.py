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


def _blas() -> str | None:
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # numpy's config layout is not a stable API
        return None


def machine_info(threads: int) -> dict:
    from . import openmp_enabled

    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas(),
        "compiler": sysconfig.get_config_var("CC"),
        "openmp": openmp_enabled(),
        "sysbench": __version__,
        "git_commit": _git_commit(),
    }
    try:
        from ._kernels import systolic

        info["isa"] = systolic.isa()
    except (ImportError, AttributeError):
        pass
    return info


def build_document(suites: list[str], results, threads: int, settings: dict) -> dict:
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
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise ResultError(f"{path}: not a {SCHEMA} document (schema: {found!r})")
    if not isinstance(document.get("cases"), list):
        raise ResultError(f"{path}: 'cases' missing or not a list")
    return document
