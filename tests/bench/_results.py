"""Result rows of the benchmarks and the table they print as.

A ``Row`` is one measured figure next to its same-run baseline. ``ratio`` is always
``value / baseline``; ``higher_is_better`` says which way the target points (throughput:
``ratio >= target``; latency: ``ratio <= target``).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: float | None = None
    higher_is_better: bool = True
    baseline_name: str = ""  # what the baseline is, e.g. "raw PUSH/PULL inproc + msgpack"
    absolute: bool = False  # the target is for the value itself, not for the ratio

    @property
    def met(self) -> bool | None:
        """Whether the ratio (or the value, for an absolute target) meets the target; None
        when there is no target."""
        measured = self.value if self.absolute else self.ratio
        if self.target is None or measured is None:
            return None
        if self.higher_is_better:
            return measured >= self.target
        return measured <= self.target

    def target_text(self, number: Callable[[float], str]) -> str:
        if self.target is None:
            return ""
        return "{} {}{}".format(">=" if self.higher_is_better else "<=",
                                number(self.target) if self.absolute else
                                "{:.2f}".format(self.target), " " + self.unit
                                if self.absolute else "")

    def as_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["met"] = self.met
        return result


def compare(name: str, value: float, unit: str, baseline: float, *,
            baseline_name: str, target: float | None = None,
            higher_is_better: bool = True, absolute: bool = False) -> Row:
    """A row for ``value`` against ``baseline``, with ``ratio = value / baseline``; the target
    is for the ratio, or for the value when ``absolute``."""
    return Row(name=name, value=value, unit=unit, baseline=baseline,
               ratio=value / baseline if baseline else None, target=target,
               higher_is_better=higher_is_better, baseline_name=baseline_name,
               absolute=absolute)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of unsorted ``values``."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return float(ordered[index])


def _number(value: float | None) -> str:
    if value is None:
        return ""
    magnitude = abs(value)
    if magnitude >= 1000:
        return "{:,.0f}".format(value)
    if magnitude >= 100:
        return "{:.0f}".format(value)
    if magnitude >= 10:
        return "{:.1f}".format(value)
    return "{:.2f}".format(value)


def format_table(rows: Iterable[Row]) -> str:
    """One plain-text table; baselines are named in numbered notes below it."""
    rows = list(rows)
    notes: dict[str, int] = {}
    for row in rows:
        if row.baseline_name and row.baseline_name not in notes:
            notes[row.baseline_name] = len(notes) + 1
    header = ("benchmark", "value", "unit", "baseline", "ratio", "target", "")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        baseline = _number(row.baseline)
        if baseline and row.baseline_name:
            baseline += " [{}]".format(notes[row.baseline_name])
        target = row.target_text(_number)
        met = {None: "", True: "ok", False: "MISS"}[row.met]
        lines.append((row.name, _number(row.value), row.unit, baseline,
                      "" if row.ratio is None else "{:.2f}".format(row.ratio), target, met))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    left = {0, 2}  # text columns; numbers are right-aligned

    def render(line: tuple[str, ...]) -> str:
        cells = [cell.ljust(width) if column in left else cell.rjust(width)
                 for column, (cell, width) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    out = [render(lines[0]), "  ".join("-" * width for width in widths).rstrip()]
    out.extend(render(line) for line in lines[1:])
    if notes:
        out.append("")
        out.append("ratio = value / baseline, both medians of rounds in this run. Baselines:")
        out.extend("  [{}] {}".format(number, name) for name, number in notes.items())
    return "\n".join(out)
