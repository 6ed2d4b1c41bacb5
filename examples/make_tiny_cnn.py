"""Build examples/tiny_cnn.onnx with onnx.helper (no download, no framework):

    python examples/make_tiny_cnn.py [OUT.onnx]

A MobileNet-like block on a 3x32x32 image with a symbolic batch: a 3x3 stride-2 stem, a
depthwise 3x3, a pointwise 1x1, a stride-2 3x3 with SAME_UPPER padding, global average
pooling and a 10-way classifier; ReLU, pooling and reshaping between them. `sysbench import`
maps the four convolutions and the Gemm and skips the rest.
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "stem.w"], ["stem"], name="stem", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["stem"], ["stem.relu"]),
        helper.make_node("Conv", ["stem.relu", "dw.w"], ["dw"], name="dw", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["dw"], ["dw.relu"]),
        helper.make_node("Conv", ["dw.relu", "pw.w"], ["pw"], name="pw", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["pw"], ["pw.relu"]),
        helper.make_node("Conv", ["pw.relu", "down.w"], ["down"], name="down", kernel_shape=[3, 3],
                         strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["down"], ["down.relu"]),
        helper.make_node("GlobalAveragePool", ["down.relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"]),
    ]
    weights = [weight("stem.w", 16, 3, 3, 3), weight("dw.w", 16, 1, 3, 3), weight("pw.w", 32, 16, 1, 1),
               weight("down.w", 32, 32, 3, 3), weight("fc.w", 10, 32), weight("fc.b", 10)]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sysbench")
    model.ir_version = 8  # readable by older onnx releases too
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("tiny_cnn.onnx")
    onnx.save(build(), str(out))
    print(f"written {out}")
