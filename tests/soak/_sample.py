"""What the soak measures, once a second: /proc figures of the host, its children and the Redis
server; the host's ``/status`` (router mailboxes, supervisor view, every actor's own status);
and, from a Redis subscriber, how long after its minute ended each final 1m bar arrived.

Every sample is one row (a flat dict) kept in memory for the analysis and appended to a CSV as
it is taken, so a long run can be watched (``tail -f samples.csv``) and plotted afterwards."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.helpers import RedisSubscriber

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Row = dict[str, Any]


@dataclass
class ProcFigures:
    """One process at one instant, from /proc (None when it is gone)."""

    rss_mb: float
    fds: int
    threads: int
    cpu_s: float


def proc_figures(pid: int) -> ProcFigures | None:
    """VmRSS and Threads from /proc/PID/status, the entries of /proc/PID/fd, and user+system
    CPU time from /proc/PID/stat; None if the process does not exist (any more)."""
    base = "/proc/{}".format(pid)
    try:
        rss_kb = 0
        threads = 0
        with open(base + "/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss_kb = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(base + "/fd"))
        with open(base + "/stat", encoding="ascii", errors="replace") as handle:
            # the command name (field 2) may hold spaces: count fields after its ")"
            fields = handle.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return None
    return ProcFigures(rss_kb / 1024.0, fds, threads, cpu)


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root`` (pid -> command name), found through the parent pid
    in /proc/*/stat."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry), encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        head, _, tail = text.rpartition(")")
        fields = tail.split()
        if len(fields) < 2:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        names[pid] = head.split("(", 1)[-1]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = names[pid]
                frontier.append(pid)
    return found


def http_status(port: int, timeout: float = 5.0) -> dict[str, Any]:
    """The host's ``/status`` (loopback): router figures, supervisor view, actor statuses."""
    with urllib.request.urlopen("http://127.0.0.1:{}/status".format(port),
                                timeout=timeout) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _metric_max(status: dict[str, Any], name: str, **labels: str) -> float | None:
    """The largest sample of an actor-reported metric whose labels include ``labels``."""
    spec = (status.get("metrics") or {}).get(name) or {}
    values = [float(value) for sample_labels, value in spec.get("samples", [])
              if all(sample_labels.get(k) == v for k, v in labels.items())]
    return max(values) if values else None


def status_figures(status: dict[str, Any]) -> Row:
    """The flat figures the soak keeps from one ``/status`` answer."""
    row: Row = {}
    actors: dict[str, Any] = status.get("actors", {})
    for name, view in actors.items():
        row["depth." + name] = view.get("depth")
    row["restarts"] = sum(int(view.get("restarts") or 0) for view in actors.values())
    row["dead_letters"] = (status.get("router") or {}).get("dead_letters")
    statuses: dict[str, Any] = status.get("actor_status") or {}
    session = statuses.get("fxcm_session") or {}
    row["ticks"] = session.get("ticks_published")
    aggregator = statuses.get("tick_aggregator") or {}
    row["agg_ticks"] = (aggregator.get("aggregation") or {}).get("ticks")
    published = aggregator.get("published")
    row["agg_bars"] = sum(published.values()) if isinstance(published, dict) else None
    heartbeat = statuses.get("heartbeat") or {}
    row["bar_lag_s"] = _metric_max(heartbeat, "fxcm_stream_lag_seconds", tf="1m")
    snapshotter = statuses.get("snapshotter") or {}
    ages = [float(view["tick_age"]) for view in
            ((snapshotter.get("price_stream") or {}).get("symbols_state") or {}).values()
            if isinstance(view, dict) and view.get("tick_age") is not None]
    row["tick_age_ms"] = round(max(ages) * 1000.0, 1) if ages else None
    publisher = statuses.get("redis_publisher") or {}
    journal = publisher.get("journal") or {}
    row["journal_messages"] = journal.get("messages")
    row["journal_bytes"] = journal.get("bytes")
    row["journal_held"] = journal.get("held")
    row["redis_mode"] = (publisher.get("redis") or {}).get("mode")
    row["ohlcv_published"] = (publisher.get("published") or {}).get("ohlcv")
    return row


