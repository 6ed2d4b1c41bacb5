"""conv2d: a convolution layer as im2col GEMMs on the systolic array (one per group).

Layout NCHW, weights (out_channels, in_channels/groups, kh, kw) and output sizes as in
PyTorch. The im2col reduction index runs over (in_channel, kernel row, kernel column),
which is PyTorch's weight flattening, so that is the array's accumulation order.
"""
from __future__ import annotations

import numpy as np

from ..models.memory import conv_geometry, memory_metrics
from ..models.systolic import add_cycles, gemm_cycles, gemm_cycles_table, repeat_table
from ..numerics import gamma
from ._array import (INT8_MAX_K, LAYER_KEYS, ArrayLayer, ArrayPlan, array_gemm, check_layer, emulator_matches,
                     operand_bytes)
from .base import Run, Validation


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """PyTorch: floor((size + 2p - d(k-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_shape(p: dict) -> tuple[int, int]:
    return tuple(out_size(p[d], p["kernel"][i], p["stride"][i], p["padding"][i], p["dilation"][i])
                 for i, d in enumerate(("height", "width")))


def output_shape_table(p: dict):
    """output_shape over table columns (pairs as (rows, 2) columns)."""
    return tuple(out_size(p[d], p["kernel"][:, i], p["stride"][:, i], p["padding"][:, i], p["dilation"][:, i])
                 for i, d in enumerate(("height", "width")))


def gemm_dims(p: dict) -> tuple[int, int, int]:
    """(M, K, N) of each group's GEMM."""
    ho, wo = output_shape(p)
    kh, kw = p["kernel"]
    return p["batch"] * ho * wo, kh * kw * p["in_channels"] // p["groups"], p["out_channels"] // p["groups"]


def im2col(xp: np.ndarray, group: int, p: dict) -> np.ndarray:
    """Columns (batch*Ho*Wo, cin_g*kh*kw) of padded input `xp` for one group."""
    batch = xp.shape[0]
    cin_g = p["in_channels"] // p["groups"]
    (kh, kw), (sh, sw), (dh, dw) = p["kernel"], p["stride"], p["dilation"]
    ho, wo = output_shape(p)
    x = xp[:, group * cin_g:(group + 1) * cin_g]
    cols = np.empty((batch, ho, wo, cin_g, kh, kw), dtype=xp.dtype)
    for r in range(kh):
        for s in range(kw):
            window = x[:, :, r * dh: r * dh + sh * (ho - 1) + 1: sh, s * dw: s * dw + sw * (wo - 1) + 1: sw]
            cols[:, :, :, :, r, s] = window.transpose(0, 2, 3, 1)
    return cols.reshape(batch * ho * wo, cin_g * kh * kw)


def group_weights(w: np.ndarray, group: int, groups: int) -> np.ndarray:
    """(K, N) weight matrix of one group."""
    cout_g = w.shape[0] // groups
    return np.ascontiguousarray(w[group * cout_g:(group + 1) * cout_g].reshape(cout_g, -1).T)


def pad(x: np.ndarray, padding) -> np.ndarray:
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x


def conv2d_array(x: np.ndarray, w: np.ndarray, p: dict, array, threads: int = 1) -> np.ndarray:
    """The layer on the array: im2col, one array GEMM per group, back to NCHW."""
    xp = pad(x, p["padding"])
    ho, wo = output_shape(p)
    groups = p["groups"]
    cout_g = p["out_channels"] // groups
    out = np.empty((x.shape[0], p["out_channels"], ho, wo),
                   dtype=np.int32 if array.dtype == "int8" else np.float32)
    for g in range(groups):
        y = array_gemm(im2col(xp, g, p), group_weights(w, g, groups), array, threads)
        out[:, g * cout_g:(g + 1) * cout_g] = y.reshape(x.shape[0], ho, wo, cout_g).transpose(0, 3, 1, 2)
    return out


def conv2d_direct(x: np.ndarray, w: np.ndarray, p: dict) -> np.ndarray:
    """Reference in float64 straight from the definition, one kernel tap at a time."""
    xp = pad(x.astype(np.float64), p["padding"])
    w = w.astype(np.float64)
    (kh, kw), (sh, sw), (dh, dw) = p["kernel"], p["stride"], p["dilation"]
    ho, wo = output_shape(p)
    groups = p["groups"]
    cin_g, cout_g = p["in_channels"] // groups, p["out_channels"] // groups
    out = np.zeros((x.shape[0], p["out_channels"], ho, wo))
    for g in range(groups):
        xg = xp[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cout_g:(g + 1) * cout_g]
        for r in range(kh):
            for s in range(kw):
                tap = xg[:, :, r * dh: r * dh + sh * (ho - 1) + 1: sh, s * dw: s * dw + sw * (wo - 1) + 1: sw]
                out[:, g * cout_g:(g + 1) * cout_g] += np.einsum("bchw,oc->bohw", tap, wg[:, :, r, s])
    return out


