"""Byte sizes written as numbers or strings ("64MiB"): a leaf module any layer may use."""
from __future__ import annotations

from typing import Any

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


# A byte count past this fits no 64-bit size in the kernels (and no machine).
MAX_SIZE = 2**63 - 1


def parse_size(value: Any) -> int | None:
    """Bytes from an int or a string such as '512MiB', '1.5 GB', '4096'; None when it is not
    one (including 'nan', 'inf', negative sizes and sizes past MAX_SIZE such as '1e400')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_SIZE else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        amount = float(number)
    except ValueError:
        return None
    if unit not in _UNITS or not 0 <= amount * _UNITS[unit] <= MAX_SIZE:  # also nan, inf
        return None
    return int(amount * _UNITS[unit])
