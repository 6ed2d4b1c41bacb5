"""sysbench report: the HTML/PNG plots, kinds that are absent skipped, and life without matplotlib."""
import base64
import json
import re
import sys

import pytest
from conftest import model_of
from typer.testing import CliRunner

from sysbench import cli, report, results, suite as suite_mod
from sysbench.runner import CaseResult
from sysbench.stats import summarize
from sysbench.workloads import registry

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def case(case_id, kind, metrics, measured=None, suite="t", array="a32"):
    out = {"id": case_id, "suite": suite, "name": case_id.split("/")[-1], "kind": kind, "params": {},
           "array": {"name": array, "rows": 32, "cols": 32, "dataflow": "ws", "dtype": "fp32"},
           "metrics": metrics, "timing": None, "validation": None}
    if measured:
        out["measured"] = measured
    return out


def document(*cases):
    return {"schema": results.SCHEMA, "suite": "t", "created": "2026-01-01T00:00:00+00:00",
            "machine": {"cpu": "Test CPU", "threads": 1}, "settings": {}, "cases": list(cases)}


def model_only_document(suite_name: str, kinds=None) -> dict:
    """A bundled suite's cases with their real model metrics (nothing timed): the names the
    workloads really emit, so the plots are tested against them and not against a guess."""
    loaded = suite_mod.load(suite_name)
    workloads = registry()
    done = [CaseResult(c, model_of(workloads[c.kind], c.params, c.array)).to_dict()
            for c in loaded.cases if kinds is None or c.kind in kinds]
    return document(*done)


def every_kind_document():
    timeline = []
    for rank in (0, 1):
        t = 0.0
        for layer in (0, 1, 2):
            timeline.append({"rank": rank, "step": 0, "type": "backward", "layer": layer,
                             "start_s": t, "end_s": t + 1e-3})
            timeline.append({"rank": rank, "step": 0, "type": "allreduce", "message": layer, "layer": layer,
                             "start_s": t + 1e-3, "end_s": t + 1.6e-3})
            t += 1e-3
    memory = [[i, 1000 * (i % 5), 5000 + 1000 * (i % 5)] for i in range(12)]   # as train_recompute writes it
    return document(
        case("net/conv1", "conv2d", {"cycles": 120000, "utilization": 0.9}, suite="net", array="a32"),
        case("net/conv1", "conv2d", {"cycles": 20000, "utilization": 0.3}, suite="net", array="a128"),
        case("net/conv2", "conv2d", {"cycles": 50000, "utilization": 0.97}, suite="net", array="a32"),
        case("net/fc", "gemm", {"cycles": 3000, "utilization": 0.01}, suite="net", array="a32"),
        case("t/sparse", "sparse_gemm", {"dense_cycles": 40000, "sparse_cycles": 21000, "cycles": 21000}),
        case("t/tconv", "tconv2d", {"macs": 1000, "macs_zero_insertion": 4000, "cycles": 900,
                                    "cycles_zero_insertion": 3100}),
        case("t/recompute", "train_recompute", {"budget_bytes": 4000},
             {"memory_series": memory, "memory_series_columns": ["event", "activation_bytes", "total_bytes"]}),
        case("t/dist", "train_distributed", {"step_s": 4e-3}, {"timeline": timeline}),
    )


PLOT_IDS = ["network-net", "sparse", "tconv", "recompute", "distributed"]


def embedded_images(html: str) -> dict[str, bytes]:
    """Plot id -> PNG bytes of every <section id='plot-...'> image in the page."""
    found = re.findall(r"<section id='plot-([^']+)'>.*?src='data:image/png;base64,([^']+)'", html, re.S)
    return {plot_id: base64.b64decode(data) for plot_id, data in found}


def test_html_report_contains_every_plot(tmp_path):
    pytest.importorskip("matplotlib")
    source = tmp_path / "r.json"
    results.save(every_kind_document(), source)
    out = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(cli.app, ["report", str(source), "--html", str(out)])
    assert result.exit_code == 0, result.stderr
    html = out.read_text()
    images = embedded_images(html)
    assert sorted(images) == sorted(PLOT_IDS)
    assert all(png.startswith(PNG_MAGIC) and len(png) > 5000 for png in images.values())
    for case_id in ("net/conv1", "t/sparse", "t/tconv", "t/recompute", "t/dist"):
        assert f"<td>{case_id}</td>" in html
    assert "Test CPU" in html and html.rstrip().endswith("</html>")


def test_png_folder_one_file_per_plot(tmp_path):
    pytest.importorskip("matplotlib")
    source = tmp_path / "r.json"
    results.save(every_kind_document(), source)
    result = CliRunner().invoke(cli.app, ["report", str(source), "--png", str(tmp_path / "png")])
    assert result.exit_code == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert written == sorted(f"{plot_id}.png" for plot_id in PLOT_IDS)
    assert all((tmp_path / "png" / name).read_bytes().startswith(PNG_MAGIC) for name in written)


def test_absent_kinds_are_skipped():
    pytest.importorskip("matplotlib")
    from sysbench import plots

    only_tconv = document(case("t/tconv", "tconv2d", {"macs": 10, "macs_zero_insertion": 40}))
    assert [p.id for p in plots.build_plots(only_tconv)] == ["tconv"]
    assert plots.build_plots(document()) == []
    html = report.html_page(document(), [], {})
    assert "No plots" in html


