"""tconv2d numerics: the strided kernel, the zero-insertion baseline and the float64 direct
reference agree on a grid of layers; the kernel's gather/scatter gives the bits of a numpy
scatter in the same order; torch's conv_transpose2d agrees when torch is installed."""
import itertools
import os
import platform

import numpy as np
import pytest

from sysbench._kernels import tconv
from sysbench.hardware import Array
from sysbench.numerics import random_operand
from sysbench.workloads import tconv2d as T
from sysbench.workloads._array import array_gemm, emulate

ARRAYS = {
    "ws8-fp32": Array(rows=8, cols=8, dataflow="ws", dtype="fp32"),  # K > 8 crosses folds
    "os4-bf16": Array(rows=4, cols=4, dataflow="os", dtype="bf16"),
    "is8-int8": Array(rows=8, cols=8, dataflow="is", dtype="int8"),
}


def grid():
    """(batch, cin, cout, h, w, kernel, stride, padding, output_padding, dilation, groups):
    strides 1-4 (rectangular too), paddings up to past the kernel, output_padding, dilation,
    groups, odd sizes, stride > kernel."""
    layers = []
    for s in (1, 2, 3, 4):
        for k, p, op in itertools.product((1, 2, 3, 4), (0, 1, 2), (0, s - 1)):
            layers.append((2, 3, 5, 5, 4, k, s, p, op, 1, 1))
    layers += [
        (1, 4, 6, 5, 7, (3, 2), (2, 3), (1, 0), (1, 2), (1, 1), 2),
        (2, 6, 4, 3, 5, (2, 3), (4, 1), (2, 1), (3, 0), (2, 1), 3),
        (1, 8, 8, 6, 5, 3, 1, 2, 0, 2, 4),                  # stride 1, dilation 2, groups 4
        (3, 4, 4, 4, 4, 3, 2, 1, 1, (2, 3), 4),             # depthwise-like, dilated
        (1, 3, 2, 7, 2, (5, 1), (3, 2), (4, 0), (0, 1), (1, 1), 1),
        (2, 2, 3, 2, 2, 3, 4, 2, 0, 1, 1),                  # kernel row 1 reaches nothing
        (1, 2, 2, 1, 1, 1, 3, 1, 2, 1, 1),                  # no input pixel reaches the output
        (1, 40, 3, 3, 3, 2, 2, 0, 0, 1, 1),                 # K = 40: five folds of 8
        (1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1),                  # 1x1 everything
        (2, 5, 7, 9, 1, (1, 4), (1, 3), (0, 2), (0, 2), (1, 1), 1),
        (1, 6, 6, 3, 4, 3, 2, 0, 1, 3, 3),                  # output_padding < dilation only
    ]
    return layers


