"""CSV rows of a model-only sweep's table, written in C.

A sweep writes millions of rows of a few integer, float and text columns; Python's
%-formatting of them was most of a big sweep's time. ``rows`` writes exactly the text
``template % row`` gives (integers as ``%d``, floats as ``%r``, text as it is), with each
row's literal parts (the constant columns, the row's array settings) taken from one of
several templates.

Layers as in the numerical kernels: ``rows`` validates and gathers pointers, ``_write_rows``
is the typed loop, ``_put_*`` the per-cell writers.
"""
import numpy as np

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, strlen

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype)
    int Py_DTSF_ADD_DOT_0

cdef enum:
    KIND_INT = 0
    KIND_FLOAT = 1
    KIND_TEXT = 2
    KIND_QUOTED = 3


cdef struct Buffer:
    char *data
    size_t size
    size_t used


cdef int _reserve(Buffer *out, size_t extra) except -1:
    cdef size_t want = out.used + extra
    cdef char *grown
    if want <= out.size:
        return 0
    while out.size < want:
        out.size = out.size * 2 if out.size else 1 << 16
    grown = <char *>realloc(out.data, out.size)
    if grown == NULL:
        raise MemoryError("could not grow the CSV buffer")
    out.data = grown
    return 0


cdef int _put(Buffer *out, const char *text, size_t length) except -1:
    _reserve(out, length)
    memcpy(out.data + out.used, text, length)
    out.used += length
    return 0


cdef int _put_int(Buffer *out, int64_t value) except -1:
    cdef char digits[24]
    cdef int n = 0
    cdef unsigned long long magnitude = <unsigned long long>(-(value + 1)) + 1 if value < 0 else <unsigned long long>value
    _reserve(out, 24)
    if value < 0:
        out.data[out.used] = 45  # '-'
        out.used += 1
    while True:
        digits[n] = <char>(48 + magnitude % 10)  # '0' + digit
        n += 1
        magnitude //= 10
        if magnitude == 0:
            break
    while n > 0:
        n -= 1
        out.data[out.used] = digits[n]
        out.used += 1
    return 0


cdef int _put_float(Buffer *out, double value) except -1:
    # repr(float): the shortest text that reads back as the same double, as '%r' writes it
    cdef char *text = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    if text == NULL:
        raise MemoryError("could not format a float")
    try:
        _put(out, text, strlen(text))
    finally:
        PyMem_Free(text)
    return 0


cdef int _put_cell(Buffer *out, const char *text, size_t length) except -1:
    """CSV quoting where the cell needs it (a comma, a quote, a line break), as csv.writer."""
    cdef size_t i
    cdef bint needs = False
    for i in range(length):
        if text[i] == 44 or text[i] == 34 or text[i] == 10 or text[i] == 13:  # , " \n \r
            needs = True
            break
    if not needs:
        return _put(out, text, length)
    _reserve(out, 2 * length + 2)
    out.data[out.used] = 34
    out.used += 1
    for i in range(length):
        out.data[out.used] = text[i]
        out.used += 1
        if text[i] == 34:   # a quote is doubled
            out.data[out.used] = 34
            out.used += 1
    out.data[out.used] = 34
    out.used += 1
    return 0


cdef int _write_rows(Buffer *out, long n_rows, int n_fields, const int *kinds, const int64_t **ints,
                     const double **floats, const char **texts, const int64_t **text_offsets,
                     const char *literal_text, const int64_t *literal_offsets,
                     const int64_t *template_of_row) except -1:
    cdef long r, start
    cdef int f, piece
    cdef int64_t t
    for r in range(n_rows):
        t = template_of_row[r]
        piece = <int>(t * (n_fields + 1))
        for f in range(n_fields):
            _put(out, literal_text + literal_offsets[piece + f],
                 <size_t>(literal_offsets[piece + f + 1] - literal_offsets[piece + f]))
            if kinds[f] == KIND_INT:
                _put_int(out, ints[f][r])
            elif kinds[f] == KIND_FLOAT:
                _put_float(out, floats[f][r])
            elif kinds[f] == KIND_TEXT:
                start = text_offsets[f][r]
                _put(out, texts[f] + start, <size_t>(text_offsets[f][r + 1] - start))
            else:
                start = text_offsets[f][r]
                _put_cell(out, texts[f] + start, <size_t>(text_offsets[f][r + 1] - start))
        _put(out, literal_text + literal_offsets[piece + n_fields],
             <size_t>(literal_offsets[piece + n_fields + 1] - literal_offsets[piece + n_fields]))
        _put(out, b"\n", 1)
    return 0


