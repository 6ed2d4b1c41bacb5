"""GEMM on the configured systolic array: the fast kernel, the emulator and the checks
that gemm, conv2d and the other array workloads share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hardware import Array
from ..numerics import gemm_error_bound, random_operand
from .base import Key, Run, Timed, Validation, Workload

# The keys of a convolution layer (conv2d and tconv2d), PyTorch's names; NCHW.
LAYER_KEYS = {
    "batch": Key("int", default=1, minimum=1),
    "height": Key("int", minimum=1, help="input height"),
    "width": Key("int", minimum=1, help="input width"),
    "in_channels": Key("int", minimum=1),
    "out_channels": Key("int", minimum=1),
    "kernel": Key("pair", minimum=1, help="int or [kh, kw]"),
    "stride": Key("pair", default=1, minimum=1),
    "padding": Key("pair", default=0, minimum=0),
    "dilation": Key("pair", default=1, minimum=1),
    "groups": Key("int", default=1, minimum=1, help="in_channels = depthwise"),
}

# The cycle-stepped emulator is run (bit-exact check) when the work is at most this many
# PE-cycles; beyond it only the float64 error bound is checked.
EMULATOR_BUDGET = 2_000_000
INT8_MAX_K = 131071  # 127 * 128 * K must stay below 2^31


def array_gemm(a: np.ndarray, b: np.ndarray, array: Array, threads: int = 1) -> np.ndarray:
    """a (M x K) @ b (K x N) with the array's accumulation order and precision."""
    from .._kernels import systolic

    if array.dtype == "int8":
        return systolic.gemm_i8(a, b, threads)
    return systolic.gemm_f32(a, b, array.rows, array.dataflow == "os", threads)


def emulate(a: np.ndarray, b: np.ndarray, array: Array):
    """(out, cycles) from the cycle-stepped emulator."""
    from ..models.emulator import emulate_gemm

    return emulate_gemm(a, b, array.rows, array.cols, array.dataflow, array.weight_load,
                        int8=array.dtype == "int8")


def emulator_matches(a: np.ndarray, b: np.ndarray, out: np.ndarray, array: Array) -> bool:
    """True when the fast kernel's `out` has the emulator's bits."""
    emulated, _ = emulate(a, b, array)
    return emulated.dtype == out.dtype and np.array_equal(emulated, out) and \
        emulated.tobytes() == out.tobytes()


def operand_bytes(array: Array, m: int, k: int, n: int) -> int:
    """Peak bytes of validating one M x K by K x N product: the operands and output, their
    float64 copies, the exact product and its error bound (|A| |B|)."""
    return (array.operand_bytes + 8) * (m * k + k * n) + (4 + 3 * 8) * m * n


def emulator_affordable(cycles: int, array: Array) -> bool:
    return cycles * array.rows * array.cols <= EMULATOR_BUDGET


def against_exact(output: np.ndarray, exact: np.ndarray, int8: bool, bound) -> tuple[float, bool]:
    """(max |output - exact|, passed): int8 outputs must equal the exact result; float
    outputs must lie within `bound()` (computed only then) elementwise."""
    err = np.abs(output.astype(np.float64) - exact)
    worst = float(err.max()) if err.size else 0.0
    if int8:
        return worst, bool(np.array_equal(output.astype(np.int64), exact.astype(np.int64)))
    return worst, bool(np.all(err <= bound()))


def check_gemm(pairs, outputs, array: Array, emulate_too: bool) -> Validation:
    """Validate array GEMM outputs: bit-exact against the emulator where `emulate_too`,
    and always within the float64 error bound (exact for int8).

    pairs: [(a, b)] operand pairs; outputs: the fast kernel's result for each pair.
    """
    worst, ok, details = 0.0, True, []
    for (a, b), out in zip(pairs, outputs):
        exact = a.astype(np.float64) @ b.astype(np.float64)
        err, passed = against_exact(out, exact, array.dtype == "int8",
                                    lambda: gemm_error_bound(a, b, a.shape[1]))
        worst, ok = max(worst, err), ok and passed
        if emulate_too and not emulator_matches(a, b, out, array):
            ok = False
            details.append("differs from the emulator")
    reference = "emulator (bit-exact) + float64 bound" if emulate_too else "float64 (error bound)"
    level = "bit-exact" if emulate_too else "in bound"
    if array.dtype == "int8":
        reference = "emulator (bit-exact) + exact int" if emulate_too else "exact int64"
        level = "bit-exact" if emulate_too else "exact"
    return Validation(reference, worst, ok, level, detail="; ".join(details))


@dataclass(frozen=True)
class ArrayPlan:
    """A layer's model figures on the array, and whether the emulator can check its bits."""

    metrics: dict
    emulate: bool

    @classmethod
    def of(cls, metrics: dict, array: Array) -> "ArrayPlan":
        return cls(metrics, emulator_affordable(metrics["cycles"], array))


@dataclass(frozen=True)
class LayerInputs:
    x: np.ndarray  # NCHW input
    w: np.ndarray  # the layer's weights


class ArrayLayer(Workload):
    """What conv2d and tconv2d share: the model is the plan's figures, the inputs are one
    NCHW input and the weights, the timed call is the layer on the array."""

    def weight_shape(self, p) -> tuple:
        raise NotImplementedError

    def layer(self, x, w, p, array, threads):
        raise NotImplementedError

    def model(self, p, array, plan):
        return dict(plan.metrics)

    def inputs(self, p, array, plan, rng):
        x = random_operand(rng, (p.batch, p.in_channels, p.height, p.width), array.dtype)
        return LayerInputs(x, random_operand(rng, self.weight_shape(p), array.dtype))

    def timed(self, run: Run) -> Timed:
        x, w, p, array, threads = run.inputs.x, run.inputs.w, run.params, run.array, run.threads
        return Timed(lambda: self.layer(x, w, p, array, threads))


def check_layer(output, exact, bound, array: Array, what: str, emulated_bits=None) -> Validation:
    """A layer's output against its float64 reference (`bound()` elementwise, or equal for
    int8) and, when given, bit for bit against the emulator's (`emulated_bits()` -> bool)."""
    int8 = array.dtype == "int8"
    worst, ok = against_exact(output, exact, int8, bound)
    reference = f"{what} (exact int)" if int8 else f"{what} float64 (error bound)"
    level = "exact" if int8 else "in bound"
    if emulated_bits is not None:
        ok = ok and emulated_bits()
        reference += " + emulator (bit-exact)"
        level = "bit-exact"
    return Validation(reference, worst, ok, level)
