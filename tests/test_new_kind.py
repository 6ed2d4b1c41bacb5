"""A seventh technique costs one workload (and its kernel, here none): a toy kind defined in
this test module runs through `sysbench run`, validates, is saved, shown and plotted, without
any other file of the project knowing it."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

from sysbench import cli
from sysbench.workloads import register, registry, unregister
from sysbench.workloads.base import Key, Run, Timed, Validation, Workload


@dataclass(frozen=True)
class PrefixInputs:
    values: np.ndarray


class PrefixSum(Workload):
    """An inclusive prefix sum on a vector engine of `lanes` lanes: log2 steps (Hillis-Steele)."""

    kind = "toy_prefix_sum"
    description = "inclusive prefix sum, Hillis-Steele on a vector engine"
    needs_array = False
    keys = {"length": Key("int", minimum=1, help="elements"),
            "lanes": Key("int", default=16, minimum=1, help="vector lanes")}

    def check(self, p, array):
        return [] if p.lanes & (p.lanes - 1) == 0 else [("lanes", f"must be a power of two, got {p.lanes}")]

    def plan(self, p, array):
        return int(np.ceil(np.log2(p.length))) if p.length > 1 else 0  # doubling steps

    def model(self, p, array, steps):
        cycles = steps * -(-p.length // p.lanes)
        utilization = p.length * steps / (cycles * p.lanes) if cycles else 0.0
        return {"cycles": cycles, "steps": steps, "utilization": utilization}

    def inputs(self, p, array, plan, rng):
        return PrefixInputs(rng.integers(0, 100, p.length).astype(np.int64))

    def timed(self, run: Run) -> Timed:
        values, steps = run.inputs.values, run.plan

        def hillis_steele():
            out = values.copy()
            for s in range(steps):
                shift = 1 << s
                out[shift:] = out[shift:] + out[:-shift]
            return out
        return Timed(hillis_steele)

    def validate(self, run: Run, output) -> Validation:
        exact = np.cumsum(run.inputs.values)
        return Validation("numpy cumsum", float(np.max(np.abs(output - exact))), bool(np.array_equal(output, exact)),
                          "exact")

    def plots(self, cases):
        from sysbench.plots import Plot, grouped_bars, new_figure, short_label

        fig, axes = new_figure(6, 3)
        grouped_bars(axes[0][0], [short_label(c) for c in cases], {"cycles": [c["metrics"]["cycles"] for c in cases]})
        return [Plot("toy-prefix-sum", "prefix sum: cycles", "Hillis-Steele steps x vector passes.", fig)]


@pytest.fixture
def toy_kind():
    register(PrefixSum())
    yield
    unregister("toy_prefix_sum")


def test_a_new_kind_runs_end_to_end(toy_kind, write_suite, tmp_path):
    pytest.importorskip("matplotlib")
    assert "toy_prefix_sum" in registry()
    suite = write_suite("""
        name = "toy"
        [[cases]]
        name = "scan"
        kind = "toy_prefix_sum"
        length = [1, 100, 4096]
        lanes = 16
        repeats = 2
        rounds = 2
        """)
    out = tmp_path / "r.json"
    runner = CliRunner()
    result = runner.invoke(cli.app, ["run", str(suite), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    cases = {c["id"]: c for c in json.loads(out.read_text())["cases"]}
    assert set(cases) == {"toy/scan[length=1]", "toy/scan[length=100]", "toy/scan[length=4096]"}
    big = cases["toy/scan[length=4096]"]
    assert big["metrics"] == {"cycles": 12 * 256, "steps": 12, "utilization": 1.0}
    assert big["validation"]["passed"] and big["validation"]["level"] == "exact"
    assert big["timing"]["rounds"] == 2 and len(big["timing"]["samples_s"]) == 4
    shown = runner.invoke(cli.app, ["show", str(out)])
    assert shown.exit_code == 0 and "scan[length=4096]" in shown.stderr and "exact" in shown.stderr
    html = tmp_path / "r.html"
    assert runner.invoke(cli.app, ["report", str(out), "--html", str(html)]).exit_code == 0
    assert "plot-toy-prefix-sum" in html.read_text()


def test_a_new_kinds_own_checks_are_suite_errors(toy_kind, write_suite):
    suite = write_suite("""
        [[cases]]
        name = "bad"
        kind = "toy_prefix_sum"
        length = 10
        lanes = 12
        """)
    result = CliRunner().invoke(cli.app, ["run", str(suite)])
    assert result.exit_code == 2 and "case 'bad' key 'lanes': must be a power of two, got 12" in result.stderr
