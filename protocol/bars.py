"""Bucket alignment and the tick-to-bar fold (DESIGN.md section 6, "Bars, precisely").

Shared by everything that turns ticks into bars (tick_aggregator, the sim and replay brokers'
history), so that they cannot disagree. Buckets are ``[open, open + tf)``; 1m to 1h align to
the UTC epoch, 4h and 1d to the trading-day start (17:00 New York by default), which the caller
supplies as a function because the calendar lives in ``config/``. A bucket ends at
``open + tf``, except that 4h and 1d buckets never run past the next trading-day start (a 1d
bucket ends there; a 4h bucket is cut short by it on a DST change): ``bucket_end`` is the one
home of that rule, for the aggregator and the poller alike.

Fold rules: open = the first tick to arrive in the bucket, high/low over all its ticks, close =
the tick with the latest event time (the later arrival on a tie), volume = tick count.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple

from protocol.market import TF_MS

DayStart = Callable[[int], int]

# tf names whose buckets follow the trading day rather than the UTC epoch
TRADING_DAY_ALIGNED = ("4h", "1d")


def bucket_start(t_ms: int, tf: str, trading_day_start: Optional[DayStart] = None) -> int:
    """The open time of the ``tf`` bucket holding ``t_ms``."""
    step = TF_MS[tf]
    if tf not in TRADING_DAY_ALIGNED:
        return t_ms - t_ms % step
    if trading_day_start is None:
        raise ValueError("{} buckets need the trading-day start".format(tf))
    day = trading_day_start(t_ms)
    if tf == "1d":
        return day
    return day + ((t_ms - day) // step) * step


def bucket_end(open_time: int, tf: str, next_trading_day_start: Optional[DayStart] = None
               ) -> int:
    """The end (exclusive) of the ``tf`` bucket opening at ``open_time``: its last minute is
    final when this is reached. A bar's ``close_time`` stays ``open_time + tf - 1`` (the
    contract); this is when the bucket is over."""
    end = open_time + TF_MS[tf]
    if tf not in TRADING_DAY_ALIGNED:
        return end
    if next_trading_day_start is None:
        raise ValueError("{} buckets need the next trading-day start".format(tf))
    day_end = int(next_trading_day_start(open_time))
    return day_end if tf == "1d" else min(end, day_end)


class OHLC(object):
    """A bar being folded; ``add`` applies the fold rules above."""

    __slots__ = ("open", "high", "low", "close", "count", "close_ts")

    def __init__(self, price: float, ts_ms: int) -> None:
        self.open = price
        self.high = price
        self.low = price
        self.close = price
        self.count = 1
        self.close_ts = ts_ms

    def add(self, price: float, ts_ms: int) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        if ts_ms >= self.close_ts:
            self.close = price
            self.close_ts = ts_ms
        self.count += 1

    def merge(self, other: "OHLC") -> None:
        """Fold a later bar into this one (derived timeframes from final bars)."""
        if other.high > self.high:
            self.high = other.high
        if other.low < self.low:
            self.low = other.low
        if other.close_ts >= self.close_ts:
            self.close = other.close
            self.close_ts = other.close_ts
        self.count += other.count


def fold(points: Iterable[Tuple[int, float]], tf: str,
         trading_day_start: Optional[DayStart] = None) -> List[Tuple[int, OHLC]]:
    """Fold ``(ts_ms, price)`` points (in arrival order) into ``(open_time, OHLC)`` by bucket,
    oldest bucket first."""
    bars = {}  # type: dict
    for ts_ms, price in points:
        start = bucket_start(ts_ms, tf, trading_day_start)
        bar = bars.get(start)
        if bar is None:
            bars[start] = OHLC(price, ts_ms)
        else:
            bar.add(price, ts_ms)
    return sorted(bars.items(), key=lambda item: item[0])
