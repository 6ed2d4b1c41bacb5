"""Energy per access: defaults with their published source, the suite's [energy] table and
Accelergy ERT/ART YAML files.

Defaults (pJ), 45 nm, from M. Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, as tabulated by Han et al., "EIE", ISCA 2016 (Table I): 32-bit SRAM access
5 pJ, 32-bit DRAM access 640 pJ (1.25 and 160 pJ per byte); multiply + add: fp32 3.7 + 0.9,
fp16 1.1 + 0.4 (used for bf16 too), int8 0.2 multiply + 0.1 for the 32-bit accumulate. The
ratios match the normalized costs of Sze et al., Proc. IEEE 2017 (DRAM ~200x a MAC, on-chip
buffer ~6x... here SRAM ~1x-2x per byte of a 32-bit MAC).
Per-word figures are per byte times the array's word bytes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KeyedError

SRAM_PJ_PER_BYTE = 5.0 / 4
DRAM_PJ_PER_BYTE = 640.0 / 4
MAC_PJ = {"fp32": 3.7 + 0.9, "fp16": 1.1 + 0.4, "bf16": 1.1 + 0.4, "int8": 0.2 + 0.1}
SOURCE = "Horowitz, ISSCC 2014 (45 nm), as tabulated in Han et al., ISCA 2016"

ACCESS_KEYS = ("mac_pj", "ifmap_sram_read_pj", "ifmap_sram_write_pj", "filter_sram_read_pj",
               "filter_sram_write_pj", "ofmap_sram_read_pj", "ofmap_sram_write_pj",
               "dram_read_pj", "dram_write_pj")
COMPONENTS = {"mac": "ert_mac", "ifmap_sram": "ert_ifmap_sram", "filter_sram": "ert_filter_sram",
              "ofmap_sram": "ert_ofmap_sram", "dram": "ert_dram"}
ENERGY_KEYS = {
    **{key: (float, "pJ per " + ("MAC" if key == "mac_pj" else "word access")) for key in ACCESS_KEYS},
    "ert": (str, "Accelergy ERT YAML: energy per action of the components named below"),
    "art": (str, "Accelergy ART YAML: area of the components named below (reported in um^2)"),
    **{name: (str, f"component name in the ERT/ART for the {comp.replace('_', ' ')}")
       for comp, name in COMPONENTS.items()},
}


class EnergyError(KeyedError):
    """A bad [energy] table or ERT/ART file: (key, message)."""


@dataclass(frozen=True)
class Energy:
    """pJ per MAC and per word access; `given` names the values the suite set; `area_um2` the
    ART area of the named components (None without an ART)."""
    values: tuple = ()  # ((key, pJ), ...) for ACCESS_KEYS
    given: tuple = ()
    area_um2: float | None = None
    sources: tuple = field(default=())

    def get(self, key: str) -> float:
        return dict(self.values)[key]


def defaults(dtype: str, word_bytes: int) -> dict[str, float]:
    out = {"mac_pj": MAC_PJ[dtype]}
    for op in ("ifmap", "filter", "ofmap"):
        out[f"{op}_sram_read_pj"] = out[f"{op}_sram_write_pj"] = SRAM_PJ_PER_BYTE * word_bytes
    out["dram_read_pj"] = out["dram_write_pj"] = DRAM_PJ_PER_BYTE * word_bytes
    return out


def _yaml(path: Path, key: str):
    try:
        import yaml
    except ImportError:  # pragma: no cover - the accelergy extra is missing
        raise EnergyError(key, "reading Accelergy YAML needs PyYAML: pip install 'sysbench[accelergy]'") from None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EnergyError(key, f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def _tables(doc, root: str, path: Path, key: str) -> dict[str, dict]:
    """Accelergy ERT/ART tables by component name, instance ranges ([0..167]) removed."""
    tables = (doc or {}).get(root, {}).get("tables") if isinstance(doc, dict) else None
    if not isinstance(tables, list):
        raise EnergyError(key, f"{path}: no {root}: tables: list (not an Accelergy {root} file)")
    return {re.sub(r"\[[^\]]*\]", "", str(t.get("name", ""))): t for t in tables if isinstance(t, dict)}


def _component(tables: dict, name: str, path: Path, key: str) -> dict:
    hits = [t for full, t in tables.items() if full == name or full.endswith("." + name)]
    if len(hits) != 1:
        found = ", ".join(sorted(tables)) or "none"
        raise EnergyError(key, f"{path}: {'no' if not hits else 'more than one'} component "
                               f"{name!r} (components: {found})")
    return hits[0]


def _action(table: dict, names: tuple, path: Path, key: str) -> float:
    actions = {str(a.get("name")): a for a in table.get("actions", []) if isinstance(a, dict)}
    for name in names:
        if name in actions:
            energy = actions[name].get("energy")
            if not isinstance(energy, (int, float)) or energy < 0 or not math.isfinite(energy):
                raise EnergyError(key, f"{path}: {table.get('name')} {name}: energy must be a "
                                       f"non-negative number, got {energy!r}")
            return float(energy)
    raise EnergyError(key, f"{path}: {table.get('name')}: none of the actions {', '.join(names)} "
                           f"(has {', '.join(actions) or 'none'})")


ERT_ACTIONS = {"mac": ("mac_random", "compute", "mac"), "read": ("read",), "write": ("write",)}


def from_table(table: dict, base: Path, dtype: str, word_bytes: int) -> Energy:
    """The suite's [energy] table over the defaults; raises EnergyError(key, message)."""
    for key in table:
        if key not in ENERGY_KEYS:
            raise EnergyError(key, "unknown key; known: " + ", ".join(ENERGY_KEYS))
    values = defaults(dtype, word_bytes)
    given = []
    sources = []
    if "ert" in table:
        path = base / str(table["ert"])
        tables = _tables(_yaml(path, "ert"), "ERT", path, "ert")
        for comp, name_key in COMPONENTS.items():
            if name_key not in table:
                continue
            t = _component(tables, str(table[name_key]), path, name_key)
            if comp == "mac":
                values["mac_pj"] = _action(t, ERT_ACTIONS["mac"], path, name_key)
                given.append("mac_pj")
            elif comp == "dram":
                values["dram_read_pj"] = _action(t, ERT_ACTIONS["read"], path, name_key)
                values["dram_write_pj"] = _action(t, ERT_ACTIONS["write"], path, name_key)
                given += ["dram_read_pj", "dram_write_pj"]
            else:
                op = comp.split("_")[0]
                values[f"{op}_sram_read_pj"] = _action(t, ERT_ACTIONS["read"], path, name_key)
                values[f"{op}_sram_write_pj"] = _action(t, ERT_ACTIONS["write"], path, name_key)
                given += [f"{op}_sram_read_pj", f"{op}_sram_write_pj"]
        sources.append(f"ERT {path.name}")
    for key in ACCESS_KEYS:
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise EnergyError(key, f"must be a number of pJ, got {value!r}")
            if value < 0:
                raise EnergyError(key, f"must be >= 0 pJ, got {value!r}")
            values[key] = float(value)
            given.append(key)
    area = None
    if "art" in table:
        path = base / str(table["art"])
        tables = _tables(_yaml(path, "art"), "ART", path, "art")
        area, found = 0.0, 0
        for comp, name_key in COMPONENTS.items():
            if name_key in table:
                try:  # the ART may cover only some of the named components
                    t = _component(tables, str(table[name_key]), path, name_key)
                except EnergyError:
                    continue
                found += 1
                a = t.get("area")
                if not isinstance(a, (int, float)) or a < 0:
                    raise EnergyError(name_key, f"{path}: {t.get('name')}: area must be a non-negative number")
                area += float(a)
        if not found:
            raise EnergyError("art", f"{path}: none of the named components is in the ART")
        sources.append(f"ART {path.name}")
    if len(given) < len(ACCESS_KEYS):
        sources.append(SOURCE)
    return Energy(tuple(values.items()), tuple(dict.fromkeys(given)), area, tuple(sources))
