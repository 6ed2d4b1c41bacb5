"""The memory system: kernel == slow reference, SCALE-Sim v3 fixture, hand-derived cases,
properties, the suite keys and the ideal mode leaving compute figures alone."""
from conftest import model_of
import json
import random
from pathlib import Path

import pytest

from sysbench._kernels import memory as kernel
from sysbench.hardware import Array
from sysbench.models import memory, memory_reference as ref
from sysbench.suite import SuiteError, load

FIXTURE = json.loads((Path(__file__).parent / "fixtures/scalesim_memory/scalesim_memory.json").read_text())
KEYS = ("stall_cycles", "last_cycle", "total_cycles", "ifmap_dram_words", "filter_dram_words",
        "ofmap_dram_words")


def run_kernel(df, R, C, m, k, n, sram, bw, defects=(), weight_load="serial"):
    got = kernel.simulate_gemm(df, R, C, m, k, n, sram_words=sram, bandwidth=bw,
                               defects=tuple(defects), weight_load=weight_load)
    return tuple(got[key] for key in KEYS)


def run_reference(df, R, C, m, k, n, sram, bw, defects=(), weight_load="serial"):
    r = ref.simulate(df, R, C, ref.gemm_addresses(m, k, n), sram, bw, defects=frozenset(defects),
                     weight_load=weight_load)
    return (r.stall_cycles, r.last_cycle, r.total_cycles, r.ifmap_dram_words,
            r.filter_dram_words, r.ofmap_dram_words)


def random_layer(rng):
    """A small random layer with every SRAM small enough to matter (the ofmap's, half of the
    time, near its minimum of two rows of outputs, so that it fills and drains often)."""
    R, C = rng.randint(1, 6), rng.randint(1, 6)
    ofmap = rng.randint(2 * C, 4 * C + 40) if rng.random() < 0.5 else rng.randint(2 * C, 300)
    return (rng.choice(["ws", "os", "is"]), R, C, rng.randint(1, 20), rng.randint(1, 20),
            rng.randint(1, 20), (rng.randint(2 * R * C, 300), rng.randint(2 * R * C, 300), ofmap),
            tuple(rng.randint(1, 5) for _ in range(3)))


@pytest.mark.parametrize("seed", range(6))
def test_kernel_equals_reference_on_random_layers(seed):
    rng = random.Random(seed)
    for _ in range(40):
        layer = random_layer(rng)
        wl = rng.choice(["serial", "overlapped"])
        defects = [d for d in sorted(ref.DEFECTS - {"alias"}) if rng.random() < 0.5] if seed % 2 else []
        assert run_kernel(*layer, defects, wl) == run_reference(*layer, defects, wl), (layer, wl, defects)


@pytest.mark.parametrize("layer", [
    ("ws", 1, 1, 1, 1, 1, (2, 2, 2), (1, 1, 1)),          # 1x1 array, one element
    ("os", 4, 4, 4, 4, 4, (32, 32, 8), (1, 1, 1)),        # one fold, SRAMs at their minimum
    ("is", 3, 5, 7, 11, 13, (30, 30, 10), (2, 3, 1)),     # ragged last folds both ways
    ("ws", 5, 2, 1, 17, 3, (20, 500, 4), (5, 1, 2)),      # T = 1
    ("os", 2, 7, 9, 1, 8, (28, 28, 14), (1, 4, 4)),       # K = 1
])
def test_kernel_equals_reference_on_edge_shapes(layer):
    for defects in ((), tuple(sorted(ref.DEFECTS - {"alias"}))):
        for wl in ("serial", "overlapped"):
            assert run_kernel(*layer, defects, wl) == run_reference(*layer, defects, wl)


def fixture_array(case):
    ikb, fkb, okb = case["sram_kb"]
    ibw, fbw, obw = case["dram_bw"]
    return Array(rows=case["rows"], cols=case["cols"], dataflow=case["dataflow"], dtype="int8",
                 ifmap_sram_kb=ikb, filter_sram_kb=fkb, ofmap_sram_kb=okb, ifmap_dram_bw=ibw,
                 filter_dram_bw=fbw, ofmap_dram_bw=obw, bandwidth_mode="user", scalesim_compat=True)


