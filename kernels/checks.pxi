# The argument checks of every kernel wrapper (systolic, sparse, sample, tconv include this
# file textually), in numpy.random's check_constraint style: one function per kind of
# value, a constraint code where there are several, and one wording per failure, always
# naming the argument and what it got:
#   "threads must be >= 1, got 0"            "n must be an integer, got 2.0"
#   "m must be in 2..16, got 17"             "chain must be a bool, got 'yes'"
#   "method must be one of a, b, got 'c'"    "a must be a numpy array, got list"
#   "a must have dtype float32, got float64 (convert with a.astype(np.float32))"
#   "w must be 2-D, got ndim=1"              "w must have at least one row and one column, got shape (0, 6)"
#   "out must be C-contiguous"
# Each raises ValueError and returns the value normalised (a Python int, a contiguous array).
import numpy as np

cdef enum Constraint:
    CONS_NONE           # any integer
    CONS_NON_NEGATIVE   # >= 0
    CONS_POSITIVE       # >= 1

cdef enum Contiguity:
    CONTIG_COPY         # a C-contiguous copy when the array is not (inputs)
    CONTIG_REQUIRE      # must already be C-contiguous (outputs written in place)


cdef inline object check_int(object value, str name, Constraint cons=CONS_NONE):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if cons == CONS_POSITIVE and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if cons == CONS_NON_NEGATIVE and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


cdef inline object check_int_range(object value, str name, long lo, long hi, str why=""):
    """lo <= value <= hi; `why` (e.g. " (an in-group index must fit)") follows the range."""
    value = check_int(value, name)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}{why}, got {value}")
    return value


cdef inline object check_threads(object threads):
    """OpenMP threads for one call: an integer >= 1."""
    return check_int(threads, "threads", CONS_POSITIVE)


cdef inline object check_bool(object value, str name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


cdef inline object check_choice(object value, str name, tuple choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


cdef inline str _dtype_names(tuple dtypes):
    return " or ".join(np.dtype(d).name for d in dtypes)


cdef inline object check_dtype(object x, str name, tuple dtypes):
    """x (an array) has one of `dtypes`."""
    if not any(x.dtype == d for d in dtypes):
        hint = f" (convert with {name}.astype(np.{np.dtype(dtypes[0]).name}))" \
            if len(dtypes) == 1 else ""
        raise ValueError(f"{name} must have dtype {_dtype_names(dtypes)}, got {x.dtype}{hint}")
    return x


cdef inline str _nonempty_words(int ndim, tuple axes):
    if ndim == 2 and axes == (0, 1):
        return "at least one row and one column"
    if ndim == 2 and axes == (0,):
        return "at least one row"
    if ndim == 2 and axes == (1,):
        return "at least one column"
    return "positive sizes"


cdef inline object check_shape(tuple shape, str name, int ndim, str layout="", tuple nonempty=()):
    """len(shape) == ndim (`layout` names the axes, e.g. "(batch, vocab)"), and the axes
    in `nonempty` are >= 1."""
    if len(shape) != ndim:
        layout = f" {layout}" if layout else ""
        raise ValueError(f"{name} must be {ndim}-D{layout}, got ndim={len(shape)}")
    if any(shape[axis] < 1 for axis in nonempty):
        raise ValueError(f"{name} must have {_nonempty_words(ndim, nonempty)}, "
                         f"got shape {shape}")
    return shape


cdef inline object check_array(object x, str name, tuple dtypes, int ndim, str layout="",
                        tuple nonempty=None, Contiguity contiguity=CONTIG_COPY):
    """A numpy array of one of `dtypes` and `ndim` dimensions, every axis (or the axes in
    `nonempty`) >= 1; returned C-contiguous (copied when needed, or an error with
    CONTIG_REQUIRE)."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    check_dtype(x, name, dtypes)
    check_shape(x.shape, name, ndim, layout, tuple(range(ndim)) if nonempty is None else nonempty)
    if x.flags.c_contiguous:
        return x
    if contiguity == CONTIG_REQUIRE:
        raise ValueError(f"{name} must be C-contiguous")
    return np.ascontiguousarray(x)
