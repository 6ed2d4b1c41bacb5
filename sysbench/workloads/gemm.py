"""gemm: one M x K times K x N product on the systolic array."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.memory import memory_metrics
from ..models.systolic import gemm_cycles, gemm_cycles_table
from ..numerics import random_operand
from ._array import INT8_MAX_K, ArrayPlan, array_gemm, check_gemm, operand_bytes
from .base import Key, Run, Timed, Validation, Workload


@dataclass(frozen=True)
class GemmInputs:
    a: np.ndarray
    b: np.ndarray


class Gemm(Workload):
    kind = "gemm"
    description = "M x K times K x N on a ws/os/is systolic array: exact outputs, cycles, folds"
    network_layer = True
    keys = {
        "m": Key("int", minimum=1, help="rows of A and of the output"),
        "k": Key("int", minimum=1, help="reduction dimension"),
        "n": Key("int", minimum=1, help="columns of B and of the output"),
    }

    def check(self, p, array):
        if array.dtype == "int8" and p.k > INT8_MAX_K:
            return [("k", f"int8 accumulates in int32: k must be <= {INT8_MAX_K}, got {p.k}")]
        return []

    def working_set(self, p, array, numerics):
        # operands, the output and the float64 reference (exact product + error bound)
        return operand_bytes(array, p.m, p.k, p.n) if numerics else 0

    def plan(self, p, array):
        dims = (p.m, p.k, p.n)
        cycles = gemm_cycles(array, *dims)
        return ArrayPlan.of(cycles | memory_metrics(array, [dims], cycles), array)

    def model(self, p, array, plan):
        return dict(plan.metrics)

    def inputs(self, p, array, plan, rng):
        return GemmInputs(random_operand(rng, (p.m, p.k), array.dtype), random_operand(rng, (p.k, p.n), array.dtype))

    def timed(self, run: Run) -> Timed:
        a, b, array, threads = run.inputs.a, run.inputs.b, run.array, run.threads
        return Timed(lambda: array_gemm(a, b, array, threads))

    def validate(self, run: Run, output) -> Validation:
        return check_gemm([(run.inputs.a, run.inputs.b)], [output], run.array, run.plan.emulate)

    def model_table(self, p, arrays):
        return gemm_cycles_table(arrays, p["m"], p["k"], p["n"])

    def check_table(self, p, arrays):
        bad = np.flatnonzero(arrays["int8"] & (p["k"] > INT8_MAX_K))
        return [(int(i), "k", f"int8 accumulates in int32: k must be <= {INT8_MAX_K}, got {p['k'][i]}")
                for i in bad]


WORKLOAD = Gemm()
