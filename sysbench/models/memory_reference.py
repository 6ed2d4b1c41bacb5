"""Slow, obviously correct reference of the memory model: explicit demand and fetch matrices and
a cycle-by-cycle, address-by-address emulation of the double-buffered SRAMs.

This is the specification the Cython kernel (kernels/memory.pyx) is held to. It builds, for one
GEMM on one array, what the array asks of each SRAM in every cycle (one demand row per cycle,
-1 where a port is idle) and the order in which each read SRAM fetches its operand from DRAM,
then serves the rows in order. Its layout follows SCALE-Sim v3 (compute/systolic_compute_*.py,
memory/read_buffer.py, write_buffer.py, double_buffered_scratchpad_mem.py), written anew.

Semantics (one operand read SRAM of S words, split into an active half of ceil(S/2) words and a
prefetch half of the rest; the buffer's unit of replacement is a set of ceil(S/100) words):
- The fetch stream (the operand in the order the folds first need it, one pass) is cut into
  sets of ceil(S/100) consecutive real words. The active window holds A sets, the prefetch
  window the next P sets (A = ceil(active/set), P = ceil(prefetch/set), both capped by the set
  count; a later pass over the operand wraps around the stream).
- Before cycle 0 the active half is filled: ceil(active/bw) DRAM lines of bw words, ending at
  cycle -1. A demand for a word outside the active window advances the window by P sets and
  fetches the next prefetch batch (ceil(prefetch/bw) lines, one cycle each, plus one cycle of
  latency) right after the previous batch; the array stalls until the batch is in.
- The ofmap SRAM of S words is a FIFO of the outputs in write order, drained in chunks of
  D = floor(S/2) words (the drain half; the outputs numbered 0, 1, ..., chunk k holds
  kD .. kD+D-1). A full chunk drains (ceil(D/bw) cycles) from the cycle after its last word is
  written or the cycle after the previous drain ends, whichever is later; its space is free
  the cycle after its drain ends. Output w waits for the space of output w - S (a write into
  a full buffer stalls). After the last cycle the partial last chunk drains.
- A cycle's stall is the largest of the three SRAMs' delays; every later cycle shifts by it.
  Every event time is a max of earlier event times plus durations that shrink with bandwidth,
  so more bandwidth on any interface never makes any event later (never adds stalls).

`compat=True` reproduces SCALE-Sim v3.0.0 including its defects (README, "Memory system"):
  (1) issue #130: a stall is added twice, and a prefetch that arrived early moves the cycle back;
  (2) a demand is served by any resident copy of its address (an im2col duplicate), though its
      own word is still on its way (read_buffer.active_buffer_hit on address sets);
  (3) a drain counts the unused slots of partial lines as written words and frees that much
      space (write_buffer.empty_drain_buf checks only the chunk's last line);
  (4) the final drain starts at the last compute cycle even while a drain is still running;
  (5) the cycle counts are one short (issue #125): total = last cycle index, and the total
      including prefetch = last DRAM write cycle - first DRAM read cycle;
  (6) drain_on_write: an ofmap drain starts only at a write that finds more than the drain half
      occupied and no drain running, takes the lines queued then (a partial line is a DRAM
      cycle), and frees their space when it starts (write_buffer.service_writes); (3) and (4)
      are part of this write buffer and act only with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np

NONE = -1


def skew(mat: np.ndarray) -> np.ndarray:
    """Column j delayed by j rows (the systolic wavefront)."""
    rows, cols = mat.shape
    out = np.full((rows + cols - 1, cols), NONE, dtype=np.int64)
    for j in range(cols):
        out[j:j + rows, j] = mat[:, j]
    return out


def antidiagonal_order(mat: np.ndarray) -> np.ndarray:
    """Elements diagonal by diagonal (row + col constant), each from the bottom row up."""
    rows, cols = mat.shape
    out = []
    for d in range(rows + cols - 1):
        for r in range(min(d, rows - 1), max(0, d - cols + 1) - 1, -1):
            out.append(mat[r, d - r])
    return np.asarray(out, dtype=np.int64)


def blocks(mat: np.ndarray, width: int, axis: int) -> list[np.ndarray]:
    """`mat` cut along `axis` into blocks of `width`, the last one padded with NONE."""
    size = mat.shape[axis]
    out = []
    for start in range(0, size, width):
        block = mat[:, start:start + width] if axis == 1 else mat[start:start + width, :]
        pad = width - block.shape[axis]
        if pad:
            shape = (block.shape[0], pad) if axis == 1 else (pad, block.shape[1])
            block = np.concatenate([block, np.full(shape, NONE)], axis=axis)
        out.append(block)
    return out


def idle(rows: int, cols: int) -> np.ndarray:
    return np.full((rows, cols), NONE, dtype=np.int64)


@dataclass
class Streams:
    ifmap_demand: np.ndarray
    filter_demand: np.ndarray
    ofmap_demand: np.ndarray
    ifmap_fetch: np.ndarray  # 1-D, NONE where a DRAM line slot carries padding
    filter_fetch: np.ndarray


def _streamed(x: np.ndarray, width: int, pre: int, post: int, repeats: tuple[int, int],
              block_outer: bool, scalesim_order: bool = True, words: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """A streamed operand: x (T x S) cut into column blocks of `width`. Demand per fold: `pre`
    idle rows, the block, `post` idle rows, skewed. Folds loop (outer, inner) = repeats; the
    block index is the outer or inner one.
    Fetch (SCALE-Sim): the blocks stacked and read by antidiagonals. Otherwise block by block,
    each by antidiagonals (the order the array reads it); a block that the next folds read
    again is fetched once per fold unless the whole operand stays resident in `words`."""
    bl = blocks(x, width, axis=1)
    outer, inner = repeats
    if scalesim_order:
        fetch = antidiagonal_order(np.concatenate(bl, axis=0))
    else:
        fetch = np.concatenate([antidiagonal_order(b) for b in bl])
    real = int(np.count_nonzero(fetch != NONE))
    per_set = ceil(max(words, 1) / 100)
    n_sets = real // per_set + 1
    expand = (not scalesim_order and block_outer and inner > 1
              and n_sets > min(ceil(ceil(words / 2) / per_set), n_sets))
    copy = lambda b, i: np.where(b == NONE, NONE, b + i * 1_000_000_000) if expand else b
    if expand:
        fetch = np.concatenate([antidiagonal_order(copy(bl[o], i))
                                for o in range(outer) for i in range(inner)])
    demand = []
    for o in range(outer):
        for i in range(inner):
            b = copy(bl[o], i) if block_outer else bl[i]
            demand.append(skew(np.concatenate([idle(pre, width), b, idle(post, width)])))
    return fetch, demand


def _preloaded(y: np.ndarray, rows: int, cols: int, post: int, repeats: tuple[int, int],
               row_major: bool) -> tuple[np.ndarray, np.ndarray]:
    """A stationary operand: y (Sr x Sc). Fetch: column blocks of `cols` stacked, row-major
    (SCALE-Sim) or tile by tile, each bottom row first (the order the array reads it).
    Demand per fold (fc, fr): the rows x cols tile, bottom row first, then `post` idle rows."""
    col_blocks = blocks(y, cols, axis=1)
    if row_major:
        fetch = np.concatenate(col_blocks, axis=0).reshape(-1)
    else:
        fetch = np.concatenate([np.flip(b[start:start + rows], 0).reshape(-1)
                                for b in col_blocks for start in range(0, b.shape[0], rows)])
    demand = []
    outer, inner = repeats
    for fc in range(outer):
        tiles = blocks(col_blocks[fc], rows, axis=0)
        for fr in range(inner):
            demand.append(np.concatenate([np.flip(tiles[fr], 0), idle(post, cols)]))
    return fetch, demand


def streams(dataflow: str, rows: int, cols: int, ifmap: np.ndarray, filt: np.ndarray,
            ofmap: np.ndarray, weight_load: str = "serial", row_major: bool = True,
            filter_words: int = 0) -> Streams:
    """Demand and fetch streams for ifmap (M x K addresses), filter (K x N), ofmap (M x N).
    weight_load "overlapped" (ws, is): fold f+1's stationary tile loads during the first R
    cycles of fold f's stream; only fold 0's load is exposed (R cycles)."""
    R, C = rows, cols
    M, K = ifmap.shape
    N = filt.shape[1]
    if dataflow == "ws":  # Sr=K, Sc=N, T=M
        folds = (ceil(N / C), ceil(K / R))
        i_fetch, i_dem = _streamed(ifmap, R, R, C - 1, folds, False, row_major)
        f_fetch, f_dem = _preloaded(filt, R, C, R + C + M - 2, folds, row_major)
        o_dem = [skew(np.concatenate([idle(2 * R - 1, C), b]))
                 for b in blocks(ofmap, C, axis=1) for _ in range(folds[1])]
    elif dataflow == "is":  # Sr=K, Sc=M, T=N
        folds = (ceil(M / C), ceil(K / R))
        i_fetch, i_dem = _preloaded(ifmap.T, R, C, R + C + N - 2, folds, row_major)
        f_fetch, f_dem = _streamed(filt.T, R, R, C - 1, folds, False, row_major)
        o_dem = [skew(np.concatenate([idle(2 * R - 1, C), b]))
                 for b in blocks(ofmap.T, C, axis=1) for _ in range(folds[1])]
    elif dataflow == "os":  # Sr=M, Sc=N, T=K
        folds = (ceil(N / C), ceil(M / R))
        i_fetch, i_dem = _streamed(ifmap.T, R, 0, C - 1, folds, False, row_major)
        f_fetch, f_dem = _streamed(filt, C, 0, R - 1, folds, True, row_major, filter_words)
        o_dem = []
        for fc, col_block in enumerate(blocks(ofmap, C, axis=1)):
            for tile in blocks(col_block, R, axis=0):
                o_dem.append(skew(np.concatenate([idle(K - 1, C), np.flip(tile, 0)])))
    else:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    if weight_load == "overlapped" and dataflow != "os":
        i_dem, f_dem, o_dem = _overlap(i_dem, f_dem, o_dem, R, stationary=0 if dataflow == "is" else 1)
    i_dem, f_dem, o_dem = (np.concatenate(d) for d in (i_dem, f_dem, o_dem))
    assert len(i_dem) == len(f_dem) == len(o_dem)
    return Streams(i_dem, f_dem, o_dem, i_fetch, f_fetch)


def _overlap(i_dem: list, f_dem: list, o_dem: list, R: int, stationary: int) -> tuple:
    """Per-fold demands with each fold's R preload cycles moved under the previous fold."""
    folds = [list(x) for x in zip(i_dem, f_dem, o_dem)]
    out = [[], [], []]
    for op in range(3):  # the first fold's preload: only the stationary operand moves
        out[op].append(folds[0][op][:R] if op == stationary else idle(R, folds[0][op].shape[1]))
    for f, fold in enumerate(folds):
        for op in range(3):
            body = fold[op][R:]
            if op == stationary:
                body = idle(*body.shape)
                if f + 1 < len(folds):
                    body[:R] = folds[f + 1][op][:R]
            out[op].append(body)
    return tuple(out)


