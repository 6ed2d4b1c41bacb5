"""gemm: one M x K times K x N product on the systolic array."""
from __future__ import annotations


from ..models.memory import memory_metrics
from ..models.systolic import gemm_cycles
from ..numerics import random_operand
from ._array import INT8_MAX_K, array_gemm, check_gemm, emulator_affordable
from .base import Key, Validation, Workload


class Gemm(Workload):
    kind = "gemm"
    description = "M x K times K x N on a ws/os/is systolic array: exact outputs, cycles, folds"
    keys = {
        "m": Key("int", minimum=1, help="rows of A and of the output"),
        "k": Key("int", minimum=1, help="reduction dimension"),
        "n": Key("int", minimum=1, help="columns of B and of the output"),
    }

    def check(self, params, array):
        if array.dtype == "int8" and params["k"] > INT8_MAX_K:
            return [("k", f"int8 accumulates in int32: k must be <= {INT8_MAX_K}, got {params['k']}")]
        return []

    def model(self, params, array):
        dims = (params["m"], params["k"], params["n"])
        return (c := gemm_cycles(array, *dims)) | memory_metrics(array, [dims], c)

    def prepare(self, params, array, rng):
        a = random_operand(rng, (params["m"], params["k"]), array.dtype)
        b = random_operand(rng, (params["k"], params["n"]), array.dtype)
        cycles = self.model(params, array)["cycles"]
        return {"a": a, "b": b, "array": array, "emulate": emulator_affordable(cycles, array)}

    def run(self, state, threads):
        return array_gemm(state["a"], state["b"], state["array"], threads)

    def validate(self, state, output) -> Validation:
        return check_gemm([(state["a"], state["b"])], [output], state["array"], state["emulate"])


WORKLOAD = Gemm()
