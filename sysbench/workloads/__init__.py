"""Workload kinds: each module here defines WORKLOAD; they are found by name."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from .base import Workload


@lru_cache(maxsize=None)
def registry() -> dict[str, Workload]:
    kinds = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        workload = getattr(module, "WORKLOAD", None)
        if workload is not None:
            kinds[workload.kind] = workload
    return dict(sorted(kinds.items()))
