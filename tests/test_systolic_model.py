"""The analytical systolic model on hand-worked cases, and conv2d's shapes."""
from conftest import check_of, drive, model_of  # noqa: F401
import pytest

from sysbench.hardware import Array
from sysbench.models.systolic import gemm_cycles, mapping
from sysbench.workloads.conv2d import Conv2d, gemm_dims, output_shape


def arr(rows=32, cols=32, dataflow="ws", **kw):
    return Array(rows=rows, cols=cols, dataflow=dataflow, **kw)


def test_worked_examples():
    assert gemm_cycles(arr(), 64, 64, 64)["cycles"] == 632          # 4 folds x (64 + 32 + 64 - 2)
    assert gemm_cycles(arr(dataflow="os"), 64, 64, 64)["cycles"] == 504  # 4 folds x (32 + 32 + 64 - 2)
    assert gemm_cycles(arr(), 3136, 576, 64)["cycles"] == 116280     # 18 x 2 folds x (64 + 32 + 3136 - 2)


def test_is_and_overlapped_by_hand():
    # is: Sr = K = 40 -> 2 row folds on 32 rows, Sc = M = 10 -> 1 col fold, T = N = 7
    m = gemm_cycles(arr(dataflow="is"), 10, 40, 7)
    assert (m["folds"], m["cycles"]) == (2, 2 * (64 + 32 + 7 - 2))
    # overlapped: one exposed preload of 32, then each fold streams 32 + 32 + 7 - 2 = 69
    o = gemm_cycles(arr(dataflow="is", weight_load="overlapped"), 10, 40, 7)
    assert o["cycles"] == 32 + 2 * 69
    # os has nothing to preload: overlapped == serial
    assert gemm_cycles(arr(dataflow="os", weight_load="overlapped"), 10, 40, 7)["cycles"] == \
        gemm_cycles(arr(dataflow="os"), 10, 40, 7)["cycles"] == 32 + 32 + 40 - 2


def test_metrics_consistency():
    a = arr(rows=16, cols=8, clock_ghz=2.0)
    m = gemm_cycles(a, 20, 33, 9)  # ws: Sr=33 -> 3 folds, Sc=9 -> 2 folds
    assert m["folds"] == 6 and m["macs"] == 20 * 33 * 9
    assert m["utilization"] == pytest.approx(m["macs"] / (m["cycles"] * 128))
    assert m["mapping_efficiency"] == pytest.approx(33 * 9 / (6 * 128))
    assert m["time_us"] == pytest.approx(m["cycles"] / 2000)
    assert m["filter_sram_read_bytes"] == 33 * 9 * 4           # each weight read once
    assert m["ifmap_sram_read_bytes"] == 20 * 33 * 2 * 4       # inputs re-streamed per column fold
    assert m["ofmap_sram_write_bytes"] == 20 * 9 * 3 * 4       # a partial sum per row fold
    assert mapping("is", 1, 2, 3) == (2, 1, 3) and mapping("os", 1, 2, 3) == (1, 3, 2)


@pytest.mark.parametrize("size,k,s,p,d,expected", [
    (224, 7, 2, 3, 1, 112), (56, 3, 1, 1, 1, 56), (56, 1, 2, 0, 1, 28), (7, 3, 2, 0, 2, 2),
    (5, 5, 1, 0, 1, 1), (10, 3, 3, 1, 1, 4),
])
def test_conv_output_size_formula(size, k, s, p, d, expected):
    params = {"height": size, "width": size, "kernel": (k, k), "stride": (s, s), "padding": (p, p),
              "dilation": (d, d)}
    assert output_shape(params) == (expected, expected)


def test_conv_output_shape_matches_torch():
    torch = pytest.importorskip("torch")
    for (h, w, k, s, p, d) in [(13, 9, (3, 2), (2, 1), (1, 0), (1, 2)), (8, 8, (1, 1), (3, 3), (0, 0), (1, 1))]:
        y = torch.nn.functional.conv2d(torch.zeros(1, 2, h, w), torch.zeros(4, 2, *k), stride=s, padding=p, dilation=d)
        params = {"height": h, "width": w, "kernel": k, "stride": s, "padding": p, "dilation": d}
        assert output_shape(params) == tuple(y.shape[2:])


def test_depthwise_conv_model():
    p = {"batch": 2, "height": 8, "width": 8, "in_channels": 16, "out_channels": 16, "kernel": (3, 3),
         "stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 16}
    assert gemm_dims(p) == (2 * 64, 9, 1)
    m = model_of(Conv2d(), p, arr(rows=8, cols=8))
    one = gemm_cycles(arr(rows=8, cols=8), 128, 9, 1)
    assert m["cycles"] == 16 * one["cycles"] and m["macs"] == 16 * 128 * 9
