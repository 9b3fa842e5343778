"""The actor base class (DESIGN.md section 5, "Actor API").

An actor declares what it receives and how, handles messages by type, and talks only over the
bus::

    class Doubler(Actor):
        subscriptions = (Subscribe("numbers.", LOSSLESS),)

        @handles("number")
        def on_number(self, value, delivery):
            self.publish("doubled", value * 2, msg_type="number")

The loop in ``run()`` owns the actor's one bus connection. Handlers, timers and callbacks posted
with ``call_soon`` all run on that loop's thread, so actor state needs no locks. A handler or
timer that raises is a crash: the actor tells the router which delivery failed, leaves, and its
runner (thread or process) lets the supervisor restart it; the router redelivers what was not
acked and dead-letters a message after ``max_redeliveries`` crashes.

``on_start`` is also the restart path ("crash-only"). In ``checkpoint`` ack mode ``snapshot()``
goes to the router with each ack and ``restore()`` gets it back in the next instance.

Injected faults (``make chaos``, ``fxcm crash``): when the router passes on a ``crash`` fault,
the loop raises ``InjectedCrash`` in place of the next handler, so the actor crashes exactly as
with a handler bug; a ``stall`` blocks before the next handler (reading only the bus) until its
time is up, a ``release`` comes or the actor is asked to stop. An actor that gets no message
for ``FAULT_IDLE_SECONDS`` takes the fault in its loop instead, naming no message.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import zmq

from bus import LATEST, LOSSLESS, BusClient, Delivery, Subscription
from protocol import wire
from protocol.errors import ConfigError, InjectedCrash, ProtocolError
from protocol.states import (
    DEGRADED,
    FAULTED,
    LIFECYCLE,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    StateTable,
)

__all__ = ["DEGRADED", "FAULTED", "LATEST", "LOSSLESS", "RUNNING", "STARTING", "STOPPED",
           "STOPPING", "Actor", "RunOptions", "Subscribe", "handles"]

log = logging.getLogger("fxcm.actor")

# How long an injected fault waits for a message to handle before the loop takes it anyway (an
# actor without subscriptions, such as command_handler, may never get one).
FAULT_IDLE_SECONDS = 2.0


class Subscribe(object):
    """A declared subscription; the bound comes from config (see ``RunOptions``)."""

    __slots__ = ("topic", "policy")

    def __init__(self, topic: str, policy: str) -> None:
        if policy not in (LOSSLESS, LATEST):
            raise ValueError("policy must be {!r} or {!r}".format(LOSSLESS, LATEST))
        self.topic = topic
        self.policy = policy


def handles(*msg_types: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler of messages of these types (or topics)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn._handles = msg_types  # type: ignore[attr-defined]
        return fn
    return mark


class RunOptions(object):
    """How an actor instance connects: filled by the host or `fxcm attach` from config."""

    def __init__(self, endpoint: str, mailbox_bound: int, prefetch: int,
                 send_timeout: float, checkpoint_every: int = 100,
                 status_interval: float = 2.0,
                 mailbox_bounds: Optional[Dict[str, int]] = None,
                 context: Optional[zmq.Context] = None, connect_timeout: float = 10.0,
                 placement: str = "thread", run_dir: Optional[str] = None,
                 token: Optional[str] = None) -> None:
        self.endpoint = endpoint
        self.mailbox_bound = mailbox_bound
        self.prefetch = prefetch
        self.send_timeout = send_timeout
        self.checkpoint_every = checkpoint_every
        self.status_interval = status_interval
        self.mailbox_bounds = dict(mailbox_bounds or {})
        self.context = context
        self.connect_timeout = connect_timeout
        self.placement = placement
        # The host's run dir, when the runner knows it: where an actor may keep small state
        # files that must outlive its instance within one host run (see Actor.run_dir).
        self.run_dir = run_dir
        # The host's secret for its own actors (bus/_router.py): None for attached ones.
        self.token = token


class _Timer(object):
    __slots__ = ("interval", "fn", "due")

    def __init__(self, interval: float, fn: Callable[[], Any], due: float) -> None:
        self.interval = interval
        self.fn = fn
        self.due = due


class Actor(object):
    """Base class of every actor. Subclasses declare ``subscriptions`` and handlers."""

    subscriptions: Tuple[Subscribe, ...] = ()
    ack_mode = "auto"
    # Paced pulls, for an actor that wants only the newest of ``latest`` subscriptions (the
    # snapshotter): at most ``prefetch_limit`` deliveries unacked, and an idle loop acks (asks
    # for more) at most every ``ack_interval`` seconds. In between, the router's latest
    # mailboxes conflate, so a 50,000 ticks/s stream costs such an actor a few hundred
    # deliveries a second instead of every tick. Lossless subscriptions only wait longer.
    prefetch_limit: Optional[int] = None
    ack_interval = 0.0
    # An actor that warms the feed up reports ``feed.phase`` in its status; the host's
    # /readyz waits for it to say ``ready`` (actors/_health.py).
    warms_up_feed = False
    _handler_names: Dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: Dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for msg_type in getattr(value, "_handles", ()):
                    names[msg_type] = attr
        cls._handler_names = names

    def __init__(self, name: str, settings: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.settings = dict(settings or {})
        self.state = STARTING
        self.state_reason = ""
        # moves a state table refused, by machine (protocol.states): a bug, counted
        self.invalid_transitions: Dict[str, int] = {}
        self.client: Optional[BusClient] = None
        self._handlers = {t: getattr(self, n) for t, n in self._handler_names.items()}
        self._timers: List[_Timer] = []
        self._posted: Deque[Callable[[], Any]] = deque()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._options: Optional[RunOptions] = None
        self._prefetch = 1  # the prefetch this actor asked for (run)
        self._ack_due = 0.0  # paced pulls: no idle ack before this (monotonic)
        self.counters = {"handled": 0, "unhandled": 0, "undecodable": 0, "redelivered": 0,
                         "timer_runs": 0, "injected_stalls": 0}

    # -- the API for subclasses -------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Dict[str, Any]) -> None:
        """Raise ConfigError naming the key if ``settings`` cannot work. The host calls this
        for every configured actor before it starts any, so a bad value stops the host at
        start with one line instead of crash-looping an actor."""

    def on_start(self) -> None:
        """Called on every (re)start, after WELCOME and ``restore``; register timers here."""

    def on_stop(self) -> None:
        """Called on an orderly stop, before the last ack."""

    def on_close(self) -> None:
        """Called when the loop has ended, orderly or by a crash: stop threads, close files."""

    def snapshot(self) -> Any:
        """State to checkpoint (msgpack-able). Only used in ``checkpoint`` ack mode."""
        return None

    def restore(self, state: Any) -> None:
        """Take back the state of the last checkpoint (``checkpoint`` ack mode)."""

    def ready_to_ack(self) -> bool:
        """Called before every ack: make what was handled durable; return False to withhold
        the ack (the router then stops delivering after ``prefetch``: backpressure)."""
        return True

    def on_message(self, body: Any, delivery: Delivery) -> None:
        """Called for a message with no handler for its type; counts it by default."""
        self.counters["unhandled"] += 1

    def status(self) -> Dict[str, Any]:
        """This actor's own view for heartbeat and status; extend it in subclasses."""
        client = self.client
        result: Dict[str, Any] = {"state": self.state, "reason": self.state_reason}
        result.update(self.counters)
        if self.invalid_transitions:
            result["invalid_transitions"] = dict(self.invalid_transitions)
        if client is not None:
            result["bus"] = dict(client.stats)
        return result

    def every(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` every ``seconds`` (fixed delay: measured from the end of the last run)."""
        if seconds <= 0:
            raise ValueError("timer interval must be positive")
        self._timers.append(_Timer(seconds, fn, time.monotonic() + seconds))

    def publish(self, topic: str, body: Any, msg_type: Optional[str] = None,
                timeout: Optional[float] = None) -> bool:
        """Publish to subscribers of ``topic``; blocks on backpressure up to the send timeout,
        then raises BackpressureError. ``timeout=0`` tries once and returns False if full."""
        return self._bus.publish(topic, body, msg_type, self._timeout(timeout))

    def send(self, dest: str, msg_type: str, body: Any, timeout: Optional[float] = None) -> bool:
        """Send to one actor's mailbox; backpressure as in ``publish``."""
        return self._bus.send(dest, msg_type, body, self._timeout(timeout))

    def try_send(self, dest: str, msg_type: str, body: Any) -> bool:
        return self._bus.send(dest, msg_type, body, 0)

    def try_publish(self, topic: str, body: Any, msg_type: Optional[str] = None) -> bool:
        return self._bus.publish(topic, body, msg_type, 0)

    def request(self, dest: str, msg_type: str, body: Any, timeout: float) -> Tuple[str, Any]:
        """Ask ``dest`` and wait for its reply: (reply type, body); RequestTimeout if none, or
        at once when the actor is asked to stop."""
        return self._bus.request(dest, msg_type, body, timeout, cancel=self._stop)

    def reply(self, delivery: Delivery, msg_type: str, body: Any) -> None:
        self._bus.reply(delivery, msg_type, body)

    def set_state(self, state: str, reason: str = "") -> None:
        """Move the lifecycle (``protocol.states.LIFECYCLE``) to ``state``, with a reason."""
        self.check_transition(LIFECYCLE, self.state, state)
        if state != self.state:
            log.info("%s: %s -> %s%s", self.name, self.state, state,
                     " ({})".format(reason) if reason else "")
        self.state = state
        self.state_reason = reason

    def check_transition(self, table: StateTable, old: str, new: str) -> bool:
        """True when ``table`` allows ``old -> new``. A refused move raises in tests
        (``FXCM_STRICT_STATES=1``); in production it is logged, counted in
        ``fxcm_invalid_state_transitions_total`` and made anyway (the caller goes on)."""
        if table.check(old, new):
            return True
        self.invalid_transitions[table.name] = self.invalid_transitions.get(table.name, 0) + 1
        log.error("%s: invalid %s transition %s -> %s (a bug: counted in "
                  "fxcm_invalid_state_transitions_total)", self.name, table.name, old, new)
        return False

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the actor's loop. Safe from any thread and from signal handlers."""
        self._posted.append(fn)
        self._wake()

    def request_stop(self) -> None:
        """Ask the loop to stop after the current handler. Safe from any thread."""
        self._stop.set()
        self._wake()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def run_dir(self) -> Optional[str]:
        """The host's run dir (given by the host, ``fxcm attach`` or a child's ``--run-dir``),
        for small files a restarted instance must find within the same host run; None when the
        actor was started without one (a benchmark, a hand-made ``RunOptions``)."""
        options = self._options
        return options.run_dir if options is not None else None

    # -- the loop ----------------------------------------------------------------------------

    @property
    def _bus(self) -> BusClient:
        if self.client is None:
            raise RuntimeError("{} is not running".format(self.name))
        return self.client

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        if timeout is not None:
            return timeout
        return self._options.send_timeout if self._options is not None else None

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed (stopped)

    def _subscriptions(self, options: RunOptions) -> Tuple[Subscription, ...]:
        result = []
        for declared in self.subscriptions:
            bound = options.mailbox_bounds.get(declared.topic, options.mailbox_bound)
            if not isinstance(bound, int) or bound < 1:
                raise ConfigError("{}: mailbox bound for {!r} must be a positive integer".format(
                    self.name, declared.topic))
            result.append(Subscription(declared.topic, declared.policy, bound))
        return tuple(result)

    def _on_welcome(self, welcome: Dict[str, Any]) -> None:
        checkpoint = welcome.get("checkpoint")
        if self.ack_mode == "checkpoint" and checkpoint is not None:
            self.restore(wire.unpack(checkpoint, "checkpoint"))

    def run(self, options: RunOptions) -> None:
        """Connect, run until ``request_stop``, leave in order. Raises if the actor crashed."""
        self._options = options
        prefetch = options.prefetch
        if self.prefetch_limit is not None:
            prefetch = max(1, min(prefetch, self.prefetch_limit))
        self._prefetch = prefetch
        client = BusClient(
            self.name, options.endpoint, options.context,
            subscriptions=self._subscriptions(options), prefetch=prefetch,
            ack_mode=self.ack_mode,
            meta={"placement": options.placement, "class": type(self).__name__},
            batching=True, token=options.token)
        client.on_welcome = self._on_welcome
        self.client = client
        self.set_state(STARTING)
        self._current: Optional[Delivery] = None
        try:
            client.connect(options.connect_timeout)
            self._timers = []
            self.on_start()
            if options.status_interval > 0:
                self.every(options.status_interval, self._publish_status)
            if self.state == STARTING:
                self.set_state(RUNNING)
            self._loop(client, options)
        except BaseException as exc:
            self.set_state(FAULTED, "{}: {}".format(type(exc).__name__, exc))
            failed = self._current
            if isinstance(exc, InjectedCrash) or (
                    failed is not None and failed.generation != client.generation):
                # A drill is not the message's fault (three drills must not dead-letter it),
                # and a delivery of an earlier connection has no id on this one.
                failed = None
            try:
                if self.ack_mode == "auto":
                    client.ack()
                client.bye(crashed=True,
                           delivery=failed.delivery_id if failed is not None else None,
                           error="{}: {}".format(type(exc).__name__, exc))
            except Exception:
                pass
            client.close()
            self._close_quietly()
            raise
        self.set_state(STOPPING)
        try:
            self.on_stop()
            self._ack(client, force=True)
            client.bye(crashed=False)
        finally:
            client.close()
            self._close_quietly()
            self.set_state(STOPPED)

    def _close_quietly(self) -> None:
        try:
            self.on_close()
        except Exception:
            log.exception("%s: on_close failed", self.name)

    def _loop(self, client: BusClient, options: RunOptions) -> None:
        sock = client.sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        handlers = self._handlers
        buffer = client.buffer
        checkpoint_every = max(1, options.checkpoint_every)
        ack_batch = max(1, self._prefetch // 2)
        since_ack = 0
        self._ack_due = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = 1.0
            for timer in self._timers:
                timeout = min(timeout, timer.due - now)
            if not buffer and not self._posted:
                if client.unacked():
                    if now >= self._ack_due:
                        self._ack(client)
                        since_ack = 0
                    else:  # paced pulls: ask for more when the interval is over
                        timeout = min(timeout, self._ack_due - now)
                poller.poll(max(0, int(timeout * 1000)))
            if client.sock is not sock:  # reconnected meanwhile
                poller.unregister(sock)
                sock = client.sock
                poller.register(sock, zmq.POLLIN)
            client.drain()
            self._drain_wake()
            while buffer and not self._stop.is_set():
                delivery = buffer.popleft()
                self._current = delivery
                if delivery.redelivered:
                    self.counters["redelivered"] += 1
                try:
                    body = delivery.body()
                    handler = handlers.get(delivery.type)
                except ProtocolError as exc:
                    # The router routes bytes unread; a peer's garbage stops here, counted.
                    self.counters["undecodable"] += 1
                    log.warning("%s: skipped an undecodable message on %r: %s", self.name,
                                delivery.topic.decode("utf-8", "replace"), exc)
                else:
                    if client.fault is not None:
                        self._injected_fault(client, delivery)
                    if handler is None:
                        self.on_message(body, delivery)
                    else:
                        handler(body, delivery)
                    self.counters["handled"] += 1
                self._current = None
                client.handled(delivery)
                since_ack += 1
                if since_ack >= (checkpoint_every if self.ack_mode == "checkpoint"
                                 else ack_batch) and time.monotonic() >= self._ack_due:
                    self._ack(client)
                    since_ack = 0
                if client.sock is not sock:
                    break
            # Only what was posted before this turn: a callback that posts itself again
            # (a tick drain with more to do) must not starve timers, deliveries and stop.
            for _ in range(len(self._posted)):
                if self._stop.is_set():
                    break
                self._posted.popleft()()
            now = time.monotonic()
            for timer in self._timers:
                if timer.due <= now:
                    timer.fn()
                    self.counters["timer_runs"] += 1
                    timer.due = time.monotonic() + timer.interval
            if client.fault is not None and not buffer \
                    and time.monotonic() - client.fault_since >= FAULT_IDLE_SECONDS:
                self._injected_fault(client, None)
            # What this turn published goes out as one batch, before the loop can block.
            client.flush()
            client.check_alive()

    def _injected_fault(self, client: BusClient, delivery: Optional[Delivery]) -> None:
        """Act on the fault the router passed on (see the module docstring): raise
        ``InjectedCrash`` in place of this handler, or block before it."""
        fault = client.take_fault()
        if fault is None:
            return
        if delivery is not None:
            what = "handling a {!r} message on {!r} (delivery {}, attempt {})".format(
                delivery.type, delivery.topic.decode("utf-8", "replace"),
                delivery.delivery_id, delivery.attempt)
        else:
            what = "idle (no message within {:g} s)".format(FAULT_IDLE_SECONDS)
        if fault["kind"] == "crash":
            log.error("%s: crashing on request (injected fault) while %s", self.name, what)
            raise InjectedCrash("crash injected on request (crash control op) while " + what)
        seconds = float(fault["seconds"])
        self.counters["injected_stalls"] += 1
        log.warning("%s: stalling up to %.1f s on request (injected fault) while %s",
                    self.name, seconds, what)
        started = time.monotonic()
        releases = client.releases
        # Reading the bus meanwhile answers PINGs and takes a release; deliveries only queue
        # up to prefetch, and no ack goes out: the router's mailboxes fill to their bounds.
        while not self._stop.is_set() and client.releases == releases:
            remaining = started + seconds - time.monotonic()
            if remaining <= 0:
                break
            client.poll(min(remaining, 0.1))
        log.warning("%s: stall over after %.1f s (%s)", self.name, time.monotonic() - started,
                    "released" if client.releases != releases else
                    "stopping" if self._stop.is_set() else "time up")

    def _ack(self, client: BusClient, force: bool = False) -> None:
        if not self.ready_to_ack():
            return
        self._ack_due = time.monotonic() + self.ack_interval
        if self.ack_mode == "checkpoint":
            if client.unacked() or force:
                client.ack(wire.pack(self.snapshot()))
        else:
            client.ack()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _publish_status(self) -> None:
        # Conflated downstream (latest policy); never worth blocking the actor for.
        self._bus.publish("actor.status." + self.name, self.status(), "actor.status", 0)

    def close(self) -> None:
        """Release the wake-up pipe once the actor will not run again."""
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