@dataclass
class BarArrival:
    """A final 1m bar from ticks as a Redis consumer saw it."""

    symbol: str
    open_time: int
    close_s: float  # the end of its minute, seconds since the sampling started
    latency_ms: float  # arrival minus the end of its minute


class Sampler:
    """Takes one sample per ``interval`` on a thread of its own until ``close()``.

    ``processes()`` names the processes to measure (name -> pid); ``phase`` is set by the runner
    (``warmup``, ``run``, ``outage``, ``recovering``, ``after``) and stored in each row."""

    def __init__(self, csv_path: Path, http_port: int, processes: Callable[[], dict[str, int]],
                 subscriber: RedisSubscriber, ohlcv_channel: str, columns: list[str],
                 interval: float = 1.0) -> None:
        self.csv_path = csv_path
        self.http_port = http_port
        self.processes = processes
        self.subscriber = subscriber
        self.ohlcv_channel = ohlcv_channel
        self.columns = columns
        self.interval = interval
        self.phase = "warmup"
        self.rows: list[Row] = []
        self.bars: list[BarArrival] = []
        self.duplicate_bars: list[tuple[str, int]] = []
        self.status: dict[str, Any] = {}  # the newest /status answer
        self.status_errors = 0
        self.t0 = time.monotonic()
        # arrival times are monotonic; bars carry wall-clock times: one offset converts
        self._wall_offset = time.time() - time.monotonic()
        self._seen_messages = 0
        self._bar_keys: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._file: IO[str] = open(csv_path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        self._writer.writeheader()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.sample()
            tick += 1
            # a fixed schedule, so that one slow sample does not shift every later one
            self._stop.wait(max(0.0, self.t0 + tick * self.interval - time.monotonic()))

    def sample(self) -> Row:
        row: Row = {"t": round(time.monotonic() - self.t0, 3), "phase": self.phase}
        for name, pid in self.processes().items():
            figures = proc_figures(pid)
            if figures is None:
                continue
            row["rss_mb." + name] = round(figures.rss_mb, 2)
            row["fds." + name] = figures.fds
            row["threads." + name] = figures.threads
            row["cpu_s." + name] = round(figures.cpu_s, 2)
        try:
            status = http_status(self.http_port)
        except (OSError, ValueError):
            self.status_errors += 1
            row["status_ok"] = 0
        else:
            row["status_ok"] = 1
            row.update(status_figures(status))
            with self._lock:
                self.status = status
        arrived = self._take_bars()
        row["bars_rx"] = len(arrived)
        row["bar_latency_ms"] = round(max(bar.latency_ms for bar in arrived), 1) \
            if arrived else None
        with self._lock:
            self.rows.append(row)
            self.bars.extend(arrived)
        self._writer.writerow(row)
        self._file.flush()
        return row

    def _take_bars(self) -> list[BarArrival]:
        """Final 1m bars from ticks that reached the subscriber since the last sample."""
        messages = self.subscriber.snapshot()[self._seen_messages:]
        self._seen_messages += len(messages)
        arrived: list[BarArrival] = []
        for monotonic, channel, data in messages:
            if channel != self.ohlcv_channel:
                continue
            try:
                payload = json.loads(data)
            except ValueError:
                continue
            if payload.get("tf") != "1m" or payload.get("source") != "tick":
                continue
            arrival_ms = (monotonic + self._wall_offset) * 1000.0
            for bar in payload.get("bars", []):
                if not bar.get("complete"):
                    continue
                key = (str(payload.get("symbol")), int(bar["open_time"]))
                if key in self._bar_keys:
                    self.duplicate_bars.append(key)
                    continue
                self._bar_keys.add(key)
                end_ms = int(bar["close_time"]) + 1
                arrived.append(BarArrival(key[0], key[1],
                                          end_ms / 1000.0 - self._wall_offset - self.t0,
                                          arrival_ms - end_ms))
        return arrived

    def latest_status(self) -> dict[str, Any]:
        with self._lock:
            return self.status

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._file.close()
