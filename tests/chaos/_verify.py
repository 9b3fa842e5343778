"""The comparison: what reached Redis (channel messages and late-joiner keys) against the
reference's final bars. Per series, bars must arrive in open-time order, except gap repairs:
after an outage of the feed (a restart of fxcm_session) the minutes tick aggregation saw only
partly come from history, necessarily after the tick bars that followed them.

And timeliness (``timeliness``): every expected final bar by its arrival time at the
subscriber, against the pipeline clock as the runner sampled it. A 1m bar is due within
``close_grace_ms`` of data time after its end (when the clock passed it), plus 2 s; a derived
bar within 1 s of the arrival of its last minute. Repairs have no excuse: a late history or
derived bar is late. Only the deliberate outages of the whole output move a deadline: a Redis
outage (to 1 s after Redis answers again, then 2 s) and a stalled aggregator (to the end of
its backlog's drain, then 2 s)."""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from protocol.market import MINUTE_MS, SOURCE_HISTORY, SOURCE_TICK, TF_MS, Bar, wire_source

HISTORY_SOURCE = wire_source(SOURCE_HISTORY)  # "stream"
AGGREGATED_SOURCE = wire_source(SOURCE_TICK)  # "tick_agg"

Key = tuple[str, str, int]
_FIELDS = ("open", "high", "low", "close", "volume", "tick_count", "synthetic", "close_time")


def same(bar: Bar, got: dict[str, Any]) -> bool:
    want = bar.to_contract()
    for name in _FIELDS:
        a, b = want[name], got.get(name)
        if isinstance(a, float) or isinstance(b, float):
            if not isinstance(b, (int, float)) or not math.isclose(a, b, rel_tol=1e-12):
                return False
        elif a != b:
            return False
    return True