def make(layer, dtype, seed=0):
    batch, cin, cout, h, w, k, s, p, op, d, g = layer
    k = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    x = random_operand(rng, (batch, cin, h, w), dtype)
    wt = random_operand(rng, (cin, cout // g, *k), dtype)
    return x, wt, T.layer_params(x.shape, wt.shape, s, p, op, d, g)


def valid_grid():
    out = []
    for layer in grid():
        try:
            make(layer, "fp32")
        except ValueError:  # op >= both stride and dilation, or empty output: tested below
            continue
        out.append(layer)
    return out


def test_grid_is_wide():
    layers = valid_grid()
    assert len(layers) >= 60
    assert {lay[6] for lay in layers if isinstance(lay[6], int)} == {1, 2, 3, 4}


@pytest.mark.parametrize("name", ARRAYS)
def test_strided_zero_insertion_direct_agree(name):
    array = ARRAYS[name]
    for layer in valid_grid():
        x, w, p = make(layer, array.dtype)
        strided = T.tconv2d_strided(x, w, p, array)
        zero = T.tconv2d_zero_insertion(x, w, p, array)
        exact = T.tconv2d_direct(x, w, p)
        assert strided.shape == zero.shape == exact.shape == (x.shape[0], p["out_channels"],
                                                              *T.output_shape(p)), layer
        if array.dtype == "int8":
            assert strided.dtype == zero.dtype == np.int32
            assert np.array_equal(strided, exact.astype(np.int64)), layer
            assert np.array_equal(zero, exact.astype(np.int64)), layer
        else:
            assert strided.dtype == zero.dtype == np.float32
            assert np.all(np.abs(strided - exact) <= T.error_bound(x, w, p)), layer
            assert np.all(np.abs(zero - exact) <= T.error_bound(x, w, p, zero_insertion=True)), layer


def test_outputs_are_not_trivially_zero():
    # guard against a grid that tests nothing: most layers produce nonzero outputs
    nonzero = sum(bool(np.any(T.tconv2d_direct(*make(lay, "fp32")))) for lay in valid_grid())
    assert nonzero >= len(valid_grid()) - 1


def test_direct_reference_by_nested_loops():
    """The vectorised float64 reference against the definition written as plain loops."""
    for layer in [valid_grid()[i] for i in (5, 40, -3, -6, -8)]:
        x, w, p = make(layer, "fp32", seed=3)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = p["kernel"], p["stride"], p["padding"], p["dilation"]
        ho, wo = T.output_shape(p)
        g, cin_g, cout_g = p["groups"], p["in_channels"] // p["groups"], w.shape[1]
        out = np.zeros((x.shape[0], cout_g * g, ho, wo))
        for b, c, i, j, o, r, s in itertools.product(range(x.shape[0]), range(x.shape[1]),
                                                     range(x.shape[2]), range(x.shape[3]),
                                                     range(cout_g), range(kh), range(kw)):
            oi, oj = i * sh - ph + r * dh, j * sw - pw + s * dw
            if 0 <= oi < ho and 0 <= oj < wo:
                out[b, (c // cin_g) * cout_g + o, oi, oj] += float(x[b, c, i, j]) * float(w[c, o, r, s])
        assert np.allclose(T.tconv2d_direct(x, w, p), out, rtol=1e-12, atol=1e-12), layer


@pytest.mark.parametrize("name", ARRAYS)
def test_kernel_bits_equal_numpy_scatter(name):
    """Same per-element GEMMs, gathered and scattered by numpy in plan order: same bits."""
    array = ARRAYS[name]
    for layer in valid_grid()[::3]:
        x, w, p = make(layer, array.dtype, seed=1)
        fast = T.tconv2d_strided(x, w, p, array, threads=2)
        slow = T.strided_by_numpy(x, w, p, lambda a, b: array_gemm(a, b, array))
        assert fast.dtype == slow.dtype and fast.tobytes() == slow.tobytes(), layer


@pytest.mark.parametrize("name", ARRAYS)
def test_kernel_bits_equal_emulated_array(name):
    """Per-element GEMMs from the cycle-stepped emulator: the kernel has the array's bits."""
    array = ARRAYS[name]
    for layer in [(1, 12, 5, 3, 4, 3, 2, 1, 1, 1, 1), (2, 4, 4, 3, 3, (2, 3), (3, 2), 0, 0, 1, 2)]:
        x, w, p = make(layer, array.dtype, seed=2)
        fast = T.tconv2d_strided(x, w, p, array)
        emulated = T.strided_by_numpy(x, w, p, lambda a, b: emulate(a, b, array)[0])
        assert fast.tobytes() == emulated.tobytes(), layer


def test_threads_do_not_change_bits():
    array = ARRAYS["ws8-fp32"]
    x, w, p = make((3, 16, 12, 9, 7, 3, 2, 1, 1, 1, 2), "fp32")
    one = T.tconv2d_strided(x, w, p, array, threads=1)
    assert one.tobytes() == T.tconv2d_strided(x, w, p, array, threads=2).tobytes()


def test_default_gemm_is_fmaf_chain():
    x, w, p = make((2, 9, 4, 5, 6, 3, 2, 1, 1, 1, 1), "fp32")
    os_array = Array(rows=4, cols=4, dataflow="os")
    fast = tconv.tconv2d_strided(x, w, (2, 2), 1, 1, 1, 1)
    assert fast.tobytes() == T.tconv2d_strided(x, w, p, os_array).tobytes()


def test_kernel_elements_reaching_nothing_are_skipped():
    # H=2, k=3, s=4, p=2: output rows 0..2; input i, kernel row r land on 4i - 2 + r:
    # r=0 -> {-2, 2}, r=1 -> {-1, 3}, r=2 -> {0, 4}: row 1 of the kernel reaches no output.
    geo = tconv.check_args((1, 1, 2, 2), (1, 1, 3, 3), 4, 2, 0, 1, 1)
    assert geo["output"] == (3, 3)
    plan = tconv.element_plan(geo)
    assert sorted({r for r, *_ in plan}) == [0, 2]
    assert (0, 0, 1, 2, 1, 2, 2, 2) in plan and (2, 2, 0, 1, 0, 1, 0, 0) in plan
    # nothing at all reaches: H=1, k=1, s=3, p=1, op=2 -> one output pixel, input lands on -1
    x = np.ones((1, 2, 1, 1), np.float32)
    w = np.ones((2, 2, 1, 1), np.float32)
    out = tconv.tconv2d_strided(x, w, 3, 1, 2)
    assert out.shape == (1, 2, 1, 1) and not out.any()


@pytest.mark.usefixtures("restore_isa")
def test_gather_weights_and_scatter_against_slicing():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 6, 7), dtype=np.float32)
    at = tconv.gather_window(x, 1, 3, 2, 5, 1, 7, threads=2)
    assert np.array_equal(at, x[:, 1:4, 2:5, 1:7].transpose(1, 0, 2, 3).reshape(3, -1))
    at = tconv.gather_window(x, 0, 5, 1, 4, 0, 7)  # whole rows: the contiguous fast path
    assert np.array_equal(at, x[:, :, 1:4].transpose(1, 0, 2, 3).reshape(5, -1))
    w = rng.standard_normal((40, 19, 3, 2), dtype=np.float32)
    wt = tconv.element_weights(w, 4, 33, threads=2)  # ragged 16 x 16 blocks
    assert np.array_equal(wt, w[4:37].transpose(2, 3, 1, 0).reshape(6, 19, 33))
    wt = tconv.element_weights(w, 0, 40, taps=[5, 0, 3])
    assert np.array_equal(wt, w.transpose(2, 3, 1, 0).reshape(6, 19, 40)[[5, 0, 3]])
    # kernels of 16 taps (a transpose block each), of 25 (blocks across output channels) and
    # of 1, ragged channel blocks from an offset channel, a permuted subset of taps with one
    # named twice, on every SIMD path
    from sysbench._kernels import systolic

    for shape, c0, channels, taps in [((48, 20, 4, 4), 0, 48, None),
                                      ((37, 5, 5, 5), 3, 30, [24, 0, 17, 16, 15, 3, 0]),
                                      ((20, 9, 1, 1), 0, 20, None)]:
        w = rng.standard_normal(shape, dtype=np.float32)
        every = w[c0:c0 + channels].reshape(channels, shape[1], -1).transpose(2, 1, 0)
        expected = every if taps is None else every[taps]
        for isa in systolic.available_isas():
            systolic.set_isa(isa)
            for threads in (1, 2):
                got = tconv.element_weights(w, c0, channels, taps, threads=threads)
                assert np.array_equal(got, expected), (shape, isa, threads)
    # two kernel elements of stride (3, 4) adding into overlapping output positions
    out = np.full((2, 4, 9, 20), np.nan, dtype=np.float32)  # every written value is overwritten
    plan = [(0, 0, 0, 3, 0, 5, 2, 1), (0, 1, 0, 2, 0, 4, 2, 5)]
    ys = [rng.standard_normal((2, 2 * 3 * 5), dtype=np.float32),
          rng.standard_normal((2, 2 * 2 * 4), dtype=np.float32)]
    tconv.scatter_elements(out, 1, 2, plan, ys, (3, 4), threads=2)
    expected = np.zeros((2, 2, 9, 20), dtype=np.float32)
    expected[:, :, 2:9:3, 1:18:4] += ys[0].reshape(2, 2, 3, 5).transpose(1, 0, 2, 3)
    expected[:, :, 2:6:3, 5:18:4] += ys[1].reshape(2, 2, 2, 4).transpose(1, 0, 2, 3)
    assert out[:, 1:3].tobytes() == expected.tobytes()
    assert np.isnan(out[:, [0, 3]]).all()  # other channels untouched


def test_torch_conv_transpose2d_agrees():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for layer in valid_grid():
        batch, cin, cout, h, wd, k, s, p_, op, d, g = layer
        x, w, p = make(layer, "fp32", seed=4)
        expected = F.conv_transpose2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                                      stride=s, padding=p_, output_padding=op, dilation=d, groups=g).numpy()
        exact = T.tconv2d_direct(x, w, p)
        assert expected.shape == exact.shape, layer
        assert np.allclose(exact, expected, rtol=1e-12, atol=1e-12), layer
        fp32 = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=s, padding=p_,
                                  output_padding=op, dilation=d, groups=g).numpy()
        strided = T.tconv2d_strided(x, w, p, ARRAYS["ws8-fp32"])
        # both are fp32 sums of the same products: each within the bound of the exact value
        bound = T.error_bound(x, w, p, zero_insertion=True)
        assert np.all(np.abs(strided - fp32) <= 2 * bound), layer


