"""Suite files (TOML) -> validated, expanded cases.

Every error in a file is collected and reported together before anything runs; each names
the file, the case and the key.
"""
from __future__ import annotations

import difflib
import itertools
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .hardware import ARRAY_KEYS, Array
from .workloads import registry
from .workloads.base import COMMON_KEYS, Key

TOP_KEYS = ("name", "description", "defaults", "arrays", "cases")


class SuiteError(Exception):
    """One or more problems in suite files; str() lists them one per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Case:
    id: str
    suite: str
    name: str
    kind: str
    params: dict  # kind-specific keys, parsed (pairs as tuples, paths resolved)
    array: Array
    numerics: bool
    repeats: int
    warmup: int
    seed: int
    source: str = ""  # the file it came from, for error messages
    swept: dict = field(default_factory=dict)

    def params_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    cases: list[Case]


def bundled_suites() -> dict[str, Path]:
    """Suites shipped with the package, by name."""
    folder = resources.files("sysbench.suites")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def resolve(spec: str) -> Path:
    """A bundled suite name or a path to a .toml file."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SuiteError([f"{spec}: no such suite file"])
        return path
    bundled = bundled_suites()
    if spec in bundled:
        return bundled[spec]
    hint = difflib.get_close_matches(spec, bundled, n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else f" (bundled: {', '.join(bundled)})"
    raise SuiteError([f"{spec}: no bundled suite or file of that name{extra}"])


def _did_you_mean(key: str, known) -> str:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def load(spec: str) -> Suite:
    """Load and validate one suite; raises SuiteError listing every problem."""
    path = resolve(spec)
    label = str(path) if not str(path).startswith(str(resources.files("sysbench.suites"))) \
        else f"{path.stem} (bundled {path.name})"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError([f"{label}: cannot read: {exc}"]) from None
    return load_text(text, path, label)


def load_text(text: str, path: Path, label: str) -> Suite:
    """Validate suite TOML `text`; `path` anchors relative paths and names the suite by
    default, `label` names it in messages (imports pass the source file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError([f"{label}: not valid TOML: {exc}"]) from None

    problems: list[str] = []
    where = lambda case, key: f"{label}: case {case!r} key {key!r}" if case else f"{label}: key {key!r}"

    for key in data:
        if key not in TOP_KEYS:
            problems.append(f"{where(None, key)}: unknown top-level key{_did_you_mean(key, TOP_KEYS)}")
    suite_name = data.get("name", path.stem)
    if not isinstance(suite_name, str):
        problems.append(f"{where(None, 'name')}: must be a string")
        suite_name = path.stem

    arrays, invalid_arrays = _load_arrays(data.get("arrays", {}), label, problems)
    kinds = registry()
    all_kind_keys = set(COMMON_KEYS)
    for w in kinds.values():
        all_kind_keys |= set(w.keys)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append(f"{where(None, 'defaults')}: must be a table")
        defaults = {}
    for key in defaults:
        if key in ("name", "kind") or key not in all_kind_keys:
            problems.append(f"{label}: [defaults] key {key!r}: unknown key{_did_you_mean(key, all_kind_keys)}")

    raw_cases = data.get("cases", [])
    if not isinstance(raw_cases, list) or not all(isinstance(c, dict) for c in raw_cases):
        problems.append(f"{label}: 'cases' must be an array of tables ([[cases]])")
        raw_cases = []
    if not raw_cases and not problems:
        problems.append(f"{label}: no [[cases]]")

    cases: list[Case] = []
    seen_names: set[str] = set()
    for index, raw in enumerate(raw_cases):
        cname = raw.get("name")
        if not isinstance(cname, str) or not cname:
            cname_label = f"#{index + 1}"
            problems.append(f"{where(cname_label, 'name')}: missing (every case needs a name)")
        else:
            cname_label = cname
            if cname in seen_names:
                problems.append(f"{where(cname, 'name')}: duplicate case name")
            seen_names.add(cname)
        cases.extend(_expand_case(raw, defaults, arrays, invalid_arrays, kinds, suite_name,
                                  cname_label, path, label, problems))
    if problems:
        raise SuiteError(problems)
    return Suite(suite_name, data.get("description", ""), path, cases)


def _load_arrays(raw: Any, label: str, problems: list[str]) -> tuple[dict[str, Array], set[str]]:
    """Valid arrays by name, and the names of those with errors (already reported)."""
    arrays: dict[str, Array] = {}
    if not isinstance(raw, dict):
        problems.append(f"{label}: 'arrays' must be a table of [arrays.NAME] tables")
        return arrays, set()
    for name, table in raw.items():
        if not isinstance(table, dict):
            problems.append(f"{label}: array {name!r}: must be a table")
            continue
        values, ok = {}, True
        for key, value in table.items():
            if key not in ARRAY_KEYS:
                problems.append(f"{label}: array {name!r} key {key!r}: unknown key{_did_you_mean(key, ARRAY_KEYS)}")
                ok = False
                continue
            typ, rule, _ = ARRAY_KEYS[key]
            key_spec = Key("float" if typ is float else typ.__name__,
                           choices=rule if isinstance(rule, tuple) else None)
            parsed, error = key_spec.parse(value)
            if error is None and rule == "positive" and parsed <= 0:
                error = f"must be positive, got {value!r}"
            if error:
                problems.append(f"{label}: array {name!r} key {key!r}: {error}")
                ok = False
            else:
                values[key] = parsed
        if ok:
            arrays[name] = Array(name=name, **values)
    return arrays, set(raw) - set(arrays)


def _expand_case(raw, defaults, arrays, invalid_arrays, kinds, suite_name, cname, path, label,
                 problems) -> list[Case]:
    where = lambda key: f"{label}: case {cname!r} key {key!r}"
    kind = raw.get("kind")
    if kind is None:
        problems.append(f"{where('kind')}: missing (one of {', '.join(kinds)})")
        return []
    if kind not in kinds:
        problems.append(f"{where('kind')}: unknown kind {kind!r}{_did_you_mean(str(kind), kinds)}"
                        f"; known: {', '.join(kinds)}")
        return []
    workload = kinds[kind]
    spec = {**COMMON_KEYS, **workload.keys}

    merged = {k: v for k, v in defaults.items() if k in spec and k not in ("name", "kind")}
    merged.update(raw)
    ok = True
    for key in raw:
        if key not in spec:
            problems.append(f"{where(key)}: unknown key for kind {kind!r}{_did_you_mean(key, spec)}")
            ok = False
    for key, key_spec in spec.items():
        if key_spec.required and key not in merged:
            problems.append(f"{where(key)}: missing (required for kind {kind!r})")
            ok = False
    if not ok:
        return []

    # Sweep: one case per combination of list values.
    swept_keys = [k for k in merged if k not in ("name", "kind") and spec[k].is_sweep(merged[k])]
    for key in swept_keys:
        if not merged[key]:
            problems.append(f"{where(key)}: an empty list sweeps nothing")
            return []
    combos = itertools.product(*(merged[k] for k in swept_keys)) if swept_keys else [()]
    cases = []
    for combo in combos:
        values = {k: v for k, v in merged.items() if k not in ("name", "kind")}
        values.update(zip(swept_keys, combo))
        parsed, case_ok = {}, True
        for key, key_spec in spec.items():
            if key in ("name", "kind"):
                continue
            value = values.get(key, key_spec.default)
            if value is None and not key_spec.required:
                parsed[key] = None
                continue
            result, error = key_spec.parse(value)
            if error:
                message = f"{where(key)}: {error}"
                if message not in problems:
                    problems.append(message)
                case_ok = False
                continue
            if key_spec.kind == "path":
                result = str((path.parent / result).resolve()) if not Path(result).is_absolute() else result
            parsed[key] = result
        array_name = parsed.pop("array", None)
        if array_name is None:
            if workload.needs_array:
                hint = f" (arrays here: {', '.join(arrays)})" if arrays else " and the suite defines no [arrays.*]"
                problems.append(f"{where('array')}: missing{hint}")
                continue
            array = Array()
        elif array_name in invalid_arrays:
            continue  # its own errors are already reported
        elif array_name not in arrays:
            hint = _did_you_mean(array_name, arrays) or (f" (defined: {', '.join(arrays)})" if arrays else "")
            problems.append(f"{where('array')}: no array named {array_name!r}{hint}")
            continue
        else:
            array = arrays[array_name]
        # A key the case sets itself (not via [defaults]) that its other keys make moot is a
        # mistake worth naming: nothing would read it.
        for key in raw if case_ok else ():
            reason = spec[key].applies(parsed) if spec[key].applies else None
            if reason:
                message = f"{where(key)}: not used by this case: {reason}"
                if message not in problems:
                    problems.append(message)
                case_ok = False
        if not case_ok:
            continue
        common = {k: parsed.pop(k) for k in ("numerics", "repeats", "warmup", "seed")}
        for key, message in workload.check(parsed, array):
            problems.append(f"{where(key)}: {message}")
            case_ok = False
        if not case_ok:
            continue
        swept = dict(zip(swept_keys, combo))
        tag = ",".join(f"{k}={_short(v)}" for k, v in swept.items())
        case_id = f"{suite_name}/{cname}" + (f"[{tag}]" if tag else "")
        cases.append(Case(case_id, suite_name, cname, kind, parsed, array, source=label,
                          swept=swept, **common))
    return cases


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(map(str, value))
    return str(value)
