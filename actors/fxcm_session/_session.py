"""fxcm_session: the broker connection, the tick stream and every history call.

Threads (the SDK is not thread-safe and its calls block for up to 30 s):

- the actor's own loop: the bus. It turns queued ticks into ``tick.<SYMBOL>`` messages,
  publishes ``session.state`` and the pipeline ``clock``, answers ``history.get`` requests
  (after the quota), and watches liveness;
- one session thread that owns the broker: login with backoff, the offer subscription
  (re-created after every reconnect), every history call, logout;
- the broker's own tick thread(s): its callback only appends to a bounded queue and wakes the
  loop. It never raises (an exception in an SDK callback breaks the SDK's own waiting) and never
  blocks a live broker: an overflow is counted. Only the replay broker, which has no real-time
  duty, waits for room instead.

A restarted instance (the router has seen this name join before in this host run) has missed
whatever the broker sent while it was down, so it starts as after a lost connection: it
publishes ``DISCONNECTED`` before any tick (tick_aggregator then treats the minute in progress
as partial, history_poller repairs the gap from history) and goes through RECOVERING to STREAM.
A live broker streams from now; the replay broker resumes its timeline from a file in the run
dir (``<run_dir>/<name>.timeline.json``) instead of starting its file again.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from actors.base import Actor, handles
from actors.fxcm_session._broker import LOST, RECONNECTED, RECONNECTING, Broker, redact
from actors.fxcm_session._quota import HistoryQuota
from actors.fxcm_session._settings import FxcmSessionSettings
from bus import Backoff, Delivery
from protocol.errors import ConfigError, HistoryNotReady, LoginFailed, ProtocolError
from protocol.market import (
    CLOCK_TOPIC,
    INSTRUMENT_IN_TICKS_PREFIX,
    INSTRUMENT_PREFIX,
    SESSION_IN_TICKS_TOPIC,
    TF_MS,
    Clock,
    HistoryReply,
    HistoryRequest,
    Instrument,
    SessionState,
    Tick,
    normalize_symbol,
    normalize_tf,
    tick_topic,
)
from protocol.states import CONNECTING, DISCONNECTED, IDLE, RECOVERING, SESSION, STREAM

log = logging.getLogger("fxcm.session")

# A history reply's retry_after when the broker's history service is not ready yet (after a
# login the SDK's price history communicator takes a moment), and for a symbol the account has
# not subscribed (it stays so until the operator acts and the session logs in again).
NOT_READY_RETRY_SECONDS = 5.0
NOT_SUBSCRIBED_RETRY_SECONDS = 300.0


def make_broker(config: FxcmSessionSettings, calendar: Any) -> Broker:
    broker = config.broker
    kind = config.broker_kind
    day_start = calendar.trading_day_start if calendar is not None else None
    if kind == "sim":
        from actors.fxcm_session._sim import SimBroker
        return SimBroker(broker.get("sim", {}), calendar, day_start)
    if kind == "replay":
        from actors.fxcm_session._replay import ReplayBroker
        return ReplayBroker(broker.get("replay", {}), day_start)
    if kind == "forexconnect":
        from actors.fxcm_session._forexconnect import ForexConnectBroker
        return ForexConnectBroker(broker.get("forexconnect", {}), day_start,
                                  config.login_wait_seconds)
    raise ConfigError("broker.kind: must be sim, replay or forexconnect, got {!r}".format(kind))


def load_calendar(calendar_file: str) -> Any:
    from config.calendar import load_calendar as load
    return load(calendar_file or None)


class _TickQueue(object):
    """Bounded hand-over of raw ticks from the broker's thread to the actor loop."""

    def __init__(self, capacity: int, wake: Callable[[], None], blocking: bool) -> None:
        self.capacity = capacity
        self.items: Deque[Tuple[Any, Any, Any, Any]] = deque()
        self.overflow = 0
        self.callback_errors = 0
        self._wake = wake
        self._blocking = blocking
        self._room = threading.Condition()
        self._wake_pending = False
        self.closed = False

    def put(self, symbol: Any, ts_ms: Any, bid: Any, ask: Any) -> None:
        """Called on the broker's thread: must never raise."""
        try:
            if len(self.items) >= self.capacity:
                if not self._blocking:
                    self.overflow += 1
                    return
                with self._room:
                    while len(self.items) >= self.capacity and not self.closed:
                        self._room.wait(0.1)
            self.items.append((symbol, ts_ms, bid, ask))
            if not self._wake_pending:
                self._wake_pending = True
                self._wake()
        except Exception:  # see the docstring
            self.callback_errors += 1

    def take_all(self, limit: int) -> List[Tuple[Any, Any, Any, Any]]:
        self._wake_pending = False
        items = self.items
        batch: List[Tuple[Any, Any, Any, Any]] = []
        while items and len(batch) < limit:
            batch.append(items.popleft())
        if self._blocking:
            with self._room:
                self._room.notify_all()
        return batch

    def close(self) -> None:
        self.closed = True
        with self._room:
            self._room.notify_all()


