"""ONNX models -> suite cases, through the `onnx` package only (the extra sysbench[onnx]).

Shapes come from onnx.shape_inference with the symbolic batch (dim 0 of every graph input
left symbolic) bound to `batch`. A model with external data is read without it: shapes need
no weights; its inference runs on a copy beside the model (so that data propagation finds
the data), and any model too large for in-memory inference takes that path-based route too.

    Conv           -> conv2d  (pads, strides, dilations, group incl. depthwise, auto_pad)
    ConvTranspose  -> tconv2d (output size from the ONNX operator definition: onnx's own
                               inference disagrees on some output_padding / auto_pad cases)
    Gemm           -> gemm    (transA / transB; C, alpha and beta do not change the GEMM)
    MatMul         -> gemm; a batched MatMul with 2-D weights is one GEMM of batch*M rows,
                      one with batched weights is a batch of G GEMMs: conv2d with groups = G
                      and a 1x1 kernel over an M x 1 input (one group GEMM each)
Every other op is skipped and counted by op type. sysbench's convolutions pad symmetrically:
asymmetric pads become the symmetric padding with the same total (an odd total adds the
extra row to the input), which keeps the output size and the GEMMs.
"""
from __future__ import annotations

import math
import tempfile
from collections import Counter
from pathlib import Path

from ..suite import SuiteError

SHAPE_TYPES = (7, 6)  # TensorProto.INT64, INT32


def _onnx():
    try:
        import onnx
    except ImportError:
        return None
    return onnx


def read_model(path: Path, batch: int) -> tuple[list[dict], list[str], Counter]:
    """(cases, notes, skipped op counts) of an ONNX model."""
    onnx = _onnx()
    if onnx is None:
        raise SuiteError([f"{path}: reading ONNX needs the onnx package: pip install 'sysbench[onnx]'"])
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise SuiteError([f"{path}: not an ONNX model ({type(exc).__name__}: {_first_line(exc)})"]) from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise SuiteError([f"{path}: not an ONNX model (no graph)"])
    fixed = _bind_batch(model, batch)
    model, complaint = _infer(onnx, model, path)
    shapes = _shapes(model)
    cases, notes, skipped, batched, seen = [], [], Counter(), [], Counter()
    if fixed and batch != 1:
        notes.append(f"--batch {batch} not applied to inputs whose first dimension is fixed: {', '.join(fixed)}")
    for index, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in MAPPERS:
            skipped[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
            continue
        name = node.name or f"{node.op_type.lower()}_{index}"
        seen[name] += 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        node_label = f"{path}: node {name!r} ({node.op_type})"

        def shape(i, node=node, node_label=node_label):
            if i >= len(node.input) or not node.input[i]:
                raise SuiteError([f"{node_label}: input {i} missing"])
            dims = shapes.get(node.input[i])
            if dims is None or any(d is None for d in dims):
                raise SuiteError([f"{node_label}: the shape of input {node.input[i]!r} cannot be inferred"
                                  + (f" (inferred: {_fmt(dims)})" if dims else "")
                                  + (f"; onnx shape inference: {complaint}" if complaint else "")])
            return dims

        out = shapes.get(node.output[0]) if node.output else None
        case = MAPPERS[node.op_type](name, shape, attrs, out, node_label, notes, batched)
        if isinstance(case, str):  # the reason this node cannot be mapped
            skipped[f"{node.op_type} ({case})"] += 1
        else:
            cases.append(case)
    if batched:
        notes.append(f"batched MatMul as a batch of GEMMs -> conv2d with groups = batch, 1x1 kernel over an "
                     f"M x 1 input: {', '.join(batched)}")
    if skipped:
        notes.append(f"skipped {sum(skipped.values())} op(s) sysbench does not map: {summary(skipped)}")
    if not cases:
        raise SuiteError([f"{path}: no Conv, ConvTranspose, Gemm or MatMul node to import"
                          + (f" (ops: {summary(skipped)})" if skipped else "")])
    return cases, notes, skipped


def summary(skipped: Counter) -> str:
    return ", ".join(f"{op} x{count}" for op, count in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))


