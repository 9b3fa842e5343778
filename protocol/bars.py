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

Derived bars (5m .. 1d) fold final 1m bars: open of the first, max high, min low, close of the
last, summed tick counts; synthetic only if every minute in them was (``Bucket``, ``derive``).

Price basis: a tick's or a history row's price on the ``price_basis`` setting
(``basis_price``), the same for tick bars and history bars.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar

from protocol.market import TF_MS, Bar, round_price

DayStart = Callable[[int], int]
BucketT = TypeVar("BucketT", bound="Bucket")

# tf names whose buckets follow the trading day rather than the UTC epoch
TRADING_DAY_ALIGNED = ("4h", "1d")

# the values of the price_basis setting
PRICE_BASES = ("mid", "bid", "ask")


def basis_price(bid: float, ask: float, basis: str) -> float:
    """The price on ``basis`` (``mid``, ``bid`` or ``ask``) of a quote; works element-wise on
    arrays too (the SDK's history tables)."""
    if basis == "mid":
        return (bid + ask) / 2.0
    return bid if basis == "bid" else ask


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


class Bucket(OHLC):
    """A bar being built, with its open time and whether it is synthetic (every minute in it
    was): a 1m bar folding ticks (``add``) or a derived bar folding final 1m bars in minute
    order (``add_minute``)."""

    __slots__ = ("open_time", "synthetic")

    def __init__(self, open_time: int, price: float, ts_ms: int, count: int = 1,
                 synthetic: bool = False) -> None:
        super(Bucket, self).__init__(price, ts_ms)
        self.open_time = open_time
        self.count = count
        self.synthetic = synthetic

    @classmethod
    def of_minute(cls: Type[BucketT], open_time: int, minute: Bar) -> BucketT:
        """A derived bucket opening at ``open_time`` whose first final 1m bar is ``minute``."""
        bucket = cls(open_time, minute.open, minute.open_time, count=minute.tick_count,
                     synthetic=minute.synthetic)
        bucket.high = minute.high
        bucket.low = minute.low
        bucket.close = minute.close
        bucket.close_ts = minute.close_time
        return bucket

    def add_minute(self, minute: Bar) -> None:
        """Fold the next final 1m bar into this derived bucket."""
        if minute.high > self.high:
            self.high = minute.high
        if minute.low < self.low:
            self.low = minute.low
        self.close = minute.close
        self.close_ts = minute.close_time
        self.count += minute.tick_count
        self.synthetic = self.synthetic and minute.synthetic

    def to_bar(self, symbol: str, tf: str, complete: bool, source: str,
               digits: Optional[int] = None) -> Bar:
        """The bar of this bucket; prices rounded to ``digits`` when given."""
        prices = [self.open, self.high, self.low, self.close]
        if digits is not None:
            prices = [round_price(price, digits) for price in prices]
        return Bar(symbol, tf, self.open_time, self.open_time + TF_MS[tf] - 1, prices[0],
                   prices[1], prices[2], prices[3], float(self.count), self.count, complete,
                   self.synthetic, source)


def derive(symbol: str, tf: str, open_time: int, minutes: Sequence[Bar], source: str) -> Bar:
    """The final ``tf`` bar opening at ``open_time`` from its final 1m bars (at least one, in
    minute order)."""
    if not minutes:
        raise ValueError("a derived bar needs at least one minute")
    bucket = Bucket.of_minute(open_time, minutes[0])
    for minute in minutes[1:]:
        bucket.add_minute(minute)
    return bucket.to_bar(symbol, tf, True, source)


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
