"""Losses: each computes the loss and its gradient with respect to the network output in one call.

    loss, grad = LOSS.forward_backward(output, target)

`loss` is a Python float (computed in the output's dtype), `grad` has the output's shape.
"""
from __future__ import annotations

import math

import numpy as np


class SoftmaxCrossEntropy:
    """Mean over the batch of -log softmax(logits)[target]; targets are class indices."""

    kind = "cross_entropy"

    def check_target(self, output_shape: tuple, target: np.ndarray) -> None:
        if target.shape != (output_shape[0],) or not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"cross_entropy needs integer class indices of shape ({output_shape[0]},), "
                             f"got {target.dtype} {target.shape}")
        if target.size and (target.min() < 0 or target.max() >= output_shape[1]):
            raise ValueError(f"cross_entropy targets must be in [0, {output_shape[1]})")

    def forward_backward(self, logits: np.ndarray, target: np.ndarray):
        batch = logits.shape[0]
        rows = np.arange(batch)
        grad = logits - logits.max(axis=1, keepdims=True)      # shifted logits
        picked = grad[rows, target].copy()
        np.exp(grad, out=grad)
        total = grad.sum(axis=1)
        loss = float(np.mean(np.log(total) - picked))
        grad /= total[:, None]                                  # softmax
        grad[rows, target] -= grad.dtype.type(1)
        grad /= grad.dtype.type(batch)
        return loss, grad

    def flops(self, shape: tuple) -> int:
        return 5 * math.prod(shape)

    def workspace(self, shape: tuple, itemsize: int) -> int:
        return 4 * shape[0] * itemsize + shape[0] * 8  # max, picked, total, log; row indices


class MSE:
    """Mean over all elements of (output - target)^2."""

    kind = "mse"

    def check_target(self, output_shape: tuple, target: np.ndarray) -> None:
        if target.shape != tuple(output_shape):
            raise ValueError(f"mse needs a target of shape {tuple(output_shape)}, got {target.shape}")

    def forward_backward(self, output: np.ndarray, target: np.ndarray):
        diff = output - target
        loss = float(np.mean(diff * diff))
        diff *= diff.dtype.type(2.0 / diff.size)
        return loss, diff

    def flops(self, shape: tuple) -> int:
        return 4 * math.prod(shape)

    def workspace(self, shape: tuple, itemsize: int) -> int:
        return math.prod(shape) * itemsize  # diff * diff


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "mse": MSE}
