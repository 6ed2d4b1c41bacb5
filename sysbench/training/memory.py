"""One memory tracker that every training buffer goes through.

Buffers are counted by category:
    param        weights and biases (held for the whole run)
    weight_grad  weight and bias gradients (from a layer's backward to the optimizer step)
    activation   layer outputs that a schedule keeps (or holds while the next layer runs)
    gradient     the gradient flowing backward (d loss / d activation)
    workspace    a layer's transient buffers while its forward or backward runs
"Activation memory" is activation + gradient: what a schedule decides and what a memory
budget limits. Workspace is the CPU engine's scratch inside one operation (im2col columns,
masks), which an accelerator streams instead of storing; it is tracked and counted in the
total, not in the budget. "Total" is everything: params, weight gradients, activations,
gradients and workspace.

Every add/remove appends a point to the time series, so a run's memory over time can be
plotted: (event number, label, activation bytes, total bytes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

CATEGORIES = ("param", "weight_grad", "activation", "gradient", "workspace")
ACTIVATION_CATEGORIES = ("activation", "gradient")


@dataclass
class MemoryTracker:
    record_series: bool = True
    current: dict = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    peak_activation: int = 0
    peak_total: int = 0
    peak_workspace: int = 0
    series: list = field(default_factory=list)
    _live: dict = field(default_factory=dict)
    _next: int = 0

    @property
    def activation_bytes(self) -> int:
        return sum(self.current[c] for c in ACTIVATION_CATEGORIES)

    @property
    def total_bytes(self) -> int:
        return sum(self.current.values())

    def add(self, label: str, nbytes: int, category: str = "activation") -> int:
        """Count a buffer of `nbytes`; returns the handle that remove() takes."""
        if category not in self.current:
            raise ValueError(f"unknown memory category {category!r}; one of {', '.join(CATEGORIES)}")
        handle = self._next
        self._next += 1
        self._live[handle] = (label, int(nbytes), category)
        self.current[category] += int(nbytes)
        self._note(label)
        return handle

    def hold(self, label: str, array, category: str = "activation") -> int:
        """add() for a numpy array (its nbytes)."""
        return self.add(label, array.nbytes, category)

    def remove(self, handle: int) -> None:
        label, nbytes, category = self._live.pop(handle)
        self.current[category] -= nbytes
        self._note("free " + label)

    def live(self, category: str | None = None) -> list[tuple[str, int, str]]:
        return [v for v in self._live.values() if category is None or v[2] == category]

    def reset_peaks(self) -> None:
        """Start a new measurement from what is live now (the series restarts too)."""
        self.peak_activation = self.activation_bytes
        self.peak_total = self.total_bytes
        self.peak_workspace = self.current["workspace"]
        self.series = []

    def _note(self, label: str) -> None:
        act, total = self.activation_bytes, self.total_bytes
        self.peak_activation = max(self.peak_activation, act)
        self.peak_total = max(self.peak_total, total)
        self.peak_workspace = max(self.peak_workspace, self.current["workspace"])
        if self.record_series:
            self.series.append((len(self.series), label, act, total))

    def summary(self) -> dict:
        return {"peak_activation_bytes": self.peak_activation, "peak_total_bytes": self.peak_total,
                "peak_workspace_bytes": self.peak_workspace, "current": dict(self.current)}
