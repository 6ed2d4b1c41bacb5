"""Cycle-stepped emulation of a rows x cols systolic array running one GEMM.

Slow and obviously right: every cycle moves the operands one PE along (right for the
streamed/left operand, down for partial sums or the top operand) and every PE does at most
one multiply-add, vectorised over the PE grid with numpy. fp32 arithmetic goes through
`fmaf_array` (C fmaf, one rounding), int8 through exact int64 numpy arithmetic.

Mapping (SCALE-Sim): (Sr, Sc, T) = ws (K, N, M), os (M, N, K), is (K, M, N).

* ws: PE(r, c) holds B[k0+r, n0+c] (preloaded one row per cycle, R cycles); A[t, k0+r]
  enters PE row r at cycle t + r and moves right; partial sums start at +0 at the top and
  move down; the bottom row emits the fold's sums, added into the output (fp32 add) with
  the K folds in increasing order. A row without a weight (ragged fold) passes sums through.
* is: the same machine with PE(r, c) holding A[m0+c, k0+r] and B's columns streaming.
* os: A[m0+r, k] enters row r at cycle k + r moving right, B[k, n0+c] enters column c at
  cycle k + c moving down; PE(r, c) does acc = fmaf(a, b, acc); idle PEs do nothing.

weight_load "serial" shifts each fold's stationary tile in before the fold streams;
"overlapped" shifts the next fold's tile into shadow registers (one row per cycle) while
the current fold streams and swaps them in when it ends. A fold streams until the last
partial sum leaves PE (R-1, C-1) (os: until PE (R-1, C-1) has done its last product).
The cycle counts agree with `sysbench.models.systolic.gemm_cycles`.
"""
from __future__ import annotations

import numpy as np

from .._kernels.systolic import fmaf_array

DATAFLOWS = ("ws", "os", "is")
WEIGHT_LOADS = ("serial", "overlapped")


def _fold_starts(size: int, step: int) -> range:
    return range(0, size, step)


class _WeightRegisters:
    """A rows x cols register array that a stationary tile shifts into, one row per cycle
    entering at the top (the row for PE row R-1 goes in first)."""

    def __init__(self, rows: int, cols: int, dtype):
        self.rows, self.cols = rows, cols
        self.value = np.zeros((rows, cols), dtype=dtype)
        self.valid = np.zeros((rows, cols), dtype=bool)
        self._queue: list[tuple[np.ndarray, np.ndarray]] = []

    def start_load(self, tile: np.ndarray, valid: np.ndarray) -> None:
        # rows enter bottom-first so that after R shifts row r sits in PE row r
        self._queue = [(tile[r], valid[r]) for r in range(self.rows - 1, -1, -1)]

    @property
    def loading(self) -> bool:
        return bool(self._queue)

    def shift(self) -> None:
        """One cycle: every row moves down one PE, the next tile row enters at the top."""
        row, ok = self._queue.pop(0)
        self.value[1:] = self.value[:-1].copy()
        self.valid[1:] = self.valid[:-1].copy()
        self.value[0] = row
        self.valid[0] = ok


def _shift_right(reg, tag, feed, cycle):
    """One cycle of operands moving one PE right: every column takes its left neighbour's,
    column 0 the skewed feed, row r the element feed[cycle - r, r] (before and after the
    feed a bubble: tag -1). reg, tag: the values and stream indices held; returns the new."""
    length = feed.shape[0]
    values, tags = np.empty_like(reg), np.empty_like(tag)
    values[:, 1:], tags[:, 1:] = reg[:, :-1], tag[:, :-1]
    rows = np.arange(reg.shape[0])
    t = cycle - rows
    live = (t >= 0) & (t < length)
    tags[:, 0] = np.where(live, t, -1)
    values[:, 0] = np.where(live, feed[np.clip(t, 0, length - 1), rows], 0)
    return values, tags


