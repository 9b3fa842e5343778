"""The ``replay`` broker: ticks from a CSV file, at a chosen speed, with history from the same file.

File: header ``ts_ms,symbol,bid,ask``; gzip when the name ends in ``.gz``; symbols as ``EUR/USD``
or ``EURUSD``. Rows are delivered in file order; values are passed on as read (a row with a
missing time or a bad price reaches fxcm_session, which rejects and counts it).

Speed: 1 is real time, 10 ten times faster, 0 as fast as the pipeline takes the ticks (the
delivery then waits for room in fxcm_session's tick queue instead of dropping).

The replay clock starts at the first tick's time; at speed s > 0 it runs at s times the wall
clock from the start of streaming, but never passes the next row not yet handed over (a stream
thread starved of CPU for a moment must not let the clock close the minute of ticks it has yet
to deliver, which would make them late); at speed 0 it is the time of the latest tick delivered.
History answers only what the clock has passed, so a replay never reveals its own future.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import math
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from actors.fxcm_session._broker import StreamingBroker, basis_price
from protocol.bars import fold
from protocol.errors import BrokerError, ConfigError, ProtocolError
from protocol.market import normalize_symbol

Row = Tuple[Optional[int], str, Any, Any]


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text  # rejected downstream, by reason


def read_ticks(path: str) -> List[Row]:
    """The file's rows as ``(ts_ms or None, symbol, bid, ask)``; raises ConfigError when the
    file is missing or has no ``ts_ms,symbol,bid,ask`` header."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        raw = opener(path, "rb")
    except OSError as exc:
        raise ConfigError("replay file {}: {}".format(path, exc.strerror)) from exc
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["ts_ms", "symbol", "bid", "ask"]:
            raise ConfigError("replay file {}: the header must be ts_ms,symbol,bid,ask, got {}"
                              .format(path, header))
        rows: List[Row] = []
        for line in reader:
            if not line:
                continue
            line = line + [""] * (4 - len(line))
            ts_text = line[0].strip()
            try:
                ts_ms: Optional[int] = int(float(ts_text)) if ts_text else None
            except ValueError:
                ts_ms = None
            rows.append((ts_ms, line[1].strip(), _number(line[2].strip()),
                         _number(line[3].strip())))
    return rows


class ReplayBroker(StreamingBroker):
    kind = "replay"
    blocking_ticks = True

    def __init__(self, settings: Dict[str, Any], trading_day_start: Any) -> None:
        super(ReplayBroker, self).__init__()
        self.path = str(settings["file"])
        self.speed = float(settings.get("speed", 1.0))
        if self.speed < 0:
            raise ConfigError("broker.replay.speed: must be >= 0, got {}".format(self.speed))
        self.trading_day_start = trading_day_start
        self.rows = read_ticks(self.path)
        self._index: Dict[str, Tuple[List[int], List[float], List[float]]] = {}
        for ts_ms, symbol, bid, ask in self.rows:
            if ts_ms is None or not isinstance(bid, float) or not isinstance(ask, float):
                continue
            if math.isnan(bid) or math.isnan(ask) or bid > ask:
                continue
            try:
                name = normalize_symbol(symbol)
            except ProtocolError:
                continue
            times, bids, asks = self._index.setdefault(name, ([], [], []))
            times.append(ts_ms)
            bids.append(bid)
            asks.append(ask)
        first = next((row[0] for row in self.rows if row[0] is not None), None)
        self._first_ts = first if first is not None else 0
        self._position = 0
        self._last_ts = self._first_ts
        self._started_wall: Optional[float] = None
        self._clock_at_start = self._first_ts
        self._finished = not self.rows
        self.delivered = 0

    def clock_ms(self) -> int:
        now = self._paced_ms()
        position = self._position
        if position < len(self.rows):
            upcoming = self.rows[position][0]
            if upcoming is not None and upcoming <= now:
                now = max(upcoming - 1, self._last_ts)
        return now

    def _paced_ms(self) -> int:
        """The wall-paced replay time (speed > 0), which the stream thread delivers up to."""
        if self.speed > 0 and self._started_wall is not None:
            elapsed = time.monotonic() - self._started_wall
            return int(self._clock_at_start + elapsed * 1000.0 * self.speed)
        return self._last_ts

    def login(self) -> None:
        self._connected = True

    def logout(self) -> None:
        self.unsubscribe()
        self._connected = False

    def _stream(self, stop: threading.Event) -> None:
        # The clock resumes where it stood, so a reconnect does not jump over the file.
        self._clock_at_start = self.clock_ms()
        self._started_wall = time.monotonic()
        rows = self.rows
        while self._position < len(rows) and not stop.is_set():
            ts_ms, symbol, bid, ask = rows[self._position]
            if self.speed > 0 and ts_ms is not None:
                wait = (ts_ms - self._paced_ms()) / 1000.0 / self.speed
                if wait > 0:
                    if stop.wait(min(wait, 0.25)):
                        return
                    continue
            callback = self.on_tick
            if callback is not None:
                callback(symbol, ts_ms, bid, ask)
            if ts_ms is not None and ts_ms > self._last_ts:
                self._last_ts = ts_ms
            self._position += 1
            self.delivered += 1
        if self._position >= len(rows):
            self._finished = True

    def finished(self) -> bool:
        return self._finished

    def get_history(self, symbol: str, tf: str, from_ms: Optional[int], to_ms: Optional[int],
                    count: int, basis: str) -> List[List[float]]:
        if not self._connected:
            raise BrokerError("not logged in")
        times, bids, asks = self._index.get(symbol, ([], [], []))
        now = self.clock_ms()
        end = now if to_ms is None else min(to_ms, now)
        high = bisect.bisect_right(times, end)
        low = 0 if from_ms is None else bisect.bisect_left(times, from_ms)
        points = ((times[i], basis_price(bids[i], asks[i], basis)) for i in range(low, high))
        rows = [[start, bar.open, bar.high, bar.low, bar.close, float(bar.count)]
                for start, bar in fold(points, tf, self.trading_day_start)]
        return rows[-count:] if count > 0 else rows

    def status(self) -> Dict[str, Any]:
        return {"kind": self.kind, "file": self.path, "speed": self.speed,
                "rows": len(self.rows), "delivered": self.delivered,
                "finished": self._finished, "clock_ms": self.clock_ms()}

