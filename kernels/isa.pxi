# The run-time choice of SIMD path (the Cython side of simd.h), included textually by the
# kernels that have several paths (systolic, sparse, sample). It gives the module a C global
# `_isa` (the path in use, a SIMD_ISA_* code its nogil cores read) and the same Python
# functions in every module: isa(), available_isas(), set_isa(). The environment variable
# SYSBENCH_ISA forces a path at import; a name this CPU cannot run is ignored with a warning
# rather than making the module unimportable. Include checks.pxi first (set_isa uses it).
import os
import warnings

cdef extern from "simd.h" nogil:
    int SIMD_ISA_SCALAR
    int SIMD_ISA_AVX2
    int SIMD_ISA_AVX512
    int simd_isa_supported(int isa)
    int simd_isa_best()

_ISA_CODES = {"scalar": SIMD_ISA_SCALAR, "avx2": SIMD_ISA_AVX2, "avx512": SIMD_ISA_AVX512}
_ISA_NAMES = {code: name for name, code in _ISA_CODES.items()}
cdef int _isa = simd_isa_best()


def available_isas():
    """SIMD paths this CPU can run, widest first."""
    return tuple(name for name in ("avx512", "avx2", "scalar")
                 if simd_isa_supported(_ISA_CODES[name]))


def isa():
    """The SIMD path in use: "avx512", "avx2" or "scalar"."""
    return _ISA_NAMES[_isa]


def set_isa(name=None):
    """Force a path ("avx512", "avx2", "scalar"); None picks the widest.

    Returns the previous path's name. Raises ValueError for an unknown name or a path this
    CPU cannot run (tests use it to check that every path gives the same bits).
    """
    global _isa
    previous = _ISA_NAMES[_isa]
    if name is None:
        _isa = simd_isa_best()
        return previous
    check_choice(name, "isa", tuple(_ISA_CODES))
    if not simd_isa_supported(_ISA_CODES[name]):
        raise ValueError(f"isa {name!r} is not supported by this CPU "
                         f"(available: {', '.join(available_isas())})")
    _isa = _ISA_CODES[name]
    return previous


if os.environ.get("SYSBENCH_ISA"):
    try:
        set_isa(os.environ["SYSBENCH_ISA"])
    except ValueError as exc:
        warnings.warn(f"SYSBENCH_ISA ignored: {exc}", RuntimeWarning)
