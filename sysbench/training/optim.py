"""Stochastic gradient descent, in place, in a fixed order (layer by layer, then by name)."""
from __future__ import annotations

import numpy as np


class SGD:
    """p -= lr * (g + weight_decay * p), with optional momentum (PyTorch's formulation:
    v = momentum * v + g; p -= lr * v)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: dict = {}

    def workspace(self, layers) -> int:
        """Bytes of the temporaries step() allocates at once: one block of lr * g (and, with
        weight decay, g + weight_decay * p of the largest tensor)."""
        largest = max((p.nbytes for layer in layers for p in layer.params.values()), default=0)
        block = min(largest, SGD_BLOCK * 4)
        return block + (largest if self.weight_decay else 0)

    def step(self, layers, grads: list[dict]) -> None:
        """Update every layer's params from grads[i] (the dict layer i's backward returned)."""
        for i, layer in enumerate(layers):
            self.step_layer(i, layer, grads[i])

    def fused_lr(self):
        """lr when this step is plain p -= lr * g (no momentum, no weight decay), which a
        layer can take itself in the pass that reads p (Layer.fuses_sgd); else None."""
        return None if self.momentum or self.weight_decay else self.lr

    def step_layer(self, i: int, layer, grads: dict, done: tuple = ()) -> None:
        """Update layer i's params from its gradients (each parameter on its own: the
        order of the layers does not change the bits), except those named in `done` (a
        layer's backward stepped them already, fused_lr)."""
        buffer = None
        for name, p in layer.params.items():
            if name in done:
                continue
            g = grads[name]
            if self.weight_decay:
                g = g + p.dtype.type(self.weight_decay) * p
            if self.momentum:
                v = self.velocity.get((i, name))
                if v is None:
                    v = self.velocity[(i, name)] = g.copy()
                else:
                    v *= p.dtype.type(self.momentum)
                    v += g
                g = v
            if buffer is None or buffer.dtype != p.dtype:
                buffer = np.empty(SGD_BLOCK, dtype=p.dtype)
            sgd_update(p, g, self.lr, buffer)


def sgd_update(p: np.ndarray, g: np.ndarray, lr: float, buffer: np.ndarray | None = None) -> None:
    """p -= lr * g in place (lr * g rounded in p's dtype, then the difference), a block at
    a time: the same two roundings per element, without a temporary as large as the
    weights (and while the block is in cache). buffer: SGD_BLOCK elements of p's dtype."""
    if not p.flags.c_contiguous:  # (never for a layer's own params)
        p -= p.dtype.type(lr) * g
        return
    if buffer is None:
        buffer = np.empty(SGD_BLOCK, dtype=p.dtype)
    flat_p, flat_g = p.reshape(-1), np.ascontiguousarray(g).reshape(-1)
    lr = p.dtype.type(lr)
    for start in range(0, flat_p.size, SGD_BLOCK):
        end = min(start + SGD_BLOCK, flat_p.size)
        scaled = buffer[:end - start]
        np.multiply(flat_g[start:end], lr, out=scaled)
        np.subtract(flat_p[start:end], scaled, out=flat_p[start:end])


SGD_BLOCK = 16384  # elements of lr * g at a time (64 KiB of float32: stays in L2)


def blas_threads(threads: int):
    """Context manager limiting numpy's BLAS to `threads` (how --threads reaches numpy)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")