def _fmt(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _bind_batch(model, batch: int) -> list[str]:
    """Set every graph input's symbolic dim 0 to `batch`; the inputs whose dim 0 is fixed
    to another size."""
    initializers = {t.name for t in model.graph.initializer}
    fixed = []
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch  # clears dim_param (a oneof)
        elif dims and dims[0].dim_value != batch:
            fixed.append(f"{value.name!r} ({dims[0].dim_value})")
    return fixed


def _infer(onnx, model, path: Path):
    """The model with inferred shapes; (model, the strict inference's complaint or "")."""
    from onnx.external_data_helper import load_external_data_for_tensor

    # Data propagation (Reshape targets, Shape arithmetic) needs small integer tensors'
    # values; weights stay on disk.
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL and tensor.data_type in SHAPE_TYPES \
                and math.prod(tensor.dims) <= 1 << 16:
            try:
                load_external_data_for_tensor(tensor, str(path.resolve().parent))
            except OSError as exc:
                raise SuiteError([f"{path}: cannot read the external data of {tensor.name!r}: "
                                  f"{exc.strerror or exc}"]) from None
    complaint = ""
    for strict in (True, False):
        try:
            return _infer_once(onnx, model, strict), complaint
        except onnx.shape_inference.InferenceError as exc:
            complaint = _first_line(exc)  # strict failed: infer what can be, name it if needed
    raise SuiteError([f"{path}: onnx shape inference failed: {complaint}"])


def _infer_once(onnx, model, strict: bool):
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
    except ValueError:  # too large to pass in memory (2 GB): the path-based route
        with tempfile.TemporaryDirectory() as tmp:
            source, target = str(Path(tmp) / "bound.onnx"), str(Path(tmp) / "inferred.onnx")
            onnx.save(model, source, save_as_external_data=True)
            onnx.shape_inference.infer_shapes_path(source, target, strict_mode=strict, data_prop=True)
            return onnx.load(target, load_external_data=False)


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shapes(model) -> dict[str, list]:
    shapes = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in value.type.tensor_type.shape.dim]
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes


def _pair(values, default) -> list[int]:
    return list(values) if values is not None else [default, default]


