"""ONNX models (built here with onnx.helper) -> suites, checked against hand-written suites
of the same layers and against onnx's reference evaluator's output shapes."""
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from clitools import sysbench  # noqa: E402
from sysbench import importers, suite as suite_mod  # noqa: E402
from sysbench.suite import SuiteError  # noqa: E402
from sysbench.workloads import conv2d, tconv2d  # noqa: E402

ROOT = Path(__file__).parent.parent


def weight(name, *shape):
    return numpy_helper.from_array(np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32), name)


def node(op, inputs, output, name="", **attrs):
    return helper.make_node(op, inputs, [output], name=name, **attrs)


def save(tmp_path, nodes, inputs, initializers, name="m.onnx", outputs=None, **save_kwargs):
    graph = helper.make_graph(nodes, "g", inputs, outputs or [helper.make_tensor_value_info(nodes[-1].output[0],
                                                                                           TensorProto.FLOAT, None)],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path), **save_kwargs)
    return path, model


def every_op_model(tmp_path):
    """Every mapped op in its variants, and ops that are skipped."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 20, 20])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", 5, 12])
    nodes = [
        node("Conv", ["x", "w1"], "c1", "conv_pad", pads=[1, 1, 1, 1], strides=[2, 2]),             # 10x10
        node("Conv", ["c1", "w2"], "c2", "conv_dw", pads=[2, 2, 2, 2], dilations=[2, 2], group=8),  # 10x10
        node("Relu", ["c2"], "r2"),
        node("Conv", ["r2", "w3"], "c3", "conv_same", strides=[2, 2], auto_pad="SAME_UPPER"),      # 5x5
        node("Conv", ["c3", "w4"], "c4", "conv_valid", auto_pad="VALID"),                          # 3x5
        node("Conv", ["c4", "w5"], "c5", "conv_asym", pads=[0, 0, 2, 2]),                          # 3x5
        node("ConvTranspose", ["c5", "w6"], "t1", "tconv", strides=[2, 2], pads=[1, 1, 1, 1],
             output_padding=[1, 1], group=2),                                                       # 6x10
        node("ConvTranspose", ["t1", "w7"], "t2", "tconv_same", strides=[2, 2], auto_pad="SAME_UPPER",
             output_padding=[1, 1]),                                                                # 12x20
        node("GlobalAveragePool", ["t2"], "pool"),
        node("Flatten", ["pool"], "flat"),
        node("Gemm", ["flat", "w8"], "g1", "gemm_tb", transB=1),                                    # 2x8 . 8x16
        node("Transpose", ["g1"], "g1t", perm=[1, 0]),
        node("Gemm", ["g1t", "w9"], "g2", "gemm_ta", transA=1),                                     # 2x16 . 16x4
        node("MatMul", ["g2", "w10"], "m1", "matmul"),                                              # 2x4 . 4x6
        node("MatMul", ["q", "w11"], "m2", "matmul_shared"),                                        # (2*5)x12 . 12x7
        node("Transpose", ["q"], "qt", perm=[0, 2, 1]),
        node("MatMul", ["q", "qt"], "m3", "matmul_batched"),                                        # 2 x (5x12 . 12x5)
        node("Softmax", ["m3"], "s3"),
    ]
    initializers = [weight("w1", 8, 3, 3, 3), weight("w2", 8, 1, 3, 3), weight("w3", 16, 8, 3, 3),
                    weight("w4", 16, 16, 3, 1), weight("w5", 16, 16, 3, 3), weight("w6", 16, 4, 3, 3),
                    weight("w7", 8, 8, 3, 3), weight("w8", 16, 8), weight("w9", 16, 4), weight("w10", 4, 6),
                    weight("w11", 12, 7)]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("m1", "m2", "s3")]
    return save(tmp_path, nodes, [x, q], initializers, outputs=outputs)


HAND_WRITTEN = """
name = "m"
[defaults]
numerics = false
array = "a32"
[arrays.a32]
rows = 32
cols = 32
dataflow = "ws"
[[cases]]
name = "conv_pad"
kind = "conv2d"
batch = 2
height = 20
width = 20
in_channels = 3
out_channels = 8
kernel = 3
stride = 2
padding = 1
[[cases]]
name = "conv_dw"
kind = "conv2d"
batch = 2
height = 10
width = 10
in_channels = 8
out_channels = 8
kernel = 3
padding = 2
dilation = 2
groups = 8
[[cases]]
name = "conv_same"     # SAME_UPPER, 10 -> 5 at stride 2: total padding 1, as one more input row
kind = "conv2d"
batch = 2
height = 11
width = 11
in_channels = 8
out_channels = 16
kernel = 3
stride = 2
[[cases]]
name = "conv_valid"
kind = "conv2d"
batch = 2
height = 5
width = 5
in_channels = 16
out_channels = 16
kernel = [3, 1]
[[cases]]
name = "conv_asym"     # pads [0, 0, 2, 2]: total 2 per axis, symmetric 1
kind = "conv2d"
batch = 2
height = 3
width = 5
in_channels = 16
out_channels = 16
kernel = 3
padding = 1
[[cases]]
name = "tconv"
kind = "tconv2d"
batch = 2
height = 3
width = 5
in_channels = 16
out_channels = 8
kernel = 3
stride = 2
padding = 1
output_padding = 1
groups = 2
[[cases]]
name = "tconv_same"    # SAME_UPPER: output = input * stride = 12 x 20
kind = "tconv2d"
batch = 2
height = 6
width = 10
in_channels = 8
out_channels = 8
kernel = 3
stride = 2
padding = 1
output_padding = 1
[[cases]]
name = "gemm_tb"
kind = "gemm"
m = 2
k = 8
n = 16
[[cases]]
name = "gemm_ta"
kind = "gemm"
m = 2
k = 16
n = 4
[[cases]]
name = "matmul"
kind = "gemm"
m = 2
k = 4
n = 6
[[cases]]
name = "matmul_shared"
kind = "gemm"
m = 10
k = 12
n = 7
[[cases]]
name = "matmul_batched"   # 2 GEMMs 5x12 . 12x5 as conv2d groups
kind = "conv2d"
height = 5
width = 1
in_channels = 24
out_channels = 10
kernel = 1
groups = 2
"""


def summary(cases):
    return [(c.name, c.kind, c.params, c.array.name) for c in cases]


def test_every_mapped_op_matches_a_hand_written_suite(tmp_path):
    path, _ = every_op_model(tmp_path)
    imported, notes = importers.load(path, batch=2, array="a32")
    expected = suite_mod.load_text(HAND_WRITTEN, tmp_path / "m.toml", "hand-written")
    assert summary(imported.cases) == summary(expected.cases)
    skipped = [n for n in notes if n.startswith("skipped")]
    assert skipped == ["skipped 6 op(s) sysbench does not map: Transpose x2, Flatten x1, GlobalAveragePool x1, "
                       "Relu x1, Softmax x1"]
    assert "skipped 6 op(s)" in imported.description
    assert any("'tconv_same'" in n and "onnx's shape inference says 13x21" in n for n in notes)
    assert any("matmul_batched (2 x 5x12x5)" in n for n in notes)


def test_output_sizes_agree_with_onnx_reference_evaluator(tmp_path):
    """Each convolution node run alone by onnx's reference implementation gives the output
    size sysbench's case computes (PyTorch's formulas on the imported params)."""
    path, model = every_op_model(tmp_path)
    imported, _ = importers.load(path, batch=2, array="a32")
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(importers_bound(model)).graph.value_info}
    weights = {t.name: t for t in model.graph.initializer}
    checked = 0
    for case, onnx_node in zip(imported.cases, [n for n in model.graph.node if n.name]):
        # (onnx 1.x's reference ConvTranspose slices grouped weights along the wrong axis)
        if case.kind not in ("conv2d", "tconv2d") or case.name in ("matmul_batched", "tconv"):
            continue
        source = onnx_node.input[0]
        shape = shapes.get(source) or [2, 3, 20, 20]
        single = helper.make_model(helper.make_graph(
            [onnx_node], "one", [helper.make_tensor_value_info(source, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(onnx_node.output[0], TensorProto.FLOAT, None)],
            [weights[onnx_node.input[1]]]), opset_imports=[helper.make_opsetid("", 17)])
        (value,) = ReferenceEvaluator(single).run(None, {source: np.ones(shape, np.float32)})
        formula = conv2d.output_shape if case.kind == "conv2d" else tconv2d.output_shape
        assert formula(case.params) == value.shape[2:], case.name
        assert case.params["out_channels"] == value.shape[1], case.name
        checked += 1
    assert checked == 6


def importers_bound(model):
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    for value in bound.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 2
    return bound


def test_symbolic_batch_is_bound(tmp_path):
    path, _ = every_op_model(tmp_path)
    for batch in (1, 3):
        cases = importers.load(path, batch=batch, array="a32")[0].cases
        assert cases[0].params["batch"] == batch
        assert next(c for c in cases if c.name == "matmul_shared").params["m"] == 5 * batch


def test_a_fixed_batch_is_kept_and_said(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    path, _ = save(tmp_path, [node("Conv", ["x", "w"], "y", "conv")], [x], [weight("w", 4, 3, 3, 3)])
    suite, notes = importers.load(path, batch=4, array="a32")
    assert suite.cases[0].params["batch"] == 1
    assert notes == ["--batch 4 not applied to inputs whose first dimension is fixed: 'x' (1)"]


def test_models_with_external_data(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    shape = numpy_helper.from_array(np.array([-1, 256], np.int64), "shape")
    path, _ = save(tmp_path, [node("Conv", ["x", "w"], "c", "conv", pads=[1, 1, 1, 1]),
                              node("Reshape", ["c", "shape"], "r"), node("MatMul", ["r", "fc"], "y", "fc")],
                   [x], [weight("w", 4, 3, 3, 3), shape, weight("fc", 256, 10)],
                   save_as_external_data=True, location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").is_file()
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = importers.load(path, batch=4, array="a32")[0].cases
    assert [(c.name, c.kind) for c in cases] == [("conv", "conv2d"), ("fc", "gemm")]
    assert (cases[1].params["m"], cases[1].params["k"]) == (4, 256)  # the Reshape's target was read
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind


def test_too_large_for_memory_takes_the_path_based_inference(tmp_path, monkeypatch):
    path, _ = every_op_model(tmp_path)
    real = onnx.shape_inference.infer_shapes_path
    calls = []

    def refuse(*args, **kwargs):
        raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")

    def path_based(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", path_based)
    imported, _ = importers.load(path, batch=2, array="a32")
    assert calls and summary(imported.cases) == summary(
        suite_mod.load_text(HAND_WRITTEN, tmp_path / "m.toml", "hand-written").cases)


def test_unmappable_conv_forms_are_skipped_and_counted(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16])
    path, _ = save(tmp_path, [node("Conv", ["x", "w"], "y", "conv1d")], [x], [weight("w", 4, 2, 3)])
    with pytest.raises(SuiteError, match=r"no Conv, ConvTranspose, Gemm or MatMul node .* \(ops: Conv \(1-D\) x1\)"):
        importers.load(path)


# --- bad inputs ------------------------------------------------------------------------------

def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_text("Layer, M, N, K,\nfc, 1, 2, 3,\n")
    with pytest.raises(SuiteError, match=r"m.onnx: not an ONNX model"):
        importers.load(path)


def test_shapes_that_cannot_be_inferred_name_the_node(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([node("Mystery", ["x"], "h", domain="my.ops"), node("Conv", ["h", "w"], "y", "conv")],
                              "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [weight("w", 4, 3, 3, 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(SuiteError) as info:
        importers.load(path)
    assert info.value.problems == [f"{path}: node 'conv' (Conv): the shape of input 'h' cannot be inferred"]


def test_inconsistent_model_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    path, _ = save(tmp_path, [node("Conv", ["x", "w"], "y", "conv")], [x], [weight("w", 4, 5, 3, 3)])
    with pytest.raises(SuiteError, match=r"node 'conv' \(Conv\): input channels 3, weight 4x5x3x3 and group 1"):
        importers.load(path)


def test_without_the_onnx_package(tmp_path, monkeypatch):
    path, _ = every_op_model(tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(SuiteError, match=r"needs the onnx package: pip install 'sysbench\[onnx\]'"):
        importers.load(path)



def test_cli_run_and_import_the_shipped_example(tmp_path):
    example = ROOT / "examples" / "tiny_cnn.onnx"
    out = tmp_path / "r.json"
    proc = sysbench("run", str(example), "--batch", "2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "skipped 7 op(s)" in proc.stderr
    import json
    cases = json.loads(out.read_text())["cases"]
    assert [c["name"] for c in cases] == ["stem", "stem", "dw", "dw", "pw", "pw", "down", "down", "fc", "fc"]
    bad = sysbench("import", str(example), "--batch", "0", "-o", str(tmp_path / "x.toml"))
    assert bad.returncode == 2 and "--batch 0: must be a positive integer" in bad.stderr
    assert not (tmp_path / "x.toml").exists()


def test_shipped_example_is_what_its_script_builds(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import make_tiny_cnn
    finally:
        sys.path.pop(0)
    assert make_tiny_cnn.build().SerializeToString() == (ROOT / "examples" / "tiny_cnn.onnx").read_bytes()
