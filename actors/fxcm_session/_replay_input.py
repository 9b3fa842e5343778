"""The replay file as input: its header, its rows, what is wrong with a bad one, and the compact
per-symbol index that answers history. Pure: no threads, no clock.

Format: a header line ``ts_ms,symbol,bid,ask``, then one tick per line; gzip when the name ends
in ``.gz``; symbols as ``EUR/USD`` or ``EURUSD``. The file is read as a stream, one line at a
time: memory does not grow with the file (only the index does, 24 bytes per valid row).

A wrong or empty header makes the whole file unusable: ``check_header`` raises ConfigError with
one line (the host calls it before starting any actor). A bad row is only that row: it is
rejected with a reason (``REASONS``), counted, its line number kept (the first few per reason),
and never handed over. Lines are bounded (``MAX_LINE_BYTES``): a 200 KB field costs one read of
the line in pieces, not 200 KB of memory.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import logging
import math
from array import array
from collections import Counter
from typing import IO, Any, Dict, Generator, Iterator, List, Optional, Tuple

from protocol.errors import ConfigError, ProtocolError
from protocol.market import normalize_symbol

log = logging.getLogger("fxcm.session")

HEADER = ("ts_ms", "symbol", "bid", "ask")
# A tick line is ~40 bytes; anything this long is not one.
MAX_LINE_BYTES = 1024
# Event times outside this range are not market data (1980-01-01 .. 2200-01-01 UTC): this
# refuses 0, negative times, seconds-for-milliseconds mistakes and 1e30 alike.
MIN_TS_MS = 315532800000
MAX_TS_MS = 7258118400000
# The stream reads blocks of this size and splits them into lines.
BLOCK_BYTES = 65536
# Line numbers kept per reason (every row is counted; only these are listed).
LINES_KEPT = 5
# Rejected rows logged one by one before the log only summarizes.
LOGGED_REJECTIONS = 5

REASONS = (
    "not_utf8",        # the line's bytes are not UTF-8
    "line_too_long",   # longer than MAX_LINE_BYTES (e.g. a 200 KB field)
    "column_count",    # not exactly 4 columns
    "bad_time",        # ts_ms is not an integer (garbage, a fraction)
    "time_not_finite",  # inf, nan
    "time_out_of_range",  # before 1980 or after 2200: 0, negative, 1e30, seconds not ms
    "bad_symbol",      # empty, or not letters and digits
    "bad_price",       # bid or ask not a finite number > 0
    "ask_below_bid",
)

Row = Tuple[int, str, float, float]  # (ts_ms, symbol, bid, ask)


def open_binary(path: str) -> IO[bytes]:
    """The file's bytes (decompressed for ``.gz``); ConfigError when it cannot be opened."""
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")
    except OSError as exc:
        raise ConfigError("broker.replay.file: {}: {}".format(path, exc.strerror or exc)) \
            from None


def _shown(raw: bytes) -> str:
    text = raw[:80].decode("utf-8", "replace").rstrip("\r\n")
    return repr(text) + ("..." if len(raw) > 80 else "")


def read_header(handle: IO[bytes], path: str) -> None:
    """Consume and check the header line; ConfigError (one line) when it is not
    ``ts_ms,symbol,bid,ask``."""
    expected = ",".join(HEADER)
    try:
        raw = handle.readline(MAX_LINE_BYTES + 1)
    except (OSError, EOFError, ValueError) as exc:  # gzip.BadGzipFile is an OSError
        raise ConfigError("broker.replay.file: {}: cannot read it ({})".format(path, exc)) \
            from None
    if not raw.strip():
        raise ConfigError("broker.replay.file: {}: empty or no header; the first line must be "
                          "{}".format(path, expected))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("broker.replay.file: {}: the header is not UTF-8 text; it must be {}"
                          .format(path, expected)) from None
    names = tuple(part.strip().strip('"').lower() for part in text.strip().split(","))
    if names != HEADER:
        raise ConfigError("broker.replay.file: {}: the header must be {}, got {}".format(
            path, expected, _shown(raw)))


def check_header(path: str) -> None:
    """Raise ConfigError (one line naming the setting and the file) unless ``path`` opens and
    starts with the ``ts_ms,symbol,bid,ask`` header."""
    with open_binary(path) as handle:
        read_header(handle, path)


