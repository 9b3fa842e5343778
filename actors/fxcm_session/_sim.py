"""The ``sim`` broker: a deterministic market simulator.

Everything is a pure function of ``(seed, symbol, time)``, so a second run, or a history request
for a period already streamed, sees exactly the same ticks:

- A daily anchor price follows a mean-reverting random walk from a fixed epoch; within a day the
  minute-open prices follow a Brownian bridge between two daily anchors.
- Each minute first gets its shape: tick count (Poisson with ``tick_rate_per_second``), open,
  high, low, close and a spread. Its ticks are then drawn to match that shape exactly: the
  earliest tick is the open, the latest the close, one tick each touches the high and the low.
  So 1m history is computed from the shape without drawing ticks, and agrees with the fold of
  the ticks by construction; longer timeframes fold the 1m bars.
- The spread is constant within a minute, so bid and ask bars are the mid bar shifted by half
  of it.
- No ticks while the trading calendar says the symbol's market is closed.

Fault injection (settings ``faults``) lets tests and demos exercise recovery: failing logins,
an injected disconnect after some streaming time, "not ready" history errors.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

from actors.fxcm_session._broker import LOST, StreamingBroker
from protocol.bars import OHLC, basis_price, bucket_start
from protocol.errors import BrokerError, HistoryNotReady, LoginFailed
from protocol.market import MINUTE_MS, TF_MS, Instrument

DAY_MS = 1440 * MINUTE_MS
EPOCH_DAY = 18262  # 2020-01-01: the walk starts here

# symbol: (price level, daily volatility as a fraction, typical spread, decimals)
INSTRUMENTS: Dict[str, Tuple[float, float, float, int]] = {
    "EURUSD": (1.0850, 0.005, 0.00008, 5),
    "GBPUSD": (1.2700, 0.006, 0.00012, 5),
    "USDJPY": (151.20, 0.006, 0.010, 3),
    "XAUUSD": (2650.0, 0.010, 0.30, 2),
    "AUDUSD": (0.6550, 0.006, 0.00010, 5),
    "USDCAD": (1.3600, 0.004, 0.00012, 5),
    "USDCHF": (0.8800, 0.005, 0.00012, 5),
    "NZDUSD": (0.5950, 0.006, 0.00014, 5),
    "EURJPY": (163.50, 0.007, 0.015, 3),
    "GBPJPY": (191.00, 0.008, 0.025, 3),
    "EURGBP": (0.8550, 0.004, 0.00012, 5),
    "EURCHF": (0.9500, 0.004, 0.00015, 5),
    "XAGUSD": (31.00, 0.015, 0.025, 3),
}


def instrument(symbol: str) -> Tuple[float, float, float, int]:
    known = INSTRUMENTS.get(symbol)
    if known is not None:
        return known
    level = 50.0 + random.Random("level:" + symbol).random() * 150.0
    return (level, 0.008, level * 0.0002, 3)


class MinuteShape(object):
    __slots__ = ("count", "open", "high", "low", "close", "spread")

    def __init__(self, count: int, open_: float, high: float, low: float, close: float,
                 spread: float) -> None:
        self.count = count
        self.open = open_
        self.high = high
        self.low = low
        self.close = close
        self.spread = spread


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 60:
        return max(0, int(round(rng.gauss(mean, math.sqrt(mean)))))
    limit = math.exp(-mean)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class SimMarket(object):
    """The pure generator: minute shapes, ticks and bars as functions of time."""

    def __init__(self, seed: int, tick_rate_per_second: float, calendar: Any) -> None:
        self.seed = seed
        self.rate = tick_rate_per_second
        self.calendar = calendar
        self._anchors: Dict[str, List[float]] = {}  # symbol -> daily anchors from EPOCH_DAY
        self._days: "OrderedDict[Tuple[str, int], List[float]]" = OrderedDict()
        self._shapes: "OrderedDict[Tuple[str, int], Optional[MinuteShape]]" = OrderedDict()

    def _rng(self, *parts: Any) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed,) + parts))

    def _anchor(self, symbol: str, day: int) -> float:
        anchors = self._anchors.setdefault(symbol, [])
        level, daily_vol, _, _ = instrument(symbol)
        if not anchors:
            anchors.append(level)
        index = day - EPOCH_DAY
        if index < 0:
            return level
        while len(anchors) <= index:
            step = len(anchors)
            z = self._rng("day", symbol, EPOCH_DAY + step).gauss(0.0, 1.0)
            previous = anchors[-1]
            # mean reversion keeps the level realistic over years
            log_next = math.log(previous) + 0.02 * (math.log(level) - math.log(previous)) \
                + daily_vol * z
            anchors.append(math.exp(log_next))
        return anchors[index]

    def _minute_opens(self, symbol: str, day: int) -> List[float]:
        key = (symbol, day)
        cached = self._days.get(key)
        if cached is not None:
            self._days.move_to_end(key)
            return cached
        start = self._anchor(symbol, day)
        end = self._anchor(symbol, day + 1)
        _, daily_vol, _, _ = instrument(symbol)
        rng = self._rng("minutes", symbol, day)
        sigma = daily_vol / math.sqrt(1440.0)
        walk = [0.0]
        for _ in range(1440):
            walk.append(walk[-1] + rng.gauss(0.0, sigma))
        drift = math.log(end / start)
        total = walk[-1]
        opens = [start * math.exp(walk[i] - (i / 1440.0) * (total - drift))
                 for i in range(1441)]
        self._days[key] = opens
        if len(self._days) > 256:
            self._days.popitem(last=False)
        return opens

    def minute_open(self, symbol: str, minute: int) -> float:
        day, index = divmod(minute, 1440)
        return self._minute_opens(symbol, day)[index]

    def _round(self, symbol: str, price: float) -> float:
        return round(price, instrument(symbol)[3])

    def shape(self, symbol: str, minute: int) -> Optional[MinuteShape]:
        """The minute's shape, or None when it has no tick (closed market or a quiet minute)."""
        key = (symbol, minute)
        if key in self._shapes:
            self._shapes.move_to_end(key)
            return self._shapes[key]
        result = self._make_shape(symbol, minute)
        self._shapes[key] = result
        if len(self._shapes) > 200000:
            self._shapes.popitem(last=False)
        return result

    def _make_shape(self, symbol: str, minute: int) -> Optional[MinuteShape]:
        start_ms = minute * MINUTE_MS
        calendar = self.calendar
        if calendar is not None and not calendar.is_open(start_ms, symbol) \
                and not calendar.is_open(start_ms + MINUTE_MS - 1, symbol):
            return None
        rng = self._rng("shape", symbol, minute)
        count = _poisson(rng, self.rate * 60.0)
        if count == 0:
            return None
        open_ = self.minute_open(symbol, minute)
        close = self.minute_open(symbol, minute + 1)
        _, daily_vol, spread, _ = instrument(symbol)
        wiggle = open_ * daily_vol / math.sqrt(1440.0)
        high = max(open_, close) + abs(rng.gauss(0.0, wiggle)) * 0.5
        low = min(open_, close) - abs(rng.gauss(0.0, wiggle)) * 0.5
        # A whole, even number of price units: bid and ask then sit exactly half a spread from
        # the mid, and (bid + ask) / 2 gives the mid back without rounding drift.
        unit = 10.0 ** -instrument(symbol)[3]
        units = max(2, 2 * int(round(spread * (0.8 + 0.4 * rng.random()) / (2 * unit))))
        spread_now = self._round(symbol, units * unit)
        rounded = [self._round(symbol, p) for p in (open_, high, low, close)]
        if count == 1:
            rounded = [rounded[0]] * 4
        elif count == 2:
            rounded[1] = max(rounded[0], rounded[3])
            rounded[2] = min(rounded[0], rounded[3])
        return MinuteShape(count, rounded[0], rounded[1], rounded[2], rounded[3], spread_now)

    def ticks(self, symbol: str, minute: int) -> List[Tuple[int, float, float]]:
        """The minute's ticks ``(ts_ms, bid, ask)``, time-ordered, matching its shape."""
        shape = self.shape(symbol, minute)
        if shape is None:
            return []
        rng = self._rng("ticks", symbol, minute)
        start_ms = minute * MINUTE_MS
        times = sorted(start_ms + rng.randrange(MINUTE_MS) for _ in range(shape.count))
        mids = [shape.low + (shape.high - shape.low) * rng.random() for _ in range(shape.count)]
        mids[0] = shape.open
        mids[-1] = shape.close
        if shape.count >= 3:
            interior = list(range(1, shape.count - 1))
            high_at = rng.choice(interior)
            mids[high_at] = shape.high
            interior.remove(high_at)
            if interior:
                mids[rng.choice(interior)] = shape.low
        half = shape.spread / 2.0
        calendar = self.calendar
        result = []
        for ts_ms, mid in zip(times, mids):
            mid = self._round(symbol, mid)
            if calendar is not None and not calendar.is_open(ts_ms, symbol):
                continue
            result.append((ts_ms, self._round(symbol, mid - half),
                           self._round(symbol, mid + half)))
        return result

    def bars(self, symbol: str, tf: str, from_ms: int, to_ms: int, now_ms: int, basis: str,
             trading_day_start: Any) -> List[List[float]]:
        """History rows ``[open_time, open, high, low, close, volume]`` for buckets starting in
        ``[from_ms, to_ms]``, as the fold of this market's ticks up to ``now_ms``."""
        step = TF_MS[tf]
        first = bucket_start(from_ms, tf, trading_day_start)
        buckets: "OrderedDict[int, OHLC]" = OrderedDict()
        minute = first // MINUTE_MS
        last_minute = min(to_ms + step, now_ms) // MINUTE_MS
        while minute <= last_minute:
            start_ms = minute * MINUTE_MS
            bucket = bucket_start(start_ms, tf, trading_day_start)
            if bucket > to_ms:
                break
            minute_bar = self._minute_bar(symbol, minute, now_ms, basis)
            if minute_bar is not None and bucket >= first:
                existing = buckets.get(bucket)
                if existing is None:
                    buckets[bucket] = minute_bar
                else:
                    existing.merge(minute_bar)
            minute += 1
        return [[start, bar.open, bar.high, bar.low, bar.close, float(bar.count)]
                for start, bar in buckets.items()]

    def _minute_bar(self, symbol: str, minute: int, now_ms: int, basis: str
                    ) -> Optional[OHLC]:
        end_ms = (minute + 1) * MINUTE_MS
        if end_ms <= now_ms:
            shape = self.shape(symbol, minute)
            if shape is None:
                return None
            partial = self.calendar is not None and not (
                self.calendar.is_open(minute * MINUTE_MS, symbol)
                and self.calendar.is_open(end_ms - 1, symbol))
            if not partial:
                shift = {"mid": 0.0, "bid": -shape.spread / 2.0,
                         "ask": shape.spread / 2.0}[basis]
                whole = OHLC(self._round(symbol, shape.open + shift), minute * MINUTE_MS)
                whole.high = self._round(symbol, shape.high + shift)
                whole.low = self._round(symbol, shape.low + shift)
                whole.close = self._round(symbol, shape.close + shift)
                whole.close_ts = end_ms - 1
                whole.count = shape.count
                return whole
        # The forming minute, or one cut by the calendar: fold its actual ticks.
        bar: Optional[OHLC] = None
        for ts_ms, bid, ask in self.ticks(symbol, minute):
            if ts_ms > now_ms:
                break
            price = self._round(symbol, basis_price(bid, ask, basis))
            if bar is None:
                bar = OHLC(price, ts_ms)
            else:
                bar.add(price, ts_ms)
        return bar


