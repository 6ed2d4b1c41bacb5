"""Suite files (TOML) -> validated, expanded cases.

Every error in a file is collected and reported together before anything runs; each names
the file, the case and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .hardware import ARRAY_KEYS, Array
from .sweep import Block
from .models.energy import EnergyError
from .models.energy import from_table as energy_table
from .models.memory import check_array as memory_problems
from .models.memory import word_bytes as memory_word_bytes
from .workloads import registry
from .workloads.base import COMMON_KEYS, Key, Params, keys_not_applying

TOP_KEYS = ("name", "description", "defaults", "arrays", "cases", "energy")


class SuiteError(Exception):
    """One or more problems in suite files; str() lists them one per line."""

    def __init__(self, problems: list[str]):
        problems = list(dict.fromkeys(problems))  # each distinct problem once (sweeps repeat them)
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Case:
    id: str
    suite: str
    name: str
    kind: str
    params: Params  # the kind's keys, parsed (pairs as tuples, paths resolved), normalized
    array: Array
    numerics: bool
    repeats: int
    warmup: int
    seed: int
    rounds: int = 3
    min_time: float = 0.005
    source: str = ""  # the file it came from, for error messages
    swept: dict = field(default_factory=dict)

    def params_json(self) -> dict:
        return self.params.to_json()


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    items: list  # Case, or sweep.Block: a model-only grid evaluated as a table

    @property
    def cases(self) -> list[Case]:
        """Every case, blocks expanded (for small suites and tests; the runner takes items)."""
        return [c for item in self.items for c in (item.cases() if isinstance(item, Block) else [item])]

    def __len__(self) -> int:
        return sum(len(item) if isinstance(item, Block) else 1 for item in self.items)


def bundled_suites() -> dict[str, Path]:
    """Suites shipped with the package, by name."""
    folder = resources.files("sysbench.suites")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def resolve(spec: str) -> Path:
    """A bundled suite name or a path to a .toml file."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise SuiteError([f"{spec}: is a directory, not a suite file (give a .toml file)"])
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
    arrays = _with_energy(arrays, data.get("energy"), path, label, problems, invalid_arrays)
    kinds = registry()
    # [defaults] keys must be keys of a kind this suite's cases use (only those are imported)
    all_kind_keys = set(COMMON_KEYS)
    for raw_case in data.get("cases", []) if isinstance(data.get("cases"), list) else []:
        kind = raw_case.get("kind") if isinstance(raw_case, dict) else None
        if isinstance(kind, str) and kind in kinds:
            all_kind_keys |= set(kinds[kind].keys)
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


def _load_arrays(raw: Any, label: str, problems: list[str]) -> tuple[dict[str, list[Array]], set[str]]:
    """Array families by name (a table whose keys hold lists sweeps: one array per combination,
    named by its swept values, e.g. a[rows=32,cols=64]; a plain table is a family of one), and
    the names of the tables with errors (already reported)."""
    families: dict[str, list[Array]] = {}
    if not isinstance(raw, dict):
        problems.append(f"{label}: 'arrays' must be a table of [arrays.NAME] tables")
        return families, set()
    for name, table in raw.items():
        if not isinstance(table, dict):
            problems.append(f"{label}: array {name!r}: must be a table")
            continue
        options, ok = {}, True
        for key, value in table.items():
            if key not in ARRAY_KEYS:
                problems.append(f"{label}: array {name!r} key {key!r}: unknown key{_did_you_mean(key, ARRAY_KEYS)}")
                ok = False
                continue
            typ, rule, _ = ARRAY_KEYS[key]
            key_spec = Key("float" if typ is float else typ.__name__,
                           choices=rule if isinstance(rule, tuple) else None)
            values = value if isinstance(value, list) else [value]
            if not values:
                problems.append(f"{label}: array {name!r} key {key!r}: an empty list sweeps nothing")
                ok = False
            parsed_values = []
            for item in values:
                parsed, error = key_spec.parse(item)
                if error is None and rule == "positive" and parsed <= 0:
                    error = f"must be positive, got {item!r}"
                if error:
                    message = f"{label}: array {name!r} key {key!r}: {error}"
                    if message not in problems:
                        problems.append(message)
                    ok = False
                parsed_values.append(parsed)
            options[key] = (isinstance(value, list), parsed_values)
        if not ok:
            continue
        swept = [k for k, (is_list, _) in options.items() if is_list]
        members = []
        for combo in itertools.product(*(options[k][1] for k in options)):
            values = dict(zip(options, combo))
            tag = ",".join(f"{k}={_short(values[k])}" for k in swept)
            array = Array(name=f"{name}[{tag}]" if swept else name, **values)
            for key, message in memory_problems(array):  # cross-key checks of the memory system
                message = f"{label}: array {array.name!r} key {key!r}: {message}"
                if message not in problems:
                    problems.append(message)
                ok = False
            members.append(array)
        if ok:
            families[name] = members
    return families, set(raw) - set(families)


