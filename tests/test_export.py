"""sysbench results as SCALE-Sim's COMPUTE_REPORT.csv and as one flat CSV."""
import csv
import json
from pathlib import Path

import pytest
from clitools import sysbench

from sysbench import export

FIXTURES = Path(__file__).parent / "fixtures" / "scalesim"


def array(rows=32, cols=32, dataflow="ws", name="a32"):
    return {"name": name, "rows": rows, "cols": cols, "dataflow": dataflow, "dtype": "fp32",
            "weight_load": "serial", "clock_ghz": 1.0}


def gemm_case(m, k, n, cycles, name="g", arr=None, **metrics):
    return {"id": f"s/{name}", "name": name, "kind": "gemm", "params": {"m": m, "k": k, "n": n},
            "array": arr or array(), "metrics": {"cycles": cycles, "macs": m * k * n, **metrics},
            "timing": {"median_s": None}, "validation": {"passed": True}}


def conv_case(m, k, n, groups, cycles, name="c", **metrics):
    return {"id": f"s/{name}", "name": name, "kind": "conv2d",
            "params": {"batch": 1, "height": 16, "width": 16, "kernel": [3, 3], "groups": groups},
            "array": array(), "metrics": {"cycles": cycles, "gemm_m": m, "gemm_k": k, "gemm_n": n,
                                          "groups": groups, **metrics}}


def parse(text):
    lines = text.splitlines()
    assert all(line.endswith(",") for line in lines)  # SCALE-Sim ends every line in a comma
    cells = [[v.strip() for v in line.split(",")[:-1]] for line in lines]
    return cells[0], cells[1:]


def test_compute_report_is_scalesims_for_known_layers():
    # SCALE-Sim 3.0.0 on the 32x32 ws array (fixtures/scalesim/reports/a32_ws.json, layers
    # stride2_ceil: M 64, K 36, N 8, and conv_DP1: 8 channels of M 196, K 9, N 1)
    header, rows = parse(export.compute_report([gemm_case(64, 36, 8, 316), conv_case(196, 9, 1, 8, 8 * 290)]))
    assert header == ["LayerID", "Total Cycles", "Stall Cycles", "Overall Util %", "Mapping Efficiency %",
                      "Compute Util %"]
    assert rows[0] == ["0", "315", "0", "5.714285714285714", "14.0625", "4.761904761904762"]
    assert len(rows) == 9  # one row per group, as SCALE-Sim splits a DP layer
    assert all(r[1:] == ["289", "0", "0.5960748269896193", "0.87890625", "0.5366530373831776"] for r in rows[1:])
    assert [r[0] for r in rows] == [str(i) for i in range(9)]


def test_every_fixture_row_reproduced_from_dimensions():
    """From (M, K, N) alone, the report's floats are SCALE-Sim's to the last digit."""
    reports = json.loads((FIXTURES / "reports" / "a32_ws.json").read_text())["gemm"]
    dims = {"square64": (64, 64, 64), "ragged": (100, 300, 37), "fc_batch1": (1, 2048, 1000),
            "wide": (256, 128, 512), "odd": (33, 65, 129), "tall": (1000, 24, 16)}  # M, K, N
    cases = [gemm_case(*dims[r["layer"]], r["total_cycles"] + 1, r["layer"]) for r in reports]
    _, rows = parse(export.compute_report(cases))
    for row, expected in zip(rows, reports, strict=True):
        assert [int(row[1]), int(row[2])] == [expected["total_cycles"], 0]
        assert [float(v) for v in row[3:]] == [expected["overall_util"], expected["mapping_efficiency"],
                                               expected["compute_util"]]


@pytest.mark.parametrize("dataflow,length", [("ws", lambda r, c, t: 2 * r + 2 * c + t - 3),
                                             ("is", lambda r, c, t: 2 * r + 2 * c + t - 3),
                                             ("os", lambda r, c, t: r + c + t - 2)])
def test_fold_averages_by_hand(dataflow, length):
    # 4x4 array, M 5, K 6, N 7. ws: Sr K 6, Sc N 7, T M 5 -> folds (4|2) x (4|3)
    rows_used = {"ws": (4, 2), "os": (4, 1), "is": (4, 2)}[dataflow]
    cols_used = {"ws": (4, 3), "os": (4, 3), "is": (4, 1)}[dataflow]
    t = {"ws": 5, "os": 6, "is": 7}[dataflow]
    used = [r * c for c in cols_used for r in rows_used]
    mapping, compute = export.fold_averages(dataflow, 4, 4, 5, 6, 7)
    assert mapping == pytest.approx(sum(u / 16 for u in used) / 4)
    assert compute == pytest.approx(sum(u * t / (16 * length(4, 4, t)) for u in used) / 4)


