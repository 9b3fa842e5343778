"""Ticks to bars, exactly as DESIGN.md section 6 says. Pure: no sockets, no wall clock.

Per symbol:

- The current 1m bucket ``[open, open + 1m)`` folds ticks (protocol.bars: open = first arrival,
  high/low over all, close = latest event time, volume = tick count).
- A 1m bar becomes final when a tick at or past its end arrives, or when the pipeline clock
  passes its end plus ``close_grace_ms``. A tick for a minute that is already final is late:
  counted, not applied.
- Minutes without ticks inside trading hours become flat synthetic bars at the previous close
  (volume 0, ``synthetic=True``), at most ``max_synth_gap_minutes`` in a row; none while the
  calendar says closed, none before the first real close is known.
- Derived timeframes (5m .. 1d) fold final 1m bars only: open of the first, max high, min low,
  close of the last, summed volume; synthetic only if every minute in them was. A derived bar
  is final when its last minute is final, when a later minute arrives, or when the market
  closes inside it and does not reopen before its end.

Partial bars are never final: after a fresh start, and after the session was lost
(``on_session``), the first minute seen and the derived buckets holding it lack the ticks from
before; they are skipped (counted) and history_poller fills them from history. While the
session is lost, quiet minutes are not faked as synthetic either: nobody knows they were quiet.

Everything the aggregator knows is in ``snapshot()``, so a checkpointed restart that replays the
same ticks and clock readings emits the same final bars.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from protocol.bars import OHLC, bucket_start
from protocol.market import MINUTE_MS, TF_MS, Bar, Tick

SOURCE_TICK = "tick"
SOURCE_DERIVED = "derived"


def price_of(tick: Tick, basis: str) -> float:
    if basis == "mid":
        return (tick.bid + tick.ask) / 2.0
    return tick.bid if basis == "bid" else tick.ask


class _Bucket(OHLC):
    """A bar being built: the fold of protocol.bars plus its open time and whether it is
    synthetic (every minute in it was)."""

    __slots__ = ("open_time", "synthetic")

    def __init__(self, open_time: int, price: float, ts_ms: int, count: int = 1,
                 synthetic: bool = False) -> None:
        super().__init__(price, ts_ms)
        self.open_time = open_time
        self.count = count
        self.synthetic = synthetic

    def merge_bar(self, bar: Bar) -> None:
        """Fold a later final 1m bar into this derived bucket."""
        if bar.high > self.high:
            self.high = bar.high
        if bar.low < self.low:
            self.low = bar.low
        self.close = bar.close
        self.close_ts = bar.close_time
        self.count += bar.tick_count
        self.synthetic = self.synthetic and bar.synthetic

    def to_state(self) -> list[Any]:
        return [self.open_time, self.open, self.high, self.low, self.close, self.close_ts,
                self.count, self.synthetic]

    @classmethod
    def from_state(cls, state: list[Any]) -> _Bucket:
        bucket = cls(int(state[0]), float(state[1]), int(state[5]))
        bucket.high = float(state[2])
        bucket.low = float(state[3])
        bucket.close = float(state[4])
        bucket.count = int(state[6])
        bucket.synthetic = bool(state[7])
        return bucket


class _Symbol:
    __slots__ = ("current", "next_minute", "last_close", "gap", "derived", "fresh",
                 "first_minute")

    def __init__(self) -> None:
        self.current: _Bucket | None = None
        self.next_minute: int | None = None  # open time of the next 1m bar to finalize
        self.last_close: float | None = None
        self.gap = 0  # synthetic minutes emitted in a row
        self.derived: dict[str, _Bucket] = {}
        self.fresh = True  # nothing seen since start or since the session was lost
        self.first_minute: int | None = None  # the partial minute after being fresh


class Aggregator:
    """The pure aggregation state of every symbol. Feed ``on_tick`` and ``on_clock``; both
    return the bars that became final (1m first, then what they completed), oldest first."""

    def __init__(self, symbols: list[str], timeframes: list[str], basis: str,
                 close_grace_ms: int, max_synth_gap_minutes: int, calendar: Any) -> None:
        if "1m" not in timeframes:
            raise ValueError("the 1m timeframe is the layer of truth and cannot be left out")
        self.symbols = {symbol: _Symbol() for symbol in symbols}
        self.derived_tfs = [tf for tf in timeframes if tf != "1m"]
        self.basis = basis
        self.grace = close_grace_ms
        self.max_synth = max_synth_gap_minutes
        self.calendar = calendar
        self.counters: Counter[str] = Counter()

    # -- input -----------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[Bar]:
        state = self.symbols.get(tick.symbol)
        if state is None:
            self.counters["unknown_symbol"] += 1
            return []
        price = price_of(tick, self.basis)
        minute = tick.ts_ms - tick.ts_ms % MINUTE_MS
        current = state.current
        if current is not None and minute == current.open_time:
            current.add(price, tick.ts_ms)
            self.counters["ticks"] += 1
            return []
        if (current is not None and minute < current.open_time) or (
                state.next_minute is not None and minute < state.next_minute):
            self.counters["late_ticks"] += 1
            return []
        out: list[Bar] = []
        # A tick at or past the current bucket's end makes it final.
        self._finalize_current(tick.symbol, state, out)
        if state.fresh:
            # Ticks before this one were not seen: this minute, and the derived buckets that
            # hold it, are partial and left to history; quiet minutes before it are unknown.
            state.fresh = False
            state.first_minute = minute
            state.next_minute = minute
            state.derived.clear()
        else:
            self._advance(tick.symbol, state, minute, out)
        state.current = _Bucket(minute, price, tick.ts_ms)
        self.counters["ticks"] += 1
        return out

    def on_clock(self, now_ms: int) -> list[Bar]:
        """The pipeline clock passed ``now_ms``: close what the grace period allows."""
        out: list[Bar] = []
        horizon = now_ms - self.grace  # minutes ending at or before this are final
        for symbol, state in self.symbols.items():
            current = state.current
            if current is not None and current.open_time + MINUTE_MS <= horizon:
                self._finalize_current(symbol, state, out)
            if state.next_minute is not None:
                # quiet minutes that ended before the horizon: synthetic or skipped
                self._advance(symbol, state, horizon - horizon % MINUTE_MS, out)
            self._close_derived_at_market_close(symbol, state, now_ms, out)
        return out

    def on_session(self, connected: bool) -> None:
        """The session was lost (``connected=False``): what is forming is partial, and the
        time until the next tick is unknown, not quiet."""
        if connected:
            return
        for state in self.symbols.values():
            if state.current is not None:
                self.counters["partial_minutes_dropped"] += 1
            state.current = None
            state.fresh = True
            if state.derived:
                self.counters["partial_derived_dropped"] += len(state.derived)
            state.derived.clear()

    def previews(self) -> list[Bar]:
        """The forming 1m bars (``complete=False``), for live previews."""
        return [self._bar(symbol, "1m", state.current, complete=False)
                for symbol, state in self.symbols.items() if state.current is not None]

    # -- 1m --------------------------------------------------------------------------------

    def _finalize_current(self, symbol: str, state: _Symbol, out: list[Bar]) -> None:
        current = state.current
        if current is None:
            return
        state.current = None
        state.last_close = current.close
        state.next_minute = current.open_time + MINUTE_MS
        state.gap = 0
        if current.open_time == state.first_minute:
            self.counters["partial_minutes_skipped"] += 1
            return
        self.counters["bars_1m"] += 1
        self._final_1m(symbol, state, self._bar(symbol, "1m", current, complete=True), out)

    def _advance(self, symbol: str, state: _Symbol, until: int, out: list[Bar]) -> None:
        """Account for every quiet minute before ``until``: a synthetic bar inside trading
        hours (up to the cap), nothing when closed."""
        minute = state.next_minute
        if minute is None or state.last_close is None or state.fresh:
            return
        is_open = self.calendar.is_open
        while minute < until:
            if is_open(minute, symbol):
                if state.gap < self.max_synth:
                    state.gap += 1
                    flat = _Bucket(minute, state.last_close, minute, count=0, synthetic=True)
                    self.counters["synthetic_bars"] += 1
                    self._final_1m(symbol, state, self._bar(symbol, "1m", flat, True), out)
                else:
                    self.counters["synthetic_capped"] += 1
            else:
                state.gap = 0  # a closed market ends a gap
            minute += MINUTE_MS
        state.next_minute = minute

    # -- derived ---------------------------------------------------------------------------

    def _bucket_end(self, open_time: int, tf: str) -> int:
        if tf == "1d":
            return int(self.calendar.next_trading_day_start(open_time))
        end = open_time + TF_MS[tf]
        if tf == "4h":
            return min(end, int(self.calendar.next_trading_day_start(open_time)))
        return end

    def _final_1m(self, symbol: str, state: _Symbol, bar: Bar, out: list[Bar]) -> None:
        out.append(bar)
        day_start = self.calendar.trading_day_start
        for tf in self.derived_tfs:
            start = bucket_start(bar.open_time, tf, day_start)
            if state.first_minute is not None and start <= state.first_minute:
                continue  # holds the partial first minute: history fills it
            bucket = state.derived.get(tf)
            if bucket is not None and bucket.open_time != start:
                out.append(self._bar(symbol, tf, bucket, complete=True))
                self.counters["bars_derived"] += 1
                bucket = None
            if bucket is None:
                bucket = _Bucket(start, bar.open, bar.open_time, count=bar.tick_count,
                                 synthetic=bar.synthetic)
                bucket.high = bar.high
                bucket.low = bar.low
                bucket.close = bar.close
                bucket.close_ts = bar.close_time
                state.derived[tf] = bucket
            else:
                bucket.merge_bar(bar)
            if bar.open_time + MINUTE_MS >= self._bucket_end(start, tf):
                out.append(self._bar(symbol, tf, bucket, complete=True))
                self.counters["bars_derived"] += 1
                del state.derived[tf]

    def _close_derived_at_market_close(self, symbol: str, state: _Symbol, now_ms: int,
                                       out: list[Bar]) -> None:
        """A derived bar the market closed inside, and does not reopen before its end, is
        final once the market has been closed for the grace period (every minute before the
        close is final by then)."""
        if not state.derived or state.current is not None:
            return
        is_open = self.calendar.is_open
        if is_open(now_ms, symbol) or is_open(now_ms - self.grace, symbol):
            return
        reopen = self.calendar.next_open(now_ms, symbol)
        for tf in list(state.derived):
            bucket = state.derived[tf]
            if reopen >= self._bucket_end(bucket.open_time, tf):
                out.append(self._bar(symbol, tf, bucket, complete=True))
                self.counters["bars_derived"] += 1
                self.counters["closed_by_market"] += 1
                del state.derived[tf]

    # -- output ----------------------------------------------------------------------------

    def _bar(self, symbol: str, tf: str, bucket: _Bucket, complete: bool) -> Bar:
        return Bar(symbol, tf, bucket.open_time, bucket.open_time + TF_MS[tf] - 1, bucket.open,
                   bucket.high, bucket.low, bucket.close, float(bucket.count), bucket.count,
                   complete, bucket.synthetic, SOURCE_TICK if tf == "1m" else SOURCE_DERIVED)

    # -- checkpoint ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "symbols": {
                symbol: [
                    state.current.to_state() if state.current is not None else None,
                    state.next_minute, state.last_close, state.gap,
                    {tf: bucket.to_state() for tf, bucket in state.derived.items()},
                    state.fresh, state.first_minute,
                ]
                for symbol, state in self.symbols.items()
            },
            "counters": dict(self.counters),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        for symbol, (current, next_minute, last_close, gap, derived, fresh, first_minute) in \
                snapshot["symbols"].items():
            state = self.symbols.get(symbol)
            if state is None:
                continue  # a symbol dropped from the configuration
            state.current = _Bucket.from_state(current) if current is not None else None
            state.next_minute = next_minute
            state.last_close = last_close
            state.gap = gap
            state.derived = {tf: _Bucket.from_state(bucket) for tf, bucket in derived.items()}
            state.fresh = fresh
            state.first_minute = first_minute
        self.counters = Counter(snapshot.get("counters", {}))
