"""Prometheus figures kept as plain numbers and reported in ``status()["metrics"]`` (the
project's convention: the host exports them on ``/metrics``)."""

from __future__ import annotations

from typing import Any


class Family:
    """One metric with fixed label names; samples keyed by label values."""

    __slots__ = ("name", "kind", "help", "labels", "samples")

    def __init__(self, name: str, kind: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.labels = labels
        self.samples: dict[tuple[str, ...], float] = {}

    def inc(self, *values: str, amount: float = 1.0) -> None:
        self.samples[values] = self.samples.get(values, 0.0) + amount

    def set(self, *values: str, value: float) -> None:
        self.samples[values] = float(value)

    def get(self, *values: str) -> float:
        return self.samples.get(values, 0.0)

    def total(self) -> float:
        return sum(self.samples.values())

    def export(self) -> dict[str, Any]:
        samples = self.samples or ({(): 0.0} if not self.labels else {})
        return {"type": self.kind, "help": self.help,
                "samples": [[dict(zip(self.labels, values, strict=True)), value]
                            for values, value in samples.items()]}


class Metrics:
    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def counter(self, name: str, help_text: str, *labels: str) -> Family:
        return self._add(Family(name, "counter", help_text, labels))

    def gauge(self, name: str, help_text: str, *labels: str) -> Family:
        return self._add(Family(name, "gauge", help_text, labels))

    def _add(self, family: Family) -> Family:
        self.families[family.name] = family
        return family

    def export(self) -> dict[str, Any]:
        return {name: family.export() for name, family in self.families.items()}
