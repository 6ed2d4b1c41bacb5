"""The result document (schema sysbench.result/2): build, save atomically, load.

/2 (this version): every timed case records how it was timed: `number` calls per sample
(calibrated to `min_time_s`), `rounds`, each sample's round (`sample_rounds`), the robust
`spread` and `stable` flag, per-round medians; validations name their `level` and `error_kind`.
/1 files (one burst of single-call samples) are still read by show and compare.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sysconfig
from pathlib import Path

import numpy as np

from . import __version__, output

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


def _first_lines(commands: dict[str, list[str]], cwd: Path) -> dict[str, str | None]:
    """The stdout of each command (None when it fails), all started at once: three tools that
    each take ~10 ms to start cost one such wait instead of three."""
    running = {}
    for name, command in commands.items():
        try:
            running[name] = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True)
        except OSError:
            running[name] = None
    out = {}
    for name, proc in running.items():
        try:
            text, _ = proc.communicate(timeout=5) if proc is not None else (None, None)
        except subprocess.TimeoutExpired:
            proc.kill()
            text = None
        out[name] = text if proc is not None and proc.returncode == 0 else None
    return out


def _provenance(cc: str | None) -> dict:
    """git commit, whether the tree was dirty, and the compiler's version line."""
    here = Path(__file__).resolve().parent.parent
    commands = {"commit": ["git", "rev-parse", "HEAD"],
                "dirty": ["git", "status", "--porcelain", "--untracked-files=no"]}
    if cc:
        commands["compiler"] = cc.split()[:1] + ["--version"]
    out = _first_lines(commands, here)
    compiler = (out.get("compiler") or "").strip().splitlines()
    return {"git_commit": (out["commit"] or "").strip() or None,
            "git_dirty": None if out["dirty"] is None else bool(out["dirty"].strip()),
            "compiler_version": compiler[0] if compiler else None}


def _version_of(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed, or no metadata
        return None


def _cython_version() -> str | None:
    """The Cython that built the kernels (compiled into them), else the one installed: an
    editable install builds in an isolated environment, so no "Cython" distribution is found."""
    try:
        from ._kernels import config

        return config.cython_version()
    except (ImportError, AttributeError):  # kernels built before they recorded it
        pass
    try:
        import Cython

        return Cython.__version__
    except ImportError:
        return _version_of("Cython")


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
        "cython": _cython_version(),
        "openmp": openmp_enabled(),
        "sysbench": __version__,
        **_provenance(cc),
        "env": {name: os.environ[name] for name in THREAD_ENV if name in os.environ},
        "isa": kernel_isas(),
    }
    return info


def unstable_cases(document: dict) -> list[dict]:
    """Cases whose timing was flagged unstable (robust spread above stats.STABLE_SPREAD)."""
    return [c for c in document.get("cases", [])
            if isinstance(c.get("timing"), dict) and c["timing"].get("stable") is False]


def document_header(suites: list[str], threads: int, settings: dict) -> dict:
    """Everything of a result document but its cases."""
    from .stats import STABLE_SPREAD

    return {
        "schema": SCHEMA,
        "suite": "+".join(suites),
        "suites": suites,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(threads),
        "settings": {**settings, "stable_spread": STABLE_SPREAD},
    }


def build_document(suites: list[str], results, threads: int, settings: dict) -> dict:
    return dict(document_header(suites, threads, settings),
                cases=[null_non_finite(r.to_dict()) for r in results])


def null_non_finite(case: dict) -> dict:
    """Strict JSON has no NaN or Infinity: such a number becomes null, and the case's
    `non_finite` says what it was ({"validation.max_abs_err": "nan"}). In place; returns the case."""
    found: dict[str, str] = {}

    def clean(value, where):
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            found[where] = str(float(value))
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, np.ndarray):
            return clean(value.tolist(), where)
        return value

    cleaned = clean(case, "")
    if found:
        case.clear()
        case.update(cleaned, non_finite=found)
    return case


def dumps(document: dict) -> str:
    """Strict JSON (no NaN or Infinity, which strict parsers reject); a non-finite number is a bug."""
    return json.dumps(document, indent=2, default=_json_default, allow_nan=False) + "\n"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save(document: dict, path: str | os.PathLike) -> Path:
    """Write the document by output.py's rules: atomically to a file, streamed to a pipe or device."""
    output.write_text(path, dumps(document))
    return Path(path)


def load(path: str | os.PathLike) -> dict:
    """A result document, checked against the published schema (schema/result.schema.json);
    ResultError with one line naming the file (and the case) otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ResultError(f"{path}: is a directory, not a result file")
    try:
        document = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except _NotStrict as exc:
        raise ResultError(f"{path}: not strict JSON: {exc} is not a number JSON allows") from None
    except RecursionError:
        raise ResultError(f"{path}: not a result: nested too deeply") from None
    if not isinstance(document, dict) or document.get("schema") not in READABLE_SCHEMAS:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise ResultError(f"{path}: not a sysbench result this version reads (schema {found!r}; "
                          f"reads {', '.join(READABLE_SCHEMAS)})")
    if not isinstance(document.get("cases"), list):
        raise ResultError(f"{path}: 'cases' missing or not a list")
    problem = schema_problem(document)
    if problem:
        raise ResultError(f"{path}: damaged result: {problem}")
    return document


class _NotStrict(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NotStrict(name)


def schema() -> dict:
    """The published JSON schema of a result document."""
    from importlib import resources

    return json.loads(resources.files("sysbench").joinpath("schema/result.schema.json").read_text())


_VALIDATOR = None


def schema_problem(document: dict) -> str | None:
    """None when the document fits the schema, else the most relevant problem in one line."""
    global _VALIDATOR
    import jsonschema

    if _VALIDATOR is None:
        _VALIDATOR = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(document))
    if error is None:
        return None
    where = list(error.absolute_path)
    label = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".") or "the document"
    if len(where) >= 2 and where[0] == "cases" and isinstance(where[1], int):
        case = document["cases"][where[1]]
        rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where[2:]).lstrip(".")
        name = (repr(case["id"]) if isinstance(case, dict) and isinstance(case.get("id"), str)
                else f"#{where[1] + 1}")
        label = f"case {name}" + (f" ({rest})" if rest else "")
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        message = f"must be {' or '.join(expected)}, got {_json_type(error.instance)}"
    else:
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{label}: {message}"


def _json_type(value) -> str:
    for name, types in (("null", type(None)), ("boolean", bool), ("integer", int), ("number", float),
                        ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, types):
            return name
    return type(value).__name__
