"""The memory system of a systolic array running one GEMM: double-buffered operand SRAMs, DRAM
bandwidth stalls, traffic.

The semantics are those of sysbench.models.memory_reference (the slow, explicit emulation this
kernel is tested against); read its docstring first. This kernel never builds a demand or
fetch matrix: for each cycle (demand row) it computes, from the fold structure, which sets of
each read operand's fetch stream the row reads (their ranks in the stream, in closed form) and
how many outputs it writes, and serves those. Memory is O(1) (the ofmap FIFO keeps the drain
ends of its last few chunks) but, only for SCALE-Sim's write buffer (drain_on_write), its queue
of partial lines (bounded by the ofmap SRAM) and, only under SCALE-Sim's im2col address
aliasing, the caller's table of address copies.

Layers: `simulate_gemm` validates and raises ValueError naming the bad argument; `_simulate`
is the typed shim; `_run` and its helpers are the nogil core.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memmove

cnp.import_array()

# SCALE-Sim v3 defects (sysbench.models.memory_reference.DEFECTS), one bit each
DEFECT_BITS = {"issue130": 1, "alias": 2, "runahead": 4, "dram_lines": 8, "drain_slots": 16,
               "final_drain": 32, "issue125": 64, "fetch_order": 128, "drain_on_write": 256}
OUTPUTS = ("rows", "stall_cycles", "last_cycle", "total_cycles",
           "ifmap_dram_words", "filter_dram_words", "ofmap_dram_words",
           "ifmap_batches", "filter_batches", "ofmap_drains", "dram_first", "ofmap_dram_last",
           "ifmap_fill_cycles", "filter_fill_cycles")
PEAKS = ("ifmap_peak", "filter_peak", "ofmap_peak")

cdef enum:
    D_130 = 1
    D_ALIAS = 2
    D_RUNAHEAD = 4
    D_LINES = 8
    D_SLOTS = 16
    D_FINAL = 32
    D_125 = 64
    D_ORDER = 128
    D_TRIGGER = 256
    RING = 8  # drain ends kept per ofmap chunk: a write waits for a chunk at most 3 back


cdef inline int64_t cdiv(int64_t a, int64_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline int64_t imin(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b


cdef inline int64_t imax(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b


cdef struct Operand:
    # geometry: streamed (X is T x S, column blocks of W, read by antidiagonals) or
    # preloaded (Y is S x SC, column blocks of W, row-major; tiles of TR rows)
    int preloaded
    int64_t T, S, W, SC, TR, pre, post
    int block_outer  # streamed: the fold's block is its outer (1) or inner (0) index
    int64_t reps  # folds that read the same block in a row (block_outer: the inner folds)
    int expanded  # the stream holds each block once per fold that reads it
    int64_t nb, wl, n_real, stream_len
    # the buffer
    int64_t active, prefetch, per_set, n_sets, A, P, bw
    int64_t start, batches, last, entered, used, dram_words, first
    double peak
    # im2col aliasing (compat): address copies
    int alias
    int64_t *copy_ptr
    int64_t *copy_sets
    int64_t conv_ow, conv_stride, conv_kw, conv_ch, conv_width
    int addr_is_pixel_row  # X rows are pixels (ws ifmap) or window indices (os, is)


cdef inline int64_t tri(int64_t x, int64_t w) noexcept nogil:
    """sum over u = 1..x of min(u, w); 0 for x <= 0."""
    if x <= 0:
        return 0
    if x <= w:
        return x * (x + 1) // 2
    return w * (w + 1) // 2 + (x - w) * w


cdef inline int64_t diag_rank(Operand *op, int64_t r, int64_t c) noexcept nogil:
    """Rank among real entries of (r, c) of the stacked (nb*T) x W matrix read by antidiagonals,
    each from the bottom row up; rows of the last block have wl real columns."""
    cdef int64_t d = r + c, rows = op.nb * op.T, r0 = (op.nb - 1) * op.T
    cdef int64_t before = tri(d, op.W) - tri(d - r0, op.W) + tri(d - r0, op.wl) - tri(d - rows, op.wl)
    cdef int64_t top = imin(d, rows - 1), lo, hi
    # same diagonal, rows below r (read first)
    lo = imax(r + 1, d - op.W + 1)
    hi = imin(top, r0 - 1)
    if hi >= lo:
        before += hi - lo + 1
    lo = imax(imax(r + 1, r0), d - op.wl + 1)
    hi = top
    if hi >= lo:
        before += hi - lo + 1
    return before


cdef inline int64_t block_rank(int64_t T, int64_t w, int64_t t, int64_t j) noexcept nogil:
    """Rank of (t, j) in a T x w block read by antidiagonals, each from the bottom row up."""
    cdef int64_t d = t + j, before = tri(d, w) - tri(d - T, w)
    cdef int64_t hi = imin(d, T - 1), lo = imax(t + 1, d - w + 1)
    if hi >= lo:
        before += hi - lo + 1
    return before


cdef inline int64_t stream_rank(Operand *op, int64_t fc, int64_t fr, int64_t b, int64_t wb,
                                int64_t t, int64_t j, int flags) noexcept nogil:
    """Rank of the block-b element (t, j) in the fetch stream."""
    if flags & D_ORDER:  # SCALE-Sim: antidiagonals of all blocks stacked
        return diag_rank(op, b * op.T + t, j)
    if op.expanded:
        return fc * op.reps * op.T * op.W + fr * op.T * wb + block_rank(op.T, wb, t, j)
    return b * op.T * op.W + block_rank(op.T, wb, t, j)


cdef inline int64_t words_before(Operand *op, int64_t e) noexcept nogil:
    """Real words in the first e sets of the stream repeated without end."""
    cdef int64_t whole = e // op.n_sets, k = e % op.n_sets
    return whole * op.n_real + imin(k * op.per_set, op.n_real)


cdef inline int resident(Operand *op, int64_t k) noexcept nogil:
    cdef int64_t off = k - op.start
    if off < 0:
        off += op.n_sets
    return off < op.A


cdef inline int64_t advance(Operand *op, int flags, int ideal, int64_t now) noexcept nogil:
    """Move the window on by P sets; the cycle the batch that enters is complete."""
    cdef int64_t lines, issue, first, words
    op.start += op.P
    if op.start >= op.n_sets:
        op.start -= op.n_sets
    first = op.A + op.batches * op.P
    words = words_before(op, first + op.P) - words_before(op, first)
    if flags & D_LINES:
        lines = cdiv(op.prefetch, op.bw)
        op.dram_words += lines * op.bw
    else:
        lines = cdiv(words, op.bw)
    issue = op.last + 1
    if not (flags & D_RUNAHEAD) and op.entered > issue:
        issue = op.entered
    if ideal:
        # the rate this batch needs to be in by the demand: released when the array entered
        # the previous window, due now (hit latency 1)
        if now - op.entered > 0:
            if words > op.peak * (now - op.entered):
                op.peak = <double>words / (now - op.entered)
        elif words > 0:
            op.peak = <double>words
        op.last = now - 1
    else:
        op.last = issue + lines
        if lines > 0 and <double>words / lines > op.peak:
            op.peak = <double>words / lines
    op.batches += 1
    return op.last


cdef inline void note_used(Operand *op, int64_t k) noexcept nogil:
    cdef int64_t off = k - op.start
    if off < 0:
        off += op.n_sets
    if op.batches * op.P + off > op.used:
        op.used = op.batches * op.P + off


cdef inline int64_t conv_address(Operand *op, int64_t pixel, int64_t window) noexcept nogil:
    cdef int64_t prow = pixel // op.conv_ow, pcol = pixel % op.conv_ow
    cdef int64_t r = window // (op.conv_kw * op.conv_ch), rest = window % (op.conv_kw * op.conv_ch)
    cdef int64_t s = rest // op.conv_ch, c = rest % op.conv_ch
    return ((prow * op.conv_stride + r) * op.conv_width + pcol * op.conv_stride + s) * op.conv_ch + c


cdef inline int any_copy_resident(Operand *op, int64_t addr) noexcept nogil:
    cdef int64_t i
    for i in range(op.copy_ptr[addr], op.copy_ptr[addr + 1]):
        if resident(op, op.copy_sets[i]):
            return 1
    return 0


cdef inline int64_t step(Operand *op, int64_t cycle, int64_t offset, int flags,
                         int ideal) noexcept nogil:
    """One window advance for a demand not resident: the new offset (the array waits)."""
    cdef int64_t late
    advance(op, flags, ideal, cycle + offset)
    late = op.last - (cycle + offset)
    if flags & D_130:
        offset += late
        if late > 0:
            offset += late
    elif late > 0:
        offset += late
    op.entered = cycle + offset
    return offset


cdef int64_t read_row(Operand *op, int64_t fc, int64_t fr, int64_t u, int64_t cycle, int flags,
                      int ideal) noexcept nogil:
    """Serve row u of fold (fc, fr) of a read operand: the cycle it is served (hit latency 1)."""
    cdef int64_t offset = 1, b, wb, j_lo, j_hi, k, k_lo, k_hi, t, y, j, base, addr, pixel, window
    if op.preloaded:
        if u >= op.TR:
            return cycle + offset
        y = fr * op.TR + op.TR - 1 - u
        if y >= op.S:
            return cycle + offset
        wb = op.W if fc < op.nb - 1 else op.wl
        if flags & D_ORDER:  # SCALE-Sim fetches the block row-major, top row first
            base = fc * op.S * op.W + y * wb
        else:  # fetched in the order the array reads the tile: bottom row first
            base = fc * op.S * op.W + (fr * op.TR + u - op.TR + imin(op.TR, op.S - fr * op.TR)) * wb
        if op.alias:
            for j in range(wb):
                k = (base + j) // op.per_set
                if not resident(op, k):
                    addr = conv_address(op, fc * op.W + j, y)
                    while not any_copy_resident(op, addr):
                        offset = step(op, cycle, offset, flags, ideal)
            return cycle + offset
        k_lo = base // op.per_set
        k_hi = (base + wb - 1) // op.per_set
    else:
        b = fc if op.block_outer else fr
        wb = op.W if b < op.nb - 1 else op.wl
        j_lo = imax(0, u - op.pre - op.T + 1)
        j_hi = imin(wb - 1, u - op.pre)
        if j_hi < j_lo:
            return cycle + offset
        t = u - op.pre  # the block's antidiagonal
        if op.alias:
            for j in range(j_lo, j_hi + 1):
                k = stream_rank(op, fc, fr, b, wb, t - j, j, flags) // op.per_set
                if not resident(op, k):
                    if op.addr_is_pixel_row:
                        pixel = u - op.pre - j
                        window = b * op.W + j
                    else:
                        window = u - op.pre - j
                        pixel = b * op.W + j
                    addr = conv_address(op, pixel, window)
                    while not any_copy_resident(op, addr):
                        offset = step(op, cycle, offset, flags, ideal)
            return cycle + offset
        k_lo = stream_rank(op, fc, fr, b, wb, t - j_lo, j_lo, flags) // op.per_set
        k_hi = stream_rank(op, fc, fr, b, wb, t - j_hi, j_hi, flags) // op.per_set
    for k in range(k_lo, k_hi + 1):
        while not resident(op, k):
            offset = step(op, cycle, offset, flags, ideal)
        if not (flags & D_LINES):
            note_used(op, k)
    return cycle + offset


cdef struct Writer:
    int64_t total, drain, bw, dram_words, first, last, drains, prev_trigger, prev_words
    # the FIFO drained in chunks of `drain` words: outputs written, drain end of chunk k at
    # ends[k % RING], of the latest chunk; until output `boundary` no chunk completes and the
    # outputs wait for the space of one chunk, free at `wait_until`
    int64_t written, last_end, boundary, wait_until
    int64_t ends[RING]
    # SCALE-Sim's write-triggered drains (D_TRIGGER)
    int64_t free, line, closed, queued, head, drain_end
    int os_layout  # ofmap tile layout of os (T-1 idle rows, flipped R x C tile)
    int64_t T, R, C, Sr, Sc, pre
    double peak
    # partial lines not yet drained: (index in the queue, words)
    int64_t *part_idx
    int64_t *part_cnt
    int64_t part_head, part_tail, part_cap
    int oom


cdef void flush(Writer *w) noexcept nogil:
    """Hand the closed lines and the partial line being filled to the drain queue."""
    cdef int64_t cap, n
    cdef int64_t *grown
    w.queued += w.closed
    w.closed = 0
    if w.line == 0:
        return
    if w.part_tail == w.part_cap:
        n = w.part_tail - w.part_head
        if w.part_head > 0:  # reuse the drained front
            memmove(w.part_idx, w.part_idx + w.part_head, n * sizeof(int64_t))
            memmove(w.part_cnt, w.part_cnt + w.part_head, n * sizeof(int64_t))
        else:
            cap = w.part_cap * 2 if w.part_cap else 64
            grown = <int64_t *> realloc(w.part_idx, cap * sizeof(int64_t))
            if grown == NULL:
                w.oom = 1
                return
            w.part_idx = grown
            grown = <int64_t *> realloc(w.part_cnt, cap * sizeof(int64_t))
            if grown == NULL:
                w.oom = 1
                return
            w.part_cnt = grown
            w.part_cap = cap
        w.part_head = 0
        w.part_tail = n
    w.part_idx[w.part_tail] = w.queued
    w.part_cnt[w.part_tail] = w.line
    w.part_tail += 1
    w.queued += 1
    w.line = 0


cdef int64_t drain_chunk(Writer *w, int64_t start, int flags) noexcept nogil:
    cdef int64_t lines = imin(cdiv(w.drain, w.bw), w.queued - w.head)
    cdef int64_t words = lines * w.bw, last_cnt = w.bw, end
    while w.part_head < w.part_tail and w.part_idx[w.part_head] < w.head + lines:
        if w.part_idx[w.part_head] == w.head + lines - 1:
            last_cnt = w.part_cnt[w.part_head]
        if not (flags & D_SLOTS):
            words -= w.bw - w.part_cnt[w.part_head]
        w.part_head += 1
    if flags & D_SLOTS:
        words -= w.bw - last_cnt
    w.dram_words += words
    w.free += words
    w.head += lines
    end = start + lines - 1
    if w.first > start:
        w.first = start
    if w.last < end:
        w.last = end
    w.drains += 1
    return end


cdef void chunk_ready(Writer *w, int64_t k, int64_t ready, int64_t words, int ideal,
                      int final) noexcept nogil:
    """Chunk k of `words` outputs is complete at `ready`: it drains once the previous one ended."""
    cdef int64_t start = ready, end
    w.dram_words += words
    w.drains += 1
    if ideal:
        # drains never wait: a chunk needs to be out before the next one is complete
        if not final:
            if w.prev_trigger >= 0 and w.prev_words > w.peak * imax(1, ready - w.prev_trigger):
                w.peak = <double>w.prev_words / imax(1, ready - w.prev_trigger)
            w.prev_trigger = ready
            w.prev_words = words
    else:
        start = imax(ready, w.last_end + 1)
    end = start + cdiv(words, w.bw) - 1
    w.ends[k % RING] = end
    w.last_end = end
    if w.first > start:
        w.first = start
    if w.last < end:
        w.last = end


cdef int64_t write_words(Writer *w, int64_t n, int64_t now, int ideal) noexcept nogil:
    """Write the next n outputs at cycle `now` into the FIFO: the cycle the last is written.
    The words go in segments that share their chunk and the chunk whose space they wait for."""
    cdef int64_t pos = w.written, end = pos + n, seg, k
    if end < w.boundary:  # the common row: no chunk completes, the same space waited for
        w.written = end
        return now if ideal or w.wait_until <= now else w.wait_until
    while pos < end:
        seg = imin(end, (pos // w.drain + 1) * w.drain)
        if pos >= w.total:
            k = (pos - w.total) // w.drain
            seg = imin(seg, (k + 1) * w.drain + w.total)
            if not ideal and w.ends[k % RING] + 1 > now:
                now = w.ends[k % RING] + 1
        else:
            seg = imin(seg, w.total)
        pos = seg
        if pos % w.drain == 0:
            chunk_ready(w, pos // w.drain - 1, now + 1, w.drain, ideal, 0)
    w.written = end
    w.boundary = (pos // w.drain + 1) * w.drain
    if pos >= w.total:
        k = (pos - w.total) // w.drain
        w.boundary = imin(w.boundary, (k + 1) * w.drain + w.total)
        w.wait_until = w.ends[k % RING] + 1
    else:
        w.boundary = imin(w.boundary, w.total)
    return now


cdef int64_t write_row(Writer *w, int64_t fc, int64_t fr, int64_t u, int64_t cycle, int flags,
                       int ideal) noexcept nogil:
    """Serve the outputs row u of fold (fc, fr) writes: the cycle it is done."""
    cdef int64_t wc = w.C if fc < cdiv(w.Sc, w.C) - 1 else w.Sc - fc * w.C
    cdef int64_t lo, hi, n, now = cycle, i, h
    if w.os_layout:
        h = w.R if fr < cdiv(w.Sr, w.R) - 1 else w.Sr - fr * w.R
        lo = imax(0, u - (w.T + w.R - 2))
        hi = imin(wc - 1, u - (w.T - 1 + w.R - h))
    else:
        lo = imax(0, u - w.pre - w.T + 1)
        hi = imin(wc - 1, u - w.pre)
    n = hi - lo + 1
    if n <= 0:
        return now
    if not (flags & D_TRIGGER):
        return write_words(w, n, now, ideal)
    # no drain starts and no stall in this row: count the words in bulk
    if (now < w.drain_end and w.free - n > 0) or (now >= w.drain_end and w.free - n >= w.total - w.drain):
        w.free -= n
        w.line += n
        w.closed += w.line // w.bw
        w.line %= w.bw
        return now
    for i in range(n):
        w.line += 1
        w.free -= 1
        if w.line == w.bw:
            w.closed += 1
            w.line = 0
        if now < w.drain_end:
            if w.free <= 0:
                now = w.drain_end
        elif w.free < w.total - w.drain:
            flush(w)
            if ideal:
                if w.prev_trigger >= 0 and now > w.prev_trigger:
                    if w.prev_words > w.peak * (now - w.prev_trigger):
                        w.peak = <double>w.prev_words / (now - w.prev_trigger)
                w.prev_trigger = now
                i = w.dram_words
                drain_chunk(w, now, flags)
                w.prev_words = w.dram_words - i
                w.drain_end = now  # drains take no time when bandwidth is unbounded
            else:
                w.drain_end = drain_chunk(w, now, flags)
    return now


cdef void init_buffer(Operand *op, int64_t words, int64_t bw, int flags) noexcept nogil:
    op.bw = bw
    op.active = (words + 1) // 2
    op.prefetch = words - op.active
    op.per_set = cdiv(words, 100)
    op.n_sets = op.n_real // op.per_set + 1
    op.A = imin(cdiv(op.active, op.per_set), op.n_sets)
    op.expanded = 0
    if not op.preloaded and op.block_outer and op.reps > 1 and not (flags & D_ORDER) \
            and op.n_sets > op.A:
        # the operand does not stay resident: each fold that reads a block fetches it again
        op.expanded = 1
        op.n_real *= op.reps
        op.n_sets = op.n_real // op.per_set + 1
        op.A = imin(cdiv(op.active, op.per_set), op.n_sets)
    op.P = imin(cdiv(op.prefetch, op.per_set), op.n_sets - op.A)
    op.start = 0
    op.batches = 0
    op.used = -1
    op.dram_words = 0
    op.peak = 0


cdef int64_t fill(Operand *op, int flags) noexcept nogil:
    """Fill the active half before cycle 0: the cycles it takes."""
    cdef int64_t lines
    if flags & D_LINES:
        lines = imin(cdiv(op.active, op.bw), cdiv(op.stream_len, op.bw))
        op.dram_words += lines * op.bw
    else:
        lines = cdiv(words_before(op, op.A), op.bw)
    op.first = -lines
    op.last = -1
    op.entered = 0
    return lines


cdef void _run(Operand *ifm, Operand *flt, Writer *w, int dataflow_os, int overlapped,
               int64_t R, int64_t n_fc, int64_t n_fr, int64_t fold_rows, int flags, int ideal,
               int64_t *out) noexcept nogil:
    """Serve every cycle of the GEMM in order. `ifm`/`flt` are the read operands (one of them
    preloaded for ws/is), `w` the ofmap."""
    cdef int64_t stall = 0, last = 0, row = 0, cycle, f, fc, fr, u, v, d, dmax, served, folds
    cdef int64_t pf_fc, pf_fr, pu
    cdef Operand *pre_op = NULL
    cdef int64_t fill_i = fill(ifm, flags), fill_f = fill(flt, flags)
    folds = n_fc * n_fr
    if overlapped:
        pre_op = ifm if ifm.preloaded else flt
    if overlapped:
        # the first fold's stationary tile; nothing else moves yet
        for v in range(R):
            cycle = row + stall
            if ideal:
                cycle = row
            d = read_row(pre_op, 0, 0, v, cycle, flags, ideal) - cycle - 1
            if not ideal and d > 0:
                stall += d
            row += 1
    for f in range(folds):
        fc = f // n_fr
        fr = f % n_fr
        for v in range(fold_rows - (R if overlapped else 0)):
            cycle = row if ideal else row + stall
            u = v + R if overlapped else v
            dmax = 0
            if overlapped:
                # streamed operand and outputs at fold row u; the next fold's tile loads meanwhile
                if ifm.preloaded:
                    served = read_row(flt, fc, fr, u, cycle, flags, ideal)
                else:
                    served = read_row(ifm, fc, fr, u, cycle, flags, ideal)
                dmax = served - cycle - 1
                if v < R and f + 1 < folds:
                    pf_fc = (f + 1) // n_fr
                    pf_fr = (f + 1) % n_fr
                    d = read_row(pre_op, pf_fc, pf_fr, v, cycle, flags, ideal) - cycle - 1
                    dmax = imax(dmax, d)
                elif not (v < R):
                    pass
            else:
                dmax = read_row(ifm, fc, fr, u, cycle, flags, ideal) - cycle - 1
                d = read_row(flt, fc, fr, u, cycle, flags, ideal) - cycle - 1
                dmax = imax(dmax, d)
            served = write_row(w, fc, fr, u, cycle, flags, ideal)
            dmax = imax(dmax, served - cycle)
            if served > last:
                last = served
            if not ideal and dmax > 0:
                stall += dmax
            row += 1
            if w.oom:
                out[0] = -1
                return
    # the rest of the ofmap drains after the last cycle
    if not (flags & D_TRIGGER):
        if w.written % w.drain:
            chunk_ready(w, w.written // w.drain, last + 1, w.written % w.drain, ideal, 1)
    else:
        flush(w)
        cycle = last
        if not (flags & D_FINAL):
            cycle = imax(last + 1, w.drain_end + 1)
        while w.head < w.queued:
            if ideal:
                drain_chunk(w, cycle, flags)
            else:
                w.drain_end = drain_chunk(w, cycle, flags)
                cycle = w.drain_end + 1
    if not (flags & D_LINES):
        ifm.dram_words = words_before(ifm, ifm.used + 1)
        flt.dram_words = words_before(flt, flt.used + 1)
    out[0] = row
    out[1] = stall
    out[2] = last if flags & D_125 else row + stall
    out[4] = ifm.dram_words
    out[5] = flt.dram_words
    out[6] = w.dram_words
    out[7] = ifm.batches
    out[8] = flt.batches
    out[9] = w.drains
    out[10] = imin(ifm.first, flt.first)
    out[11] = w.last if w.drains else out[2]
    out[3] = out[11] - out[10] + (0 if flags & D_125 else 1)
    out[12] = fill_i
    out[13] = fill_f


cdef void set_blocks(Operand *op, int64_t rows, int64_t cols, int64_t W) noexcept nogil:
    """A rows x cols operand in column blocks of W (the last one wl wide), no aliasing."""
    op.W = W
    op.nb = cdiv(cols, W)
    op.wl = cols - (op.nb - 1) * W
    op.n_real = rows * cols
    op.stream_len = op.nb * rows * W
    op.alias = 0


cdef void streamed(Operand *op, int64_t T, int64_t S, int64_t W, int64_t pre, int64_t post,
                   int block_outer) noexcept nogil:
    op.preloaded = 0
    op.T = T
    op.S = S
    op.pre = pre
    op.post = post
    op.block_outer = block_outer
    set_blocks(op, T, S, W)


cdef void preloaded(Operand *op, int64_t S, int64_t SC, int64_t TR, int64_t W) noexcept nogil:
    op.preloaded = 1
    op.S = S
    op.SC = SC
    op.TR = TR
    set_blocks(op, S, SC, W)


def _simulate(str dataflow, int64_t R, int64_t C, int64_t m, int64_t k, int64_t n,
              bint overlapped, int64_t i_words, int64_t f_words, int64_t o_words,
              int64_t i_bw, int64_t f_bw, int64_t o_bw, int flags, bint ideal,
              int64_t[::1] copy_ptr, int64_t[::1] copy_sets, int64_t[::1] conv):
    """Typed shim: set up the operands for the dataflow and run the nogil core."""
    cdef Operand ifm, flt
    cdef Writer w
    cdef int64_t out[14]
    cdef double peaks[3]
    cdef int64_t n_fc, n_fr, fold_rows, T
    cdef int dataflow_os = dataflow == "os"
    cdef Operand *aliased = NULL
    if dataflow == "ws":  # Sr = k, Sc = n, T = m
        T, n_fc, n_fr = m, cdiv(n, C), cdiv(k, R)
        streamed(&ifm, m, k, R, R, C - 1, 0)
        preloaded(&flt, k, n, R, C)
        fold_rows = 2 * R + C + m - 2
        aliased = &ifm
        ifm.addr_is_pixel_row = 1
    elif dataflow == "is":  # Sr = k, Sc = m, T = n
        T, n_fc, n_fr = n, cdiv(m, C), cdiv(k, R)
        preloaded(&ifm, k, m, R, C)
        streamed(&flt, n, k, R, R, C - 1, 0)
        fold_rows = 2 * R + C + n - 2
        aliased = &ifm
    else:  # os: Sr = m, Sc = n, T = k
        T, n_fc, n_fr = k, cdiv(n, C), cdiv(m, R)
        streamed(&ifm, k, m, R, 0, C - 1, 0)
        streamed(&flt, k, n, C, 0, R - 1, 1)
        fold_rows = R + C + k - 2
        aliased = &ifm
        ifm.addr_is_pixel_row = 0
        overlapped = False
    ifm.reps = flt.reps = n_fr
    init_buffer(&ifm, i_words, i_bw, flags)
    init_buffer(&flt, f_words, f_bw, flags)
    if copy_ptr.shape[0] > 1:
        aliased.alias = 1
        aliased.copy_ptr = &copy_ptr[0]
        aliased.copy_sets = &copy_sets[0]
        aliased.conv_ow, aliased.conv_stride, aliased.conv_kw = conv[0], conv[1], conv[2]
        aliased.conv_ch, aliased.conv_width = conv[3], conv[4]
    w.total = o_words
    w.drain = o_words - (o_words + 1) // 2
    w.free = o_words
    w.bw = o_bw
    w.line = w.closed = w.queued = w.head = w.drain_end = 0
    w.written = w.boundary = 0
    w.last_end = w.wait_until = -(1 << 62)
    w.dram_words = w.drains = 0
    w.first = 1 << 62
    w.last = -(1 << 62)
    w.prev_trigger = -1
    w.prev_words = 0
    w.peak = 0
    w.os_layout = dataflow_os
    w.T = T
    w.R = R
    w.C = C
    w.Sr = m if dataflow_os else 0
    w.Sc = n if dataflow != "is" else m
    w.pre = 2 * R - 1
    w.part_idx = NULL
    w.part_cnt = NULL
    w.part_head = w.part_tail = w.part_cap = 0
    w.oom = 0
    with nogil:
        _run(&ifm, &flt, &w, dataflow_os, overlapped, R, n_fc, n_fr, fold_rows, flags, ideal, out)
    free(w.part_idx)
    free(w.part_cnt)
    if out[0] < 0:
        raise MemoryError("ofmap partial-line queue")
    result = {name: int(out[i]) for i, name in enumerate(OUTPUTS)}
    result.update(ifmap_peak=ifm.peak, filter_peak=flt.peak, ofmap_peak=w.peak)
    return result


def simulate_gemm(str dataflow, int rows, int cols, int m, int k, int n, *,
                  str weight_load="serial", sram_words=(1024, 1024, 1024),
                  bandwidth=(1, 1, 1), defects=(), bint ideal=False, aliases=None):
    """Stall cycles, total cycles and DRAM traffic of one GEMM (m x k times k x n) on a
    rows x cols array with double-buffered SRAMs of `sram_words` (ifmap, filter, ofmap)
    words and DRAM bandwidths `bandwidth` words per cycle.

    defects: names from DEFECT_BITS (SCALE-Sim v3's behaviour, see memory_reference).
    ideal: no stalls; the peaks returned are the DRAM rates the layer would need.
    aliases: (copy_ptr, copy_sets, conv) for SCALE-Sim's im2col address aliasing: copy_ptr
    (addresses + 1) and copy_sets (the set of every copy, grouped by address) as int64 arrays,
    conv = (out_width, stride, kernel_w, channels, in_width).
    Returns a dict of OUTPUTS and PEAKS."""
    if dataflow not in ("ws", "os", "is"):
        raise ValueError(f"dataflow must be ws, os or is, not {dataflow!r}")
    for name, value in (("rows", rows), ("cols", cols), ("m", m), ("k", k), ("n", n)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if weight_load not in ("serial", "overlapped"):
        raise ValueError(f"weight_load must be serial or overlapped, not {weight_load!r}")
    sram = [int(x) for x in sram_words]
    bws = [int(x) for x in bandwidth]
    if len(sram) != 3 or min(sram) < 2:
        raise ValueError(f"sram_words must be three capacities >= 2 words, got {sram_words}")
    if len(bws) != 3 or min(bws) < 1:
        raise ValueError(f"bandwidth must be three rates >= 1 word per cycle, got {bandwidth}")
    flags = 0
    for name in defects:
        if name not in DEFECT_BITS:
            raise ValueError(f"unknown defect {name!r}; known: {', '.join(DEFECT_BITS)}")
        flags |= DEFECT_BITS[name]
    if ideal:  # no stalls: the stall-timing defects do not apply
        flags &= ~(DEFECT_BITS["issue130"] | DEFECT_BITS["runahead"])
    empty = np.zeros(1, dtype=np.int64)
    copy_ptr, copy_sets, conv = empty, empty, np.zeros(5, dtype=np.int64)
    if aliases is not None:
        copy_ptr, copy_sets, conv = (np.ascontiguousarray(a, dtype=np.int64) for a in aliases)
        if conv.shape != (5,) or copy_ptr.ndim != 1 or copy_sets.ndim != 1:
            raise ValueError("aliases must be (copy_ptr, copy_sets, conv[5])")
    return _simulate(dataflow, rows, cols, m, k, n, weight_load == "overlapped",
                     sram[0], sram[1], sram[2], bws[0], bws[1], bws[2], flags, ideal,
                     copy_ptr, copy_sets, conv)