def test_stalls_and_prefetch_columns_when_the_memory_model_gives_them():
    user = {**array(), "bandwidth_mode": "user"}
    cases = [gemm_case(64, 36, 8, 316, arr=user, stall_cycles=40, total_cycles=500),
             conv_case(196, 9, 1, 2, 580, stall_cycles=5, total_cycles=801)]
    cases[1]["array"] = user
    header, rows = parse(export.compute_report(cases))
    assert header[:4] == ["LayerID", "Total Cycles (incl. prefetch)", "Total Cycles", "Stall Cycles"]
    assert rows[0][:4] == ["0", "500", "355", "40"]  # 316 - 1 + 40; the memory model's total as it is
    assert float(rows[0][4]) == 64 * 36 * 8 * 100 / (355 * 1024)
    # a grouped case's stalls and prefetch split over its rows, the remainder on the first
    assert [r[:4] for r in rows[1:]] == [["1", "401", "292", "3"], ["2", "400", "291", "2"]]
    # ideal bandwidth: the memory model's total is not SCALE-Sim's CALC estimate, so no column
    ideal = [gemm_case(64, 36, 8, 316, stall_cycles=0, total_cycles=4000)]
    header, rows = parse(export.compute_report(ideal))
    assert header[1] == "Total Cycles" and rows[0][1:3] == ["315", "0"]


def result(cases):
    return {"schema": "sysbench.result/1", "suite": ["s"], "cases": cases}


def test_write_scalesim_one_report_per_array(tmp_path):
    cases = [gemm_case(64, 36, 8, 316, "g1"), gemm_case(8, 8, 8, 99, "g1", arr=array(8, 8, "os", "small")),
             gemm_case(64, 64, 64, 632, "g2"),
             {"id": "s/x", "name": "x", "kind": "sample", "params": {}, "array": array(), "metrics": {"cycles": 3}}]
    written = export.write_scalesim(result(cases), tmp_path / "out")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == \
        ["out/a32/COMPUTE_REPORT.csv", "out/small/COMPUTE_REPORT.csv"]
    _, rows = parse((tmp_path / "out" / "a32" / "COMPUTE_REPORT.csv").read_text())
    assert [r[:2] for r in rows] == [["0", "315"], ["1", "631"]]
    with pytest.raises(export.ExportError, match="no gemm or conv2d case"):
        export.write_scalesim(result(cases[3:]), tmp_path / "none")


def test_flat_csv_one_row_per_case_every_param_array_key_and_metric(tmp_path):
    cases = [gemm_case(2, 3, 4, 10, "g", utilization=0.5), conv_case(196, 9, 1, 8, 2320, "c")]
    path = export.write_csv(result(cases), tmp_path / "r.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["s/g", "s/c"]
    assert rows[0]["params.m"] == "2" and rows[0]["params.height"] == ""
    assert rows[1]["params.kernel"] == "[3, 3]" and rows[1]["metrics.groups"] == "8"
    assert rows[0]["array.rows"] == "32" and rows[0]["metrics.utilization"] == "0.5"
    assert rows[0]["validation.passed"] == "True"
    columns = list(rows[0])
    assert columns[:3] == ["id", "name", "kind"]
    assert {"params.m", "array.dataflow", "metrics.cycles", "metrics.gemm_m", "timing.median_s"} <= set(columns)



def test_cli_report_scalesim_and_csv(tmp_path):
    out = tmp_path / "r.json"
    proc = sysbench("run", str(FIXTURES / "small.csv"), "--config", str(FIXTURES / "a32_ws.cfg"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = sysbench("report", str(out), "--scalesim", str(tmp_path / "logs"), "--csv", str(tmp_path / "r.csv"))
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "logs" / "a32_ws" / "COMPUTE_REPORT.csv").read_text()
    expected = json.loads((FIXTURES / "reports" / "a32_ws.json").read_text())["small"]
    _, rows = parse(report)
    assert [int(r[1]) for r in rows] == [e["total_cycles"] for e in expected]
    with (tmp_path / "r.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 5
    bad = sysbench("report", str(out))
    assert bad.returncode == 2 and "--scalesim FOLDER" in bad.stderr


def test_total_cycles_is_scalesims_in_user_mode_too():
    """SCALE-Sim USER mode (the memory system's fixture, tests/fixtures/scalesim_memory):
    its Total Cycles = sysbench's cycles - 1 + its stall cycles, on every layer."""
    path = Path(__file__).parent / "fixtures" / "scalesim_memory" / "scalesim_memory.json"
    if not path.exists():
        pytest.skip("the memory system's SCALE-Sim fixture is not in this tree")
    from sysbench.hardware import Array
    from sysbench.models.systolic import gemm_cycles

    for name, case in json.loads(path.read_text())["cases"].items():
        if case["kind"] == "gemm":
            m, k, n = case["dims"]
        else:  # SCALE-Sim's conv: no padding; these layers have (H - F) % S == 0
            h, w, kh, kw, c, f, s = case["dims"]
            m, k, n = ((h - kh) // s + 1) * ((w - kw) // s + 1), kh * kw * c, f
        arr = Array(rows=case["rows"], cols=case["cols"], dataflow=case["dataflow"])
        report = case["COMPUTE_REPORT"]
        stall = int(report["Stall Cycles"])
        row = export.compute_report([gemm_case(m, k, n, gemm_cycles(arr, m, k, n)["cycles"],
                                               arr=array(case["rows"], case["cols"], case["dataflow"]),
                                               stall_cycles=stall)]).splitlines()[1]
        assert int(row.split(",")[1]) == report["Total Cycles"], name
