"""The memory model against SCALE-Sim v3 USER mode (its time recorded in the fixture), and
ResNet-50 on a 32x32 array end to end with the memory model."""
import dataclasses
import json
from pathlib import Path

import pytest

from sysbench import suite as suite_mod
from sysbench.hardware import Array
from sysbench.models import memory
from sysbench.workloads import registry

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures/scalesim_memory/scalesim_memory.json").read_text())


@pytest.mark.parametrize("name", ["g_ws_32x32_resnet", "g_ws_8x8_bw1", "g_os_16x16_mixed"])
def test_memory_model_vs_scalesim(benchmark, best_time, name):
    """At least 1000x faster than SCALE-Sim's recorded USER-mode time for the same layer, in
    both the default model and under scalesim_compat."""
    case = FIXTURE["cases"][name]
    m, k, n = case["dims"]
    (ikb, fkb, okb), (ibw, fbw, obw) = case["sram_kb"], case["dram_bw"]
    array = Array(rows=case["rows"], cols=case["cols"], dataflow=case["dataflow"], dtype="int8",
                  ifmap_sram_kb=ikb, filter_sram_kb=fkb, ofmap_sram_kb=okb, ifmap_dram_bw=ibw,
                  filter_dram_bw=fbw, ofmap_dram_bw=obw, bandwidth_mode="user")
    compat = dataclasses.replace(array, scalesim_compat=True)
    benchmark(memory.simulate, array, m, k, n)
    for a in (array, compat):
        ratio = case["seconds"] / best_time(lambda: memory.simulate(a, m, k, n), 5)
        print(f"{name} compat={a.scalesim_compat}: SCALE-Sim {case['seconds']} s, {ratio:.0f}x faster")
        assert ratio >= 1000


def resnet_cases():
    cases = [c for c in suite_mod.load("resnet50").cases if c.array.rows == 32]
    arrays = {}
    for c in cases:
        arrays.setdefault(c.array.name, dataclasses.replace(
            c.array, ifmap_sram_kb=256, filter_sram_kb=256, ofmap_sram_kb=128, dram_bw=16,
            bandwidth_mode="user"))
    return [(c, arrays[c.array.name]) for c in cases]


def test_resnet50_32x32_with_memory_model_under_a_second(benchmark, best_time):
    workloads = registry()
    cases = resnet_cases()
    run = lambda: [workloads[c.kind].model(c.params, a, workloads[c.kind].plan(c.params, a))
                   for c, a in cases]
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(out) >= 50 and all("stall_cycles" in m for m in out)
    seconds = best_time(run, 3)
    print(f"ResNet-50 on 32x32 with the memory model: {seconds:.3f} s for {len(out)} layers")
    assert seconds < 1.0