class Conv2d(ArrayLayer):
    kind = "conv2d"
    description = "a convolution layer as im2col GEMMs per group (depthwise included) on the array"
    network_layer = True
    keys = dict(LAYER_KEYS)

    def check(self, p, array):
        problems = []
        for key in ("in_channels", "out_channels"):
            if p[key] % p.groups:
                problems.append(("groups", f"{key} = {p[key]} is not divisible by groups = {p.groups}"))
        if not problems:
            ho, wo = output_shape(p)
            if ho < 1 or wo < 1:
                problems.append(("kernel", "the dilated kernel does not fit the padded input: "
                                           f"output would be {ho}x{wo}"))
            elif array.dtype == "int8" and gemm_dims(p)[1] > INT8_MAX_K:
                problems.append(("in_channels", f"int8 accumulates in int32: the reduction must be <= {INT8_MAX_K}"))
        return problems

    def working_set(self, p, array, numerics):
        if not numerics:
            return 0
        m, k, n = gemm_dims(p)
        # one group's im2col and GEMM at a time; the float64 direct reference holds the
        # padded input, the output and its bound
        padded = p.batch * p.in_channels * (p.height + 2 * p.padding[0]) * (p.width + 2 * p.padding[1])
        return operand_bytes(array, m, k, n) + 8 * 3 * (padded + m * n * p.groups)

    def plan(self, p, array):
        m, k, n = gemm_dims(p)
        metrics = add_cycles([gemm_cycles(array, m, k, n)] * p.groups, array)
        ho, wo = output_shape(p)
        metrics.update({"output_height": ho, "output_width": wo, "gemm_m": m, "gemm_k": k, "gemm_n": n,
                        "groups": p.groups})
        metrics.update(memory_metrics(array, [(m, k, n)] * p.groups, metrics, conv=conv_geometry(p)))
        return ArrayPlan.of(metrics, array)

    def weight_shape(self, p):
        return (p.out_channels, p.in_channels // p.groups, *p.kernel)

    def model_table(self, p, arrays):
        ho, wo = output_shape_table(p)
        groups = p["groups"]
        m = p["batch"] * ho * wo
        k = p["kernel"][:, 0] * p["kernel"][:, 1] * p["in_channels"] // groups
        n = p["out_channels"] // groups
        metrics = repeat_table(gemm_cycles_table(arrays, m, k, n), groups, arrays)
        metrics.update({"output_height": ho, "output_width": wo, "gemm_m": m, "gemm_k": k, "gemm_n": n,
                        "groups": groups})
        return metrics

    def check_table(self, p, arrays):
        """check() per row, vectorised; the first problem of each bad row, as check() words it."""
        problems = {}
        for key in ("in_channels", "out_channels"):
            for i in np.flatnonzero(p[key] % p["groups"]):
                problems.setdefault(int(i), ("groups", f"{key} = {p[key][i]} is not divisible by groups = "
                                                       f"{p['groups'][i]}"))
        ho, wo = output_shape_table(p)
        for i in np.flatnonzero((ho < 1) | (wo < 1)):
            problems.setdefault(int(i), ("kernel", "the dilated kernel does not fit the padded input: "
                                                   f"output would be {ho[i]}x{wo[i]}"))
        reduction = p["kernel"][:, 0] * p["kernel"][:, 1] * p["in_channels"] // p["groups"]
        for i in np.flatnonzero(arrays["int8"] & (reduction > INT8_MAX_K)):
            problems.setdefault(int(i), ("in_channels",
                                         f"int8 accumulates in int32: the reduction must be <= {INT8_MAX_K}"))
        return [(i, key, message) for i, (key, message) in sorted(problems.items())]

    layer = staticmethod(conv2d_array)

    def validate(self, run: Run, output) -> Validation:
        x, w, p, array = run.inputs.x, run.inputs.w, run.params, run.array

        def emulated_bits():
            xp, cout_g = pad(x, p.padding), p.out_channels // p.groups
            return all(emulator_matches(im2col(xp, g, p), group_weights(w, g, p.groups),
                                        np.ascontiguousarray(output[:, g * cout_g:(g + 1) * cout_g]
                                                             .transpose(0, 2, 3, 1).reshape(-1, cout_g)), array)
                       for g in range(p.groups))
        return check_layer(output, conv2d_direct(x, w, p),
                           lambda: gamma(gemm_dims(p)[1] + 1) * conv2d_direct(np.abs(x), np.abs(w), p),
                           array, "direct conv", emulated_bits if run.plan.emulate else None)


WORKLOAD = Conv2d()