BAD = [
    # (x shape, w shape, kwargs, fragment of the message)
    ((1, 4, 5, 5), (4, 2, 3, 3), {"groups": 3}, "not divisible by groups"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"stride": 2, "output_padding": 2}, "output_padding"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"stride": 2, "dilation": 2, "output_padding": (0, 2)}, "output_padding"),
    ((1, 4, 0, 5), (4, 2, 3, 3), {}, "positive sizes"),
    ((1, 4, 5, 5), (4, 0, 3, 3), {}, "positive sizes"),
    ((4, 5, 5), (4, 2, 3, 3), {}, "x must be 4-D"),
    ((1, 4, 5, 5), (4, 2, 3), {}, "w must be 4-D"),
    ((1, 4, 5, 5), (3, 2, 3, 3), {}, "w.shape[0]"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"stride": 0}, "stride"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"padding": -1}, "padding"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"dilation": (1, 0)}, "dilation"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"groups": 0}, "groups"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"stride": 1.5}, "stride"),
    ((1, 4, 1, 1), (4, 2, 1, 1), {"padding": 1}, "too large"),
]


@pytest.mark.parametrize("xs, ws, kwargs, fragment", BAD)
def test_bad_input_is_value_error(xs, ws, kwargs, fragment):
    x, w = np.zeros(xs, np.float32), np.zeros(ws, np.float32)
    with pytest.raises(ValueError) as info:
        tconv.tconv2d_strided(x, w, **kwargs)
    assert fragment in str(info.value)
    p = {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1, "groups": 1, **kwargs}
    with pytest.raises(ValueError) as info:
        T.tconv2d_zero_insertion(x, w, p, ARRAYS["ws8-fp32"])
    assert fragment in str(info.value)


