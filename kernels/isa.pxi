# The run-time choice of SIMD path, shared by the kernels that have several (systolic,
# sparse, sample). Included (textually) by a module after it defines
#   _ISA_CODES = {"scalar": ..., "avx2": ..., "avx512": ...}   its C header's codes
#   cdef int _isa_best() noexcept nogil / cdef int _isa_supported(int) noexcept nogil
# The environment variable SYSBENCH_ISA forces a path at import; a name this CPU cannot run
# is ignored with a warning rather than making the module unimportable.

_ISA_NAMES = {code: name for name, code in _ISA_CODES.items()}
cdef int _isa = _isa_best()


def available_isas():
    """SIMD paths this CPU can run, widest first."""
    return tuple(name for name in ("avx512", "avx2", "scalar") if _isa_supported(_ISA_CODES[name]))


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
        _isa = _isa_best()
        return previous
    if name not in _ISA_CODES:
        raise ValueError(f"isa must be one of {sorted(_ISA_CODES)}, got {name!r}")
    if not _isa_supported(_ISA_CODES[name]):
        raise ValueError(f"isa {name!r} is not supported by this CPU "
                         f"(available: {', '.join(available_isas())})")
    _isa = _ISA_CODES[name]
    return previous


if os.environ.get("SYSBENCH_ISA"):
    try:
        set_isa(os.environ["SYSBENCH_ISA"])
    except ValueError as exc:
        warnings.warn(f"SYSBENCH_ISA ignored: {exc}", RuntimeWarning)
