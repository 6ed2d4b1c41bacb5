"""Multinomial sampling by parallel (chunked, two-level) cumulative sums.

A row of V nonnegative float32 weights (unnormalised allowed) is cut into ``units`` chunks of
L = ceil(V / units) elements (chunk c holds [c L, min((c + 1) L, V)); trailing chunks may be
empty when units > ceil(V / L)). The cumulative values are defined by one summation order,
every addition a float32 addition:

* local[i] = running sum of chunk c from +0, its elements added first to last;
* T_c      = the chunk's last running sum (its total; +0 for an empty chunk);
* offset_c = exclusive scan of T_0, T_1, ... in order from +0; total = offset_units;
* cum[i]   = offset_c + local[i].

The sampled index is the first i with cum[i] > u * total, the target formed in float64 and
compared exactly with the float32 values. When no value exceeds the target -- it equals the
total: u = 1, or a product that rounds up to it -- the index is the last one with a nonzero
weight. (For u < 1 the float64 product stays below the float32 total, so a draw near 1 picks
the first index whose cumulative value reaches the total.) cum is monotone and repeats its
previous value at a zero weight, so a zero-weight index is never returned.

``full_scan`` materialises cum (local scans, then the add-back) and binary-searches it;
``chunk_select`` computes only the chunk totals, scans them, and rescans the one chunk that
holds the target. Both perform the same additions, so they return identical indices, on
every SIMD path (``isa()``, ``set_isa``; the environment variable SYSBENCH_ISA picks one at
import) and for any thread count.
"""
import numpy as np

from cython.parallel cimport prange
from libc.stdint cimport int64_t


cdef extern from "sample_simd.h" nogil:
    int SM_BAD_VALUE
    int SM_ALL_ZERO
    int SM_RESCAN
    int SM_LOST
    long sm_group_count(long B, long V, long L)
    void sm_scan_group(int isa, const float *probs, long B, long V, long U, long L, long g,
                       float *work, float *totals, float *mins)
    long sm_pick_chunk(const float *x, long V, long U, const float *totals, const float *mins,
                       double u, int64_t *chunk, float *offset, float *target)
    void sm_rescan_rows(int isa, const float *probs, long V, long L, long n, const int64_t *rows,
                        int count, const int64_t *chunk, const float *offset,
                        const float *target, int64_t *out)
    long sm_full_scan_row(const float *x, long V, long U, long L, const float *totals,
                          const float *mins, double u, float *work)


METHODS = ("full_scan", "chunk_select")

include "checks.pxi"
include "isa.pxi"