class Rejections(object):
    """Rejected rows: a count per reason, the first line numbers per reason, and a log that
    names the first few and then only summarizes (a file of a million bad rows must not write a
    million log lines)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self.lines: Dict[str, List[int]] = {}

    def add(self, line: int, reason: str) -> None:
        self.counts[reason] += 1
        kept = self.lines.setdefault(reason, [])
        if len(kept) < LINES_KEPT:
            kept.append(line)
        total = sum(self.counts.values())
        if total <= LOGGED_REJECTIONS:
            log.warning("replay file %s line %d rejected: %s", self.path, line, reason)
        elif total == LOGGED_REJECTIONS + 1:
            log.warning("replay file %s: more rows rejected; counted in status and in "
                        "fxcm_replay_rejected_rows_total", self.path)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join("{} {} (lines {}{})".format(
            count, reason, ", ".join(str(n) for n in self.lines.get(reason, [])),
            ", ..." if count > len(self.lines.get(reason, [])) else "")
            for reason, count in sorted(self.counts.items()))

    def status(self) -> Dict[str, Any]:
        return {"counts": dict(self.counts), "lines": {k: list(v) for k, v in self.lines.items()}}


class RowParser(object):
    """Turns one line's bytes into a Row, or a rejection reason. Symbol names are normalized
    once per distinct spelling."""

    def __init__(self) -> None:
        self._symbols: Dict[str, Optional[str]] = {}

    def symbol(self, raw: str) -> Optional[str]:
        known = self._symbols.get(raw, "")
        if known != "":
            return known
        try:
            name: Optional[str] = normalize_symbol(raw.strip().strip('"'))
        except ProtocolError:
            name = None
        if len(self._symbols) < 100000:  # a file of random names must not grow this forever
            self._symbols[raw] = name
        return name

    def parse(self, raw: bytes) -> Any:
        """A Row, a reason (str) when the line is bad, or None for a blank line."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        if '"' in text:
            parts = next(csv.reader([text.rstrip("\r\n")]), [])
        else:
            parts = text.rstrip("\r\n").split(",")
        if len(parts) != 4:
            if len(parts) <= 1 and not text.strip():
                return None
            return "column_count"
        ts_text, symbol_text, bid_text, ask_text = parts
        try:
            ts_ms = int(ts_text)
        except ValueError:
            try:
                value = float(ts_text)
            except ValueError:
                return "bad_time"
            if math.isnan(value) or math.isinf(value):
                return "time_not_finite"
            if value != int(value):
                return "bad_time"
            if not MIN_TS_MS <= value <= MAX_TS_MS:
                return "time_out_of_range"
            ts_ms = int(value)
        if not MIN_TS_MS <= ts_ms <= MAX_TS_MS:
            return "time_out_of_range"
        symbol = self.symbol(symbol_text)
        if symbol is None:
            return "bad_symbol"
        try:
            bid = float(bid_text)
            ask = float(ask_text)
        except ValueError:
            return "bad_price"
        # NaN fails both comparisons; inf fails the upper one.
        if not (0.0 < bid < math.inf and 0.0 < ask < math.inf):
            return "bad_price"
        if ask < bid:
            return "ask_below_bid"
        return (ts_ms, symbol, bid, ask)


def iter_lines(handle: IO[bytes], first_line: int = 2) -> Iterator[Tuple[int, Optional[bytes]]]:
    """``(line number, bytes)`` of each line after the header; ``bytes`` is None for a line
    longer than MAX_LINE_BYTES, which is skipped in bounded pieces."""
    readline = handle.readline
    number = first_line - 1
    while True:
        raw = readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:
                rest = readline(65536)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None
            continue
        yield number, raw


class SymbolIndex(object):
    """One symbol's valid rows in time order, in three typed arrays (24 bytes a row)."""

    __slots__ = ("times", "bids", "asks", "ordered")

    def __init__(self) -> None:
        self.times = array("q")
        self.bids = array("d")
        self.asks = array("d")
        self.ordered = True

    def add(self, ts_ms: int, bid: float, ask: float) -> None:
        times = self.times
        if times and ts_ms < times[-1]:
            self.ordered = False
        times.append(ts_ms)
        self.bids.append(bid)
        self.asks.append(ask)

    def sort(self) -> None:
        """Time order for bisect (stable: rows of one time keep their file order)."""
        if self.ordered:
            return
        order = sorted(range(len(self.times)), key=self.times.__getitem__)
        self.times = array("q", (self.times[i] for i in order))
        self.bids = array("d", (self.bids[i] for i in order))
        self.asks = array("d", (self.asks[i] for i in order))
        self.ordered = True

    def between(self, low_ms: Optional[int], high_ms: int) -> Tuple[int, int]:
        """Index range of rows with ``low_ms <= ts <= high_ms``."""
        high = bisect.bisect_right(self.times, high_ms)
        low = 0 if low_ms is None else bisect.bisect_left(self.times, low_ms)
        return low, high