def test_real_suites_feed_their_plots():
    """The model metrics of the bundled resnet50 and tconv suites reach their plots."""
    pytest.importorskip("matplotlib")
    from sysbench import plots

    network = plots.network_plots(model_only_document("resnet50"))
    assert [p.id for p in network] == ["network-resnet50"]
    axes = network[0].figure.axes
    assert len(axes[0].patches) == 2 * 54   # 53 convolutions + fc, on two arrays
    if "tconv2d" in registry():
        tconv = registry()["tconv2d"].plots(model_only_document("tconv", {"tconv2d"})["cases"])
        assert [p.id for p in tconv] == ["tconv"]


def test_real_workload_results_feed_their_plots():
    """Run quick's sparse_gemm, train_recompute and simulated train_distributed cases (small,
    well under a second) and check that what those workloads really write reaches the plots."""
    pytest.importorskip("matplotlib")
    from sysbench import plots
    from sysbench.runner import run_case

    wanted = {"sparse_gemm": "sparse", "train_recompute": "recompute", "train_distributed": "distributed"}
    cases = [c for c in suite_mod.load("quick").cases
             if c.kind in wanted and (c.kind != "train_distributed" or c.params.get("mode") == "sim")]
    kinds = {c.kind for c in cases}
    if not kinds:
        pytest.skip("no sparse/recompute/simulated distributed case in quick")
    done = [run_case(c, threads=1, repeats=1) for c in cases]
    assert all(r.error is None for r in done), [r.error for r in done]
    doc = json.loads(results.dumps(results.build_document(["quick"], done, 1, {})))
    assert sorted(p.id for p in plots.build_plots(doc)) == sorted(wanted[k] for k in kinds)


def test_distributed_plot_draws_compute_and_exchange_lanes():
    pytest.importorskip("matplotlib")
    timeline = [{"rank": 1, "step": 0, "type": "forward", "start_s": 0.0, "end_s": 1.0},
                {"rank": 1, "step": 0, "type": "wait", "start_s": 1.0, "end_s": 2.0},   # idle: no bar
                {"rank": 0, "step": 0, "type": "allreduce", "start_s": 0.5, "end_s": 0.75}]
    [plot] = registry()["train_distributed"].plots([case("t/d", "train_distributed", {}, {"timeline": timeline})])
    ax = plot.figure.axes[0]
    assert len(ax.collections) == 2   # rank 1 compute, rank 0 exchange; the wait is a gap
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rank 0 compute", "rank 0 exchange",
                                                              "rank 1 compute", "rank 1 exchange"]


def test_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    source = tmp_path / "r.json"
    results.save(every_kind_document(), source)
    for module in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, module, None)   # import now raises ImportError
    result = CliRunner().invoke(cli.app, ["report", str(source), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'sysbench[plot]'" in lines[0]
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("args,fragment", [
    ([], "--html OUT.html and/or --png FOLDER"),
    (["--html", "x.html"], "not valid JSON"),
])
def test_report_usage_errors(tmp_path, args, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = CliRunner().invoke(cli.app, ["report", str(bad), *args])
    assert result.exit_code == 2 and fragment in result.stderr


def test_show_warns_about_unstable_timing(tmp_path):
    unstable = case("t/jittery", "gemm", {"cycles": 10, "utilization": 0.5})
    samples = [1e-3, 3e-3, 1e-3, 2e-3]
    unstable["timing"] = dict(summarize(samples, [0, 0, 1, 1]), repeats=2, rounds=2, samples_s=samples)
    assert unstable["timing"]["stable"] is False and unstable["timing"]["spread"] > 0.1
    steady = case("t/steady", "gemm", {"cycles": 10, "utilization": 0.5})
    steady_samples = [1e-3, 1.01e-3, 0.99e-3]
    steady["timing"] = dict(summarize(steady_samples, [0, 1, 2]), repeats=1, rounds=3, samples_s=steady_samples)
    assert steady["timing"]["stable"] is True
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document(unstable, steady)))
    result = CliRunner().invoke(cli.app, ["show", str(path)])
    assert result.exit_code == 0
    warned = [line for line in result.stderr.splitlines() if "unstable" in line]
    assert warned and "t/jittery" in " ".join(warned) and "t/steady" not in " ".join(warned)


def test_network_suite_totals_per_array():
    # two conv layers and an FC on one array: totals are sums, utilization from the sums
    layers = [case(f"net/l{i}", kind, {"cycles": cyc, "macs": macs, "utilization": 0.0})
              for i, (kind, cyc, macs) in enumerate([("conv2d", 100, 1200), ("conv2d", 300, 3600),
                                                     ("gemm", 100, 800)])]
    for layer in layers:
        layer["array"] = {"name": "a4", "rows": 4, "cols": 4, "dataflow": "ws", "dtype": "fp32",
                          "clock_ghz": 2.0}
    [line] = report.network_totals(layers)
    assert line == ("total of 3 layers on a4 (4x4 ws): 500 cycles, 5,600 MACs, "
                    "utilization 70.0%, 0.2 µs at 2 GHz")  # 5600 / (500 * 16)
    mixed = layers + [case("net/s", "sample", {"cycles": 5})]
    assert report.network_totals(mixed) == []           # not a network suite
    assert report.network_totals(layers[2:]) == []      # one layer is no network
