"""Market status and the session blocks, from the trading calendar (seed 001 sections 1.2, 9.1).

"The market" here is the union of the configured symbols' markets: open when any of them is
open (EURUSD trades while XAUUSD takes its daily break). Session windows are global
(``calendar.session_at``); where they overlap the one that opened last wins, so the tag moves
Tokyo -> London -> New York.

Pure: every method takes the time (integer ms UTC) and none reads a clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from actors.heartbeat._diagnostic import iso_utc
from config.calendar import DAY_MS, Session, TradingCalendar, local_date

LOOK_BACK_MS = 8 * DAY_MS  # enough to find the last close across a long weekend
LOOK_AHEAD_MS = 22 * DAY_MS  # enough to find the next open across holidays
SESSION_SEARCH_DAYS = 10


def display_name(tag: str) -> str:
    """``NEW_YORK`` -> ``New York`` (the public status's human ``name``)."""
    return " ".join(word.capitalize() for word in tag.replace("-", "_").split("_") if word)


class MarketView:
    """Answers about the union of ``symbols``' markets at a given time."""

    def __init__(self, calendar: TradingCalendar, symbols: Sequence[str],
                 fixed_tag: str | None = None) -> None:
        if not symbols:
            raise ValueError("MarketView needs at least one symbol")
        self.calendar = calendar
        self.symbols = tuple(symbols)
        # FXCM_SESSION_TAG (heartbeat.session_tag) other than AUTO: the tag every session
        # block shows, as the predecessor's operators set it (e.g. LDN_METALS).
        self.fixed_tag = fixed_tag
        self.profile = calendar.profile_for(self.symbols[0])
        self._cache_key: int | None = None
        self._starts: list[int] = []
        self._ends: list[int] = []

    # -- open periods of the union ----------------------------------------------------------

    def _periods(self, now_ms: int) -> tuple[list[int], list[int]]:
        key = now_ms // DAY_MS
        if key != self._cache_key:
            low, high = (key - 1) * DAY_MS - LOOK_BACK_MS, (key + 1) * DAY_MS + LOOK_AHEAD_MS
            periods = sorted(period for symbol in self.symbols
                             for period in self.calendar.open_intervals(low, high, symbol))
            merged: list[list[int]] = []
            for start, end in periods:
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            self._starts = [start for start, _ in merged]
            self._ends = [end for _, end in merged]
            self._cache_key = key
        return self._starts, self._ends

    def is_open(self, now_ms: int) -> bool:
        starts, ends = self._periods(now_ms)
        index = bisect.bisect_right(starts, now_ms) - 1
        return index >= 0 and now_ms < ends[index]

    def next_open(self, now_ms: int) -> int:
        """The first opening strictly after ``now_ms`` (when open: after the current period)."""
        starts, _ = self._periods(now_ms)
        index = bisect.bisect_right(starts, now_ms)
        if index < len(starts):
            return starts[index]
        return min(self.calendar.next_open(now_ms, symbol) for symbol in self.symbols)

    def next_close(self, now_ms: int) -> int:
        """The end of the open period containing ``now_ms``, or of the next one."""
        starts, ends = self._periods(now_ms)
        index = bisect.bisect_right(ends, now_ms)
        if index < len(ends):
            return ends[index]
        return max(self.calendar.next_close(now_ms, symbol) for symbol in self.symbols)

    def last_close(self, now_ms: int) -> int | None:
        """The end of the last open period that ended at or before ``now_ms``."""
        _, ends = self._periods(now_ms)
        index = bisect.bisect_right(ends, now_ms)
        return ends[index - 1] if index > 0 else None

    def open_since(self, now_ms: int) -> int | None:
        """The start of the open period containing ``now_ms`` (None when closed)."""
        starts, ends = self._periods(now_ms)
        index = bisect.bisect_right(starts, now_ms) - 1
        if index >= 0 and now_ms < ends[index]:
            return starts[index]
        return None

    def symbol_open_since(self, symbol: str, now_ms: int) -> int | None:
        """The start of ``symbol``'s own open period containing ``now_ms`` (None if closed)."""
        if not self.calendar.is_open(now_ms, symbol):
            return None
        periods = self.calendar.open_intervals(now_ms - LOOK_BACK_MS, now_ms + 1, symbol)
        return periods[-1][0] if periods else None

    # -- sessions ---------------------------------------------------------------------------

    def session_at(self, t_ms: int) -> Session | None:
        for symbol in self.symbols:
            session = self.calendar.session_at(t_ms, symbol)
            if session is not None:
                return session
        return None

    def next_session(self, now_ms: int) -> tuple[Session, int] | None:
        """The next session to open after ``now_ms`` (other than the current one) and the
        instant it opens: a window's start, or the market's reopening inside a window."""
        current = self.session_at(now_ms)
        horizon = now_ms + SESSION_SEARCH_DAYS * DAY_MS
        candidates = set()
        for entry in self.calendar.session_windows:
            zone = entry.window.zone
            first = local_date(now_ms, zone) - timedelta(days=1)
            for offset in range(SESSION_SEARCH_DAYS + 2):
                start, end = entry.window.occurrence(first + timedelta(days=offset))
                if now_ms < start <= horizon and start < end:
                    candidates.add(start)
        opening = now_ms
        for _ in range(4 * SESSION_SEARCH_DAYS):
            opening = self.next_open(opening)
            if opening > horizon:
                break
            candidates.add(opening)
        for t_ms in sorted(candidates):
            session = self.session_at(t_ms)
            if session is None:
                continue
            if current is not None and (session.tag, session.start_ms) == (
                    current.tag, current.start_ms):
                continue
            return session, t_ms
        return None

    def state_detail(self, now_ms: int) -> str | None:
        """Why the session is closed: ``weekend`` (the market is shut for a day or more),
        ``intrabreak`` (a shorter market break), ``overnight`` (the market is open but no
        session window is); None while a session is open."""
        if self.is_open(now_ms):
            return "overnight" if self.session_at(now_ms) is None else None
        last = self.last_close(now_ms)
        if last is None or self.next_open(now_ms) - last >= DAY_MS:
            return "weekend"
        return "intrabreak"

    # -- payload blocks ---------------------------------------------------------------------

    def calendar_block(self, now_ms: int) -> dict[str, Any]:
        """The session block of heartbeat and market_status (seed 001 section 9.1), without
        ``stats`` (the caller adds them)."""
        current = self.session_at(now_ms)
        upcoming = self.next_session(now_ms)
        shown = current if current is not None else (upcoming[0] if upcoming else None)
        windows = {entry.tag: entry for entry in self.calendar.session_windows}
        next_open = self.next_open(now_ms)
        tag = self.fixed_tag or (shown.tag if shown is not None else None)
        zone = windows[tag].timezone if tag in windows else (
            windows[shown.tag].timezone if shown is not None else None)
        block: dict[str, Any] = {
            "tag": tag,
            "timezone": zone,
            "session_open_utc": iso_utc(shown.start_ms) if shown is not None else None,
            "session_close_utc": iso_utc(shown.end_ms) if shown is not None else None,
            "in_session": current is not None,
            "weekly_open": self.profile.weekly_open.seed_form(),
            "weekly_close": self.profile.weekly_close.seed_form(),
            "daily_breaks": [
                {"start": "{:02d}:{:02d}".format(*divmod(window.start_minute, 60)),
                 "end": "{:02d}:{:02d}".format(*divmod(window.end_minute, 60)),
                 "tz": window.zone.key}
                for window in self.profile.daily_breaks],
            "next_open_utc": iso_utc(next_open),
            "next_open_ms": next_open,
            "next_open_seconds": round((next_open - now_ms) / 1000.0, 3),
        }
        return block

    def public_session(self, now_ms: int, stats: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
        """The ``session`` of the public status (seed 001 section 1.2; the predecessor's closed
        key list), with ``symbols`` (``{symbol, tf, high, low, avg}``) from the ``stats`` of
        the session shown."""
        current = self.session_at(now_ms)
        upcoming = self.next_session(now_ms)
        shown = current if current is not None else (upcoming[0] if upcoming else None)
        tag = self.fixed_tag or (shown.tag if shown is not None else None)
        block: dict[str, Any] = {
            "name": display_name(tag) if tag is not None else None,
            "tag": tag,
            "state": "open" if current is not None else "closed",
            "current_open_utc": iso_utc(current.start_ms) if current is not None else None,
            "current_close_utc": iso_utc(current.end_ms) if current is not None else None,
            "next_open_utc": iso_utc(upcoming[1]) if upcoming is not None else None,
            "seconds_to_close": None,
            "seconds_to_next_open": round((upcoming[1] - now_ms) / 1000.0, 3)
            if upcoming is not None else None,
        }
        if current is not None:
            closes = min(current.end_ms, self.next_close(now_ms))
            block["seconds_to_close"] = round((closes - now_ms) / 1000.0, 3)
        else:
            block["state_detail"] = self.state_detail(now_ms)
        entry = (stats or {}).get(shown.tag) if shown is not None else None
        block["symbols"] = [
            {"symbol": row["symbol"], "tf": row["tf"], "high": row["high"], "low": row["low"],
             "avg": row["avg"]}
            for row in (entry or {}).get("symbols", [])]
        return block

    def market_status(self, now_ms: int, ts_ms: int) -> dict[str, Any]:
        """``market_status`` (seed 001 section 9.1) without the session ``stats``: judged at
        the pipeline time ``now_ms``, stamped with the wall time ``ts_ms``."""
        is_open = self.is_open(now_ms)
        next_open = self.next_open(now_ms)
        next_close = self.next_close(now_ms)
        return {
            "type": "market_status",
            "state": "open" if is_open else "closed",
            "ts": iso_utc(ts_ms),
            "next_open_utc": iso_utc(next_open),
            "next_open_ms": next_open,
            "next_open_in_seconds": round((next_open - now_ms) / 1000.0, 3),
            "next_close_utc": iso_utc(next_close),
            "next_close_ms": next_close,
            "symbols": {symbol: "open" if self.calendar.is_open(now_ms, symbol) else "closed"
                        for symbol in self.symbols},
            "session": self.calendar_block(now_ms),
        }

    def change_key(self, now_ms: int) -> tuple[Any, ...]:
        """What, when it changes, makes market_status go out at once: the state, the next
        opening, the session and which symbols are open."""
        session = self.session_at(now_ms)
        return (self.is_open(now_ms), self.next_open(now_ms),
                session.tag if session is not None else None,
                tuple(self.calendar.is_open(now_ms, symbol) for symbol in self.symbols))
