"""SCALE-Sim topologies and configs -> suites; agreement with SCALE-Sim 3.0.0's own cycles."""
import json
from pathlib import Path

import pytest
from clitools import assert_clean_error, sysbench

from sysbench import export, importers, suite as suite_mod
from sysbench.importers import scalesim
from sysbench.suite import SuiteError

FIXTURES = Path(__file__).parent / "fixtures" / "scalesim"
# SCALE-Sim 3.0.0's COMPUTE_REPORT.csv per config (made by fixtures/scalesim/make_fixture.py)
REPORTS = {path.stem: json.loads(path.read_text()) for path in sorted((FIXTURES / "reports").glob("*.json"))}




def cases_of(tmp_path, text, name="t.csv", config=None, **kwargs):
    path = tmp_path / name
    path.write_text(text)
    if config is None:
        kwargs.setdefault("array", "a32")  # one case per layer
    suite, notes = importers.load(path, config, **kwargs)
    return suite.cases, notes


CONV_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"


# --- agreement with SCALE-Sim itself --------------------------------------------------------

@pytest.mark.parametrize("config", sorted(REPORTS))
def test_per_layer_cycles_are_scalesims_plus_one(tmp_path, config):
    """SCALE-Sim 3.0.0's COMPUTE_REPORT.csv (tests/fixtures/scalesim/README.md) against the
    same files imported and run by sysbench: per layer, sysbench's cycles = SCALE-Sim's + 1,
    and the COMPUTE_REPORT sysbench writes has SCALE-Sim's numbers exactly."""
    topologies = sorted(REPORTS[config])
    out = tmp_path / "r.json"
    proc = sysbench("run", *(str(FIXTURES / f"{t}.csv") for t in topologies),
                    "--config", str(FIXTURES / f"{config}.cfg"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    document = json.loads(out.read_text())
    for topology in topologies:
        expected = REPORTS[config][topology]
        cases = [c for c in document["cases"] if c["id"].startswith(f"{topology}/")]
        # one row per GEMM: a depthwise layer's groups are SCALE-Sim's NAMEChannel_i layers
        per_gemm = []
        for case in cases:
            groups = case["metrics"].get("groups", 1)
            assert case["metrics"]["cycles"] % groups == 0
            names = [case["name"]] if groups == 1 else [f"{case['name']}Channel_{i}" for i in range(groups)]
            per_gemm += [(name, case["metrics"]["cycles"] // groups) for name in names]
        assert [name for name, _ in per_gemm] == [row["layer"] for row in expected]
        for (name, cycles), row in zip(per_gemm, expected):
            assert cycles == row["total_cycles"] + 1, (config, name)
        report = export.compute_report(cases).splitlines()
        assert report[0] == "LayerID, Total Cycles, Stall Cycles, Overall Util %, Mapping Efficiency %, " \
                            "Compute Util %,"
        for line, row in zip(report[1:], expected, strict=True):
            values = [v.strip() for v in line.split(",")[1:-1]]
            assert int(values[0]) == row["total_cycles"] and int(values[1]) == row["stall_cycles"] == 0
            assert [float(v) for v in values[2:]] == [row["overall_util"], row["mapping_efficiency"],
                                                      row["compute_util"]], (config, row["layer"])


def test_fixture_covers_two_arrays_three_dataflows_and_resnet50():
    assert {c.split("_")[0] for c in REPORTS} == {"a32", "a128"}
    assert {c.split("_")[1] for c in REPORTS} == {"ws", "os", "is"}
    assert all({"gemm", "small"} <= set(t) for t in REPORTS.values())
    assert any(t.startswith("resnet50") for r in REPORTS.values() for t in r)


# --- topology forms -------------------------------------------------------------------------

def test_conv_form_no_padding_and_scalesims_ceil_output(tmp_path):
    # 16x16, 3x3, stride 2: SCALE-Sim's ceil((16 - 3 + 2) / 2) = 8 rows, PyTorch's floor gives 7
    cases, notes = cases_of(tmp_path, CONV_HEADER + "s2, 16, 16, 3, 3, 4, 8, 2,\nflat, 7, 9, 3, 1, 2, 5, 1,\n")
    first, second = cases
    assert first.kind == "conv2d" and first.params["padding"] == (0, 0) and first.params["stride"] == (2, 2)
    assert (first.params["height"], first.params["width"]) == (17, 17)  # (8 - 1) * 2 + 3
    assert second.params["kernel"] == (3, 1) and second.params["height"] == 7 and second.params["width"] == 9
    assert any("widened" in n and "s2" in n for n in notes)
    assert [c.name for c in cases] == ["s2", "flat"]


def test_gemm_form_is_m_n_k_with_k_the_reduction(tmp_path):
    cases, _ = cases_of(tmp_path, "Layer, M, N, K,\nqkv, 128, 768, 64,\nL1,256,3072,768,\n")
    assert [(c.kind, c.params["m"], c.params["k"], c.params["n"]) for c in cases] == \
        [("gemm", 128, 64, 768), ("gemm", 256, 768, 3072)]


def test_depthwise_dp_rows_split_per_channel(tmp_path):
    rows = "conv_DP1, 16, 16, 3, 3, 8, 2, 1,\nconvdp, 16, 16, 3, 3, 8, 2, 1,\n"
    cases, notes = cases_of(tmp_path, CONV_HEADER + rows)
    dp, plain = cases
    assert (dp.params["groups"], dp.params["in_channels"], dp.params["out_channels"]) == (8, 8, 16)
    assert (plain.params["groups"], plain.params["out_channels"]) == (1, 2)  # 'DP' is case-sensitive
    assert any("conv_DP1Channel_0" in n for n in notes)


def test_lenient_rows_bom_tabs_blank_rows_missing_commas_extra_columns(tmp_path):
    text = ("\ufeffLayer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
            "Strides,,,Eh,Ew,e2\n,,,,,,,,,,,,\nConv1,224,224,7,7,3,64,2,,,110,110,12100\n\n"
            "CB2a_1,56,56,1,1,64,64,1,,,,,\nlast, 8, 8, 3, 3, 2, 2, 1\n")
    cases, notes = cases_of(tmp_path, text)
    assert [c.name for c in cases] == ["Conv1", "CB2a_1", "last"]
    assert any("columns ignored" in n and "Eh, Ew, e2" in n for n in notes)
    tabs = "Layer name\t IFMAP Height\t IFMAP Width\t Filter Height\t Filter Width\t Channels\t Num Filter\t" \
           " Strides\t \nConv1_1\t572\t572\t3\t3\t1\t64\t1\t\n"
    cases, _ = cases_of(tmp_path, tabs, "tabs.csv")
    assert cases[0].params["height"] == 572 and cases[0].params["out_channels"] == 64


def test_comments_and_title_rows(tmp_path):
    text = CONV_HEADER + "\nAlphaGoZero,\nConv, 19, 19, 3, 3, 17, 256, 1,\ndw, 20, 20, 3, 3, 1, 1, 1,#dw\n"
    cases, notes = cases_of(tmp_path, text)
    assert [c.name for c in cases] == ["Conv", "dw"]
    assert any("skipped as titles: 'AlphaGoZero' (line 3)" in n for n in notes)


def test_repeated_layer_names_get_a_suffix(tmp_path):
    cases, notes = cases_of(tmp_path, "Layer, M, N, K,\nfc, 1, 2, 3,\nfc, 4, 5, 6,\n")
    assert [c.name for c in cases] == ["fc", "fc_2"]
    assert any("repeats" in n for n in notes)


def test_sparsity_column_maps_to_sparse_gemm_only_with_sparsity_support(tmp_path):
    text = CONV_HEADER.replace("Strides,", "Strides, Sparsity,") + "c, 5, 5, 3, 3, 8, 6, 1, 2:4,\n"
    dense, notes = cases_of(tmp_path, text)
    assert dense[0].kind == "conv2d" and any("SparsitySupport is false" in n for n in notes)
    cfg = tmp_path / "sparse.cfg"
    cfg.write_text(V3_CFG.replace("SparsitySupport : false", "SparsitySupport : true"))
    sparse, _ = cases_of(tmp_path, text, config=cfg)
    p = sparse[0].params
    assert sparse[0].kind == "sparse_gemm" and (p["m"], p["k"], p["n"], p["nm"]) == (9, 72, 6, "2:4")
    gemm, _ = cases_of(tmp_path, "Layer Name, M, N, K, Sparsity,\nG, 3, 5, 16, 1:4,\n", "g.csv", config=cfg)
    assert gemm[0].kind == "sparse_gemm" and gemm[0].params["nm"] == "1:4"


def test_batch_applies_to_conv_rows(tmp_path):
    cases, notes = cases_of(tmp_path, CONV_HEADER + "c, 8, 8, 3, 3, 2, 2, 1,\n", batch=4)
    assert cases[0].params["batch"] == 4
    _, notes = cases_of(tmp_path, "Layer, M, N, K,\nfc, 1, 2, 3,\n", "g.csv", batch=4)
    assert any("GEMM rows give M explicitly" in n for n in notes)


# --- configs ---------------------------------------------------------------------------------

V3_CFG = (FIXTURES / "a32_ws.cfg").read_text()
V2_CFG = """[general]
run_name = scale_example_run_32x32_os

[architecture_presets]
ArrayHeight:    32
ArrayWidth:     16
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   32
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : os
MemoryBanks:   1

[run_presets]
InterfaceBandwidth: USER
"""
V1_CFG = """[general]
run_name = "GoogleTPU_os"

[architecture_presets]
ArrayHeight:    256
ArrayWidth:     256
IfmapSramSz:    8192
FilterSramSz:   8192
OfmapSramSz:    4096
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow:       is
"""


def read_cfg(tmp_path, text):
    path = tmp_path / "x.cfg"
    path.write_text(text)
    return scalesim.read_config(path)


def test_v3_cfg(tmp_path):
    name, table, notes, sparsity = read_cfg(tmp_path, V3_CFG)
    assert name == "a32_ws" and not sparsity
    assert table == {"rows": 32, "cols": 32, "dataflow": "ws", "ifmap_sram_kb": 256, "filter_sram_kb": 256,
                     "ofmap_sram_kb": 128, "word_bytes": 1, "bandwidth_mode": "ideal"}
    assert not any(" missing: " in n for n in notes)
    unmodelled = [n for n in notes if "not modelled" in n]
    assert len(unmodelled) == 1 and "ReadRequestBuffer = 32" in unmodelled[0] and "IfmapOffset = 0" in unmodelled[0]


def test_v3_user_bandwidth_takes_layout_bank_bandwidths(tmp_path):
    text = V3_CFG.replace("InterfaceBandwidth: CALC", "InterfaceBandwidth: USER") \
        .replace("IfmapSRAMBankBandwidth: 10", "IfmapSRAMBankBandwidth: 20")
    _, table, notes, _ = read_cfg(tmp_path, text)
    assert table["bandwidth_mode"] == "user"
    assert (table["dram_bw"], table["ifmap_dram_bw"], table["filter_dram_bw"]) == (10, 20, 10)


def test_v2_cfg_defaults_missing_keys_one_line_each(tmp_path):
    name, table, notes, sparsity = read_cfg(tmp_path, V2_CFG)
    assert name == "scale_example_run_32x32_os"
    assert (table["rows"], table["cols"], table["dataflow"], table["ofmap_sram_kb"]) == (32, 16, "os", 32)
    assert table["bandwidth_mode"] == "user" and table["dram_bw"] == 10 and "ifmap_dram_bw" not in table
    missing = [n for n in notes if " missing: " in n]
    assert missing == [f"{tmp_path / 'x.cfg'}: [sparsity] SparsitySupport missing: SCALE-Sim's default false"]
    assert any("MemoryBanks = 1" in n for n in notes if "not modelled" in n)


def test_v1_cfg(tmp_path):
    name, table, notes, _ = read_cfg(tmp_path, V1_CFG)
    assert name == "GoogleTPU_os"
    assert (table["rows"], table["ifmap_sram_kb"], table["ofmap_sram_kb"], table["dataflow"]) == (256, 8192, 4096, "is")
    missing = sorted(n.split("] ")[1].split(" missing")[0] for n in notes if " missing: " in n)
    assert missing == ["InterfaceBandwidth", "SparsitySupport"]
    assert table["bandwidth_mode"] == "ideal"


def test_cfg_missing_array_keys_take_scalesims_defaults(tmp_path):
    _, table, notes, _ = read_cfg(tmp_path, "[architecture_presets]\nDataflow: ws\nWeirdKey: 3\n")
    assert (table["rows"], table["cols"], table["ifmap_sram_kb"], table["filter_sram_kb"], table["ofmap_sram_kb"]) \
        == (4, 4, 256, 256, 128)
    assert sum(" missing: " in n for n in notes) == 8
    assert any("not SCALE-Sim keys" in n and "WeirdKey" in n for n in notes)


def test_array_name_from_cfg_or_option(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text(V3_CFG)
    cases, _ = cases_of(tmp_path, CONV_HEADER + "c, 8, 8, 3, 3, 2, 2, 1,\n", config=cfg, array="mine")
    assert cases[0].array.name == "mine" and cases[0].array.ifmap_sram_kb == 256
    cases, _ = cases_of(tmp_path, CONV_HEADER + "c, 8, 8, 3, 3, 2, 2, 1,\n", array=None)
    assert [c.array.name for c in cases] == ["a32", "a128"]
    cases, _ = cases_of(tmp_path, CONV_HEADER + "c, 8, 8, 3, 3, 2, 2, 1,\n", array="a128")
    assert [c.array.name for c in cases] == ["a128"]


# --- bad inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,fragment", [
    ("Name, Foo, Bar\nx, 1, 2\n", "t.csv:1: not a SCALE-Sim topology"),
    ("", "t.csv:1: no header"),
    (CONV_HEADER + "c, 8, 8, 3, 3, 2, two, 1,\n", "t.csv:2: Num Filter must be a positive integer, got 'two'"),
    (CONV_HEADER + "\nc, 8, 8, 3, 3, 2,\n", "t.csv:3: expected 8 values"),
    (CONV_HEADER + "c, 8, 8, 3, 3, 2, 2, 1, 1:1, 4,\n", "t.csv:2: unexpected value '4' in column 10"),
    (CONV_HEADER + "c, 4, 4, 5, 5, 2, 2, 1,\n", "t.csv:2: the 5x5 filter is larger than the 4x4 IFMAP"),
    (CONV_HEADER + "c, 8, 8, 3, 3, 2, 2, 1, 3:2,\n", "t.csv:2: sparsity must be N:M"),
    (CONV_HEADER + "c, 8, 8, 3, 3, 2, 2, 1, 7,\n", "t.csv:2: unexpected value '7' in column 9"),
    (CONV_HEADER + "c, 0, 8, 3, 3, 2, 2, 1,\n", "IFMAP Height must be a positive integer, got '0'"),
    (CONV_HEADER, "t.csv: no layers"),
])
def test_bad_topologies(tmp_path, text, fragment):
    with pytest.raises(SuiteError) as info:
        cases_of(tmp_path, text)
    assert len(info.value.problems) == 1 and fragment in info.value.problems[0]


@pytest.mark.parametrize("text,fragment", [
    (V3_CFG.replace("Dataflow : ws", "Dataflow : xs"), "x.cfg:14: [architecture_presets] Dataflow: must be ws, os"),
    (V3_CFG.replace("ArrayHeight:    32", "ArrayHeight: -3"),
     "x.cfg:5: [architecture_presets] ArrayHeight: must be a positive integer"),
    (V3_CFG.replace("InterfaceBandwidth: CALC", "InterfaceBandwidth: FAST"), "InterfaceBandwidth: must be USER"),
    (V3_CFG.replace("SparsitySupport : false", "SparsitySupport : maybe"), "SparsitySupport: must be true or false"),
    (V2_CFG.replace("Bandwidth : 10\n", ""), "InterfaceBandwidth = USER needs [architecture_presets] Bandwidth"),
    ("ArrayHeight: 32\n", "x.cfg:1: not a SCALE-Sim .cfg (INI): no [section] header"),
    ("[a]\nthis line has no separator\n", "x.cfg:2: not a SCALE-Sim .cfg (INI): cannot parse"),
    ("\n", "no [architecture_presets] or other section"),
])
def test_bad_configs(tmp_path, text, fragment):
    with pytest.raises(SuiteError) as info:
        read_cfg(tmp_path, text)
    assert len(info.value.problems) == 1 and fragment in info.value.problems[0], info.value.problems


def test_binary_and_unknown_files(tmp_path):
    binary = tmp_path / "t.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(SuiteError, match="not a text file"):
        importers.build_suite(binary)
    other = tmp_path / "t.txt"
    other.write_text("hello")
    with pytest.raises(SuiteError, match=r"not a SCALE-Sim topology \(.csv\) or an ONNX model"):
        importers.build_suite(other)
    with pytest.raises(SuiteError, match="--batch 0: must be a positive integer"):
        importers.build_suite(FIXTURES / "gemm.csv", batch=0)


# --- the command line -------------------------------------------------------------------------

def test_cli_import_writes_a_suite_that_runs(tmp_path):
    out = tmp_path / "small.toml"
    proc = sysbench("import", str(FIXTURES / "small.csv"), "--config", str(FIXTURES / "a128_os.cfg"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "suite written to" in proc.stderr and "depthwise" in proc.stderr
    suite = suite_mod.load(str(out))
    assert [c.name for c in suite.cases] == ["stride2_ceil", "conv_DP1", "conv_DP2", "pointwise", "convDP_5x5"]
    assert all(c.array.name == "a128_os" and c.array.dataflow == "os" and not c.numerics for c in suite.cases)
    stdout = sysbench("import", str(FIXTURES / "gemm.csv"), "--numerics", "-o", "-")
    assert stdout.returncode == 0 and stdout.stdout.startswith('name = "gemm"')
    default = sysbench("import", str(FIXTURES / "gemm.csv"), cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / "gemm.toml").is_file()
    written = tmp_path / "gemm.toml"
    assert suite_mod.load_text(written.read_text(), written, "x").cases[0].numerics is False
    numerics = suite_mod.load_text(stdout.stdout, tmp_path / "n.toml", "n")
    assert all(c.numerics for c in numerics.cases) and {c.array.name for c in numerics.cases} == {"a32", "a128"}
    (tmp_path / "n.toml").write_text(stdout.stdout)
    ran = sysbench("run", str(tmp_path / "n.toml"), "--repeats", "1", "--filter", "a32]",
                   "-o", str(tmp_path / "n.json"))
    assert ran.returncode == 0, ran.stderr
    validated = json.loads((tmp_path / "n.json").read_text())["cases"]
    assert len(validated) == 6 and all(c["validation"]["passed"] for c in validated)
    assert_clean_error(sysbench("run", "quick", "--config", str(FIXTURES / "a32_ws.cfg")),
                       "--config and --batch are for imported")


@pytest.mark.parametrize("args,fragment", [
    (["--batch", "0"], "--batch 0: must be a positive integer"),
    (["--config", "missing.cfg"], "missing.cfg: no such file"),
    (["--array", "a64"], "--array a64: not one of a32, a128"),
])
def test_cli_import_errors_write_nothing(tmp_path, args, fragment):
    out = tmp_path / "s.toml"
    proc = sysbench("import", str(FIXTURES / "small.csv"), *args, "-o", str(out), cwd=tmp_path)
    assert_clean_error(proc, fragment)
    assert not out.exists()


def test_cli_run_topology_with_config(tmp_path):
    out = tmp_path / "r.json"
    proc = sysbench("run", str(FIXTURES / "gemm.csv"), "--config", str(FIXTURES / "a32_is.cfg"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    cases = json.loads(out.read_text())["cases"]
    assert [c["name"] for c in cases] == ["square64", "ragged", "fc_batch1", "wide", "odd", "tall"]
    assert {c["array"]["dataflow"] for c in cases} == {"is"}
    bad = tmp_path / "bad.cfg"
    bad.write_text(V3_CFG.replace("Dataflow : ws", "Dataflow : xs"))
    assert_clean_error(sysbench("run", str(FIXTURES / "gemm.csv"), "--config", str(bad)),
                       f"{bad}:14: [architecture_presets] Dataflow: must be ws, os or is, got 'xs'")
