"""The verdict: pure functions over the samples, so the rules can be tested on made-up series.

Windows. The first ``warmup`` seconds are not judged (start-up: warmup history, caches,
imports). Without an outage the *first window* is the first 20% of the remaining samples and
the *last window* the last 20%. With an outage the first window is everything between warm-up
and the outage, the last window everything after the publisher has drained its journal;
samples taken while Redis was away form the *outage window*.

Rules (each a check in the table; any failed check fails the run):

- memory, per judged process (the host and its children; the Redis server is shown, not
  judged): with ``allowance = 10% of the first-window median + 5 MiB``,
  (a) last-window median - first-window median <= allowance, and
  (b) the least-squares slope over all judged samples, times their span, <= allowance,
  (c) with an outage, the highest RSS while Redis was away - first-window median <= allowance.
- open file descriptors and threads, per judged process: last-window median <= first-window
  max + 3 (a leaked socket per reconnect would show; a connection being replaced would not).
- lag, each must not drift: last-window median <= 1.5 x first-window median + slack, with
  slack 100 ms for tick age (snapshotter: newest tick's age), 250 ms for bar latency (end of a
  minute to its final bar at a Redis subscriber, by the minute's end: bars journalled through
  the outage fall in no window), 10 s for the heartbeat's 1m bar lag (a sawtooth of 0..60 s,
  judged only when both windows span 120 s or more). A series with fewer than 3 values in a
  window is not judged (the table says so).
- mailboxes: last-window median depth of every actor <= first-window p99 depth + 100.
- no actor restarted, nothing dead-lettered, the host exited 0 on SIGTERM, no run error.
- bars: every symbol's final 1m bars from ticks arrived on Redis exactly once and without a
  gap between its first and its last.
- outage: the publisher drained its journal (Redis mode up, nothing journalled or held) after
  Redis came back.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.soak._sample import BarArrival, Row

MIB = 1.0
MEMORY_FRACTION = 0.10
MEMORY_SLACK_MB = 5.0 * MIB
FD_SLACK = 3
DEPTH_SLACK = 100
LAG_FACTOR = 1.5
LAG_SERIES = (  # column, label, unit, absolute slack
    ("tick_age_ms", "tick age at the snapshotter", "ms", 100.0),
    ("bar_latency_ms", "minute end -> final 1m bar on Redis", "ms", 250.0),
    ("bar_lag_s", "1m bar lag (heartbeat)", "s", 10.0),
)
MIN_VALUES = 3
# The heartbeat's lag is a 0..60 s sawtooth: a median means something over two cycles or more.
SAWTOOTH_WINDOW = 120.0


@dataclass
class RunInfo:
    """What the runner knows besides the samples."""

    duration: float
    warmup: float
    rate: float
    symbols: int
    judged: list[str]  # processes whose memory and descriptors are judged
    reported: list[str]  # processes shown only
    actors: list[str]
    outage: float = 0.0
    outage_start: float | None = None
    outage_end: float | None = None
    drained_at: float | None = None
    host_exit: int | None = None
    errors: list[str] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)
    duplicate_bars: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Windows:
    first: list[Row]
    last: list[Row]
    outage: list[Row]
    judged: list[Row]  # every sample after warm-up
    first_span: tuple[float, float]
    last_span: tuple[float, float]


# -- statistics ----------------------------------------------------------------------------------

def values(rows: Sequence[Row], column: str) -> list[float]:
    result = []
    for row in rows:
        value = row.get(column)
        if value is None or value == "":
            continue
        try:
            result.append(float(value))
        except (TypeError, ValueError):
            continue
    return result


def median(series: Sequence[float]) -> float | None:
    return statistics.median(series) if series else None


def percentile(series: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks; None for an empty series."""
    if not series:
        return None
    ordered = sorted(series)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 2 distinct x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


# -- windows -------------------------------------------------------------------------------------

