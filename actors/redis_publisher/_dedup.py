"""A bounded memory of recent final bars: re-emitted finals are published once.

One key ``(symbol, tf, open_time)`` has one final (DESIGN.md section 6). ``check`` says whether a
final is new, an identical re-emission (``Bar.same_values``: skip it) or a different final for a
key already published (a conflict: published anyway, because the bar store owns the truth, but
counted and logged loudly). The memory forgets the oldest keys beyond ``capacity``; it is
seeded at start from the late-joiner keys in Redis and from the outage journal, so a restarted
publisher recognises what it already wrote.
"""

from __future__ import annotations

from collections import OrderedDict

from protocol.market import Bar

NEW = "new"
DUPLICATE = "duplicate"
CONFLICT = "conflict"

Key = tuple[str, str, int]


class RecentFinals:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._bars: OrderedDict[Key, Bar] = OrderedDict()

    def __len__(self) -> int:
        return len(self._bars)

    def check(self, bar: Bar) -> tuple[str, Bar | None]:
        """The verdict on a final bar, and the bar it conflicts with (else None). A new or
        conflicting bar is remembered in place of what was known."""
        key = (bar.symbol, bar.tf, bar.open_time)
        known = self._bars.get(key)
        if known is not None:
            if known.same_values(bar):
                return DUPLICATE, None
            self._bars[key] = bar
            return CONFLICT, known
        self.remember(bar)
        return NEW, None

    def remember(self, bar: Bar) -> None:
        """Know ``bar`` as published (seeding), without a verdict."""
        bars = self._bars
        key = (bar.symbol, bar.tf, bar.open_time)
        bars[key] = bar
        bars.move_to_end(key)
        while len(bars) > self.capacity:
            bars.popitem(last=False)

    def forget(self, key: Key) -> None:
        """Undo ``check`` for a bar that was not published after all (it failed its contract),
        so that a corrected re-emission is not taken for a conflict."""
        self._bars.pop(key, None)
