"""Transposed convolution by strided tiling per kernel element (no zero insertion).

Layout NCHW, weights (in_channels, out_channels/groups, kh, kw) and output sizes as in
PyTorch:  H_out = (H_in - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1.

Input pixel i reaches output row  i * stride - padding + r * dilation  through kernel row r.
For each kernel element (r, s) the input rows/columns whose output lands inside the image
form one rectangle, computed analytically (`element_plan`); that rectangle times the
element's Cin/groups x Cout/groups weight slice is one GEMM, whose rows are added into the
output at the stride. No zero ever enters a GEMM.

Every output element of a GEMM is its own sum over the reduction index k in the array's
order whatever the GEMM's shape or orientation, so the bits equal the array's per-element
Y = X W however the CPU arranges it. float32, from 256 input pixels on with full micro-tiles:
by output phases (_phases_f32, tconv_micro.h): each phase's kernel elements are constant
shifts of the input, summed per output tile in registers in the same order, each output
written once. Otherwise the array GEMM is called from C (systolic.pxd), once per group and
chunk of images, for every reaching kernel element on the whole input (_strided_f32). int8 or a given gemm callable: per shared window, Y^T = W_rs^T @
X_window^T on the gathered window, the elements that share a rectangle stacked into one GEMM.
Per output element, the kernel elements' contributions are added in plan order (row-major
over (r, s)), starting from +0, in the accumulator dtype (float32, int32 for int8), in one
pass over the output.

Layers: Python wrappers that validate and raise ValueError naming the bad argument, typed
memoryview shims, nogil cores with prange over independent output planes.
"""
import functools
import threading

import numpy as np

cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free, malloc
from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t
from libc.string cimport memcpy

from sysbench._kernels.systolic cimport GEMM_CHAIN, GEMM_FOLD, _current_isa, _gemm_f32_core

cdef extern from "tconv_micro.h" nogil:
    int TC_TILE_AVX512W
    int TC_PACK_ROWS
    int SIMD_AVX512 "SIMD_ISA_AVX512"
    int tc_tile_mr(int tile)
    int tc_tile_nr(int tile)
    void tc_panel(int tile_kind, const float *xb, long plane, long taps, const int64_t *offsets,
                  const uint32_t *masks, long m0, const float *wpack, long cin, long fold,
                  long cout, long tile_lo, long tile_hi, const int64_t *lanes, float *outb,
                  long out_plane, float *bcache, int64_t *bcache_tags, const int64_t *slots,
                  const int64_t *tap_tags)
    void tc_element_weights(int isa, const float *w, long c_step, long khkw, long nc,
                            long o_lo, long o_hi, const int64_t *tap_start,
                            const int64_t *tap_of, float *out, long o_step, long t_step)
    void tc_raise(int *flag)
    int tc_raised(const int *flag)
    void tc_barrier()
    int tc_set_fuse_taps(int mode)
    void *simd_alloc(size_t count, size_t size)
    void simd_free(void *p)
    int TC_PACK_CB
    int tc_pack_weights(int tile_kind, const float *w, long w_cout, long khkw, long c0,
                        long cin, long cout, long tiles, long cb, long nphases,
                        const int64_t *info, const int64_t *starts, const int64_t *taps_k,
                        float *packed)

ctypedef fused operand_t:
    float
    int8_t

ctypedef fused acc_t:
    float
    int32_t

cnp.import_array()

include "checks.pxi"

# int8: every output sums at most Cin/groups * kh * kw products of magnitude <= 128 * 128
I8_MAX_TERMS = 131071


tc_set_fuse_taps(-1)


def _fused_taps(mode=-1):
    """Whether the phase path sums every tap of a tile in one call (tconv_micro.h's
    tc_fuse_taps: by default only on AMD Zen 4, where it pays); True or False sets it, -1
    the CPU's default. Returns the setting in force before. The bits are the same."""
    return bool(tc_set_fuse_taps(-1 if mode is None or mode == -1 else int(bool(mode))))


# ------------------------------------------------------------------ arguments

