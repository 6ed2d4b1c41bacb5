"""tconv2d: transposed convolution by strided tiling per kernel element, against zero insertion.

Layout NCHW, weights (in_channels, out_channels/groups, kh, kw) and output sizes as in
PyTorch's conv_transpose2d. Three computations of the same layer:

* strided (the technique, timed): for each kernel element (r, s), only the input pixels that
  reach the output (a rectangle computed analytically) times that element's
  Cin/groups x Cout/groups weight slice, one GEMM on the array, added into the output at the
  stride (kernel `sysbench._kernels.tconv`).
* zero insertion (the baseline): put stride-1 zeros between input pixels, pad by
  dilation*(k-1) - padding (plus output_padding at the bottom/right), run an ordinary
  stride-1 convolution with the flipped, transposed weights (conv2d's im2col on the array).
* direct (the reference): float64 scatter of every input pixel times every kernel element,
  straight from the definition.
"""
from __future__ import annotations

import numpy as np

from ..models.memory import memory_metrics
from ..models.systolic import add_cycles, gemm_cycles
from ..numerics import gamma
from . import conv2d
from ._array import INT8_MAX_K, LAYER_KEYS, ArrayLayer, ArrayPlan, array_gemm, check_layer, emulate
from .base import Key, Run, Validation


def _kernel():
    from .._kernels import tconv

    return tconv


def layer_params(x_shape, w_shape, stride=1, padding=0, output_padding=0, dilation=1, groups=1) -> dict:
    """The params dict of a layer given its operands' shapes (ValueError when impossible)."""
    geo = _kernel().check_args(x_shape, w_shape, stride, padding, output_padding, dilation, groups)
    geo.pop("output")
    return geo


def output_shape(p: dict) -> tuple[int, int]:
    """PyTorch: (H - 1) s - 2 p + d (k - 1) + output_padding + 1, per dimension."""
    return tuple((p[n] - 1) * p["stride"][i] - 2 * p["padding"][i] + p["dilation"][i] * (p["kernel"][i] - 1)
                 + p["output_padding"][i] + 1 for i, n in enumerate(("height", "width")))


def geometry(p: dict) -> dict:
    return {**p, "output": output_shape(p)}


def element_gemms(p: dict) -> list[tuple[int, int, int]]:
    """(M, K, N) of the array's GEMMs in the strided path: per group, per kernel element that
    reaches the output, M = batch * valid input rows * valid input columns. (On the CPU the
    kernel stacks all elements into one GEMM on the whole input; the products are the same.)"""
    cin_g, cout_g = p["in_channels"] // p["groups"], p["out_channels"] // p["groups"]
    shapes = [(p["batch"] * (ihi - ilo) * (jhi - jlo), cin_g, cout_g)
              for _, _, ilo, ihi, jlo, jhi, _, _ in _kernel().element_plan(geometry(p))]
    return shapes * p["groups"]


# ------------------------------------------------------------------ zero insertion

def zero_insertion_params(p: dict) -> dict:
    """conv2d params of the baseline: the zero-inserted, padded input, stride 1, no padding."""
    sizes = {}
    for i, name in enumerate(("height", "width")):
        lead = p["dilation"][i] * (p["kernel"][i] - 1) - p["padding"][i]
        sizes[name] = (p[name] - 1) * p["stride"][i] + 1 + 2 * lead + p["output_padding"][i]
    return {"batch": p["batch"], **sizes, "in_channels": p["in_channels"],
            "out_channels": p["out_channels"], "kernel": p["kernel"], "stride": (1, 1),
            "padding": (0, 0), "dilation": p["dilation"], "groups": p["groups"]}


