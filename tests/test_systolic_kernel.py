"""sysbench._kernels.systolic (fast GEMM) against the cycle-stepped emulator, bit for bit,
and the emulator's cycle counts against the analytical model."""
from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest

from sysbench._kernels import systolic
from sysbench.hardware import Array
from sysbench.models.emulator import emulate_gemm
from sysbench.models.systolic import gemm_cycles
from sysbench.numerics import gemm_error_bound, random_operand, to_operand

ISAS = systolic.available_isas()
DATAFLOWS = ("ws", "os", "is")
DTYPES = ("fp32", "bf16", "fp16", "int8")

# (M, K, N, rows, cols): 1x1x1, one exact fold, ragged last folds both ways, K < rows,
# K = 1, and sizes that end mid micro-tile (MR 12/6/4, NR 32/16/8) for every ISA
SHAPES = [
    (1, 1, 1, 4, 4),
    (8, 8, 8, 8, 8),
    (13, 19, 11, 8, 4),
    (5, 3, 7, 8, 8),
    (17, 1, 33, 4, 4),
    (3, 130, 3, 16, 16),
    (33, 65, 17, 16, 8),
    (65, 33, 130, 32, 16),
    (130, 130, 65, 32, 32),
    (64, 64, 64, 32, 32),
]


def _ids(shape):
    return "x".join(map(str, shape[:3])) + f"@{shape[3]}x{shape[4]}"


@lru_cache(maxsize=None)
def operands(m, k, n, dtype):
    rng = np.random.default_rng([m, k, n, DTYPES.index(dtype)])
    return random_operand(rng, (m, k), dtype), random_operand(rng, (k, n), dtype)


@lru_cache(maxsize=None)
def emulated(shape, dataflow, dtype, weight_load="serial"):
    m, k, n, rows, cols = shape
    a, b = operands(m, k, n, dtype)
    return emulate_gemm(a, b, rows, cols, dataflow, weight_load, int8=dtype == "int8")