@pytest.mark.parametrize("name", sorted(FIXTURE["cases"]))
def test_scalesim_compat_equals_scalesim(name):
    """scalesim_compat reproduces SCALE-Sim v3.0.0 USER mode exactly (SCALE-Sim's words are
    one byte: dtype int8)."""
    case = FIXTURE["cases"][name]
    conv = None
    if case["kind"] == "gemm":
        m, k, n = case["dims"]
    else:
        h, w, kh, kw, c, f, s = case["dims"]
        m, k, n = ((h - kh) // s + 1) * ((w - kw) // s + 1), kh * kw * c, f
        conv = dict(height=h, width=w, kh=kh, kw=kw, channels=c, filters=f, stride=s)
    got = memory.simulate(fixture_array(case), m, k, n, conv=conv)
    report, detail = case["COMPUTE_REPORT"], case["DETAILED_ACCESS_REPORT"]
    assert got["stall_cycles"] == report["Stall Cycles"]
    assert got["last_cycle"] == report["Total Cycles"]
    assert got["total_cycles"] == report["Total Cycles (incl. prefetch)"]
    assert got["ifmap_dram_words"] == detail["DRAM IFMAP Reads"]
    assert got["filter_dram_words"] == detail["DRAM Filter Reads"]
    assert got["ofmap_dram_words"] == detail["DRAM OFMAP Writes"]


@pytest.mark.parametrize("name", [n for n, c in FIXTURE["cases"].items() if c["seconds"] < 3])
def test_reference_with_scalesim_defects_equals_scalesim(name):
    case = FIXTURE["cases"][name]
    addresses = ref.gemm_addresses(*case["dims"]) if case["kind"] == "gemm" else ref.conv_addresses(*case["dims"])
    r = ref.simulate(case["dataflow"], case["rows"], case["cols"], addresses,
                     tuple(1024 * kb for kb in case["sram_kb"]), tuple(case["dram_bw"]), compat=True)
    assert r.stall_cycles == case["COMPUTE_REPORT"]["Stall Cycles"]
    assert r.total_cycles == case["COMPUTE_REPORT"]["Total Cycles (incl. prefetch)"]


def test_hand_derived_two_fold_gemm_on_4x4():
    """ws 4x4, A 4x8 times B 8x4: two row folds of 2R + C + T - 2 = 8 + 4 + 4 - 2 = 14 cycles.
    Filter SRAM 32 words (bw 1): halves of 16, sets of ceil(32/100) = 1 word, the filter
    stream (8 x 4 = 32 words, each fold's tile bottom row first) in 33 sets (the empty end set).
    Fill: words 0..15 (fold 0's tile) in cycles -16..-1. Fold 0 preloads at cycles 0..3: hits.
    Fold 1's first preload row (cycle 14) reads words 16..19: outside the window [0, 16), so
    the window moves on by 16 and the batch of words 16..31 is fetched from cycle 0 (the
    prefetch half was free from the start) to cycle 0 + 16 = 16; the array waits from cycle
    14 + 1 (hit latency) to 16: 1 stall. The ifmap (32 words) and ofmap (32 outputs) SRAMs
    are unset: they hold their operands, no stall. The ifmap fill is 32 words at 1 word per
    cycle: cycles -32..-1. The outputs drain after the last cycle (27 + 1 stall = 28) at 4
    words per cycle: 8 cycles, 29..36. Total: -32..36 = 69 cycles."""
    a = Array(rows=4, cols=4, dtype="int8", filter_sram_kb=32 / 1024, ifmap_dram_bw=1,
              filter_dram_bw=1, ofmap_dram_bw=4, bandwidth_mode="user")
    got = memory.simulate(a, 4, 8, 4)
    assert (got["rows"], got["stall_cycles"], got["total_cycles"]) == (28, 1, 69)
    assert (got["ifmap_dram_words"], got["filter_dram_words"], got["ofmap_dram_words"]) == (32, 32, 32)
    # SCALE-Sim (issue #130) adds the one late cycle twice; its tile order is top row first,
    # so fold 1 starts at words 28..31: same window move, same single late cycle
    compat = memory.simulate(Array(**{**a.__dict__, "scalesim_compat": True}), 4, 8, 4)
    assert compat["stall_cycles"] == 2


def test_hand_derived_everything_fits():
    """os 4x4, 4x4 times 4x4: one fold of R + C + T - 2 = 10 cycles; all SRAMs unset, bw 2.
    Fills: 16 words / 2 = 8 cycles (-8..-1) for ifmap and filter; no stall; 16 outputs drain
    at 2 per cycle after cycle 9: cycles 10..17. Total -8..17 = 26."""
    a = Array(rows=4, cols=4, dataflow="os", dram_bw=2, bandwidth_mode="user")
    got = memory.simulate(a, 4, 4, 4)
    assert (got["rows"], got["stall_cycles"], got["total_cycles"]) == (10, 0, 26)


def test_hand_derived_ofmap_drains():
    """ws 2x2, A 4x2 times B 2x2: one fold of 2R + C + T - 2 = 4 + 2 + 4 - 2 = 8 cycles; the
    outputs (column j, row t) leave at cycle 3 + t + j: 1, 2, 2, 2, 1 of them in cycles 3..7,
    outputs 0..7 in that order. The read SRAMs are unset (they hold their operands; fills of
    one line, cycle -1: ifmap 8 words at 8, filter 4 at 4 per cycle): no read stall.
    Ofmap SRAM 4 words: chunks of D = 2 outputs, each draining in ceil(2/bw) cycles from the
    cycle after its last output is written or after the previous drain, whichever is later;
    output w waits for the space of output w - 4, free the cycle after its chunk drained.
    bw 1 (2 cycles a chunk):
      cycle 3: out 0.  cycle 4: outs 1, 2; chunk 0 (0, 1) drains 5..6.
      cycle 5: out 3; chunk 1 drains 7..8; out 4 waits for out 0's space (chunk 0): cycle 7.
        The row ends at 7: 2 stalls; the next row is at 8.
      cycle 8: out 5 (out 1's space, free at 7); chunk 2 drains 9..10; out 6 waits for out 2's
        space (chunk 1, free at 9): cycle 9, 1 stall; next row at 10.
      cycle 10: out 7 (out 3's space, free at 9); chunk 3 drains 11..12.
      3 stalls; last DRAM write at 12; total -1..12 = 14 cycles.
    bw 2 (1 cycle a chunk): chunk 0 drains at 5 (free at 6); at cycle 5 out 3 (chunk 1 drains
      at 6, free at 7) and out 4 waits for chunk 0: cycle 6, 1 stall; cycle 7: outs 5 (chunk 0
      free) and 6 (chunk 1 free at 7), chunk 2 drains at 8; cycle 8: out 7, chunk 3 drains at
      9. 1 stall; total -1..9 = 11 cycles."""
    for obw, stalls, total in ((1, 3, 14), (2, 1, 11)):
        a = Array(rows=2, cols=2, dtype="int8", ofmap_sram_kb=4 / 1024, ifmap_dram_bw=8,
                  filter_dram_bw=4, ofmap_dram_bw=obw, bandwidth_mode="user")
        got = memory.simulate(a, 4, 2, 2)
        assert (got["rows"], got["stall_cycles"], got["total_cycles"]) == (8, stalls, total), obw
        assert (got["ofmap_drains"], got["ofmap_dram_words"]) == (4, 8)


TIMES = ("stall_cycles", "last_cycle", "total_cycles")


def test_more_bandwidth_never_adds_stalls():
    """Property over random layers: more DRAM bandwidth on the ifmap, the filter or the ofmap
    interface, or on all three, never adds a stall cycle nor a total cycle."""
    rng = random.Random(11)
    for _ in range(4000):
        df, R, C, m, k, n, sram, bw = random_layer(rng)
        wl = rng.choice(["serial", "overlapped"])
        base = kernel.simulate_gemm(df, R, C, m, k, n, sram_words=sram, bandwidth=bw, weight_load=wl)
        for op in (0, 1, 2, None):
            more = tuple(b + rng.randint(1, 4) if op in (i, None) else b for i, b in enumerate(bw))
            got = kernel.simulate_gemm(df, R, C, m, k, n, sram_words=sram, bandwidth=more, weight_load=wl)
            assert all(got[t] <= base[t] for t in TIMES), (df, R, C, m, k, n, sram, bw, more, wl)


@pytest.mark.parametrize("layer, more", [
    # SCALE-Sim's write-triggered drains (defect drain_on_write, the old default rule) on
    # layers where more read bandwidth moved drain starts and added stall cycles
    (("ws", 4, 2, 7, 6, 4, (62, 29, 6), (3, 2, 1)), (4, 2, 1)),
    (("is", 1, 2, 6, 2, 7, (73, 6, 15), (2, 1, 1)), (2, 2, 1)),
    # ...and where more ofmap bandwidth added total cycles (partial lines drained late)
    (("is", 1, 1, 6, 9, 7, (135, 169, 131), (3, 5, 4)), (3, 5, 5)),
])
def test_more_bandwidth_regressions_of_write_triggered_drains(layer, more):
    df, R, C, m, k, n, sram, bw = layer
    run = lambda bandwidth, defects: kernel.simulate_gemm(df, R, C, m, k, n, sram_words=sram,
                                                          bandwidth=bandwidth, defects=defects)
    old_less, old_more = run(bw, ("drain_on_write",)), run(more, ("drain_on_write",))
    assert any(old_more[t] > old_less[t] for t in TIMES)  # the anomaly the layer was found by
    less, got = run(bw, ()), run(more, ())
    assert all(got[t] <= less[t] for t in TIMES), (less, got)
    assert run_kernel(*layer) == run_reference(*layer)


def test_bigger_sram_never_adds_dram_traffic():
    rng = random.Random(12)
    for _ in range(400):
        df, R, C, m, k, n, sram, bw = random_layer(rng)
        bigger = tuple(s + rng.randint(0, 200) for s in sram)
        for wl in ("serial", "overlapped"):
            small = run_kernel(df, R, C, m, k, n, sram, bw, (), wl)
            big = run_kernel(df, R, C, m, k, n, bigger, bw, (), wl)
            assert all(b <= s for b, s in zip(big[3:], small[3:])), (df, R, C, m, k, n, sram, bigger)


def test_ideal_mode_has_no_stalls_and_reports_needed_bandwidth():
    a = Array(rows=8, cols=8, ifmap_sram_kb=1, filter_sram_kb=1, ofmap_sram_kb=1)
    from sysbench.models.systolic import gemm_cycles
    compute = gemm_cycles(a, 64, 64, 64)
    out = memory.memory_metrics(a, [(64, 64, 64)], compute)
    assert out["stall_cycles"] == 0
    assert out["ifmap_dram_bw_needed"] == out["ifmap_dram_read_bytes"] / 4 / compute["cycles"]
    assert out["ifmap_dram_bw_needed_peak"] >= out["ifmap_dram_bw_needed"] > 0
    user = Array(**{**a.__dict__, "bandwidth_mode": "user", "dram_bw": 1000})
    assert memory.memory_metrics(user, [(64, 64, 64)], compute)["stall_cycles"] == 0


def test_no_memory_keys_adds_nothing():
    assert memory.memory_metrics(Array(), [(8, 8, 8)], {"cycles": 1}) == {}


def test_ideal_mode_changes_no_compute_figure():
    """Every quick case with memory keys set in ideal mode: each metric the compute model had
    keeps its value (results/quick.json itself is held by test_compare_baseline)."""
    import dataclasses
    from sysbench import suite as suite_mod
    from sysbench.workloads import registry
    workloads = registry()
    checked = 0
    for case in suite_mod.load("quick").cases:
        if case.kind not in ("gemm", "conv2d", "tconv2d", "sparse_gemm"):
            continue
        plain = model_of(workloads[case.kind], case.params, case.array)
        mem = dataclasses.replace(case.array, ifmap_sram_kb=64, filter_sram_kb=64, ofmap_sram_kb=64)
        with_memory = model_of(workloads[case.kind], case.params, mem)
        assert {k: with_memory[k] for k in plain} == plain, case.id
        assert with_memory["stall_cycles"] == 0 and "energy_pj" in with_memory
        checked += 1
    assert checked >= 4


def write_suite(tmp_path, arrays: str, extra: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n{extra}\n{arrays}\n[[cases]]\nname = "g"\nkind = "gemm"\n'
                    'array = "a"\nm = 8\nk = 8\nn = 8\nnumerics = false\n')
    return path


@pytest.mark.parametrize("keys, needle", [
    ('bandwidth_mode = "user"', "key 'bandwidth_mode': user mode needs the DRAM bandwidth"),
    ('ifmap_sram_kb = 1', "key 'ifmap_sram_kb': 1.0 KiB holds 256 words"),
    ('dram_bw = 0', "key 'dram_bw': must be positive"),
    ('dram_bw = 1.5', "key 'dram_bw': must be a whole number"),
    ('ofmap_dram_bw = -2', "key 'ofmap_dram_bw': must be positive"),
])
def test_bad_memory_keys_are_suite_errors(tmp_path, keys, needle):
    path = write_suite(tmp_path, f"[arrays.a]\nrows = 32\ncols = 32\n{keys}\n")
    with pytest.raises(SuiteError) as err:
        load(str(path))
    assert any(needle in p and "array 'a'" in p and str(path) in p for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("table, needle", [
    ("mac_pj = -1", "[energy] key 'mac_pj': must be >= 0 pJ"),
    ("sram_pj = 1", "[energy] key 'sram_pj': unknown key"),
    ('ert = "missing.yaml"', "[energy] key 'ert': cannot read"),
])
def test_bad_energy_table_is_a_suite_error(tmp_path, table, needle):
    path = write_suite(tmp_path, "[arrays.a]\nrows = 4\ncols = 4\n", f"[energy]\n{table}\n")
    with pytest.raises(SuiteError) as err:
        load(str(path))
    assert any(needle in p for p in err.value.problems), err.value.problems


def test_energy_table_and_accelergy_ert(tmp_path):
    (tmp_path / "ERT.yaml").write_text(
        "ERT:\n  version: '0.4'\n  tables:\n"
        "  - name: system.chip.PE[0..15].mac\n    actions:\n    - name: mac_random\n      energy: 2.5\n"
        "  - name: system.DRAM\n    actions:\n    - name: read\n      energy: 500\n"
        "    - name: write\n      energy: 600\n")
    (tmp_path / "ART.yaml").write_text(
        "ART:\n  version: '0.4'\n  tables:\n  - name: system.chip.PE[0..15].mac\n    area: 100.5\n")
    path = write_suite(tmp_path, "[arrays.a]\nrows = 4\ncols = 4\nifmap_sram_kb = 1\n",
                       '[energy]\nert = "ERT.yaml"\nart = "ART.yaml"\nert_mac = "mac"\n'
                       'ert_dram = "DRAM"\nifmap_sram_read_pj = 7\n')
    array = load(str(path)).cases[0].array
    assert array.energy.get("mac_pj") == 2.5
    assert array.energy.get("dram_write_pj") == 600
    assert array.energy.get("ifmap_sram_read_pj") == 7
    assert array.energy.get("filter_sram_read_pj") == 1.25 * 4  # default: 1.25 pJ/byte, fp32
    assert array.energy.area_um2 == 100.5
    from sysbench.models.systolic import gemm_cycles
    c = gemm_cycles(array, 8, 8, 8)
    out = memory.memory_metrics(array, [(8, 8, 8)], c)
    assert out["energy_mac_pj"] == 512 * 2.5
    assert out["energy_pj"] == pytest.approx(sum(out[f"energy_{p}_pj"] for p in
                                                 ("mac", "ifmap_sram", "filter_sram", "ofmap_sram", "dram")))
    assert out["edp_js"] == pytest.approx(out["energy_pj"] * 1e-12 * out["total_cycles"] * 1e-9)


def test_kernel_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dataflow"):
        kernel.simulate_gemm("xs", 4, 4, 1, 1, 1)
    with pytest.raises(ValueError, match="bandwidth"):
        kernel.simulate_gemm("ws", 4, 4, 1, 1, 1, bandwidth=(0, 1, 1))
    with pytest.raises(ValueError, match="unknown defect"):
        kernel.simulate_gemm("ws", 4, 4, 1, 1, 1, defects=("nope",))


def test_memory_report_rows_and_plots(tmp_path):
    from sysbench import memory_report
    from sysbench.models.systolic import gemm_cycles
    a = Array(rows=4, cols=4, dtype="int8", dram_bw=2, bandwidth_mode="user", ifmap_sram_kb=0.0625)
    c = gemm_cycles(a, 8, 8, 8)
    metrics = c | memory.memory_metrics(a, [(8, 8, 8)], c)
    cases = [{"id": "g", "name": "g", "kind": "gemm", "params": {}, "array": a.to_dict(), "metrics": metrics},
             {"id": "s", "name": "s", "kind": "sample", "params": {}, "array": {}, "metrics": {"cycles": 1}}]
    (row,) = memory_report.detailed_access_rows(cases)
    assert row[1:4] == (8 * 8 * 2, 64, 64 * 2)   # ws: ifmap read once per column fold...
    assert row[4] == metrics["ifmap_dram_read_bytes"]  # int8: one byte per word
    (bw,) = memory_report.bandwidth_rows(cases)
    assert bw[4] == metrics["ifmap_dram_bw_avg"]
    pytest.importorskip("matplotlib")
    assert [p.id for p in memory_report.plots(cases)] == ["memory-cycles", "memory-energy"]
    totals = memory_report.network_totals(cases)
    assert totals["stall_cycles"] == metrics["stall_cycles"]