class _Command(object):
    __slots__ = ("kind", "payload")

    def __init__(self, kind: str, payload: Any = None) -> None:
        self.kind = kind
        self.payload = payload


class FxcmSession(Actor):
    """See the module docstring. Settings: see ``config/runtime_settings.json``,
    ``actors[fxcm_session].settings``."""

    def __init__(self, name: str, settings: Optional[Dict[str, Any]] = None) -> None:
        super(FxcmSession, self).__init__(name, settings)
        self.session_state = CONNECTING
        self.session_reason = "starting"
        self.session_since_ms = int(time.time() * 1000)
        self.rejected: Counter[str] = Counter()
        self.ticks_published = 0
        self.last_tick_ms: Dict[str, int] = {}
        self.last_tick_wall: float = 0.0
        self._rate_mark: Tuple[float, int] = (time.monotonic(), 0)
        self.history_counts: Counter[str] = Counter()
        self._worker: Optional[threading.Thread] = None
        self._commands: "queue.Queue[_Command]" = queue.Queue()
        self._worker_stop = threading.Event()
        self._was_connected = False
        self._logged_in = False
        self._connected_at = 0.0
        self._broker: Optional[Broker] = None
        self._login_failures = 0
        self._next_login_at = 0.0
        self._last_login_error = ""
        self._history_failures = 0
        self._history_blocked_until = 0.0
        self._history_delay = 0.0
        self._history_error: Optional[Tuple[str, float]] = None  # (message, wall time)
        self._login_delay = 0.0
        self._login_error_at = 0.0
        self._resubscribed_at = 0.0
        self._last_reconnect = 0.0
        self.reconnects = 0
        self.resubscribes = 0
        self.clock_skipped = 0
        self.clock_held = 0  # readings not published: the broker's clock not settled yet
        self.clock_published = 0
        self.restarted = False
        self.instruments: Dict[str, Instrument] = {}
        # Totals for /metrics (seed 001 section 9); the figures above reset on success.
        self.login_failures_total = 0
        self.not_ready_total = 0
        self.fxcm_errors_total = 0  # fxcm_connector_errors_total{type="fxcm"}
        self.throttled_total = 0
        self.sdk_reconnects = 0
        self._sdk_reconnecting_since = 0.0  # monotonic; 0 while the broker is not reconnecting
        self._skew_warned_at = 0.0
        self._skew_warning = False
        self._in_login = False

    # -- settings ------------------------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Dict[str, Any]) -> None:
        """At host start: a replay file without its header, the real SDK without credentials,
        or an impossible value of this section stops the host with one line."""
        config = FxcmSessionSettings.from_mapping(settings)
        kind = config.broker_kind
        if kind == "replay":
            from actors.fxcm_session._replay_input import check_header
            check_header(str((config.broker.get("replay") or {}).get("file", "")))
        elif kind == "forexconnect":
            missing = [name for name in ("FXCM_USERNAME", "FXCM_PASSWORD")
                       if not os.environ.get(name)]
            if missing:
                raise ConfigError("broker.kind forexconnect: {} must be set in the environment"
                                  .format(" and ".join(missing)))

    # -- lifecycle -----------------------------------------------------------------------------

    def on_start(self) -> None:
        config = self.config = FxcmSessionSettings.from_mapping(self.settings)
        self.symbols = list(config.symbols)
        self.symbol_set = frozenset(self.symbols)
        self.basis = config.price_basis
        self.stale_seconds = config.stale_seconds
        self.reconnect_cooldown = config.reconnect_cooldown_seconds
        self.login_backoff = Backoff.from_settings(config.login_backoff)
        self.history_backoff = Backoff.from_settings(config.history_backoff)
        self.quota = HistoryQuota(config.quota)
        self.skew_warn_seconds = config.clock_skew_warn_seconds
        # Credentials live only in the environment; whatever they are, they never leave here.
        self.secrets = [os.environ.get(name, "") for name in ("FXCM_USERNAME", "FXCM_PASSWORD")]
        self.secrets = [secret for secret in self.secrets if secret]
        self.calendar = load_calendar(config.calendar_file)
        welcome: Dict[str, Any] = dict(self.client.welcome) if self.client is not None else {}
        joins = welcome.get("connects")
        # The router counts the joins of this name in this host run: a later one is a restart.
        self.restarted = isinstance(joins, int) and joins > 1
        self._broker = make_broker(config, self.calendar)
        # Before the session thread can log in and stream: the timeline decides where from.
        self._keep_timeline(welcome.get("run"))
        self.ticks = _TickQueue(config.tick_queue_size, self._wake_for_ticks,
                                getattr(self.broker, "blocking_ticks", False))
        self.broker.on_tick = self.ticks.put
        self.broker.on_status = self._on_broker_status
        # A restart is a reconnect: the session thread then reports DISCONNECTED, RECOVERING.
        self._was_connected = self.restarted
        self._worker_stop.clear()
        self._worker = threading.Thread(target=self._session_thread, name="fxcm-session",
                                        daemon=True)
        self._worker.start()
        self._commands.put(_Command("connect"))
        self.every(config.clock_interval_seconds, self._publish_clock)
        self.every(1.0, self._check_liveness)
        if self.restarted:
            log.warning("%s: restarted (join %d in this host run): the ticks the broker sent "
                        "meanwhile are lost; history fills the gap", self.name, joins)
            # Published before any tick of this instance, in the tick stream's order.
            self._set_session(DISCONNECTED, "restarted: ticks sent while down are lost")
        else:
            self._publish_state()

    def _keep_timeline(self, run: Any) -> bool:
        """Hand the broker its timeline file in the run dir (only the replay broker keeps
        one); True when it resumed an earlier instance's."""
        run_dir = self.run_dir
        if not run_dir or not isinstance(run, str) or not run:
            if self.restarted and self.broker.kind == "replay":
                log.warning("%s: no run dir or router id: the replay starts its file again",
                            self.name)
            return False
        return self.broker.keep_timeline(
            os.path.join(run_dir, "{}.timeline.json".format(self.name)), run)

    def on_close(self) -> None:
        """Log out and stop the session and broker threads, after a stop or a crash."""
        self._worker_stop.set()
        if self._broker is None:
            return
        self.ticks.close()
        self.broker.interrupt()
        self._commands.put(_Command("stop"))
        if self._worker is not None:
            # The SDK's logout can block for 30 s; the host's stop timeout bounds the wait. A
            # login still waiting inside the SDK is not waited for: nothing follows it, and
            # the end of the process closes its connection.
            timeout = self.config.logout_timeout_seconds
            self._worker.join(1.0 if self._in_login else timeout)
            if self._worker.is_alive() and self._in_login:
                log.warning("%s: stopping with a login still in progress", self.name)
        self.broker.close()

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("{}: the broker exists only while running".format(self.name))
        return self._broker

    # -- ticks (actor loop) --------------------------------------------------------------------

    def _wake_for_ticks(self) -> None:
        self.call_soon(self._drain_ticks)

    def _drain_ticks(self) -> None:
        batch = self.ticks.take_all(4096)
        for raw_symbol, ts_ms, bid, ask in batch:
            tick = self._validate(raw_symbol, ts_ms, bid, ask)
            if tick is None:
                continue
            self.publish(tick_topic(tick.symbol), tick)
            self.ticks_published += 1
            self.last_tick_ms[tick.symbol] = tick.ts_ms
        if batch:
            self.last_tick_wall = time.monotonic()
            if self.session_state in (CONNECTING, RECOVERING, IDLE) and self.ticks_published:
                self._set_session(STREAM, "ticks flowing")
        if self.ticks.items:
            self.call_soon(self._drain_ticks)

    def _validate(self, raw_symbol: Any, ts_ms: Any, bid: Any, ask: Any) -> Optional[Tick]:
        """A tick as the pipeline takes it, or None (counted by reason)."""
        try:
            symbol = normalize_symbol(str(raw_symbol))
        except ProtocolError:
            self.rejected["bad_symbol"] += 1
            return None
        if symbol not in self.symbol_set:
            self.rejected["unknown_symbol"] += 1
            return None
        if not isinstance(ts_ms, int) or isinstance(ts_ms, bool) or ts_ms <= 0:
            self.rejected["missing_time"] += 1
            return None
        if not isinstance(bid, (int, float)) or not isinstance(ask, (int, float)):
            self.rejected["not_a_number"] += 1
            return None
        bid = float(bid)
        ask = float(ask)
        if math.isnan(bid) or math.isnan(ask) or math.isinf(bid) or math.isinf(ask):
            self.rejected["nan"] += 1
            return None
        if bid <= 0 or ask <= 0:
            self.rejected["non_positive"] += 1
            return None
        if ask < bid:
            self.rejected["ask_below_bid"] += 1
            return None
        return Tick(symbol, ts_ms, bid, ask)

    # -- state ---------------------------------------------------------------------------------

    def _set_session(self, state: str, reason: str) -> None:
        if state == self.session_state and reason == self.session_reason:
            return
        self.check_transition(SESSION, self.session_state, state)
        if state == self.session_state:
            log.info("%s: session %s (%s)", self.name, state, reason)
        else:
            log.info("%s: session %s -> %s (%s)", self.name, self.session_state, state, reason)
        self.session_state = state
        self.session_reason = reason
        self.session_since_ms = int(time.time() * 1000)
        self.set_state("running" if state in (STREAM, IDLE, RECOVERING, CONNECTING)
                       else "degraded", "{}: {}".format(state, reason))
        self._publish_state()

    def _publish_state(self) -> None:
        state = SessionState(self.session_state, self.session_reason, self.session_since_ms,
                             self.broker.kind)
        self.publish("session.state", state)
        self.publish(SESSION_IN_TICKS_TOPIC, state)

    def _publish_instruments(self, known: Dict[str, Instrument]) -> None:
        """Each symbol's Instrument, for anyone and in the tick stream (before this login's
        first tick: the session thread subscribes only after posting this)."""
        self.instruments = known
        for symbol in self.symbols:
            info = known.get(symbol)
            if info is None:
                continue
            self.publish(INSTRUMENT_PREFIX + symbol, info)
            self.publish(INSTRUMENT_IN_TICKS_PREFIX + symbol, info)

    def _publish_clock(self) -> None:
        """The pipeline clock, in the tick stream. It must never pass a tick still waiting in
        the queue: that tick, published after it, would find its minute closed (late). So it is
        the broker's clock, held back to just before the oldest queued tick, and it never goes
        backwards. Nothing is published while the broker's clock is not settled (a live broker
        before the first tick tells the server's time; a replay without a valid row)."""
        broker = self.broker
        if not broker.clock_settled():
            self.clock_held += 1
            return
        now = broker.clock_ms()
        items = self.ticks.items
        if items:
            oldest = items[0][1]
            if isinstance(oldest, int) and not isinstance(oldest, bool) and oldest > 0:
                now = min(now, oldest - 1)
        now = max(now, self.clock_published)
        # Never worth blocking the tick path for: the next reading supersedes a skipped one.
        if self.try_publish(CLOCK_TOPIC, Clock(now, broker.kind)):
            self.clock_published = now
        else:
            self.clock_skipped += 1

    def _on_broker_status(self, event: str, reason: str) -> None:
        """From the broker's thread: what its connection did on its own (see Broker)."""
        try:
            if event == LOST:
                self.call_soon(lambda: self._lost(reason))
            elif event == RECONNECTING:
                self.call_soon(lambda: self._broker_reconnecting(reason))
            elif event == RECONNECTED:
                self.call_soon(lambda: self._broker_reconnected(reason))
        except Exception:  # never raise into the broker's thread
            pass

    def _lost(self, reason: str) -> None:
        self._logged_in = False
        self._sdk_reconnecting_since = 0.0
        self.fxcm_errors_total += 1
        self._set_session(DISCONNECTED, redact(reason, self.secrets))
        self._request_reconnect("connection lost")

    def _broker_reconnecting(self, reason: str) -> None:
        """The broker reconnects by itself: ticks pause (the minute in progress is partial),
        but no login of ours yet; ``_check_liveness`` steps in if it takes too long."""
        if not self._sdk_reconnecting_since:
            self._sdk_reconnecting_since = time.monotonic()
        self._set_session(DISCONNECTED, redact(reason, self.secrets))

    def _broker_reconnected(self, reason: str) -> None:
        """Back by itself: subscribe again at once (the old subscription may be dead)."""
        self._sdk_reconnecting_since = 0.0
        self.sdk_reconnects += 1
        self._resubscribed_at = time.monotonic()
        log.warning("%s: %s; subscribing the offers again", self.name,
                    redact(reason, self.secrets))
        self._commands.put(_Command("subscribe"))
        if self.session_state != STREAM:
            self._set_session(RECOVERING, "reconnected by the broker; waiting for ticks")

    def _request_reconnect(self, why: str) -> None:
        self._last_reconnect = time.monotonic()
        self.reconnects += 1
        log.warning("%s: reconnecting (%s)", self.name, why)
        self._commands.put(_Command("reconnect"))

    def _check_liveness(self) -> None:
        """No ticks for ``stale_seconds`` while the market is open: resubscribe; still nothing:
        reconnect (not more often than the cooldown). A broker reconnecting by itself for
        longer than the cooldown: reconnect. Also warns about the server clock's skew."""
        self._check_skew()
        now_ms = self.broker.clock_ms()
        if self.broker.finished():
            if self.session_state != IDLE:
                settled = self.broker.clock_settled()
                self._set_session(IDLE, "replay finished" if settled
                                  else "replay file has no valid row")
            return
        if self._sdk_reconnecting_since and self._logged_in and \
                time.monotonic() - self._sdk_reconnecting_since >= self.reconnect_cooldown:
            self._sdk_reconnecting_since = 0.0
            self._logged_in = False
            self._request_reconnect("the broker's own reconnect took over {:.0f} s".format(
                self.reconnect_cooldown))
            return
        if not self._logged_in or self.session_state == DISCONNECTED:
            return
        market_open = any(self.calendar.is_open(now_ms, symbol) for symbol in self.symbols)
        if not market_open:
            if self.session_state != IDLE:
                self._set_session(IDLE, "market closed")
            return
        now = time.monotonic()
        last = max(self.last_tick_wall, self._resubscribed_at)
        silent = now - last if last else now - self._connected_at
        if silent < self.stale_seconds:
            return
        if self._resubscribed_at <= self.last_tick_wall or self._resubscribed_at < \
                self._connected_at:
            self.resubscribes += 1
            self._resubscribed_at = now
            log.warning("%s: no tick for %.0f s with the market open; resubscribing",
                        self.name, silent)
            self._commands.put(_Command("subscribe"))
        elif now - self._last_reconnect >= self.reconnect_cooldown:
            self._set_session(DISCONNECTED, "no ticks after resubscribing")
            self._request_reconnect("stale stream")

    def _check_skew(self) -> None:
        """Warn when the server's clock and ours differ by more than the threshold: bars close
        on the server's clock anyway, but the local clock (NTP) deserves a look. Once when it
        crosses, again every 10 minutes while it stays above."""
        skew = self.broker.clock_skew_seconds()
        above = skew is not None and abs(skew) > self.skew_warn_seconds
        now = time.monotonic()
        if above and (not self._skew_warning or now - self._skew_warned_at >= 600.0):
            self._skew_warned_at = now
            log.warning("%s: the FXCM server clock is %+.3f s from ours (threshold %.1f s, "
                        "fxcm_session.clock_skew_warn_seconds): bars close on the server's "
                        "time; check this machine's clock (NTP)%s", self.name, skew,
                        self.skew_warn_seconds,
                        "; a whole number of hours points at a time zone, not a clock"
                        if skew is not None and abs(skew) >= 3000 else "")
        elif not above and self._skew_warning:
            log.info("%s: the server clock skew is back within %.1f s", self.name,
                     self.skew_warn_seconds)
        self._skew_warning = above

    # -- history (actor loop) ------------------------------------------------------------------

    @handles("history.get")
    def on_history(self, request: Any, delivery: Delivery) -> None:
        if not isinstance(request, HistoryRequest):
            raise ProtocolError("history.get body must be a HistoryRequest")
        if delivery.header.reply_to is None:
            self.history_counts["no_reply_to"] += 1
            return
        try:
            symbol = normalize_symbol(request.symbol)
            tf = normalize_tf(request.tf)
        except ProtocolError as exc:
            self._reply(delivery, request, "error", 0.0, str(exc), [])
            return
        now = time.monotonic()
        if now < self._history_blocked_until:
            self.history_counts["backoff"] += 1
            self.throttled_total += 1
            self._reply(delivery, request, "throttled", self._history_blocked_until - now,
                        "history backoff after errors", [])
            return
        if not self._logged_in:
            self.history_counts["not_connected"] += 1
            self._reply(delivery, request, "not_ready", 1.0, "not connected", [])
            return
        info = self.instruments.get(symbol)
        if info is not None and not info.subscribed:
            # The broker would only fail (and pause every symbol's history): say why now.
            self.history_counts["not_subscribed"] += 1
            self._reply(delivery, request, "error", NOT_SUBSCRIBED_RETRY_SECONDS,
                        "{} ({}) is not subscribed in the broker account".format(
                            symbol, info.broker_name), [])
            return
        decision = self.quota.acquire(HistoryQuota.target(symbol, tf), now, request.priority)
        if not decision.allowed:
            self.history_counts["throttled"] += 1
            self.throttled_total += 1
            self._reply(delivery, request, "throttled", decision.retry_after,
                        "quota: " + decision.reason, [])
            return
        self._commands.put(_Command("history", (delivery, request, symbol, tf)))

    def _reply(self, delivery: Delivery, request: HistoryRequest, status: str,
               retry_after: float, error: str, rows: List[List[Any]]) -> None:
        self.history_counts[status] += 1
        self.reply(delivery, "history.bars", HistoryReply(
            request.symbol, request.tf, status, round(retry_after, 3), error, rows))

    def _history_done(self, delivery: Delivery, request: HistoryRequest, symbol: str, tf: str,
                      rows: Optional[List[List[Any]]], error: Optional[BaseException]) -> None:
        if error is None and rows is not None:
            self._history_failures = 0
            clock = self.broker.clock_ms()
            step = TF_MS[tf]
            result = [[int(row[0]), row[1], row[2], row[3], row[4], row[5],
                       int(row[0]) + step - 1 < clock] for row in rows]
            self._reply(delivery, request, "ok", 0.0, "", result)
        elif isinstance(error, HistoryNotReady):
            # Not a failure and no minute is known empty: the asker retries after this.
            self.not_ready_total += 1
            self._reply(delivery, request, "not_ready", NOT_READY_RETRY_SECONDS,
                        "history not ready: " + redact(str(error), self.secrets), [])
        else:
            self.fxcm_errors_total += 1
            self._history_failures += 1
            delay = self.history_backoff.compute(self._history_failures)
            self._history_blocked_until = time.monotonic() + delay
            message = redact(str(error), self.secrets)
            self._history_delay = delay
            self._history_error = (message, time.time())
            log.warning("%s: history %s %s failed (%s); history paused %.1f s", self.name,
                        symbol, tf, message, delay)
            self._reply(delivery, request, "error", delay, message, [])

    # -- the session thread --------------------------------------------------------------------

    def _session_thread(self) -> None:
        while not self._worker_stop.is_set():
            try:
                command = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                if command.kind == "stop":
                    break
                if command.kind in ("connect", "reconnect"):
                    if command.kind == "reconnect":
                        self._safe_logout()
                    self._connect()
                elif command.kind == "subscribe":
                    self.broker.subscribe(self.symbols)
                elif command.kind == "history":
                    self._run_history(*command.payload)
            except Exception as exc:  # the thread must survive the broker
                message = redact("{}: {}".format(type(exc).__name__, exc), self.secrets)
                log.error("%s: session thread: %s", self.name, message)
                self.call_soon(functools.partial(self._lost, message))
        self._safe_logout()

    def _run_history(self, delivery: Delivery, request: HistoryRequest, symbol: str,
                     tf: str) -> None:
        try:
            rows = self.broker.get_history(symbol, tf, request.from_ms, request.to_ms,
                                           request.count, self.basis)
        except Exception as exc:  # reported in the reply
            error: BaseException = exc
            self.call_soon(lambda: self._history_done(delivery, request, symbol, tf, None,
                                                      error))
            return
        self.call_soon(lambda: self._history_done(delivery, request, symbol, tf, rows, None))

    def _connect(self) -> None:
        """Log in (with backoff), then subscribe. Runs on the session thread."""
        self.call_soon(lambda: self._set_session(
            CONNECTING if not self._was_connected else DISCONNECTED,
            "logging in" if not self._was_connected else "reconnecting"))
        while not self._worker_stop.is_set():
            self._in_login = True
            try:
                self.broker.login()
                break
            except LoginFailed as exc:
                error = redact(str(exc), self.secrets)
            except Exception as exc:  # any SDK failure is a failed login
                error = redact("{}: {}".format(type(exc).__name__, exc), self.secrets)
            finally:
                self._in_login = False
            if self._worker_stop.is_set():
                return
            self._login_failures += 1
            delay = self.login_backoff.compute(self._login_failures)
            self._next_login_at = time.time() + delay
            self._last_login_error = error
            self._login_delay = delay
            self._login_error_at = time.time()
            log.warning("%s: login failed (%s); retry %d in %.1f s", self.name, error,
                        self._login_failures, delay)
            self.call_soon(functools.partial(self._login_failed, "login failed: " + error))
            if self._worker_stop.wait(delay):
                return
        else:
            return
        self._login_failures = 0
        self._next_login_at = 0.0
        # Asked of the broker here, on the thread that owns it (the SDK reads its offers).
        known = self.broker.instruments(self.symbols, self.config.instruments)
        self.call_soon(functools.partial(self._publish_instruments, known))
        self.broker.subscribe(self.symbols)
        recovering = self._was_connected
        self._was_connected = True
        self.call_soon(lambda: self._on_logged_in(recovering))

    def _login_failed(self, reason: str) -> None:
        self.login_failures_total += 1
        self.fxcm_errors_total += 1
        self._set_session(DISCONNECTED, reason)

    def _on_logged_in(self, recovering: bool) -> None:
        self._logged_in = True
        self._sdk_reconnecting_since = 0.0
        self._connected_at = time.monotonic()
        self._resubscribed_at = 0.0
        if self.session_state == STREAM:
            return  # ticks outran this notice: the stream is already up
        if recovering:
            self._set_session(RECOVERING, "logged in again; waiting for ticks")
        else:
            self._set_session(CONNECTING, "logged in; waiting for ticks")

    def _safe_logout(self) -> None:
        try:
            self.broker.logout()
        except Exception as exc:  # logout failures only matter in the log
            log.warning("%s: logout failed: %s", self.name, redact(str(exc), self.secrets))

    # -- status --------------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        result = super(FxcmSession, self).status()
        now = time.monotonic()
        mark_time, mark_count = self._rate_mark
        elapsed = now - mark_time
        rate = (self.ticks_published - mark_count) / elapsed if elapsed > 0 else 0.0
        self._rate_mark = (now, self.ticks_published)
        skew = self.broker.clock_skew_seconds()
        result.update({
            "session_state": self.session_state,
            "session_reason": self.session_reason,
            "session_since_ms": self.session_since_ms,
            "broker": self.broker.status(),
            "ticks_published": self.ticks_published,
            "ticks_per_second": round(rate, 2),
            "last_tick_ms": dict(self.last_tick_ms),
            "rejected_ticks": dict(self.rejected),
            "tick_queue": {"depth": len(self.ticks.items), "capacity": self.ticks.capacity,
                           "overflow": self.ticks.overflow,
                           "callback_errors": self.ticks.callback_errors},
            "quota": self.quota.status(now),
            "history": dict(self.history_counts),
            "backoff": {
                "login_failures": self._login_failures,
                "next_login_in": max(0.0, self._next_login_at - time.time())
                if self._next_login_at else 0.0,
                "last_login_error": self._last_login_error,
                "login_delay_seconds": round(self._login_delay, 3),
                "last_login_error_ts": self._login_error_at or None,
                "history_failures": self._history_failures,
                "history_paused_for": max(0.0, self._history_blocked_until - now),
                "history_delay_seconds": round(self._history_delay, 3),
                "last_history_error": self._history_error[0] if self._history_error else "",
                "last_history_error_ts": self._history_error[1] if self._history_error
                else None,
            },
            "instruments": {symbol: {"digits": info.digits, "broker_name": info.broker_name,
                                     "subscribed": info.subscribed}
                            for symbol, info in self.instruments.items()},
            "unsubscribed_symbols": sorted(symbol for symbol, info in self.instruments.items()
                                           if not info.subscribed),
            "clock_skew": {"skew_seconds": None if skew is None else round(skew, 3),
                           "warn_seconds": self.skew_warn_seconds,
                           "warning": self._skew_warning,
                           "clock_published_ms": self.clock_published or None,
                           "clock_held": self.clock_held},
            "errors": {"fxcm": self.fxcm_errors_total,
                       "pricehistory_not_ready": self.not_ready_total,
                       "login_failures_total": self.login_failures_total,
                       "history_throttled_total": self.throttled_total},
            "restarted": self.restarted,
            "reconnects": self.reconnects,
            "resubscribes": self.resubscribes,
            "sdk_reconnects": self.sdk_reconnects,
            "sdk_reconnecting": bool(self._sdk_reconnecting_since),
            "clock_skipped": self.clock_skipped,
        })
        result["metrics"] = self._metrics(result["quota"], skew)
        return result

    def _metrics(self, quota: Dict[str, Any], skew: Optional[float]) -> Dict[str, Any]:
        """The session's Prometheus families (seed 001 section 9 names where it has them)."""
        settings = self.quota.settings
        windows = (("minute", quota["calls_last_minute"], settings.max_calls_per_min,
                    settings.priority_reserve_per_min),
                   ("hour", quota["calls_last_hour"], settings.max_calls_per_hour,
                    settings.priority_reserve_per_hour))
        result = {
            "fxcm_history_quota_calls": {
                "type": "gauge", "help": "History calls in the sliding window",
                "samples": [[{"window": name}, float(calls)] for name, calls, _, _ in windows]},
            "fxcm_history_quota_limit_calls": {
                "type": "gauge", "help": "History calls allowed in the sliding window",
                "samples": [[{"window": name}, float(cap)] for name, _, cap, _ in windows]},
            "fxcm_history_quota_reserve_calls": {
                "type": "gauge",
                "help": "Calls of the window kept for the priority targets",
                "samples": [[{"window": name}, float(reserve)]
                            for name, _, _, reserve in windows]},
            "fxcm_history_quota_reserve_used_calls": {
                "type": "gauge",
                "help": "Calls in the window beyond the share of non-priority targets (the "
                        "reserve in use)",
                "samples": [[{"window": name}, float(max(0, calls - (cap - reserve)))]
                            for name, calls, cap, reserve in windows]},
            "fxcm_history_quota_load_ratio": {
                "type": "gauge", "help": "The fuller window's calls over its limit",
                "samples": [[{}, float(quota["load"])]]},
            "fxcm_history_quota_denied_total": {
                "type": "counter", "help": "History calls refused by the quota, by reason",
                "samples": [[{"reason": reason}, float(count)]
                            for reason, count in sorted(quota["denied"].items())]},
            "fxcm_history_throttled_total": {
                "type": "counter", "help": "History requests answered throttled (quota or "
                "backoff after errors)", "samples": [[{}, float(self.throttled_total)]]},
            "fxcm_pricehistory_not_ready_total": {
                "type": "counter", "help": "History calls the broker answered not ready "
                "(PriceHistoryCommunicator is not ready)",
                "samples": [[{}, float(self.not_ready_total)]]},
            "fxcm_login_failures_total": {
                "type": "counter", "help": "Failed broker logins",
                "samples": [[{}, float(self.login_failures_total)]]},
            "fxcm_connector_errors_total": {
                "type": "counter", "help": "Errors by type (fxcm: logins, history calls, "
                "sessions lost; pricehistory_not_ready: history not ready)",
                "samples": [[{"type": "fxcm"}, float(self.fxcm_errors_total)],
                            [{"type": "pricehistory_not_ready"}, float(self.not_ready_total)]]},
            "fxcm_instrument_subscribed": {
                "type": "gauge", "help": "1 when the broker account streams the symbol, 0 "
                "when it is not subscribed there (see the log for what to do)",
                "samples": [[{"symbol": symbol}, 1.0 if info.subscribed else 0.0]
                            for symbol, info in sorted(self.instruments.items())]},
            "fxcm_clock_skew_seconds": {
                "type": "gauge", "help": "Broker server clock minus ours, estimated from tick "
                "times (bars close on the server's clock)",
                "samples": [[{}, float(skew)]] if skew is not None else []},
        }
        result.update(self.broker.metrics())
        return result