def test_bad_operands_are_value_errors():
    x, w = np.zeros((1, 2, 3, 3), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="same dtype"):
        tconv.tconv2d_strided(x, w.astype(np.int8))
    with pytest.raises(ValueError, match="float32 or int8"):
        tconv.tconv2d_strided(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="numpy array"):
        tconv.tconv2d_strided(x.tolist(), w)
    with pytest.raises(ValueError, match="threads"):
        tconv.tconv2d_strided(x, w, threads=0)
    with pytest.raises(ValueError, match="out of range"):
        tconv.gather_window(x, 1, 2, 0, 3, 0, 3)
    with pytest.raises(ValueError, match="does not fit"):  # rows 2 and 4 of a 4-row output
        tconv.scatter_elements(np.zeros((1, 2, 4, 4), np.float32), 0, 2, [(0, 0, 0, 2, 0, 2, 2, 0)],
                               [np.zeros((2, 4), np.float32)], 2)
    with pytest.raises(ValueError, match="shape"):
        tconv.scatter_elements(np.zeros((1, 2, 4, 4), np.float32), 0, 2, [(0, 0, 0, 2, 0, 2, 0, 0)],
                               [np.zeros((2, 5), np.float32)], 2)


def test_image_chunks_do_not_change_bits(monkeypatch):
    array = ARRAYS["ws8-fp32"]
    for layer in [(5, 6, 4, 7, 6, 4, 2, 1, 0, 1, 2), (3, 4, 3, 5, 5, 3, 3, 1, 2, 1, 1)]:
        x, w, p = make(layer, "fp32")
        whole = T.tconv2d_strided(x, w, p, array)
        calls = []

        def counting_gemm(a, b):
            calls.append(b.shape[1])
            return array_gemm(a, b, array)

        monkeypatch.setattr(tconv, "CHUNK_BYTES", 1)  # one image per chunk
        assert T.tconv2d_strided(x, w, p, array, gemm=counting_gemm).tobytes() == whole.tobytes()
        windows = {plan[2:6] for plan in tconv.element_plan(T.geometry(p))}
        assert len(calls) == x.shape[0] * len(windows) * p["groups"]
        monkeypatch.undo()


