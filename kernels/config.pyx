"""Build-time facts the package reports at run time."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define SYSBENCH_HAVE_OPENMP 1
    static int sysbench_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define SYSBENCH_HAVE_OPENMP 0
    static int sysbench_max_threads(void) { return 1; }
    #endif
    """
    int SYSBENCH_HAVE_OPENMP
    int SYSBENCH_DEBUG  # set by setup.py (SYSBENCH_DEBUG=1: bounds checks on, -O0 -g)
    int sysbench_max_threads() nogil


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (prange runs in parallel)."""
    return bool(SYSBENCH_HAVE_OPENMP)


def max_threads():
    """Threads OpenMP would use by default (1 without OpenMP)."""
    return sysbench_max_threads()


cdef extern from *:
    # Cython writes this into every module it generates: the version that made the C code.
    long CYTHON_HEX_VERSION


_LEVELS = {0xA0: "a", 0xB0: "b", 0xC0: "rc"}


def cython_version():
    """The Cython that generated the kernels ("3.0.11"); known even where Cython itself is
    not installed (it ran in pip's isolated build environment)."""
    v = CYTHON_HEX_VERSION
    text = f"{(v >> 24) & 0xFF}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}"
    level = v & 0xF0
    return text + (f"{_LEVELS[level]}{v & 0x0F}" if level in _LEVELS else "")


def debug_build():
    """True for a SYSBENCH_DEBUG=1 build (bounds checks on, unoptimised: slow kernels)."""
    return bool(SYSBENCH_DEBUG)
