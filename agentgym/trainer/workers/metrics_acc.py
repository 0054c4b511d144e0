"""Weighted metric sums that combine correctly across micro-batches, mini-batches and ranks."""

from __future__ import annotations

from collections import defaultdict


class MetricSums:
    """name -> (weighted sum, weight); `mean()` gives the weighted mean. Plain floats so it pickles through Ray."""

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(self, name: str, value: float, weight: float = 1.0) -> None:
        entry = self.sums[name]
        entry[0] += float(value) * weight
        entry[1] += weight

    def merge(self, other: "MetricSums | dict[str, list[float]]") -> "MetricSums":
        items = other.sums.items() if isinstance(other, MetricSums) else other.items()
        for name, (total, weight) in items:
            entry = self.sums[name]
            entry[0] += total
            entry[1] += weight
        return self

    def export(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.sums.items()}

    def mean(self) -> dict[str, float]:
        return {k: (t / w if w else 0.0) for k, (t, w) in self.sums.items()}
