"""Workload kinds: each module here defines WORKLOAD and is found by name (module gemm.py is
kind "gemm"). Kinds from other packages join through the `sysbench.workloads` entry-point
group (the entry's name is the kind, its object a Workload), or register() at run time.
Modules are imported when their kind is first asked for, so a run imports the kinds it uses."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import lru_cache

from .base import Workload

_REGISTERED: dict[str, Workload] = {}


@lru_cache(maxsize=None)
def _module_names() -> tuple[str, ...]:
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                        if not info.name.startswith("_") and info.name != "base"))


@lru_cache(maxsize=None)
def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {entry.name: entry for entry in entry_points(group="sysbench.workloads")}


@lru_cache(maxsize=None)
def _load(kind: str) -> Workload | None:
    if kind in _module_names():
        workload = getattr(importlib.import_module(f"{__name__}.{kind}"), "WORKLOAD", None)
        if workload is not None and workload.kind != kind:
            raise RuntimeError(f"sysbench.workloads.{kind} defines kind {workload.kind!r}: a module's kind is its name")
        return workload
    entry = _entry_points().get(kind)
    return entry.load() if entry is not None else None


class Registry(Mapping):
    """Every kind by name, in name order; a kind's module is imported on first use."""

    def __getitem__(self, kind: str) -> Workload:
        if kind in _REGISTERED:
            return _REGISTERED[kind]
        workload = _load(kind) if isinstance(kind, str) else None
        if workload is None:
            raise KeyError(kind)
        return workload

    def __contains__(self, kind) -> bool:
        try:
            self[kind]
        except KeyError:
            return False
        return True

    def __iter__(self):
        names = set(_module_names()) | set(_REGISTERED)
        names |= set(_entry_points())
        return iter(sorted(k for k in names if k in _REGISTERED or _load(k) is not None))

    def __len__(self) -> int:
        return sum(1 for _ in self)


_REGISTRY = Registry()


def registry() -> Registry:
    return _REGISTRY


def register(workload: Workload) -> None:
    """Add (or replace) a kind for this process."""
    _REGISTERED[workload.kind] = workload


def registered_here(kind: str) -> bool:
    """True for a kind added with register(): a fresh process does not know it."""
    return kind in _REGISTERED


def unregister(kind: str) -> None:
    _REGISTERED.pop(kind, None)
