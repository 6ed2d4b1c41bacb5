"""systolic.matmul_f32 (the chain-order GEMM that reads transposed operands in place) against
the cycle-stepped emulator's output-stationary (chain) order and gemm_f32, bit for bit, in
every operand/output layout, SIMD path and thread count."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from sysbench._kernels import systolic
from sysbench.models.emulator import emulate_gemm

ISAS = systolic.available_isas()

# edge shapes: 1x1x1, K = 1, sizes that end mid micro-tile (MR 12/6/4, NR 32/16/8), and ones
# that cross the packing blocks (K > 256 chain block; M past one 96-row tile, N past 32)
SHAPES = [(1, 1, 1), (13, 7, 33), (5, 1, 70), (37, 300, 19), (100, 513, 31), (257, 256, 129), (98, 40, 200)]
LAYOUTS = list(itertools.product((False, True), repeat=3))  # a transposed, b transposed, out F


def stored(x, transposed):
    """x itself, or the F-contiguous .T of a C copy of x.T (the same values)."""
    return np.ascontiguousarray(x.T).T if transposed else x


def operands(m, k, n):
    rng = np.random.default_rng([m, k, n])
    return rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)


@pytest.fixture
def restore_isa():
    previous = systolic.isa()
    yield
    systolic.set_isa(previous)


def bits(x):
    return np.ascontiguousarray(x).view(np.uint32)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_layout_isa_and_thread_count_gives_the_chain_bits(shape, restore_isa):
    m, k, n = shape
    a, b = operands(m, k, n)
    want = systolic.gemm_f32(a, b, 1, True)
    if m * k * n <= 40_000:  # the emulator is slow; the small shapes tie want to it directly
        emulated = emulate_gemm(a, b, 8, 8, "os", "serial")[0]
        assert np.array_equal(bits(emulated), bits(want))
    for isa in ISAS:
        systolic.set_isa(isa)
        for (ta, tb, out_f), threads in itertools.product(LAYOUTS, (1, 2)):
            out = np.full((n, m), np.nan, np.float32).T if out_f else None
            got = systolic.matmul_f32(stored(a, ta), stored(b, tb), out=out, threads=threads)
            assert got.shape == (m, n) and got.dtype == np.float32
            assert np.array_equal(bits(got), bits(want)), (isa, ta, tb, out_f, threads)
            if out is not None:
                assert got is out


def test_within_the_float32_error_bound_of_float64():
    a, b = operands(64, 700, 48)
    got = systolic.matmul_f32(a.T.copy().T, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.all(np.abs(got - exact) <= 700 * 2.0 ** -24 * scale)


def test_other_layouts_are_copied_and_out_is_written_in_place():
    a, b = operands(30, 20, 10)
    want = systolic.gemm_f32(a, b, 1, True)
    wide = np.zeros((30, 40), np.float32)
    wide[:, ::2] = a
    out = np.empty((30, 10), np.float32)
    assert systolic.matmul_f32(wide[:, ::2], b, out=out) is out
    assert np.array_equal(bits(out), bits(want))


def test_empty_dimensions():
    assert systolic.matmul_f32(np.ones((0, 3), np.float32), np.ones((3, 2), np.float32)).shape == (0, 2)
    out = np.full((2, 4), 7, np.float32)
    got = systolic.matmul_f32(np.ones((2, 0), np.float32), np.ones((0, 4), np.float32), out=out)
    assert got is out and np.array_equal(got, np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("call, match", [
    (lambda: systolic.matmul_f32(np.ones((2, 3)), np.ones((3, 2), np.float32)), "a must have dtype float32"),
    (lambda: systolic.matmul_f32(np.ones((2, 3), np.float32), [[1.0]]), "b must be a numpy array"),
    (lambda: systolic.matmul_f32(np.ones(3, np.float32), np.ones((3, 2), np.float32)), "a must be 2-D"),
    (lambda: systolic.matmul_f32(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32)), "shape mismatch"),
    (lambda: systolic.matmul_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), threads=0),
     "threads"),
    (lambda: systolic.matmul_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32),
                                 out=np.empty((2, 3), np.float32)), r"out must be a float32 array of shape \(2, 2\)"),
    (lambda: systolic.matmul_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32),
                                 out=np.empty((2, 2))), "out must have dtype float32"),
    (lambda: systolic.matmul_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32),
                                 out=np.empty((2, 4), np.float32)[:, ::2]), "out must be a writeable"),
])
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("shape", [(1, 1, 1), (13, 7, 33), (100, 513, 31), (257, 256, 129)],
                         ids=lambda s: "x".join(map(str, s)))
def test_sgd_steps_a_after_the_product_with_numpys_bits(shape, restore_isa):
    """fused (a and grad F-contiguous: the packer updates a) or not, on every path: the
    product of the old a, and a - float32(lr) * grad rounded as numpy's two operations."""
    m, k, n = shape
    a, b = operands(m, k, n)
    grad = np.random.default_rng([m, k, n, 9]).standard_normal((m, k), dtype=np.float32)
    want = bits(systolic.gemm_f32(a, b, 1, True))
    stepped = bits(np.subtract(a, np.multiply(grad, np.float32(0.01))))
    assert not np.array_equal(stepped, bits(a))
    for isa in ISAS:
        systolic.set_isa(isa)
        for ta, tg, threads in itertools.product((False, True), (False, True), (1, 2)):
            a_run = a.T.copy().T if ta else a.copy()
            g_run = grad.T.copy().T if tg else grad.copy()
            got = systolic.matmul_f32(a_run, b, threads=threads, sgd=(g_run, 0.01))
            assert np.array_equal(bits(got), want), (isa, ta, tg, threads)
            assert np.array_equal(bits(a_run), stepped), (isa, ta, tg, threads)


