"""The commands' jobs (seed 004; the predecessor's fxcm_warmup and fxcm_backfill as smc_v1 sends
them): what each argument means here, and the jobs that carry them out.

Every command job runs in the COMMAND lane (below live repairs and the start's warmup), asks
history one chunk at a time, and publishes what it was asked for in paced chunks
(``command_publish_chunk`` bars, ``command_publish_rate`` bars a second, each chunk only when the
bus takes it), so that a year of bars never stands between a live final bar and Redis. Its
bars carry the source ``command`` (``history_s3`` on the wire): a consumer asked for them, so
they go out even when the same finals went out before.

- ``warmup``: fetch the 1m history the store lacks over the lookback (``lookback_days``,
  ``lookback_hours``, ``lookback_minutes``; else ``min_history_bars`` bars of the largest
  timeframe asked; else ``warmup_bars``), rebuild the derived bars, then (``publish``, default
  true) publish for each of ``timeframes`` (default 1m) its last ``min_history_bars`` bars,
  else those of the last ``window_hours`` (default 24).
- ``backfill``: fetch one symbol's 1m history over ``start_ms..end_ms`` (honoured as given; a
  range reaching into the minutes still forming ends at the last final minute) or over the last
  ``lookback_minutes`` (clamped to ``backfill_min_minutes..backfill_max_minutes``), rebuild, then
  (``publish``) publish the range and the tail of ``window_hours`` for ``timeframes`` (1m).
- ``republish_tail``: the final bars of ``timeframes`` over ``window_hours`` from the store;
  without ``force`` only those after the watermark (the newest open time republished within
  ``republish_watermark_ttl_seconds``).
- ``tail_guard``: the missing 1m minutes (and, for the derived ``tfs``, the buckets whose
  minutes are all there but whose bar is not) in two tiers: ``near`` (the last
  ``tail_guard_near_window_minutes``) and ``far`` (``window_hours``); with ``repair``, fetched
  and rebuilt, only while the market is closed unless
  ``tail_guard_repair_only_when_market_closed`` is false (seed 004), and republished after
  (``republish_after_repair``, default true; ``republish_force``). The window is bounded by
  what the store keeps (``max_bars`` minutes): older minutes could not be kept anyway.

Pure helpers first (argument reading, the watermark), then the jobs, functions of the poller
(its store, calendar, fetching and publishing).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.history_poller._jobs import Job, Pace, Step
from protocol.bars import bucket_start
from protocol.errors import ProtocolError
from protocol.market import (
    MINUTE_MS,
    SOURCE_COMMAND,
    TF_MS,
    Bar,
    HistoryReply,
    bar_topic,
    normalize_symbol,
    normalize_tf,
)

if TYPE_CHECKING:
    from actors.history_poller._actor import HistoryPoller

HOUR_MS = 3_600_000


class CommandError(ProtocolError):
    """A command that cannot run as asked (its job ends with this as an error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- reading the arguments --------------------------------------------------------------------

@dataclass(frozen=True)
class WarmupPlan:
    symbols: list[str]
    timeframes: list[str]
    lookback_minutes: int
    publish: bool
    publish_bars: int | None      # the last N bars of each timeframe, else the window
    window_hours: int


def warmup_plan(args: dict[str, Any], symbols: list[str], configured_tfs: list[str],
                warmup_bars: int) -> WarmupPlan:
    chosen = [normalize_symbol(s) for s in args.get("symbols") or symbols]
    timeframes = [normalize_tf(tf) for tf in args.get("timeframes") or ["1m"]]
    unknown = [tf for tf in timeframes if tf not in configured_tfs]
    if unknown:
        raise CommandError("contract_error", "timeframes {} are not configured (timeframes: "
                           "{})".format(", ".join(unknown), ", ".join(configured_tfs)))
    bars = int(args.get("min_history_bars") or 0) or None
    lookback = (int(args.get("lookback_days") or 0) * 1440
                or int(args.get("lookback_hours") or 0) * 60
                or int(args.get("lookback_minutes") or 0))
    if not lookback and bars:
        lookback = bars * max(TF_MS[tf] for tf in timeframes) // MINUTE_MS
    return WarmupPlan(chosen, timeframes, lookback or warmup_bars,
                      bool(args.get("publish", True)), bars, int(args.get("window_hours") or 24))


@dataclass(frozen=True)
class BackfillPlan:
    symbol: str
    start_ms: int
    end_ms: int
    requested_minutes: int | None   # lookback_minutes as asked (None: an explicit range)
    clamped: bool
    timeframes: list[str]
    publish: bool
    window_hours: int


def backfill_plan(args: dict[str, Any], horizon_ms: int, low: int, high: int,
                  configured_tfs: list[str]) -> BackfillPlan:
    symbol = normalize_symbol(str(args["symbol"]))
    timeframes = [normalize_tf(tf) for tf in args.get("timeframes") or ["1m"]]
    timeframes = [tf for tf in timeframes if tf in configured_tfs] or ["1m"]
    if "start_ms" in args:
        start = int(args["start_ms"]) - int(args["start_ms"]) % MINUTE_MS
        end = min(int(args["end_ms"]), horizon_ms)
        if end <= start:
            raise CommandError("contract_error", "the range ends before it starts, or lies "
                               "in the minutes still forming (final up to {})".format(
                                   horizon_ms))
        requested = None
        clamped = end != int(args["end_ms"])
    else:
        requested = int(args.get("lookback_minutes") or 60)
        minutes = min(max(requested, low), high)
        clamped = minutes != requested
        end = horizon_ms
        start = end - minutes * MINUTE_MS
    return BackfillPlan(symbol, start, end, requested, clamped, timeframes,
                        bool(args.get("publish", True)), int(args.get("window_hours") or 24))


class Watermarks:
    """The newest open time republished per (symbol, tf), for ``ttl_ms`` (seed 004's
    republish watermark): a republish without ``force`` sends only what is newer."""

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms
        self._marks: dict[tuple[str, str], tuple[int, float]] = {}

    def get(self, symbol: str, tf: str, now: float) -> int | None:
        mark = self._marks.get((symbol, tf))
        if mark is None or now - mark[1] > self.ttl_ms / 1000.0:
            return None
        return mark[0]

    def set(self, symbol: str, tf: str, open_time: int, now: float) -> None:
        self._marks[(symbol, tf)] = (open_time, now)

    def view(self, now: float) -> dict[str, int]:
        return {"{}:{}".format(*key): mark[0] for key, mark in sorted(self._marks.items())
                if now - mark[1] <= self.ttl_ms / 1000.0}


def minute_runs(minutes: list[int]) -> list[list[int]]:
    """Sorted minutes as ``[start, end)`` runs: the missing ranges of a tail guard."""
    runs: list[list[int]] = []
    for minute in minutes:
        if runs and runs[-1][1] == minute:
            runs[-1][1] = minute + MINUTE_MS
        else:
            runs.append([minute, minute + MINUTE_MS])
    return runs


def as_command(bar: Bar) -> Bar:
    """A stored final as a command publishes it."""
    return Bar(bar.symbol, bar.tf, bar.open_time, bar.close_time, bar.open, bar.high, bar.low,
               bar.close, bar.volume, bar.tick_count, True, bar.synthetic, SOURCE_COMMAND)


# -- the jobs ------------------------------------------------------------------------------------

def publish_paced(poller: HistoryPoller, bars: Iterable[Bar], progress: dict[str, Any]
                  ) -> Generator[Step, HistoryReply | None, int]:
    """Publish ``bars`` (as a command's), ``command_publish_chunk`` at a time, paced to
    ``command_publish_rate`` a second, each only when the bus takes it (a full mailbox of the
    publisher holds this job back, never the actor's loop). Returns how many."""
    chunk = poller.config.command_publish_chunk
    pause = chunk / poller.config.command_publish_rate
    sent = 0
    for bar in bars:
        shown = as_command(bar)
        while not poller.try_publish(bar_topic(bar.symbol, bar.tf), shown):
            poller.counts["command_publish_held"] += 1
            yield Pace(0.2)
        sent += 1
        progress["published"] = progress.get("published", 0) + 1
        if sent % chunk == 0:
            yield Pace(pause)
    return sent


def stored_tail(poller: HistoryPoller, symbol: str, tf: str, since_ms: int,
                count: int | None) -> list[Bar]:
    """The stored finals of (symbol, tf): the last ``count``, else those from ``since_ms``."""
    bars = poller.store.bars(symbol, tf)
    if count is not None:
        return bars[-count:]
    return [bar for bar in bars if bar.open_time >= since_ms]


def command_warmup(poller: HistoryPoller, args: dict[str, Any],
                   progress: dict[str, Any]) -> Job:
    plan = warmup_plan(args, poller.symbols, poller.timeframes,
                       poller.config.warmup_bars)
    require_cache(poller, "fxcm_warmup")
    counts: Counter[str] = Counter()
    end = poller._horizon() + MINUTE_MS
    published = {}
    for index, symbol in enumerate(plan.symbols):
        progress.update(step="fetch", symbol=symbol, symbols_done=index,
                        symbols=len(plan.symbols))
        begin = poller._lookback_start(symbol, end, plan.lookback_minutes)
        missing = poller._missing(symbol, begin, end)
        if missing:
            yield from poller._fill(symbol, missing, counts, end, publish=False)
        poller._rebuild(symbol, begin, end, counts, publish=False)
    if plan.publish:
        since = end - plan.window_hours * HOUR_MS
        for symbol in plan.symbols:
            for tf in plan.timeframes:
                progress.update(step="publish", symbol=symbol, tf=tf)
                tail = stored_tail(poller, symbol, tf, since, plan.publish_bars)
                published["{}:{}".format(symbol, tf)] = yield from publish_paced(
                    poller, tail, progress)
    return dict(counts, symbols=plan.symbols, timeframes=plan.timeframes,
                lookback_minutes=plan.lookback_minutes, published=published,
                source="history_s3")


def command_backfill(poller: HistoryPoller, args: dict[str, Any],
                     progress: dict[str, Any]) -> Job:
    plan = backfill_plan(args, poller._horizon() + MINUTE_MS,
                         poller.config.backfill_min_minutes,
                         poller.config.backfill_max_minutes, poller.timeframes)
    require_cache(poller, "fxcm_backfill")
    counts: Counter[str] = Counter()
    progress.update(step="fetch", start_ms=plan.start_ms, end_ms=plan.end_ms)
    missing = poller._missing(plan.symbol, plan.start_ms, plan.end_ms)
    if missing:
        yield from poller._fill(plan.symbol, missing, counts, plan.end_ms, publish=False)
    poller._rebuild(plan.symbol, plan.start_ms, plan.end_ms, counts, publish=False)
    published = {}
    if plan.publish:
        # the range, and the store's tail of window_hours up to now (seed 004: a republish
        # of the tail after the backfill)
        tail_from = poller._horizon() + MINUTE_MS - plan.window_hours * HOUR_MS
        for tf in plan.timeframes:
            progress.update(step="publish", tf=tf)
            bars = [bar for bar in poller.store.bars(plan.symbol, tf)
                    if bar.open_time >= tail_from
                    or plan.start_ms <= bar.open_time < plan.end_ms]
            published[tf] = yield from publish_paced(poller, bars, progress)
    # requests is there even at 0: a range already stored needs no fetch
    return dict(counts, requests=counts["requests"], symbol=plan.symbol,
                start_ms=plan.start_ms, end_ms=plan.end_ms,
                requested_minutes=plan.requested_minutes,
                lookback_minutes=(plan.end_ms - plan.start_ms) // MINUTE_MS,
                clamped=plan.clamped, missing_fetched=len(missing), published=published,
                source="history_s3")


def command_republish(poller: HistoryPoller, args: dict[str, Any],
                      progress: dict[str, Any]) -> Job:
    symbol = normalize_symbol(str(args["symbol"]))
    require_cache(poller, "fxcm_republish_tail")
    timeframes = [normalize_tf(tf) for tf in args.get("timeframes") or ["1m"]]
    window = int(args.get("window_hours") or poller.config.republish_window_hours)
    force = bool(args.get("force", False))
    result = yield from republish(poller, symbol, timeframes, window, force, progress)
    return result


def republish(poller: HistoryPoller, symbol: str, timeframes: list[str], window_hours: int,
              force: bool, progress: dict[str, Any]
              ) -> Generator[Step, HistoryReply | None, dict[str, Any]]:
    """The stored finals of ``timeframes`` over ``window_hours``, newer than the watermark
    unless ``force``; the watermark moves to the newest sent."""
    since = poller._horizon() + MINUTE_MS - window_hours * HOUR_MS
    published: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for tf in timeframes:
        bars = stored_tail(poller, symbol, tf, since, None)
        mark = None if force else poller.watermarks.get(symbol, tf, time.monotonic())
        fresh = [bar for bar in bars if mark is None or bar.open_time > mark]
        skipped[tf] = len(bars) - len(fresh)
        progress.update(step="publish", tf=tf)
        published[tf] = yield from publish_paced(poller, fresh, progress)
        if fresh:
            poller.watermarks.set(symbol, tf, fresh[-1].open_time, time.monotonic())
    total = sum(published.values())
    state = "ok" if total else "skipped"
    poller.republish_status = {"state": state, "symbol": symbol, "published": published,
                               "skipped_by_watermark": skipped, "force": force,
                               "at_ms": poller.clock_ms}
    return {"symbol": symbol, "timeframes": timeframes, "window_hours": window_hours,
            "force": force, "published": total, "by_timeframe": published,
            "skipped_by_watermark": skipped, "state": state, "source": "history_s3",
            "watermarks": poller.watermarks.view(time.monotonic())}


def audit(poller: HistoryPoller, symbol: str, tfs: list[str], start: int, end: int
          ) -> dict[str, Any]:
    """A tier's states per timeframe: missing 1m minutes inside trading hours; for a derived
    timeframe, buckets whose minutes are all known but whose bar is not stored."""
    states: dict[str, Any] = {}
    missing = poller._missing(symbol, start, end)
    for tf in tfs:
        if tf == "1m":
            states[tf] = {"state": "ok" if not missing else "missing",
                          "missing_bars": len(missing),
                          "first_missing_ms": missing[0] if missing else None,
                          "last_missing_ms": missing[-1] if missing else None}
            continue
        buckets = derived_missing(poller, symbol, tf, start, end)
        states[tf] = {"state": "ok" if not buckets else "missing",
                      "missing_bars": len(buckets)}
    return states


def command_tail_guard(poller: HistoryPoller, args: dict[str, Any],
                       progress: dict[str, Any]) -> Job:
    require_cache(poller, "fxcm_tail_guard")
    asked_tfs = [normalize_tf(tf) for tf in args.get("timeframes") or ["1m"]]
    unsupported = [tf for tf in asked_tfs if tf not in poller.timeframes]
    tfs = [tf for tf in asked_tfs if tf in poller.timeframes]
    end = poller._horizon() + MINUTE_MS
    asked_minutes = (int(args.get("window_hours") or 0) * 60
                     or poller.config.tail_guard_window_minutes)
    # older minutes than the store keeps could not be kept if repaired
    window = min(asked_minutes, poller.config.max_bars)
    start = end - window * MINUTE_MS
    tiers = {"near": min(window, poller.config.tail_guard_near_window_minutes),
             "far": window}
    repair = bool(args.get("repair", False))
    market_open = any(poller.calendar.is_open(poller.clock_ms, s) for s in poller.symbols)
    repair_allowed = repair and not (
        market_open and poller.config.tail_guard_repair_only_when_market_closed)
    counts: Counter[str] = Counter()
    report: dict[str, Any] = {}
    symbols = [normalize_symbol(s) for s in args.get("symbols") or poller.symbols]
    for index, symbol in enumerate(symbols):
        progress.update(step="audit", symbol=symbol, symbols_done=index, symbols=len(symbols))
        entry: dict[str, Any] = {
            tier: {"window_minutes": minutes,
                   "tf_states": audit(poller, symbol, tfs, end - minutes * MINUTE_MS, end)}
            for tier, minutes in tiers.items()}
        missing = poller._missing(symbol, start, end)
        entry["missing_ranges"] = minute_runs(missing)
        entry["missing_bars"] = len(missing)
        if repair_allowed and missing:
            progress.update(step="repair", missing=len(missing))
            yield from poller._fill(symbol, missing, counts, end, publish=False)
            poller._rebuild(symbol, start, end, counts, publish=False)
            still = poller._missing(symbol, start, end)
            entry["repaired"] = len(missing) - len(still)
            entry["still_missing"] = len(still)
            entry["still_missing_ranges"] = minute_runs(still)
            for tier, minutes in tiers.items():
                entry[tier]["after_repair"] = audit(poller, symbol, tfs,
                                                    end - minutes * MINUTE_MS, end)
            if args.get("republish_after_repair", True) and entry["repaired"]:
                # what the repair stored went nowhere yet: 1m (seed 004) and the derived
                # timeframes audited, rebuilt from those minutes
                entry["republish"] = yield from republish(
                    poller, symbol, ["1m"] + [tf for tf in tfs if tf != "1m"],
                    max(1, -(-window // 60)), bool(args.get("republish_force", False)),
                    progress)
        report[symbol] = entry
    poller.tail_guard_status = {
        tier: {"window_minutes": minutes, "at_ms": poller.clock_ms, "symbols": {
            symbol: entry[tier].get("after_repair", entry[tier]["tf_states"])
            for symbol, entry in report.items()}}
        for tier, minutes in tiers.items()}
    return {"window_minutes": window, "asked_window_minutes": asked_minutes,
            "start_ms": start, "end_ms": end, "repair": repair, "repaired": repair_allowed,
            "repair_refused": "the market is open (tail_guard_repair_only_when_market_closed)"
            if repair and not repair_allowed else None,
            "unsupported_timeframes": unsupported, "symbols": report, "counts": dict(counts)}


def derived_missing(poller: HistoryPoller, symbol: str, tf: str, start: int, end: int
                    ) -> list[int]:
    """Buckets of ``tf`` inside ``[start, end)`` whose open minutes are all known (stored or
    known empty) but whose derived bar is not stored."""
    day_start = poller.calendar.trading_day_start
    found = []
    bucket = bucket_start(start, tf, day_start)
    while bucket < end:
        finish = poller._bucket_end(bucket, tf)
        if bucket >= start and finish <= end and poller.store.get(symbol, tf, bucket) is None \
                and any(True for _ in poller.calendar.open_minutes(bucket, finish, symbol)) \
                and poller._covered(symbol, bucket, finish):
            found.append(bucket)
        bucket = finish
    return found


def require_cache(poller: HistoryPoller, command: str) -> None:
    if not poller.cache_enabled:
        raise CommandError("not_allowed", "{} needs the bar store: cache.enabled is false "
                           "(FXCM_CACHE_ENABLED=0)".format(command))