def test_scatter_bands_do_not_change_bits(monkeypatch):
    """Output planes summed in bands of rows (1 row, ragged bands, whole plane; one row also
    when the products are too big for the cache): same bits, also when a band ends between
    two rows that an element of stride 3 reaches."""
    array = ARRAYS["ws8-fp32"]
    for layer in [(2, 6, 4, 7, 6, 4, 2, 1, 0, 1, 2), (1, 4, 3, 5, 5, 5, 3, 1, 2, 1, 1),
                  (2, 3, 2, 6, 4, (3, 2), (1, 2), (1, 0), 0, (2, 1), 1)]:
        x, w, p = make(layer, "fp32")
        slow = T.strided_by_numpy(x, w, p, lambda a, b: array_gemm(a, b, array))
        wo = T.output_shape(p)[1]
        for band, cache in [(1, 1 << 30), (wo, 1 << 30), (2 * wo, 1 << 30), (5 * wo - 1, 1 << 30),
                            (1 << 20, 1 << 30), (1 << 20, 0)]:
            monkeypatch.setattr(tconv, "SCATTER_BAND", band)
            monkeypatch.setattr(tconv, "SCATTER_CACHE_BYTES", cache)
            fast = T.tconv2d_strided(x, w, p, array)
            assert fast.tobytes() == slow.tobytes(), (layer, band, cache)
        monkeypatch.undo()


@pytest.mark.parametrize("normal", [True, False])
@pytest.mark.usefixtures("restore_isa")
def test_float32_path_in_both_orientations_and_chunkings_has_the_per_element_bits(monkeypatch, normal):
    """The float32 path (one GEMM per group and chunk on the whole input, the array GEMM
    called from C) against per-element GEMMs on the valid windows, scattered by numpy:
    either orientation, one image or several per chunk, gathered or per-image GEMMs, a GEMM
    cut between threads, rows padded off 4 KiB multiples (a 32 x 32 image: 1024 pixels)."""
    from sysbench._kernels import systolic

    layers = [(3, 5, 4, 6, 5, 4, 2, 1, 0, 1, 1), (2, 6, 4, 3, 5, (2, 3), (4, 1), (2, 1), (3, 0), (2, 1), 3),
              (2, 9, 3, 32, 32, 3, 2, 1, 1, 1, 1), (3, 40, 3, 3, 3, 2, 2, 0, 0, 1, 1),
              (2, 8, 24, 4, 4, 4, 2, 1, 0, 1, 1)]  # 384 GEMM rows / columns: cut over 2 threads
    monkeypatch.setattr(tconv, "_normal_orientation", lambda *args: normal)
    for name in ("ws8-fp32", "os4-bf16"):
        array = ARRAYS[name]
        for layer in layers:
            x, w, p = make(layer, array.dtype, seed=5)
            slow = T.strided_by_numpy(x, w, p, lambda a, b: array_gemm(a, b, array))
            for chunk_bytes, gather_pixels in ((3 << 20, 1024), (1, 1024), (3 << 20, 0), (1, 1 << 30)):
                monkeypatch.setattr(tconv, "PRODUCT_CHUNK_BYTES", chunk_bytes)
                monkeypatch.setattr(tconv, "GATHER_PIXELS", gather_pixels)
                fast = T.tconv2d_strided(x, w, p, array, threads=2)
                assert fast.tobytes() == slow.tobytes(), (name, layer, chunk_bytes, gather_pixels)
    # every SIMD path of the array GEMM gives the same bits here too
    x, w, p = make(layers[0], "fp32", seed=6)
    expected = T.tconv2d_strided(x, w, p, ARRAYS["ws8-fp32"])
    for isa in systolic.available_isas():
        systolic.set_isa(isa)
        assert T.tconv2d_strided(x, w, p, ARRAYS["ws8-fp32"]).tobytes() == expected.tobytes(), isa