def gemm_addresses(m: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operand address matrices of a GEMM, every address distinct."""
    ifmap = np.arange(m * k).reshape(m, k)
    filt = 10_000_000 + np.arange(k * n).reshape(n, k).T
    ofmap = 20_000_000 + np.arange(m * n).reshape(m, n)
    return ifmap, filt, ofmap


def conv_addresses(height: int, width: int, kh: int, kw: int, channels: int, filters: int,
                   stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """im2col address matrices of an unpadded convolution (NHWC input): the same input pixel
    appears in every window that covers it."""
    oh, ow = (height - kh) // stride + 1, (width - kw) // stride + 1
    p = np.arange(oh * ow)[:, None]
    q = np.arange(kh * kw * channels)[None, :]
    prow, pcol = np.divmod(p, ow)
    r, rest = np.divmod(q, kw * channels)
    s, c = np.divmod(rest, channels)
    ifmap = ((prow * stride + r) * width + pcol * stride + s) * channels + c
    window = kh * kw * channels
    filt = 10_000_000 + np.arange(window)[:, None] + window * np.arange(filters)[None, :]
    ofmap = 20_000_000 + filters * np.arange(oh * ow)[:, None] + np.arange(filters)[None, :]
    return ifmap, filt, ofmap


class ReadBuffer:
    def __init__(self, fetch: np.ndarray, words: int, bw: int, defects: frozenset):
        self.defects = defects
        self.bw = bw
        self.active = ceil(words * 0.5)
        self.prefetch = words - self.active
        per_set = ceil(words / 100)
        real = fetch[fetch != NONE]
        self.sets = [set(real[i:i + per_set].tolist()) for i in range(0, len(real), per_set)]
        if len(real) % per_set == 0:
            self.sets.append(set())  # the stream's end closes an (empty) last set
        n = len(self.sets)
        self.n_sets = n
        self.A = min(ceil(self.active / per_set), n)
        self.P = min(ceil(self.prefetch / per_set), n - self.A)
        self.where: dict[int, list[int]] = {}
        for k, s in enumerate(self.sets):
            for a in s:
                self.where.setdefault(a, []).append(k)
        self.per_set = per_set
        self.n_real = len(real)
        self.fetch_lines = ceil(len(fetch) / bw)
        self.start = 0  # first set of the active window
        self.started = False
        self.last = 0  # cycle the latest DRAM batch completed
        self.entered = 0  # cycle the array moved into the current window
        self.dram_words = 0
        self.dram_first = self.dram_last = None
        self.batches = 0
        self.used = -1  # largest unwrapped set index a demand read (own-word model)

    def words_before(self, e: int) -> int:
        """Real words in the first e sets of the stream repeated without end."""
        whole, k = divmod(e, self.n_sets)
        return whole * self.n_real + min(k * self.per_set, self.n_real)

    def _fill(self, cycle: int) -> None:
        if "dram_lines" in self.defects:
            lines = min(ceil(self.active / self.bw), self.fetch_lines)
            self.dram_words += lines * self.bw
        else:
            lines = ceil(self.words_before(self.A) / self.bw)
        self.dram_first, self.dram_last = cycle - lines, cycle - 1
        self.last = cycle - 1
        self.entered = cycle
        self.started = True

    def _advance(self) -> None:
        self.start = (self.start + self.P) % self.n_sets
        if "dram_lines" in self.defects:
            lines = ceil(self.prefetch / self.bw)
            self.dram_words += lines * self.bw
        else:
            first = self.A + self.batches * self.P  # unwrapped index of the first set entering
            lines = ceil((self.words_before(first + self.P) - self.words_before(first)) / self.bw)
        issue = self.last + 1
        if "runahead" not in self.defects:
            issue = max(issue, self.entered)  # the prefetch half is free once the array moved on
        self.last = issue + lines
        self.dram_last = self.last
        self.batches += 1

    def _resident(self, addr: int) -> bool:
        copies = self.where[addr]
        if "alias" not in self.defects:
            copies = copies[:1]  # own word: the GEMM view has every address once
        return any((k - self.start) % self.n_sets < self.A for k in copies)

    def serve(self, row: np.ndarray, cycle: int) -> int:
        """Cycle the row's reads are served (hit latency 1)."""
        if not self.started:
            self._fill(cycle)
        offset = 1
        for addr in row.tolist():
            if addr == NONE:
                continue
            while not self._resident(addr):
                if self.P == 0:
                    raise RuntimeError("word never resident")
                self._advance()
                late = self.last - (cycle + offset)
                offset += max(late, 0)  # the array waits for the window
                if "issue130" in self.defects:  # SCALE-Sim adds the lateness once more, even when early
                    offset += late
                self.entered = cycle + offset
            if "dram_lines" not in self.defects:
                k = self.where[addr][0]
                self.used = max(self.used, self.batches * self.P + (k - self.start) % self.n_sets)
        return cycle + offset

    def finish(self) -> None:
        if "dram_lines" not in self.defects:  # the words read; a batch's unused tail not counted
            self.dram_words = self.words_before(self.used + 1)


class WriteBuffer:
    """The ofmap SRAM: a FIFO of `words` drained in chunks of the drain half (docstring above)."""

    def __init__(self, words: int, bw: int, defects: frozenset):
        self.size = words
        self.chunk = words - ceil(words * 0.5)
        self.bw = bw
        self.written = 0
        self.ends: list[int] = []  # the cycle each chunk's drain ended, chunk by chunk
        self.dram_words = 0
        self.dram_first = self.dram_last = None

    def _drain(self, ready: int, words: int) -> None:
        start = ready if not self.ends else max(ready, self.ends[-1] + 1)
        end = start + ceil(words / self.bw) - 1
        self.ends.append(end)
        self.dram_words += words
        self.dram_first = start if self.dram_first is None else self.dram_first
        self.dram_last = end

    def serve(self, row: np.ndarray, cycle: int) -> int:
        now = cycle
        for addr in row.tolist():
            if addr == NONE:
                continue
            if self.written >= self.size:  # wait for the space of output written - size
                now = max(now, self.ends[(self.written - self.size) // self.chunk] + 1)
            self.written += 1
            if self.written % self.chunk == 0:
                self._drain(now + 1, self.chunk)
        return now

    def finish(self, cycle: int) -> None:
        if self.written % self.chunk:
            self._drain(cycle + 1, self.written % self.chunk)


class TriggeredWriteBuffer:
    """SCALE-Sim's ofmap SRAM (defect drain_on_write): drains start at writes."""

    def __init__(self, words: int, bw: int, defects: frozenset):
        self.defects = defects
        self.bw = bw
        self.total = words
        self.drain = words - ceil(words * 0.5)
        self.free = words
        self.line = 0  # words in the line being filled
        self.pending: list[int] = []  # closed lines not yet handed to the drain queue
        self.queue: list[int] = []  # lines (their word counts) in buffer order
        self.head = 0  # first queued line not yet drained
        self.drain_end = 0
        self.dram_words = 0
        self.dram_first = self.dram_last = None

    def _close_line(self) -> None:
        self.pending.append(self.line)
        self.line = 0

    def _flush(self) -> None:
        if self.line:
            self._close_line()
        self.queue += self.pending
        self.pending = []

    def _drain_chunk(self, start: int) -> int:
        lines = self.queue[self.head:self.head + ceil(self.drain / self.bw)]
        if "drain_slots" in self.defects:
            words = (len(lines) - 1) * self.bw + lines[-1]
        else:
            words = sum(lines)
        self.dram_words += words
        self.free += words
        self.head += len(lines)
        end = start + len(lines) - 1
        self.dram_first = start if self.dram_first is None else min(self.dram_first, start)
        self.dram_last = end if self.dram_last is None else max(self.dram_last, end)
        return end

    def serve(self, row: np.ndarray, cycle: int) -> int:
        now = cycle
        for addr in row.tolist():
            if addr == NONE:
                continue
            self.line += 1
            self.free -= 1
            if self.line == self.bw:
                self._close_line()
            if now < self.drain_end:
                if self.free <= 0:
                    now = self.drain_end
            elif self.free < self.total - self.drain:
                self._flush()
                self.drain_end = self._drain_chunk(now)
        return now

    def finish(self, cycle: int) -> None:
        self._flush()
        if "final_drain" not in self.defects:
            cycle = max(cycle + 1, self.drain_end + 1)
        while self.head < len(self.queue):
            self.drain_end = self._drain_chunk(cycle)
            cycle = self.drain_end + 1


@dataclass
class Result:
    compute_rows: int
    stall_cycles: int
    last_cycle: int  # last compute cycle (compat: its index; else the count, rows + stalls)
    total_cycles: int  # first DRAM read .. last DRAM write
    ifmap_dram_words: int
    filter_dram_words: int
    ofmap_dram_words: int
    dram_first: int
    ofmap_dram_last: int


DEFECTS = frozenset({"issue130", "alias", "runahead", "dram_lines", "drain_slots", "final_drain",
                     "issue125", "fetch_order", "drain_on_write"})


def simulate(dataflow: str, rows: int, cols: int, addresses, sram_words: tuple[int, int, int],
             bw: tuple[int, int, int], compat: bool = False, defects: frozenset | None = None,
             weight_load: str = "serial") -> Result:
    """Serve every demand row; sram_words = (ifmap, filter, ofmap) capacities in words.
    `defects` picks SCALE-Sim's defects one by one (compat: all of DEFECTS)."""
    if defects is None:
        defects = DEFECTS if compat else frozenset()
    st = streams(dataflow, rows, cols, *addresses, weight_load=weight_load,
                 row_major="fetch_order" in defects, filter_words=sram_words[1])
    ib = ReadBuffer(st.ifmap_fetch, sram_words[0], bw[0], defects)
    fb = ReadBuffer(st.filter_fetch, sram_words[1], bw[1], defects)
    ob = (TriggeredWriteBuffer if "drain_on_write" in defects else WriteBuffer)(
        sram_words[2], bw[2], defects)
    stall = 0
    last = 0
    for i in range(len(st.ifmap_demand)):
        cycle = i + stall
        di = ib.serve(st.ifmap_demand[i], cycle) - cycle - 1
        df = fb.serve(st.filter_demand[i], cycle) - cycle - 1
        out = ob.serve(st.ofmap_demand[i], cycle)
        stall += max(di, df, out - cycle)
        last = max(last, out)
    ob.finish(last)
    ib.finish()
    fb.finish()
    first = min(ib.dram_first, fb.dram_first)
    span = ob.dram_last - first
    short = "issue125" in defects
    return Result(len(st.ifmap_demand), stall, last if short else len(st.ifmap_demand) + stall,
                  span if short else span + 1,
                  ib.dram_words, fb.dram_words, ob.dram_words, first, ob.dram_last)