@pytest.mark.parametrize("sgd, match", [
    ((np.ones((2, 3), np.float32),), "sgd must be a"),
    ((np.ones((3, 2), np.float32), 0.1), "sgd's grad must be a float32 array of a's shape"),
    ((np.ones((2, 3)), 0.1), "sgd's grad must be a float32 array"),
    ((np.ones((2, 3), np.float32), "0.1"), "sgd's lr must be a number"),
])
def test_bad_sgd_arguments(sgd, match):
    with pytest.raises(ValueError, match=match):
        systolic.matmul_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), sgd=sgd)
    read_only = np.ones((2, 3), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="a must be a writeable"):
        systolic.matmul_f32(read_only, np.ones((3, 2), np.float32), sgd=(np.ones((2, 3), np.float32), 0.1))


@pytest.fixture
def one_panel_blocks():
    """Every N block one B panel and every output tile one micro-tile: an N past one panel
    takes the loop order with several N blocks, a narrower one the single-block order."""
    previous = systolic._set_blocking(1, 1)
    yield
    systolic._set_blocking(*previous)


@pytest.mark.parametrize("shape", [(30, 300, 4), (3, 300, 40), (25, 20, 70), (37, 9, 33)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cache_blocks_do_not_change_the_bits(shape, one_panel_blocks, restore_isa):
    """The product, the fused SGD on a and the unstored step on out, against the emulator's
    chain order and numpy's two roundings, with the smallest blocks on every path."""
    m, k, n = shape
    a, b = operands(m, k, n)
    rng = np.random.default_rng([m, k, n, 3])
    grad = rng.standard_normal((m, k), dtype=np.float32)
    param = rng.standard_normal((m, n), dtype=np.float32)
    product = emulate_gemm(a, b, 8, 8, "os", "serial")[0]
    stepped_a = bits(np.subtract(a, np.multiply(grad, np.float32(0.01))))
    stepped_out = bits(np.subtract(param, np.multiply(product, np.float32(0.3))))
    for isa in ISAS:
        systolic.set_isa(isa)
        for (ta, tb, out_f), threads in itertools.product(LAYOUTS, (1, 2)):
            out = np.full((n, m), np.nan, np.float32).T if out_f else None
            got = systolic.matmul_f32(stored(a, ta), stored(b, tb), out=out, threads=threads)
            assert np.array_equal(bits(got), bits(product)), (isa, ta, tb, out_f, threads)
        for threads in (1, 2):
            a_run, g_run = a.T.copy().T, grad.T.copy().T  # both F: the packer steps a
            got = systolic.matmul_f32(a_run, b, threads=threads, sgd=(g_run, 0.01))
            assert np.array_equal(bits(got), bits(product)) and np.array_equal(bits(a_run), stepped_a)
        for ta, threads in itertools.product((False, True), (1, 2)):
            out = param.copy()
            systolic.matmul_f32(stored(a, ta), b, out=out, threads=threads, step=0.3)
            assert np.array_equal(bits(out), stepped_out), (isa, ta, threads)


def epilogue_want(product, bias, relu, mask):
    """matmul_f32's epilogue by its definition (not by the passes it falls back to): + bias
    per row; relu keeps y > 0 and NaN, else +0; the mask keeps y + 0 where mask > 0, else
    y * 0 + 0 (+0, or NaN for an infinite or NaN y)."""
    y = product.copy()
    if bias is not None:
        y = y + bias[:, None]
    if relu:
        y = np.where((y > 0) | np.isnan(y), y, np.float32(0))
    if mask is not None:
        zero = np.float32(0)
        y = np.where(mask > 0, y + zero, y * zero + zero)
    return y


def epilogue_operands(m, k, n):
    """a, b, bias, mask with every special case: an infinite a (inf and NaN products), a
    bias that cancels a product to +0, a mask with +0, -0, NaN, inf and negatives."""
    a, b = operands(m, k, n)
    rng = np.random.default_rng([m, k, n, 11])
    if k:
        a[m // 2, 0] = np.inf
    bias = rng.standard_normal(m, dtype=np.float32)
    mask = rng.standard_normal((m, n), dtype=np.float32)
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, -1.0, 2.0], np.float32)
    mask.reshape(-1)[:specials.size] = specials[:mask.size]
    if k:
        product = systolic.gemm_f32(a, b, 1, True)
        bias[m - 1] = -product[m - 1, n - 1]  # y = +0 there
    return a, b, bias, mask


EPILOGUES = [(True, False, False), (False, True, False), (True, True, False), (False, False, True),
             (True, True, True)]  # (bias, relu, mask)


@pytest.mark.parametrize("shape", SHAPES + [(4, 0, 3)], ids=lambda s: "x".join(map(str, s)))
def test_epilogue_has_its_definitions_bits_everywhere(shape, restore_isa):
    """bias, relu and the ReLU-gradient mask, alone and together, on every path: in the
    kernel (C out and mask; both thread splits, by rows and, for M < N, by columns) and as
    numpy passes afterwards (an F out or mask), and with the fused SGD of a."""
    m, k, n = shape
    a, b, bias, mask = epilogue_operands(m, k, n)
    product = systolic.gemm_f32(a, b, 1, True) if k else np.zeros((m, n), np.float32)
    with np.errstate(invalid="ignore"):  # inf * 0 in the numpy passes
        _check_epilogue(a, b, bias, mask, product)


def _check_epilogue(a, b, bias, mask, product):
    (m, k), n = a.shape, b.shape[1]
    for isa in ISAS:
        systolic.set_isa(isa)
        for (with_bias, relu, with_mask), (ta, tb, out_f), strided, threads in itertools.product(
                EPILOGUES, LAYOUTS, (False, True), (1, 2)):
            if strided and not (with_bias or with_mask):
                continue
            # strided: an F mask and a bias with a stride (taken by the numpy passes)
            kwargs = {"bias": (np.repeat(bias, 2)[::2] if strided else bias) if with_bias else None, "relu": relu,
                      "relu_mask": stored(mask, strided) if with_mask else None}
            want = bits(epilogue_want(product, kwargs["bias"], relu, mask if with_mask else None))
            out = np.full((n, m), np.nan, np.float32).T if out_f else None
            got = systolic.matmul_f32(stored(a, ta), stored(b, tb), out=out, threads=threads, **kwargs)
            assert np.array_equal(bits(got), want), (isa, with_bias, relu, with_mask, ta, tb, out_f, strided, threads)
        grad = np.full((m, k), 0.5, np.float32)
        for threads in (1, 2):
            a_run = a.T.copy().T
            got = systolic.matmul_f32(a_run, b, threads=threads, sgd=(grad.T.copy().T, 0.01), relu_mask=mask)
            assert np.array_equal(bits(got), bits(epilogue_want(product, None, False, mask))), (isa, threads)
            assert np.array_equal(bits(a_run), bits(np.subtract(a, np.multiply(grad, np.float32(0.01)))))


@pytest.mark.parametrize("shape", [(30, 300, 4), (25, 20, 70), (37, 9, 33)], ids=lambda s: "x".join(map(str, s)))
def test_epilogue_with_one_panel_blocks(shape, one_panel_blocks, restore_isa):
    """The epilogue's offsets in every N block and output tile of both loop orders."""
    m, k, n = shape
    a, b, bias, mask = epilogue_operands(m, k, n)
    with np.errstate(invalid="ignore"):
        want = bits(epilogue_want(systolic.gemm_f32(a, b, 1, True), bias, True, mask))
    for isa in ISAS:
        systolic.set_isa(isa)
        for ta, threads in itertools.product((False, True), (1, 2)):
            got = systolic.matmul_f32(stored(a, ta), b, threads=threads, bias=bias, relu=True, relu_mask=mask)
            assert np.array_equal(bits(got), want), (isa, ta, threads)


@pytest.mark.parametrize("kwargs, match", [
    ({"bias": np.ones(3, np.float32)}, r"bias must be a float32 array of shape \(2,\)"),
    ({"bias": np.ones(2)}, "bias must be a float32 array"),
    ({"relu": 1}, "relu must be a bool"),
    ({"relu_mask": np.ones((2, 3), np.float32)}, r"relu_mask must be a float32 array of shape \(2, 2\)"),
    ({"relu_mask": [[1.0, 1.0]]}, "relu_mask must be a float32 array"),
    ({"relu": True, "step": 0.1, "out": np.ones((2, 2), np.float32)}, "step cannot be combined"),
])
def test_bad_epilogue_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        systolic.matmul_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), **kwargs)