def split(rows: Sequence[Row], info: RunInfo) -> Windows:
    judged = [row for row in rows if float(row["t"]) >= info.warmup]
    outage = [row for row in rows if row.get("phase") == "outage"]
    if info.outage_start is not None:
        first = [row for row in judged if float(row["t"]) < info.outage_start]
        after = info.drained_at if info.drained_at is not None else float("inf")
        last = [row for row in judged if float(row["t"]) >= after]
    else:
        size = max(1, len(judged) // 5)
        first, last = judged[:size], judged[-size:]
    return Windows(first, last, outage, judged, _span(first), _span(last))


def _span(rows: Sequence[Row]) -> tuple[float, float]:
    return (float(rows[0]["t"]), float(rows[-1]["t"])) if rows else (0.0, 0.0)


def _outage_bar(bar: BarArrival, info: RunInfo) -> bool:
    """A bar whose minute ended while Redis was away or the backlog drained."""
    if info.outage_start is None:
        return False
    end = info.drained_at if info.drained_at is not None else float("inf")
    return info.outage_start <= bar.close_s <= end


def _length(span: tuple[float, float]) -> float:
    return span[1] - span[0]


def _in(span: tuple[float, float], t: float) -> bool:
    return span[0] <= t <= span[1] + 1.0


# -- checks --------------------------------------------------------------------------------------

def memory_checks(windows: Windows, info: RunInfo) -> list[Check]:
    checks = []
    for name in info.judged:
        column = "rss_mb." + name
        first, last = median(values(windows.first, column)), median(values(windows.last, column))
        if first is None or last is None:
            checks.append(Check("memory " + name, False, "no RSS samples in a window"))
            continue
        allowance = MEMORY_FRACTION * first + MEMORY_SLACK_MB
        growth = last - first
        points = [(float(row["t"]), float(row[column])) for row in windows.judged
                  if row.get(column) not in (None, "")]
        rate = slope(points) or 0.0
        span = points[-1][0] - points[0][0] if points else 0.0
        trend = rate * span
        detail = ("median {:.1f} -> {:.1f} MiB ({:+.1f}, {:+.1f}%), trend {:+.1f} MiB over "
                  "{:.0f} s ({:+.1f} MiB/h); allowance {:.1f} MiB").format(
                      first, last, growth, 100.0 * growth / first, trend, span, rate * 3600.0,
                      allowance)
        ok = growth <= allowance and trend <= allowance
        if windows.outage:
            during = values(windows.outage, column)
            if during:
                peak = max(during)
                detail += "; outage max {:.1f} MiB ({:+.1f}%)".format(
                    peak, 100.0 * (peak - first) / first)
                ok = ok and peak - first <= allowance
        checks.append(Check("memory " + name, ok, detail))
    return checks


def descriptor_checks(windows: Windows, info: RunInfo) -> list[Check]:
    checks = []
    for name in info.judged:
        for kind in ("fds", "threads"):
            column = "{}.{}".format(kind, name)
            first, last = values(windows.first, column), values(windows.last, column)
            if not first or not last:
                checks.append(Check("{} {}".format(kind, name), False, "no samples in a window"))
                continue
            last_median = median(last) or 0.0
            ok = last_median <= max(first) + FD_SLACK
            checks.append(Check("{} {}".format(kind, name), ok,
                                "first window {:.0f}..{:.0f}, last window median {:.0f} "
                                "(max {:.0f})".format(min(first), max(first), last_median,
                                                      max(last))))
    return checks


def lag_series(windows: Windows, bars: Sequence[BarArrival], column: str
               ) -> tuple[list[float], list[float]]:
    """(first-window, last-window) values of a lag series; bar latency by the bar's minute end,
    so a bar journalled through the outage counts in neither."""
    if column == "bar_latency_ms":
        return ([bar.latency_ms for bar in bars if _in(windows.first_span, bar.close_s)],
                [bar.latency_ms for bar in bars if _in(windows.last_span, bar.close_s)])
    return values(windows.first, column), values(windows.last, column)


def lag_checks(windows: Windows, bars: Sequence[BarArrival]) -> list[Check]:
    checks = []
    for column, label, unit, slack in LAG_SERIES:
        first, last = lag_series(windows, bars, column)
        if column == "bar_lag_s" and min(_length(windows.first_span),
                                         _length(windows.last_span)) < SAWTOOTH_WINDOW:
            checks.append(Check("lag " + column, True, "not judged: a window is shorter than "
                                "{:.0f} s".format(SAWTOOTH_WINDOW)))
            continue
        if len(first) < MIN_VALUES or len(last) < MIN_VALUES:
            checks.append(Check("lag " + column, True, "not judged: {} / {} values in the "
                                "first / last window".format(len(first), len(last))))
            continue
        first_median, last_median = median(first) or 0.0, median(last) or 0.0
        limit = LAG_FACTOR * first_median + slack
        checks.append(Check("lag " + column, last_median <= limit,
                            "{}: median {:.1f} -> {:.1f} {} (limit {:.1f})".format(
                                label, first_median, last_median, unit, limit)))
    return checks


def depth_checks(windows: Windows, info: RunInfo) -> list[Check]:
    worst: list[str] = []
    ok = True
    for actor in info.actors:
        column = "depth." + actor
        first, last = values(windows.first, column), values(windows.last, column)
        if not first or not last:
            continue
        limit = (percentile(first, 0.99) or 0.0) + DEPTH_SLACK
        if (median(last) or 0.0) > limit:
            ok = False
            worst.append("{} {:.0f} > {:.0f}".format(actor, median(last) or 0.0, limit))
    return [Check("mailboxes", ok, "; ".join(worst) or "no backlog growing")]


def run_checks(rows: Sequence[Row], info: RunInfo) -> list[Check]:
    status = info.final_status
    actors = status.get("actors", {})
    restarts = {name: int(view.get("restarts") or 0) for name, view in actors.items()}
    dead = int((status.get("router") or {}).get("dead_letters") or 0)
    checks = [
        Check("run", not info.errors, "; ".join(info.errors) or "host ran to the end"),
        Check("restarts", bool(actors) and not any(restarts.values()),
              ", ".join("{}={}".format(k, v) for k, v in sorted(restarts.items()) if v)
              or ("none" if actors else "no final status")),
        Check("dead letters", dead == 0, str(dead)),
        Check("host exit", info.host_exit == 0, "exit code {}".format(info.host_exit)),
    ]
    if info.outage_start is not None:
        checks.append(Check("outage drained", info.drained_at is not None,
                            "journal empty, Redis up {:.1f} s after Redis came back".format(
                                info.drained_at - (info.outage_end or 0.0))
                            if info.drained_at is not None else "never drained"))
    return checks


def bar_checks(bars: Sequence[BarArrival], info: RunInfo) -> list[Check]:
    per_symbol: dict[str, list[int]] = {}
    for bar in bars:
        per_symbol.setdefault(bar.symbol, []).append(bar.open_time)
    gaps = []
    for symbol, opens in sorted(per_symbol.items()):
        ordered = sorted(opens)
        missing = (ordered[-1] - ordered[0]) // 60_000 + 1 - len(ordered)
        if missing:
            gaps.append("{} {} missing".format(symbol, missing))
    ok = not gaps and not info.duplicate_bars
    detail = "{} final 1m tick bars for {} symbols".format(len(bars), len(per_symbol))
    if gaps:
        detail += "; gaps: " + ", ".join(gaps)
    if info.duplicate_bars:
        detail += "; {} duplicates, e.g. {}".format(len(info.duplicate_bars),
                                                    info.duplicate_bars[:3])
    return [Check("bars on Redis", ok, detail)]


def analyse(rows: Sequence[Row], bars: Sequence[BarArrival], info: RunInfo
            ) -> tuple[Windows, list[Check]]:
    windows = split(rows, info)
    checks: list[Check] = []
    if not windows.first or not windows.last:
        checks.append(Check("samples", False, "too few samples after warm-up ({} rows)".format(
            len(rows))))
    else:
        checks += memory_checks(windows, info)
        checks += descriptor_checks(windows, info)
        checks += lag_checks(windows, bars)
        checks += depth_checks(windows, info)
    checks += run_checks(rows, info)
    checks += bar_checks(bars, info)
    return windows, checks


# -- the table -----------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else "{:.{}f}".format(value, digits)


def _delta(rows: Sequence[Row], column: str) -> float | None:
    series = values(rows, column)
    return series[-1] - series[0] if len(series) >= 2 else None


def summary(rows: Sequence[Row], bars: Sequence[BarArrival], info: RunInfo, windows: Windows,
            checks: Sequence[Check]) -> str:
    line = "-" * 96
    out = [line, "SOAK SUMMARY: {:.0f} s, warm-up {:.0f} s, {} symbols, sim {:.0f} ticks/s, "
           "Redis outage {}".format(
               info.duration, info.warmup, info.symbols, info.rate,
               "{:.0f} s from t={:.0f} s (drained at t={})".format(
                   info.outage, info.outage_start or 0.0,
                   _fmt(info.drained_at)) if info.outage_start is not None else "none"),
           "windows: first t={:.0f}..{:.0f} s ({} samples), last t={:.0f}..{:.0f} s "
           "({} samples), outage {} samples, {} samples in all".format(
               *windows.first_span, len(windows.first), *windows.last_span, len(windows.last),
               len(windows.outage), len(rows)),
           "",
           "{:16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9} {:>7}".format(
               "RSS MiB", "start", "first", "outage", "last", "end", "max", "fds f/l",
               "threads", "cpu %")]
    elapsed = float(rows[-1]["t"]) - float(rows[0]["t"]) if len(rows) > 1 else 0.0
    for name in [*info.judged, *info.reported]:
        column = "rss_mb." + name
        series = values(rows, column)
        if not series:
            continue
        cpu = _delta(rows, "cpu_s." + name)
        out.append("{:16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9} {:>7}".format(
            name + ("" if name in info.judged else " *"), _fmt(series[0]),
            _fmt(median(values(windows.first, column))),
            _fmt(max(values(windows.outage, column), default=None)),
            _fmt(median(values(windows.last, column))), _fmt(series[-1]), _fmt(max(series)),
            "{}/{}".format(_fmt(median(values(windows.first, "fds." + name)), 0),
                           _fmt(median(values(windows.last, "fds." + name)), 0)),
            "{}/{}".format(_fmt(median(values(windows.first, "threads." + name)), 0),
                           _fmt(median(values(windows.last, "threads." + name)), 0)),
            _fmt(100.0 * cpu / elapsed if cpu is not None and elapsed else None)))
    out.append("  (* shown, not judged; first/last = window medians, fds and threads as "
               "first/last window medians)")
    out.append("")
    out.append("mailbox depth (max / last-window median): " + ", ".join(
        "{} {}/{}".format(actor, _fmt(max(values(rows, "depth." + actor), default=None), 0),
                          _fmt(median(values(windows.last, "depth." + actor)), 0))
        for actor in info.actors))
    out.append("")
    out.append("{:44} {:>9} {:>9} {:>9} {:>9} {:>9}".format(
        "lag", "first p50", "first p99", "last p50", "last p99", "max"))
    quiet = [row for row in windows.judged if row.get("phase") not in ("outage", "recovering")]
    for column, label, unit, _ in LAG_SERIES:
        first, last = lag_series(windows, bars, column)
        every = [bar.latency_ms for bar in bars if bar.close_s >= info.warmup
                 and not _outage_bar(bar, info)] if column == "bar_latency_ms" \
            else values(quiet, column)
        out.append("{:44} {:>9} {:>9} {:>9} {:>9} {:>9}".format(
            "{} [{}]".format(label, unit), _fmt(median(first)), _fmt(percentile(first, 0.99)),
            _fmt(median(last)), _fmt(percentile(last, 0.99)), _fmt(max(every, default=None))))
    out.append("  (max: after warm-up, outside the outage and the recovery)")
    if info.outage_start is not None:
        delayed = [bar.latency_ms / 1000.0 for bar in bars if _outage_bar(bar, info)]
        out.append("")
        out.append("outage: journal peak {} messages / {} bytes; {} final 1m bars closed while "
                   "Redis was away or recovering, delivered {}..{} s after their minute; "
                   "Redis mode at the end {}".format(
                       _fmt(max(values(rows, "journal_messages"), default=None), 0),
                       _fmt(max(values(rows, "journal_bytes"), default=None), 0), len(delayed),
                       _fmt(min(delayed, default=None)), _fmt(max(delayed, default=None)),
                       rows[-1].get("redis_mode") if rows else "-"))
    ticks = _delta(rows, "ticks")
    out.append("")
    out.append("counts: ticks published {} ({} /s), ticks aggregated {}, bars finalised by the "
               "aggregator {}, ohlcv messages to Redis {}, final 1m tick bars at the "
               "subscriber {}".format(
                   _fmt(ticks, 0), _fmt(ticks / elapsed if ticks and elapsed else None),
                   _fmt(_delta(rows, "agg_ticks"), 0), _fmt(_delta(rows, "agg_bars"), 0),
                   _fmt(_delta(rows, "ohlcv_published"), 0), len(bars)))
    out.append("")
    out.append("CHECKS")
    for check in checks:
        out.append("  {:4} {:22} {}".format("ok" if check.ok else "FAIL", check.name,
                                             check.detail))
    out.append(line)
    out.append("VERDICT: {}".format("PASS" if all(check.ok for check in checks) else "FAIL"))
    return "\n".join(out)
