"""Weighted metric sums that combine correctly across micro-batches, mini-batches and ranks."""

from __future__ import annotations

from collections import defaultdict

import torch


class MetricSums:
    """name -> (weighted sum, weight); `mean()` gives the weighted mean. Exported as plain floats (pickles through
    Ray).

    Device tensors can be added with `add_device` without a host sync: each `float(tensor)` per micro-batch would
    stall the GPU until the host launches the next forward; the pending values are read in one transfer on
    `flush` (called by `export` and `mean`, or before anything that syncs anyway).
    """

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._pending: list[tuple[str, torch.Tensor, torch.Tensor | float | None]] = []  # None: sum only

    def add(self, name: str, value: float, weight: float = 1.0) -> None:
        entry = self.sums[name]
        entry[0] += float(value) * weight
        entry[1] += weight

    def add_device(self, name: str, value: torch.Tensor, weight: torch.Tensor | float = 1.0) -> None:
        """Like `add` for a scalar tensor (and weight)."""
        self._pending.append((name, value.detach(), weight.detach() if isinstance(weight, torch.Tensor) else weight))

    def add_device_sum(self, name: str, value: torch.Tensor) -> None:
        """Adds a scalar tensor to the sum only (the caller adds the weight, e.g. once per mini-batch)."""
        self._pending.append((name, value.detach(), None))

    def flush(self) -> None:
        if not self._pending:
            return
        device = self._pending[0][1].device
        rows = [torch.stack([v.reshape(()).float(),
                             torch.as_tensor(0.0 if w is None else w, dtype=torch.float32, device=device).reshape(())])
                for _, v, w in self._pending]
        values = torch.stack(rows).tolist()
        for (name, _, w), (value, weight) in zip(self._pending, values):
            entry = self.sums[name]
            entry[0] += value if w is None else value * weight
            entry[1] += weight
        self._pending.clear()

    def merge(self, other: "MetricSums | dict[str, list[float]]") -> "MetricSums":
        if isinstance(other, MetricSums):
            other.flush()
        items = other.sums.items() if isinstance(other, MetricSums) else other.items()
        for name, (total, weight) in items:
            entry = self.sums[name]
            entry[0] += total
            entry[1] += weight
        return self

    def export(self) -> dict[str, list[float]]:
        self.flush()
        return {k: list(v) for k, v in self.sums.items()}

    def mean(self) -> dict[str, float]:
        self.flush()
        return {k: (t / w if w else 0.0) for k, (t, w) in self.sums.items()}
