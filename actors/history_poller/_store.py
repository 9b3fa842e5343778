"""The bar store: the single on-disk truth for final bars, written only by history_poller.

Layout: ``<dir>/<SYMBOL>/<tf>.bars``, one file per (symbol, tf). A file is a header line and then
one line per bar::

    # fxcm-bars v1 EURUSD 1m
    <open_time>,<open>,<high>,<low>,<close>,<volume>,<tick_count>,<synthetic>,<source>,<crc32>

New bars are appended (flushed, not fsynced, per write); ``compact()`` rewrites the newest
``max_bars`` into a temporary file, fsyncs it and renames it over the old one, so a crash
leaves either the old file or the new one. The CRC32 of each line makes a garbled or truncated
line detectable: such a file is quarantined (renamed to ``.corrupt-<time>``), counted and
reported, and the key range is refetched from history by the poller.

One final per key ``(symbol, tf, open_time)``: the same values again is a duplicate (ignored);
different values are a conflict (counted, logged loudly, never an overwrite).

An IO error (a read-only or full disk) switches the store to read-only: it keeps serving and
accepting bars in memory, counts the error (``fxcm_connector_errors_total{type="cache_io"}`` in
the predecessor's words), and says so in status.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
import zlib
from collections import Counter
from typing import Any

from protocol.market import TF_MS, Bar

log = logging.getLogger("fxcm.store")

HEADER = "# fxcm-bars v1 {} {}\n"


class CorruptFile(Exception):
    pass


def _line(bar: Bar) -> str:
    body = "{},{!r},{!r},{!r},{!r},{!r},{},{},{}".format(
        bar.open_time, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.tick_count,
        1 if bar.synthetic else 0, bar.source)
    return "{},{:08x}\n".format(body, zlib.crc32(body.encode()))


def _parse(line: str, symbol: str, tf: str) -> Bar:
    body, _, crc = line.rstrip("\n").rpartition(",")
    if not line.endswith("\n") or not body or int(crc, 16) != zlib.crc32(body.encode()):
        raise CorruptFile("bad checksum")
    fields = body.split(",")
    if len(fields) != 9:
        raise CorruptFile("expected 9 fields, got {}".format(len(fields)))
    open_time = int(fields[0])
    bar = Bar(symbol, tf, open_time, open_time + TF_MS[tf] - 1, float(fields[1]),
              float(fields[2]), float(fields[3]), float(fields[4]), float(fields[5]),
              int(fields[6]), True, fields[7] == "1", fields[8])
    # A right checksum over wrong values (written by hand, or by another program): never a
    # final bar. NaN fails every comparison.
    if not (0 < bar.low <= min(bar.open, bar.close) and max(bar.open, bar.close) <= bar.high
            < math.inf and 0 <= bar.volume < math.inf and bar.tick_count >= 0
            and (tf in ("4h", "1d") or open_time % TF_MS[tf] == 0)):
        raise CorruptFile("impossible values at open_time {}: o={} h={} l={} c={} v={}".format(
            open_time, bar.open, bar.high, bar.low, bar.close, bar.volume))
    return bar


class Series:
    """The bars of one (symbol, tf) by open time, in order. Bars mostly come in order (an
    append); repairs put older ones in between, which costs one ``insort`` each, not a sort."""

    __slots__ = ("by_time", "order")

    def __init__(self) -> None:
        self.by_time: dict[int, Bar] = {}
        self.order: list[int] = []

    def __len__(self) -> int:
        return len(self.order)

    def get(self, open_time: int) -> Bar | None:
        return self.by_time.get(open_time)

    def put(self, bar: Bar) -> None:
        if not self.order or bar.open_time > self.order[-1]:
            self.order.append(bar.open_time)
        else:
            bisect.insort(self.order, bar.open_time)
        self.by_time[bar.open_time] = bar

    def trim(self, keep: int) -> None:
        """Forget all but the newest ``keep`` bars."""
        excess = len(self.order) - keep
        if excess > 0:
            for open_time in self.order[:excess]:
                del self.by_time[open_time]
            del self.order[:excess]

    def bars(self) -> list[Bar]:
        by_time = self.by_time
        return [by_time[open_time] for open_time in self.order]

    def last(self) -> Bar | None:
        return self.by_time[self.order[-1]] if self.order else None


class BarStore:
    """Final bars per (symbol, tf), bounded to the newest ``max_bars`` each."""

    def __init__(self, directory: str | None, max_bars: int) -> None:
        """``directory`` None: bars in memory only (``cache.enabled`` false), nothing read or
        written."""
        self.directory = os.path.abspath(directory) if directory is not None else ""
        self.max_bars = max_bars
        self.read_only = directory is None
        self.read_only_reason = "cache.enabled is false: memory only" if directory is None \
            else ""
        self.counters: Counter[str] = Counter()
        self.quarantined: list[str] = []
        self._bars: dict[tuple[str, str], Series] = {}
        self._appended: Counter[tuple[str, str]] = Counter()
        if not self.directory:
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            self._io_error("create {}".format(self.directory), exc)

    # -- reading ---------------------------------------------------------------------------

    def path(self, symbol: str, tf: str) -> str:
        return os.path.join(self.directory, symbol, "{}.bars".format(tf))

    def load(self, symbol: str, tf: str) -> int:
        """Read the file of (symbol, tf) into memory; returns the number of bars. A damaged
        file is quarantined and the key starts empty (to be refetched)."""
        key = (symbol, tf)
        bars = Series()
        self._bars[key] = bars
        if not self.directory:
            return 0
        path = self.path(symbol, tf)
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                header = handle.readline()
                if header != HEADER.format(symbol, tf):
                    raise CorruptFile("bad header {!r}".format(header[:60]))
                loaded = [_parse(line, symbol, tf) for line in handle]
        except FileNotFoundError:
            return 0
        except (CorruptFile, ValueError, KeyError, UnicodeDecodeError) as exc:
            self._quarantine(path, str(exc))
            return 0
        except OSError as exc:
            self._io_error("read " + path, exc)
            return 0
        for bar in sorted(loaded, key=lambda b: b.open_time)[-self.max_bars:]:
            bars.put(bar)
        self.counters["loaded"] += len(bars)
        return len(bars)

    def bars(self, symbol: str, tf: str) -> list[Bar]:
        """All stored bars of (symbol, tf), oldest first."""
        bars = self._bars.get((symbol, tf))
        return bars.bars() if bars is not None else []

    def get(self, symbol: str, tf: str, open_time: int) -> Bar | None:
        bars = self._bars.get((symbol, tf))
        return bars.get(open_time) if bars is not None else None

    def last(self, symbol: str, tf: str) -> Bar | None:
        bars = self._bars.get((symbol, tf))
        return bars.last() if bars is not None else None

    # -- writing ---------------------------------------------------------------------------

    def put(self, bar: Bar) -> str:
        """Store a final bar: ``stored``, ``duplicate`` or ``conflict``."""
        key = (bar.symbol, bar.tf)
        bars = self._bars.get(key)
        if bars is None:
            self.load(bar.symbol, bar.tf)
            bars = self._bars[key]
        existing = bars.get(bar.open_time)
        if existing is not None:
            if existing.same_values(bar):
                self.counters["duplicates"] += 1
                return "duplicate"
            self.counters["conflicts"] += 1
            log.error("conflicting final for %s %s %d: stored %s (%s), now %s (%s); kept the "
                      "stored one", bar.symbol, bar.tf, bar.open_time,
                      (existing.open, existing.high, existing.low, existing.close,
                       existing.volume), existing.source,
                      (bar.open, bar.high, bar.low, bar.close, bar.volume), bar.source)
            return "conflict"
        bars.put(bar)
        bars.trim(self.max_bars)
        self.counters["stored"] += 1
        self._append(bar)
        return "stored"

    def _append(self, bar: Bar) -> None:
        if self.read_only:
            return
        path = self.path(bar.symbol, bar.tf)
        try:
            fresh = not os.path.exists(path)
            if fresh:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a", encoding="utf-8", newline="") as handle:
                if fresh:
                    handle.write(HEADER.format(bar.symbol, bar.tf))
                handle.write(_line(bar))
        except OSError as exc:
            self._io_error("append to " + path, exc)
            return
        key = (bar.symbol, bar.tf)
        self._appended[key] += 1
        if self._appended[key] >= self.max_bars // 2:
            self.compact(bar.symbol, bar.tf)

    def compact(self, symbol: str, tf: str) -> None:
        """Rewrite the file with the bars in memory: temp file, fsync, rename, fsync dir."""
        if self.read_only:
            return
        key = (symbol, tf)
        path = self.path(symbol, tf)
        temporary = path + ".tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(temporary, "w", encoding="utf-8", newline="") as handle:
                handle.write(HEADER.format(symbol, tf))
                series = self._bars.get(key)
                handle.writelines(_line(bar) for bar in (series.bars() if series else []))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            directory = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            self._io_error("compact " + path, exc)
            return
        self._appended[key] = 0
        self.counters["compactions"] += 1

    def compact_all(self) -> None:
        for symbol, tf in list(self._bars):
            if self._appended[(symbol, tf)]:
                self.compact(symbol, tf)

    # -- failure ---------------------------------------------------------------------------

    def _quarantine(self, path: str, reason: str) -> None:
        target = "{}.corrupt-{}".format(path, int(time.time()))
        self.counters["quarantined"] += 1
        try:
            os.replace(path, target)
        except OSError as exc:
            self._io_error("quarantine " + path, exc)
            target = path + " (could not be moved)"
        self.quarantined.append(target)
        log.error("bar store file %s is damaged (%s): quarantined as %s; its bars will be "
                  "refetched from history", path, reason, target)

    def _io_error(self, what: str, exc: OSError) -> None:
        self.counters["io_errors"] += 1
        if not self.read_only:
            self.read_only = True
            self.read_only_reason = "{}: {}".format(what, exc.strerror or exc)
            log.error("bar store at %s switched to read-only: %s", self.directory,
                      self.read_only_reason)

    def status(self) -> dict[str, Any]:
        return {
            "dir": self.directory,
            "read_only": self.read_only,
            "read_only_reason": self.read_only_reason,
            "keys": len(self._bars),
            "bars": sum(len(bars) for bars in self._bars.values()),
            "quarantined": list(self.quarantined[-10:]),
            "counters": dict(self.counters),
        }
