"""The generated tick file and the reference: the pure Aggregator folded over it in order."""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass
from pathlib import Path

from actors.tick_aggregator import Aggregator
from config.calendar import load_calendar
from protocol.market import TIMEFRAMES, Bar, Tick

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "AUDUSD", "USDCAD", "USDCHF", "NZDUSD",
           "EURJPY", "GBPJPY", "EURGBP", "XAGUSD", "AUDJPY")
_START_PRICE = {"USDJPY": 150.0, "EURJPY": 162.0, "GBPJPY": 190.0, "AUDJPY": 98.0,
                "XAUUSD": 2650.0, "XAGUSD": 31.0}
# Wednesday 2026-11-18 09:00 UTC: inside trading hours of the shipped calendar all along.
START_MS = 1_794_992_400_000


@dataclass(frozen=True)
class TickFile:
    path: Path
    symbols: tuple[str, ...]
    ticks: list[Tick]
    first_ms: int
    last_ms: int

    @property
    def span_seconds(self) -> float:
        return (self.last_ms - self.first_ms) / 1000.0


def generate(path: Path, symbols: int, count: int, span_minutes: float, seed: int) -> TickFile:
    """``count`` ticks over ``span_minutes`` of event time, non-decreasing times, a random walk
    per symbol (a seeded file: the same arguments give the same bytes)."""
    if not 1 <= symbols <= len(SYMBOLS):
        raise ValueError("--symbols must be 1..{}".format(len(SYMBOLS)))
    rng = random.Random(seed)
    names = SYMBOLS[:symbols]
    price = {name: _START_PRICE.get(name, 1.1) for name in names}
    mean_step = span_minutes * 60_000.0 / count
    ts = START_MS
    ticks: list[Tick] = []
    for _ in range(count):
        ts += int(rng.random() * 2 * mean_step)
        symbol = rng.choice(names)
        mid = price[symbol] * (1.0 + rng.gauss(0.0, 0.00005))
        digits = 2 if price[symbol] > 500 else (3 if price[symbol] > 20 else 5)
        spread = 10.0 ** -digits * 2
        bid = round(mid, digits)
        price[symbol] = bid
        ticks.append(Tick(symbol, ts, bid, round(bid + spread, digits)))
    lines = ["ts_ms,symbol,bid,ask"] + ["{},{},{!r},{!r}".format(t.ts_ms, t.symbol, t.bid, t.ask)
                                        for t in ticks]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1))
    return TickFile(path, names, ticks, ticks[0].ts_ms, ticks[-1].ts_ms)


def expected_finals(file: TickFile, grace_ms: int, max_synth: int
                    ) -> dict[tuple[str, str, int], Bar]:
    """The final bars of an uninterrupted aggregation of the file's ticks, in order (no clock:
    the newest minute of each symbol is never final here)."""
    oracle = Aggregator(list(file.symbols), list(TIMEFRAMES), "mid", grace_ms, max_synth,
                        load_calendar())
    result: dict[tuple[str, str, int], Bar] = {}
    for tick in file.ticks:
        for bar in oracle.on_tick(tick):
            if bar.complete:
                if bar.key in result:
                    raise AssertionError("the reference emitted {} twice".format(bar.key))
                result[bar.key] = bar
    return result
