"""The sparse_gemm workload: hand-checked model figures, the route decision, validation of
both routes, the weights file errors and the bundled suite."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import as_params, check_of, drive, model_of

from sysbench import suite as suite_mod
from sysbench.hardware import Array
from sysbench.runner import run_case
from sysbench.workloads.base import CaseError
from sysbench.workloads.sparse_gemm import WORKLOAD

BASE = {"m": 3, "k": None, "n": None, "nm": "2:4", "density": None, "pattern": None,
        "permute": False, "weights": None, "key": None, "weight_seed": 0}


def params(**changes):
    return {**BASE, **changes}


def run(p, array, seed=0):
    """(metrics, output, the peers timed beside the kernel, validation)."""
    assert check_of(WORKLOAD, p, array) == []
    metrics = model_of(WORKLOAD, p, array)
    state, output = drive(WORKLOAD, p, array, seed)
    return metrics, output, WORKLOAD.timed(state).peers, WORKLOAD.validate(state, output)


def test_model_by_hand_one_pass():
    # W 8 x 5 already 2:4 on a 4x4 ws array, A 3 x 8.
    # sparse: K*N/M = 4 compressed rows -> 1 row fold; 5 columns -> 2 column folds; each
    # fold = 4 (preload) + 4 + 4 + 3 - 2 = 13 cycles -> 26. dense: K = 8 -> 2 row folds
    # x 2 column folds x 13 = 52.
    array = Array(rows=4, cols=4, dataflow="ws", weight_load="serial")
    m = model_of(WORKLOAD, params(k=8, n=5, pattern="nm"), array)
    assert (m["passes"], m["compressed_k"], m["worthwhile"], m["route"]) == (1, 4, True, "sparse")
    assert (m["sparse_cycles"], m["dense_cycles"], m["cycles"], m["speedup"]) == (26, 52, 26, 2.0)
    assert m["nonzeros_per_group_histogram"] == [0, 0, 10, 0, 0]  # 2 groups x 5 columns, 2 each
    assert (m["dense_weight_bytes"], m["compressed_value_bytes"], m["index_bytes"]) == (160, 80, 20)
    assert m["density"] == 0.5 and m["already_nm"]


def test_model_by_hand_two_passes_from_a_file(tmp_path):
    # 1:4 on K = 8 (2 groups), 2 columns: column 0 has 2 nonzeros in group 0 -> 2 passes of
    # K*N/M = 2 compressed rows. 2x2 ws array, A 3 x 8: per pass 1 fold of
    # 2 (preload) + 2 + 2 + 3 - 2 = 7 cycles -> 14; dense: 4 row folds x 7 = 28.
    w = np.zeros((8, 2), np.float32)
    w[0, 0], w[1, 0], w[5, 1] = 1.0, -2.0, 3.0
    np.save(tmp_path / "w.npy", w)
    array = Array(rows=2, cols=2, dataflow="ws", weight_load="serial")
    p = params(nm="1:4", weights=str(tmp_path / "w.npy"))
    m = model_of(WORKLOAD, p, array)
    assert (m["passes"], m["compressed_k"], m["k"], m["n"]) == (2, 2, 8, 2)
    assert (m["sparse_cycles"], m["dense_cycles"], m["speedup"]) == (14, 28, 2.0)
    assert m["worthwhile"] and m["route"] == "sparse"  # 2 * 1 / 4 = 0.5 < 1
    assert m["nonzeros_per_group_histogram"] == [2, 1, 1, 0, 0]
    assert m["index_bytes"] == 2 * 2 * 2 and m["sparse_filter_sram_read_bytes"] == 2 * (2 * 2 * 4) + 8
    metrics, output, _, validation = run(p, array)
    assert validation.passed and "bit-exact" in validation.reference
    assert np.array_equal(output.shape, (3, 2))


def test_dense_route_when_not_worthwhile_says_why():
    array = Array(rows=4, cols=4)
    p = params(k=8, n=5, pattern="random", density=1.0)  # full groups: 2 passes of 2:4
    metrics, output, measured, validation = run(p, array)
    assert metrics["passes"] == 2 and not metrics["worthwhile"] and metrics["route"] == "dense"
    assert ">= 1" in metrics["route_reason"] and "runs dense" in metrics["route_reason"]
    assert metrics["cycles"] == metrics["dense_cycles"] == 52
    assert validation.passed and "emulator" in validation.reference
    assert validation.extra["decomposition_exact"] and validation.extra["parts_obey_nm"]


@pytest.mark.parametrize("dataflow", ["ws", "os", "is"])
def test_sparse_route_validates_bit_exactly_with_padding_and_permutation(dataflow):
    array = Array(rows=4, cols=8, dataflow=dataflow, dtype="bf16")
    p = params(m=6, k=30, n=9, nm="2:8", pattern="random", density=0.2, permute=True)
    metrics, output, measured, validation = run(p, array)
    assert metrics["padded_k"] == 32 and "padded" in metrics["padding"]
    assert metrics["passes"] <= metrics["passes_identity"]
    assert metrics["passes_lower_bound"] <= metrics["passes"]
    assert validation.passed, validation
    assert set(measured) == {"decompose", "permute", "dense"}  # timed beside the sparse passes


def test_permuted_route_is_undone_in_the_output(tmp_path):
    rng = np.random.default_rng(4)
    w = np.zeros((64, 24), np.float32)
    w[:16] = rng.standard_normal((16, 24))           # dense input channels clustered...
    w[16:] = rng.standard_normal((48, 24)) * (rng.random((48, 24)) < 0.02)  # ...the rest sparse
    np.save(tmp_path / "w.npy", w)
    array = Array(rows=8, cols=8)
    p = params(m=5, weights=str(tmp_path / "w.npy"), permute=True)
    metrics, output, _, validation = run(p, array, seed=1)
    assert (metrics["passes_identity"], metrics["passes"], metrics["permuted"]) == (2, 1, True)
    assert metrics["route"] == "sparse" and validation.passed
    state, out = drive(WORKLOAD, p, array, seed=1)
    assert not np.array_equal(state.plan.perm, np.arange(64))
    assert not np.array_equal(state.inputs.a_used, state.inputs.a)  # A's columns were permuted...
    exact = state.inputs.a.astype(np.float64) @ w.astype(np.float64)
    assert np.max(np.abs(out - exact)) < 1e-4  # ...and the output is A @ W


@pytest.mark.parametrize("changes,key,fragment", [
    ({"nm": "2-4"}, "nm", "must look like 'N:M'"),
    ({"nm": "4:4"}, "nm", "1 <= N < M <= 16"),
    ({"nm": "1:17"}, "nm", "1 <= N < M <= 16"),
    ({"density": 0.0}, "density", "must be in (0, 1]"),
    ({"density": 1.5}, "density", "must be in (0, 1]"),
    ({"n": None}, "n", "missing"),
    ({"key": "fc1"}, "key", "there is no weights"),
    ({"pattern": "nm", "density": 0.5}, "density", "drop density"),
])
def test_check_reports_bad_keys(changes, key, fragment):
    problems = check_of(WORKLOAD, params(**{"k": 8, "n": 4, **changes}), Array())
    assert any(k == key and fragment in msg for k, msg in problems), problems


def test_check_rejects_int8_arrays():
    problems = check_of(WORKLOAD, params(k=8, n=4), Array(dtype="int8"))
    assert problems and problems[0][0] == "array"


def write_bad_files(tmp_path):
    np.save(tmp_path / "ints.npy", np.ones((4, 4), np.int32))
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2), np.float32))
    nan = np.ones((4, 4), np.float32)
    nan[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez(tmp_path / "two.npz", fc1=np.ones((4, 4), np.float32), fc2=np.ones((4, 2), np.float32))
    (tmp_path / "w.txt").write_text("1 2\n3 4\n")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    np.save(tmp_path / "huge.npy", np.full((4, 4), 1e39))  # float64 that overflows fp32


@pytest.mark.parametrize("file,npz_key,key,fragment", [
    ("missing.npy", None, "weights", "no such file"),
    ("ints.npy", None, "weights", "must hold floats"),
    ("cube.npy", None, "weights", "must be 2-D"),
    ("nan.npy", None, "weights", "NaN or inf (first at [2, 1]"),
    ("two.npz", "fc3", "key", "no array 'fc3'"),
    ("two.npz", None, "key", "holds 2 arrays (fc1, fc2): set key"),
    ("ints.npy", "fc1", "key", "applies to .npz files only"),
    ("w.txt", None, "weights", "must be a .npy or .npz"),
    ("broken.npy", None, "weights", "cannot read"),
    ("huge.npy", None, "weights", "beyond fp32's range"),
])
def test_bad_weights_files_are_reported_by_check(tmp_path, file, npz_key, key, fragment):
    write_bad_files(tmp_path)
    p = params(weights=str(tmp_path / file), key=npz_key)
    problems = check_of(WORKLOAD, p, Array())
    assert any(k == key and fragment in msg for k, msg in problems), problems
    if file != "missing.npy":  # plan() finds the same, as a CaseError naming the key
        with pytest.raises(CaseError) as info:
            WORKLOAD.plan(as_params(WORKLOAD, p), Array())
        assert info.value.key == key and fragment in str(info.value)


def test_weights_shape_must_match_given_k(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((8, 4), np.float32))
    problems = check_of(WORKLOAD, params(weights=str(tmp_path / "w.npy"), k=16, pattern="nm"), Array())
    keys = {k for k, _ in problems}
    assert keys == {"k", "pattern"}


def test_cli_bad_weights_file_is_exit_2_one_line(tmp_path):
    write_bad_files(tmp_path)
    (tmp_path / "s.toml").write_text(
        '[arrays.a]\nrows = 4\ncols = 4\n[[cases]]\nname = "w"\nkind = "sparse_gemm"\narray = "a"\n'
        'm = 4\nweights = "two.npz"\nkey = "fc9"\n')
    proc = subprocess.run([sys.executable, "-m", "sysbench", "run", str(tmp_path / "s.toml")],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "case 'w' key 'key'" in proc.stderr and "no array 'fc9'" in proc.stderr


def test_bundled_suite_loads_and_the_shipped_layer_runs():
    loaded = suite_mod.load("sparse")
    ids = [c.id for c in loaded.cases]
    assert len(ids) == 18 + 2 + 3 + 4
    layer = {c.id: c for c in loaded.cases if c.name == "pruned-layer"}
    for case in layer.values():
        case.repeats, case.warmup = 1, 0
        result = run_case(case, threads=1)
        assert result.passed, result.to_dict()
        assert "bit-exact" in result.validation["reference"] or result.metrics["route"] == "dense"
    fc1 = run_case(layer["sparse/pruned-layer[key=fc1,permute=True]"], threads=1)
    assert (fc1.metrics["passes_identity"], fc1.metrics["passes"], fc1.metrics["route"]) == (2, 1, "sparse")
