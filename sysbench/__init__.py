"""sysbench: benchmarks and cycle models for systolic-array accelerator techniques."""
__version__ = "0.1.0"


def openmp_enabled() -> bool:
    """True when the compiled kernels use OpenMP; False for the serial fallback build."""
    from ._kernels import config

    return config.openmp_enabled()
