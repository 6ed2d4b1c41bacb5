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


def debug_build():
    """True for a SYSBENCH_DEBUG=1 build (bounds checks on, unoptimised: slow kernels)."""
    return bool(SYSBENCH_DEBUG)
