"""Shared by the benchmarks."""
import time

import pytest


@pytest.fixture
def best_time():
    """best_time(fn, repeat): the fastest of `repeat` timed calls after one warm-up call, in
    seconds; for ratios against a peer measured in the same test."""
    def measure(fn, repeat):
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)
    return measure
