"""tconv2d workload: MAC counts against brute force, the model's figures, check() errors,
and whole cases through the suite loader, the runner and the CLI."""
from conftest import check_of, drive, model_of  # noqa: F401
import itertools

import numpy as np
import pytest
from typer.testing import CliRunner

from sysbench import cli, suite
from sysbench.hardware import Array
from sysbench.models.systolic import gemm_cycles
from sysbench.runner import run_case
from sysbench.workloads import conv2d
from sysbench.workloads import tconv2d as T

from test_tconv import make, valid_grid

ARRAY = Array(rows=8, cols=8)


def nonzero_products(p):
    """Brute force: every (image, input channel, output channel, input pixel, kernel element)
    product whose output position lies inside the output."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = p["kernel"], p["stride"], p["padding"], p["dilation"]
    ho, wo = T.output_shape(p)
    landing = 0
    for i, j, r, s in itertools.product(range(p["height"]), range(p["width"]), range(kh), range(kw)):
        landing += 0 <= i * sh - ph + r * dh < ho and 0 <= j * sw - pw + s * dw < wo
    return landing * p["batch"] * p["in_channels"] * (p["out_channels"] // p["groups"])


def test_strided_macs_equal_nonzero_products_exactly():
    for layer in valid_grid():
        x, w, p = make(layer, "fp32")
        count = nonzero_products(p)
        # what the kernel actually sends to the array, and whether any zero gets in
        x_ones, w_ones = np.ones_like(x), np.ones_like(w)
        executed, zeros_sent = [], 0

        def recording_gemm(a, b):
            nonlocal zeros_sent
            executed.append(a.shape[0] * a.shape[1] * b.shape[1])
            zeros_sent += int(np.count_nonzero(b == 0))  # b holds the (all-one) input pixels
            return a @ b

        T.tconv2d_strided(x_ones, w_ones, p, ARRAY, gemm=recording_gemm)
        assert sum(executed) == count, layer
        assert zeros_sent == 0, layer
        assert model_of(T.WORKLOAD, p, ARRAY)["macs"] == count, layer


def test_zero_insertion_macs_count_inserted_zeros():
    """The baseline's MACs: all output pixels times all kernel taps; of its im2col entries,
    the ones holding a real pixel (x all ones) are exactly the strided path's products."""
    for layer in valid_grid()[::4]:
        x, w, p = make(layer, "fp32")
        zp = T.zero_insertion_params(p)
        cols_nonzero = sum(np.count_nonzero(conv2d.im2col(T.insert_zeros(np.ones_like(x), p), g, zp))
                           for g in range(p["groups"]))
        assert cols_nonzero * (p["out_channels"] // p["groups"]) == nonzero_products(p), layer
        ho, wo = T.output_shape(p)
        expected = p["batch"] * ho * wo * p["kernel"][0] * p["kernel"][1] * p["in_channels"] \
            * (p["out_channels"] // p["groups"])
        assert model_of(T.WORKLOAD, p, ARRAY)["macs_zero_insertion"] == expected, layer


def dcgan_first(batch=1):
    return {"batch": batch, "height": 4, "width": 4, "in_channels": 512, "out_channels": 256,
            "kernel": (4, 4), "stride": (2, 2), "padding": (1, 1), "output_padding": (0, 0),
            "dilation": (1, 1), "groups": 1}


def test_model_dcgan_layer_by_hand():
    # H=4, k=4, s=2, p=1 -> 8x8. Kernel row r lands input i on 2i - 1 + r in [0, 8):
    # r=0: i=1..3 (3 rows), r=1: 0..3 (4), r=2: 0..3 (4), r=3: 0..2 (3) -> 14 per dimension.
    array = Array(rows=128, cols=128)
    m = model_of(T.WORKLOAD, dcgan_first(), array)
    assert (m["output_height"], m["output_width"]) == (8, 8)
    assert m["gemms"] == 16
    assert m["macs"] == 14 * 14 * 512 * 256
    assert m["macs_zero_insertion"] == 8 * 8 * 16 * 512 * 256
    assert m["mac_saving"] == pytest.approx(1024 / 196)
    # per element: M in {9, 12, 16}, K = 512, N = 256 on 128x128 ws: 4 x 2 folds each
    per_m = {9: 4, 12: 8, 16: 4}  # how many kernel elements have each M (3x3, 3x4 + 4x3, 4x4)
    cycles = sum(count * gemm_cycles(array, mm, 512, 256)["cycles"] for mm, count in per_m.items())
    assert m["cycles"] == cycles
    # baseline: conv over the 11x11 zero-inserted, padded input (7 + 2*2), 4x4 kernel -> 8x8
    base = model_of(conv2d.WORKLOAD, {"batch": 1, "height": 11, "width": 11, "in_channels": 512,
                                  "out_channels": 256, "kernel": (4, 4), "stride": (1, 1),
                                  "padding": (0, 0), "dilation": (1, 1), "groups": 1}, array)
    assert m["cycles_zero_insertion"] == base["cycles"]
    assert m["speedup"] == pytest.approx(base["cycles"] / cycles)


def test_mac_saving_tends_to_stride_squared():
    for stride in (2, 3, 4):
        p = {**dcgan_first(), "height": 64, "width": 64, "in_channels": 8, "out_channels": 8,
             "kernel": (stride, stride), "stride": (stride, stride), "padding": (0, 0)}
        # kernel == stride: no overlap, every product lands: saving is exactly stride^2
        assert model_of(T.WORKLOAD, p, ARRAY)["mac_saving"] == stride * stride
        p = {**p, "kernel": (2 * stride, 2 * stride), "padding": (stride // 2, stride // 2)}
        assert stride ** 2 <= model_of(T.WORKLOAD, p, ARRAY)["mac_saving"] < 1.1 * stride ** 2
    p = {**dcgan_first(), "stride": (1, 1), "kernel": (3, 3), "padding": (1, 1), "height": 32, "width": 32}
    assert model_of(T.WORKLOAD, p, ARRAY)["mac_saving"] < 1.1  # stride 1: nothing to save


def test_model_when_nothing_reaches_the_output():
    p = {**dcgan_first(), "height": 1, "width": 1, "kernel": (1, 1), "stride": (3, 3),
         "padding": (1, 1), "output_padding": (2, 2)}
    m = model_of(T.WORKLOAD, p, ARRAY)
    assert m["macs"] == 0 and m["cycles"] == 0 and m["gemms"] == 0
    assert m["mac_saving"] is None and m["speedup"] is None


def params(**over):
    p = {"batch": 1, "height": 5, "width": 5, "in_channels": 4, "out_channels": 6, "kernel": (3, 3),
         "stride": (2, 2), "padding": (1, 1), "output_padding": (0, 0), "dilation": (1, 1), "groups": 1}
    p.update(over)
    return p


@pytest.mark.parametrize("over, key, fragment", [
    ({"groups": 3}, "groups", "in_channels = 4 is not divisible by groups = 3"),
    ({"groups": 4}, "groups", "out_channels = 6 is not divisible by groups = 4"),
    ({"output_padding": (2, 0)}, "output_padding", "smaller than stride"),
    ({"output_padding": (0, 1), "stride": (2, 1)}, "output_padding", "(width)"),
    ({"padding": (9, 9)}, "padding", "too large"),
])
def test_check_reports_key_and_message(over, key, fragment):
    problems = check_of(T.WORKLOAD, params(**over), ARRAY)
    assert [k for k, _ in problems] == [key]
    assert fragment in problems[0][1]


def test_check_accepts_good_layers_and_int8_limit():
    assert check_of(T.WORKLOAD, params(), ARRAY) == []
    assert check_of(T.WORKLOAD, params(output_padding=(1, 1), dilation=(2, 2), stride=(1, 1)), ARRAY) == []
    int8 = Array(dtype="int8")
    problems = check_of(T.WORKLOAD, params(in_channels=20000, kernel=(3, 3)), int8)
    assert problems and problems[0][0] == "in_channels"


SUITE = """
name = "t"
[arrays.a8]
rows = 8
cols = 8
dataflow = "{dataflow}"
dtype = "{dtype}"
[[cases]]
name = "up"
kind = "tconv2d"
array = "a8"
repeats = 1
batch = 2
height = 3
width = 4
in_channels = 6
out_channels = 4
kernel = [3, 2]
stride = [2, 3]
padding = [1, 0]
output_padding = [1, 0]
groups = 2
"""


@pytest.mark.parametrize("dataflow, dtype", [("ws", "fp32"), ("os", "bf16"), ("is", "int8")])
def test_case_runs_and_validates_against_the_emulator(tmp_path, dataflow, dtype):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(dataflow=dataflow, dtype=dtype))
    (case,) = suite.load(str(path)).cases
    result = run_case(case, threads=1)
    assert result.validation["passed"], result.validation
    assert "emulator (bit-exact)" in result.validation["reference"]
    assert result.metrics["macs"] == nonzero_products(case.params)


def test_validation_catches_a_wrong_output():
    x, w, p = make((1, 4, 4, 5, 5, 3, 2, 1, 0, 1, 1), "fp32")
    state, good = drive(T.WORKLOAD, p, ARRAY)
    assert T.WORKLOAD.validate(state, good).passed
    bad = good.copy()
    bad[0, 0, 3, 3] += 1e-3
    assert not T.WORKLOAD.validate(state, bad).passed


def test_bad_case_is_exit_2_naming_the_key(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(dataflow="ws", dtype="fp32").replace("groups = 2", "groups = 4"))
    result = CliRunner().invoke(cli.app, ["run", str(path)])
    assert result.exit_code == 2
    assert "'up'" in result.output and "'groups'" in result.output
    assert "Traceback" not in result.output


def test_bundled_tconv_suite_loads_with_the_layers():
    cases = suite.load("tconv").cases
    assert len(cases) == 16 and {c.params["batch"] for c in cases} == {1, 8}
    strides = {c.params["stride"] for c in cases}
    assert {(1, 1), (2, 2), (3, 3)} <= strides
    for c in cases:
        m = model_of(T.WORKLOAD, c.params, c.array)
        if c.params["stride"] == (2, 2):
            assert m["mac_saving"] > 3.9 and m["speedup"] > 1
