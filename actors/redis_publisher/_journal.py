"""The outage journal: what must not be lost while Redis is away, on disk, in order.

Layout (one directory per publisher): segment files ``seg-<12 digits>.jnl`` holding one record
per line, ``<crc32 as 8 hex> <compact JSON>\\n``, and ``cursor.json`` naming the first record
not yet delivered (``{"segment": n, "offset": bytes}``, replaced atomically). Appends go to the
newest segment and are fsynced before ``append`` returns, so a record the journal accepted
survives a crash of the process or the machine; a segment is deleted once delivered entirely,
and the whole journal is removed when it runs empty.

Bound: ``max_bytes`` of segment files on disk. At the bound the journal refuses (``append``
returns how many records it took, in order) and never drops anything: the caller holds the rest
and stops acking, so backpressure reaches the producers on the bus. An empty journal accepts one
record of any size, so an oversize record cannot wedge it. ``force=True`` ignores the bound (the
publisher uses it when it must stop with Redis still away: a file over its bound beats a lost
bar).

A directory that cannot be opened (an unwritable or misplaced cache dir) leaves the journal
``unavailable``: it refuses every append, as at its bound, so the publisher runs on with Redis
and holds what it cannot deliver in memory (backpressure) instead of crashing at every restart.

Delivery is at least once: ``read`` does not consume; ``commit`` does, after the records were
written to Redis. A crash in between delivers those records again (duplicates are harmless
downstream: consumers are idempotent by key). On open, a torn last line (a crash mid-append) is
cut off; a corrupt line elsewhere is skipped and counted.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fxcm.redis_publisher")

_PREFIX = "seg-"
_SUFFIX = ".jnl"
_CURSOR = "cursor.json"

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _line(record: Any) -> bytes:
    data = _encode(record).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(data), data)


def _parse(line: bytes) -> Any:
    """The record of a complete line; ValueError when the line is damaged."""
    if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
        raise ValueError("malformed journal line")
    data = line[9:-1]
    if int(line[:8], 16) != zlib.crc32(data):
        raise ValueError("journal line fails its checksum")
    return json.loads(data)


class Journal:
    def __init__(self, directory: str, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes))
        self.segments: list[int] = []  # numbers, oldest first
        self.sizes: dict[int, int] = {}
        self.cursor = (0, 0)  # (segment, offset) of the first undelivered record
        self.messages = 0  # undelivered records
        self.corrupt = 0
        self.refusals = 0
        self.forced = 0
        self.unavailable = ""  # why the directory could not be opened; then appends refuse
        self._writer: Any = None
        self._writing = 0
        self._reader: Any = None
        self._reading = 0
        self._read_end: tuple[int, int] | None = None
        self._read_count = 0

    # -- figures ------------------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def pending_bytes(self) -> int:
        """Bytes of undelivered records."""
        return self.disk_bytes - (self.cursor[1] if self.segments else 0)

    def __len__(self) -> int:
        return self.messages

    def stats(self) -> dict[str, Any]:
        return {"directory": self.directory, "messages": self.messages,
                "bytes": self.pending_bytes, "disk_bytes": self.disk_bytes,
                "max_bytes": self.max_bytes, "segments": len(self.segments),
                "refusals": self.refusals, "forced": self.forced, "corrupt": self.corrupt,
                "unavailable": self.unavailable or None}

    # -- open ---------------------------------------------------------------------------------

    def open(self, visit: Callable[[Any], None] | None = None) -> None:
        """Take over what a previous run left (calling ``visit`` with each undelivered record,
        oldest first), cutting off a torn last line. A directory that cannot be opened makes
        the journal ``unavailable`` (the reason) instead of raising."""
        try:
            self._open(visit)
        except OSError as exc:
            self._close_files()
            self.segments, self.sizes, self.messages = [], {}, 0
            self.unavailable = "cannot open {}: {}".format(self.directory,
                                                           exc.strerror or exc)

    def _open(self, visit: Callable[[Any], None] | None) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        names = sorted(name for name in os.listdir(self.directory)
                       if name.startswith(_PREFIX) and name.endswith(_SUFFIX))
        self.segments = [int(name[len(_PREFIX):-len(_SUFFIX)]) for name in names]
        self.sizes = {n: os.path.getsize(self._path(n)) for n in self.segments}
        self.cursor = self._load_cursor()
        self.messages = 0
        for number in list(self.segments):
            start = self.cursor[1] if number == self.cursor[0] else 0
            good_end = self._scan(number, start, visit, last=number == self.segments[-1])
            if good_end < self.sizes[number]:
                log.warning("journal %s: cutting a torn record at byte %d of segment %d",
                            self.directory, good_end, number)
                with open(self._path(number), "r+b") as handle:
                    handle.truncate(good_end)
                    os.fsync(handle.fileno())
                self.sizes[number] = good_end
        if self.messages == 0:
            self._reset()
        elif self.messages:
            log.warning("journal %s: %d record(s) (%d bytes) from before wait for Redis",
                        self.directory, self.messages, self.pending_bytes)

    def _load_cursor(self) -> tuple[int, int]:
        first = (self.segments[0], 0) if self.segments else (0, 0)
        try:
            with open(os.path.join(self.directory, _CURSOR), encoding="utf-8") as handle:
                data = json.load(handle)
            cursor = (int(data["segment"]), int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return first
        if cursor[0] not in self.sizes or cursor[1] > self.sizes[cursor[0]]:
            return first  # its segment is gone (delivered) or shorter: start at what exists
        for number in list(self.segments):
            if number < cursor[0]:  # delivered, deletion interrupted
                self._delete(number)
        return cursor

    def _scan(self, number: int, start: int, visit: Callable[[Any], None] | None,
              last: bool) -> int:
        """Count (and visit) the records of a segment from ``start``; returns the offset after
        the last good line of a final segment (where a torn tail is cut)."""
        offset = start
        good_end = start
        with open(self._path(number), "rb") as handle:
            handle.seek(start)
            for line in handle:
                end = offset + len(line)
                try:
                    record = _parse(line)
                except ValueError:
                    if not line.endswith(b"\n") and last:
                        return good_end  # torn tail
                    self.corrupt += 1
                    log.error("journal %s: skipping a corrupt record in segment %d at byte %d",
                              self.directory, number, offset)
                else:
                    self.messages += 1
                    if visit is not None:
                        visit(record)
                offset = end
                good_end = end
        return good_end

    # -- append -------------------------------------------------------------------------------

    def append(self, records: list[Any], force: bool = False) -> int:
        """Write records in order until the bound; fsynced. Returns how many were taken (none
        while the journal is unavailable, even with ``force``)."""
        if not records:
            return 0
        if self.unavailable:
            self.refusals += 1
            return 0
        taken = 0
        lines = []
        size = self.disk_bytes
        for record in records:
            line = _line(record)
            if not force and size + len(line) > self.max_bytes and (size or taken):
                break
            lines.append(line)
            size += len(line)
            taken += 1
        if taken < len(records):
            self.refusals += 1
        if force and size > self.max_bytes:
            self.forced += 1
        if not lines:
            return 0
        for line in lines:
            writer = self._writer_for(len(line))
            writer.write(line)
            self.sizes[self._writing] += len(line)
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self.messages += taken
        return taken

    def _writer_for(self, length: int) -> Any:
        if self._writer is not None and (self.sizes[self._writing] == 0 or self.sizes[
                self._writing] + length <= self.segment_bytes):
            return self._writer
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
        number = (self.segments[-1] + 1) if self.segments else max(1, self.cursor[0])
        if not self.segments:
            self.cursor = (number, 0)
        if self.segments and self.sizes[self.segments[-1]] == 0:
            number = self.segments[-1]  # reuse an empty last segment
        else:
            self.segments.append(number)
            self.sizes[number] = 0
        self._writer = open(self._path(number), "ab")  # noqa: SIM115 - kept open, closed in close()
        self._writing = number
        self._sync_directory()
        return self._writer

    # -- read and commit ------------------------------------------------------------------------

    def read(self, limit: int) -> list[Any]:
        """Up to ``limit`` undelivered records, oldest first, without consuming them."""
        records: list[Any] = []
        if not self.messages:
            return records
        if self._writer is not None:
            self._writer.flush()
        number, offset = self.cursor
        while len(records) < limit and number in self.sizes:
            if self._reader is None or self._reading != number:
                if self._reader is not None:
                    self._reader.close()
                self._reader = open(self._path(number), "rb")  # noqa: SIM115 - closed in close()
                self._reading = number
            reader = self._reader
            reader.seek(offset)
            while len(records) < limit and offset < self.sizes[number]:
                line = reader.readline()
                if not line:
                    break
                offset += len(line)
                try:
                    records.append(_parse(line))
                except ValueError:
                    self.corrupt += 1
                    log.error("journal %s: skipping a corrupt record in segment %d",
                              self.directory, number)
                    records.append(None)
            if len(records) < limit and offset >= self.sizes[number]:
                later = [n for n in self.segments if n > number]
                if not later:
                    break
                number, offset = later[0], 0
        if not records:
            # The count says there is more, the files say there is not (removed by hand?).
            log.error("journal %s: %d record(s) expected but none readable; starting afresh",
                      self.directory, self.messages)
            self._reset()
            return records
        self._read_end = (number, offset)
        self._read_count = len(records)
        return [record for record in records if record is not None]

    def commit(self) -> None:
        """Consume what the last ``read`` returned (it was delivered)."""
        if self._read_end is None:
            return
        end = self._read_end
        self._read_end = None
        self.messages = max(0, self.messages - self._read_count)
        for number in list(self.segments):
            if number < end[0] or (number == end[0] and end[1] >= self.sizes[number]
                                   and number != self._writing):
                self._delete(number)
        if self.messages == 0:
            self._reset()
            return
        self.cursor = end
        if self.segments and self.cursor[0] not in self.sizes:
            self.cursor = (self.segments[0], 0)
        self._save_cursor()

    def _save_cursor(self) -> None:
        path = os.path.join(self.directory, _CURSOR)
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"segment": self.cursor[0], "offset": self.cursor[1]}, handle)
        os.replace(temporary, path)

    # -- housekeeping ---------------------------------------------------------------------------

    def _reset(self) -> None:
        """Empty: remove every file (the next append starts a fresh segment)."""
        self._close_files()
        next_number = (self.segments[-1] + 1) if self.segments else max(1, self.cursor[0])
        for number in list(self.segments):
            self._delete(number)
        try:
            os.unlink(os.path.join(self.directory, _CURSOR))
        except FileNotFoundError:
            pass
        self.segments = []
        self.sizes = {}
        self.messages = 0
        self.cursor = (next_number, 0)

    def _delete(self, number: int) -> None:
        if number == self._writing and self._writer is not None:
            self._writer.close()
            self._writer = None
        if number == self._reading and self._reader is not None:
            self._reader.close()
            self._reader = None
        try:
            os.unlink(self._path(number))
        except FileNotFoundError:
            pass
        if number in self.sizes:
            del self.sizes[number]
            self.segments.remove(number)

    def _path(self, number: int) -> str:
        return os.path.join(self.directory, "{}{:012d}{}".format(_PREFIX, number, _SUFFIX))

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _close_files(self) -> None:
        for handle in (self._writer, self._reader):
            if handle is not None:
                handle.close()
        self._writer = None
        self._reader = None

    def close(self) -> None:
        if self._writer is not None and not self.unavailable:
            self._writer.flush()
            os.fsync(self._writer.fileno())
        self._close_files()
