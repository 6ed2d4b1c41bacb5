"""Array operand precision: rounding inputs to the array dtype and error bounds.

Operands are rounded to the array dtype (round-to-nearest-even) and held as float32 values
(int8 as int8); every PE multiply-add is one fused fp32 operation (int32 for int8).
"""
from __future__ import annotations

import numpy as np

UNIT_ROUNDOFF_FP32 = 2.0 ** -24


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), returned as float32. NaN stays NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), out)


def to_operand(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round `x` to the array dtype: float32 values for fp32/bf16/fp16, int8 for int8."""
    if dtype == "fp32":
        return np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "bf16":
        return round_bf16(np.asarray(x, dtype=np.float32))
    if dtype == "fp16":
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32))
    if dtype == "int8":
        x = np.asarray(x)
        if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
            raise ValueError("int8 operands must be integers")
        if x.size and (x.min() < -128 or x.max() > 127):
            raise ValueError("int8 operands must lie in [-128, 127]")
        return np.ascontiguousarray(x, dtype=np.int8)
    raise ValueError(f"unknown dtype {dtype!r}")


def random_operand(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    """Random test operand already representable in `dtype`."""
    if dtype == "int8":
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return to_operand(rng.standard_normal(shape, dtype=np.float32), dtype)


def gamma(n: int) -> float:
    """Higham's gamma(n) = n u / (1 - n u): the relative error bound of n fp32 roundings."""
    return n * UNIT_ROUNDOFF_FP32 / (1 - n * UNIT_ROUNDOFF_FP32)


def gemm_error_bound(a: np.ndarray, b: np.ndarray, k_chain: int) -> np.ndarray:
    """Elementwise bound on |fp32 systolic GEMM - exact product|.

    Any order of k fp32 fused multiply-adds plus the fold additions is within
    gamma(k + 1) * (|A| @ |B|), gamma(n) = n u / (1 - n u), u = 2^-24 (Higham, Thm 3.5).
    """
    return gamma(k_chain + 1) * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