def _phases_allowed(geo, plan, w):
    """The output-phase path wherever its geometry allows it (not only where it pays)."""
    return bool(plan) and -(-geo["output"][1] // geo["stride"][1]) <= geo["width"]


# the grid, plus layers that fill the micro-tiles: 8/12/24 output channels (8- and 12-row
# AVX-512 tiles), images wider than a panel, several folds of 8 channels, groups, dilation
PHASE_LAYERS = valid_grid() + [
    (3, 20, 24, 7, 9, 4, 2, 1, 0, 1, 1), (2, 16, 8, 12, 40, 3, 1, 1, 0, 1, 1),
    (2, 9, 12, 5, 33, 5, 3, 1, 2, 1, 1), (2, 24, 48, 6, 6, 3, 2, 1, 1, (2, 1), 2),
    (1, 12, 16, 4, 5, (2, 3), (2, 1), (1, 0), 0, (1, 2), 1)]
# 36 output channels: three 12-row AVX-512 tiles (12 rows are chosen only where 8 do not divide)
PHASE_LAYERS += [(2, 10, 36, 6, 7, 4, 2, 1, 0, 1, 1)]
# images 8 and 16 wide (8- and 12-row tiles): a tap reading the row above the image or below
# it leaves the first or last 8 or 16 of a panel's 32 lanes dead (AVX-512's part kernels)
PHASE_LAYERS += [(2, 16, 16, 8, 8, 4, 2, 1, 0, 1, 1), (2, 12, 16, 16, 16, 4, 2, 1, 0, 1, 1),
                 (1, 10, 36, 8, 8, 4, 2, 1, 0, 1, 1), (1, 10, 36, 16, 16, 4, 2, 1, 0, 1, 1)]
# stride 1, panels of one input row: a panel's packed rows serve the next panels, of the
# same image only (one row per image: every image's panel has the same first rows)
PHASE_LAYERS += [(2, 8, 16, 5, 32, 3, 1, 1, 0, 1, 1), (3, 8, 8, 1, 32, 3, 1, 1, 0, 1, 1)]
# fewer input channels than a fold (8 on ws8), images 8 wide: the first and last panels of an
# image have 8 dead lanes (part kernels), the middle ones none (every tap of a tile in one
# call, tc_panel_taps), and they share the packed rows the panels before them left
PHASE_LAYERS += [(2, 5, 16, 12, 8, 4, 2, 1, 0, 1, 1), (2, 6, 16, 12, 8, 3, 1, 1, 0, 1, 1)]
# stride 1, one fold, panels of one row of 32 or two of 16 (kept in the row cache): the 32
# lanes land on consecutive outputs, and full tiles (8 or 12 rows) are written straight to
# the output, the last of 20 channels (4 rows) through the tile buffer
PHASE_LAYERS += [(2, 7, 20, 3, 32, 3, 1, 1, 0, 1, 1), (1, 5, 36, 4, 16, 3, 1, 1, 0, 1, 1)]
# strides 3 to 6, rows of 8 or 16 input pixels: a phase's 8 lanes of one output row land 3, 4
# or 5 apart (two 4-lane expanding stores), or 6 (lane by lane)
PHASE_LAYERS += [(2, 6, 16, 6, 16, 5, 3, 1, 0, 1, 1), (1, 4, 16, 4, 8, 4, 4, 0, 0, 1, 1),
                 (1, 3, 8, 3, 8, 5, 5, 0, 0, 1, 1), (1, 3, 8, 3, 8, 6, 6, 0, 0, 1, 1)]


@pytest.fixture(params=[False, True], ids=["per-tap", "fused-taps"])
def fused_taps(request):
    """Both ways the phase path may sum a tile's taps (tconv._fused_taps: the CPU picks one)."""
    before = tconv._fused_taps(request.param)
    yield request.param
    tconv._fused_taps(before)


def test_fused_taps_default_is_on_for_amd_family_19h_only():
    """The CPU's default (tconv_micro.h reads CPUID) against what Linux reports of the CPU."""
    if platform.machine() not in ("x86_64", "AMD64") or not os.path.exists("/proc/cpuinfo"):
        pytest.skip("x86 Linux only")
    fields = dict(line.split(":", 1) for line in open("/proc/cpuinfo").read().split("\n\n")[0]
                  .splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    expected = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    before = tconv._fused_taps(-1)
    try:
        assert tconv._fused_taps(-1) == expected
    finally:
        tconv._fused_taps(before)


@pytest.mark.usefixtures("restore_isa", "fused_taps")
@pytest.mark.parametrize("name", ["ws8-fp32", "os4-bf16"])
def test_phase_path_has_the_per_element_bits(monkeypatch, name):
    """The output-phase path (every phase's elements summed in registers, the input read in
    place through masks) against per-element GEMMs scattered by numpy, byte for byte, on
    every SIMD path and with two threads, a tile's taps summed tap by tap or in one call; it
    ran on most of the layers (not where a phase is wider than the input)."""
    from sysbench._kernels import systolic

    array = ARRAYS[name]
    runs = []
    phases = tconv._phases_f32
    monkeypatch.setattr(tconv, "_phases_pay", _phases_allowed)
    monkeypatch.setattr(tconv, "_phases_f32", lambda *args: runs.append(1) or phases(*args))
    for isa in systolic.available_isas():
        systolic.set_isa(isa)
        runs.clear()
        for layer in PHASE_LAYERS:
            x, w, p = make(layer, array.dtype, seed=7)
            slow = T.strided_by_numpy(x, w, p, lambda a, b: array_gemm(a, b, array))
            fast = T.tconv2d_strided(x, w, p, array, threads=2)
            assert fast.tobytes() == slow.tobytes(), (isa, layer)
        assert len(runs) >= 0.7 * len(PHASE_LAYERS), isa


@pytest.mark.usefixtures("restore_isa", "fused_taps")
@pytest.mark.parametrize("weight_bytes", [1, 12000])
def test_phase_path_blocks_owned_by_threads_have_the_per_element_bits(monkeypatch, weight_bytes):
    """Where there are as many blocks of output channel tiles as threads or more, each thread
    packs its own blocks' weights and runs every item on them (_phase_blocks' `owned`):
    blocks of one tile, or of a few (12 kB), on 2 and 3 threads, every SIMD path, the same
    bits as per-element GEMMs; a non-finite weight in the last block still declines."""
    from sysbench._kernels import systolic

    array = ARRAYS["ws8-fp32"]
    owned, blocks = [], tconv._phase_blocks

    def recorded_blocks(*args):
        block, is_owned = blocks(*args)
        owned.append(is_owned)
        return block, is_owned

    monkeypatch.setattr(tconv, "PHASE_WEIGHT_BYTES", weight_bytes)
    monkeypatch.setattr(tconv, "_phases_pay", _phases_allowed)
    monkeypatch.setattr(tconv, "_phase_blocks", recorded_blocks)
    layers = [layer for layer in PHASE_LAYERS if layer[2] // layer[-1] >= 16]
    for isa in systolic.available_isas():
        systolic.set_isa(isa)
        ran = 0
        for layer in layers:
            x, w, p = make(layer, array.dtype, seed=5)
            slow = T.strided_by_numpy(x, w, p, lambda a, b: array_gemm(a, b, array))
            for threads in (2, 3):
                owned.clear()
                fast = T.tconv2d_strided(x, w, p, array, threads=threads)
                assert fast.tobytes() == slow.tobytes(), (isa, layer, threads)
                if threads == 2:  # two tiles or more: owned blocks wherever the path ran
                    assert all(owned) or weight_bytes > 1, (isa, layer)
                    ran += any(owned)
        assert ran >= (0.7 * len(layers) if weight_bytes == 1 else 1), isa
    x, w, p = make((8, 16, 24, 8, 8, 4, 2, 1, 0, 1, 1), "fp32", seed=8)
    w[15, 23, 0, 0] = np.nan
    geo = T.geometry(p)
    out = np.empty((8, 24, *T.output_shape(p)), dtype=np.float32)
    assert not tconv._phases_f32(x, w, out, geo, tconv.element_plan(geo), None, 2)
    slow = T.strided_by_numpy(x, w, p, lambda a, b: array_gemm(a, b, array))
    assert T.tconv2d_strided(x, w, p, array, threads=2).tobytes() == slow.tobytes()


@pytest.mark.parametrize("fold_depth", [None, 8])
def test_phase_path_takes_read_only_operands_in_place(fold_depth):
    """On AVX-512, folds of at most TC_PACK_ROWS channels read x where it is (no copy into
    spread planes; other paths copy): a read-only x and w, and x a view of a larger buffer,
    give the same bits."""
    layer = (8, 16, 24, 8, 8, 4, 2, 1, 0, 1, 1)
    x, w, p = make(layer, "fp32", seed=12)
    geo = T.geometry(p)
    assert tconv._phases_pay(geo, tconv.element_plan(geo), w)
    expected = tconv.tconv2d_strided(x.copy(), w.copy(), 2, 1, fold_depth=fold_depth)
    x.setflags(write=False)
    w.setflags(write=False)
    got = tconv.tconv2d_strided(x, w, 2, 1, fold_depth=fold_depth, threads=2)
    assert got.tobytes() == expected.tobytes()
    wide = np.zeros((8, 20, 8, 8), dtype=np.float32)
    wide[:, 2:18] = x
    got = tconv.tconv2d_strided(wide[:, 2:18], w, 2, 1, fold_depth=fold_depth)
    assert got.tobytes() == expected.tobytes()


DEEP_FOLD_LAYERS = [(2, 300, 8, 5, 7, 4, 2, 1, 0, 1, 1), (2, 260, 16, 6, 6, 3, 1, 1, 0, 1, 1)]


@pytest.mark.usefixtures("restore_isa")
@pytest.mark.parametrize("layer", DEEP_FOLD_LAYERS)
def test_phase_path_reads_folds_deeper_than_its_pack_buffer_in_place(monkeypatch, layer):
    """A chain-order fold of more than TC_PACK_ROWS (256) input channels is read in place
    through the lane masks instead of packed: same bits as per-element GEMMs, every SIMD path."""
    from sysbench._kernels import systolic

    array = ARRAYS["os4-bf16"]
    x, w, p = make(layer, array.dtype, seed=3)
    geo = T.geometry(p)
    assert _phases_allowed(geo, tconv.element_plan(geo), w)
    monkeypatch.setattr(tconv, "_phases_pay", _phases_allowed)
    slow = T.strided_by_numpy(x, w, p, lambda a, b: array_gemm(a, b, array))
    for isa in systolic.available_isas():
        systolic.set_isa(isa)
        assert T.tconv2d_strided(x, w, p, array, threads=2).tobytes() == slow.tobytes(), isa


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("threads", [1, 2])
def test_phase_path_pays_on_full_tiles_from_two_images_and_declines_non_finite_weights(
        special, threads):
    """It is chosen for a layer that fills its tiles at batch 8, not at batch 1, not for 3
    output channels; with a non-finite weight anywhere it declines (a masked lane multiplies
    its weight by 0, which would put a nan where that element does not reach) and the
    strided path gives the output (bits checked)."""
    array = ARRAYS["ws8-fp32"]
    layer = (8, 16, 24, 8, 8, 4, 2, 1, 0, 1, 1)
    x, w, p = make(layer, "fp32", seed=8)
    geo, pays = T.geometry(p), tconv._phases_pay
    plan = tconv.element_plan(geo)
    assert pays({**geo, "batch": 8}, plan, w) and not pays({**geo, "batch": 1}, plan, w)
    assert not pays(geo, plan, w[:, :3])
    out = np.empty((8, 24, *T.output_shape(p)), dtype=np.float32)
    assert tconv._phases_f32(x, w, out, geo, plan, None, threads)
    for c, o in [(2, 3), (15, 23), (9, 16)]:  # the last input and output channel, two others
        bad = w.copy()
        bad[c, o, 0, 0] = special  # element (0, 0) misses the first output row and column
        assert not tconv._phases_f32(x, bad, out, geo, plan, None, threads)
        slow = T.strided_by_numpy(x, bad, p, lambda a, b: array_gemm(a, b, array))
        fast = T.tconv2d_strided(x, bad, p, array, threads)
        assert np.isfinite(slow[:, o, 0, :]).all() and fast.tobytes() == slow.tobytes()


@pytest.mark.parametrize("weight_bytes", [1 << 20, 1])
@pytest.mark.parametrize("threads", [1, 2])
def test_phase_path_checks_every_weight_of_every_group(monkeypatch, threads, weight_bytes):
    """The weight packing checks the weights finite, per group, 8 input channels a task: a
    non-finite weight in any task of either group declines the layer, also when it lies in
    a later block of output channel tiles than the first (weight_bytes 1: a tile a block,
    found after the first blocks' outputs are written; the threads must agree on the flag
    or wait for each other forever), and the strided path then gives its output (bits
    checked)."""
    monkeypatch.setattr(tconv, "PHASE_WEIGHT_BYTES", weight_bytes)
    layer = (8, 320, 64, 8, 8, 4, 2, 1, 0, 1, 2)  # 160 x 32 x 16 weights per group
    x, w, p = make(layer, "fp32", seed=3)
    geo = T.geometry(p)
    plan = tconv.element_plan(geo)
    out = np.empty((8, 64, *T.output_shape(p)), dtype=np.float32)
    assert tconv._phases_pay(geo, plan, w) and tconv._phases_f32(x, w, out, geo, plan, None, threads)
    array = ARRAYS["ws8-fp32"]
    for c, o in [(319, 31), (160, 0), (0, 0), (100, 17)]:
        bad = w.copy()
        bad[c, o, 3, 3] = np.nan
        assert not tconv._phases_f32(x, bad, out, geo, plan, None, threads), (c, o)
        slow = T.strided_by_numpy(x, bad, p, lambda a, b: array_gemm(a, b, array))
        assert T.tconv2d_strided(x, bad, p, array, threads).tobytes() == slow.tobytes(), (c, o)
