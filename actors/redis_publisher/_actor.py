"""The redis_publisher actor: the bus side (see the package docstring for the Redis side).

The loop is the base class's. Handlers only check, deduplicate and batch; the batch is written
when the inbox is empty (a ``call_soon`` posted by the first message of a batch runs after the
loop has handled everything that was waiting), when it reaches ``pipeline_max``, and before
every ack. Acks carry no state (``checkpoint`` mode is used for what it guarantees: a crash acks
nothing, so whatever was not yet durable is delivered again to the next instance) and are
withheld while the journal refuses: that is how backpressure reaches the producers.

Modes: ``up`` (writes go straight to Redis), ``down`` (probing Redis every
``_PROBE_SECONDS``, so the feed resumes within a second of Redis answering; only the log lines
back off, with ``redis_backoff``; durable messages go to the journal, the rest is conflated),
``resuming`` (connected again,
waiting up to ``resume_wait_seconds`` for the subscribers seen before the outage to subscribe
again, so the backlog is not published into the void), ``draining`` (the conflated newest
snapshots and health, then the journal, then what was held in memory, in turns of
``_DRAIN_TURN_SECONDS``, with new durable messages queued behind), ``off`` (``redis.required``
false: file-only, everything durable goes to the journal, nothing is ever sent).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

from actors.base import DEGRADED, LATEST, LOSSLESS, RUNNING, Actor, Subscribe, handles
from actors.redis_publisher._config import CHANNEL_SUFFIXES, PublisherConfig
from actors.redis_publisher._dedup import CONFLICT, DUPLICATE, RecentFinals
from actors.redis_publisher._journal import Journal
from actors.redis_publisher._metrics import Metrics
from actors.redis_publisher._render import (
    COMMANDS_RESULT,
    OHLCV,
    PRICE_TIK,
    Batch,
    Message,
    Payload,
    Rejection,
    Renderer,
    bar_from_contract,
    entries_from_records,
    price_tik,
)
from actors.redis_publisher._signing import signer_from_environment
from actors.redis_publisher._sink import RedisDown, RedisSink, WriteResult
from bus import Delivery
from config.settings import redact_url
from protocol import contracts
from protocol.errors import ConfigError
from protocol.market import (
    SOURCE_COMMAND,
    UNIVERSE_TOPIC,
    Bar,
    PriceSnapshot,
    Universe,
    wire_source,
)
from protocol.states import DOWN, DRAINING, OFF, PUBLISHER, RESUMING, UP

log = logging.getLogger("fxcm.redis_publisher")

# The actor's own cadence for reconnect attempts, resume checks and drain scheduling; the
# delays themselves come from settings (redis_backoff, resume_wait_seconds).
_TICK_SECONDS = 0.1
# A reconnect probe while Redis is down: a refused connection costs microseconds, so probing
# often is cheap and the feed resumes within a second of Redis answering. A probe that fails
# slowly (a host that drops packets: the connect timeout) waits as long again before the next,
# so probing never takes more than half of the loop's time.
_PROBE_SECONDS = 0.25
# One drain turn writes for at most this long, then the loop takes new mail.
_DRAIN_TURN_SECONDS = 0.05

# The channels this actor writes (every one but the commands input).
PUBLISHED = tuple(name for name in CHANNEL_SUFFIXES if name != "commands")



class RedisPublisher(Actor):
    """The only Redis writer: contract rendering, HMAC, dedup, pipelines, outage journal."""

    ack_mode = "checkpoint"
    subscriptions = (
        Subscribe("bar.", LOSSLESS),
        Subscribe("price.snapshot.", LATEST),
        Subscribe("heartbeat", LATEST),
        Subscribe("market_status", LATEST),
        Subscribe("status.public", LATEST),
        Subscribe("command.result", LOSSLESS),
        Subscribe(UNIVERSE_TOPIC, LATEST),
    )

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        PublisherConfig.from_mapping(settings)
        for channel in PUBLISHED:
            try:
                contracts.validator(channel)
            except contracts.ContractError as exc:
                raise ConfigError("protocol/schemas: {}".format(exc)) from None

    def __init__(self, name: str, settings: dict[str, Any] | None = None) -> None:
        super().__init__(name, settings)
        self.config = PublisherConfig.from_mapping(self.settings, name)
        metrics = self.metrics = Metrics()
        self.m_bars = metrics.counter(
            "fxcm_ohlcv_bars_total", "Bars published on the ohlcv channel", "symbol", "tf")
        self.m_dropped = metrics.counter(
            "fxcm_dropped_bars_total", "Bars not published: they failed the ohlcv contract",
            "symbol", "tf")
        self.m_errors = metrics.counter(
            "fxcm_connector_errors_total", "Errors by subsystem (here: redis)", "type")
        for kind in ("redis", "cache_io"):  # the seed's types exist from the start (at 0)
            self.m_errors.inc(kind, amount=0.0)
        self.m_messages = metrics.counter(
            "fxcm_redis_messages_published_total", "Messages published to Redis", "channel")
        self.m_schema = metrics.counter(
            "fxcm_redis_schema_errors_total",
            "Payloads (or bars) refused by their channel's contract, never published", "channel")
        self.m_unvalidated = metrics.counter(
            "fxcm_redis_unvalidated_total",
            "Messages published without validation: no schema ships for the channel yet",
            "channel")
        self.m_duplicates = metrics.counter(
            "fxcm_redis_duplicate_bars_total",
            "Re-emitted identical final bars skipped (published once)", "symbol", "tf")
        self.m_conflicts = metrics.counter(
            "fxcm_redis_bar_conflicts_total",
            "A different final for a bar key already published (published; the store owns "
            "the truth)", "symbol", "tf")
        self.m_outside = metrics.counter(
            "fxcm_ohlcv_outside_universe_total",
            "Bars not streamed: their (symbol, tf) is outside the live universe "
            "(fxcm_set_universe); stored all the same", "symbol", "tf")
        self.universe: Universe | None = None
        self.m_conflated = metrics.counter(
            "fxcm_redis_conflated_total",
            "Snapshots, health and previews replaced by newer ones (or dropped) while Redis "
            "was away", "channel")
        self.m_up = metrics.gauge("fxcm_redis_up", "1 when the publisher has Redis")
        self.m_down_seconds = metrics.gauge(
            "fxcm_redis_down_seconds", "Seconds since Redis went away (0 when up)")
        self.m_attempts = metrics.counter(
            "fxcm_redis_reconnect_attempts_total", "Connection attempts after a failure")
        self.m_journal_bytes = metrics.gauge(
            "fxcm_redis_journal_bytes", "Bytes of undelivered records in the outage journal")
        self.m_journal_messages = metrics.gauge(
            "fxcm_redis_journal_messages", "Undelivered records in the outage journal")
        self.m_refusals = metrics.counter(
            "fxcm_redis_journal_refusals_total",
            "Times the journal refused (full or unavailable): messages held in memory and acks "
            "withheld")
        self.m_journal_unavailable = metrics.gauge(
            "fxcm_redis_journal_unavailable",
            "1 while the outage journal's directory cannot be opened (see the log and status)")
        self.m_held = metrics.gauge(
            "fxcm_redis_held_messages",
            "Durable messages held in memory (journal full); the bus is held back meanwhile")
        self.m_flushes = metrics.counter(
            "fxcm_redis_pipelines_total", "Pipelines executed against Redis")
        self.mode = OFF  # protocol.states.PUBLISHER; moves only through _set_mode
        self.connected = False
        self.last_error = ""
        self.down_since: float | None = None
        self.failures = 0
        self.next_attempt = 0.0
        self.next_log = 0.0  # a still-failing reconnect is logged again at this time
        self.logged_failures = 0  # failures when the last "unreachable" line was written
        self.log_lines = 0
        self.resume_until = 0.0
        self.awaited: dict[str, int] = {}
        self.receivers: dict[str, int] = {}
        self._flush_posted = False
        self._drain_posted = False
        self._seeded = False
        self._run_id = ""
        self.last_contact = 0.0  # monotonic time of the last successful exchange with Redis
        self.sink: RedisSink | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def on_start(self) -> None:
        cfg = self.config
        self.signer = signer_from_environment(os.environ, cfg.hmac_algo)
        validators = {channel: contracts.validator(channel) for channel in PUBLISHED}
        for channel, check in validators.items():
            if check is None:
                log.warning("%s: no schema ships for %s yet: its messages go out unvalidated "
                            "(counted)", self.name, channel)
        self.renderer = Renderer(cfg.channels, cfg.prefix, cfg.last_bars, self.signer,
                                 validators)
        self.dedup = RecentFinals(cfg.dedup_capacity)
        self.batch = Batch()
        self.held: deque[Message] = deque()
        self.conflated: dict[str, Message] = {}
        self.backoff = cfg.backoff()
        self.journal = Journal(cfg.journal_dir, cfg.journal_max_bytes, cfg.journal_segment_bytes)
        self.journal.open(self._seed_from_record)
        if self.journal.unavailable:
            self.m_errors.inc("cache_io")
            log.error("%s: the outage journal is unavailable (%s): publishing goes on, but while "
                      "Redis is away final bars are held in memory only and the bus is held "
                      "back when that fills; fix cache.dir / journal_dir", self.name,
                      self.journal.unavailable)
        if cfg.redis_required:
            self.sink = RedisSink(cfg.redis_url, cfg.socket_timeout_seconds, cfg.last_bars,
                                  "fxcm-" + self.name, cfg.prefix + ":publisher:run")
            self._set_mode(DOWN)
            self.down_since = time.monotonic()
            self._connect(first=True)
        else:
            self._set_mode(OFF)
            self.set_state(RUNNING, "redis.required is false: file-only, journal in {}".format(
                cfg.journal_dir))
            log.warning("%s: redis.required is false: no Redis; final bars and command results "
                        "go to the journal in %s", self.name, cfg.journal_dir)
        self.every(_TICK_SECONDS, self._tick)

    def on_stop(self) -> None:
        self._flush()
        if self.held:
            # Stopping with Redis away and the journal full: over the bound beats a lost bar.
            records = [message.record for message in self.held]
            try:
                taken = self.journal.append(records, force=True)
            except OSError as exc:
                taken = 0
                self.m_errors.inc("cache_io")
                log.error("%s: cannot write the journal in %s: %s", self.name,
                          self.config.journal_dir, exc)
            if taken < len(records):
                log.error("%s: stopping with Redis away and no journal: %d held message(s) "
                          "are lost", self.name, len(records) - taken)
            if taken:
                log.warning("%s: stopping with Redis away: %d held message(s) written to the "
                            "journal beyond its bound", self.name, taken)
            self.held.clear()

    def on_close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        journal = getattr(self, "journal", None)
        if journal is not None:
            journal.close()

    def ready_to_ack(self) -> bool:
        # Everything handled must be durable (in Redis or in the journal) before the router
        # may forget it; while the journal refuses, no ack at all: backpressure.
        self._flush()
        return not self.held

    # -- handlers -------------------------------------------------------------------------------

    @handles("bar")
    def on_bar(self, body: Any, delivery: Delivery) -> None:
        if not isinstance(body, Bar):
            self._refuse(OHLCV, "a {} on {} is not a bar".format(
                type(body).__name__, delivery.topic.decode("utf-8", "replace")))
            return
        universe = self.universe
        if universe is not None and body.source != SOURCE_COMMAND \
                and not universe.allows(body.symbol, body.tf):
            self.m_outside.inc(body.symbol, body.tf)  # stored by the poller, not streamed
            return
        if body.complete:
            verdict, known = self.dedup.check(body)
            if verdict is DUPLICATE and body.source != SOURCE_COMMAND:
                # A command (warmup, republish_tail...) sends bars again on purpose: a
                # consumer asked for them; only the feed's own re-emissions are skipped.
                self.m_duplicates.inc(body.symbol, body.tf)
                return
            if verdict is CONFLICT:
                self.m_conflicts.inc(body.symbol, body.tf)
                log.error("%s: CONFLICT: a different final for %s %s open_time %d: published "
                          "%s, now %s (source %s); publishing the new one, the bar store owns "
                          "the truth", self.name, body.symbol, body.tf, body.open_time,
                          _values(known), _values(body), body.source)
        self.batch.add_bar(body.symbol, body.tf, wire_source(body.source), body.complete,
                           body.to_contract())
        self._added()

    @handles("universe")
    def on_universe(self, body: Any, delivery: Delivery) -> None:
        if isinstance(body, Universe):
            if self.universe is None or body.targets != self.universe.targets:
                log.info("%s: live universe (%s): %s", self.name, body.mode, "everything"
                         if body.targets is None else ", ".join(
                             "{}:{}".format(*target) for target in body.targets) or "nothing")
            self.universe = body
        else:
            self._refuse(OHLCV, "a {} is not a universe".format(type(body).__name__))

    @handles("price.snapshot")
    def on_snapshot(self, body: Any, delivery: Delivery) -> None:
        if not isinstance(body, PriceSnapshot):
            self._refuse(PRICE_TIK, "a {} is not a price snapshot".format(type(body).__name__))
            return
        self.batch.add(Payload(PRICE_TIK, price_tik(body), "price_tik:" + body.symbol,
                               self.config.key("price_tik:last:" + body.symbol)))
        self._added()

    @handles("heartbeat")
    def on_heartbeat(self, body: Any, delivery: Delivery) -> None:
        self._health("heartbeat", body)

    @handles("market_status")
    def on_market_status(self, body: Any, delivery: Delivery) -> None:
        self._health("market_status", body)

    @handles("status.public")
    def on_status(self, body: Any, delivery: Delivery) -> None:
        self._health("status", body)

    @handles("command.result")
    def on_command_result(self, body: Any, delivery: Delivery) -> None:
        if not isinstance(body, dict):
            self._refuse(COMMANDS_RESULT, "a {} is not a command result".format(
                type(body).__name__))
            return
        # Durable, in order; the last one also in <prefix>:commands:result:last for late joiners.
        self.batch.add(Payload(COMMANDS_RESULT, body, None,
                               self.config.key("commands:result:last")))
        self._added()

    def _health(self, channel: str, body: Any) -> None:
        if not isinstance(body, dict):
            self._refuse(channel, "a {} is not a {} payload".format(type(body).__name__,
                                                                   channel))
            return
        self.batch.add(Payload(channel, body, channel, self.config.key(channel + ":last")))
        self._added()

    def _refuse(self, channel: str, reason: str) -> None:
        self.m_schema.inc(channel)
        log.error("%s: not published on %s: %s", self.name, channel, reason)

    def _added(self) -> None:
        if len(self.batch) >= self.config.pipeline_max:
            self._flush()
        elif not self._flush_posted:
            self._flush_posted = True
            self.call_soon(self._flush_soon)

    # -- writing ----------------------------------------------------------------------------

    def _flush_soon(self) -> None:
        self._flush_posted = False
        self._flush()

    def _flush(self) -> None:
        if not len(self.batch):
            return
        messages, rejected = self.renderer.render(self.batch.take())
        if rejected:
            self._rejected(rejected)
        if self.mode == UP:
            try:
                result = self._write(messages)
            except RedisDown as exc:
                self._went_down(str(exc))
            else:
                self._account(messages, result)
                return
        self._stash(messages)

    def _write(self, messages: list[Message]) -> WriteResult:
        assert self.sink is not None
        self.m_flushes.inc()
        result = self.sink.write(messages)
        self.last_contact = time.monotonic()
        return result

    def _stash(self, messages: list[Message]) -> None:
        """Redis is away or behind: durable messages to the journal (or held), the rest
        conflated to the newest."""
        durable = []
        for message in messages:
            if message.record is not None:
                durable.append(message)
            elif message.conflate is not None:
                if message.conflate in self.conflated:
                    self.m_conflated.inc(message.name)
                self.conflated[message.conflate] = message
            else:
                self.m_conflated.inc(message.name)  # a preview: its final comes later
        if durable:
            self._journal(durable)
        if self.mode == DRAINING:
            self._post_drain()

    def _journal(self, messages: list[Message]) -> None:
        if self.held:  # behind what is held already: keep the order
            self.held.extend(messages)
            return
        try:
            taken = self.journal.append([message.record for message in messages])
        except OSError as exc:  # a full or failing disk: hold on, as at the bound
            taken = 0
            self.m_errors.inc("cache_io")
            log.error("%s: cannot write the journal in %s: %s", self.name,
                      self.config.journal_dir, exc)
        if taken < len(messages):
            self.held.extend(messages[taken:])
            self.m_refusals.inc()
            why = "unavailable ({})".format(self.journal.unavailable) \
                if self.journal.unavailable else "full ({} bytes, journal_max_bytes {})".format(
                    self.journal.disk_bytes, self.journal.max_bytes)
            log.warning("%s: the journal is %s: holding %d message(s) and withholding acks "
                        "until Redis is back", self.name, why, len(self.held))

    def _account(self, messages: list[Message], result: WriteResult) -> None:
        for error in result.errors:
            self.m_errors.inc("redis")
            log.error("%s: Redis refused a command: %s", self.name, error)
        failed = result.unpublished
        for message in messages:
            if id(message) in failed:
                continue
            self.m_messages.inc(message.name)
            if message.bars:
                self.m_bars.inc(message.symbol, message.tf, amount=message.bars)
        self.receivers.update(result.receivers)

    def _rejected(self, rejected: list[Rejection]) -> None:
        for rejection in rejected:
            if rejection.bars:
                self.m_schema.inc(rejection.channel, amount=len(rejection.bars))
                self.m_dropped.inc(rejection.symbol, rejection.tf, amount=len(rejection.bars))
                for bar in rejection.bars:
                    self.dedup.forget((rejection.symbol, rejection.tf, bar.get("open_time", 0)))
            else:
                self.m_schema.inc(rejection.channel)
            log.error("%s: not published on %s (%d bar(s)): %s", self.name, rejection.channel,
                      len(rejection.bars), rejection.reason)

    # -- Redis coming and going -------------------------------------------------------------------

    def _tick(self) -> None:
        if self.sink is None:
            return
        now = time.monotonic()
        if self.mode == UP:
            if now - self.last_contact >= self.config.health_check_seconds:
                try:
                    self.sink.ping()  # quiet for a while: is Redis still there?
                except RedisDown as exc:
                    self._went_down(str(exc))
                else:
                    self.last_contact = now
        elif self.mode == DOWN:
            if now >= self.next_attempt:
                self._connect()
        elif self.mode == RESUMING:
            self._check_resume(now)
        elif self.mode == DRAINING:
            self._post_drain()

    def _connect(self, first: bool = False) -> None:
        assert self.sink is not None
        if not first:
            self.m_attempts.inc()
        started = time.monotonic()
        try:
            self.sink.connect()
            if self._run_id and self.sink.run_id != self._run_id:
                # A new Redis (restarted without its data): what the old one held is gone, so
                # re-emitted finals must reach it again (for its late-joiner keys).
                log.warning("%s: Redis restarted (run id %s, was %s): re-emitted finals will be "
                            "published again", self.name, self.sink.run_id or "?",
                            self._run_id)
                self.dedup = RecentFinals(self.config.dedup_capacity)
                self._seeded = False
            self._run_id = self.sink.run_id
            if not self._seeded:
                self._seed_from_redis()
                self._seeded = True
        except RedisDown as exc:
            self.failures += 1
            now = time.monotonic()
            self.next_attempt = now + max(_PROBE_SECONDS, now - started)
            self.last_error = str(exc)
            self.m_errors.inc("redis")
            self.set_state(DEGRADED, "redis down: " + self.last_error)
            self._log_unreachable(now)
            return
        down_for = time.monotonic() - self.down_since if self.down_since is not None else 0.0
        self.last_contact = time.monotonic()
        self.connected = True
        self.failures = 0
        self.logged_failures = 0
        self.log_lines = 0
        self.next_log = 0.0
        self.down_since = None
        if first:
            log.info("%s: Redis at %s; publishing on %s", self.name,
                     redact_url(self.config.redis_url), ", ".join(
                         self.config.channels[name] for name in PUBLISHED))
        else:
            log.warning("%s: Redis is back after %.1f s", self.name, down_for)
        if self.awaited and self.config.resume_wait_seconds > 0:
            self._set_mode(RESUMING)
            self.resume_until = time.monotonic() + self.config.resume_wait_seconds
            self.set_state(DEGRADED, "redis back: waiting up to {:.0f} s for subscribers".format(
                self.config.resume_wait_seconds))
            self._check_resume(time.monotonic())
        else:
            self._start_draining()

    def _check_resume(self, now: float) -> None:
        assert self.sink is not None
        try:
            counts = self.sink.subscribers(list(self.awaited))
        except RedisDown as exc:
            self._went_down(str(exc))
            return
        missing = {channel: wanted for channel, wanted in self.awaited.items()
                   if counts.get(channel, 0) < wanted}
        if missing and now < self.resume_until:
            return
        if missing:
            log.warning("%s: subscribers of %s did not all come back within %.0f s; "
                        "publishing the backlog anyway", self.name, ", ".join(sorted(missing)),
                        self.config.resume_wait_seconds)
        self._start_draining()

    def _start_draining(self) -> None:
        self.awaited = {}
        if self._backlog():
            self._set_mode(DRAINING)
            self.set_state(DEGRADED, "redis back: publishing the backlog")
            log.info("%s: publishing the backlog: %d journaled, %d held, %d conflated",
                     self.name, len(self.journal), len(self.held), len(self.conflated))
            self._post_drain()
        else:
            self._now_up()

    def _now_up(self) -> None:
        self._set_mode(UP)
        self.set_state(RUNNING, "")

    def _set_mode(self, mode: str) -> None:
        self.check_transition(PUBLISHER, self.mode, mode)
        self.mode = mode

    def _backlog(self) -> bool:
        return bool(len(self.journal) or self.held or self.conflated)

    def _went_down(self, reason: str) -> None:
        if self.sink is not None:
            self.sink.close()
        if self.mode in (UP, DRAINING):
            # Who listened before the outage: after it, wait (a while) for them to be back.
            self.awaited = {channel: count for channel, count in self.receivers.items()
                            if count > 0}
        if self.mode in (UP, DRAINING, RESUMING):
            log.warning("%s: Redis went away (%s); final bars and command results go to the "
                        "journal in %s", self.name, reason, self.config.journal_dir)
        self._set_mode(DOWN)
        self.connected = False
        self.last_error = reason
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.failures = max(1, self.failures + 1)
        self.next_attempt = time.monotonic() + _PROBE_SECONDS
        self.m_errors.inc("redis")
        self.set_state(DEGRADED, "redis down: " + reason)

    def _log_unreachable(self, now: float) -> None:
        """One line for the first failed probe, then lines further and further apart
        (``redis_backoff``), each saying how many probes failed since the last."""
        if now < self.next_log:
            return
        self.log_lines += 1
        self.next_log = now + self.backoff.compute(self.log_lines)
        log.warning("%s: Redis at %s unreachable (%s); %d probe(s) failed (every %.2f s), next "
                    "word in %.0f s; final bars and command results go to the journal",
                    self.name, redact_url(self.config.redis_url), self.last_error,
                    self.failures - self.logged_failures, _PROBE_SECONDS, self.next_log - now)
        self.logged_failures = self.failures

    def _post_drain(self) -> None:
        if not self._drain_posted:
            self._drain_posted = True
            self.call_soon(self._drain_turn)

    def _drain_turn(self) -> None:
        """Write part of the backlog, oldest first: conflated newest, journal, held."""
        self._drain_posted = False
        if self.mode != DRAINING:
            return
        self._flush()  # anything new goes behind the backlog, in order
        deadline = time.monotonic() + _DRAIN_TURN_SECONDS
        limit = self.config.pipeline_max
        try:
            while time.monotonic() < deadline:
                if self.conflated:
                    messages = list(self.conflated.values())
                    self._account(messages, self._write(messages))  # kept if Redis fails
                    self.conflated.clear()
                    continue
                if len(self.journal):
                    records = self.journal.read(limit)
                    messages, rejected = self.renderer.render(entries_from_records(records))
                    if rejected:
                        self._rejected(rejected)
                    self._account(messages, self._write(messages))
                    self.journal.commit()
                    continue
                if self.held:
                    chunk = [self.held.popleft() for _ in range(min(limit, len(self.held)))]
                    try:
                        self._account(chunk, self._write(chunk))
                    except RedisDown:
                        self.held.extendleft(reversed(chunk))
                        raise
                    continue
                break
        except RedisDown as exc:
            self._went_down(str(exc))
            return
        if self._backlog():
            self._post_drain()
        else:
            log.info("%s: backlog published; writing directly again", self.name)
            self._now_up()

    # -- seeding the dedup memory -----------------------------------------------------------------

    def _seed_from_record(self, record: Any) -> None:
        if isinstance(record, list) and record and record[0] == OHLCV:
            _, symbol, tf, source, bars = record
            for bar in bars:
                self.dedup.remember(bar_from_contract(symbol, tf, source, bar))

    def _seed_from_redis(self) -> None:
        assert self.sink is not None
        count = 0
        for symbol, tf, bar in self.sink.recent_bars(self.config.prefix):
            try:
                self.dedup.remember(bar_from_contract(symbol, tf, "store", bar))
            except (KeyError, TypeError, ValueError):
                continue
            count += 1
        if count:
            log.info("%s: %d recent final bars known from Redis (re-emissions are skipped)",
                     self.name, count)

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        result = super().status()
        now = time.monotonic()
        down = now - self.down_since if self.down_since is not None and self.sink else 0.0
        journal = getattr(self, "journal", None)
        journal_stats = journal.stats() if journal is not None else {}
        held = len(getattr(self, "held", ()))
        self.m_up.set(value=1.0 if self.connected else 0.0)
        self.m_down_seconds.set(value=round(down, 3))
        self.m_journal_bytes.set(value=journal_stats.get("bytes", 0))
        self.m_journal_messages.set(value=journal_stats.get("messages", 0))
        self.m_journal_unavailable.set(value=1 if journal_stats.get("unavailable") else 0)
        self.m_held.set(value=held)
        renderer = getattr(self, "renderer", None)
        if renderer is not None:
            for channel, count in renderer.unvalidated.items():
                self.m_unvalidated.set(channel, value=count)
        signer = getattr(self, "signer", None)
        result["redis_connected"] = self.connected
        result["redis"] = {
            "connected": self.connected,
            "required": self.config.redis_required,
            "mode": self.mode,
            "url": redact_url(self.config.redis_url),
            "channel": self.config.channels[OHLCV],
            "down_seconds": round(down, 3),
            "reconnect_attempts": int(self.m_attempts.total()),
            "failures": self.failures,
            "last_error": self.last_error,
            "subscribers": dict(self.receivers),
            "denied": dict(self.sink.denied) if self.sink is not None else {},
        }
        result["channels"] = dict(self.config.channels)
        universe = self.universe
        result["universe"] = {"mode": universe.mode, "targets": universe.targets} \
            if universe is not None else None
        result["journal"] = dict(journal_stats, held=held)
        result["signed"] = signer is not None
        result["signing"] = signer.describe() if signer is not None else None
        result["published"] = {channel: int(count) for (channel,), count in
                               self.m_messages.samples.items()}
        result["duplicates"] = int(self.m_duplicates.total())
        result["conflicts"] = int(self.m_conflicts.total())
        result["schema_errors"] = int(self.m_schema.total())
        result["metrics"] = self.metrics.export()
        return result


def _values(bar: Bar | None) -> str:
    if bar is None:
        return "?"
    return "o={} h={} l={} c={} v={} n={}{}".format(
        bar.open, bar.high, bar.low, bar.close, bar.volume, bar.tick_count,
        " synthetic" if bar.synthetic else "")
