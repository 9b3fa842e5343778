"""The ``replay`` broker: ticks from a CSV file, at a chosen speed, with history from the same file.

The file (format, bad rows, the index): see ``_replay_input``. It is read as a stream: once at
start to index it (history, the row count, every bad row counted with its line number), then
again by the stream thread, one line at a time; a bad row never reaches fxcm_session. A file
without a single valid row streams nothing and has no clock (nobody sees a time of 1970).

Speed: 1 is real time, 10 ten times faster, 0 as fast as the pipeline takes the ticks (the
delivery then waits for room in fxcm_session's tick queue instead of dropping).

The replay clock starts at the first tick's time; at speed s > 0 it runs at s times the wall
clock from the start of streaming, but never passes the next row not yet handed over (a stream
thread starved of CPU for a moment must not let the clock close the minute of ticks it has yet
to deliver, which would make them late); at speed 0 it is the time of the latest tick delivered.
History answers only what the clock has passed, so a replay never reveals its own future.

Restarts. After a session restart a real feed streams from "now": the ticks sent meanwhile are
lost, tick_aggregator leaves the minutes it did not see whole to history, and history_poller
fetches them. A replay must not start its file again instead (that re-sends ticks already
folded). So its timeline (``keep_timeline``) is kept in a small JSON file in the run dir, written
atomically before the rows it covers are handed over: the wall and replay time at which
streaming began (the pace's anchor) and, at speed 0, how far rows may have been handed over. A
restarted instance of the same host run (the same router id) resumes where the clock stands:

- speed > 0: at the paced time now, as if the stream had run on while the session was down;
  rows whose time came meanwhile are skipped (lost, like a real outage);
- speed 0: after the reserved rows: rows are reserved ``RESERVE_ROWS`` at a time, persisted
  before the first of them is handed over, so a crash loses at most that many (and what waited
  in the session's queue) and never sends one twice.

Positions (``position``, ``resumed_at``, ``rows``) count the file's data lines, bad ones
included. A file of another run (the host restarted), or of another file or speed, is
discarded: a new host run replays its file from the first row.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional

from actors.fxcm_session._broker import StreamingBroker
from actors.fxcm_session._replay_input import ReplayIndex
from protocol.bars import basis_price, fold
from protocol.errors import BrokerError, ConfigError

log = logging.getLogger("fxcm.session")

TIMELINE_FORMAT = 2
# Speed 0: rows reserved (and persisted) per write of the timeline. A write costs tens of
# microseconds; at the 70k rows/s of a speed-0 replay this is a few dozen writes a second, and
# at most this many rows are lost to a crash.
RESERVE_ROWS = 2048
# A monotonic reading further than this from the wall clock's view of the same interval comes
# from another clock base (another boot): the wall clock is used instead.
_CLOCK_DISAGREEMENT_SECONDS = 60.0


class TimelineFile(object):
    """The replay's timeline on disk: one JSON object, replaced atomically (a temporary file
    renamed over it), valid only for one host run (``run``) and one replay (``identity``: the
    file, its size and time, the speed, the row count). Not fsynced: it must outlive a crashed
    instance, which the page cache does; a reboot ends the host run anyway."""

    def __init__(self, path: str, run: str, identity: Dict[str, Any]) -> None:
        self.path = path
        self.run = run
        self.identity = identity
        self.writes = 0
        self.errors = 0

    def load(self) -> Optional[Dict[str, Any]]:
        """What an earlier instance of this run saved for the same replay, or None."""
        try:
            with open(self.path, "r", encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("replay timeline %s unreadable (%s): replaying from the first row",
                        self.path, exc)
            return None
        if not isinstance(data, dict) or data.get("format") != TIMELINE_FORMAT \
                or data.get("run") != self.run:
            return None  # another host run's: this one starts afresh
        if data.get("identity") != self.identity:
            log.warning("replay timeline %s is for another file or speed (%s): replaying from "
                        "the first row", self.path, data.get("identity"))
            return None
        return data

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("replay timeline %s: cannot remove it (%s)", self.path, exc)

    def save(self, state: Dict[str, Any]) -> None:
        """Never raises: the stream must go on. A failed write is logged once and counted; a
        restart may then resume from an older state (re-sending ticks at speed 0)."""
        data = dict(state)
        data.update({"format": TIMELINE_FORMAT, "run": self.run, "identity": self.identity,
                     "saved_at": time.time()})
        # Per writer: an old instance's stream thread still ending must not share the file.
        temporary = "{}.{}.{}.tmp".format(self.path, os.getpid(), threading.get_ident())
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(temporary, self.path)
            self.writes += 1
        except (OSError, TypeError, ValueError) as exc:
            self.errors += 1
            if self.errors == 1:
                log.error("replay timeline %s: cannot write it (%s); a restarted session may "
                          "resume from an older position", self.path, exc)

    def status(self) -> Dict[str, Any]:
        return {"path": self.path, "writes": self.writes, "errors": self.errors}


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
        self.index = ReplayIndex(self.path)
        self.lines = self.index.lines
        self._first_ts = self.index.first_ts if self.index.first_ts is not None else 0
        self._position = 0  # data lines before this one are done (handed over or bad)
        self._pending_ts: Optional[int] = None  # the row being handed over (or just handed)
        self._last_ts = self._first_ts
        self._started_wall: Optional[float] = None
        self._started_epoch = 0.0  # time.time() with _started_wall, for the timeline file
        self._clock_at_start = self._first_ts
        self._finished = self.index.first_ts is None
        self.delivered = 0
        self._timeline: Optional[TimelineFile] = None
        self._reserved = 0  # lines before this index may have been handed over (persisted)
        self.resumed_at: Optional[int] = None  # the line a restarted instance resumed at

    def clock_settled(self) -> bool:
        """No valid row, no time at all: better no clock than one at 1970."""
        return self.index.first_ts is not None

    def clock_ms(self) -> int:
        now = self._paced_ms()
        upcoming = self._pending_ts
        if upcoming is not None and upcoming <= now:
            now = max(upcoming - 1, self._last_ts)
        return now

    def _paced_ms(self) -> int:
        """The wall-paced replay time (speed > 0), which the stream thread delivers up to."""
        if self.speed > 0 and self._started_wall is not None:
            elapsed = time.monotonic() - self._started_wall
            return int(self._clock_at_start + elapsed * 1000.0 * self.speed)
        return self._last_ts

    def keep_timeline(self, path: str, run: str) -> bool:
        """See ``Broker.keep_timeline`` and the module docstring."""
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            log.warning("replay file %s: %s; its timeline is not kept", self.path, exc)
            return False
        identity = {"file": os.path.abspath(self.path), "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns, "speed": self.speed, "rows": self.lines}
        timeline = TimelineFile(path, run, identity)
        self._timeline = timeline
        state = timeline.load()
        if state is None:
            timeline.discard()  # a previous host run's: this run replays from the first row
            return False
        try:
            self._resume(state)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("replay timeline %s malformed (%s): replaying from the first row",
                        path, exc)
            timeline.discard()
            return False
        return True

    def _resume(self, state: Dict[str, Any]) -> None:
        """Take over an earlier instance's place: at the paced time now (speed > 0) or after
        its reserved rows (speed 0); never before a row it may have handed over."""
        reserved = int(state["reserved"])
        clock: Optional[int] = None
        if self.speed > 0:
            elapsed = time.monotonic() - float(state["anchor_monotonic"])
            by_wall = time.time() - float(state["anchor_epoch"])
            if elapsed < 0 or abs(elapsed - by_wall) > _CLOCK_DISAGREEMENT_SECONDS:
                elapsed = max(0.0, by_wall)
            clock = int(int(state["anchor_clock"]) + elapsed * 1000.0 * self.speed)
            position = max(reserved, self._first_row_after(clock))
        else:
            position = reserved
        position = max(0, min(position, self.lines))
        last = self._newest_before(position)
        if clock is not None:
            # The clock stands at the resumed time (not back at the last row before it) and
            # waits there until streaming starts: the next row is after it.
            last = max(last, clock)
        self._position = position
        self._reserved = position
        self._last_ts = last
        self._finished = position >= self.lines or self.index.first_ts is None
        self.resumed_at = position
        log.warning("replay %s resumed at row %d of %d, clock %d (the rows sent while the "
                    "session was down are lost, as from a real feed)", self.path, position,
                    self.lines, last)

    def _first_row_after(self, clock: int) -> int:
        """The first row the stream had not reached at replay time ``clock``: a row goes out
        once the pace reaches the newest time up to it (rows are delivered in file order)."""
        newest: Optional[int] = None
        for position, row in self.index.read_rows():
            if row is None:
                continue
            if newest is None or row[0] > newest:
                newest = row[0]
            if newest > clock:
                return position
        return self.lines

    def _newest_before(self, position: int) -> int:
        """The newest time among the rows before ``position`` (the first row's time if none)."""
        last = self._first_ts
        if position <= 0:
            return last
        for index, row in self.index.read_rows():
            if index >= position:
                break
            if row is not None and row[0] > last:
                last = row[0]
        return last

    def _save_timeline(self) -> None:
        timeline = self._timeline
        if timeline is not None:
            timeline.save({"anchor_monotonic": self._started_wall,
                           "anchor_epoch": self._started_epoch,
                           "anchor_clock": self._clock_at_start, "reserved": self._reserved})

    def login(self) -> None:
        self._connected = True

    def logout(self) -> None:
        self.unsubscribe()
        self._connected = False

    def _stream(self, stop: threading.Event) -> None:
        # The clock resumes where it stood, so a reconnect does not jump over the file.
        self._clock_at_start = self.clock_ms()
        self._started_wall = time.monotonic()
        self._started_epoch = time.time()
        self._reserved = max(self._reserved, self._position)
        # The anchor is on disk before a row is handed over under it (see the module docstring).
        self._save_timeline()
        if self._finished:
            return
        reserving = self.speed <= 0 and self._timeline is not None
        lines = self.lines
        speed = self.speed
        rows = self.index.read_rows(self._position)
        try:
            for position, row in rows:
                if stop.is_set():
                    return
                if row is None:  # bad or blank: counted by the index, never handed over
                    self._position = position + 1
                    continue
                ts_ms, symbol, bid, ask = row
                self._pending_ts = ts_ms
                if speed > 0:
                    while True:
                        wait = (ts_ms - self._paced_ms()) / 1000.0 / speed
                        if wait <= 0:
                            break
                        if stop.wait(min(wait, 0.25)):
                            return
                if reserving and position >= self._reserved:
                    self._reserved = min(lines, position + RESERVE_ROWS)
                    self._save_timeline()
                callback = self.on_tick
                if callback is not None:
                    callback(symbol, ts_ms, bid, ask)
                if ts_ms > self._last_ts:
                    self._last_ts = ts_ms
                self._position = position + 1
                self.delivered += 1
        finally:
            rows.close()
        if not stop.is_set():
            self._position = lines
        if self._position >= lines:
            self._pending_ts = None
            self._finished = True

    def finished(self) -> bool:
        return self._finished

    def get_history(self, symbol: str, tf: str, from_ms: Optional[int], to_ms: Optional[int],
                    count: int, basis: str) -> List[List[float]]:
        if not self._connected:
            raise BrokerError("not logged in")
        entry = self.index.symbols.get(symbol)
        if entry is None:
            return []
        now = self.clock_ms()
        end = now if to_ms is None else min(to_ms, now)
        low, high = entry.between(from_ms, end)
        times, bids, asks = entry.times, entry.bids, entry.asks
        points = ((times[i], basis_price(bids[i], asks[i], basis)) for i in range(low, high))
        rows = [[start, bar.open, bar.high, bar.low, bar.close, float(bar.count)]
                for start, bar in fold(points, tf, self.trading_day_start)]
        return rows[-count:] if count > 0 else rows

    def metrics(self) -> Dict[str, Any]:
        counts = self.index.rejections.counts
        return {"fxcm_replay_rejected_rows_total": {
            "type": "counter", "help": "Replay file rows rejected at start, by reason (line "
            "numbers in fxcm_session's status: broker.input.rejected)",
            "samples": [[{"reason": reason}, float(count)] for reason, count in
                        sorted(counts.items())]}}

    def status(self) -> Dict[str, Any]:
        result: Dict[str, Any] = {"kind": self.kind, "file": self.path, "speed": self.speed,
                                  "rows": self.lines, "delivered": self.delivered,
                                  "finished": self._finished, "position": self._position,
                                  "resumed_at": self.resumed_at, "input": self.index.status()}
        if self.clock_settled():
            result["clock_ms"] = self.clock_ms()
        if self._timeline is not None:
            result["timeline"] = self._timeline.status()
        return result
