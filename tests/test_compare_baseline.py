"""The bundled baseline (results/quick.json) still describes the current models and quick suite."""
import copy
import json
from pathlib import Path

import pytest
from conftest import model_of

from sysbench import compare, results, suite as suite_mod
from sysbench.runner import CaseResult
from sysbench.workloads import registry

BASELINE = Path(__file__).resolve().parent.parent / "results" / "quick.json"
REFRESH = "an intended change? refresh it: see results/README.md"


@pytest.fixture(scope="module")
def baseline():
    if not BASELINE.exists():
        pytest.fail(f"{BASELINE} is missing; {REFRESH}")
    return results.load(BASELINE)


def test_baseline_is_a_complete_quick_run(baseline):
    assert baseline["suite"] == "quick"
    for case in baseline["cases"]:
        if case["timing"] is not None:   # numerics cases: validated, with raw samples
            assert case["validation"]["passed"], case["id"]
            timing = case["timing"]
            assert len(timing["samples_s"]) == timing["repeats"] * timing["rounds"], case["id"]
            assert timing["rounds"] >= 3 and len(timing["sample_rounds"]) == len(timing["samples_s"]), case["id"]
    assert compare.compare_documents(baseline, baseline).exit_code == 0


def test_current_models_match_the_baseline(baseline):
    """Recompute every quick case's model figures (cheap: nothing is run) and compare them with
    the baseline's, exactly as `sysbench compare` would."""
    workloads = registry()
    current = copy.deepcopy(baseline)
    current["cases"] = [CaseResult(c, model_of(workloads[c.kind], c.params, c.array)).to_dict()
                        for c in suite_mod.load("quick").cases]
    current = json.loads(results.dumps(current))   # as saved: tuples as lists, numpy scalars as numbers
    by_id = {c["id"]: c for c in baseline["cases"]}
    for case in current["cases"]:   # keep the baseline's timing half: only the model is judged here
        if case["id"] in by_id:
            case["timing"], case["validation"] = by_id[case["id"]]["timing"], by_id[case["id"]]["validation"]
    comparison = compare.compare_documents(baseline, current, "results/quick.json", "current code")
    changes = [f"{c.id}: {m['path']} {m['old']!r} -> {m['new']!r}"
               for c in comparison.cases for m in c.model_changes]
    assert not changes, f"model changed; {REFRESH}:\n" + "\n".join(changes[:20])
    assert not comparison.only_in_new, f"quick cases missing from the baseline; {REFRESH}: {comparison.only_in_new}"
    assert not comparison.only_in_base, f"baseline cases no longer in quick; {REFRESH}: {comparison.only_in_base}"
