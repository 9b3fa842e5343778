"""The snapshotter's pure logic: the newest quote per symbol, the snapshot cycle, telemetry.

No sockets and no clock of its own: every method takes the time it needs, so tests drive it.
Two clocks, each for what it measures:

- ``now`` (float seconds since the epoch): snapshot times (``snap_ts``) and the age of a quote
  (``tick_age`` = now - ``tick_ts``), both compared with the broker's event times;
- ``mono`` (monotonic seconds): ``tick_silence_seconds``, the time since the last tick *arrived*,
  which a wall-clock step cannot fake.

What a cycle publishes (seed 000 sections 4.3 and 4.6): one snapshot per symbol that has ever
had a quote, carrying its newest quote; at most one per symbol per cycle; nothing for a symbol
without a quote. An unchanged quote is published again with a new ``snap_ts`` and its old
``tick_ts``, as the predecessor did (its ``last_by_symbol`` was never cleared): the payload is
idempotent, and a consumer judges freshness by ``tick_ts`` (seed 001 section 1.1.1).

Prices carry the instrument's precision (``protocol.market.Precision``): bid and ask at its
digits, the mid one digit finer, so no float noise (``1.1032899999999999``) reaches the wire.

``snap_ts`` is the same for every snapshot of a cycle and never earlier than the newest
``tick_ts`` in it: a broker clock running ahead of ours is counted (``clock_ahead``), never
published as a snapshot taken before its own tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.bars import basis_price
from protocol.market import Precision, PriceSnapshot, Tick, round_price

WAITING = "waiting"
OK = "ok"
STALE = "stale"
STOPPED = "stopped"
STATES = (OK, WAITING, STALE, STOPPED)


@dataclass
class Quote:
    """The newest tick of one symbol and what became of it."""

    tick: Tick
    arrived_mono: float
    ticks: int = 1
    snapshots: int = 0


class PriceBook:
    """Newest quote per symbol; ``cycle`` makes the snapshots, ``telemetry`` the price_stream."""

    def __init__(self, interval_seconds: float, stale_seconds: float, started_mono: float,
                 precision: Precision | None = None) -> None:
        self.precision = precision if precision is not None else Precision()
        self.interval_seconds = interval_seconds
        self.stale_seconds = stale_seconds
        self.started_mono = started_mono
        self.quotes: dict[str, Quote] = {}
        self.stopped = False
        self.last_tick_mono: float | None = None
        self.last_snap_ts: float | None = None
        self.cycles = 0
        self.out_of_order = 0
        self.clock_ahead = 0
        self.max_clock_ahead_seconds = 0.0

    def update(self, tick: Tick, mono: float) -> bool:
        """Take a tick; an older one than the symbol's newest is counted and ignored."""
        self.last_tick_mono = mono
        quote = self.quotes.get(tick.symbol)
        if quote is None:
            self.quotes[tick.symbol] = Quote(tick, mono)
            return True
        quote.ticks += 1
        quote.arrived_mono = mono
        if tick.ts_ms < quote.tick.ts_ms:
            self.out_of_order += 1
            return False
        quote.tick = tick
        return True

    def cycle(self, now: float) -> list[PriceSnapshot]:
        """The snapshots of one cycle at wall time ``now``: one per quoted symbol, by symbol."""
        self.cycles += 1
        if not self.quotes:
            return []
        newest = max(quote.tick.ts_ms for quote in self.quotes.values()) / 1000.0
        snap_ts = now
        if newest > now:
            self.clock_ahead += 1
            self.max_clock_ahead_seconds = max(self.max_clock_ahead_seconds, newest - now)
            snap_ts = newest
        snapshots = []
        for symbol in sorted(self.quotes):
            quote = self.quotes[symbol]
            tick = quote.tick
            bid, ask, mid = self.prices(tick)
            snapshots.append(PriceSnapshot(symbol, bid, ask, mid, tick.ts_ms / 1000.0, snap_ts))
            quote.snapshots += 1
        self.last_snap_ts = snap_ts
        return snapshots

    def prices(self, tick: Tick) -> tuple[float, float, float]:
        """Bid, ask and mid of ``tick`` at the instrument's precision."""
        digits = self.precision.digits(tick.symbol)
        return (round_price(tick.bid, digits), round_price(tick.ask, digits),
                round_price(basis_price(tick.bid, tick.ask, "mid"),
                            self.precision.for_basis(tick.symbol, "mid")))

    def tick_silence(self, mono: float) -> float:
        """Seconds since the last tick arrived (since the start, before the first one)."""
        since = self.last_tick_mono if self.last_tick_mono is not None else self.started_mono
        return max(0.0, mono - since)

    def state(self, mono: float) -> str:
        if self.stopped:
            return STOPPED
        if self.last_tick_mono is None:
            return WAITING
        return STALE if self.tick_silence(mono) > self.stale_seconds else OK

    def telemetry(self, now: float, mono: float) -> dict[str, Any]:
        """The ``price_stream`` block of heartbeat (seed 000 section 3, Stage 1 item 3; seed 001
        section 9.1): ``last_snap_ts`` and ``last_tick_ts`` in milliseconds as in the seed's
        example, ``tick_ts`` of each symbol in seconds as in ``price_tik``."""
        newest_tick = max((quote.tick.ts_ms for quote in self.quotes.values()), default=None)
        symbols_state = {}
        for symbol in sorted(self.quotes):
            quote = self.quotes[symbol]
            tick = quote.tick
            bid, ask, mid = self.prices(tick)
            symbols_state[symbol] = {
                "bid": bid, "ask": ask, "mid": mid,
                "tick_ts": tick.ts_ms / 1000.0,
                "tick_age": round(max(0.0, now - tick.ts_ms / 1000.0), 3),
                "silence_seconds": round(max(0.0, mono - quote.arrived_mono), 3),
                "ticks": quote.ticks, "snapshots": quote.snapshots,
            }
        return {
            "state": self.state(mono),
            "symbols": sorted(self.quotes),
            "interval_seconds": self.interval_seconds,
            "stale_seconds": self.stale_seconds,
            "tick_silence_seconds": round(self.tick_silence(mono), 3),
            "last_snap_ts": self.last_snap_ts * 1000.0 if self.last_snap_ts is not None
            else None,
            "last_tick_ts": float(newest_tick) if newest_tick is not None else None,
            "symbols_state": symbols_state,
            "cycles": self.cycles,
            "out_of_order_ticks": self.out_of_order,
            "clock_ahead": self.clock_ahead,
            "max_clock_ahead_seconds": round(self.max_clock_ahead_seconds, 3),
        }
