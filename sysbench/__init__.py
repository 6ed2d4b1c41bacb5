"""sysbench: benchmarks and cycle models for systolic-array accelerator techniques."""
__version__ = "0.1.0"

# the compiled kernel modules (sysbench._kernels.<name>), each with isa()
KERNELS = ("systolic", "sparse", "tconv", "sample")


def openmp_enabled() -> bool:
    """True when the compiled kernels use OpenMP; False for the serial fallback build."""
    from ._kernels import config

    return config.openmp_enabled()


def kernel_isas() -> dict:
    """{kernel: the SIMD path it runs ("avx512", "avx2", "scalar")}, for a result's machine
    record; a kernel that is not built is left out."""
    import importlib

    isas = {}
    for name in KERNELS:
        try:
            isas[name] = importlib.import_module(f"{__name__}._kernels.{name}").isa()
        except ImportError:
            continue
    return isas