def _stationary_gemm(stat, stream, rows, cols, weight_load, int8):
    """ws/is machine. stat is Sr x Sc (held in the PEs), stream is T x Sr (row t enters
    at stream step t). Returns (T x Sc output, cycles)."""
    sr, sc = stat.shape
    t_len = stream.shape[0]
    acc_dtype = np.int64 if int8 else np.float32
    out = np.zeros((t_len, sc), dtype=acc_dtype)
    folds = [(k0, c0) for c0 in _fold_starts(sc, cols) for k0 in _fold_starts(sr, rows)]

    def tile(f):
        k0, c0 = folds[f]
        t = np.zeros((rows, cols), dtype=acc_dtype)
        ok = np.zeros((rows, cols), dtype=bool)
        kr, cr = min(rows, sr - k0), min(cols, sc - c0)
        t[:kr, :cr] = stat[k0:k0 + kr, c0:c0 + cr]
        ok[:kr, :cr] = True
        return t, ok

    active = _WeightRegisters(rows, cols, acc_dtype)
    shadow = _WeightRegisters(rows, cols, acc_dtype)
    cycles = 0
    if weight_load == "overlapped":
        shadow.start_load(*tile(0))
        while shadow.loading:
            shadow.shift()
            cycles += 1
    for f, (k0, c0) in enumerate(folds):
        if weight_load == "serial":
            active.start_load(*tile(f))
            while active.loading:
                active.shift()
                cycles += 1
        else:
            if shadow.loading:
                raise AssertionError("shadow weights not loaded when the fold ended")
            active, shadow = shadow, active  # swap in the tile loaded in the shadow
            if f + 1 < len(folds):
                shadow.start_load(*tile(f + 1))
        kr = min(rows, sr - k0)
        cr = min(cols, sc - c0)
        # streamed operand padded to the array: x[t, r] enters row r at cycle t + r
        x = np.zeros((t_len, rows), dtype=acc_dtype)
        x[:, :kr] = stream[:, k0:k0 + kr]
        a_reg = np.zeros((rows, cols), dtype=acc_dtype)   # operand moving right
        a_tag = np.full((rows, cols), -1)                 # its stream index (-1: bubble)
        p_reg = np.zeros((rows, cols), dtype=acc_dtype)   # partial sum moving down
        p_tag = np.full((rows, cols), -1)
        emitted = 0
        cycle = 0
        while True:
            a_in, tag_in = _shift_right(a_reg, a_tag, x, cycle)
            # partial sums arrive from above; the top row starts at +0
            p_in = np.zeros_like(p_reg)
            ptag_in = np.full_like(p_tag, -1)
            p_in[1:], ptag_in[1:] = p_reg[:-1], p_tag[:-1]
            ptag_in[0] = tag_in[0]
            busy = tag_in >= 0
            if not np.array_equal(ptag_in[busy], tag_in[busy]):
                raise AssertionError("skew broken: operand and partial sum out of step")
            w, ok = active.value, active.valid
            if int8:
                prod = p_in + a_in * w
            else:
                prod = fmaf_array(a_in, w, p_in)
            new_p = np.where(ok & busy, prod, p_in)
            a_reg, a_tag = a_in, tag_in
            p_reg, p_tag = new_p, np.where(busy, tag_in, -1)
            if weight_load == "overlapped" and shadow.loading:
                shadow.shift()
            cycle += 1
            # the bottom row emits this cycle's sums
            for c in np.nonzero(p_tag[rows - 1] >= 0)[0]:
                t = int(p_tag[rows - 1, c])
                if c < cr:
                    out[t, c0 + c] = out[t, c0 + c] + p_reg[rows - 1, c]
                if c == cols - 1:
                    emitted += 1
            if emitted == t_len:  # the last sum has left PE (R-1, C-1)
                break
        cycles += cycle
    return out, cycles


def _os_gemm(a, b, rows, cols, int8):
    m, k_len = a.shape
    n = b.shape[1]
    acc_dtype = np.int64 if int8 else np.float32
    out = np.zeros((m, n), dtype=acc_dtype)
    cycles = 0
    r_idx = np.arange(rows)[:, None]
    c_idx = np.arange(cols)[None, :]
    for m0 in _fold_starts(m, rows):
        for n0 in _fold_starts(n, cols):
            mr, nc = min(rows, m - m0), min(cols, n - n0)
            pe_ok = (r_idx < mr) & (c_idx < nc)
            lhs = np.zeros((rows, k_len), dtype=acc_dtype)
            lhs[:mr] = a[m0:m0 + mr]
            top = np.zeros((k_len, cols), dtype=acc_dtype)
            top[:, :nc] = b[:, n0:n0 + nc]
            acc = np.zeros((rows, cols), dtype=acc_dtype)
            a_reg = np.zeros((rows, cols), dtype=acc_dtype)
            a_tag = np.full((rows, cols), -1)
            b_reg = np.zeros((rows, cols), dtype=acc_dtype)
            b_tag = np.full((rows, cols), -1)
            done = 0
            cycle = 0
            while True:
                a_in, at_in = _shift_right(a_reg, a_tag, lhs.T, cycle)
                b_in, bt_in = (v.T for v in _shift_right(b_reg.T, b_tag.T, top, cycle))  # down: right, transposed
                busy = at_in >= 0
                if not np.array_equal(busy, bt_in >= 0) or \
                        not np.array_equal(at_in[busy], bt_in[busy]):
                    raise AssertionError("skew broken: A and B out of step")
                if int8:
                    new = acc + a_in * b_in
                else:
                    new = fmaf_array(a_in, b_in, acc)
                acc = np.where(busy & pe_ok, new, acc)
                a_reg, a_tag, b_reg, b_tag = a_in, at_in, b_in, bt_in
                cycle += 1
                if at_in[rows - 1, cols - 1] >= 0:
                    done += 1
                if done == k_len:  # PE (R-1, C-1) did its last product
                    break
            out[m0:m0 + mr, n0:n0 + nc] = acc[:mr, :nc]
            cycles += cycle
    return out, cycles


def emulate_gemm(a, b, rows, cols, dataflow, weight_load, int8=False):
    """Emulate A (M x K) @ B (K x N) on a rows x cols array, cycle by cycle.

    a, b are float32 operands already rounded to the array dtype (int8 arrays when
    int8=True). Returns (out, cycles): out is float32 (int32 for int8) in the dataflow's
    accumulation order (ws/is: folds of `rows` reduction indices; os: one chain).
    """
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    if weight_load not in WEIGHT_LOADS:
        raise ValueError(f"weight_load must be one of {WEIGHT_LOADS}, got {weight_load!r}")
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows}x{cols}")
    a, b = np.asarray(a), np.asarray(b)
    want = np.int8 if int8 else np.float32
    for name, x in (("a", a), ("b", b)):
        if x.dtype != want or x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D {np.dtype(want).name} array")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"shape mismatch: a {a.shape} and b {b.shape}")
    if int8:
        a, b = a.astype(np.int64), b.astype(np.int64)
    if dataflow == "os":
        out, cycles = _os_gemm(a, b, rows, cols, int8)
    elif dataflow == "ws":
        out, cycles = _stationary_gemm(b, a, rows, cols, weight_load, int8)
    else:  # is: A^T stationary (K x M), B's columns stream (N x K), output N x M
        out_t, cycles = _stationary_gemm(a.T, b.T, rows, cols, weight_load, int8)
        out = out_t.T
    out = np.ascontiguousarray(out.astype(np.int32) if int8 else out)
    return out, cycles