class SimBroker(StreamingBroker):
    """The simulator behind the broker seam, streaming ticks on a thread at wall-clock times."""

    kind = "sim"

    def __init__(self, settings: Dict[str, Any], calendar: Any,
                 trading_day_start: Any) -> None:
        super(SimBroker, self).__init__()
        self.market = SimMarket(int(settings.get("seed", 1)),
                                float(settings.get("tick_rate_per_second", 2.0)), calendar)
        self.trading_day_start = trading_day_start
        faults = settings.get("faults") or {}
        self._login_failures = int(faults.get("login_failures", 0))
        self._disconnect_after = float(faults.get("disconnect_after_seconds", 0.0))
        self._disconnects_left = int(faults.get("disconnects", 1 if self._disconnect_after else 0))
        self._history_not_ready = int(faults.get("history_not_ready", 0))
        self._history_errors = int(faults.get("history_errors", 0))
        self._symbols: List[str] = []
        self.logins = 0
        self.subscriptions = 0
        self.ticks_emitted = 0

    def clock_ms(self) -> int:
        return int(time.time() * 1000)

    def instruments(self, symbols: List[str], configured: Dict[str, Any]) -> Dict[str, Instrument]:
        """The simulated quotes' own decimals, unless the configuration says otherwise."""
        known = {symbol: {"digits": instrument(symbol)[3]} for symbol in symbols}
        known.update(configured)
        return super(SimBroker, self).instruments(symbols, known)

    def login(self) -> None:
        self.logins += 1
        if self._login_failures > 0:
            self._login_failures -= 1
            raise LoginFailed("injected login failure ({} more)".format(self._login_failures))
        self._connected = True

    def logout(self) -> None:
        self.unsubscribe()
        self._connected = False

    def subscribe(self, symbols: List[str]) -> None:
        self._symbols = list(symbols)  # the stream thread reads them
        super(SimBroker, self).subscribe(symbols)
        self.subscriptions += 1

    def _stream(self, stop: threading.Event) -> None:
        started = time.monotonic()
        cursor = self.clock_ms()  # ticks after this instant are emitted as time passes
        pending: List[Tuple[int, str, float, float]] = []
        loaded_minute = cursor // MINUTE_MS - 1
        while not stop.is_set():
            now = self.clock_ms()
            while loaded_minute < now // MINUTE_MS:
                loaded_minute += 1
                for symbol in self._symbols:
                    for ts_ms, bid, ask in self.market.ticks(symbol, loaded_minute):
                        if ts_ms > cursor:
                            pending.append((ts_ms, symbol, bid, ask))
                pending.sort(key=lambda tick: tick[0])
            due = bisect.bisect_right(pending, (now, "\uffff", 0.0, 0.0))
            callback = self.on_tick
            for ts_ms, symbol, bid, ask in pending[:due]:
                if callback is not None:
                    callback(symbol, ts_ms, bid, ask)
                self.ticks_emitted += 1
            del pending[:due]
            cursor = now
            if self._disconnects_left and time.monotonic() - started >= self._disconnect_after:
                self._disconnects_left -= 1
                self._connected = False
                if self.on_status is not None:
                    self.on_status(LOST, "session lost (injected fault)")
                return
            next_due = pending[0][0] if pending else (loaded_minute + 1) * MINUTE_MS
            stop.wait(min(0.05, max(0.001, (next_due - now) / 1000.0)))

    def get_history(self, symbol: str, tf: str, from_ms: Optional[int], to_ms: Optional[int],
                    count: int, basis: str) -> List[List[float]]:
        if not self._connected:
            raise BrokerError("not logged in")
        if self._history_not_ready > 0:
            self._history_not_ready -= 1
            raise HistoryNotReady("PriceHistoryCommunicator is not ready (injected)")
        if self._history_errors > 0:
            self._history_errors -= 1
            raise BrokerError("injected history error")
        now = self.clock_ms()
        end = now if to_ms is None else min(to_ms, now)
        step = TF_MS[tf]
        if from_ms is None:
            # enough range to find ``count`` bars across weekends and holidays
            span = max(count, 1) * step * 2 + 3 * DAY_MS
            from_ms = end - span
        rows = self.market.bars(symbol, tf, from_ms, end, now, basis, self.trading_day_start)
        return rows[-count:] if count > 0 else rows

    def status(self) -> Dict[str, Any]:
        return {"kind": self.kind, "seed": self.market.seed, "logins": self.logins,
                "subscriptions": self.subscriptions, "ticks_emitted": self.ticks_emitted,
                "connected": self._connected}

