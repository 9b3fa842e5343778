"""The heartbeat actor: health in, ``heartbeat``, ``market_status`` and ``status.public`` out.

Inputs (all ``latest``: heartbeat wants the newest of each, and never holds a producer back):
``session.state`` and ``clock`` from fxcm_session, ``bar.`` (newest per ``bar.<SYMBOL>.<tf>``),
``actor.status.`` (every actor's status: the snapshotter's ``price_stream``, fxcm_session's
session figures, redis_publisher's Redis state), ``command.result`` (the last command), and the
runtime's own view: the router's status (``op: status`` over a ControlChannel) joined with the
supervisor's by ``actors.host.merge_status``.

Time: market hours, bar lag and staleness are judged on the pipeline clock (the newest
``clock`` message, advanced by the time since it came, except for a replay whose clock only
moves with its events); before the first ``clock`` the wall clock stands in. ``ts`` fields are
the wall time of publication, which is what a consumer compares with its own clock.

Cadence (section ``heartbeat``): the diagnostic state and the market are evaluated every
``evaluate_interval_seconds``; a change of the diagnostic state is logged with its time and
sends a heartbeat and a public status at once; a change of the market (open/closed, next
opening, session, symbols open) sends ``market_status`` at once. Otherwise ``heartbeat`` goes
every ``interval_seconds``, ``market_status`` every ``market_status_interval_seconds`` and
``status.public`` every ``status_interval_seconds``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.base import LATEST, Actor, Subscribe, handles
from actors.heartbeat._blocks import (
    backoff_blocks,
    feed_state,
    history_block,
    idle_reason,
    number,
    price_stream_block,
    supervisor_block,
    tick_cadence_block,
)
from actors.heartbeat._diagnostic import (
    STATES,
    DiagInputs,
    DiagnosticMachine,
    iso_utc,
)
from actors.heartbeat._market import MarketView
from actors.heartbeat._payloads import (
    note,
    ohlcv_state,
    price_state,
    process_state,
    public_command,
    public_status,
    runtime_view,
)
from actors.heartbeat._settings import HeartbeatSettings
from actors.heartbeat._stats import BarTracker
from actors.host import merge_status
from bus import ControlChannel, Delivery
from config.calendar import TradingCalendar, load_calendar
from protocol.contracts import channel_names
from protocol.errors import ConnectorError
from protocol.market import CLOCK_TOPIC, TF_MS, Bar, Clock, SessionState

log = logging.getLogger("fxcm.heartbeat")

STATUS_PREFIX = "actor.status."
# What a final bar on time may take after its bucket's close grace to reach Redis (the feed's
# promise: close_grace_ms + 2 s).
ON_TIME_DELIVERY_SECONDS = 2.0

class Heartbeat(Actor):
    """See the module docstring. Settings: section ``heartbeat`` of runtime_settings.json (the
    intervals, the thresholds, ``lag_timeframe``, and the names of the actors whose status it
    reads: ``session_actor``, ``snapshotter_actor``, ``publisher_actor``), plus the shared
    ``symbols``, ``calendar_file`` and ``redis.required``."""

    subscriptions = (
        Subscribe("session.state", LATEST),
        Subscribe(CLOCK_TOPIC, LATEST),
        Subscribe("bar.", LATEST),
        Subscribe(STATUS_PREFIX, LATEST),
        Subscribe("command.result", LATEST),
    )

    def __init__(self, name: str, settings: dict[str, Any] | None = None) -> None:
        super().__init__(name, settings)
        self.session: SessionState | None = None
        self.clock: tuple[int, str, float] | None = None  # now_ms, broker, received (mono)
        self.statuses: dict[str, tuple[dict[str, Any], float]] = {}
        self.last_command: dict[str, Any] | None = None
        self.runtime: dict[str, Any] = {}
        self.runtime_errors = 0
        self.sent = {"heartbeat": 0, "market_status": 0, "status.public": 0}
        self.refused = 0
        self.ignored = 0
        self.cycle_seconds = 0.0
        self.last_heartbeat_wall: float | None = None
        self._finals_at_last_heartbeat = 0
        self._market_key: tuple[Any, ...] | None = None
        self._control: ControlChannel | None = None
        self._session_seen_running = False
        self.watch_from_ms = 0  # when heartbeat started watching, on the pipeline clock

    # -- settings -----------------------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        HeartbeatSettings.from_mapping(settings)

    # -- lifecycle ----------------------------------------------------------------------------

    def on_start(self) -> None:
        config = self.config = HeartbeatSettings.from_mapping(self.settings)
        self.symbols: list[str] = list(config.symbols)
        self.lag_tf: str = config.lag_timeframe
        self.calendar: TradingCalendar = load_calendar(config.calendar_file or None)
        tag = config.session_tag
        self.market = MarketView(self.calendar, self.symbols,
                                 fixed_tag=None if tag == "AUTO" else tag)
        self.machine = DiagnosticMachine(config.stale_tick_seconds, config.lag_error_seconds)
        self.tracker = BarTracker(self.calendar, int(config.stats_window_seconds * 1000),
                                  self.lag_tf)
        self.watch_from_ms = self.now_ms()
        client = self.client
        assert client is not None
        self._control = ControlChannel(client.endpoint, client.context)
        self._refresh_runtime()
        self.every(config.evaluate_interval_seconds, self._evaluate)
        self.every(config.interval_seconds, self._heartbeat)
        self.every(config.market_status_interval_seconds, self._market_status)
        self.every(config.status_interval_seconds, self._public_status)
        self._evaluate()

    def on_close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    # -- inputs -------------------------------------------------------------------------------

    @handles("session.state")
    def on_session(self, body: Any, delivery: Delivery) -> None:
        if isinstance(body, SessionState):
            self.session = body
        else:
            self.ignored += 1

    @handles("clock")
    def on_clock(self, body: Any, delivery: Delivery) -> None:
        if isinstance(body, Clock):
            if self.clock is None:  # the pipeline's time replaces the wall clock's from now on
                self.watch_from_ms = body.now_ms
            self.clock = (body.now_ms, body.broker, time.monotonic())
        else:
            self.ignored += 1

    @handles("bar")
    def on_bar(self, body: Any, delivery: Delivery) -> None:
        if isinstance(body, Bar):
            self.tracker.add(body, time.monotonic())
        else:
            self.ignored += 1

    @handles("actor.status")
    def on_status(self, body: Any, delivery: Delivery) -> None:
        name = delivery.topic.decode("utf-8", "replace")[len(STATUS_PREFIX):]
        if isinstance(body, dict) and name != self.name:
            self.statuses[name] = (body, time.monotonic())

    @handles("command.result")
    def on_command_result(self, body: Any, delivery: Delivery) -> None:
        if isinstance(body, dict):
            self.last_command = public_command(body, time.time())
        else:
            self.ignored += 1

    # -- what heartbeat knows ------------------------------------------------------------------

    def now_ms(self) -> int:
        """The pipeline clock (see the module docstring)."""
        if self.clock is None:
            return int(time.time() * 1000)
        now_ms, broker, received = self.clock
        if broker == "replay":
            return now_ms
        return now_ms + int((time.monotonic() - received) * 1000)

    def _status_of(self, actor: str) -> tuple[dict[str, Any] | None, float | None]:
        """The newest status of the actor named ``actor``, and its age in seconds."""
        entry = self.statuses.get(actor)
        if entry is None:
            return None, None
        body, received = entry
        return body, time.monotonic() - received

    def _fresh(self, age: float | None) -> bool:
        return age is not None and age <= self.config.status_stale_seconds

    def _session_view(self) -> tuple[str | None, str, int | None]:
        """fxcm_session's state, reason and since: the newer of its ``session.state`` message
        and its status (a restarted heartbeat has only the latter until the next change)."""
        status, age = self._status_of(self.config.session_actor)
        message = self.session
        from_status: tuple[str | None, str, int | None] = (None, "", None)
        if status is not None and self._fresh(age) and "session_state" in status:
            from_status = (str(status["session_state"]), str(status.get("session_reason", "")),
                           int(status.get("session_since_ms", 0) or 0))
        if message is not None and (from_status[2] is None
                                    or message.since_ms >= from_status[2]):
            return message.state, message.reason, message.since_ms
        return from_status

    def _history_error(self) -> str | None:
        status, age = self._status_of(self.config.session_actor)
        if status is None or not self._fresh(age):
            return None
        backoff = status.get("backoff") or {}
        failures = int(backoff.get("history_failures", 0) or 0)
        paused = float(backoff.get("history_paused_for", 0.0) or 0.0) - (age or 0.0)
        if failures > 0 and paused > 0:
            return "{} failure(s) in a row, history paused {:.0f} s".format(failures, paused)
        return None

    def _login_retry_in(self) -> float | None:
        status, age = self._status_of(self.config.session_actor)
        if status is None or not self._fresh(age):
            return None
        backoff = status.get("backoff") or {}
        retry = float(backoff.get("next_login_in", 0.0) or 0.0) - (age or 0.0)
        return retry if retry > 0 else None

    def _price_stream(self) -> tuple[dict[str, Any] | None, float | None]:
        status, age = self._status_of(self.config.snapshotter_actor)
        stream = status.get("price_stream") if status is not None else None
        return (stream if isinstance(stream, dict) else None), age

    def _tick_silence(self, now_ms: int) -> float | None:
        """Seconds without a tick as the snapshotter saw it, aged by its status's age, and
        never longer than the market has been open again (a Monday morning is not silent)."""
        stream, age = self._price_stream()
        if stream is None or not self._fresh(age) or stream.get("state") == "stopped":
            return None
        silence = stream.get("tick_silence_seconds")
        if not isinstance(silence, (int, float)):
            return None
        silence = float(silence) + (age or 0.0)
        opened = self.market.open_since(now_ms)
        if opened is not None:
            silence = min(silence, max(0.0, (now_ms - opened) / 1000.0))
        return silence

    def _session_actor_state(self) -> str | None:
        """The runtime's state of fxcm_session; None when it is not configured, or has not
        been started yet (the host starts heartbeat first, so that it hears everything)."""
        actors = self.runtime.get("actors", {})
        entry = actors.get(self.config.session_actor)
        if not isinstance(entry, dict):
            return None
        state = str(entry.get("state"))
        if state == "running":
            self._session_seen_running = True
        elif state == "stopped" and not self._session_seen_running:
            return None
        return state

    def _overdue(self, now_ms: int) -> tuple[float | None, str]:
        opened = {symbol: self.market.symbol_open_since(symbol, now_ms)
                  for symbol in self.symbols}
        return self.tracker.overdue(now_ms, self.symbols, self.lag_tf, opened,
                                    self.watch_from_ms)

    def _market_known(self) -> bool:
        return (self.session is not None or self.clock is not None
                or self._status_of(self.config.session_actor)[0] is not None)

    def _publisher(self) -> dict[str, Any]:
        """What redis_publisher's status says of Redis and its channel names, if it runs."""
        status, age = self._status_of(self.config.publisher_actor)
        if status is None:
            return {}
        redis = status.get("redis")
        connected = status.get("redis_connected")
        if connected is None and isinstance(redis, dict):
            connected = redis.get("connected", redis.get("up"))
        channels = status.get("channels")
        shown: dict[str, Any] = {"connected": bool(connected) if connected is not None else None,
                                 "status_age_seconds": round(age or 0.0, 3)}
        if isinstance(redis, dict):
            shown.update({key: redis[key] for key in (
                "required", "mode", "down_seconds", "reconnect_attempts", "failures",
                "last_error") if key in redis})
        journal = status.get("journal")
        if isinstance(journal, dict):
            shown["journal"] = journal
        return {"connected": shown["connected"], "redis": shown,
                "channels": channels if isinstance(channels, dict) else {}}

    # -- evaluation -----------------------------------------------------------------------------

    def _inputs(self, now_ms: int) -> DiagInputs:
        state, reason, _ = self._session_view()
        lag, target = self._lag_of_latest_target(now_ms)
        market_open = self.market.is_open(now_ms)
        return DiagInputs(
            market_open=market_open,
            next_open_ms=None if market_open else self.market.next_open(now_ms),
            session_state=state, session_reason=reason,
            session_actor=self._session_actor_state(),
            history_error=self._history_error(),
            tick_silence_seconds=self._tick_silence(now_ms),
            bars_lag_seconds=lag, lag_target=target)

    def _evaluate(self) -> None:
        now_ms = self.now_ms()
        change = self.machine.evaluate(self._inputs(now_ms), now_ms)
        if change is not None:
            log.info("%s: diagnostic state %s -> %s at %s (%s)", self.name,
                     change.previous or "-", change.state, iso_utc(change.at_ms), change.reason)
            self._heartbeat(refresh=False)
            self._public_status()
        key = self.market.change_key(now_ms)
        if key != self._market_key:
            if self._market_key is not None:
                log.info("%s: market %s at %s", self.name, "open" if key[0] else "closed",
                         iso_utc(now_ms))
            self._market_key = key
            self._market_status()

    def _refresh_runtime(self) -> None:
        if self._control is None:
            return
        try:
            result = self._control.call({"op": "status"},
                                        self.config.runtime_timeout_seconds)
            self.runtime = runtime_view(merge_status(result.get("status", {})))
        except ConnectorError as exc:
            self.runtime_errors += 1
            log.warning("%s: no runtime status from the router: %s", self.name, exc)
            self.runtime = dict(self.runtime, error=str(exc))

    # -- outputs --------------------------------------------------------------------------------

    def _send(self, topic: str, payload: dict[str, Any]) -> None:
        if self.try_publish(topic, payload, topic):
            self.sent[topic] += 1
        else:
            self.refused += 1

    def _session_block(self, now_ms: int) -> dict[str, Any]:
        block = self.market.calendar_block(now_ms)
        block["stats"] = self.tracker.stats(now_ms)
        return block

    def _feed(self) -> dict[str, Any]:
        """history_poller's ``feed``: the warmup's phase (warmup_cache, warmup, ready, failed),
        why it failed and when it retries, the bar store; a poller that says nothing of its
        phase is ready once it says ``ready``."""
        status, _ = self._status_of(self.config.poller_actor)
        if status is None:
            if self.config.poller_actor not in self.runtime.get("actors", {}):
                return {"phase": "ready", "reason": "no history_poller in this host"}
            return {"phase": "warmup", "reason": "waiting for history_poller"}
        feed = status.get("feed")
        if not (isinstance(feed, dict) and isinstance(feed.get("phase"), str)):
            return {"phase": "ready" if status.get("ready") else "warmup"}
        shown = dict(feed)
        # seed 004's status entries: ohlcv.final_1m.coverage_ok, republish.state, the tail
        # guard's tiers; and the commands running, with their progress
        for key in ("ohlcv", "republish", "tail_guard", "commands"):
            if key in status:
                shown[key] = status[key]
        return shown

    def _poller_number(self, key: str, default: float) -> float:
        status, _ = self._status_of(self.config.poller_actor)
        value = number(status.get(key)) if status is not None else None
        return value if value is not None else default

    def _on_time_lag(self) -> float:
        """The most lag a feed on time shows at ``lag_timeframe``: the bar's length, the
        aggregator's close grace, and 2 s of delivery (the feed's promise, DESIGN.md)."""
        status, _ = self._status_of(self.config.aggregator_actor)
        grace_ms = number(status.get("close_grace_ms")) if status is not None else None
        return TF_MS[self.lag_tf] / 1000.0 + (grace_ms if grace_ms is not None else 1500) / 1000.0 \
            + ON_TIME_DELIVERY_SECONDS

    def heartbeat_payload(self, now_ms: int, wall_ms: int) -> dict[str, Any]:
        """``heartbeat`` in the seed's shape (seed 001 section 9.1): ``state`` in the seed's
        words (warmup, warmup_cache, stream, idle), seed 000's diagnostic state and its last
        change in ``context.diag``, every block of the seed's context (see ``_blocks``), and
        ours beside them (``fxcm``, ``runtime``, ``redis``, ``clock``, ``last_command``)."""
        mono = time.monotonic()
        now = wall_ms / 1000.0
        view = self.machine.view(now_ms)
        diag_state = view["state"]
        feed = self._feed()
        state = feed_state(str(feed.get("phase")), diag_state)
        last_close = self.tracker.last_close_ms(self.lag_tf)
        silence = self._tick_silence(now_ms)
        calendar_open = self.market.is_open(now_ms)
        ticks_alive = silence is not None and silence <= self.config.stale_tick_seconds
        stream, stream_age = self._price_stream()
        publisher_status, publisher_age = self._status_of(self.config.publisher_actor)
        publisher = self._publisher()
        channels = channel_names(self.config.channels)
        session_status, session_age = self._status_of(self.config.session_actor)
        session_state, session_reason, session_since = self._session_view()
        backoff = backoff_blocks(session_status, session_age or 0.0, publisher_status,
                                 publisher_age or 0.0, now)
        history = history_block(session_status)
        poll_seconds = self._poller_number("poll_seconds", 5.0)
        tick_queue = (session_status or {}).get("tick_queue")
        queue_depth = int(number(tick_queue.get("depth")) or 0) \
            if isinstance(tick_queue, dict) else 0
        cadence = tick_cadence_block(
            silence, self.config.stale_tick_seconds, calendar_open,
            backoff["fxcm_history"]["active"], poll_seconds,
            self._poller_number("idle_poll_multiplier", 1.0), self._timeframes())
        diag: dict[str, Any] = dict(view)
        diag["backoff"] = backoff
        diag["throttled"] = bool(history is not None and history["throttle_state"] != "ok")
        fxcm: dict[str, Any] = {"session_state": session_state,
                                "session_reason": session_reason,
                                "session_since_ms": session_since}
        if session_status is not None:
            fxcm.update({key: session_status.get(key) for key in (
                "ticks_published", "ticks_per_second", "reconnects", "resubscribes",
                "rejected_ticks", "instruments", "unsubscribed_symbols", "clock_skew",
                "sdk_reconnects", "errors") if key in session_status})
            fxcm["status_age_seconds"] = round(session_age or 0.0, 3)
            broker = session_status.get("broker")
            if isinstance(broker, dict):
                fxcm["broker"] = broker
        reason = idle_reason(diag_state, calendar_open, self._login_retry_in(), session_reason)
        context: dict[str, Any] = {
            "channel": channels.get("heartbeat"),
            "mode": state,
            "calendar_open": calendar_open,
            "ticks_alive": ticks_alive,
            "effective_market_open": calendar_open or ticks_alive,
            "redis_connected": bool(publisher.get("connected")),
            "redis_required": self.config.redis_required,
            "redis_channel": channels.get("ohlcv"),
            "poll_seconds": int(round(poll_seconds)),
            "lookback_minutes": int(self._poller_number("lookback_minutes", 0.0)),
            "publish_interval_seconds": self.config.interval_seconds,
            "cycle_seconds": round(self.cycle_seconds, 6),
            "stream_targets": self._stream_targets(now_ms, mono),
            "published_bars": self.tracker.finals - self._finals_at_last_heartbeat,
            "cache_enabled": bool(feed.get("cache_enabled", True)),
            "cache_source": feed.get("cache_source"),
            "tick_cadence": cadence,
            "history_state": cadence["history_state"],
            "price_stream": price_stream_block(stream, stream_age, channels.get("price_tik"),
                                               queue_depth, now, cadence),
            "tick_silence_seconds": round(silence, 3) if silence is not None else None,
            "supervisor": supervisor_block(self.runtime, (publisher_status or {}).get(
                "published") or {}, self.runtime.get("started_at"), now),
            "lag_seconds": round((now_ms - last_close) / 1000.0, 3)
            if last_close is not None else None,
            "session": self._session_block(now_ms),
            "diag": diag,
            "feed": feed,
            "fxcm": fxcm,
            "runtime": self.runtime,
            "clock": {"now_ms": now_ms, "source": "pipeline" if self.clock else "wall",
                      "broker": self.clock[1] if self.clock else None},
            "last_command": self.last_command,
        }
        if history is not None:
            context["history"] = history
        for subsystem, key in (("fxcm_history", "history_backoff_seconds"),
                               ("redis", "redis_backoff_seconds")):
            if backoff[subsystem]["active"]:
                context[key] = backoff[subsystem]["remaining_seconds"]
        if "redis" in publisher:
            context["redis"] = publisher["redis"]  # the publisher's view: outages show here
        payload: dict[str, Any] = {
            "type": "heartbeat",
            "state": state,
            "ts": iso_utc(wall_ms),
            "last_bar_close_ms": last_close,
            "tick_silence_seconds": context["tick_silence_seconds"],
            "sleep_seconds": self.config.interval_seconds,
            "context": context,
        }
        next_open = self.market.next_open(now_ms)
        payload["next_open_utc"] = iso_utc(next_open)  # while open: after this open period
        if reason is not None or not calendar_open:
            context["idle_reason"] = reason or "calendar_closed"
            context["next_open_seconds"] = round((next_open - now_ms) / 1000.0, 3)
        return payload

    def _timeframes(self) -> list[str]:
        return list(self.config.timeframes) or [self.lag_tf]

    def _stream_targets(self, now_ms: int, mono: float) -> list[dict[str, Any]]:
        """``context.stream_targets``: the live universe history_poller reports (after
        ``fxcm_set_universe``), else every configured symbol at ``lag_timeframe``; each with
        its newest final bar's lag and staleness."""
        status, _ = self._status_of(self.config.poller_actor)
        universe = status.get("universe") if status is not None else None
        targets: list[tuple[str, str]] = []
        if isinstance(universe, dict) and isinstance(universe.get("targets"), list):
            for entry in universe["targets"]:
                if isinstance(entry, dict) and isinstance(entry.get("symbol"), str) \
                        and isinstance(entry.get("tf"), str):
                    targets.append((entry["symbol"], entry["tf"]))
        if not targets:
            targets = [(symbol, self.lag_tf) for symbol in self.symbols]
        return self.tracker.targets_view(now_ms, mono, targets)

    def _heartbeat(self, refresh: bool = True) -> None:
        started = time.perf_counter()
        if refresh:
            self._refresh_runtime()
        payload = self.heartbeat_payload(self.now_ms(), int(time.time() * 1000))
        self._finals_at_last_heartbeat = self.tracker.finals
        self.cycle_seconds = time.perf_counter() - started
        payload["context"]["cycle_seconds"] = round(self.cycle_seconds, 6)
        self._send("heartbeat", payload)
        self.last_heartbeat_wall = time.time()

    def market_status_payload(self, now_ms: int, wall_ms: int) -> dict[str, Any]:
        """``market_status`` (seed 001 section 9.1) with seed 000's tick-stream fields
        (section 4.2: the last ``price_snap_ts`` and ``tick_silence_seconds``)."""
        payload = self.market.market_status(now_ms, wall_ms)
        payload["session"]["stats"] = self.tracker.stats(now_ms)
        stream, _ = self._price_stream()
        last_snap = number(stream.get("last_snap_ts")) if stream is not None else None
        silence = self._tick_silence(now_ms)
        payload["price_snap_ts"] = last_snap / 1000.0 if last_snap is not None else None
        payload["tick_silence_seconds"] = round(silence, 3) if silence is not None else None
        return payload

    def _market_status(self) -> None:
        self._send("market_status", self.market_status_payload(self.now_ms(),
                                                               int(time.time() * 1000)))

    def _lag_of_latest_target(self, now_ms: int) -> tuple[float | None, str]:
        """Seconds from the newest final bar's close to now, for the latest-running target
        whose market is open (see ``BarTracker.overdue``), and which one."""
        overdue, target = self._overdue(now_ms)
        if overdue is None:
            return None, target
        return overdue + TF_MS[self.lag_tf] / 1000.0, target

    def public_status_payload(self, now_ms: int, wall: float) -> dict[str, Any]:
        market_open = self.market.is_open(now_ms)
        stream, age = self._price_stream()
        price = price_state(stream, age, self.config.status_stale_seconds)
        lag, _ = self._lag_of_latest_target(now_ms)
        ohlcv = ohlcv_state(market_open, bool(self.tracker.targets), lag, self._on_time_lag(),
                            self.config.lag_warn_seconds,
                            self.config.lag_error_seconds)
        state = self.machine.state
        feed = self._feed()
        text = note(state, self.machine.reason, market_open, price, ohlcv,
                    self._login_retry_in())
        if feed.get("phase") != "ready" and state != "DISCONNECTED":
            text = "warmup: {}".format(feed.get("reason") or "publishing history")[:160]
        return public_status(
            ts=wall, process=process_state(state, market_open),
            market=("open" if market_open else "closed") if self._market_known() else "unknown",
            price=price, ohlcv=ohlcv,
            session=self.market.public_session(now_ms, self.tracker.stats(now_ms)),
            note_text=text)

    def _public_status(self) -> None:
        self._send("status.public", self.public_status_payload(self.now_ms(), time.time()))

    # -- status and metrics ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        result = super().status()
        machine = getattr(self, "machine", None)
        if machine is None:
            return result
        now_ms = self.now_ms()
        result.update({
            "diagnostic": machine.view(now_ms),
            "sent": dict(self.sent),
            "refused": self.refused,
            "ignored": self.ignored,
            "runtime_errors": self.runtime_errors,
            "bars": {"finals": self.tracker.finals, "previews": self.tracker.previews},
            "last_command": self.last_command,
        })
        result["metrics"] = self._metrics(now_ms)
        return result

    def _metrics(self, now_ms: int) -> dict[str, Any]:
        targets = self.tracker.targets_view(now_ms, time.monotonic(), list(self.tracker.targets))
        seen = [target for target in targets if target["last_close_ms"] is not None]

        def per_target(field: str) -> list[list[Any]]:
            return [[{"symbol": t["symbol_code"], "tf": t["timeframe"]}, float(t[field])]
                    for t in seen]
        market_open = self.market.is_open(now_ms)
        return {
            "fxcm_stream_lag_seconds": {
                "type": "gauge", "help": "Pipeline now minus the close time of the newest "
                "final bar.", "samples": per_target("lag_seconds")},
            "fxcm_stream_staleness_seconds": {
                "type": "gauge", "help": "Seconds since the newest final bar arrived.",
                "samples": per_target("staleness_seconds")},
            "fxcm_stream_last_close_ms": {
                "type": "gauge", "help": "Close time (ms UTC) of the newest final bar.",
                "samples": per_target("last_close_ms")},
            "fxcm_market_status": {
                "type": "gauge", "help": "1 when the market is open, 0 when closed.",
                "samples": [[{}, 1.0 if market_open else 0.0]]},
            "fxcm_next_open_seconds": {
                "type": "gauge", "help": "Seconds until the market next opens.",
                "samples": [[{}, (self.market.next_open(now_ms) - now_ms) / 1000.0]]},
            "fxcm_connector_heartbeat_timestamp": {
                "type": "gauge", "help": "UNIX time of the last heartbeat.",
                "samples": [[{}, self.last_heartbeat_wall]]
                if self.last_heartbeat_wall is not None else []},
            "fxcm_diagnostic_state": {
                "type": "gauge", "help": "1 for the current diagnostic state.",
                "samples": [[{"state": state}, 1.0 if state == self.machine.state else 0.0]
                            for state in STATES]},
            "fxcm_health_messages_total": {
                "type": "counter", "help": "Health messages published, by kind.",
                "samples": [[{"kind": kind}, float(count)] for kind, count in self.sent.items()]},
        }

