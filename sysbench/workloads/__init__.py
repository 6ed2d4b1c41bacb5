"""Workload kinds: each module here defines WORKLOAD and is found by name. Kinds from other
packages join through the `sysbench.workloads` entry-point group (a WORKLOAD instance), or
register() at run time (tests)."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from .base import Workload

_REGISTERED: dict[str, Workload] = {}


@lru_cache(maxsize=None)
def _discovered() -> dict[str, Workload]:
    kinds = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        workload = getattr(module, "WORKLOAD", None)
        if workload is not None:
            kinds[workload.kind] = workload
    from importlib.metadata import entry_points

    for entry in entry_points(group="sysbench.workloads"):
        workload = entry.load()
        kinds.setdefault(workload.kind, workload)
    return kinds


def registry() -> dict[str, Workload]:
    """Every kind by name, sorted."""
    return dict(sorted({**_discovered(), **_REGISTERED}.items()))


def register(workload: Workload) -> None:
    """Add (or replace) a kind for this process."""
    _REGISTERED[workload.kind] = workload


def unregister(kind: str) -> None:
    _REGISTERED.pop(kind, None)