def _with_energy(families: dict[str, list[Array]], table: Any, path: Path, label: str,
                 problems: list[str], invalid: set[str]) -> dict[str, list[Array]]:
    """Array families carrying the suite's [energy] table (resolved per dtype and word size)."""
    if table is None:
        return families
    if not isinstance(table, dict):
        problems.append(f"{label}: 'energy' must be a table ([energy])")
        return families
    out = {}
    for name, members in families.items():
        out[name] = []
        for array in members:
            try:
                energy = energy_table(table, path.parent, array.dtype, memory_word_bytes(array))
            except EnergyError as exc:
                problems.append(f"{label}: [energy] key {exc.key!r}: {exc}")
                return families
            out[name].append(dataclasses.replace(array, energy=energy))
    return out


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

    # Every value is parsed once, swept or not: options[key] = [(tag text, parsed value)].
    options: dict[str, list] = {}
    swept_keys = []
    for key, key_spec in spec.items():
        if key in ("name", "kind"):
            continue
        value = merged.get(key, key_spec.default)
        is_sweep = key in merged and key_spec.is_sweep(value)
        if is_sweep and not value:
            problems.append(f"{where(key)}: an empty list sweeps nothing")
            return []
        parsed_values = []
        for item in (value if is_sweep else [value]):
            if item is None and not key_spec.required:
                parsed_values.append((None, None))
                continue
            result, error = key_spec.parse(item)
            if error:
                message = f"{where(key)}: {error}"
                if message not in problems:
                    problems.append(message)
                ok = False
                continue
            if key_spec.kind == "path":
                result = str((path.parent / result).resolve()) if not Path(result).is_absolute() else result
            parsed_values.append((_short(item), result))
        options[key] = parsed_values
        if is_sweep:
            swept_keys.append(key)
    if not ok:
        return []
    # The array dimension: names resolve to their families (a family of many sweeps).
    members = []
    for _, array_name in options["array"]:
        if array_name is None:
            if workload.needs_array:
                hint = f" (arrays here: {', '.join(arrays)})" if arrays else " and the suite defines no [arrays.*]"
                problems.append(f"{where('array')}: missing{hint}")
                return []
            members.append(Array())
        elif array_name in invalid_arrays:
            return []  # its own errors are already reported
        elif array_name not in arrays:
            hint = _did_you_mean(array_name, arrays) or (f" (defined: {', '.join(arrays)})" if arrays else "")
            problems.append(f"{where('array')}: no array named {array_name!r}{hint}")
            return []
        else:
            members += arrays[array_name]
    options["array"] = [(a.name, a) for a in members]
    if len(members) > 1 and "array" not in swept_keys:
        swept_keys.append("array")
    swept_keys.sort(key=list(merged).index if all(k in merged for k in swept_keys) else swept_keys.index)
    if _table_path(workload, options, raw, spec):
        common = {k: options[k][0][1] for k in ("numerics", "repeats", "warmup", "seed", "rounds", "min_time")}
        return [Block(suite_name, cname, kind, label, options, swept_keys, list(workload.keys), common)]

    cases = []
    for combo in itertools.product(*(options[k] for k in swept_keys)):
        values = {k: opts[0][1] for k, opts in options.items()}
        values.update((k, parsed) for k, (_, parsed) in zip(swept_keys, combo))
        array = values.pop("array")
        # A key the case sets itself (not via [defaults]) that its other keys make moot is a
        # mistake worth naming: nothing would read it.
        moot = keys_not_applying(spec, values, raw)
        if _add_new(problems, [f"{where(key)}: not used by this case: {reason}" for key, reason in moot]):
            continue
        common = {k: values.pop(k) for k in ("numerics", "repeats", "warmup", "seed", "rounds", "min_time")}
        params = workload.normalize(workload.make_params(values), array)
        if _add_new(problems, [f"{where(key)}: {message}" for key, message in workload.check(params, array)]):
            continue
        swept = {k: tag for k, (tag, _) in zip(swept_keys, combo)}
        tag = ",".join(f"{k}={v}" for k, v in swept.items())
        case_id = f"{suite_name}/{cname}" + (f"[{tag}]" if tag else "")
        cases.append(Case(case_id, suite_name, cname, kind, params, array, source=label,
                          swept=swept, **common))
    return cases


