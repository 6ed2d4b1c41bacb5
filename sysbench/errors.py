"""Bad input that names the suite key it came from: a leaf module any layer may use."""
from __future__ import annotations


class KeyedError(ValueError):
    """A bad value of one suite key; `key` names it, the message says what is wrong."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