def chunk_length(V, units):
    """Elements per chunk: ceil(V / units)."""
    return -(-V // units)


def _check_probs(probs):
    # an empty batch is fine; a row needs at least one weight (vocab >= 1)
    return check_array(np.asarray(probs), "probs", (np.float32,), 2, "(batch, vocab)", (1,))


def _check_units(units):
    return check_int(units, "units", CONS_POSITIVE)


# A parallel stage gets a second thread only for this many elements per thread (~50 us of
# work): below it, waking threads costs more than it saves, and on a loaded machine a team
# of spinning threads can stall for whole scheduler time slices.
MIN_ELEMENTS_PER_THREAD = 1 << 17


def _team(elements, threads):
    """Threads for a stage of `elements` element-steps, at most `threads`."""
    return int(max(1, min(threads, elements // MIN_ELEMENTS_PER_THREAD)))


def _bad_row_message(row, x):
    """Why row `row` (weights x) cannot be sampled."""
    for test, what in ((np.isnan, "NaN"), (np.isinf, "infinite"), (lambda v: v < 0, "negative")):
        hits = np.flatnonzero(test(x))
        if hits.size:
            i = int(hits[0])
            return (f"probs row {row}: weight at index {i} is {what} ({float(x[i])!r}); "
                    "weights must be finite and >= 0")
    if not np.any(x):
        return f"probs row {row}: all weights are zero"
    return f"probs row {row}: the weights' float32 sum overflows (weights too large to sum in float32)"


cdef void _scan_all(const float[:, ::1] p, long U, long L, float[:, ::1] work, bint materialise,
                    float[:, ::1] totals, float[:, ::1] mins, int threads) noexcept nogil:
    cdef long B = p.shape[0], V = p.shape[1]
    cdef long groups = sm_group_count(B, V, L)
    cdef long g
    cdef int path = _isa
    cdef float *w = &work[0, 0] if materialise else NULL
    # dynamic: on a shared machine a descheduled thread leaves its groups to the others;
    # runs of 4 consecutive groups keep the prefetch of the next group useful
    for g in prange(groups, num_threads=threads, schedule="dynamic", chunksize=4):
        sm_scan_group(path, &p[0, 0], B, V, U, L, g, w, &totals[0, 0], &mins[0, 0])


def _scan(probs, units, threads, materialise):
    """(work, totals, mins): running sums per chunk (when materialise), totals, minima."""
    B, V = probs.shape
    L = chunk_length(V, units)
    work = np.empty((B, V) if materialise else (1, 1), dtype=np.float32)
    totals = np.zeros((B, units), dtype=np.float32)
    mins = np.zeros((B, units), dtype=np.float32)
    if B:
        _scan_all(probs, units, L, work, materialise, totals, mins, _team(B * V, threads))
    return work, totals, mins


cdef void _full_scan_all(const float[:, ::1] p, long U, long L, const float[:, ::1] totals,
                         const float[:, ::1] mins, const double[::1] u, float[:, ::1] work,
                         int64_t[::1] out, int threads) noexcept nogil:
    cdef long B = p.shape[0], V = p.shape[1]
    cdef long b
    for b in prange(B, num_threads=threads, schedule="dynamic"):
        out[b] = sm_full_scan_row(&p[b, 0], V, U, L, &totals[b, 0], &mins[b, 0], u[b],
                                  &work[b, 0])


cdef void _pick_all(const float[:, ::1] p, long U, const float[:, ::1] totals,
                    const float[:, ::1] mins, const double[::1] u, int64_t[::1] out,
                    int64_t[::1] chunk, float[::1] offset, float[::1] target,
                    int threads) noexcept nogil:
    cdef long B = p.shape[0], V = p.shape[1]
    cdef long b
    for b in prange(B, num_threads=threads, schedule="static"):
        out[b] = sm_pick_chunk(&p[b, 0], V, U, &totals[b, 0], &mins[b, 0], u[b], &chunk[b],
                               &offset[b], &target[b])


cdef void _rescan_all(const float[:, ::1] p, long L, long n, const int64_t[::1] rows,
                      const int64_t[::1] chunk, const float[::1] offset,
                      const float[::1] target, int64_t[::1] out, int threads) noexcept nogil:
    cdef long V = p.shape[1], R = rows.shape[0]
    cdef long g
    cdef int path = _isa
    for g in prange((R + 15) // 16, num_threads=threads, schedule="dynamic"):
        sm_rescan_rows(path, &p[0, 0], V, L, n, &rows[16 * g], <int>min(16, R - 16 * g),
                       &chunk[0], &offset[0], &target[0], &out[0])


cdef (long, long) _partition(const int64_t[::1] out, const int64_t[::1] chunk, long full_chunks,
                             int64_t[::1] rows) noexcept nogil:
    """Rows still to rescan: those whose picked chunk is full from the front of `rows`, those
    whose chunk is the short last one from the back. Returns the two counts."""
    cdef long B = out.shape[0], front = 0, back = 0, b
    for b in range(B):
        if out[b] == SM_RESCAN:
            if chunk[b] < full_chunks:
                rows[front] = b
                front += 1
            else:
                back += 1
                rows[B - back] = b
    return front, back


def _chunk_select(probs, units, totals, mins, u, threads):
    """Pick each row's chunk, then rescan the picked chunks 16 rows at a time (rows whose
    chunk is full, then rows whose chunk is the short last one: each batch of lanes shares
    one chunk length)."""
    B, V = probs.shape
    L = chunk_length(V, units)
    out = np.empty(B, dtype=np.int64)
    chunk = np.empty(B, dtype=np.int64)
    rows = np.empty(B, dtype=np.int64)
    offset = np.empty(B, dtype=np.float32)
    target = np.empty(B, dtype=np.float32)
    _pick_all(probs, units, totals, mins, u, out, chunk, offset, target, _team(B * units, threads))
    full_chunks = V // L
    n_full, n_short = _partition(out, chunk, full_chunks, rows)
    if n_full:
        _rescan_all(probs, L, L, rows[:n_full], chunk, offset, target, out,
                    _team(n_full * L, threads))
    if n_short:
        short = V - full_chunks * L
        _rescan_all(probs, L, short, rows[B - n_short:], chunk, offset, target, out,
                    _team(n_short * short, threads))
    return out


def sample(probs, uniforms, units, method="chunk_select", threads=1):
    """Indices (int64, one per row) drawn from the rows of `probs` by the draws `uniforms`.

    probs: (B, V) float32 nonnegative weights, C-contiguous preferred (copied otherwise).
    uniforms: B values in [0, 1], one per row (float64; float32 is widened exactly);
        1 is accepted and gives the last nonzero index.
    units: execution units = chunks per row. method: "full_scan" or "chunk_select".
    threads: at most this many OpenMP threads (rows and chunk groups are shared out; a stage
        takes one thread per MIN_ELEMENTS_PER_THREAD elements of work).
    Raises ValueError naming the argument, or the row whose weights are negative, NaN,
    infinite, all zero, or whose sum overflows float32.
    """
    probs = _check_probs(probs)
    units = _check_units(units)
    threads = check_threads(threads)
    check_choice(method, "method", METHODS)
    u = np.ascontiguousarray(uniforms, dtype=np.float64)
    if u.ndim > 1:  # a (1, B) or (B, 1) array would otherwise be flattened silently
        raise ValueError(f"uniforms must be 1-D (one value per row), got shape {u.shape}")
    u = u.reshape(-1)
    if u.shape[0] != probs.shape[0]:
        raise ValueError(f"uniforms must hold one value per row ({probs.shape[0]}), got {u.shape[0]}")
    if u.size and not (u.min() >= 0.0 and u.max() <= 1.0):  # NaN fails both
        i = int(np.flatnonzero(~((u >= 0.0) & (u <= 1.0)))[0])
        raise ValueError(f"uniforms[{i}] must lie in [0, 1], got {float(u[i])!r}")
    full = method == "full_scan"
    work, totals, mins = _scan(probs, units, threads, full)
    out = np.empty(probs.shape[0], dtype=np.int64)
    if probs.shape[0] and full:
        _full_scan_all(probs, units, chunk_length(probs.shape[1], units), totals, mins, u,
                       work, out, _team(probs.size, threads))
    elif probs.shape[0]:
        out = _chunk_select(probs, units, totals, mins, u, threads)
    if out.size and out.min() < 0:
        row = int(np.flatnonzero(out < 0)[0])
        if out[row] == SM_LOST:
            raise RuntimeError(f"sample: the rescan of row {row} found no index (internal error)")
        raise ValueError(_bad_row_message(row, probs[row]))
    return out


def chunk_totals(probs, units, threads=1):
    """(B, units) float32 chunk totals T_c (no checks on the weights)."""
    probs = _check_probs(probs)
    _, totals, _ = _scan(probs, _check_units(units), check_threads(threads), False)
    return totals


def cumulative(probs, units, threads=1):
    """(B, V) float32 cumulative values cum[i] exactly as full_scan materialises them."""
    probs = _check_probs(probs)
    units = _check_units(units)
    threads = check_threads(threads)
    work, totals, mins = _scan(probs, units, threads, True)
    out = np.empty(probs.shape[0], dtype=np.int64)
    if probs.shape[0]:
        _full_scan_all(probs, units, chunk_length(probs.shape[1], units), totals, mins,
                       np.zeros(probs.shape[0]), work, out, _team(probs.size, threads))
    bad = np.flatnonzero(out < 0)
    if bad.size:
        row = int(bad[0])
        raise ValueError(_bad_row_message(row, probs[row]))
    return work
