"""The schedule grammar: what a suite's `schedule` key may say.

    store_all            keep everything (one forward per layer)
    full_recompute       keep only the step's input; recompute before each backward step
    checkpoint_every=K   keep every K-th activation; recompute each segment once
    budget=SIZE          the least recompute under a peak activation memory of SIZE bytes
                         ("64MiB"; "1/4" = a fraction of store_all's peak; "min" = the
                         least memory any schedule needs)

solvers.program_for turns a Schedule into a program for a chain.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ..units import parse_size

SCHEDULE_FORMS = ("store_all | full_recompute | checkpoint_every=K | "
                  "budget=SIZE (bytes, '64MiB', '1/4' of store_all's peak, or 'min')")


@dataclass(frozen=True)
class Schedule:
    kind: str                      # store_all | full_recompute | checkpoint_every | budget
    every: int = 0                 # checkpoint_every
    budget: int = 0                # budget in bytes (0: use fraction)
    fraction: Fraction | None = None
    minimum: bool = False          # budget=min: the least memory any schedule needs

    def __str__(self) -> str:
        if self.kind == "checkpoint_every":
            return f"checkpoint_every={self.every}"
        if self.kind == "budget":
            if self.minimum:
                return "budget=min"
            return f"budget={self.fraction}" if self.fraction is not None else f"budget={self.budget}"
        return self.kind


def parse_schedule(text: str) -> Schedule:
    """'store_all', 'full_recompute', 'checkpoint_every=4', 'budget=64MiB', 'budget=1/4'."""
    raw = str(text).strip()
    name, eq, arg = (part.strip() for part in raw.partition("="))
    if name in ("store_all", "full_recompute") and not eq:
        return Schedule(name)
    if name == "checkpoint_every" and eq:
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"checkpoint_every needs a positive integer, got {arg!r}")
        return Schedule(name, every=int(arg))
    if name == "budget" and eq:
        if arg == "min":
            return Schedule(name, minimum=True)
        if re.fullmatch(r"\d+\s*/\s*\d+", arg):
            numerator, denominator = (int(v) for v in arg.split("/"))
            if denominator == 0:
                raise ValueError(f"a budget fraction must be in (0, 1], got {arg}")
            frac = Fraction(numerator, denominator)
            if not 0 < frac <= 1:
                raise ValueError(f"a budget fraction must be in (0, 1], got {arg}")
            return Schedule(name, fraction=frac)
        size = parse_size(arg)
        if size is None or size <= 0:
            raise ValueError(f"budget must be a positive size such as 64MiB or 1000000 (bytes), or a fraction "
                             f"such as 1/4, got {arg!r}")
        return Schedule(name, budget=size)
    raise ValueError(f"unknown schedule {raw!r}; one of {SCHEDULE_FORMS}")