class ReplayIndex(object):
    """One pass over the whole file: the per-symbol index for history, the line count (the
    timeline's positions are line indexes), the first valid time, every rejection, and the
    positions of the lines that are not valid rows (so that the stream need not check again)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.symbols: Dict[str, SymbolIndex] = {}
        self.rejections = Rejections(path)
        self.lines = 0  # data lines (blank ones included), the positions of the timeline
        self.rows = 0  # valid rows
        self.first_ts: Optional[int] = None
        self.last_ts: Optional[int] = None
        self.skipped = array("q")  # positions of bad and blank lines, ascending
        parser = RowParser()
        with open_binary(path) as handle:
            read_header(handle, path)
            try:
                for number, raw in iter_lines(handle):
                    self.lines += 1
                    row = parser.parse(raw) if raw is not None else "line_too_long"
                    if not isinstance(row, tuple):
                        self.skipped.append(self.lines - 1)
                        if row is not None:
                            self.rejections.add(number, row)
                        continue
                    ts_ms, symbol, bid, ask = row
                    entry = self.symbols.get(symbol)
                    if entry is None:
                        entry = self.symbols[symbol] = SymbolIndex()
                    entry.add(ts_ms, bid, ask)
                    self.rows += 1
                    if self.first_ts is None:
                        self.first_ts = ts_ms
                    if self.last_ts is None or ts_ms > self.last_ts:
                        self.last_ts = ts_ms
            except (OSError, EOFError, ValueError) as exc:  # a truncated or corrupt .gz
                raise ConfigError("broker.replay.file: {}: unreadable after line {} ({})"
                                  .format(path, self.lines + 1, exc)) from None
        for entry in self.symbols.values():
            entry.sort()
        if self.rejections.total:
            log.warning("replay file %s: %d of %d lines rejected: %s", path,
                        self.rejections.total, self.lines, self.rejections.summary())
        if self.first_ts is None:
            log.error("replay file %s has no valid row (%d lines): nothing to replay", path,
                      self.lines)

    def status(self) -> Dict[str, Any]:
        return {"lines": self.lines, "rows": self.rows, "first_ts_ms": self.first_ts,
                "last_ts_ms": self.last_ts, "rejected": self.rejections.status()}

    def read_rows(self, skip_lines: int = 0
                  ) -> Generator[Tuple[int, Optional[Row]], None, None]:
        """The file as a stream, as ``read_rows`` yields it, parsed only as far as a line the
        index found valid needs (no checks again: the hot path of a speed-0 replay). A file
        changed since the index was built is read with the full checks instead."""
        skipped = self.skipped
        next_skip = 0
        count = len(skipped)
        while next_skip < count and skipped[next_skip] < skip_lines:
            next_skip += 1
        skip_at = skipped[next_skip] if next_skip < count else -1
        symbols: Dict[bytes, str] = {}
        parser = RowParser()
        position = -1
        with open_binary(self.path) as handle:
            read_header(handle, self.path)
            read = handle.read
            rest = b""
            discarding = False  # inside an overlong line: drop bytes up to its newline
            while True:
                block = read(BLOCK_BYTES)
                if discarding:
                    if not block:
                        return
                    end = block.find(b"\n")
                    if end < 0:
                        continue
                    block = block[end + 1:]
                    discarding = False
                    parts = [b""]  # the overlong line itself (a skipped position)
                else:
                    parts = []
                if block:
                    pieces = (rest + block if rest else block).split(b"\n")
                    rest = pieces.pop()
                    if len(rest) > MAX_LINE_BYTES:
                        rest = b""
                        discarding = True
                    parts.extend(pieces)
                elif rest:
                    parts.append(rest)
                    rest = b""
                for raw in parts:
                    position += 1
                    if position < skip_lines:
                        continue
                    if position == skip_at:
                        next_skip += 1
                        skip_at = skipped[next_skip] if next_skip < count else -1
                        yield position, None
                        continue
                    try:
                        ts_text, symbol_text, bid_text, ask_text = raw.split(b",")
                        symbol = symbols.get(symbol_text)
                        if symbol is None:
                            symbol = parser.symbol(symbol_text.decode("utf-8"))
                            if symbol is None:
                                raise ValueError(symbol_text)
                            symbols[symbol_text] = symbol
                        row: Any = (int(ts_text), symbol, float(bid_text), float(ask_text))
                    except ValueError:  # not the file that was indexed: check it all
                        row = parser.parse(raw)
                    yield position, (row if isinstance(row, tuple) else None)
                if not block and not discarding:
                    return


def read_rows(path: str, skip_lines: int = 0
              ) -> Generator[Tuple[int, Optional[Row]], None, None]:
    """The file as a stream: ``(position, Row or None)`` per data line from ``skip_lines``
    on (positions count data lines from 0; a bad or blank line yields None: ``ReplayIndex``
    counted it already). Skipped lines are not parsed."""
    parser = RowParser()
    handle = open_binary(path)
    with handle:
        read_header(handle, path)
        position = -1
        for _, raw in iter_lines(handle):
            position += 1
            if position < skip_lines:
                continue
            row = parser.parse(raw) if raw is not None else None
            yield position, (row if isinstance(row, tuple) else None)
