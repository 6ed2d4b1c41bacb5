"""Byte sizes as users write them ('512MiB', '1.5 GB', 4096) and as reports print them.

A leaf module: the suite keys, the training schedules and the distributed workloads all
parse sizes here, and it imports nothing of sysbench."""
from __future__ import annotations

from typing import Any

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any) -> int | None:
    """Bytes from an int or a string such as '512MiB', '1.5 GB', '4096'; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        amount = float(number)
    except ValueError:
        return None
    if unit not in _UNITS or amount < 0:
        return None
    return int(amount * _UNITS[unit])


def format_bytes(n: float) -> str:
    """'1.50 MiB', '12.00 KiB', '512 B'."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"
