"""history_poller: the bar store, warmup, gap repair and the history commands.

- Persists every final bar on ``bar.`` (lossless) in the bar store, the single on-disk truth,
  one final per key (a different second final is a counted conflict, never an overwrite).
- Warmup at start: load the store, publish its tail (source ``store``), fetch the minutes it
  lacks in the warmup window (daily first, then 1m in chunks, through fxcm_session's quota),
  rebuild the derived timeframes from 1m, then mark the feed ready (``poller.ready``).
- Gap repair, when the gap is seen: tick_aggregator's ``BarGap`` notices (``gap.``) name the
  minutes it will not emit and, through them, the derived bars it will not build. Each such
  minute is fetched from history as soon as it has ended on the pipeline clock (plus
  ``repair_delay_ms``), and each such derived bar is built from the stored 1m bars the moment
  its last minute is stored, from history or from ticks (``_gaps.GapBook``). A replay at speed
  0 repairs as fast as its data moves: nothing here waits on a wall-clock cadence.
- A safety net every ``poll_seconds``: minutes still missing two minutes after their end
  inside trading hours are fetched, and derived bars whose minutes are all there are rebuilt.
- Commands (``poller.<op>`` requests from command_handler, replied with ``poller.result``):
  warmup, backfill (lookback clamped to backfill_min..max_minutes), republish_tail,
  tail_guard (the exact missing minutes of a window; repaired when asked), set_universe.

Only the configured ``timeframes`` are built, republished and warmed up. History rows carry the
broker's float noise: prices are rounded to the instrument's precision (``instrument.``
messages, else the ``instruments`` setting) on the price basis, as tick aggregation does.

Every history call is a job step (``_jobs``): jobs are generators that yield HistoryRequests
and receive HistoryReplies, in lanes (live repairs before the warmup, before commands, before
polls); one scheduler sends one request at a time, honours ``throttled``/``retry_after`` and
retries ``not_ready`` with backoff (counted). Only an ``ok`` answer may mark a minute known
empty: a minute whose history was never ready stays missing, for the next repair.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Generator, Iterable
from typing import Any

from actors.base import LATEST, LOSSLESS, Actor, Subscribe, handles
from actors.history_poller._commands import (
    CommandError,
    Watermarks,
    command_backfill,
    command_republish,
    command_tail_guard,
    command_warmup,
)
from actors.history_poller._gaps import GapBook
from actors.history_poller._jobs import (
    COMMAND,
    LANES,
    LIVE,
    POLL,
    WARMUP,
    Job,
    Pace,
    RetryPolicy,
    Scheduled,
    Scheduler,
)
from actors.history_poller._settings import HistoryPollerSettings
from actors.history_poller._store import BarStore
from bus import Backoff, Delivery
from protocol.bars import bucket_end, bucket_start, derive
from protocol.errors import ConnectorError, ProtocolError, RequestTimeout
from protocol.market import (
    CLOCK_TOPIC,
    GAP_PREFIX,
    INSTRUMENT_PREFIX,
    MINUTE_MS,
    SOURCE_REBUILT,
    SOURCE_STORE,
    TF_MS,
    UNIVERSE_TOPIC,
    Bar,
    BarGap,
    Clock,
    HistoryReply,
    HistoryRequest,
    Instrument,
    Precision,
    Universe,
    bar_topic,
    normalize_symbol,
    normalize_tf,
    parse_targets,
)

log = logging.getLogger("fxcm.poller")

# Owned derived buckets whose minutes never all came (the data stopped) are forgotten after
# this long past their end (pipeline clock).
OWNED_KEEP_MS = 3 * 86_400_000
# A (re)started poller repairs the missing minutes this far back in the live lane, each once
# this long past its end (tick aggregation's own bar comes within close_grace_ms).
RESTART_REPAIR_MINUTES = 10
RESTART_REPAIR_SETTLE_MS = 3000
# The commands that run as jobs (the rest are answered at once).
COMMAND_JOBS = {"warmup": command_warmup, "backfill": command_backfill,
                "republish_tail": command_republish, "tail_guard": command_tail_guard}
# Known-empty minutes (history answered ok without a bar) kept in memory, at most.
EMPTY_MINUTES_KEPT = 200_000


class HistoryPoller(Actor):
    # Bars to persist, tick aggregation's gap notices, each instrument's precision, and the
    # pipeline clock (the replay clock under replay) for "now".
    subscriptions = (Subscribe("bar.", LOSSLESS), Subscribe(GAP_PREFIX, LOSSLESS),
                     Subscribe(INSTRUMENT_PREFIX, LATEST), Subscribe(CLOCK_TOPIC, LATEST))
    warms_up_feed = True

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        HistoryPollerSettings.from_mapping(settings)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        from config.calendar import load_calendar

        config = self.config = HistoryPollerSettings.from_mapping(self.settings)
        self.calendar = load_calendar(config.calendar_file or None)
        self.symbols = list(config.symbols)
        self.timeframes = list(config.timeframes)
        self.derived_tfs = [tf for tf in self.timeframes if tf != "1m"]
        self.basis = config.price_basis
        self.precision = Precision(config.instruments)
        self.targets = list(config.stream_targets)
        self.cache_enabled = config.cache_enabled
        # cache.enabled false (FXCM_CACHE_ENABLED=0): bars kept in memory only, no file
        self.store = BarStore(config.cache_dir if self.cache_enabled else None,
                              config.max_bars)
        self.watermarks = Watermarks(int(config.republish_watermark_ttl_seconds * 1000))
        self.republish_status: dict[str, Any] = {"state": "none"}
        self.tail_guard_status: dict[str, Any] = {}
        # the feed's phase (heartbeat.state and /readyz follow it): warmup_cache while the
        # store's tail goes out, warmup while history is fetched, ready; failed (and retried
        # with backoff) when a warmup could not fetch what it needed
        self.feed: dict[str, Any] = {"phase": "warmup_cache", "reason": "loading the bar store",
                                     "attempts": 0}
        self.warmup_backoff = Backoff.from_settings(config.warmup_backoff)
        self.outbox: list[tuple[str, str, dict[str, Any]]] = []
        self.last_fetch_error = ""
        self.scheduler = Scheduler()
        self.retry = RetryPolicy(config.not_ready_retries, Backoff(0.25, 30.0, 0.2))
        self.counts: Counter[str] = Counter()
        self.empty_minutes: set[tuple[str, int]] = set()  # history answered ok without a bar
        self.gaps = GapBook(self.derived_tfs, self.calendar, config.repair_delay_ms)
        self.ready = False
        welcome: dict[str, Any] = dict(self.client.welcome) if self.client is not None else {}
        joins = welcome.get("connects")
        # The router counts the joins of this name in this host run: a later one is a restart.
        self.restarted = isinstance(joins, int) and joins > 1
        self.request_timeout = config.request_timeout_seconds
        self.clock_ms = 0  # the pipeline clock; nothing is fetched before the first reading
        self.universe = self._initial_universe()
        self.live_start = 0  # minutes from here on belong to tick aggregation in this run
        started = time.monotonic()
        for symbol in self.symbols:
            for tf in self.timeframes:
                self.store.load(symbol, tf)
        self.load_seconds = time.monotonic() - started
        self.feed["reason"] = "waiting for the pipeline clock (fxcm_session's clock)"
        self.next_poll: dict[tuple[str, str], float] = {}
        self.scheduler.add("warmup", WARMUP, self._warmup_job(self.symbols, None,
                                                              republish=not self.restarted))
        self._publish_universe()
        self.every(0.02, self._work)
        self.every(config.poll_seconds, self._repair_scan)
        self.every(config.poll_seconds, self._poll)

    def on_close(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.compact_all()

    def _now_minute(self) -> int:
        return self.clock_ms - self.clock_ms % MINUTE_MS

    @handles("clock")
    def on_clock(self, clock: Any, delivery: Delivery) -> None:
        if isinstance(clock, Clock) and clock.now_ms > self.clock_ms:
            self.clock_ms = clock.now_ms
            if not self.live_start:
                self.live_start = self._now_minute()
                self._own_buckets_in_progress()
            self._schedule_due()

    def _own_buckets_in_progress(self) -> None:
        """At (re)start, what gaps told before would have said: the derived buckets in
        progress, and those that just ended, are this poller's to build too (a bucket tick
        aggregation builds as well comes out identical: one final); minutes of the last
        ``RESTART_REPAIR_MINUTES`` and the minute in progress still missing a few seconds
        after their end are repaired in the live lane, ahead of the warmup (they may be a gap
        told to the crashed instance: a session lost just before this restart leaves the
        minute in progress partial, and its notice died with the old instance)."""
        for symbol in self.symbols:
            self.gaps.own(symbol, self.live_start - 2 * MINUTE_MS, self.live_start + MINUTE_MS)
            recent = self._missing(symbol, self.live_start - RESTART_REPAIR_MINUTES * MINUTE_MS,
                                   self.live_start + MINUTE_MS)
            self.gaps.queue(symbol, recent, RESTART_REPAIR_SETTLE_MS)

    @handles("instrument")
    def on_instrument(self, instrument: Any, delivery: Delivery) -> None:
        if isinstance(instrument, Instrument) and self.precision.learn(instrument):
            self.counts["instrument_updates"] += 1

    # -- the live universe ---------------------------------------------------------------------

    def _base_targets(self) -> list[list[str]] | None:
        """The static stream targets (``history_poller.targets``, the seed's stream.config);
        None: every configured symbol at every configured timeframe."""
        if not self.config.targets:
            return None
        return [[symbol, tf] for symbol, tf in self.targets
                if symbol in self.symbols and tf in self.timeframes]

    def _initial_universe(self) -> Universe:
        base = self._base_targets()
        if not self.config.dynamic_universe_enabled:
            return Universe(base, "static", self.clock_ms)
        spec = self.config.dynamic_universe_default_targets
        if not spec:
            return Universe(None if base is None else self._bounded(base, base), "default",
                            self.clock_ms)
        default = [[symbol, tf] for symbol, tf in parse_targets(spec)]
        return Universe(self._bounded(default, base), "default", self.clock_ms)

    def _bounded(self, targets: list[list[str]], base: list[list[str]] | None
                 ) -> list[list[str]]:
        """Within the static targets (when there are), configured, at most ``max_targets``
        (FXCM_DYNAMIC_UNIVERSE_MAX_TARGETS), as the predecessor's dynamic universe."""
        kept = [target for target in targets if (base is None or target in base)
                and target[0] in self.symbols and target[1] in self.timeframes]
        return kept[:self.config.max_targets]

    def _publish_universe(self) -> None:
        # latest-policy subscribers (the publisher) get the newest; a restarted one too
        self.publish(UNIVERSE_TOPIC, self.universe)

    def _set_universe(self, args: dict[str, Any]) -> dict[str, Any]:
        """``fxcm_set_universe``: with the dynamic universe enabled the live targets become
        the set given (within the static targets, capped); otherwise ignored, as the
        predecessor did."""
        asked = [[normalize_symbol(t["symbol"]), normalize_tf(t["tf"])]
                 for t in args.get("targets", [])]
        if not self.config.dynamic_universe_enabled:
            return {"applied": False, "reason": "the dynamic universe is disabled "
                    "(history_poller.dynamic_universe_enabled, FXCM_DYNAMIC_UNIVERSE_ENABLED)",
                    "targets": self.universe.targets}
        kept = self._bounded(asked, self._base_targets())
        self.universe = Universe(kept, "dynamic", self.clock_ms)
        self._publish_universe()
        self.counts["universe_applied"] += 1
        log.info("%s: live universe set by command: %s", self.name,
                 ", ".join("{}:{}".format(*target) for target in kept) or "nothing")
        return {"applied": True, "targets": kept, "asked": len(asked),
                "dropped": len(asked) - len(kept),
                "capped": len(asked) > self.config.max_targets}

    # -- persistence -------------------------------------------------------------------------

    @handles("bar")
    def on_bar(self, bar: Any, delivery: Delivery) -> None:
        if not isinstance(bar, Bar):
            raise ProtocolError("a bar message must carry a Bar")
        if delivery.header.sender == self.name:
            return  # its own publication coming back: stored before it was published
        if bar.complete:
            outcome = self.store.put(bar)
            self.counts["persist_" + outcome] += 1
            if bar.tf == "1m" and outcome == "stored":
                self._build_owned(bar.symbol, self.gaps.owned_holding(bar.symbol,
                                                                      bar.open_time))
            elif bar.tf != "1m":
                self.gaps.release(bar.symbol, bar.tf, bar.open_time)

    def _accept(self, bars: Iterable[Bar], before_ms: int, counts: Counter[str],
                publish: bool = True) -> None:
        """Store and publish fetched history bars: final ones strictly before ``before_ms``.
        A command's job stores only (``publish`` False): it publishes what it was asked for
        afterwards, paced, as the command's."""
        for bar in bars:
            if not bar.complete or bar.open_time >= before_ms:
                counts["skipped_live"] += 1
                continue
            outcome = self.store.put(bar)
            counts[outcome] += 1
            if outcome == "stored":
                if publish:
                    self.publish(bar_topic(bar.symbol, bar.tf), bar)
                    counts["published"] += 1
                if bar.tf == "1m":
                    self._build_owned(bar.symbol, self.gaps.owned_holding(bar.symbol,
                                                                          bar.open_time))
                else:
                    self.gaps.release(bar.symbol, bar.tf, bar.open_time)

    # -- gaps ----------------------------------------------------------------------------------

    @handles("bar.gap")
    def on_gap(self, gap: Any, delivery: Delivery) -> None:
        if not isinstance(gap, BarGap):
            raise ProtocolError("a bar.gap message must carry a BarGap")
        if gap.symbol not in self.symbols:
            self.counts["gap_unknown_symbol"] += 1
            return
        due, owned = self.gaps.add(gap, self.live_start)
        self.counts["gaps"] += 1
        self.counts["gap_minutes"] += due
        log.info("%s: tick aggregation leaves %s [%s, %d) to history: %d minute(s) to fetch, "
                 "%d derived bar(s) to build", self.name, gap.symbol, gap.from_ms, gap.to_ms,
                 due, owned)
        self._schedule_due()
        # buckets whose minutes are all here already (quiet minutes, a warm store)
        self._build_owned(gap.symbol, self.gaps.owned_within(
            gap.symbol, gap.from_ms if gap.from_ms is not None else 0, gap.to_ms))

    def _schedule_due(self) -> None:
        """A live repair job for each symbol with gap minutes that have ended."""
        for symbol in self.gaps.symbols_due(self.clock_ms):
            minutes = self.gaps.pop_due(symbol, self.clock_ms)
            if minutes:
                self.scheduler.add("repair " + symbol, LIVE,
                                   self._gap_job(symbol, minutes))

    def _gap_job(self, symbol: str, minutes: list[int]) -> Job:
        counts = self.counts
        missing = [minute for minute in minutes if not self._known(symbol, minute)]
        if missing:
            yield from self._fill(symbol, missing, counts, missing[-1] + MINUTE_MS,
                                  priority=True)
            counts["gap_repairs"] += 1
        self._build_owned(symbol, self.gaps.owned_within(symbol, minutes[0],
                                                          minutes[-1] + MINUTE_MS))
        return {}

    def _build_owned(self, symbol: str, buckets: list[tuple[str, int, int]]) -> None:
        """Build each owned derived bucket whose open minutes are all stored or known empty,
        now: a derived bar is final the moment its last minute is."""
        for tf, start, end in buckets:
            if self.store.get(symbol, tf, start) is not None:
                self.gaps.release(symbol, tf, start)
                continue
            if not self._covered(symbol, start, end):
                continue
            self.gaps.release(symbol, tf, start)
            if self._derive(symbol, tf, start, end):
                self.counts["derived_built"] += 1

    def _derive(self, symbol: str, tf: str, start: int, end: int, publish: bool = True) -> bool:
        """The derived bar of ``[start, end)`` from the stored 1m bars, stored and published
        (unless a command's job rebuilds it); False when it has no minute or is stored
        already."""
        bars = [bar for bar in (self.store.get(symbol, "1m", minute)
                                for minute in range(start, end, MINUTE_MS)) if bar is not None]
        if not bars:
            return False
        derived = derive(symbol, tf, start, bars, SOURCE_REBUILT)
        if self.store.put(derived) != "stored":
            return False
        if publish:
            self.publish(bar_topic(symbol, tf), derived)
        return True

    # -- the scheduler -----------------------------------------------------------------------

    def _work(self) -> None:
        """One step of the most urgent runnable job: send its pending request, or advance
        it."""
        if not self.scheduler or not self.live_start:
            return
        now = time.monotonic()
        if self.clock_ms:
            dropped = self.gaps.prune(self.clock_ms, OWNED_KEEP_MS)
            self.counts["owned_abandoned"] += dropped
        self._send_progress(now)
        if self.outbox:
            self._flush_outbox()
        item = self.scheduler.runnable(now)
        if item is None:
            return
        try:
            if item.request is None:
                if not item.started:
                    item.started = True
                    step = next(item.job)
                else:
                    step = item.job.send(item.reply)
                item.reply = None
                item.attempts = 0
                if isinstance(step, Pace):  # stepping aside (a command between chunks)
                    item.not_before = now + step.seconds
                    return
                item.request = step
        except StopIteration as done:
            self.scheduler.remove(item)
            self._finish(item, True, done.value or {})
            return
        except (ConnectorError, CommandError) as exc:
            self.scheduler.remove(item)
            self._finish(item, False, {"code": getattr(exc, "code", "poller_error"),
                                       "message": str(exc)})
            return
        request = item.request
        assert request is not None
        try:
            _, reply = self.request("fxcm_session", "history.get", request,
                                    timeout=self.request_timeout)
        except RequestTimeout as exc:
            self.counts["history_timeouts"] += 1
            log.warning("%s: history request timed out (%s); attempt %d", self.name, exc,
                        item.attempts + 1)
            reply = HistoryReply(request.symbol, request.tf, "timeout", 0.0, str(exc), [])
        if not isinstance(reply, HistoryReply):
            raise ProtocolError("history.bars body must be a HistoryReply")
        self.counts["history_" + reply.status] += 1
        wait = self.retry.retry_in(item, reply.status, reply.retry_after)
        if wait is not None:
            if reply.status != "throttled":
                self.counts["history_retries"] += 1
            item.not_before = time.monotonic() + wait
            return
        item.reply = reply
        item.request = None

    def _finish(self, item: Scheduled, ok: bool, payload: dict[str, Any]) -> None:
        if item.name == "warmup" and item.delivery is None:
            self._warmup_done(ok, payload)
        if item.job_id is not None and item.requester is not None:
            self._tell(item.requester, "poller.done", {
                "job": item.job_id, "ok": ok, "result" if ok else "error": payload,
                "progress": item.progress})
        elif item.delivery is not None:
            body = {"ok": True, "result": payload} if ok else {"ok": False, "error": payload}
            self.reply(item.delivery, "poller.result", body)

    def _warmup_done(self, ok: bool, payload: dict[str, Any]) -> None:
        """The start's warmup ended: the feed is ready, unless it could not fetch what it
        needed; then it stays not ready (heartbeat says warmup, /readyz 503), says why, and
        tries again after a backoff."""
        failed = payload.get("failed_chunks", 0) if ok else 1
        self.feed["attempts"] = int(self.feed.get("attempts", 0)) + 1
        if failed:
            delay = self.warmup_backoff.compute(self.feed["attempts"])
            reason = payload.get("message") if not ok else "{} history request(s) got no " \
                "answer (last: {})".format(failed, self.last_fetch_error or "?")
            self.feed.update(phase="failed", reason="warmup failed: {}".format(reason),
                             retry_in_seconds=round(delay, 3),
                             retry_at=time.monotonic() + delay)
            self.counts["warmup_failures"] += 1
            log.warning("%s: %s; the feed is not ready; warmup again in %.1f s", self.name,
                        self.feed["reason"], delay)
            item = self.scheduler.add("warmup", WARMUP, self._warmup_job(
                self.symbols, None, republish=False))
            item.not_before = time.monotonic() + delay
            return
        self.ready = True
        self.feed.update(phase="ready", reason="warmup done", retry_in_seconds=None,
                         retry_at=None)
        payload = dict(payload, load_seconds=round(self.load_seconds, 3))
        self.publish("poller.ready", payload, "poller.ready")
        log.info("%s: feed ready: %s", self.name, payload)

    def _tell(self, requester: str, msg_type: str, body: dict[str, Any]) -> None:
        """A command job's progress or end, to the actor that asked (the command handler),
        never blocking the live lane: a progress report the mailbox refuses is dropped
        (the next one says more), an end is kept and offered again."""
        if msg_type == "poller.done":
            self.outbox.append((requester, msg_type, body))
            self._flush_outbox()
        elif not self.try_send(requester, msg_type, body):
            self.counts["progress_dropped"] += 1

    def _flush_outbox(self) -> None:
        while self.outbox:
            requester, msg_type, body = self.outbox[0]
            if not self.try_send(requester, msg_type, body):
                self.counts["done_held"] += 1
                return
            self.outbox.pop(0)

    def _send_progress(self, now: float) -> None:
        interval = self.config.progress_interval_seconds
        for item in self.scheduler.jobs:
            if item.job_id is None or item.requester is None or not item.progress:
                continue
            if now - item.progress_sent >= interval:
                item.progress_sent = now
                self._tell(item.requester, "poller.progress",
                           {"job": item.job_id, "progress": dict(item.progress)})

    # -- fetching ----------------------------------------------------------------------------

    def _fetch(self, symbol: str, tf: str, start_ms: int, end_ms: int, counts: Counter[str],
               priority: bool = False
               ) -> Generator[HistoryRequest, HistoryReply, tuple[list[Bar], list[int]]]:
        """All bars of ``[start_ms, end_ms)`` in chunks of ``chunk_bars``, and the starts of
        the chunks that got no ``ok`` answer (their minutes stay unknown)."""
        step = TF_MS[tf]
        chunk = self.config.chunk_bars * step
        bars: list[Bar] = []
        failed: list[int] = []
        digits = self.precision.for_basis(symbol, self.basis)
        # from the bucket holding start_ms: a daily bar opens at 17:00 New York, before it
        start = bucket_start(start_ms, tf, self.calendar.trading_day_start)
        while start < end_ms:
            end = min(start + chunk, end_ms)
            # priority: a live repair may use the quota's reserve
            reply = yield HistoryRequest(symbol, tf, start, end - 1, 0, priority)
            counts["requests"] += 1
            if reply.status == "ok":
                bars += [bar for bar in reply.to_bars(digits=digits)
                         if start <= bar.open_time < end]
            else:
                failed.append(start)
                counts["chunk_" + reply.status] += 1
                counts["failed_chunks"] += 1
                self.last_fetch_error = "{} {} {}: {}".format(symbol, tf, reply.status,
                                                              reply.error)
                log.warning("%s: history %s %s [%d, %d) %s: %s", self.name, symbol, tf, start,
                            end, reply.status, reply.error)
            start = end
        return bars, failed

    def _rebuild(self, symbol: str, start_ms: int, end_ms: int, counts: Counter[str],
                 publish: bool = True) -> None:
        """Derived bars of buckets inside ``[start_ms, end_ms)`` from the stored 1m bars, where
        the store has none yet."""
        minutes = [bar for bar in self.store.bars(symbol, "1m")
                   if start_ms <= bar.open_time < end_ms]
        day_start = self.calendar.trading_day_start
        for tf in self.derived_tfs:
            starts = sorted({bucket_start(bar.open_time, tf, day_start) for bar in minutes})
            for start in starts:
                end = self._bucket_end(start, tf)
                if start < start_ms or end > end_ms or self.store.get(symbol, tf, start):
                    continue
                if not self._covered(symbol, start, end):
                    continue
                if self._derive(symbol, tf, start, end, publish):
                    counts["rebuilt"] += 1

    def _bucket_end(self, start: int, tf: str) -> int:
        return bucket_end(start, tf, self.calendar.next_trading_day_start)

    def _known(self, symbol: str, minute: int) -> bool:
        """Stored, or known from an ``ok`` answer to have no bar."""
        return (self.store.get(symbol, "1m", minute) is not None
                or (symbol, minute) in self.empty_minutes)

    def _covered(self, symbol: str, start: int, end: int) -> bool:
        """Every open minute of ``[start, end)`` is stored or known empty in history."""
        return all(self._known(symbol, minute)
                   for minute in self.calendar.open_minutes(start, end, symbol))

    def _missing(self, symbol: str, start: int, end: int) -> list[int]:
        return [minute for minute in self.calendar.open_minutes(start, end, symbol)
                if not self._known(symbol, minute)]

    def _fill(self, symbol: str, minutes: list[int], counts: Counter[str], before_ms: int,
              priority: bool = False, publish: bool = True
              ) -> Generator[HistoryRequest, HistoryReply, None]:
        """Fetch the given missing minutes (in runs; runs closer than a chunk go in one
        request) and remember the ones history answered without a bar. Only those minutes are
        taken from the answers (one in between may be on its way from tick aggregation), and
        only before ``before_ms``."""
        chunk = self.config.chunk_bars * MINUTE_MS
        wanted = sorted(minutes)
        asked = set(wanted)
        runs: list[tuple[int, int]] = []
        for minute in wanted:
            if runs and minute + MINUTE_MS - runs[-1][0] <= chunk:
                runs[-1] = (runs[-1][0], minute + MINUTE_MS)
            else:
                runs.append((minute, minute + MINUTE_MS))
        position = 0
        for start, end in runs:
            bars, failed = yield from self._fetch(symbol, "1m", start, end, counts, priority)
            bars = [bar for bar in bars if bar.open_time in asked]
            self._accept(bars, before_ms, counts, publish)
            got = {bar.open_time for bar in bars}
            unanswered = [(first, first + chunk) for first in failed]
            while position < len(wanted) and wanted[position] < end:
                minute = wanted[position]
                position += 1
                if minute in got or any(low <= minute < high for low, high in unanswered):
                    continue
                self.empty_minutes.add((symbol, minute))
                counts["empty_in_history"] += 1
            self._build_owned(symbol, self.gaps.owned_within(symbol, start, end))

    def _lookback_start(self, symbol: str, end: int, minutes: int) -> int:
        """The start of the last ``minutes`` open minutes before ``end`` (calendar-aware: a
        warmup on a Sunday reaches back into Friday, not into the closed weekend)."""
        need = minutes * MINUTE_MS
        cursor = end
        week = 7 * 86_400_000
        while need > 0 and cursor > end - 8 * week:
            for open_start, open_end in reversed(
                    self.calendar.open_intervals(cursor - week, cursor, symbol)):
                span = open_end - open_start
                if span >= need:
                    return open_end - need
                need -= span
            cursor -= week
        return cursor

    def _horizon(self) -> int:
        """Minutes at or after this are not final yet anywhere."""
        return self._now_minute() - MINUTE_MS

    # -- jobs --------------------------------------------------------------------------------

    def _warmup_job(self, symbols: list[str], lookback_minutes: int | None,
                    republish: bool = True) -> Job:
        counts: Counter[str] = Counter()
        started = time.monotonic()
        warmup = lookback_minutes or self.config.warmup_bars
        if self.feed["phase"] != "failed":
            self.feed.update(phase="warmup_cache", reason="publishing the bar store's tail")
        # The store's tail first, for late joiners and a restarted publisher; not when only
        # this poller restarted (everyone has those bars, and thousands of them would queue
        # ahead of live bars in the publisher's mailbox).
        for symbol in symbols if republish else ():
            for tf in self.timeframes:
                for bar in self.store.bars(symbol, tf)[-self.config.republish_batch:]:
                    self.publish(bar_topic(symbol, tf), Bar(
                        bar.symbol, bar.tf, bar.open_time, bar.close_time, bar.open, bar.high,
                        bar.low, bar.close, bar.volume, bar.tick_count, True, bar.synthetic,
                        SOURCE_STORE))
                    counts["republished"] += 1
        self.feed.update(phase="warmup", reason="fetching {} minutes of history".format(warmup))
        begins = {symbol: self._lookback_start(symbol, self.live_start, warmup)
                  for symbol in symbols}
        for symbol in symbols:  # daily before minute chunks
            if "1d" not in self.timeframes:
                break
            days, _ = yield from self._fetch(symbol, "1d", begins[symbol] - 86_400_000,
                                             self.live_start, counts)
            self._accept(days, self.calendar.trading_day_start(self.live_start), counts)
        for symbol in symbols:  # what the store lacks in the window, holes included
            missing = self._missing(symbol, begins[symbol], self.live_start)
            if missing:
                yield from self._fill(symbol, missing, counts, self.live_start)
            self._rebuild(symbol, begins[symbol], self.live_start, counts)
        return dict(counts, seconds=round(time.monotonic() - started, 3))

    # -- periodic repair -----------------------------------------------------------------------

    def _repair_scan(self) -> None:
        """The safety net (see the module docstring); gap notices do the timely work."""
        if len(self.empty_minutes) > EMPTY_MINUTES_KEPT:
            # forget the oldest known-empty minutes: at worst they are asked again
            keep = sorted(self.empty_minutes, key=lambda item: item[1])[-EMPTY_MINUTES_KEPT // 2:]
            self.empty_minutes = set(keep)
        if not self.ready or self.scheduler.busy(LIVE) or self.scheduler.busy(WARMUP):
            return
        end = self._horizon() - MINUTE_MS  # leave tick aggregation its grace
        start = end - self.config.tail_guard_window_minutes * MINUTE_MS
        for symbol in self.symbols:
            missing = self._missing(symbol, start, end)
            if missing:
                counts: Counter[str] = self.counts
                self.scheduler.add("repair scan " + symbol, LIVE,
                                   self._repair_job(symbol, missing, start, end, counts))
            else:
                rebuilt: Counter[str] = Counter()
                self._rebuild(symbol, start, end, rebuilt)
                self.counts["rebuilt"] += rebuilt["rebuilt"]

    def _poll(self) -> None:
        """Targets tick aggregation does not cover (their symbol is not streamed) are polled
        from history: every poll_seconds while they bring news, idle_poll_multiplier times
        slower after a poll that found nothing new, never while their market is closed. One
        target per turn, the longest-waiting first, so none starves."""
        if not self.ready or self.scheduler.busy(POLL):
            return
        now = time.monotonic()
        due = [target for target in self.targets
               if target[0] not in self.symbols and self.next_poll.get(target, 0.0) <= now
               and self.calendar.is_open(self.clock_ms, target[0])]
        if due:
            target = min(due, key=lambda item: self.next_poll.get(item, 0.0))
            self.scheduler.add("poll", POLL, self._poll_job(target))

    def _poll_job(self, target: tuple[str, str]) -> Job:
        symbol, tf = target
        counts: Counter[str] = Counter()
        last = self.store.last(symbol, tf)
        start = last.open_time + TF_MS[tf] if last is not None else self._lookback_start(
            symbol, self.clock_ms, self.config.warmup_bars)
        bars, _ = yield from self._fetch(symbol, tf, start, self.clock_ms + 1, counts)
        self._accept(bars, self.clock_ms + 1, counts)
        quiet = counts["stored"] == 0
        wait = self.config.poll_seconds * (
            self.config.idle_poll_multiplier if quiet else 1.0)
        self.next_poll[target] = time.monotonic() + wait
        self.counts["polls"] += 1
        self.counts["polled_bars"] += counts["stored"]
        return dict(counts)

    def _repair_job(self, symbol: str, missing: list[int], start: int, end: int,
                    counts: Counter[str]) -> Job:
        log.info("%s: repairing %d missing minutes of %s from history", self.name, len(missing),
                 symbol)
        yield from self._fill(symbol, missing, counts, end)
        self._rebuild(symbol, start, end, counts)
        counts["repairs"] += 1
        return {}

    # -- commands ----------------------------------------------------------------------------

    def on_message(self, body: Any, delivery: Delivery) -> None:
        """``poller.<op>`` from command_handler. A command's job answers at once that it
        started (``{"ok": true, "started": job}``), reports ``poller.progress`` to the sender
        every ``progress_interval_seconds`` and its true end in ``poller.done``; ``poller.cancel``
        ends one; ``set_universe`` is answered at once."""
        kind = delivery.type
        if not kind.startswith("poller.") or delivery.header.reply_to is None:
            super().on_message(body, delivery)
            return
        op = kind[len("poller."):]
        args = body if isinstance(body, dict) else {}
        try:
            if op == "set_universe":
                self.reply(delivery, "poller.result", {"ok": True,
                                                       "result": self._set_universe(args)})
            elif op == "cancel":
                self.reply(delivery, "poller.result", self._cancel(str(args.get("job", ""))))
            elif op in COMMAND_JOBS:
                job_id = str(args.get("_job") or "{}-{}".format(op, self.counts["jobs"]))
                self.counts["jobs"] += 1
                progress: dict[str, Any] = {}
                item = self.scheduler.add(op, COMMAND, COMMAND_JOBS[op](
                    self, {key: value for key, value in args.items() if key != "_job"},
                    progress))
                item.job_id = job_id
                item.requester = delivery.header.sender
                item.progress = progress
                self.reply(delivery, "poller.result", {"ok": True, "started": job_id})
            else:
                self.reply(delivery, "poller.result", {"ok": False, "error": {
                    "code": "unknown_command", "message": "no poller command " + op}})
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            self.reply(delivery, "poller.result", {"ok": False, "error": {
                "code": "contract_error", "message": "{}: {}".format(type(exc).__name__, exc)}})

    def _cancel(self, job_id: str) -> dict[str, Any]:
        item = self.scheduler.find(job_id)
        if item is None:
            return {"ok": False, "error": {"code": "unknown_job",
                                           "message": "no job {} (ended already?)".format(job_id)}}
        item.job.close()  # its generator ends where it stood; nothing half-published later
        self.scheduler.remove(item)
        self.counts["jobs_cancelled"] += 1
        log.warning("%s: job %s (%s) cancelled at %s", self.name, job_id, item.name,
                    item.progress)
        self._finish(item, False, {"code": "cancelled", "message": "cancelled at {}".format(
            item.progress or "its start")})
        return {"ok": True, "result": {"cancelled": job_id, "progress": item.progress}}

    # -- status --------------------------------------------------------------------------------

    def _feed_status(self) -> dict[str, Any]:
        """What heartbeat and the host read: the feed's phase, the live universe, seed 004's
        status entries (``ohlcv.final_1m.coverage_ok``, ``republish.state``, the tail guard's
        tiers) and the running commands' progress."""
        now = time.monotonic()
        feed = {key: value for key, value in self.feed.items() if key != "retry_at"}
        if self.feed.get("retry_at"):
            feed["retry_in_seconds"] = round(max(0.0, self.feed["retry_at"] - now), 3)
        feed.update(cache_enabled=self.cache_enabled,
                    cache_source="bar store" if self.cache_enabled else None)
        coverage: dict[str, Any] = {}
        if self.clock_ms:
            end = self._horizon() - MINUTE_MS  # tick aggregation's minute is still coming
            start = end - self.config.tail_guard_near_window_minutes * MINUTE_MS
            missing = {symbol: len(self._missing(symbol, start, end)) for symbol in self.symbols}
            coverage = {"coverage_ok": not any(missing.values()), "missing": missing,
                        "window": [start, end],
                        "last_open_ms": {symbol: last.open_time for symbol in self.symbols
                                         if (last := self.store.last(symbol, "1m"))}}
        return {
            "feed": feed,
            "universe": {"mode": self.universe.mode, "targets": [
                {"symbol": symbol, "tf": tf} for symbol, tf in self.universe.targets]
                if self.universe.targets is not None else None},
            "ohlcv": {"final_1m": coverage},
            "republish": dict(self.republish_status),
            "tail_guard": dict(self.tail_guard_status),
            "commands": [{"job": item.job_id, "op": item.name, "progress": dict(item.progress)}
                         for item in self.scheduler.jobs if item.job_id is not None],
            "poll_seconds": self.config.poll_seconds,
            "idle_poll_multiplier": self.config.idle_poll_multiplier,
            "lookback_minutes": self.config.tail_guard_window_minutes,
        }

    def status(self) -> dict[str, Any]:
        result = super().status()
        store: dict[str, Any] = self.store.status() if hasattr(self, "store") else {}
        if (store.get("read_only") and getattr(self, "cache_enabled", True)) \
                or store.get("quarantined"):
            result["state"] = "degraded"
        counters: dict[str, int] = store.get("counters", {})
        if hasattr(self, "feed"):
            result.update(self._feed_status())
        result.update({
            "ready": getattr(self, "ready", False),
            "store": store,
            "jobs": self.scheduler.names() if hasattr(self, "scheduler") else [],
            "lanes": {LANES[lane]: sum(1 for item in self.scheduler.jobs if item.lane == lane)
                      for lane in range(len(LANES))} if hasattr(self, "scheduler") else {},
            "gaps": self.gaps.status(self.clock_ms) if hasattr(self, "gaps") else {},
            "counts": dict(getattr(self, "counts", {})),
            "targets": ["{}:{}".format(s, tf) for s, tf in getattr(self, "targets", [])],
            "metrics": {
                "fxcm_store_conflicts_total": {
                    "type": "counter", "help": "Different finals offered for a stored key",
                    "samples": [[{}, counters.get("conflicts", 0)]]},
                "fxcm_connector_errors_total": {
                    "type": "counter", "help": "Errors by type (cache_io: bar store IO)",
                    "samples": [[{"type": "cache_io"}, counters.get("io_errors", 0)]]},
                "fxcm_store_quarantined_total": {
                    "type": "counter", "help": "Damaged bar store files quarantined",
                    "samples": [[{}, counters.get("quarantined", 0)]]},
                "fxcm_store_read_only": {
                    "type": "gauge", "help": "1 when the bar store fell back to read-only",
                    "samples": [[{}, 1.0 if store.get("read_only") else 0.0]]},
                "fxcm_history_replies_total": {
                    "type": "counter", "help": "history.get answers by status (timeout: none)",
                    "samples": [[{"status": key[len("history_"):]}, value]
                                for key, value in sorted(getattr(self, "counts", {}).items())
                                if key.startswith("history_") and key != "history_retries"
                                and key != "history_timeouts"]},
                "fxcm_history_retries_total": {
                    "type": "counter",
                    "help": "History calls asked again after not_ready or a timeout (backoff)",
                    "samples": [[{}, getattr(self, "counts", {}).get("history_retries", 0)]]},
                "fxcm_gap_repairs_total": {
                    "type": "counter",
                    "help": "Gaps named by tick aggregation that were fetched from history",
                    "samples": [[{}, getattr(self, "counts", {}).get("gap_repairs", 0)]]},
                "fxcm_gap_derived_built_total": {
                    "type": "counter",
                    "help": "Derived bars built over gaps the moment their minutes were in",
                    "samples": [[{}, getattr(self, "counts", {}).get("derived_built", 0)]]},
                "fxcm_feed_ready": {
                    "type": "gauge", "help": "1 once warmup has finished",
                    "samples": [[{}, 1.0 if getattr(self, "ready", False) else 0.0]]},
            },
        })
        return result
