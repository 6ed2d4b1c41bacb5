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
