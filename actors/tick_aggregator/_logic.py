"""Ticks to bars, exactly as DESIGN.md section 6 says. Pure: no sockets, no wall clock.

Per symbol:

- The current 1m bucket ``[open, open + 1m)`` folds ticks (protocol.bars: open = first arrival,
  high/low over all, close = latest event time, volume = tick count).
- A 1m bar becomes final when a tick at or past its end arrives, or when the pipeline clock
  passes its end plus ``close_grace_ms``. A tick for a minute that is already final is late:
  counted, not applied.
- Minutes without ticks inside trading hours become flat synthetic bars at the previous close
  (volume 0, ``synthetic=True``), at most ``max_synth_gap_minutes`` in a row; none while the
  calendar says closed, none before the first real close is known. A replay's clock does not
  make them (``on_clock(..., synthesize=False)``): only a later tick shows that the data went
  on, so a replay yields the same bars at any speed and nothing after its last tick.
- Derived timeframes (5m .. 1d) fold final 1m bars only: open of the first, max high, min low,
  close of the last, summed volume; synthetic only if every minute in them was. A derived bar
  is final when its last minute is final (``protocol.bars.bucket_end``), when a later minute
  arrives, or when the market closes inside it and does not reopen before its end.

Gaps. After a fresh start, and after the session was lost (``on_session``), the ticks before
the first new tick were not seen: the minute that tick falls in is partial unless the tick
opens it exactly (``ts % 1m == 0``), and so are the derived buckets starting before that. The
aggregator never makes those final; it says so at once with a ``BarGap`` notice
(``take_notices``): no 1m bar of ``[from, to)`` and no derived bar holding one of those minutes
will come from here, and history_poller fills them from history as soon as each has ended.
While the session is lost, quiet minutes are not faked as synthetic either: nobody knows they
were quiet.

End of a replay. When the replay's file is exhausted (``on_replay_finished``) every minute the
data touched is final, and derived bars the market closes right after the data are too: the
replay's clock at speed 0 never moves past the last tick, so nothing else would close them.
The notice may overtake ticks still on their way (fxcm_session reports the end from a timer),
so it takes effect at the first clock reading with no tick since the one before it: clock and
ticks share one ordered stream, and the session drains its tick queue ahead of its timers.

Prices leave at the instrument's precision (``protocol.market.Precision``): on the mid basis
one decimal more than the quotes, so bars carry no float noise (``1.0999500000000002``).

Everything the aggregator knows is in ``snapshot()``, so a checkpointed restart that replays the
same ticks and clock readings emits the same final bars and notices.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from protocol.bars import Bucket, basis_price, bucket_end, bucket_start
from protocol.market import (
    MINUTE_MS,
    SOURCE_DERIVED,
    SOURCE_TICK,
    Bar,
    BarGap,
    Instrument,
    Precision,
    Tick,
)


class _Bucket(Bucket):
    """A bar being built (protocol.bars), in the form the checkpoint keeps."""

    __slots__ = ()

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
                 "partial_minute", "gap_end", "gap_from", "ended")

    def __init__(self) -> None:
        self.current: _Bucket | None = None
        self.next_minute: int | None = None  # open time of the next 1m bar to finalize
        self.last_close: float | None = None
        self.gap = 0  # synthetic minutes emitted in a row
        self.derived: dict[str, _Bucket] = {}
        self.fresh = True  # nothing seen since start or since the session was lost
        self.partial_minute: int | None = None  # the first minute after being fresh, if cut
        self.gap_end: int | None = None  # derived buckets opening before this are history's
        self.gap_from: int | None = None  # while fresh: the first minute not seen (None: any)
        self.ended = False  # the replay's data is over: no synthetic minutes after it

    def to_state(self) -> list[Any]:
        return [self.current.to_state() if self.current is not None else None,
                self.next_minute, self.last_close, self.gap,
                {tf: bucket.to_state() for tf, bucket in self.derived.items()},
                self.fresh, self.partial_minute, self.gap_end, self.gap_from, self.ended]

    def restore(self, state: list[Any]) -> None:
        (current, self.next_minute, self.last_close, self.gap, derived, self.fresh,
         self.partial_minute, self.gap_end, self.gap_from, self.ended) = state
        self.current = _Bucket.from_state(current) if current is not None else None
        self.derived = {tf: _Bucket.from_state(bucket) for tf, bucket in derived.items()}


class Aggregator:
    """The pure aggregation state of every symbol. Feed ``on_tick`` and ``on_clock``; both
    return the bars that became final (1m first, then what they completed), oldest first.
    ``take_notices`` hands over the BarGap notices made meanwhile."""

    def __init__(self, symbols: list[str], timeframes: list[str], basis: str,
                 close_grace_ms: int, max_synth_gap_minutes: int, calendar: Any,
                 precision: Precision | None = None) -> None:
        if "1m" not in timeframes:
            raise ValueError("the 1m timeframe is the layer of truth and cannot be left out")
        self.symbols = {symbol: _Symbol() for symbol in symbols}
        self.derived_tfs = [tf for tf in timeframes if tf != "1m"]
        self.basis = basis
        self.grace = close_grace_ms
        self.max_synth = max_synth_gap_minutes
        self.calendar = calendar
        self.precision = precision if precision is not None else Precision()
        self.counters: Counter[str] = Counter()
        self.notices: list[BarGap] = []
        self.end_armed = False  # the replay said it is finished; waiting for a quiet clock
        self.ticks_since_clock = False

    # -- input -----------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[Bar]:
        state = self.symbols.get(tick.symbol)
        if state is None:
            self.counters["unknown_symbol"] += 1
            return []
        self.ticks_since_clock = True
        price = basis_price(tick.bid, tick.ask, self.basis)
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
        state.ended = False
        if state.fresh:
            self._first_tick(tick.symbol, state, tick.ts_ms, minute)
        else:
            self._advance(tick.symbol, state, minute, out)
        state.current = _Bucket(minute, price, tick.ts_ms)
        self.counters["ticks"] += 1
        return out

    def on_clock(self, now_ms: int, synthesize: bool = True) -> list[Bar]:
        """The pipeline clock passed ``now_ms``: close what the grace period allows. A
        replay's clock passes ``synthesize=False`` (see the module docstring)."""
        out: list[Bar] = []
        if self.end_armed and not self.ticks_since_clock:
            self.end_armed = False
            out += self._end_of_data()
        self.ticks_since_clock = False
        horizon = now_ms - self.grace  # minutes ending at or before this are final
        for symbol, state in self.symbols.items():
            current = state.current
            if current is not None and current.open_time + MINUTE_MS <= horizon:
                self._finalize_current(symbol, state, out)
            if synthesize and state.next_minute is not None:
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
            if not state.fresh:
                state.gap_from = state.next_minute
            state.current = None
            state.fresh = True
            if state.derived:
                self.counters["partial_derived_dropped"] += len(state.derived)
            state.derived.clear()

    def on_replay_finished(self) -> None:
        """The replay's file is exhausted: at the next quiet clock reading, every minute the
        data touched becomes final (see the module docstring)."""
        self.end_armed = True
        self.ticks_since_clock = False

    def on_instrument(self, instrument: Instrument) -> None:
        if instrument.symbol in self.symbols and self.precision.learn(instrument):
            self.counters["instrument_updates"] += 1

    def previews(self) -> list[Bar]:
        """The forming 1m bars (``complete=False``), for live previews."""
        return [self._bar(symbol, "1m", state.current, complete=False)
                for symbol, state in self.symbols.items() if state.current is not None]

    def take_notices(self) -> list[BarGap]:
        notices, self.notices = self.notices, []
        return notices

    # -- 1m --------------------------------------------------------------------------------

    def _first_tick(self, symbol: str, state: _Symbol, ts_ms: int, minute: int) -> None:
        """The first tick after a fresh start or a lost session: what came before it was not
        seen. Its minute is whole only if the tick opens it; derived buckets opening before the
        first whole minute are partial. Both are left to history, said in a BarGap."""
        state.fresh = False
        whole = ts_ms == minute
        state.partial_minute = None if whole else minute
        state.gap_end = minute if whole else minute + MINUTE_MS
        state.next_minute = minute
        state.derived.clear()
        self.notices.append(BarGap(symbol, state.gap_from, state.gap_end))
        self.counters["gap_notices"] += 1
        state.gap_from = None

    def _finalize_current(self, symbol: str, state: _Symbol, out: list[Bar]) -> None:
        current = state.current
        if current is None:
            return
        state.current = None
        state.last_close = current.close
        state.next_minute = current.open_time + MINUTE_MS
        state.gap = 0
        if current.open_time == state.partial_minute:
            self.counters["partial_minutes_skipped"] += 1
            return
        self.counters["bars_1m"] += 1
        self._final_1m(symbol, state, self._bar(symbol, "1m", current, complete=True), out)

    def _advance(self, symbol: str, state: _Symbol, until: int, out: list[Bar]) -> None:
        """Account for every quiet minute before ``until``: a synthetic bar inside trading
        hours (up to the cap), nothing when closed."""
        minute = state.next_minute
        if minute is None or state.last_close is None or state.fresh or state.ended:
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

    def _end_of_data(self) -> list[Bar]:
        out: list[Bar] = []
        for symbol, state in self.symbols.items():
            if state.fresh or state.ended:
                continue
            self._finalize_current(symbol, state, out)
            if state.next_minute is not None:
                self._close_derived_if_closed(symbol, state, state.next_minute, out)
            state.ended = True
            self.counters["ended_by_replay"] += 1
        return out

    # -- derived ---------------------------------------------------------------------------

    def _bucket_end(self, open_time: int, tf: str) -> int:
        return bucket_end(open_time, tf, self.calendar.next_trading_day_start)

    def _final_1m(self, symbol: str, state: _Symbol, bar: Bar, out: list[Bar]) -> None:
        out.append(bar)
        day_start = self.calendar.trading_day_start
        for tf in self.derived_tfs:
            start = bucket_start(bar.open_time, tf, day_start)
            if state.gap_end is not None and start < state.gap_end:
                continue  # holds a minute this run did not see whole: history builds it
            bucket = state.derived.get(tf)
            if bucket is not None and bucket.open_time != start:
                out.append(self._bar(symbol, tf, bucket, complete=True))
                self.counters["bars_derived"] += 1
                bucket = None
            if bucket is None:
                bucket = _Bucket.of_minute(start, bar)
                state.derived[tf] = bucket
            else:
                bucket.add_minute(bar)
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
        if self.calendar.is_open(now_ms - self.grace, symbol):
            return
        self._close_derived_if_closed(symbol, state, now_ms, out)

    def _close_derived_if_closed(self, symbol: str, state: _Symbol, at_ms: int,
                                 out: list[Bar]) -> None:
        """Emit the derived bars the market is closed for from ``at_ms`` to their end."""
        if not state.derived or self.calendar.is_open(at_ms, symbol):
            return
        reopen = self.calendar.next_open(at_ms, symbol)
        for tf in list(state.derived):
            bucket = state.derived[tf]
            if reopen >= self._bucket_end(bucket.open_time, tf):
                out.append(self._bar(symbol, tf, bucket, complete=True))
                self.counters["bars_derived"] += 1
                self.counters["closed_by_market"] += 1
                del state.derived[tf]

    # -- output ----------------------------------------------------------------------------

    def _bar(self, symbol: str, tf: str, bucket: _Bucket, complete: bool) -> Bar:
        return bucket.to_bar(symbol, tf, complete, SOURCE_TICK if tf == "1m" else SOURCE_DERIVED,
                             self.precision.for_basis(symbol, self.basis))

    # -- checkpoint ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "symbols": {symbol: state.to_state() for symbol, state in self.symbols.items()},
            "counters": dict(self.counters),
            "digits": self.precision.snapshot(),
            "end": [self.end_armed, self.ticks_since_clock],
            "notices": [[n.symbol, n.from_ms, n.to_ms] for n in self.notices],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        for symbol, state in snapshot["symbols"].items():
            known = self.symbols.get(symbol)
            if known is None:
                continue  # a symbol dropped from the configuration
            known.restore(state)
        self.counters = Counter(snapshot.get("counters", {}))
        self.precision.restore(snapshot.get("digits"))
        self.end_armed, self.ticks_since_clock = snapshot.get("end", [False, False])
        self.notices = [BarGap(str(s), f, int(t)) for s, f, t in snapshot.get("notices", [])]