def fast(a, b, rows, dataflow, dtype, threads):
    if dtype == "int8":
        return systolic.gemm_i8(a, b, threads=threads)
    return systolic.gemm_f32(a, b, rows, dataflow == "os", threads=threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_kernel_matches_emulator_bit_exact(shape, dataflow, dtype, restore_isa):
    m, k, n, rows, cols = shape
    a, b = operands(m, k, n, dtype)
    want, _ = emulated(shape, dataflow, dtype)
    assert want.shape == (m, n)
    if dtype == "int8":
        assert np.array_equal(want, a.astype(np.int64) @ b.astype(np.int64))
    for isa in ISAS:
        systolic.set_isa(isa)
        for threads in (1, 2):
            got = fast(a, b, rows, dataflow, dtype, threads)
            assert got.dtype == want.dtype and got.shape == want.shape
            bits = (lambda x: x) if dtype == "int8" else (lambda x: x.view(np.uint32))
            assert np.array_equal(bits(got), bits(want)), (isa, threads)


@pytest.mark.parametrize("weight_load", ("serial", "overlapped"))
@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_emulator_cycles_equal_model(shape, dataflow, weight_load):
    m, k, n, rows, cols = shape
    out, cycles = emulated(shape, dataflow, "fp32", weight_load)
    serial_out, _ = emulated(shape, dataflow, "fp32", "serial")
    assert np.array_equal(out.view(np.uint32), serial_out.view(np.uint32))
    array = Array(rows=rows, cols=cols, dataflow=dataflow, weight_load=weight_load)
    assert cycles == gemm_cycles(array, m, k, n)["cycles"]


def test_worked_examples():
    shape = (64, 64, 64, 32, 32)
    assert emulated(shape, "ws", "fp32")[1] == 632
    assert emulated(shape, "os", "fp32")[1] == 504
    assert gemm_cycles(Array(rows=32, cols=32, dataflow="ws"), 64, 64, 64)["cycles"] == 632
    assert gemm_cycles(Array(rows=32, cols=32, dataflow="os"), 64, 64, 64)["cycles"] == 504
    assert gemm_cycles(Array(rows=32, cols=32, dataflow="ws"), 3136, 576, 64)["cycles"] == 116280


def test_overlapped_hides_all_but_first_preload():
    shape = (13, 19, 11, 8, 4)
    serial = emulated(shape, "ws", "fp32", "serial")[1]
    overlapped = emulated(shape, "ws", "fp32", "overlapped")[1]
    folds = 3 * 3
    assert serial - overlapped == (folds - 1) * 8


def test_orders_are_distinguishable():
    """The bit-exact comparisons would catch a wrong order: fold and chain differ here."""
    a, b = operands(40, 300, 40, "fp32")
    fold = systolic.gemm_f32(a, b, 16, False)
    chain = systolic.gemm_f32(a, b, 16, True)
    fold32 = systolic.gemm_f32(a, b, 32, False)
    assert not np.array_equal(fold.view(np.uint32), chain.view(np.uint32))
    assert not np.array_equal(fold.view(np.uint32), fold32.view(np.uint32))
    # and numpy's (non-fused) product is not what the kernel computes
    assert not np.array_equal(chain.view(np.uint32), (a @ b).view(np.uint32))


@pytest.mark.parametrize("chain", (False, True), ids=("fold", "chain"))
@pytest.mark.parametrize("dtype", ("fp32", "bf16", "fp16"))
def test_large_shapes_all_isas_agree_and_within_bound(dtype, chain, restore_isa):
    m, k, n = 300, 257, 129
    a, b = operands(m, k, n, dtype)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = gemm_error_bound(a, b, k)
    results = []
    for isa in ISAS:
        systolic.set_isa(isa)
        for threads in (1, 2):
            got = systolic.gemm_f32(a, b, 128, chain, threads=threads)
            assert np.all(np.abs(got.astype(np.float64) - exact) <= bound)
            results.append(got.view(np.uint32))
    for other in results[1:]:
        assert np.array_equal(results[0], other)


def test_fold_depth_beyond_k_equals_chain():
    # one fold: psum is a chain from +0, then +0 + psum (equal unless psum is -0)
    a, b = operands(33, 65, 17, "fp32")
    fold = systolic.gemm_f32(a, b, 1000, False)
    chain = systolic.gemm_f32(a, b, 1, True)
    assert np.array_equal(fold.view(np.uint32), chain.view(np.uint32))


def test_int8_threads_and_extremes():
    a = np.full((37, 300), -128, dtype=np.int8)
    b = np.full((300, 19), -128, dtype=np.int8)
    for threads in (1, 2):
        got = systolic.gemm_i8(a, b, threads=threads)
        assert got.dtype == np.int32
        assert np.all(got == 300 * 128 * 128)
    a, b = operands(50, 70, 90, "int8")
    assert np.array_equal(systolic.gemm_i8(a, b, threads=2), a.astype(np.int64) @ b.astype(np.int64))


def test_noncontiguous_inputs_are_copied():
    a, b = operands(40, 30, 20, "fp32")
    got = systolic.gemm_f32(np.asfortranarray(a), b[:, ::1].T.copy().T, 8, False)
    want = systolic.gemm_f32(a, b, 8, False)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    a2 = np.zeros((40, 60), np.float32)
    a2[:, ::2] = a
    assert np.array_equal(systolic.gemm_f32(a2[:, ::2], b, 8, False).view(np.uint32),
                          want.view(np.uint32))


def test_fmaf_array_is_fused_and_broadcasts():
    x = np.float32(1 + 2.0 ** -12)
    c = np.float32(-(1 + 2.0 ** -11))
    assert np.float32(x * x) + c == 0  # unfused: the product rounds away 2^-24
    got = systolic.fmaf_array(np.array([x], np.float32), np.array([x], np.float32),
                              np.array([c], np.float32))
    assert got[0] == np.float32(2.0 ** -24)
    out = systolic.fmaf_array(np.ones((3, 1), np.float32), np.arange(4, dtype=np.float32),
                              np.float32(1))
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert np.array_equal(out, np.tile(np.arange(1, 5, dtype=np.float32), (3, 1)))
    with pytest.raises(ValueError, match="b must have dtype float32"):
        systolic.fmaf_array(np.ones(3, np.float32), np.ones(3), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="broadcast"):
        systolic.fmaf_array(np.ones(3, np.float32), np.ones(4, np.float32), np.float32(0))


@pytest.mark.parametrize("call, match", [
    (lambda: systolic.gemm_f32(np.ones((2, 3)), np.ones((3, 2), np.float32), 4, False),
     "a must have dtype float32"),
    (lambda: systolic.gemm_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.int8), 4, False),
     "b must have dtype float32"),
    (lambda: systolic.gemm_f32(np.ones(3, np.float32), np.ones((3, 2), np.float32), 4, False),
     "a must be 2-D"),
    (lambda: systolic.gemm_f32(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32), 4,
                               False), "shape mismatch"),
    (lambda: systolic.gemm_f32(np.ones((0, 3), np.float32), np.ones((3, 2), np.float32), 4,
                               False), "at least one row"),
    (lambda: systolic.gemm_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), 0,
                               False), "fold_depth"),
    (lambda: systolic.gemm_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), 4,
                               False, threads=0), "threads"),
    (lambda: systolic.gemm_f32(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), 4,
                               "yes"), "chain"),
    (lambda: systolic.gemm_f32([[1.0]], np.ones((1, 1), np.float32), 4, False),
     "a must be a numpy array"),
    (lambda: systolic.gemm_i8(np.ones((2, 3), np.int16), np.ones((3, 2), np.int8)),
     "a must have dtype int8"),
    (lambda: systolic.gemm_i8(np.ones((2, 3), np.int8), np.ones((2, 2), np.int8)),
     "shape mismatch"),
    (lambda: systolic.gemm_i8(np.ones((1, 131072), np.int8), np.ones((131072, 1), np.int8)),
     "exceeds 131071"),
    (lambda: systolic.set_isa("sse9"), "isa must be one of"),
])
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_isa_selection(restore_isa):
    assert "scalar" in ISAS
    assert systolic.isa() in ISAS
    for isa in ISAS:
        systolic.set_isa(isa)
        assert systolic.isa() == isa
    systolic.set_isa(None)
    assert systolic.isa() == ISAS[0]
    for isa in ("avx512", "avx2"):
        if isa not in ISAS:
            with pytest.raises(ValueError, match="not supported"):
                systolic.set_isa(isa)


def test_isa_env_var():
    env = dict(os.environ, SYSBENCH_ISA="scalar")
    code = "from sysbench._kernels import systolic; print(systolic.isa())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "scalar"


def test_operands_rounded_by_caller():
    # the kernel does not round: a bf16-representable input and its fp32 source differ
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 9), dtype=np.float32)
    one = np.eye(9, dtype=np.float32)
    assert np.array_equal(systolic.gemm_f32(x, one, 4, False), x)
    assert np.array_equal(systolic.gemm_f32(to_operand(x, "bf16"), one, 4, False),
                          to_operand(x, "bf16"))
