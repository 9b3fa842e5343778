"""Bars as heartbeat sees them: the lag of each stream target and the session statistics.

``BarTracker`` keeps, per ``(symbol, tf)``, the newest final bar's close and when it arrived,
and for the statistics the final bars of ``stats_tf`` (1m) over the last ``window_ms`` (24 h).

Session statistics (seed 001 section 9.1, ``session.stats``): per session window (tagged with
``calendar.session_at`` at each bar's open time, for the bar's own symbol) and per symbol, over
the final bars whose open time lies in the window ``[now - window_ms, now)``:

- ``bars``: how many;
- ``range``: highest high minus lowest low, in price units;
- ``avg``: the mean of their closes.

A bar re-emitted for the same key replaces the earlier one (one key, one final bar); bars in
no session window (the overnight gap) count for no session.

Lag (seed 001 section 9): ``lag_seconds`` = now - close time of the newest final bar, per
target. How late a target is (``overdue``) is that lag minus the bar's own length, counted
from the later of its last close and the moment its market (re)opened: a 1m stream that closed
a bar 70 s ago is 10 s overdue; the first minute after a weekend is not late at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors.heartbeat._diagnostic import iso_utc
from config.calendar import TradingCalendar
from protocol.market import FXCM_TF, TF_MS, TIMEFRAMES, Bar, fxcm_instrument


@dataclass
class TargetView:
    """The newest final bar of one (symbol, tf)."""

    last_close_ms: int
    arrived_mono: float
    bars: int = 1


@dataclass(frozen=True)
class _Kept:
    high: float
    low: float
    close: float
    tag: str | None
    session_start_ms: int
    session_end_ms: int


def _summary(symbol: str, tf: str, bars: list[_Kept]) -> dict[str, Any]:
    """One ``stats`` row (seed 001 section 9.1): bars, range, high, low, avg of the closes.
    Prices at the bars' own precision (a difference or a mean of prices is not noise-free)."""
    high = max(bar.high for bar in bars)
    low = min(bar.low for bar in bars)
    places = max(_decimals(bar.close) for bar in bars)
    return {"symbol": symbol, "tf": tf, "bars": len(bars),
            "range": round(high - low, places), "high": high, "low": low,
            "avg": round(sum(bar.close for bar in bars) / len(bars), places + 2)}


def _decimals(price: float) -> int:
    """Decimals of a price as it prints (``1.09995`` -> 5); at most 10."""
    text = repr(price)
    return min(10, len(text) - text.index(".") - 1) if "." in text and "e" not in text else 10


def _tf_order(tf: str) -> int:
    return TIMEFRAMES.index(tf) if tf in TIMEFRAMES else len(TIMEFRAMES)