def rows(templates, columns, template_of_row) -> bytes:
    """The rows, each ending in a line break, as bytes.

    templates: per template, the n_fields + 1 literal texts (str) around the fields (before
    the first, between two, after the last). columns: n_fields pairs (kind, values): "d" an
    integer array, "r" a float array, "s" a list of str written as they are, "q" a list of
    str quoted where CSV needs it. template_of_row: an integer array, the template of each
    row. Every column has one value per row."""
    cdef long n_rows
    cdef int n_fields = len(columns)
    index = np.ascontiguousarray(template_of_row, dtype=np.int64)
    if index.ndim != 1:
        raise ValueError(f"template_of_row must be 1-D, got ndim={index.ndim}")
    n_rows = index.shape[0]
    if n_rows and (index.min() < 0 or index.max() >= len(templates)):
        raise ValueError(f"template_of_row must index the {len(templates)} template(s)")
    pieces = []
    for i, template in enumerate(templates):
        if len(template) != n_fields + 1:
            raise ValueError(f"template {i} has {len(template)} literal(s); {n_fields} field(s) need "
                             f"{n_fields + 1}")
        pieces += [str(piece).encode() for piece in template]
    literal_text = b"".join(pieces)
    literal_offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=literal_offsets[1:])
    keep = []   # the arrays the pointers below point into
    cdef int *kinds = <int *>malloc(max(n_fields, 1) * sizeof(int))
    cdef const int64_t **ints = <const int64_t **>malloc(max(n_fields, 1) * sizeof(void *))
    cdef const double **floats = <const double **>malloc(max(n_fields, 1) * sizeof(void *))
    cdef const char **texts = <const char **>malloc(max(n_fields, 1) * sizeof(void *))
    cdef const int64_t **text_offsets = <const int64_t **>malloc(max(n_fields, 1) * sizeof(void *))
    cdef Buffer out
    out.data, out.size, out.used = NULL, 0, 0
    cdef const int64_t[::1] iv
    cdef const double[::1] fv
    cdef const int64_t[::1] ov
    cdef const unsigned char[::1] tv
    cdef const int64_t[::1] lo = literal_offsets
    cdef const int64_t[::1] rows_of = index
    cdef const char *literal_ptr = literal_text
    try:
        if kinds == NULL or ints == NULL or floats == NULL or texts == NULL or text_offsets == NULL:
            raise MemoryError("could not allocate the column table")
        for f, (kind, values) in enumerate(columns):
            if kind == "d":
                array = np.ascontiguousarray(values, dtype=np.int64)
                kinds[f] = KIND_INT
            elif kind == "r":
                array = np.ascontiguousarray(values, dtype=np.float64)
                kinds[f] = KIND_FLOAT
            elif kind == "s" or kind == "q":
                encoded = [str(v).encode() for v in values]
                blob = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
                offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
                np.cumsum([len(e) for e in encoded], out=offsets[1:])
                array = offsets
                kinds[f] = KIND_TEXT if kind == "s" else KIND_QUOTED
                keep.append(blob)
                tv = blob
                texts[f] = <const char *>&tv[0]
                ov = offsets
                text_offsets[f] = &ov[0]
            else:
                raise ValueError(f"column {f}: kind must be 'd', 'r', 's' or 'q', got {kind!r}")
            expected = n_rows + 1 if kind in ("s", "q") else n_rows
            if array.ndim != 1 or array.shape[0] != expected:
                raise ValueError(f"column {f} has {array.shape[0] - (kind in ('s', 'q'))} value(s) for "
                                 f"{n_rows} row(s)")
            keep.append(array)
            if kind == "d" and n_rows:
                iv = array
                ints[f] = &iv[0]
            elif kind == "r" and n_rows:
                fv = array
                floats[f] = &fv[0]
        if n_rows:
            _write_rows(&out, n_rows, n_fields, kinds, ints, floats, texts, text_offsets, literal_ptr,
                        &lo[0], &rows_of[0])
        return PyBytes_FromStringAndSize(out.data, out.used) if out.used else b""
    finally:
        free(out.data)
        free(kinds)
        free(<void *>ints)
        free(<void *>floats)
        free(<void *>texts)
        free(<void *>text_offsets)