def _add_new(problems: list, messages: list) -> bool:
    """Adds the messages not listed yet (a sweep repeats a case's problem); True if any."""
    problems.extend(m for m in dict.fromkeys(messages) if m not in problems)
    return bool(messages)


def _table_path(workload, options: dict, raw: dict, spec: dict) -> bool:
    """A case's grid goes the table path when its kind models tables, every combination is
    model only, its params need no normalizing and no key depends on another (applies), and its
    arrays have no memory system (modelled per case by its kernel)."""
    from .models.memory import has_memory
    from .workloads.base import Workload

    return (workload.model_table is not None and type(workload).normalize is Workload.normalize
            and all(value is False for _, value in options["numerics"])
            and not any(spec[key].applies for key in raw if key in spec)
            and not any(has_memory(array) or array.energy is not None for _, array in options["array"]))


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(map(str, value))
    return str(value)


def duplicate_ids(suites: list[Suite]) -> list[str]:
    """Problems for case ids that the suites of a run produce more than once: a suite given
    twice, two suites of the same `name` with cases of the same name, a sweep listing a value twice.

    An error rather than renamed ids: `compare` matches cases by id, and an id that depends on
    the order suites were given in would match the wrong case against a baseline."""
    problems, distinct = [], []
    for s in suites:
        if any(s.path == other.path for other in distinct):
            problems.append(f"{s.path}: suite {s.name!r} is given more than once")
        else:
            distinct.append(s)
    sources: dict[str, list[Suite]] = {}
    for s in distinct:
        for item in s.items:
            if isinstance(item, Block):  # its ids are unique unless a swept key repeats a value;
                # it clashes with another suite's block of the same suite and case name
                for key in item.swept:
                    tags = [tag for tag, _ in item.options[key]]
                    if len(set(tags)) < len(tags):
                        problems.append(f"{s.path}: case {item.name!r} key {key!r}: the sweep lists a value twice "
                                        f"(case ids would repeat)")
                sources.setdefault(f"{item.suite}/{item.name}[...]", []).append(s)
            else:
                sources.setdefault(item.id, []).append(s)
    clashes: dict[tuple, list[str]] = {}  # the files an id comes from -> the ids
    for case_id, found in sources.items():
        if len(found) > 1:
            clashes.setdefault(tuple(dict.fromkeys(str(s.path) for s in found)), []).append(case_id)
    for files, ids in clashes.items():
        shown = ", ".join(map(repr, ids[:3])) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        what = f"case id {shown}" if len(ids) == 1 else f"{len(ids)} case ids ({shown})"
        verb_s = "s" if len(ids) == 1 else ""
        if len(files) == 1:
            problems.append(f"{files[0]}: {what} appear{verb_s} more than once: a sweep lists a value twice")
        else:
            problems.append(f"{what} come{verb_s} from both {' and '.join(files)}: "
                            f"give the suites distinct `name`s (an id is name/case)")
    return problems