class BarTracker:
    def __init__(self, calendar: TradingCalendar, window_ms: int, stats_tf: str) -> None:
        self.calendar = calendar
        self.window_ms = window_ms
        self.stats_tf = stats_tf
        self.targets: dict[tuple[str, str], TargetView] = {}
        self._kept: dict[str, dict[int, _Kept]] = {}
        self.finals = 0  # final bars taken, for ``published_bars`` per heartbeat
        self.previews = 0

    def add(self, bar: Bar, mono: float) -> None:
        """Take a bar from the bus: previews (``complete=False``) only count."""
        if not bar.complete:
            self.previews += 1
            return
        self.finals += 1
        key = (bar.symbol, bar.tf)
        view = self.targets.get(key)
        if view is None:
            self.targets[key] = TargetView(bar.close_time, mono)
        else:
            view.bars += 1
            view.arrived_mono = mono
            view.last_close_ms = max(view.last_close_ms, bar.close_time)
        if bar.tf == self.stats_tf:
            session = self.calendar.session_at(bar.open_time, bar.symbol)
            kept = self._kept.setdefault(bar.symbol, {})
            kept[bar.open_time] = _Kept(
                bar.high, bar.low, bar.close, session.tag if session is not None else None,
                session.start_ms if session is not None else 0,
                session.end_ms if session is not None else 0)

    def prune(self, now_ms: int) -> None:
        """Forget statistics bars older than the window."""
        low = now_ms - self.window_ms
        for kept in self._kept.values():
            old = [open_time for open_time in kept if open_time < low]
            for open_time in old:
                del kept[open_time]

    def last_close_ms(self, tf: str | None = None) -> int | None:
        closes = [view.last_close_ms for (_, each_tf), view in self.targets.items()
                  if tf is None or each_tf == tf]
        return max(closes) if closes else None

    def stats(self, now_ms: int) -> dict[str, Any]:
        """``session.stats``: ``{TAG: {tag, timezone, session_open_utc, session_close_utc,
        symbols: [{symbol, tf, bars, range, high, low, avg}]}}`` (see the module docstring)."""
        self.prune(now_ms)
        zones = {entry.tag: entry.timezone for entry in self.calendar.session_windows}
        groups: dict[str, dict[str, list[_Kept]]] = {}
        latest: dict[str, tuple[int, int]] = {}
        for symbol in sorted(self._kept):
            for open_time, kept in self._kept[symbol].items():
                if kept.tag is None or open_time >= now_ms:
                    continue
                groups.setdefault(kept.tag, {}).setdefault(symbol, []).append(kept)
                if kept.session_start_ms >= latest.get(kept.tag, (0, 0))[0]:
                    latest[kept.tag] = (kept.session_start_ms, kept.session_end_ms)
        result: dict[str, Any] = {}
        for tag in sorted(groups, key=lambda name: latest[name][0]):
            start, end = latest[tag]
            result[tag] = {
                "tag": tag,
                "timezone": zones.get(tag),
                "session_open_utc": iso_utc(start),
                "session_close_utc": iso_utc(end),
                "symbols": [_summary(symbol, self.stats_tf, bars)
                            for symbol, bars in sorted(groups[tag].items())],
            }
        return result

    def targets_view(self, now_ms: int, mono: float,
                     targets: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """``stream_targets``: the given ``(symbol, tf)`` targets, each with its newest final
        bar. ``symbol``/``tf`` in the seed's FXCM spelling (``XAU/USD``, ``m1``), plus
        ``symbol_code``/``timeframe`` in the bus spelling."""
        result = []
        for symbol, tf in sorted(set(targets), key=lambda key: (key[0], _tf_order(key[1]))):
            view = self.targets.get((symbol, tf))
            result.append({
                "symbol": fxcm_instrument(symbol),
                "tf": FXCM_TF.get(tf, tf),
                "symbol_code": symbol,
                "timeframe": tf,
                "last_close_ms": view.last_close_ms if view is not None else None,
                "lag_seconds": round((now_ms - view.last_close_ms) / 1000.0, 3)
                if view is not None else None,
                "staleness_seconds": round(max(0.0, mono - view.arrived_mono), 3)
                if view is not None else None,
                "bars": view.bars if view is not None else 0,
            })
        return result

    def overdue(self, now_ms: int, symbols: Sequence[str], lag_tf: str,
                opened_ms: Mapping[str, int | None],
                watch_from_ms: int) -> tuple[float | None, str]:
        """How late the latest-running target at ``lag_tf`` is, in seconds, over the symbols
        whose market is open (``opened_ms``: when it opened, None if closed), and which one.
        A target never seen counts from ``watch_from_ms`` (when heartbeat started watching)."""
        worst: float | None = None
        which = ""
        step = TF_MS[lag_tf]
        for symbol in symbols:
            opened = opened_ms.get(symbol)
            if opened is None:
                continue
            view = self.targets.get((symbol, lag_tf))
            since = view.last_close_ms + 1 if view is not None else watch_from_ms
            since = max(since, opened)
            late = (now_ms - since - step) / 1000.0
            if worst is None or late > worst:
                worst, which = late, "{} {}".format(symbol, lag_tf)
        if worst is None:
            return None, ""
        return max(0.0, worst), which
