"""Buffers reused between the steps of one run.

A fresh numpy array of a few MiB is fresh memory from the system: every page faults in (and
is zeroed) on first touch, which for a training step's 256 MiB of weight gradients costs as
much as several of its GEMMs. A BufferPool hands run_program the buffers a previous step (or
an earlier layer of this step) gave back, so a run's steps after the first touch no new
memory. It only reuses: the memory a step holds at once, and what the tracker counts, are
the same with or without a pool.
"""
from __future__ import annotations

import numpy as np


class BufferPool:
    """Free buffers by (shape, dtype).

    take(shape, dtype)  an uninitialised array: a free one of that shape, else a new one
    take_transposed     the same laid out transposed (a (batch, n) view of an (n, batch)
                        buffer, as Linear writes its outputs)
    give(array)         back to the pool (either layout): the caller holds no other reference
    lend(array)         handed out with a step's result (weight gradients): valid until
                        the next new_step(), which takes them back
    """

    def __init__(self):
        self._free: dict = {}
        self._lent: list = []

    def take(self, shape, dtype=np.float32) -> np.ndarray:
        free = self._free.get((tuple(shape), np.dtype(dtype)))
        return free.pop() if free else np.empty(shape, dtype=dtype)

    def take_transposed(self, shape, dtype=np.float32) -> np.ndarray:
        return self.take(tuple(reversed(shape)), dtype).T

    def give(self, array) -> None:
        if not isinstance(array, np.ndarray):
            return
        owner = array if array.base is None else array.base
        if isinstance(owner, np.ndarray) and owner.base is None and owner.flags.c_contiguous \
                and owner.nbytes == array.nbytes:
            self._free.setdefault((owner.shape, owner.dtype), []).append(owner)

    def lend(self, array) -> np.ndarray:
        self._lent.append(array)
        return array

    def new_step(self) -> None:
        """Take back what the previous step lent out: its results' buffers are reused now."""
        for array in self._lent:
            self.give(array)
        self._lent = []
