"""What history must fill, and which derived bars history_poller builds: pure bookkeeping.

tick_aggregator says in a ``BarGap`` which minutes it will not emit (a fresh start, a lost
session) and so which derived bars it will not build: those holding an open minute of the gap.
``GapBook`` keeps

- the gap's open minutes as *due*: each may be fetched once it has ended (its end plus
  ``delay_ms`` on the pipeline clock, so that history has it whole), and
- the derived buckets history_poller *owns*: it builds each as soon as every open minute in it
  is stored or known empty, whatever their source (history or tick aggregation).

A fresh start's gap has no beginning (``from_ms`` None): it reaches back to the start of the
longest derived bucket holding its end, and minutes before ``floor_ms`` (the warmup's end) are
left to the warmup. Only what a gap names is owned, so tick aggregation and history never both
build one derived bar.
"""

from __future__ import annotations

from typing import Any

from protocol.bars import bucket_end, bucket_start
from protocol.market import MINUTE_MS, BarGap

Bucket = tuple[str, int]  # (tf, open_time)


class GapBook:
    def __init__(self, derived_tfs: list[str], calendar: Any, delay_ms: int) -> None:
        self.derived_tfs = list(derived_tfs)
        self.calendar = calendar
        self.delay_ms = delay_ms
        self.owned: dict[str, dict[Bucket, int]] = {}  # symbol -> {(tf, start): end}
        self.due: dict[str, dict[int, int]] = {}  # symbol -> {minute: due at (clock ms)}

    def add(self, gap: BarGap, floor_ms: int) -> tuple[int, int]:
        """Take a notice; returns (minutes now due, derived buckets now owned)."""
        symbol = gap.symbol
        low = gap.from_ms if gap.from_ms is not None else self.reach_back(gap.to_ms)
        owned = self.own(symbol, low, gap.to_ms)
        first = low if gap.from_ms is not None else max(low, floor_ms)
        due = self.due.setdefault(symbol, {})
        count = 0
        for minute in self.calendar.open_minutes(first, gap.to_ms, symbol):
            at = minute + MINUTE_MS + self.delay_ms
            if due.get(minute, at + 1) > at:
                due[minute] = at
            count += 1
        return count, owned

    def own(self, symbol: str, low: int, high: int) -> int:
        """Take over the derived buckets holding an open minute of ``[low, high)``; returns
        how many were new. (A restarted history_poller also takes the buckets in progress at
        its start: whatever gaps it was told of before are forgotten, and a bucket built by
        both is one identical final.)"""
        owned = self.owned.setdefault(symbol, {})
        before = len(owned)
        for tf in self.derived_tfs:
            start = bucket_start(low, tf, self.calendar.trading_day_start)
            while start < high:
                end = bucket_end(start, tf, self.calendar.next_trading_day_start)
                if self.calendar.count_open_minutes(max(start, low), min(end, high), symbol):
                    owned[(tf, start)] = end
                start = end
        return len(owned) - before

    def queue(self, symbol: str, minutes: list[int], settle_ms: int) -> None:
        """Make ``minutes`` due ``settle_ms`` after their end (for those that may still come
        from tick aggregation: whatever is stored by then is not fetched)."""
        due = self.due.setdefault(symbol, {})
        for minute in minutes:
            at = minute + MINUTE_MS + settle_ms
            if due.get(minute, at + 1) > at:
                due[minute] = at

    def reach_back(self, to_ms: int) -> int:
        """Where a gap without a beginning starts: the longest derived bucket holding the
        minute before ``to_ms`` (just that minute without derived timeframes)."""
        last = to_ms - MINUTE_MS
        if not self.derived_tfs:
            return last
        return min(bucket_start(last, tf, self.calendar.trading_day_start)
                   for tf in self.derived_tfs)

    def pop_due(self, symbol: str, now_ms: int) -> list[int]:
        """The due minutes of ``symbol`` whose time has come, ascending; forgotten here."""
        due = self.due.get(symbol)
        if not due:
            return []
        ready = sorted(minute for minute, at in due.items() if at <= now_ms)
        for minute in ready:
            del due[minute]
        return ready

    def symbols_due(self, now_ms: int) -> list[str]:
        return [symbol for symbol, due in self.due.items()
                if due and min(due.values()) <= now_ms]

    def owned_holding(self, symbol: str, minute: int) -> list[tuple[str, int, int]]:
        """The owned buckets ``(tf, start, end)`` that hold ``minute``."""
        owned = self.owned.get(symbol)
        if not owned:
            return []
        result = []
        for tf in self.derived_tfs:
            start = bucket_start(minute, tf, self.calendar.trading_day_start)
            end = owned.get((tf, start))
            if end is not None:
                result.append((tf, start, end))
        return result

    def owned_within(self, symbol: str, start_ms: int, end_ms: int
                     ) -> list[tuple[str, int, int]]:
        """The owned buckets ``(tf, start, end)`` that overlap ``[start_ms, end_ms)``."""
        return [(tf, start, end) for (tf, start), end in self.owned.get(symbol, {}).items()
                if start < end_ms and end > start_ms]

    def release(self, symbol: str, tf: str, start: int) -> None:
        self.owned.get(symbol, {}).pop((tf, start), None)

    def prune(self, now_ms: int, keep_ms: int) -> int:
        """Forget owned buckets that ended more than ``keep_ms`` ago (never completed: the
        data stopped); returns how many."""
        dropped = 0
        for owned in self.owned.values():
            for key in [key for key, end in owned.items() if end < now_ms - keep_ms]:
                del owned[key]
                dropped += 1
        return dropped

    def status(self, now_ms: int) -> dict[str, Any]:
        """Owned buckets and due minutes per symbol: ``due`` those whose time has come (the
        next clock hands them to a job), ``waiting`` those the clock has yet to reach (a
        stopped clock, at a replay's end, never does)."""
        due: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for symbol, minutes in self.due.items():
            for at in minutes.values():
                counts = due if at <= now_ms else waiting
                counts[symbol] = counts.get(symbol, 0) + 1
        return {"owned": {symbol: len(owned) for symbol, owned in self.owned.items() if owned},
                "due": due, "waiting": waiting}