def insert_zeros(x: np.ndarray, p: dict) -> np.ndarray:
    """stride-1 zeros between pixels, then pad (or crop, when padding exceeds d(k-1)) so that
    a stride-1 convolution gives the transposed convolution."""
    (sh, sw), batch, channels, height, width = p["stride"], *x.shape
    dilated = np.zeros((batch, channels, (height - 1) * sh + 1, (width - 1) * sw + 1), dtype=x.dtype)
    dilated[:, :, ::sh, ::sw] = x
    for axis in (2, 3):
        i = axis - 2
        lead = p["dilation"][i] * (p["kernel"][i] - 1) - p["padding"][i]
        trail = lead + p["output_padding"][i]
        n = dilated.shape[axis]
        # crop what negative padding removes, then pad what positive padding adds
        dilated = dilated.take(range(max(0, -lead), n - max(0, -trail)), axis=axis)
        widths = [(0, 0)] * 4
        widths[axis] = (max(0, lead), max(0, trail))
        dilated = np.pad(dilated, widths)
    return dilated


def flipped_weights(w: np.ndarray, groups: int) -> np.ndarray:
    """(Cin, Cout/g, kh, kw) transposed-conv weights -> (Cout, Cin/g, kh, kw) conv weights,
    kernel flipped in both dimensions."""
    cin, cout_g, kh, kw = w.shape
    grouped = w.reshape(groups, cin // groups, cout_g, kh, kw).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(grouped[..., ::-1, ::-1].reshape(groups * cout_g, cin // groups, kh, kw))


def _check_operands(x, w, p):
    _kernel().check_args(x.shape, w.shape, p["stride"], p["padding"], p["output_padding"],
                         p["dilation"], p["groups"])


def tconv2d_zero_insertion(x: np.ndarray, w: np.ndarray, p: dict, array, threads: int = 1) -> np.ndarray:
    """The baseline on the array: zero insertion, then conv2d (im2col GEMMs per group)."""
    _check_operands(x, w, p)
    return conv2d.conv2d_array(insert_zeros(x, p), flipped_weights(w, p["groups"]),
                               zero_insertion_params(p), array, threads)


# ------------------------------------------------------------------ strided and reference

def tconv2d_strided(x: np.ndarray, w: np.ndarray, p: dict, array, threads: int = 1, gemm=None) -> np.ndarray:
    """The technique on the array: one GEMM per kernel element, strided scatter-add.
    float32 arrays run the kernel's own call of the array GEMM (fold order on ws / is,
    chain order on os, as array_gemm); int8 and a given `gemm` go through a callable."""
    fold_depth = None if array.dataflow == "os" else array.rows
    if gemm is None and array.dtype == "int8":
        gemm = lambda a, b: array_gemm(a, b, array, threads)  # noqa: E731
    return _kernel().tconv2d_strided(x, w, p["stride"], p["padding"], p["output_padding"],
                                     p["dilation"], p["groups"], gemm=gemm, threads=threads,
                                     fold_depth=fold_depth)


def tconv2d_direct(x: np.ndarray, w: np.ndarray, p: dict) -> np.ndarray:
    """Reference in float64 from the definition: input pixel (i, j) times kernel element
    (r, s) lands on output (i*sh - ph + r*dh, j*sw - pw + s*dw) when that is inside."""
    _check_operands(x, w, p)
    x, w = x.astype(np.float64), w.astype(np.float64)
    batch, cin, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = p["kernel"], p["stride"], p["padding"], p["dilation"]
    ho, wo = output_shape(p)
    groups = p["groups"]
    cin_g, cout_g = cin // groups, w.shape[1]
    out = np.zeros((batch, cout_g * groups, ho, wo))
    for g in range(groups):
        xg = x[:, g * cin_g:(g + 1) * cin_g].transpose(0, 2, 3, 1)  # (b, h, w, c)
        for r in range(kh):
            rows = np.arange(height) * sh - ph + r * dh
            keep_i = (rows >= 0) & (rows < ho)
            for s in range(kw):
                cols = np.arange(width) * sw - pw + s * dw
                keep_j = (cols >= 0) & (cols < wo)
                if not keep_i.any() or not keep_j.any():
                    continue
                contrib = (xg @ w[g * cin_g:(g + 1) * cin_g, :, r, s]).transpose(0, 3, 1, 2)
                block = contrib[:, :, keep_i][:, :, :, keep_j]
                # distinct inputs land on distinct outputs for one (r, s): no repeated index
                out[:, g * cout_g:(g + 1) * cout_g, rows[keep_i][:, None], cols[keep_j]] += block
    return out


def strided_by_numpy(x: np.ndarray, w: np.ndarray, p: dict, gemm) -> np.ndarray:
    """The strided algorithm with numpy slicing for the gather and a numpy float32/int32
    scatter-add in the kernel's order: with the same `gemm`, the kernel's bits exactly."""
    groups = p["groups"]
    cin_g, cout_g = p["in_channels"] // groups, w.shape[1]
    sh, sw = p["stride"]
    ho, wo = output_shape(p)
    out = np.zeros((x.shape[0], cout_g * groups, ho, wo), dtype=np.int32 if x.dtype == np.int8 else np.float32)
    for g in range(groups):
        for r, s, ilo, ihi, jlo, jhi, oi, oj in _kernel().element_plan(geometry(p)):
            window = x[:, g * cin_g:(g + 1) * cin_g, ilo:ihi, jlo:jhi]
            a = np.ascontiguousarray(window.transpose(0, 2, 3, 1)).reshape(-1, cin_g)
            y = gemm(a, np.ascontiguousarray(w[g * cin_g:(g + 1) * cin_g, :, r, s]))
            y = y.reshape(x.shape[0], ihi - ilo, jhi - jlo, cout_g).transpose(0, 3, 1, 2)
            out[:, g * cout_g:(g + 1) * cout_g, oi:oi + (ihi - ilo - 1) * sh + 1:sh,
                oj:oj + (jhi - jlo - 1) * sw + 1:sw] += y
    return out


def error_bound(x: np.ndarray, w: np.ndarray, p: dict, zero_insertion: bool = False) -> np.ndarray:
    """Elementwise bound on |fp32 result - exact|, gamma(n) * |x| (*) |w| (Higham, Thm 3.5).

    Strided: a product passes through at most Cin/groups + 1 roundings in its GEMM (fmaf
    chain and fold sums) and kh*kw - 1 scatter adds (the first lands on +0 exactly), so
    n = Cin/groups + kh*kw. Zero insertion: one GEMM of K = Cin/groups*kh*kw, n = K + 1."""
    cin_g, taps = p["in_channels"] // p["groups"], p["kernel"][0] * p["kernel"][1]
    n = cin_g * taps + 1 if zero_insertion else cin_g + taps
    return gamma(n) * tconv2d_direct(np.abs(x), np.abs(w), p)


# ------------------------------------------------------------------ the workload

class Tconv2d(ArrayLayer):
    kind = "tconv2d"
    description = "transposed convolution: a GEMM per kernel element + strided scatter, vs zero insertion"
    keys = {**LAYER_KEYS,
            "output_padding": Key("pair", default=0, minimum=0, help="< stride or < dilation")}

    def check(self, p, array):
        problems = []
        for key in ("in_channels", "out_channels"):
            if p[key] % p.groups:
                problems.append(("groups", f"{key} = {p[key]} is not divisible by groups = {p.groups}"))
        for i, axis in enumerate(("height", "width")):
            op = p.output_padding[i]
            if op >= p.stride[i] and op >= p.dilation[i]:
                problems.append(("output_padding", f"{op} ({axis}) must be smaller than stride "
                                 f"{p.stride[i]} or dilation {p.dilation[i]}"))
        if not problems:
            ho, wo = output_shape(p)
            if ho < 1 or wo < 1:
                problems.append(("padding", f"too large: the output would be {ho}x{wo}"))
            elif array.dtype == "int8":
                terms = p.in_channels // p.groups * p.kernel[0] * p.kernel[1]
                if terms > INT8_MAX_K:
                    problems.append(("in_channels", "int8 accumulates in int32: in_channels/groups * "
                                     f"kh * kw must be <= {INT8_MAX_K}, got {terms}"))
        return problems

    def working_set(self, p, array, numerics):
        if not numerics:
            return 0
        ho, wo = output_shape(p)
        x = p.batch * p.in_channels * p.height * p.width
        out = p.batch * p.out_channels * ho * wo
        # the kernel's products of one element, the output, and the float64 reference's
        # output, bound and one element's contribution
        return (array.operand_bytes + 8) * x + 4 * out + 8 * 4 * out + 8 * p.batch * p.height * p.width * p.out_channels

    def plan(self, p, array):
        parts = [gemm_cycles(array, m, k, n) for m, k, n in element_gemms(p)]
        metrics = add_cycles(parts, array)  # no parts: no input pixel reaches the output
        zp = zero_insertion_params(p)
        zm, zk, zn = conv2d.gemm_dims(zp)
        baseline = add_cycles([gemm_cycles(array, zm, zk, zn)] * p.groups, array)
        ho, wo = output_shape(p)
        metrics.update({
            "output_height": ho,
            "output_width": wo,
            "gemms": len(parts),
            "macs_zero_insertion": baseline["macs"],
            "mac_saving": baseline["macs"] / metrics["macs"] if metrics["macs"] else None,
            "cycles_zero_insertion": baseline["cycles"],
            "utilization_zero_insertion": baseline["utilization"],
            "speedup": baseline["cycles"] / metrics["cycles"] if metrics["cycles"] else None,
        })
        metrics.update(memory_metrics(array, element_gemms(p), metrics))
        return ArrayPlan.of(metrics, array)

    def weight_shape(self, p):
        return (p.in_channels, p.out_channels // p.groups, *p.kernel)

    layer = staticmethod(tconv2d_strided)

    def validate(self, run: Run, output) -> Validation:
        x, w, p, array = run.inputs.x, run.inputs.w, run.params, run.array

        def emulated_bits():  # the emulator's per-element GEMMs, scattered by numpy in the same order
            return strided_by_numpy(x, w, p, lambda a, b: emulate(a, b, array)[0]).tobytes() == output.tobytes()
        return check_layer(output, tconv2d_direct(x, w, p), lambda: error_bound(x, w, p), array,
                           "direct scatter", emulated_bits if run.plan.emulate else None)

    def plots(self, cases):
        return tconv_plot(cases)


def tconv_plot(cases: list[dict]) -> list:
    from ..plots import Plot, first_number, grouped_bars, new_figure, short_label

    rows = []
    for case in cases:
        m = case["metrics"]
        strided, zeros = first_number(m, ("macs",)), first_number(m, ("macs_zero_insertion",))
        if strided is not None and zeros is not None:
            rows.append((short_label(case, drop_array=False), strided, zeros,
                         first_number(m, ("cycles",)), first_number(m, ("cycles_zero_insertion",))))
    if not rows:
        return []
    labels = [r[0] for r in rows]
    with_cycles = all(r[3] is not None and r[4] is not None for r in rows)
    fig, axes = new_figure(max(7.0, 0.45 * len(rows) + 3), 8.0 if with_cycles else 4.5,
                           rows=2 if with_cycles else 1, sharex=True)
    grouped_bars(axes[0][0], labels, {"strided tiling": [r[1] for r in rows],
                                      "zero insertion": [r[2] for r in rows]}, log="auto")
    axes[0][0].set_ylabel("MACs")
    if with_cycles:
        grouped_bars(axes[1][0], labels, {"strided tiling": [r[3] for r in rows],
                                          "zero insertion": [r[4] for r in rows]}, log="auto")
        axes[1][0].set_ylabel("cycles")
    fig.suptitle("tconv2d: strided tiling vs zero insertion")
    return [Plot("tconv", "tconv2d: strided vs zero-insertion MACs",
                 "MACs (and array cycles) of strided tiling per kernel element against zero insertion.", fig)]


WORKLOAD = Tconv2d()