def _same_or_pads(attrs, size, kernel, stride, dilation, axis) -> int:
    """Total padding of one spatial axis of a Conv."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-size // stride)
        return max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    pads = attrs.get("pads", [0, 0, 0, 0])
    return pads[axis] + pads[axis + 2]


def _spatial(shape, attrs, label, transposed):
    """(input shape, weight shape, kernel, group, strides, dilations) of a 2-D convolution
    (transposed: ConvTranspose's weight layout), or the reason it is not one."""
    x, w = shape(0), shape(1)
    if len(x) != 4:
        return f"{len(x) - 2}-D"
    group = attrs.get("group", 1)
    c = x[1]
    agree = c == w[0] and c % group == 0 if transposed else c == w[1] * group and w[0] % group == 0
    if not agree:
        raise SuiteError([f"{label}: input channels {c}, weight {_fmt(w)} and group {group} do not agree"])
    return (x, w, list(attrs.get("kernel_shape", w[2:])), group,
            _pair(attrs.get("strides"), 1), _pair(attrs.get("dilations"), 1))


def _conv(name, shape, attrs, out, label, notes, batched):
    spatial = _spatial(shape, attrs, label, transposed=False)
    if isinstance(spatial, str):
        return spatial
    (n, c, h, wd), w, (kh, kw), group, stride, dilation = spatial
    sizes, kernels, heights, padding = (h, wd), (kh, kw), [], []
    for axis in (0, 1):
        total = _same_or_pads(attrs, sizes[axis], kernels[axis], stride[axis], dilation[axis], axis)
        heights.append(sizes[axis] + total % 2)
        padding.append(total // 2)
    outs = [(heights[a] + 2 * padding[a] - dilation[a] * (kernels[a] - 1) - 1) // stride[a] + 1 for a in (0, 1)]
    if min(outs) < 1:
        raise SuiteError([f"{label}: the kernel does not fit the padded input (output {outs[0]}x{outs[1]})"])
    pads = attrs.get("pads")
    if attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER") or (pads and pads[:2] != pads[2:]):
        extra = f", input {heights[0]}x{heights[1]}" if heights != [h, wd] else ""
        notes.append(f"{label}: pads {attrs.get('auto_pad') if not pads else pads} run as symmetric padding "
                     f"{padding[0]}x{padding[1]}{extra} (same output {outs[0]}x{outs[1]}, same GEMMs)")
    _check_inferred(out, outs, label, notes)
    return _case(name, "conv2d", batch=n, height=heights[0], width=heights[1], in_channels=c, out_channels=w[0],
                 kernel=[kh, kw], stride=stride, padding=padding, dilation=dilation, groups=group)


def _conv_transpose(name, shape, attrs, out, label, notes, batched):
    spatial = _spatial(shape, attrs, label, transposed=True)
    if isinstance(spatial, str):
        return spatial
    (n, c, h, wd), w, (kh, kw), group, stride, dilation = spatial
    output_padding = _pair(attrs.get("output_padding"), 0)
    auto = attrs.get("auto_pad", "NOTSET")
    output_shape = attrs.get("output_shape")
    padding, extra_padding, outs = [], [], []
    for axis, size, k in ((0, h, kh), (1, wd, kw)):
        span = stride[axis] * (size - 1) + (k - 1) * dilation[axis] + 1  # before padding and output_padding
        if output_shape:
            target = list(output_shape)[-2:][axis]
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            target = size * stride[axis]
        elif auto == "VALID":
            target = span + output_padding[axis]
        else:
            pads = attrs.get("pads", [0, 0, 0, 0])
            target = span + output_padding[axis] - pads[axis] - pads[axis + 2]
        # PyTorch's form: out = span - 2 p + output_padding, with output_padding < max(stride, dilation)
        excess = span - target
        p = max(0, -(-excess // 2))
        op = 2 * p - excess
        if target < 1 or op >= max(stride[axis], dilation[axis]):
            return f"output size {target} needs asymmetric padding"
        padding.append(p)
        extra_padding.append(op)
        outs.append(target)
    _check_inferred(out, outs, label, notes)
    return _case(name, "tconv2d", batch=n, height=h, width=wd, in_channels=c, out_channels=w[1] * group,
                 kernel=[kh, kw], stride=stride, padding=padding, output_padding=extra_padding,
                 dilation=dilation, groups=group)


OMITTED = {"dilation": 1, "groups": 1, "output_padding": 0}  # left out of a case at these values


def _case(name: str, kind: str, **keys) -> dict:
    """A suite case: a square pair as one int (suite style), default-valued keys left out."""
    case = {"name": name, "kind": kind}
    for key, value in keys.items():
        if isinstance(value, list):
            value = _one(*value)
        if OMITTED.get(key) != value:
            case[key] = value
    return case


def _gemm(name, shape, attrs, out, label, notes, batched):
    a, b = shape(0), shape(1)
    if len(a) != 2 or len(b) != 2:
        raise SuiteError([f"{label}: Gemm needs 2-D inputs, got {_fmt(a)} and {_fmt(b)}"])
    m, k = a[::-1] if attrs.get("transA", 0) else a
    k2, n = b[::-1] if attrs.get("transB", 0) else b
    if k != k2:
        raise SuiteError([f"{label}: inner dimensions differ: {_fmt(a)} and {_fmt(b)} (transA/transB applied)"])
    return {"name": name, "kind": "gemm", "m": m, "k": k, "n": n}


def _matmul(name, shape, attrs, out, label, notes, batched):
    a, b = shape(0), shape(1)
    a2 = [1] + a if len(a) == 1 else a
    b2 = b + [1] if len(b) == 1 else b
    (m, k), (k2, n) = a2[-2:], b2[-2:]
    if k != k2:
        raise SuiteError([f"{label}: inner dimensions differ: {_fmt(a)} and {_fmt(b)}"])
    batch_a, batch_b = a2[:-2], b2[:-2]
    if not batch_b:  # shared 2-D weights: the batch dimensions are more rows of one GEMM
        return {"name": name, "kind": "gemm", "m": math.prod(batch_a) * m, "k": k, "n": n}
    try:
        groups = math.prod(_broadcast(batch_a, batch_b))
    except ValueError:
        raise SuiteError([f"{label}: batch dimensions {_fmt(a)} and {_fmt(b)} do not broadcast"]) from None
    if groups == 1:
        return {"name": name, "kind": "gemm", "m": m, "k": k, "n": n}
    batched.append(f"{name} ({groups} x {m}x{k}x{n})")
    return {"name": name, "kind": "conv2d", "height": m, "width": 1, "in_channels": groups * k,
            "out_channels": groups * n, "kernel": 1, "groups": groups}


def _broadcast(a: list[int], b: list[int]) -> list[int]:
    a, b = [1] * (len(b) - len(a)) + a, [1] * (len(a) - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise ValueError
    return [max(x, y) for x, y in zip(a, b)]


def _one(a: int, b: int):
    """An int for a square pair, else [a, b] (suite style)."""
    return a if a == b else [a, b]


def _check_inferred(out, outs, label, notes) -> None:
    inferred = out[2:] if out and len(out) == 4 else None
    if inferred and None not in inferred and list(inferred) != list(outs):
        notes.append(f"{label}: onnx's shape inference says {_fmt(inferred)}, the operator definition "
                     f"{_fmt(outs)}: sysbench follows the definition")


MAPPERS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul}