def _pair(value, name, minimum):
    """(h, w) from an int or a 2-sequence of ints, each >= minimum."""
    pair = tuple(value) if isinstance(value, (tuple, list)) and len(value) == 2 else (value, value)
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an integer or a pair of integers, got {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


X_LAYOUT = "(batch, in_channels, height, width)"
W_LAYOUT = "(in_channels, out_channels/groups, kh, kw)"


def output_size(n_in, kernel, stride, padding, output_padding, dilation):
    """PyTorch: (n_in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1."""
    return (n_in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def check_args(x_shape, w_shape, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Validate a layer's geometry; return it as a dict of ints and (h, w) pairs.

    Raises ValueError naming the bad argument: wrong ndim, non-positive sizes, channels not
    divisible by groups, weight/input channel mismatch, output_padding not smaller than
    stride or dilation, an empty output.
    """
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    check_shape(x_shape, "x", 4, X_LAYOUT, (0, 1, 2, 3))
    check_shape(w_shape, "w", 4, W_LAYOUT, (0, 1, 2, 3))
    stride = _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    output_padding = _pair(output_padding, "output_padding", 0)
    dilation = _pair(dilation, "dilation", 1)
    groups = check_int(groups, "groups", CONS_POSITIVE)
    batch, cin, height, width = x_shape
    if cin % groups:
        raise ValueError(f"in_channels = {cin} is not divisible by groups = {groups}")
    if w_shape[0] != cin:
        raise ValueError(f"w.shape[0] = {w_shape[0]} must equal in_channels = x.shape[1] = {cin}")
    for d in range(2):
        if output_padding[d] >= stride[d] and output_padding[d] >= dilation[d]:
            raise ValueError(f"output_padding {output_padding} must be smaller than stride "
                             f"{stride} or dilation {dilation} in each dimension")
    kernel = (w_shape[2], w_shape[3])
    out_hw = tuple(output_size((height, width)[d], kernel[d], stride[d], padding[d],
                               output_padding[d], dilation[d]) for d in range(2))
    if out_hw[0] < 1 or out_hw[1] < 1:
        raise ValueError(f"padding {padding} is too large: the output would be {out_hw[0]}x{out_hw[1]}")
    return {"batch": batch, "in_channels": cin, "out_channels": w_shape[1] * groups,
            "height": height, "width": width, "kernel": kernel, "stride": stride,
            "padding": padding, "output_padding": output_padding, "dilation": dilation,
            "groups": groups, "output": out_hw}


def valid_range(n_in, n_out, stride, padding, dilation, r):
    """(lo, hi, first): input indices lo <= i < hi reach 0 <= i*stride - padding + r*dilation
    < n_out through kernel index r; `first` is the output index of input lo. Empty: lo == hi."""
    offset = r * dilation - padding          # output index of input 0
    lo = max(0, -((offset) // stride))       # ceil(-offset / stride)
    hi = min(n_in, (n_out - 1 - offset) // stride + 1)
    if hi <= lo:
        return 0, 0, 0
    return lo, hi, lo * stride + offset


def element_plan(geo):
    """[(r, s, i_lo, i_hi, j_lo, j_hi, out_row, out_col)] for every kernel element that
    reaches the output, in row-major (r, s) order; `geo` is check_args' result."""
    (kh, kw), (sh, sw) = geo["kernel"], geo["stride"]
    (ph, pw), (dh, dw) = geo["padding"], geo["dilation"]
    ho, wo = geo["output"]
    plan = []
    for r in range(kh):
        ilo, ihi, oi = valid_range(geo["height"], ho, sh, ph, dh, r)
        if ihi == ilo:
            continue
        for s in range(kw):
            jlo, jhi, oj = valid_range(geo["width"], wo, sw, pw, dw, s)
            if jhi > jlo:
                plan.append((r, s, ilo, ihi, jlo, jhi, oi, oj))
    return plan


# ------------------------------------------------------------------ operand layout

def element_weights(w, c0, channels, taps=None, threads=1):
    """(len(taps), out_channels/groups, channels): out[n] = w[c0:c0+channels, :, r, s].T for
    the kernel element taps[n] = r * kw + s (default: all, row-major), each a contiguous GEMM
    operand and consecutive ones stackable into one."""
    w = check_array(w, "w", (np.float32, np.int8), 4, W_LAYOUT, ())
    if not (0 <= c0 and channels >= 1 and c0 + channels <= w.shape[0]):
        raise ValueError(f"channels {c0}:{c0 + channels} out of range for {w.shape[0]} channels")
    ntaps = w.shape[2] * w.shape[3]
    taps = np.arange(ntaps, dtype=np.int64) if taps is None else np.asarray(taps, dtype=np.int64)
    if taps.ndim != 1 or taps.size < 1 or taps.min() < 0 or taps.max() >= ntaps:
        raise ValueError(f"taps must list kernel elements in [0, {ntaps}), got {taps!r}")
    threads = check_threads(threads)
    out = np.empty((taps.size, w.shape[1], channels), dtype=w.dtype)
    if w.dtype == np.float32 and _current_isa() == SIMD_AVX512:
        if _element_weights_avx512(w, taps, out, c0, threads):
            raise MemoryError("could not allocate the taps' table")
    elif w.dtype == np.float32:
        _element_weights[float](w, taps, out, c0, threads)
    else:
        _element_weights[int8_t](w, taps, out, c0, threads)
    return out


cdef int _element_weights_avx512(const float[:, :, :, ::1] w, const int64_t[::1] taps,
                                float[:, :, ::1] out, long c0, int threads) noexcept nogil:
    # tc_element_weights (tconv_micro.h), each thread a range of output channels; it wants
    # per kernel element k the taps that name it, tap_of[tap_start[k]:tap_start[k + 1]]
    # (a counting sort). On AVX2 and scalar paths the loop below measured as fast or faster.
    cdef long cout = out.shape[1], channels = out.shape[2], khkw = w.shape[2] * w.shape[3]
    cdef long ntaps = taps.shape[0], t, k, lo, hi
    cdef int64_t *tap_start = <int64_t *> malloc((khkw + 2) * sizeof(int64_t))
    cdef int64_t *tap_of = <int64_t *> malloc(ntaps * sizeof(int64_t))
    if tap_start == NULL or tap_of == NULL:
        free(tap_start)
        free(tap_of)
        return -1
    for k in range(khkw + 2):
        tap_start[k] = 0
    for t in range(ntaps):
        tap_start[taps[t] + 2] += 1
    for k in range(2, khkw + 2):
        tap_start[k] += tap_start[k - 1]
    for t in range(ntaps):  # tap_start[k + 1]: where element k's next tap goes
        tap_of[tap_start[taps[t] + 1]] = t
        tap_start[taps[t] + 1] += 1
    for t in prange(threads, num_threads=threads, schedule="static"):
        lo = cout * t // threads
        hi = cout * (t + 1) // threads
        tc_element_weights(SIMD_AVX512, &w[c0, 0, 0, 0], w.shape[1] * khkw, khkw, channels, lo,
                           hi, tap_start, tap_of, &out[0, 0, 0], channels, cout * channels)
    free(tap_start)
    free(tap_of)
    return 0


cdef void _element_weights(const operand_t[:, :, :, ::1] w, const int64_t[::1] taps,
                           operand_t[:, :, ::1] out, long c0, int threads) noexcept nogil:
    # a blocked transpose: a block of 16 channels x 16 output channels x all taps (read from
    # 16 contiguous runs) stays in L1 while each tap's 16 x 16 tile is written row by row
    # (where the runs are a multiple of 4 KiB apart they evict each other instead: on
    # AVX-512, _element_weights_avx512 was 2.4x faster for DCGAN 512->256's weights)
    cdef long ntaps = out.shape[0], cout = out.shape[1], channels = out.shape[2]
    cdef long nblocks = (channels + 15) // 16
    cdef long kw = w.shape[3], c_step = w.shape[1] * w.shape[2] * w.shape[3]
    cdef long blk, ob, c, o, t, c_first, c_count, o_end
    cdef const operand_t *src
    cdef operand_t *dst
    for blk in prange(nblocks, num_threads=threads, schedule="static"):
        c_first = blk * 16
        c_count = min(channels - c_first, 16)
        ob = 0
        while ob < cout:
            o_end = min(cout, ob + 16)
            for t in range(ntaps):
                for o in range(ob, o_end):
                    src = &w[c0 + c_first, o, taps[t] // kw, taps[t] % kw]
                    dst = &out[t, o, c_first]
                    for c in range(c_count):
                        dst[c] = src[c * c_step]
            ob = ob + 16


def gather_window(x, c0, channels, i_lo, i_hi, j_lo, j_hi, threads=1):
    """(channels, batch * (i_hi - i_lo) * (j_hi - j_lo)) = x[:, c0:c0+channels, i_lo:i_hi,
    j_lo:j_hi] with the channel first and (batch, row, column) flattened: the transposed GEMM
    operand of one kernel element."""
    x = check_array(x, "x", (np.float32, np.int8), 4, X_LAYOUT, ())
    b, c, h, w = x.shape
    if not (0 <= c0 and channels >= 1 and c0 + channels <= c):
        raise ValueError(f"channels {c0}:{c0 + channels} out of range for {c} channels")
    if not (0 <= i_lo < i_hi <= h and 0 <= j_lo < j_hi <= w):
        raise ValueError(f"window rows {i_lo}:{i_hi}, columns {j_lo}:{j_hi} out of range for {h}x{w}")
    threads = check_threads(threads)
    out = np.empty((channels, b * (i_hi - i_lo) * (j_hi - j_lo)), dtype=x.dtype)
    if x.dtype == np.float32:
        _gather[float](x, out, c0, i_lo, i_hi, j_lo, j_hi, threads)
    else:
        _gather[int8_t](x, out, c0, i_lo, i_hi, j_lo, j_hi, threads)
    return out


cdef void _gather(const operand_t[:, :, :, ::1] x, operand_t[:, ::1] out, long c0,
                  long i_lo, long i_hi, long j_lo, long j_hi, int threads) noexcept nogil:
    cdef long nb = x.shape[0], width = x.shape[3], channels = out.shape[0]
    cdef long mi = i_hi - i_lo, mj = j_hi - j_lo
    cdef long t, c, b, ii, jj
    cdef const operand_t *src
    cdef operand_t *dst
    for t in prange(channels * nb, num_threads=threads, schedule="static"):
        c = t // nb
        b = t % nb
        if mj == width:  # whole rows: the window is one contiguous block
            memcpy(&out[c, b * mi * mj], &x[b, c0 + c, i_lo, 0], mi * mj * sizeof(operand_t))
        else:
            # rows are short (tens of pixels): an inline copy loop beats a memcpy call per row
            src = &x[b, c0 + c, i_lo, j_lo]
            dst = &out[c, b * mi * mj]
            for ii in range(mi):
                for jj in range(mj):
                    dst[jj] = src[jj]
                src = src + width
                dst = dst + mj


def scatter_elements(out, c0, channels, plan, products, stride, threads=1):
    """Write out[:, c0:c0+channels] as the strided sum of every kernel element's transposed
    GEMM result (channels rows each), in plan order, starting from +0:

        out[b, c0+o, oi + ii*sh, oj + jj*sw] += products[e][o, (b*rows + ii)*cols + jj]

    for plan[e] = (r, s, i_lo, i_hi, j_lo, j_hi, oi, oj), rows = i_hi - i_lo, cols = j_hi -
    j_lo. One pass over the output: each band of a (channel, image) plane is summed while
    it is in cache."""
    out = check_array(out, "out", (np.float32, np.int32), 4, "", (), CONTIG_REQUIRE)
    sh, sw = _pair(stride, "stride", 1)
    threads = check_threads(threads)
    nb, nc, ho, wo = out.shape
    if len(plan) != len(products):
        raise ValueError(f"{len(plan)} plan entries but {len(products)} products")
    products = [np.ascontiguousarray(y) if isinstance(y, np.ndarray) else y for y in products]
    cout = channels
    if not (0 <= c0 and cout >= 1 and c0 + cout <= nc):
        raise ValueError(f"channels {c0}:{c0 + cout} out of range for {nc} channels")
    n = len(plan)
    geometry = np.zeros((max(n, 1), GEO_FIELDS), dtype=np.int64)
    cdef cnp.ndarray product
    cdef Py_ssize_t e
    for e, (entry, y) in enumerate(zip(plan, products)):
        _, _, ilo, ihi, jlo, jhi, oi, oj = entry
        rows, cols = ihi - ilo, jhi - jlo
        if not isinstance(y, np.ndarray) or y.ndim != 2 or y.dtype != out.dtype:
            raise ValueError(f"products[{e}] must be a 2-D {out.dtype} numpy array")
        if y.shape != (cout, nb * rows * cols):
            raise ValueError(f"products[{e}] has shape {y.shape}; expected {(cout, nb * rows * cols)}")
        if rows < 1 or cols < 1 or oi < 0 or oj < 0 or oi + (rows - 1) * sh >= ho \
                or oj + (cols - 1) * sw >= wo:
            raise ValueError(f"plan[{e}]: the strided window does not fit the {ho}x{wo} output")
        product = y
        # kept alive by `products`; (channel, image, row, column) strides of a window's product
        geometry[e] = (rows, cols, oi, oj, <size_t> cnp.PyArray_DATA(product),
                       y.shape[1], rows * cols, cols, 1)
    band = SCATTER_BAND if sum(y.nbytes for y in products) <= SCATTER_CACHE_BYTES else 1
    if out.dtype == np.float32:
        _scatter[float](out, geometry, n, c0, cout, sh, sw, band, False, threads)
    else:
        _scatter[int32_t](out, geometry, n, c0, cout, sh, sw, band, False, threads)


# scatter geometry per kernel element: rows, cols, out row, out column of its first input
# pixel, address of that pixel's product for channel 0 and image 0, and the element strides
# of its product between channels, images, input rows and input columns
GEO_FIELDS = 9


# output elements per band of a plane: a band (16 KB of float32) stays in L1 while every
# kernel element is added into it. When the products exceed SCATTER_CACHE_BYTES they come from
# memory, and bands of one row (all elements' product rows streaming in together) are faster.
SCATTER_BAND = 4096
SCATTER_CACHE_BYTES = 16 << 20


cdef void _scatter(acc_t[:, :, :, ::1] out, const int64_t[:, ::1] geo, long n, long c0,
                   long cout, long sh, long sw, long band_elements, bint image_major,
                   int threads) noexcept nogil:
    # one (output channel, image) plane per iteration: planes never overlap, so no races.
    # The planes go image by image (image_major) where an image's products are a block of
    # rows, (pixel, output channel and tap) as the normal orientation makes them: each
    # pixel's row is then read in order, a few streams the prefetchers follow (by output
    # channel, 16 images x 16 pixels' rows advanced a line at a time, and the scatter of
    # DCGAN 512->256 waited on memory for each product); else output channel by channel.
    # Each band of output rows is zeroed, then the kernel elements are added into it one after
    # another in plan order, each over its own strided rows within the band: per output
    # element the same additions in the same order as a row-by-row pass, with a division per
    # band and element instead of one per row and element.
    cdef long nb = out.shape[0], ho = out.shape[2], wo = out.shape[3]
    cdef long band = max(1, band_elements // wo)  # rows per band
    cdef long t, o, b, r0, r1, k, e, ii, ii_lo, ii_hi, jj, rows, cols, first, step_j
    cdef const acc_t *src
    cdef acc_t *dst
    for t in prange(cout * nb, num_threads=threads, schedule="static"):
        if image_major:
            b = t // cout
            o = t % cout
        else:
            o = t // nb
            b = t % nb
        r0 = 0
        while r0 < ho:
            r1 = min(ho, r0 + band)
            dst = &out[b, c0 + o, r0, 0]
            for k in range((r1 - r0) * wo):
                dst[k] = 0
            for e in range(n):
                rows = geo[e, 0]
                cols = geo[e, 1]
                first = geo[e, 2]  # output row of the element's first input row
                if r1 <= first:
                    continue
                ii_lo = 0
                if r0 > first:
                    ii_lo = (r0 - first + sh - 1) // sh
                ii_hi = min(rows, (r1 - first + sh - 1) // sh)
                step_j = geo[e, 8]
                src = (<const acc_t *> <size_t> geo[e, 4]) + o * geo[e, 5] + b * geo[e, 6] \
                    + ii_lo * geo[e, 7]
                for ii in range(ii_lo, ii_hi):
                    dst = &out[b, c0 + o, first + ii * sh, geo[e, 3]]
                    if step_j == 1 and sw == 1:  # unit strides: a loop the compiler vectorises
                        for jj in range(cols):
                            dst[jj] = dst[jj] + src[jj]
                    else:
                        for jj in range(cols):
                            dst[jj * sw] = dst[jj * sw] + src[jj * step_j]
                    src = src + geo[e, 7]
            r0 = r1


# ------------------------------------------------------------------ the layer

def isa():
    """The SIMD path tconv2d runs: that of its array GEMM (sysbench._kernels.systolic); the
    gather and scatter loops are plain C."""
    from . import systolic

    return systolic.isa()


def _line_aligned_empty(shape, dtype):
    """np.empty(shape, dtype) whose data starts on a 64-byte cache line (np.empty's large
    arrays start 16 bytes past one): the phase path streams whole output rows past the
    cache, and streaming stores need the alignment."""
    n = int(np.prod(shape))
    raw = np.empty(n + 16, dtype=dtype)
    first = (-raw.ctypes.data % 64) // raw.itemsize
    return raw[first:first + n].reshape(shape)


def _default_gemm(dtype, threads):
    """An output-stationary array's order (one fmaf chain over k), or exact int8."""
    from . import systolic

    if dtype == np.int8:
        return lambda a, b: systolic.gemm_i8(a, b, threads)
    return lambda a, b: systolic.gemm_f32(a, b, 1, True, threads)


def tconv2d_strided(x, w, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                    gemm=None, threads=1, fold_depth=None):
    """conv_transpose2d(x, w) by one GEMM per kernel element and a strided scatter-add.

    x: (batch, in_channels, H, W); w: (in_channels, out_channels/groups, kh, kw); both
    float32 or both int8 (the output is then int32). The GEMMs are the array's: float32
    in fold order with `fold_depth` reduction indices per fold, or chain order (one fmaf
    chain over k) when fold_depth is None; exact int8. A `gemm(a, b) -> a @ b` callable
    replaces them (the emulator, in tests); it receives only the input pixels that reach
    the output. Returns NCHW output of PyTorch's size.
    """
    x = check_array(x, "x", (np.float32, np.int8), 4, X_LAYOUT, ())
    w = check_array(w, "w", (np.float32, np.int8), 4, W_LAYOUT, ())
    if x.dtype != w.dtype:
        raise ValueError(f"x and w must have the same dtype, got {x.dtype} and {w.dtype}")
    geo = check_args(x.shape, w.shape, stride, padding, output_padding, dilation, groups)
    threads = check_threads(threads)
    if fold_depth is not None:
        fold_depth = check_int(fold_depth, "fold_depth", CONS_POSITIVE)
    groups = geo["groups"]
    kh, kw = geo["kernel"]
    cin_g, cout_g = geo["in_channels"] // groups, w.shape[1]
    if x.dtype == np.int8 and cin_g * kh * kw > I8_MAX_TERMS:
        raise ValueError(f"int8: in_channels/groups * kh * kw = {cin_g * kh * kw} exceeds "
                         f"{I8_MAX_TERMS}; int32 accumulation could overflow")
    x = np.ascontiguousarray(x)
    batch, (height, width), (ho, wo) = geo["batch"], (geo["height"], geo["width"]), geo["output"]
    out = _line_aligned_empty((batch, geo["out_channels"], ho, wo),
                              np.int32 if x.dtype == np.int8 else np.float32)
    plan = element_plan(geo)
    if gemm is None and x.dtype == np.float32 and _phases_pay(geo, plan, w):
        if _phases_f32(x, np.ascontiguousarray(w), out, geo, plan, fold_depth, threads):
            return out  # else a weight is not finite: the strided path writes every output
    if gemm is None and x.dtype == np.float32:
        _strided_f32(x, np.ascontiguousarray(w), out, geo, plan, fold_depth, threads)
        return out
    if gemm is None:
        gemm = _default_gemm(x.dtype, threads)
    sharing = {}  # valid rectangle -> the kernel elements (plan indices) that share it
    for e, (r, s, ilo, ihi, jlo, jhi, _, _) in enumerate(plan):
        sharing.setdefault((ilo, ihi, jlo, jhi), []).append(e)
    # images per chunk: the chunk's gathered pixels and products stay within CHUNK_BYTES
    per_image = x.itemsize * cin_g * sum((w_[1] - w_[0]) * (w_[3] - w_[2]) for w_ in sharing) \
        + 4 * cout_g * sum((p[3] - p[2]) * (p[5] - p[4]) for p in plan)
    chunk = max(1, min(batch, CHUNK_BYTES // max(per_image, 1)))
    # the weight slices of the elements sharing a window, consecutive: one stacked operand
    taps = [plan[e][0] * kw + plan[e][1] for elements in sharing.values() for e in elements]
    for g in range(groups):
        wt = element_weights(w, g * cin_g, cin_g, taps, threads) if taps else None
        stacked, n = {}, 0
        for window, elements in sharing.items():
            stacked[window] = wt[n:n + len(elements)].reshape(-1, cin_g)
            n += len(elements)
        for b0 in range(0, batch, chunk):
            _chunk(x[b0:b0 + chunk], out[b0:b0 + chunk], g, cin_g, cout_g, plan, sharing,
                   stacked, gemm, geo["stride"], threads)
    return out


# ------------------------------------------------------------------ float32: output phases

def _phases_pay(geo, plan, w):
    """Whether the output-phase path runs this float32 layer (else _strided_f32). It needs
    every phase no wider than the input (its pixels then lie on the input's row grid), and
    finite weights, which _phases_f32 checks (a masked lane multiplies a weight by 0: inf or
    nan would make a nan where the element does not reach). It pays (measured on the
    suite's layers) when the tiles are mostly full (output channels/groups and the phase
    pixels per image fill them) and the batch has PHASE_MIN_PIXELS input pixels or more:
    with fewer (one 8 x 8 or 4 x 4 image), packing the weights per phase costs more than
    the scatter it saves."""
    (sh, sw), (ho, wo) = geo["stride"], geo["output"]
    cout_g = w.shape[1]
    kind = _tile_kind(cout_g)
    mr, nr = tc_tile_mr(kind), tc_tile_nr(kind)
    pixels = geo["batch"] * geo["height"] * geo["width"]
    if not plan or pixels < PHASE_MIN_PIXELS or -(-wo // sw) > geo["width"]:
        return False
    lanes = -(-ho // sh) * geo["width"]
    rows_used = cout_g / (-(-cout_g // mr) * mr)
    lanes_used = lanes / (-(-lanes // nr) * nr)
    return (rows_used >= PHASE_MIN_USE and lanes_used >= PHASE_MIN_USE
            and len(plan) >= sh * sw)


# the phase path wants its micro-tiles at least this full (output channels x pixels), and
# at least this many input pixels in the batch
PHASE_MIN_USE = 0.9
PHASE_MIN_PIXELS = 256


def _tile_kind(cout_g):
    """The phase path's micro-tile: the SIMD path's, on AVX-512 12 rows instead of 8 when 12
    divides the output channels and 8 does not (with 128, 8 x 32 tiles measured 3% faster
    than 12 x 32 ones with 4 rows of waste)."""
    isa_code = _current_isa()
    if isa_code == SIMD_AVX512 and cout_g % 12 == 0 and cout_g % 8 != 0:
        return TC_TILE_AVX512W
    return isa_code


def _phases_f32(x, w, out, geo, plan, fold_depth, threads):
    """The float32 layer by output phases: for phase (ah, aw) (output rows ah + qi*sh,
    columns aw + qj*sw) the kernel elements (r, s) with ah + ph - r*dh = di*sh and
    aw + pw - s*dw = dj*sw read input pixel (qi + di, qj + dj): each element is a constant
    shift of the input, and tc_panel (tconv_micro.h) sums the phase's elements in plan order
    into tiles of output channels x phase pixels, reading each element's input rows once per
    block of tiles, and writes each output once. Per output element the additions are those of the per-element GEMMs and
    the scatter (each element's sum over the input channels in the array's fold or chain
    order, then the elements from +0 in plan order), so the bits are the same.

    Blocks of output channel tiles, each block's weights (about half an L2,
    PHASE_WEIGHT_BYTES) packed just before its work items, (image, panel), each doing every
    phase, so that the output rows of a panel are complete while in cache: each thread its
    own blocks where there are enough of them, else the threads together (_phase_blocks).
    A tile's taps go through one call per half tile where the CPU gains by it (tconv_micro.h's
    tc_fuse_taps, _fused_taps), else one call per tap. False (out then
    partly written) when a weight is inf or nan: the phase path does not take such weights."""
    groups = geo["groups"]
    cin_g, cout_g = geo["in_channels"] // groups, w.shape[1]
    kind = _tile_kind(cout_g)
    fold = cin_g if fold_depth is None else min(fold_depth, cin_g)
    mr = tc_tile_mr(kind)
    tiles = -(-cout_g // mr)
    block, owned = _phase_blocks(tiles, 4 * len(plan) * cin_g * mr, threads)
    layout = _phase_layout(tuple(plan), geo["height"], geo["width"], geo["stride"],
                           geo["padding"], geo["dilation"], geo["output"], geo["kernel"][1],
                           cin_g, cout_g, fold, kind, block, PHASE_BCACHE_BYTES)
    info, offsets, masks, lanes, slots, nslots, taps_k, starts, packed_size, rows = layout
    # the micro-kernels read the planes in place only for folds deeper than TC_PACK_ROWS;
    # shallower folds are packed first (tc_pack_*), which on AVX-512 (panels of 32 lanes)
    # planes 4 KiB apart do not slow: there x is read where it is (the copy into spread
    # planes was 3% of the stride-1 layer on Zen 4). AVX2's 16-lane packs of 32-wide rows
    # re-read the planes' lines tap after tap: in place, stride 1 was 8% slower at batch 8
    # and 20% at batch 1 (SYSBENCH_ISA=avx2 on Zen 4)
    spread = fold > TC_PACK_ROWS or kind not in (SIMD_AVX512, TC_TILE_AVX512W)
    planes = _planes(x) if spread else np.empty((1, 1, 1), dtype=np.float32)
    packed = _scratch("packed", packed_size * (threads if owned else 1))
    x_flat = x.reshape(x.shape[0], x.shape[1], -1)
    tap_di, tap_dj, ring, panel_rows = rows
    panels = int(info[:, 2].max())
    # consecutive panels of an image on one thread, where a panel's packed rows serve the next
    chunk = 1
    if ring and panel_rows < ring:
        chunk = max(1, min(panels, x.shape[0] * panels // (4 * threads)))
    for g in range(groups):
        if _phase_shim(x_flat, planes, spread, w, taps_k, packed, starts, info, offsets, masks,
                       lanes, slots, nslots, tap_di, tap_dj, ring, panel_rows, chunk, out, g * cin_g,
                       g * cout_g, cin_g, cout_g, fold, block, threads, kind, owned):
            return False  # a weight of group g is inf or nan
    return True


def _phase_blocks(tiles, tile_bytes, threads):
    """Output channel tiles per block of the phase path, and whether each thread owns whole
    blocks: a block's weights about PHASE_WEIGHT_BYTES (tile_bytes a tile's, every phase),
    blocks of even size. Where there are at least as many blocks as threads, each thread
    packs the weights of its own blocks and runs every (image, panel) on them, in as many
    blocks as a multiple of the threads: its weights then stay in its own L2. Sharing each
    block among the threads (each packs part, all read all) sent the packed weights from
    core to core: DCGAN 256->128 at batch 8 ran 18% slower on two threads of an Intel Xeon.
    With fewer blocks (small weights), the threads share the block's work items."""
    block = max(1, min(tiles, PHASE_WEIGHT_BYTES // max(tile_bytes, 1)))
    blocks = -(-tiles // block)
    owned = 1 < threads <= blocks
    if owned:
        blocks = min(tiles, -(-blocks // threads) * threads)
    return -(-tiles // blocks), owned


@functools.lru_cache(maxsize=64)
def _phase_layout(plan, height, width, stride, padding, dilation, output, kw, cin_g, cout_g,
                  fold, int kind, long block, bcache_bytes):
    """The phase path's tables for one layer geometry, kept for its next calls (building
    them took ~40 us, serial, of a 1.6 ms layer at two threads): per phase (info: taps, first
    offset, panels, first mask, first lane, first tap, ah, aw, qh, qw), each tap's input
    offset, lane masks and output lanes (_phase_tables), the bcache slot of each tap's shift
    and the slots per thread (nslots, 0: no cache), the taps' kernel indices, where each
    phase's packed weights start (for blocks of `block` output channel tiles, _phase_blocks)
    and the packed floats of one block. The arrays are read-only: every call shares them."""
    cdef long mr = tc_tile_mr(kind), nr = tc_tile_nr(kind)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = output
    phases, shifts, taps_rs = [], [], []
    n_offsets = n_masks = n_lanes = 0
    for ah in range(sh):
        qh = len(range(ah, ho, sh))
        for aw in range(sw):
            qw = len(range(aw, wo, sw))
            if qh == 0 or qw == 0:
                continue
            taps = [(r, s, (ah + ph - r * dh) // sh, (aw + pw - s * dw) // sw) for r, s, *_ in plan
                    if (ah + ph - r * dh) % sh == 0 and (aw + pw - s * dw) % sw == 0]
            panels = -(-qh * width // nr)  # phase pixels on the input's row grid
            phases.append((len(taps), n_offsets, panels, n_masks, n_lanes, len(taps_rs), ah, aw, qh, qw))
            shifts += [(di, dj) for _, _, di, dj in taps] or [(0, 0)]
            taps_rs += [(r, s) for r, s, _, _ in taps]
            n_offsets += max(len(taps), 1)
            n_masks += panels * max(len(taps), 1)
            n_lanes += panels * nr
    info = np.array(phases, dtype=np.int64)
    offsets = np.empty(n_offsets, dtype=np.int64)
    masks = np.empty(n_masks, dtype=np.uint32)
    lanes = np.empty(n_lanes, dtype=np.int64)
    _phase_tables(info, np.array(shifts, dtype=np.int64), offsets, masks, lanes, height, width,
                  sh, sw, wo, nr)
    # the packed rows of each distinct shift, kept per thread (tc_panel's bcache) where they
    # are read more than once and the cache fits. When a panel is whole input rows (nr a
    # multiple of the width), a shift's packed rows depend only on its first input row and
    # column shift (_phase_tables' masks): a slot per (first row mod ring, column shift),
    # ring the taps' span of rows, serves every phase of a panel and, where a panel is fewer
    # rows than the ring (a stride-1 layer's panel is one), the next panels (tap_di, tap_dj:
    # each tap's row shift and column shift index). Else a slot per shift, for the phases
    # of one panel (ring 0).
    distinct = {shift: n for n, shift in enumerate(dict.fromkeys(shifts))}
    di = [d for d, _ in shifts]
    dj = [d for _, d in shifts]
    ring = max(di) - min(di) + 1 if nr % width == 0 else 0
    panel_rows = nr // width
    if ring:
        n_dj = max(dj) - min(dj) + 1
        n_slots = ring * n_dj
        reused = len(distinct) < len(shifts) or panel_rows < ring
        slots = np.zeros(len(shifts), dtype=np.int64)  # unused: the core computes them
    else:
        n_dj, n_slots = 0, len(distinct)
        reused = len(distinct) < len(shifts)
        slots = np.array([distinct[shift] for shift in shifts], dtype=np.int64)
    tap_di = np.array(di, dtype=np.int64)
    tap_dj = np.array([d - min(dj) for d in dj], dtype=np.int64)
    cache_bytes = 4 * n_slots * -(-cin_g // fold) * fold * nr
    nslots = n_slots if (fold <= TC_PACK_ROWS and reused and cache_bytes <= bcache_bytes) else 0
    taps_k = np.array([r * kw + s for r, s in taps_rs] or [0], dtype=np.int64)
    sizes = [block * max(q[0], 1) * cin_g * mr for q in phases]  # one block's weights
    starts = np.cumsum([0] + sizes[:len(sizes) - 1]).astype(np.int64)  # wraparound is off
    for table in (info, offsets, masks, lanes, slots, taps_k, starts, tap_di, tap_dj):
        table.flags.writeable = False
    return (info, offsets, masks, lanes, slots, nslots, taps_k, starts, sum(sizes),
            (tap_di, tap_dj, ring if nslots else 0, panel_rows))


cdef void _phase_tables(const int64_t[:, ::1] info, const int64_t[:, ::1] shifts,
                        int64_t[::1] offsets, uint32_t[::1] masks, int64_t[::1] lanes,
                        long height, long width, long sh, long sw, long wo, long nr) noexcept nogil:
    # per phase (info row: taps, offset start, panels, mask start, lane start, -, ah, aw, qh,
    # qw) and grid pixel m = p*nr + j = qi*width + qj: the tap's input element offset
    # di*width + dj, the lanes whose input pixel (qi + di, qj + dj) exists (bit j of
    # masks[p*taps + t]) and where each lane's output goes (-1: past the phase)
    cdef long q, t, p, j, m, qi, qj, taps, ntap, di, dj
    cdef uint32_t bits
    for q in range(info.shape[0]):
        taps = info[q, 0]
        ntap = max(taps, 1)
        for t in range(ntap):
            offsets[info[q, 1] + t] = shifts[info[q, 1] + t, 0] * width + shifts[info[q, 1] + t, 1]
        for p in range(info[q, 2]):
            for j in range(nr):
                m = p * nr + j
                qi = m // width
                qj = m % width
                if qi < info[q, 8] and qj < info[q, 9]:
                    lanes[info[q, 4] + m] = (qi * sh + info[q, 6]) * wo + qj * sw + info[q, 7]
                else:
                    lanes[info[q, 4] + m] = -1
            for t in range(ntap):
                di = shifts[info[q, 1] + t, 0]
                dj = shifts[info[q, 1] + t, 1]
                bits = 0
                for j in range(nr):
                    m = p * nr + j
                    qi = m // width
                    qj = m % width
                    # lanes past the phase's rows read too (their outputs are dropped): a
                    # shift's mask is then the same in every phase, so is its packed input
                    if taps and 0 <= qi + di < height and 0 <= qj + dj < width:
                        bits = bits | (<uint32_t> 1 << j)
                masks[info[q, 3] + p * ntap + t] = bits


# packed input rows kept per thread for the phases of one panel: within a core's L2 (384 KiB
# holds DCGAN 256->128's 9 shifts of 256 channels x 32 lanes on AVX-512)
PHASE_BCACHE_BYTES = 384 << 10


# weight bytes per block of output channel tiles in the phase path: about half a core's L2,
# so a block's weights stay there while the panels of every image stream through
PHASE_WEIGHT_BYTES = 1 << 20


_SCRATCH = threading.local()


def _scratch(name, size):
    """A float32 buffer of `size` kept per thread between calls: fresh megabytes from the
    allocator are fresh pages, and their page faults cost as much as packing into them."""
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=np.float32)
        setattr(_SCRATCH, name, buf)
    return buf[:size]


def _planes(x):
    """A buffer for x as (batch, channels, stride) (_phase_core copies x in) when the
    micro-kernels read a fold's planes in place (folds deeper than TC_PACK_ROWS): each
    channel plane in a row of `stride` floats, an odd number of cache lines. They read one
    cache line or two of every channel plane per step; planes a multiple of 1 KiB apart
    (16 x 16, 32 x 32 images) would all map to a few L1 sets and evict each other."""
    b, c, h, w = x.shape
    stride = -(-h * w // 16) * 16
    if stride // 16 % 2 == 0:
        stride += 16
    return _scratch("planes", b * c * stride).reshape(b, c, stride)


cdef int _phase_shim(const float[:, :, ::1] x_flat, float[:, :, ::1] x, bint spread,
                     const float[:, :, :, ::1] w, const int64_t[::1] taps_k, float[::1] packed,
                     const int64_t[::1] packed_start, const int64_t[:, ::1] info,
                     const int64_t[::1] offsets, const uint32_t[::1] masks,
                     const int64_t[::1] lanes, const int64_t[::1] slots, long nslots,
                     const int64_t[::1] tap_di, const int64_t[::1] tap_dj, long ring,
                     long panel_rows, long chunk, float[:, :, :, ::1] out, long c0, long o0,
                     long cin, long cout, long fold, long block, int threads, int kind,
                     bint owned):
    cdef int not_finite
    with nogil:
        not_finite = _phase_core(x_flat, x, spread, w, taps_k, packed, packed_start, info,
                                 offsets, masks, lanes, slots, nslots, tap_di, tap_dj, ring, panel_rows,
                                 chunk, out, c0, o0, cin, cout, fold, block, threads, kind, owned)
    return not_finite


cdef int _phase_core(const float[:, :, ::1] x_flat, float[:, :, ::1] x, bint spread,
                     const float[:, :, :, ::1] w, const int64_t[::1] taps_k, float[::1] packed,
                     const int64_t[::1] packed_start, const int64_t[:, ::1] info,
                     const int64_t[::1] offsets, const uint32_t[::1] masks,
                     const int64_t[::1] lanes, const int64_t[::1] slots, long nslots,
                     const int64_t[::1] tap_di, const int64_t[::1] tap_dj, long ring,
                     long panel_rows, long chunk, float[:, :, :, ::1] out, long c0, long o0,
                     long cin, long cout, long fold, long block, int threads,
                     int kind, bint owned) noexcept nogil:
    # First, in the same parallel region (on two threads a serial pass was 5% of DCGAN
    # 256->128): where `spread`, the group's input channels copied into x's spread planes
    # (_planes), which the kernels then read; else they read x_flat.
    # Per block of output channel tiles: pack the block's weights (TC_PACK_CB input channels
    # a step; per phase q, (block, taps, cin, mr) from packed_start[q]), which checks them
    # finite (a weight inf or nan: 1 is returned before the block's outputs are written;
    # earlier blocks' are, and the caller's strided path writes every output), then, while
    # the block fits in L2, one (image, panel) at a time, every phase (_phase_item). With
    # `owned` (_phase_blocks), a thread takes whole blocks, packs each into its own part of
    # `packed` and runs every item on it, no barrier; else the threads share each block,
    # its packing then its items, a barrier after each. The outputs an item writes are its
    # own (channels of the block, pixels of its panel), so no races. Dynamic schedules: on
    # a shared machine a thread that loses its core leaves its work to the others; items in
    # chunks of `chunk` consecutive panels where a panel's packed rows serve the next. Each thread
    # keeps packed input rows (nslots > 0: tc_panel's bcache) in the slots of _phase_layout,
    # tagged by what they hold: by image and first input row (ring > 0), or by item (the
    # rows of an item's shifts are the same in every block and phase).
    cdef long nr = tc_tile_nr(kind), mr = tc_tile_mr(kind), khkw = w.shape[2] * w.shape[3]
    cdef long plane = x.shape[2] if spread else x_flat.shape[2]
    cdef long out_plane = out.shape[2] * out.shape[3], channels = x_flat.shape[1]
    cdef const float *xs = &x_flat[0, 0, 0]  # what the kernels read
    cdef long nphases = info.shape[0], batch = x_flat.shape[0], tiles = (cout + mr - 1) // mr
    cdef long panels = 0, blocks = (tiles + block - 1) // block
    cdef long folds = (cin + fold - 1) // fold, nslot_folds = nslots * folds
    cdef long cblocks = (cin + TC_PACK_CB - 1) // TC_PACK_CB
    cdef long item, blk, q, cb, first, count, cout_blk, i, row, t
    cdef long oblk, ofirst, ocount, ocout_blk, cb_own, item_own  # owned blocks' (a thread's own)
    cdef float *mine
    cdef long pixels = x_flat.shape[2]
    cdef int not_finite = 0  # raised by the check when a weight is inf or nan
    cdef long max_taps = 1, n_dj = 1
    cdef float *bcache
    cdef int64_t *tags
    cdef int64_t *tap_slot  # per tap of the phase at hand: its bcache slot and what it holds
    cdef int64_t *tap_tag
    if spread:
        xs = &x[0, 0, 0]
    for q in range(nphases):
        panels = max(panels, info[q, 2])
        max_taps = max(max_taps, info[q, 0])
    for t in range(tap_dj.shape[0]):
        n_dj = max(n_dj, tap_dj[t] + 1)
    # the parallel block's variables are firstprivate: give them a value to copy
    bcache, tags, tap_slot, tap_tag = NULL, NULL, NULL, NULL
    i, blk, first, count, cout_blk = 0, 0, 0, 0, 0
    with parallel(num_threads=threads):
        bcache = NULL
        tags = NULL
        tap_slot = NULL
        tap_tag = NULL
        if nslot_folds > 0:
            bcache = <float *> simd_alloc(nslot_folds * fold * nr, sizeof(float))  # aligned rows
            tags = <int64_t *> malloc(nslot_folds * sizeof(int64_t))
            tap_slot = <int64_t *> malloc(max_taps * sizeof(int64_t))
            tap_tag = <int64_t *> malloc(max_taps * sizeof(int64_t))
            if bcache == NULL or tags == NULL or tap_slot == NULL or tap_tag == NULL:
                simd_free(bcache)  # no cache: pack every tap
                free(tags)
                free(tap_slot)
                free(tap_tag)
                bcache = NULL
                tags = NULL
                tap_slot = NULL
                tap_tag = NULL
            else:
                for i in range(nslot_folds):
                    tags[i] = -1
        for row in prange(batch * cin if spread else 0, schedule="static"):
            memcpy(&x[row // cin, c0 + row % cin, 0], &x_flat[row // cin, c0 + row % cin, 0],
                   pixels * sizeof(float))
        # owned: each thread its own blocks, its weights packed into its part of `packed`
        for oblk in prange(blocks if owned else 0, schedule="dynamic"):
            mine = &packed[0] + threadid() * (packed.shape[0] // threads)
            ofirst = oblk * block
            ocount = min(tiles, ofirst + block) - ofirst
            ocout_blk = cout - ofirst * mr
            for cb_own in range(cblocks):
                if tc_pack_weights(kind, &w[0, 0, 0, 0] + ofirst * mr * khkw, w.shape[1], khkw,
                                   c0, cin, ocout_blk, ocount, cb_own * TC_PACK_CB, nphases,
                                   &info[0, 0], &packed_start[0], &taps_k[0], mine):
                    tc_raise(&not_finite)
            if tc_raised(&not_finite):
                continue
            for item_own in range(batch * panels):
                _phase_item(item_own, panels, xs, plane, channels, c0, info, offsets, masks,
                            lanes, slots, tap_di, tap_dj, ring, n_dj, panel_rows, mine,
                            packed_start, cin, fold, ocout_blk, ocount,
                            &out[0, o0 + ofirst * mr, 0, 0], out.shape[1] * out_plane, out_plane,
                            bcache, tags, tap_slot, tap_tag, kind)
        # else the threads share each block: its packing, then its items
        for blk in range(0 if owned else blocks):
            first = blk * block
            count = min(tiles, first + block) - first
            cout_blk = cout - first * mr
            for cb in prange(cblocks if not tc_raised(&not_finite) else 0, schedule="dynamic"):
                if tc_pack_weights(kind, &w[0, 0, 0, 0] + first * mr * khkw, w.shape[1], khkw,
                                   c0, cin, cout_blk, count, cb * TC_PACK_CB, nphases,
                                   &info[0, 0], &packed_start[0], &taps_k[0], &packed[0]):
                    tc_raise(&not_finite)
            # the block's weights and x's planes complete, the flag final: a thread reading
            # it too early would skip the loop below, and its barrier, and the others wait
            tc_barrier()
            for item in prange(batch * panels if not tc_raised(&not_finite) else 0,
                               schedule="dynamic", chunksize=chunk):
                _phase_item(item, panels, xs, plane, channels, c0, info, offsets, masks, lanes,
                            slots, tap_di, tap_dj, ring, n_dj, panel_rows, &packed[0],
                            packed_start, cin, fold, cout_blk, count,
                            &out[0, o0 + first * mr, 0, 0], out.shape[1] * out_plane, out_plane,
                            bcache, tags, tap_slot, tap_tag, kind)
            tc_barrier()  # every item has read the block's weights: the next block's may go
        simd_free(bcache)
        free(tags)
        free(tap_slot)
        free(tap_tag)
    return not_finite


cdef inline void _phase_item(long item, long panels, const float *xs, long plane, long channels,
                             long c0, const int64_t[:, ::1] info, const int64_t[::1] offsets,
                             const uint32_t[::1] masks, const int64_t[::1] lanes,
                             const int64_t[::1] slots, const int64_t[::1] tap_di,
                             const int64_t[::1] tap_dj, long ring, long n_dj, long panel_rows,
                             const float *packed, const int64_t[::1] packed_start, long cin,
                             long fold, long cout_blk, long count, float *out, long out_image,
                             long out_plane, float *bcache, int64_t *tags, int64_t *tap_slot,
                             int64_t *tap_tag, int kind) noexcept nogil:
    # one work item of _phase_core, (image b, panel p), every phase, a block's `count` tiles
    # (their packed weights at `packed`, their first output channel at `out`)
    cdef long nr = tc_tile_nr(kind), b = item // panels, p = item % panels, q, t, taps, first_row
    for q in range(info.shape[0]):
        taps = info[q, 0]
        if p >= info[q, 2]:
            continue
        if bcache != NULL:
            for t in range(max(taps, 1)):
                if ring > 0:  # the slot of the tap's first input row
                    first_row = p * panel_rows + tap_di[info[q, 1] + t]
                    tap_slot[t] = (first_row % ring + ring) % ring * n_dj + tap_dj[info[q, 1] + t]
                    tap_tag[t] = (b << 32) + first_row + (1 << 30)
                else:  # the slot of the tap's shift, for this item
                    tap_slot[t] = slots[info[q, 1] + t]
                    tap_tag[t] = item
        tc_panel(kind, xs + (b * channels + c0) * plane, plane, taps, &offsets[info[q, 1]],
                 &masks[info[q, 3] + p * max(taps, 1)], p * nr, packed + packed_start[q], cin,
                 fold, cout_blk, 0, count, &lanes[info[q, 4] + p * nr], out + b * out_image,
                 out_plane, bcache, tags, tap_slot, tap_tag)


# ------------------------------------------------------------------ float32: one GEMM per group

def _strided_f32(x, w, out, geo, plan, fold_depth, threads):
    """The float32 layer with the array GEMM called from C: per group and chunk of images,
    ONE GEMM computes every reaching kernel element's products on the whole input (no
    gathered windows), and the scatter reads each element's valid rectangle out of them.

    Every product element is still its own element's sum over k in the array's order, so
    the bits are those of the per-element GEMMs on the valid windows (the pixels outside a
    window are computed and never read). Two orientations; the one that rearranges the
    smaller operand is used:
      transposed  P[(e, o), pixel] = W_e^T (stacked) @ x_image: the weights are rearranged
                  (element_weights), each image's (channels, pixels) block is read in place;
      normal      P[pixel, (o, r, s)] = x^T @ w viewed as (in_channels, out/groups * kh*kw):
                  the weights are read in place, the chunk's pixels are transposed."""
    from . import systolic

    groups = geo["groups"]
    batch, height, width = geo["batch"], geo["height"], geo["width"]
    (kh, kw), (sh, sw) = geo["kernel"], geo["stride"]
    cin_g, cout_g = geo["in_channels"] // groups, w.shape[1]
    taps, pixels = kh * kw, height * width
    if not plan:  # nothing reaches the output
        out[...] = 0
        return
    elements = len(plan)
    if fold_depth is None:
        kc, mode = systolic.CHAIN_KC, GEMM_CHAIN
    else:
        kc, mode = fold_depth, GEMM_FOLD
    normal = _normal_orientation(cin_g, cout_g, elements, taps, batch, pixels)
    row = cout_g * taps if normal else elements * cout_g  # products per pixel
    chunk = max(1, min(batch, PRODUCT_CHUNK_BYTES // (4 * row * pixels)))
    band = SCATTER_BAND if 4 * row * pixels * chunk <= SCATTER_CACHE_BYTES else 1
    element_taps = [r * kw + s for r, s, *_ in plan]
    cdef cnp.ndarray products, a_op, b_op
    cdef long ld, e, b
    cdef int rc = 0
    cdef int isa_code = _current_isa()
    for g in range(groups):
        if normal:
            # B: w[g*cin_g:(g+1)*cin_g] as (cin_g, cout_g * taps), columns (o, r, s)
            b_op = w[g * cin_g:(g + 1) * cin_g].reshape(cin_g, cout_g * taps)
        else:
            a_op = element_weights(w, g * cin_g, cin_g, element_taps, threads).reshape(-1, cin_g)
        for b0 in range(0, batch, chunk):
            nb = min(chunk, batch - b0)
            xs = x[b0:b0 + nb, g * cin_g:(g + 1) * cin_g]
            if normal:
                a_op = np.ascontiguousarray(xs.transpose(0, 2, 3, 1)).reshape(nb * pixels, cin_g)
                ld = _padded(cout_g * taps)
                products = np.empty((nb * pixels, ld), dtype=np.float32)
                rc = _gemm(<size_t> cnp.PyArray_DATA(a_op), <size_t> cnp.PyArray_DATA(b_op),
                           <size_t> cnp.PyArray_DATA(products), nb * pixels, cin_g,
                           cout_g * taps, cin_g, cout_g * taps, ld, kc, mode, threads, isa_code,
                           False)  # columns: each thread packs its share of the weights
            else:
                ld = _padded(nb * pixels)
                products = np.empty((elements * cout_g, ld), dtype=np.float32)
                if nb > 1 and pixels < GATHER_PIXELS:  # small images: one GEMM on gathered pixels
                    b_op = gather_window(x[b0:b0 + nb], g * cin_g, cin_g, 0, height, 0, width, threads)
                    rc = _gemm(<size_t> cnp.PyArray_DATA(a_op), <size_t> cnp.PyArray_DATA(b_op),
                               <size_t> cnp.PyArray_DATA(products), elements * cout_g, cin_g,
                               nb * pixels, cin_g, nb * pixels, ld, kc, mode, threads, isa_code,
                               True)  # rows: each thread packs its share of the weights
                    nb_loop = 0
                else:
                    b_op = xs  # each image's (cin_g, pixels) block is contiguous
                    nb_loop = nb
                if nb_loop:
                    rc = _gemm_per_image(<size_t> cnp.PyArray_DATA(a_op), <size_t> cnp.PyArray_DATA(b_op),
                                         <size_t> cnp.PyArray_DATA(products), nb_loop,
                                         xs.strides[0] // 4, pixels, elements * cout_g, cin_g, pixels,
                                         ld, kc, mode, threads, isa_code)
            if rc != 0:
                raise MemoryError("could not allocate the GEMM packing buffers")
            geometry = np.empty((elements, GEO_FIELDS), dtype=np.int64)
            base = <size_t> cnp.PyArray_DATA(products)
            for e in range(elements):
                r, s, ilo, ihi, jlo, jhi, oi, oj = plan[e]
                first_pixel = ilo * width + jlo
                if normal:  # P[(b, i, j), o * taps + r * kw + s]
                    address = base + 4 * (first_pixel * ld + element_taps[e])
                    strides = (taps, pixels * ld, width * ld, ld)
                else:       # P[e * cout_g + o, b * pixels + i * width + j]
                    address = base + 4 * (e * cout_g * ld + first_pixel)
                    strides = (ld, pixels, width, 1)
                geometry[e] = (ihi - ilo, jhi - jlo, oi, oj, address, *strides)
            _scatter[float](out[b0:b0 + nb], geometry, elements, g * cout_g, cout_g, sh, sw,
                            band, normal, threads)


cdef int _gemm(size_t a, size_t b, size_t c, long m, long k, long n, long lda, long ldb,
               long ldc, long kc, int mode, int threads, int isa_code, bint split_rows):
    """_gemm_f32_core on raw addresses (of arrays the caller keeps alive), without the GIL.
    With several threads the GEMM is cut into one block of rows (split_rows: each packs all
    of B) or of columns (each packs all of A) per thread, each computed on one thread: one
    parallel region instead of a few per K block, which on a loaded machine cost more than
    the GEMM. The bits do not depend on the cut."""
    cdef long t, lo, hi, size = m if split_rows else n
    cdef int failed = 0
    cdef const float *pa = <const float *> a
    cdef const float *pb = <const float *> b
    cdef float *pc = <float *> c
    with nogil:
        if threads == 1 or size < 64 * threads:
            failed = _gemm_f32_core(pa, pb, pc, m, k, n, lda, ldb, ldc, kc, mode, threads,
                                    isa_code) != 0
        else:
            for t in prange(threads, num_threads=threads, schedule="static"):
                lo = size * t // threads // 32 * 32  # whole micro-tiles (12 rows / 32 columns)
                hi = size if t == threads - 1 else size * (t + 1) // threads // 32 * 32
                if hi > lo and split_rows:
                    failed += _gemm_f32_core(pa + lo * lda, pb, pc + lo * ldc, hi - lo, k, n, lda,
                                             ldb, ldc, kc, mode, 1, isa_code) != 0
                elif hi > lo:
                    failed += _gemm_f32_core(pa, pb + lo, pc + lo, m, k, hi - lo, lda, ldb, ldc,
                                             kc, mode, 1, isa_code) != 0
    return -1 if failed else 0


cdef int _gemm_per_image(size_t a, size_t b, size_t c, long images, long b_step, long c_step,
                         long m, long k, long n, long ldc, long kc, int mode, int threads,
                         int isa_code):
    """One GEMM per image, C[:, i*c_step:] = A @ B[i] (B images b_step floats apart). With
    several threads and images each thread runs whole GEMMs (one parallel region instead of a
    few per GEMM); the bits do not depend on who computes them."""
    cdef long i
    cdef int failed = 0
    cdef const float *pa = <const float *> a
    cdef const float *pb = <const float *> b
    cdef float *pc = <float *> c
    if threads > 1 and images < threads:  # fewer images than threads: cut each GEMM's rows
        for i in range(images):
            if _gemm(a, b + 4 * i * b_step, c + 4 * i * c_step, m, k, n, k, n, ldc, kc, mode,
                     threads, isa_code, True) != 0:
                return -1
        return 0
    with nogil:
        for i in prange(images, num_threads=threads, schedule="dynamic"):
            failed += _gemm_f32_core(pa, pb + i * b_step, pc + i * c_step, m, k, n, k, n, ldc,
                                     kc, mode, 1, isa_code) != 0  # a reduction
    return -1 if failed else 0


# float32 path: bytes of GEMM products per chunk of images, about a core's L2, so that the
# scatter reads them from cache (measured best of 1-8 MB on the suite's layers)
PRODUCT_CHUNK_BYTES = 3 << 20

# transposed orientation: images with fewer pixels are gathered into one GEMM (a GEMM per
# image of so few columns would pack the stacked weights again for little work)
GATHER_PIXELS = 1024


def _normal_orientation(cin_g, cout_g, elements, taps, batch, pixels):
    """True: rearrange the pixels (normal orientation), else the weights (transposed)."""
    return cout_g * taps >= batch * pixels


def _padded(n):
    """A row length of n floats, padded off multiples of 1 KiB floats: rows 4 KiB apart map
    to the same L1 sets, which the GEMM's micro-tiles (12 rows) and the scatter then thrash."""
    return n + 16 if n % 1024 == 0 else n


# bytes of gathered pixels and GEMM products held at once (a few MB: they stay in cache)
CHUNK_BYTES = 8 << 20


def _chunk(x, out, g, cin_g, cout_g, plan, sharing, stacked, gemm, stride, threads):
    """One group of a chunk of images: a GEMM per shared window, then one scatter pass.

    Kernel elements with the same valid rectangle share its gathered pixels, and their
    weight slices are stacked into one GEMM: every output element is still its own
    element's sum over k in the array's order, so the bits are those of separate GEMMs."""
    batch, _, height, width = x.shape
    products = [None] * len(plan)
    for window, elements in sharing.items():
        if batch == 1 and window == (0, height, 0, width):
            at = x[0, g * cin_g:(g + 1) * cin_g].reshape(cin_g, height * width)  # a view
        else:
            at = gather_window(x, g * cin_g, cin_g, *window, threads)
        yt = gemm(stacked[window], at)
        for n, e in enumerate(elements):
            products[e] = yt[n * cout_g:(n + 1) * cout_g]
    scatter_elements(out, g * cout_g, cout_g, plan, products, stride, threads)
