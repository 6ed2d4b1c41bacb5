"""sysbench: benchmarks and cycle models for systolic-array accelerator techniques."""
__version__ = "0.1.0"


def openmp_enabled() -> bool:
    """True when the compiled kernels use OpenMP; False for the serial fallback build."""
    from ._kernels import config

    return config.openmp_enabled()


def kernel_isas() -> dict[str, str]:
    """The SIMD path each compiled kernel with several runs ("avx512", "avx2", "scalar")."""
    import importlib
    import pkgutil

    from . import _kernels

    paths = {}
    for info in pkgutil.iter_modules(_kernels.__path__):
        try:
            module = importlib.import_module(f"{_kernels.__name__}.{info.name}")
        except ImportError:
            continue
        if callable(getattr(module, "isa", None)):
            paths[info.name] = module.isa()
    return paths
