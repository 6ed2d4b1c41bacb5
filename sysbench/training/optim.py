"""Stochastic gradient descent, in place, in a fixed order (layer by layer, then by name)."""
from __future__ import annotations


class SGD:
    """p -= lr * (g + weight_decay * p), with optional momentum (PyTorch's formulation:
    v = momentum * v + g; p -= lr * v)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: dict = {}

    def workspace(self, layers) -> int:
        """Bytes of the temporaries step() allocates at once (lr * g of the largest tensor,
        and g + weight_decay * p with weight decay)."""
        largest = max((p.nbytes for layer in layers for p in layer.params.values()), default=0)
        return largest * (2 if self.weight_decay else 1)

    def step(self, layers, grads: list[dict]) -> None:
        """Update every layer's params from grads[i] (the dict layer i's backward returned)."""
        for i, layer in enumerate(layers):
            for name, p in layer.params.items():
                g = grads[i][name]
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
                p -= p.dtype.type(self.lr) * g


def blas_threads(threads: int):
    """Context manager limiting numpy's BLAS to `threads` (how --threads reaches numpy)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")