@dataclass
class Comparison:
    expected: int = 0
    received_finals: int = 0  # complete bars on the channel, every occurrence
    missing: list[Key] = field(default_factory=list)
    duplicates: dict[Key, int] = field(default_factory=dict)  # extra identical occurrences
    mismatched: list[tuple[Key, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    out_of_order: list[tuple[str, str, int, int]] = field(default_factory=list)
    # Late by nature, not out of order: a gap repair (a history bar, or a derived bar rebuilt
    # over a repaired minute) arrives after the tick bars that followed the gap.
    repaired_late: int = 0
    extra_head: int = 0  # before the first final minute (the partial first minute, history)
    extra_tail: int = 0  # after the file's newest final minute (closed by the running clock)
    extra_other: list[Key] = field(default_factory=list)
    previews: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    key_missing: list[Key] = field(default_factory=list)
    key_mismatched: list[Key] = field(default_factory=list)
    key_duplicates: list[Key] = field(default_factory=list)
    key_checked: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.missing or self.duplicates or self.mismatched or self.out_of_order
                    or self.extra_other or self.key_missing or self.key_mismatched
                    or self.key_duplicates)


def compare(expected: dict[Key, Bar], payloads: list[dict[str, Any]],
            keys: dict[tuple[str, str], list[tuple[float, str]]], last_bars: int
            ) -> Comparison:
    result = Comparison(expected=len(expected))
    # Per symbol, the first and newest final minute of the reference: a bar outside them is a
    # legitimate extra (the partial first minute repaired from history and the derived bars
    # holding it; minutes the running clock closed after the file's end), not a failure.
    first_minute: dict[str, int] = {}
    last_minute: dict[str, int] = {}
    for symbol, tf, open_time in expected:
        if tf == "1m":
            first_minute[symbol] = min(first_minute.get(symbol, open_time), open_time)
            last_minute[symbol] = max(last_minute.get(symbol, open_time), open_time)
    seen: dict[Key, dict[str, Any]] = {}
    order: dict[tuple[str, str], int] = defaultdict(lambda: -1)
    repaired = _repaired_minutes(payloads)
    for payload in payloads:
        symbol, tf = str(payload.get("symbol")), str(payload.get("tf"))
        source = str(payload.get("source"))
        for bar in payload.get("bars", []):
            if not bar.get("complete"):
                result.previews += 1
                continue
            result.received_finals += 1
            result.sources[source] = result.sources.get(source, 0) + 1
            key = (symbol, tf, int(bar["open_time"]))
            want = expected.get(key)
            if want is None:
                if symbol in first_minute and key[2] < first_minute[symbol]:
                    result.extra_head += 1
                elif (symbol in last_minute
                      and key[2] + TF_MS[tf] > last_minute[symbol] + MINUTE_MS):
                    result.extra_tail += 1
                elif key not in result.extra_other:
                    result.extra_other.append(key)
                continue
            if key in seen:
                if same(want, bar):
                    result.duplicates[key] = result.duplicates.get(key, 0) + 1
                else:
                    result.mismatched.append((key, want.to_contract(), bar))
                continue
            seen[key] = bar
            if not same(want, bar):
                result.mismatched.append((key, want.to_contract(), bar))
            if key[2] <= order[(symbol, tf)]:
                if _fills_gap(repaired.get(symbol, ()), tf, key[2], source):
                    result.repaired_late += 1
                else:
                    result.out_of_order.append((symbol, tf, order[(symbol, tf)], key[2]))
            order[(symbol, tf)] = max(order[(symbol, tf)], key[2])
    result.missing = sorted(key for key in expected if key not in seen)
    # The late-joiner keys: the newest ``last_bars`` finals per series, one member per
    # open_time, identical values.
    by_series: dict[tuple[str, str], list[Key]] = defaultdict(list)
    for key in sorted(expected):
        by_series[(key[0], key[1])].append(key)
    for series, wanted in by_series.items():
        members: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for score, text in keys.get(series, []):
            members[int(score)].append(json.loads(text))
        # Bars after the file's newest final (the clock-closed tail) push older ones out of the
        # key once it holds ``last_bars``: check only what must still be there.
        kept = sorted(set(k[2] for k in wanted) | set(members))[-last_bars:]
        for key in wanted:
            if key[2] not in kept:
                continue
            result.key_checked += 1
            found = members.get(key[2], [])
            if not found:
                result.key_missing.append(key)
            elif len(found) > 1:
                result.key_duplicates.append(key)
            elif not same(expected[key], found[0]):
                result.key_mismatched.append(key)
    return result


@dataclass
class Timeliness:
    checked: int = 0
    late: list[tuple[Key, float]] = field(default_factory=list)  # (key, seconds past due)
    excused: int = 0  # deadlines moved by a Redis outage or the stall
    unknown: int = 0  # the clock never passed the bucket's end (the replay's last minute)
    # "1m": arrival - when the clock passed the bucket's end; "derived": arrival - arrival of
    # its last minute (bars whose deadline an outage moved are not in here)
    lateness: dict[str, list[float]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.late)

    def percentile(self, group: str, fraction: float) -> float | None:
        values = sorted(self.lateness.get(group, []))
        if not values:
            return None
        return values[min(len(values) - 1, max(0, round(fraction * len(values)) - 1))]


def timeliness(expected: dict[Key, Bar], messages: list[tuple[float, dict[str, Any]]],
               clock: list[tuple[float, int]], grace_ms: int,
               outages: list[tuple[float, float]]) -> Timeliness:
    """``messages``: (arrival, ohlcv payload) in arrival order (monotonic seconds);
    ``clock``: (monotonic, pipeline clock ms) samples, ascending; ``outages``: (start, end)
    windows whose deadlines move to ``end + 2 s``."""
    result = Timeliness()
    arrival: dict[Key, float] = {}
    for arrived, payload in messages:
        for bar in payload.get("bars", []):
            if bar.get("complete"):
                key = (str(payload.get("symbol")), str(payload.get("tf")),
                       int(bar["open_time"]))
                arrival.setdefault(key, arrived)
    clock_ms = [sample[1] for sample in clock]
    minutes: dict[str, list[int]] = defaultdict(list)
    for symbol, tf, open_time in expected:
        if tf == "1m":
            minutes[symbol].append(open_time)
    for values in minutes.values():
        values.sort()

    def when(data_ms: int) -> float | None:
        index = bisect.bisect_left(clock_ms, data_ms)
        return clock[index][0] if index < len(clock) else None

    for key in sorted(expected):
        symbol, tf, open_time = key
        got = arrival.get(key)
        if got is None:
            continue  # missing: the comparison reports it
        due: float | None = None
        since: float | None = None  # the bucket's end (1m) or its last minute's arrival
        if tf != "1m":
            inside = minutes[symbol]
            last = bisect.bisect_left(inside, open_time + TF_MS[tf]) - 1
            if last >= 0 and inside[last] >= open_time:
                since = arrival.get((symbol, "1m", inside[last]))
                due = since + 1.0 if since is not None else None
        if due is None:
            ended = when(open_time + (MINUTE_MS if tf == "1m" else TF_MS[tf]))
            passed = when(open_time + (MINUTE_MS if tf == "1m" else TF_MS[tf]) + grace_ms)
            since = ended
            due = passed + (2.0 if tf == "1m" else 3.0) if passed is not None else None
        if due is None or since is None:
            result.unknown += 1
            continue
        excused = False
        for start, end in outages:
            if start <= due <= end + 2.0:
                due = max(due, end + 2.0)
                excused = True
        result.checked += 1
        if excused:
            result.excused += 1
        else:
            result.lateness.setdefault("1m" if tf == "1m" else "derived", []).append(
                got - since)
        if got > due:
            result.late.append((key, round(got - due, 3)))
    return result


def _repaired_minutes(payloads: list[dict[str, Any]]) -> dict[str, set[int]]:
    """Per symbol, the 1m minutes whose final came from history (gap repair, warmup): on the
    wire, source ``stream`` (seed 001 section 1.1; tick aggregation is ``tick_agg``)."""
    result: dict[str, set[int]] = defaultdict(set)
    for payload in payloads:
        if payload.get("source") != HISTORY_SOURCE or payload.get("tf") != "1m":
            continue
        for bar in payload.get("bars", []):
            if bar.get("complete"):
                result[str(payload.get("symbol"))].add(int(bar["open_time"]))
    return result


def _fills_gap(repaired: Any, tf: str, open_time: int, source: str) -> bool:
    """A late bar that is a repair: from history, or derived (``tick_agg`` above 1m) over a
    minute history repaired (4h and 1d buckets end earlier at a trading-day boundary; the
    nominal span only widens the window, and neither is checked against the reference here)."""
    if source == HISTORY_SOURCE:
        return True
    return (source == AGGREGATED_SOURCE and tf != "1m"
            and any(open_time <= minute < open_time + TF_MS[tf] for minute in repaired))
