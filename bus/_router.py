"""The router: one thread, one ROUTER socket, every mailbox (DESIGN.md section 5).

Actors connect with one DEALER each, over ``inproc://bus`` in the host or the ipc socket from
other processes. The router never decodes a body and decodes headers only for the tap's JSON;
it routes bytes. It never dies of input: a malformed frame is counted, logged (rate-limited) and
dropped.

Flow control: a producer may have at most ``credit_window`` sends outstanding. The router hands
credit back in batches as it routes; when a send lands in a lossless mailbox at or over its
bound, the producer's credit is withheld until that mailbox drains to its low-water mark.

Delivery: at most ``prefetch`` unacked deliveries per actor, round-robin over its mailboxes.
Acks are cumulative. In ``checkpoint`` mode the ack carries the actor's state snapshot, which the
next instance of the actor receives in WELCOME; everything not acked is redelivered to it.

Portable: runs on Python 3.7 too (the router itself only runs in the 3.10+ host).
"""

from __future__ import annotations

import errno
import hmac
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Set, Tuple

import zmq

from bus._acl import owners_of
from bus._frames import NOBLOCK, recv_frames, send_frames
from bus._mailbox import POLICIES, Envelope, LosslessMailbox, Mailbox, make_mailbox
from bus._rundir import prepare_run_dir
from protocol import wire
from protocol.errors import EndpointError, ProtocolError

log = logging.getLogger("fxcm.router")

DIRECT = "@direct"  # the topic name of an actor's point-to-point mailbox

# The router's name for a connection on its ipc socket: the routing id behind this byte (the
# inproc socket's own routing ids, made by ZeroMQ, start with a zero byte).
IPC_TAG = b"\xff"

# Sane maxima for what a HELLO may declare (a 2**64 bound is not a bound).
MAX_PREFETCH = 65536
MAX_MAILBOX_BOUND = 10000000
MAX_SUBSCRIPTIONS = 256
MAX_TOPIC_CHARS = 256


class RouterSettings(object):
    """Everything the router needs to know; every bound is explicit (no hidden defaults)."""

    def __init__(self, run_dir: str, credit_window: int, prefetch: int, direct_bound: int,
                 max_redeliveries: int, dead_letter_capacity: int, ping_interval: float,
                 liveness_misses: int, tap_hwm: int, inproc_endpoint: str = "inproc://bus",
                 bind_ipc: bool = True, drills: bool = False,
                 reserved_topics: Optional[Dict[str, List[str]]] = None,
                 detached_mailbox_seconds: float = 60.0, max_peers: int = 1024,
                 flow_topics: Tuple[str, ...] = ()) -> None:
        self.run_dir = run_dir
        self.credit_window = credit_window
        self.prefetch = prefetch
        self.direct_bound = direct_bound
        self.max_redeliveries = max_redeliveries
        self.dead_letter_capacity = dead_letter_capacity
        self.ping_interval = ping_interval
        self.liveness_misses = liveness_misses
        self.tap_hwm = tap_hwm
        self.inproc_endpoint = inproc_endpoint
        self.bind_ipc = bind_ipc
        # The fault ops (crash, stall, release) pass only when drills are enabled.
        self.drills = drills
        # {topic prefix: [actor names]}: who may put what on the bus (bus/_acl.py), already
        # reduced to what applies on this host.
        self.reserved_topics = dict(reserved_topics or {})
        # A guest (a name the host did not declare) gone this long loses its mailboxes.
        self.detached_mailbox_seconds = detached_mailbox_seconds
        # At most this many guest names in the table; HELLOs for new ones are refused beyond.
        self.max_peers = max_peers
        # Topic prefixes whose published messages are counted (the host's readiness check).
        self.flow_topics = tuple(flow_topics)

    @property
    def bus_endpoint(self) -> str:
        return ipc_endpoint(self.run_dir, "bus.sock")

    @property
    def tap_endpoint(self) -> str:
        return ipc_endpoint(self.run_dir, "tap.sock")


def ipc_endpoint(run_dir: str, name: str) -> str:
    """``ipc://`` endpoint for a socket file in the run dir; refuses paths the kernel would cut."""
    path = os.path.join(os.path.abspath(run_dir), name)
    if len(path.encode("utf-8")) > wire.IPC_PATH_MAX:
        raise EndpointError(
            "ipc path {} is {} bytes; unix sockets allow at most {}: choose a shorter run dir"
            .format(path, len(path.encode("utf-8")), wire.IPC_PATH_MAX))
    return "ipc://" + path


class _Actor(object):
    """The router's record of one actor name: mailboxes (which outlive connections) and the
    current connection, if any."""

    def __init__(self, name: str, direct_bound: int, host: bool = False) -> None:
        self.name = name
        # One of the host's own names (declared actors, ``$`` connections): joining under it
        # takes the host's token, and its mailboxes are kept for as long as the host runs.
        self.host = host
        self.direct = LosslessMailbox(name, DIRECT, direct_bound)
        self.mailboxes: List[Mailbox] = [self.direct]
        self.rr = 0
        self.conn: Optional[bytes] = None
        self.transport = ""
        self.pid = 0
        self.prefetch = 1
        self.ack_mode = "auto"
        self.inflight: OrderedDict[int, Tuple[Mailbox, Envelope]] = OrderedDict()
        self.next_delivery = 1
        self.checkpoint: Optional[bytes] = None
        self.last_recv = 0.0
        self.last_send = 0.0
        self.trusted = False  # the current connection presented the host's token
        self.incarnation = ""  # the current client's secret: lets it replace its own connection
        self.detached_at: Optional[float] = time.monotonic()  # None while connected
        # producer side
        self.owed = 0  # sends received whose credit has not been handed back
        self.blocked_on: Set[Mailbox] = set()
        self.blocked_since = 0.0
        self.backpressure_events = 0
        self.refused = 0  # messages refused: topics or types reserved for other actors
        # counters
        self.connects = 0
        self.crashes = 0
        self.delivered = 0
        self.redelivered = 0
        self.acked = 0
        self.dead_letters = 0
        self.sent = 0
        self.injected_crashes = 0  # crash / stall faults passed on by request (CTRL)
        self.injected_stalls = 0

    def depth(self) -> int:
        return sum(mailbox.depth() for mailbox in self.mailboxes)

    def stats(self, now: float) -> Dict[str, Any]:
        boxes = [mailbox.stats() for mailbox in self.mailboxes]
        blocked_by = sorted("{}:{}".format(mailbox.owner, mailbox.topic)
                            for mailbox in self.blocked_on)
        return {
            "connected": self.conn is not None,
            "transport": self.transport,
            "pid": self.pid,
            "ack_mode": self.ack_mode,
            "prefetch": self.prefetch,
            "depth": sum(box["depth"] for box in boxes),
            "peak": max(box["peak"] for box in boxes),
            "inflight": len(self.inflight),
            "mailboxes": boxes,
            "delivered": self.delivered,
            "redelivered": self.redelivered,
            "acked": self.acked,
            "dead_letters": self.dead_letters,
            "backpressure_events": self.backpressure_events,
            "blocked": bool(blocked_by),
            "blocked_seconds": now - self.blocked_since if blocked_by else 0.0,
            "blocked_by": blocked_by,
            "refused": self.refused,
            "detached_seconds": (now - self.detached_at if self.detached_at is not None
                                 and self.conn is None else 0.0),
            "sent": self.sent,
            "connects": self.connects,
            "crashes": self.crashes,
            "has_checkpoint": self.checkpoint is not None,
            "injected_crashes": self.injected_crashes,
            "injected_stalls": self.injected_stalls,
        }


class DeadLetter(object):
    __slots__ = ("actor", "topic", "header", "body", "reason", "attempts", "ts")

    def __init__(self, actor: str, topic: bytes, header: bytes, body: bytes, reason: str,
                 attempts: int) -> None:
        self.actor = actor
        self.topic = topic
        self.header = header
        self.body = body
        self.reason = reason
        self.attempts = attempts
        self.ts = time.time()

    def summary(self) -> Dict[str, Any]:
        return {
            "actor": self.actor,
            "topic": self.topic.decode("utf-8", "replace"),
            "reason": self.reason,
            "attempts": self.attempts,
            "ts": self.ts,
            "size": len(self.body),
        }


class Router(object):
    """The bus router. ``start()`` runs it in its own thread; ``stop()`` ends it."""

    def __init__(self, settings: RouterSettings, context: Optional[zmq.Context] = None,
                 declared: Tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.context = context or zmq.Context.instance()
        self._actors: Dict[str, _Actor] = {}
        self._by_conn: Dict[bytes, _Actor] = {}
        self._subscriptions: List[Tuple[str, _Actor, Mailbox]] = []
        self._route_cache: Dict[bytes, List[Tuple[_Actor, Mailbox]]] = {}
        self._dead_letters: Deque[DeadLetter] = deque(maxlen=settings.dead_letter_capacity)
        self._tap_prefixes: Counter[bytes] = Counter()
        self._tap_cache: Dict[bytes, bool] = {}
        self._grant_batch = max(1, settings.credit_window // 4)
        self.counters: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._last_malformed_log = 0.0
        self._suppressed_malformed = 0
        self._host_info: Dict[str, Any] = {}
        self._sock: Optional[zmq.Socket] = None
        self._ipc: Optional[zmq.Socket] = None
        self.last_turn = 0.0  # monotonic time of the last loop turn; /livez reads it
        self.stats_snapshot: Dict[str, Any] = {}
        self.started_at = time.time()
        # Told to every actor in WELCOME: state an actor keeps outside the router (a replay's
        # timeline file) is only resumed by an instance that sees the same id, i.e. within one
        # host run; a new router (a host restart) starts such state afresh.
        self.run_id = os.urandom(8).hex()
        # The host's secret: its own actors join with it (so nobody else can take their names)
        # and its privileged control ops (host, dead) carry it. Never in status or on disk.
        self.token = os.urandom(16).hex()
        self._declared = frozenset(declared)
        self._topic_cache: Dict[bytes, Tuple[Optional[FrozenSet[str]], Optional[str]]] = {}
        self.flow: Counter[str] = Counter()  # published messages per settings.flow_topics
        self._expired: Deque[Dict[str, Any]] = deque(maxlen=50)
        self._last_refusal_log = 0.0
        self._suppressed_refusals = 0
        for name in declared:
            self._actor(name, host=True)
        self._handlers: Dict[bytes, Callable[[bytes, List[bytes]], None]] = {
            wire.PUB: self._on_pub,
            wire.PUBN: self._on_pubn,
            wire.SEND: self._on_send,
            wire.SENDN: self._on_sendn,
            wire.ACK: self._on_ack,
            wire.HELLO: self._on_hello,
            wire.REPLY: self._on_reply,
            wire.PING: self._on_ping,
            wire.PONG: self._on_pong,
            wire.BYE: self._on_bye,
            wire.CTRL: self._on_ctrl,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Bind the sockets and run the loop in a thread; raises what binding raised."""
        self._thread = threading.Thread(target=self._run, name="router", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EndpointError("router did not start within {} s".format(timeout))
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _router_socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Per-peer queues are bounded by prefetch + control traffic; the HWM must never bite.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)
        return sock

    def _bind(self) -> Tuple[zmq.Socket, Optional[zmq.Socket], Optional[zmq.Socket]]:
        """The inproc ROUTER, the ipc ROUTER and the tap. Two ROUTER sockets, so that the
        router knows for certain which peers are threads of the host (inproc) and which are
        other processes (ipc: watched for liveness), whatever a peer claims."""
        settings = self.settings
        sock = self._router_socket()
        ipc = None
        tap = None
        try:
            sock.bind(settings.inproc_endpoint)
            if settings.bind_ipc:
                prepare_run_dir(settings.run_dir)
                ipc = self._router_socket()
                bus_endpoint = settings.bus_endpoint
                _remove_stale_socket(bus_endpoint)
                # The socket file is created by bind with the umask; tighten it right after.
                old_umask = os.umask(0o177)
                try:
                    ipc.bind(bus_endpoint)
                finally:
                    os.umask(old_umask)
                os.chmod(bus_endpoint[len("ipc://"):], 0o600)
                tap = self.context.socket(zmq.XPUB)
                tap.setsockopt(zmq.LINGER, 0)
                tap.setsockopt(zmq.SNDHWM, settings.tap_hwm)
                tap.setsockopt(zmq.XPUB_VERBOSER, 1)
                tap.setsockopt(zmq.XPUB_NODROP, 1)
                tap_endpoint = settings.tap_endpoint
                _remove_stale_socket(tap_endpoint)
                old_umask = os.umask(0o177)
                try:
                    tap.bind(tap_endpoint)
                finally:
                    os.umask(old_umask)
        except BaseException as exc:
            _unbind_quietly(sock, settings.inproc_endpoint)
            for opened in (sock, ipc, tap):
                if opened is not None:
                    opened.close(0)
            if not isinstance(exc, zmq.ZMQError):
                raise  # an unsafe run dir says so itself
            endpoint = settings.bus_endpoint if settings.bind_ipc else settings.inproc_endpoint
            raise EndpointError("router cannot bind ({}): {}".format(endpoint, exc)) from exc
        return sock, ipc, tap

    def _run(self) -> None:
        try:
            sock, ipc, tap = self._bind()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._sock = sock
        self._ipc = ipc
        self._tap = tap
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if ipc is not None:
            poller.register(ipc, zmq.POLLIN)
        if tap is not None:
            poller.register(tap, zmq.POLLIN)
        handle = self._handle
        next_housekeeping = 0.0
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                now = time.monotonic()
                self.last_turn = now
                if events.get(sock):
                    # Drain what is there before polling again: one poll per burst, not per message.
                    for _ in range(2048):
                        try:
                            frames = recv_frames(sock, NOBLOCK)
                        except zmq.Again:
                            break
                        handle(frames, now)
                if ipc is not None and events.get(ipc):
                    for _ in range(2048):
                        try:
                            frames = recv_frames(ipc, NOBLOCK)
                        except zmq.Again:
                            break
                        frames[0] = IPC_TAG + frames[0]  # the connection, as this router names it
                        handle(frames, now)
                if tap is not None and events.get(tap):
                    self._on_tap_subscription(tap)
                if now >= next_housekeeping:
                    next_housekeeping = now + 0.25
                    self._housekeeping(now)
        except BaseException:  # pragma: no cover - the loop must not die silently
            log.exception("router loop died")
            raise
        finally:
            _unbind_quietly(sock, self.settings.inproc_endpoint)
            for opened in (sock, ipc, tap):
                if opened is not None:
                    opened.close(0)

    # -- input -----------------------------------------------------------------------------

    def _handle(self, frames: List[bytes], now: float) -> None:
        conn = frames[0]
        try:
            if len(frames) < 3 or frames[1] != wire.SIGNATURE:
                raise ProtocolError(
                    "bad signature" if len(frames) >= 3 else "too few frames ({})".format(
                        len(frames)))
            handler = self._handlers.get(frames[2])
            if handler is None:
                raise ProtocolError("unknown verb {!r}".format(bytes(frames[2][:16])))
            for frame in frames:
                if len(frame) > wire.MAX_FRAME_BYTES:
                    raise ProtocolError("frame of {} bytes exceeds {}".format(
                        len(frame), wire.MAX_FRAME_BYTES))
            actor = self._by_conn.get(conn)
            if actor is not None:
                actor.last_recv = now
            handler(conn, frames)
        except ProtocolError as exc:
            self._malformed(conn, str(exc))
        except Exception:
            # A bug in the router must not kill the bus; it is counted and logged loudly.
            self.counters["internal_errors"] += 1
            log.exception("router failed to handle a %r frame", bytes(frames[2][:16])
                          if len(frames) > 2 else b"?")

    def _malformed(self, conn: bytes, reason: str) -> None:
        self.counters["malformed"] += 1
        now = time.monotonic()
        if now - self._last_malformed_log >= 1.0:
            actor = self._by_conn.get(conn)
            suffix = ""
            if self._suppressed_malformed:
                suffix = " ({} more malformed messages in the last interval)".format(
                    self._suppressed_malformed)
            log.warning("dropped malformed message from %s: %s%s",
                        actor.name if actor is not None else "unknown peer", reason, suffix)
            self._last_malformed_log = now
            self._suppressed_malformed = 0
        else:
            self._suppressed_malformed += 1

    def _peer(self, conn: bytes) -> Optional[_Actor]:
        actor = self._by_conn.get(conn)
        if actor is None:
            # The host restarted, or the peer never said HELLO: tell it to start over.
            self.counters["unknown_peer"] += 1
            self._send(conn, [wire.RESET, b"unknown peer: say HELLO"])
        return actor

    def _on_hello(self, conn: bytes, frames: List[bytes]) -> None:
        if len(frames) != 5:
            raise ProtocolError("HELLO takes name and meta, got {} frames".format(len(frames) - 3))
        try:
            name = frames[3].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("HELLO name is not UTF-8") from None
        if not wire.valid_actor_name(name[1:] if name.startswith("$") else name):
            self._refuse_hello(conn, name, "the name must be {} (an optional leading '$' "
                               "for the host's own)".format(wire.ACTOR_NAME_RULE))
            return
        meta = wire.unpack(frames[4], "HELLO meta")
        if not isinstance(meta, dict):
            raise ProtocolError("HELLO meta must be a map")
        subscriptions = _parse_subscriptions(meta.get("subscriptions", []))
        prefetch = meta.get("prefetch", self.settings.prefetch)
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) \
                or not 1 <= prefetch <= MAX_PREFETCH:
            raise ProtocolError("HELLO prefetch must be an integer in 1..{}".format(MAX_PREFETCH))
        ack_mode = meta.get("ack_mode", "auto")
        if ack_mode not in wire.ACK_MODES:
            raise ProtocolError("HELLO ack_mode must be one of {}".format(
                ", ".join(wire.ACK_MODES)))
        token = meta.pop("token", None)
        incarnation = meta.pop("incarnation", None)
        trusted = _same_secret(token, self.token)
        if (name.startswith("$") or name in self._declared) and not trusted:
            self._refuse_hello(conn, name, "the name {!r} belongs to the host's own actors"
                               .format(name))
            return
        now = time.monotonic()
        actor = self._actors.get(name)
        if actor is None:
            guests = sum(1 for known in self._actors.values() if not known.host)
            if not trusted and guests >= self.settings.max_peers:
                self._expire_phantoms()
                guests = sum(1 for known in self._actors.values() if not known.host)
            if not trusted and guests >= self.settings.max_peers:
                self._refuse_hello(conn, name, "the router's table of names is full ({} "
                                   "guests, bus.max_peers)".format(guests))
                return
            actor = self._actor(name, host=name.startswith("$"))
        elif actor.conn is not None and actor.conn != conn and not trusted \
                and self._is_live(actor, now) and not _same_secret(incarnation,
                                                                    actor.incarnation):
            self._refuse_hello(conn, name, "the name {!r} is held by a live connection (pid {})"
                               .format(name, actor.pid))
            return
        previous = self._by_conn.get(conn)
        if previous is not None and previous is not actor:
            # One connection, one name: a HELLO under a new name ends the old one.
            self._disconnect(previous, crashed=False, reason="joined again as {}".format(name))
        if actor.conn is not None and actor.conn != conn:
            log.warning("%s reconnected without saying BYE; its previous connection is dropped",
                        name)
            self._disconnect(actor, crashed=True, reason="replaced by a new connection")
        elif actor.conn == conn:
            self._disconnect(actor, crashed=False, reason="HELLO again")
        self._set_subscriptions(actor, subscriptions)
        actor.conn = conn
        actor.detached_at = None
        actor.trusted = trusted
        actor.incarnation = incarnation if isinstance(incarnation, str) else ""
        # the socket it came on, not what it claims: ipc peers are watched for liveness
        actor.transport = "ipc" if conn[:1] == IPC_TAG else "inproc"
        pid = meta.get("pid", 0)
        actor.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else 0
        actor.prefetch = prefetch
        actor.ack_mode = ack_mode
        actor.connects += 1
        actor.last_recv = now
        self._by_conn[conn] = actor
        # A producer restarted while blocked stays blocked: no fresh credit until it drains.
        credit = 0 if actor.blocked_on else self.settings.credit_window
        actor.owed = self.settings.credit_window - credit
        welcome = {
            "credit": credit,
            "checkpoint": actor.checkpoint,
            "prefetch": prefetch,
            "ping_interval": self.settings.ping_interval,
            "liveness_misses": self.settings.liveness_misses,
            "connects": actor.connects,
            "run": self.run_id,
            "reserved": self.settings.reserved_topics,
        }
        self._send(conn, [wire.WELCOME, wire.pack(welcome)])
        log.info("%s joined (%s, pid %s, connection %d)", name, actor.transport or "?",
                 actor.pid, actor.connects)
        self._pump(actor)

    def _is_live(self, actor: _Actor, now: float) -> bool:
        """Whether the actor's connection counts as alive: a host thread until the host says
        otherwise, anyone else while heard from within the liveness deadline."""
        if actor.conn is None:
            return False
        if actor.transport != "ipc":
            return True
        return now - actor.last_recv <= self.settings.ping_interval * self.settings.liveness_misses

    def _refuse_hello(self, conn: bytes, name: str, reason: str) -> None:
        self.counters["refused_hellos"] += 1
        self._log_refusal("refused HELLO as %r: %s", name[:80], reason)
        self._send(conn, [wire.DENY, wire.HELLO, reason.encode("utf-8")])

    def _log_refusal(self, message: str, *args: Any) -> None:
        """A refusal's log line, at most one a second (a flood must not flood the log)."""
        now = time.monotonic()
        if now - self._last_refusal_log < 1.0:
            self._suppressed_refusals += 1
            return
        suffix = ""
        if self._suppressed_refusals:
            suffix = " ({} more refusals in the last interval)".format(self._suppressed_refusals)
        log.warning(message + "%s", *(args + (suffix,)))
        self._last_refusal_log = now
        self._suppressed_refusals = 0

    def _set_subscriptions(self, actor: _Actor, wanted: List[Tuple[str, str, int]]) -> None:
        existing = {mailbox.topic: mailbox for mailbox in actor.mailboxes[1:]}
        mailboxes: List[Mailbox] = [actor.direct]
        for topic, policy, bound in wanted:
            mailbox = existing.pop(topic, None)
            if mailbox is not None and mailbox.policy == policy:
                mailbox.bound = bound
                if isinstance(mailbox, LosslessMailbox):
                    mailbox.low_water = bound - max(1, bound // 10)
            else:
                if mailbox is not None:
                    self._abandon(actor, mailbox, "subscription policy changed")
                mailbox = make_mailbox(actor.name, topic, policy, bound)
            mailboxes.append(mailbox)
        for mailbox in existing.values():
            self._abandon(actor, mailbox, "no longer subscribed")
        actor.mailboxes = mailboxes
        self._subscriptions = [
            (mailbox.topic, owner, mailbox)
            for owner in self._actors.values() for mailbox in owner.mailboxes[1:]
        ]
        self._route_cache.clear()

    def _abandon(self, actor: _Actor, mailbox: Mailbox, reason: str) -> None:
        """A subscription went away: what waited in it becomes dead letters, never vanishes."""
        while mailbox.has_pending():
            envelope = mailbox.take()
            if envelope is not None:
                mailbox.inflight -= 1
                self._dead_letter(actor, envelope, reason)
        self._release(mailbox)

    def _on_pub(self, conn: bytes, frames: List[bytes]) -> None:
        if len(frames) != 6:
            raise ProtocolError("PUB takes topic, header, body; got {} frames".format(
                len(frames) - 3))
        producer = self._peer(conn)
        if producer is None:
            return
        touched: Set[_Actor] = set()
        self._route_pub(producer, frames[3], frames[4], frames[5], touched)
        self._pump_all(touched)
        self._credit(producer, 1)

    def _on_send(self, conn: bytes, frames: List[bytes]) -> None:
        if len(frames) != 7:
            raise ProtocolError("SEND takes dest, type, header, body; got {} frames".format(
                len(frames) - 3))
        producer = self._peer(conn)
        if producer is None:
            return
        touched: Set[_Actor] = set()
        self._route_send(producer, frames[3], frames[4], frames[5], frames[6], touched)
        self._pump_all(touched)
        self._credit(producer, 1)

    def _on_batch(self, conn: bytes, frames: List[bytes], width: int) -> List[Any]:
        """The items of a PUBN/SENDN batch: a msgpack list of ``width``-element byte lists."""
        if len(frames) != 4:
            raise ProtocolError("a batch takes one frame, got {}".format(len(frames) - 3))
        items = wire.unpack(frames[3], "batch")
        if not isinstance(items, list) or not items:
            raise ProtocolError("a batch must be a non-empty list")
        for item in items:
            if not isinstance(item, list) or len(item) != width or not all(
                    isinstance(part, bytes) for part in item):
                raise ProtocolError("each batch item must be a list of {} byte strings".format(
                    width))
        return items

    def _on_pubn(self, conn: bytes, frames: List[bytes]) -> None:
        items = self._on_batch(conn, frames, 3)
        producer = self._peer(conn)
        if producer is None:
            return
        touched: Set[_Actor] = set()
        route = self._route_pub
        try:
            for topic, header, body in items:
                route(producer, topic, header, body, touched)
        finally:  # a batch that fails half way must not cost the producer its credit
            self._pump_all(touched)
            self._credit(producer, len(items))

    def _on_sendn(self, conn: bytes, frames: List[bytes]) -> None:
        items = self._on_batch(conn, frames, 4)
        producer = self._peer(conn)
        if producer is None:
            return
        touched: Set[_Actor] = set()
        try:
            for dest, msg_type, header, body in items:
                self._route_send(producer, dest, msg_type, header, body, touched)
        finally:
            self._pump_all(touched)
            self._credit(producer, len(items))

    def _route_pub(self, producer: _Actor, topic: bytes, header: bytes, body: bytes,
                   touched: Set[_Actor]) -> None:
        info = self._topic_cache.get(topic)
        if info is None:
            info = self._topic_info(topic)
        owners, flow = info
        if owners is not None and producer.name not in owners:
            self._deny(producer, topic, owners)
            return
        if flow is not None:
            self.flow[flow] += 1
        targets = self._route_cache.get(topic)
        if targets is None:
            targets = self._routes(topic)
        producer.sent += 1
        self.counters["published"] += 1
        if not targets:
            self.counters["unrouted"] += 1
        for actor, mailbox in targets:
            mailbox.put(Envelope(topic, header, body))
            # A producer is never held back by its own mailbox: only it could drain it.
            if mailbox.is_full() and actor is not producer:
                self._block(producer, mailbox)
            touched.add(actor)
        if self._tap_prefixes:
            self._tap_copy(topic, b"pub", header, body)

    def _route_send(self, producer: _Actor, dest_name: bytes, msg_type: bytes, header: bytes,
                    body: bytes, touched: Set[_Actor]) -> None:
        producer.sent += 1
        self.counters["sent"] += 1
        try:
            dest = self._actors.get(dest_name.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("SEND destination is not UTF-8") from None
        envelope = Envelope(msg_type, header, body)
        if dest is None:
            self.counters["unroutable"] += 1
            self._dead_letter(producer, envelope, "no actor named {!r}".format(
                dest_name.decode("utf-8")))
        else:
            mailbox = dest.direct
            mailbox.put(envelope)
            if mailbox.is_full() and dest is not producer:
                self._block(producer, mailbox)
            touched.add(dest)
        if self._tap_prefixes:
            self._tap_copy(msg_type, b"send", header, body)

    def _pump_all(self, actors: Set[_Actor]) -> None:
        for actor in actors:
            if actor.conn is not None and len(actor.inflight) < actor.prefetch:
                self._pump(actor)

    def _on_reply(self, conn: bytes, frames: List[bytes]) -> None:
        if len(frames) != 7:
            raise ProtocolError("REPLY takes dest, type, header, body; got {} frames".format(
                len(frames) - 3))
        if self._peer(conn) is None:
            return
        try:
            dest = self._actors.get(frames[3].decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("REPLY destination is not UTF-8") from None
        if dest is None or dest.conn is None:
            # The requester is gone; its request timed out there. Counted, not silent.
            self.counters["replies_undeliverable"] += 1
            return
        self._send(dest.conn, [wire.REPLY, frames[4], frames[5], frames[6]])
        if self._tap_prefixes:
            self._tap_copy(frames[4], b"reply", frames[5], frames[6])

    def _on_ack(self, conn: bytes, frames: List[bytes]) -> None:
        if len(frames) not in (4, 5):
            raise ProtocolError("ACK takes up_to [, checkpoint]; got {} frames".format(
                len(frames) - 3))
        actor = self._peer(conn)
        if actor is None:
            return
        up_to = wire.unpack_u64(frames[3], "ACK up_to")
        if len(frames) == 5:
            actor.checkpoint = frames[4]
        inflight = actor.inflight
        released: Set[Mailbox] = set()
        while inflight:
            delivery_id = next(iter(inflight))
            if delivery_id > up_to:
                break
            mailbox, _ = inflight.popitem(last=False)[1]
            mailbox.inflight -= 1
            actor.acked += 1
            if mailbox.blocked:
                released.add(mailbox)
        for mailbox in released:
            if mailbox.depth() <= mailbox.low_water:  # type: ignore[attr-defined]
                self._release(mailbox)
        self._pump(actor)

    def _on_ping(self, conn: bytes, frames: List[bytes]) -> None:
        if self._peer(conn) is not None:
            self._send(conn, [wire.PONG])

    def _on_pong(self, conn: bytes, frames: List[bytes]) -> None:
        self._peer(conn)

    def _on_bye(self, conn: bytes, frames: List[bytes]) -> None:
        actor = self._by_conn.get(conn)
        if actor is None:
            return
        # The answer tells the peer that everything it sent before BYE has been routed, so it
        # can close its socket without losing queued sends.
        self._send(conn, [wire.BYE])
        info = wire.unpack(frames[3], "BYE reason") if len(frames) > 3 else {}
        if not isinstance(info, dict):
            raise ProtocolError("BYE reason must be a map")
        crashed = info.get("reason") == "crash"
        culprit = info.get("delivery")
        self._disconnect(actor, crashed=crashed, reason=str(info.get("error", "")) or "BYE",
                         culprit=culprit if isinstance(culprit, int) else None)

    def _on_ctrl(self, conn: bytes, frames: List[bytes]) -> None:
        if len(frames) != 4:
            raise ProtocolError("CTRL takes one request frame")
        request = wire.unpack(frames[3], "CTRL request")
        if not isinstance(request, dict):
            raise ProtocolError("CTRL request must be a map")
        op = request.get("op")
        if op == "alive":
            # an ipc peer's keepalive (its own socket): its actor is busy, not gone. No answer.
            actor = self._actors.get(str(request.get("name")))
            if actor is not None and actor.conn is not None \
                    and _same_secret(request.get("incarnation"), actor.incarnation):
                actor.last_recv = time.monotonic()
            return
        privileged = _same_secret(request.get("token"), self.token)
        result: Dict[str, Any] = {"ok": True}
        if op == "status":
            result["status"] = self._stats()
        elif op == "dead_letters":
            result["dead_letters"] = [letter.summary() for letter in self._dead_letters]
        elif op in ("host", "dead") and not privileged:
            result = self._refuse_ctrl(op, "only the host may ask for {!r}".format(op))
        elif op == "host":
            info = request.get("info")
            if isinstance(info, dict):
                self._host_info = info
        elif op == "dead":
            actor = self._actors.get(str(request.get("name")))
            if actor is not None and actor.conn is not None:
                self._disconnect(actor, crashed=True, reason=str(request.get("reason", "died")),
                                 charge_oldest=True)
        elif op == "detach":
            result = self._detach_request(request.get("name"))
        elif op in wire.FAULT_KINDS:
            if self.settings.drills:
                result = self._inject(str(op), request)
            else:
                result = self._refuse_ctrl(op, "drills are disabled on this host (set "
                                               "bus.drills to true to allow crash, stall and "
                                               "release)")
        else:
            result = {"ok": False, "error": "unknown op {!r}".format(op)}
        result["rid"] = request.get("rid")
        self._send(conn, [wire.CTRL, wire.pack(result)])

    def _refuse_ctrl(self, op: Any, reason: str) -> Dict[str, Any]:
        self.counters["refused_controls"] += 1
        self._log_refusal("refused control op %r: %s", op, reason)
        return {"ok": False, "error": reason}

    def _detach_request(self, name: Any) -> Dict[str, Any]:
        """``fxcm detach NAME``: drop a gone guest's mailboxes now."""
        actor = self._actors.get(name) if isinstance(name, str) else None
        if actor is None:
            return {"ok": False, "error": "no actor named {!r}".format(name)}
        if actor.host:
            return {"ok": False, "error": "{} is one of the host's actors: its mailboxes are "
                    "kept while the host restarts it".format(actor.name)}
        if actor.conn is not None:
            return {"ok": False, "error": "{} is connected (pid {}): stop it first".format(
                actor.name, actor.pid)}
        dropped = self._expire(actor, "released by hand (fxcm detach)")
        return {"ok": True, "name": actor.name, "messages": dropped}

    def _inject(self, kind: str, request: Dict[str, Any]) -> Dict[str, Any]:
        """Pass an injected fault (crash, stall, release) on to the named connected actor as a
        FAULT frame; it acts on it at its next handler (actors/base.py). The CTRL answer says
        the actor was told, or why not."""
        name = request.get("name")
        actor = self._actors.get(name) if isinstance(name, str) else None
        if actor is None or actor.name.startswith("$"):
            return {"ok": False, "error": "no actor named {!r}".format(name)}
        if actor.conn is None:
            return {"ok": False, "error": "{} is not connected (restarting or stopped)".format(
                actor.name)}
        spec: Dict[str, Any] = {"kind": kind}
        if kind == "stall":
            seconds = request.get("seconds")
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) \
                    or not 0 < seconds <= wire.MAX_STALL_SECONDS:
                return {"ok": False, "error": "stall seconds must be a number in (0, {:g}], got "
                        "{!r}".format(wire.MAX_STALL_SECONDS, seconds)}
            spec["seconds"] = float(seconds)
            actor.injected_stalls += 1
            self.counters["injected_stalls"] += 1
        elif kind == "crash":
            actor.injected_crashes += 1
            self.counters["injected_crashes"] += 1
        self._send(actor.conn, [wire.FAULT, wire.pack(spec)])
        log.warning("injected fault on request: %s %s%s (pid %s)", kind, actor.name,
                    " for {:g} s".format(spec["seconds"]) if "seconds" in spec else "",
                    actor.pid)
        return {"ok": True, "name": actor.name, "kind": kind, "pid": actor.pid,
                "connects": actor.connects}

    # -- routing ---------------------------------------------------------------------------

    def _routes(self, topic: bytes) -> List[Tuple[_Actor, Mailbox]]:
        try:
            text = topic.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("topic is not UTF-8") from None
        targets = [(actor, mailbox) for prefix, actor, mailbox in self._subscriptions
                   if text.startswith(prefix)]
        if len(self._route_cache) > 100000:  # topics are few; a flood of distinct ones is not
            self._route_cache.clear()
        self._route_cache[topic] = targets
        return targets

    def _topic_info(self, topic: bytes) -> Tuple[Optional[FrozenSet[str]], Optional[str]]:
        """Who may publish ``topic`` (None: anyone) and the flow prefix it counts for."""
        try:
            text = topic.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("topic is not UTF-8") from None
        owners = owners_of(text, self.settings.reserved_topics)
        flow = next((prefix for prefix in self.settings.flow_topics
                     if text.startswith(prefix)), None)
        if len(self._topic_cache) > 100000:  # topics are few; a flood of distinct ones is not
            self._topic_cache.clear()
        info = (owners, flow)
        self._topic_cache[topic] = info
        return info

    def _deny(self, producer: _Actor, topic: bytes, owners: FrozenSet[str]) -> None:
        """A message the producer may not publish: counted, logged, answered."""
        producer.refused += 1
        self.counters["refused_publishes"] += 1
        shown = topic.decode("utf-8", "replace")
        reason = "{!r} may only come from {}".format(shown, ", ".join(sorted(owners)))
        self._log_refusal("refused a message from %s: %s", producer.name, reason)
        if producer.conn is not None:
            self._send(producer.conn, [wire.DENY, topic, reason.encode("utf-8")])

    def _actor(self, name: str, host: bool = False) -> _Actor:
        actor = self._actors.get(name)
        if actor is None:
            actor = _Actor(name, self.settings.direct_bound, host)
            self._actors[name] = actor
        return actor

    def _pump(self, actor: _Actor) -> None:
        """Deliver pending messages up to the actor's prefetch window: one DELIVER for a single
        message, one DELIVERN for a backlog (one frame instead of four per message)."""
        conn = actor.conn
        if conn is None:
            return
        inflight = actor.inflight
        room = actor.prefetch - len(inflight)
        if room <= 0:
            return
        mailboxes = actor.mailboxes
        count = len(mailboxes)
        batch: List[Tuple[int, Envelope]] = []
        while len(batch) < room:
            envelope = None
            mailbox = None
            for step in range(count):
                index = (actor.rr + step) % count
                candidate = mailboxes[index]
                if candidate.has_pending():
                    mailbox = candidate
                    envelope = candidate.take()
                    actor.rr = (index + 1) % count
                    break
            if envelope is None or mailbox is None:
                break
            delivery_id = actor.next_delivery
            actor.next_delivery += 1
            envelope.deliveries += 1
            if envelope.deliveries > 1:
                actor.redelivered += 1
            inflight[delivery_id] = (mailbox, envelope)
            batch.append((delivery_id, envelope))
        if not batch:
            return
        actor.delivered += len(batch)
        if len(batch) == 1:
            delivery_id, envelope = batch[0]
            frames = [conn, wire.SIGNATURE, wire.DELIVER,
                      wire.pack_tag(delivery_id, envelope.deliveries),
                      envelope.topic, envelope.header, envelope.body]
        else:
            frames = [conn, wire.SIGNATURE, wire.DELIVERN, wire.pack(
                [[delivery_id, envelope.deliveries, envelope.topic, envelope.header,
                  envelope.body] for delivery_id, envelope in batch])]
        if conn[:1] == IPC_TAG:
            frames[0] = conn[1:]
            sock = self._ipc
        else:
            sock = self._sock
        try:
            send_frames(sock, frames, NOBLOCK)
        except zmq.ZMQError as exc:
            self._send_failed(actor, exc)
            return
        actor.last_send = time.monotonic()

    def _send(self, conn: bytes, frames: List[bytes]) -> None:
        if conn[:1] == IPC_TAG:
            sock, routing_id = self._ipc, conn[1:]
        else:
            sock, routing_id = self._sock, conn
        try:
            send_frames(sock, [routing_id, wire.SIGNATURE] + frames, NOBLOCK)
        except zmq.ZMQError as exc:
            actor = self._by_conn.get(conn)
            if actor is not None:
                self._send_failed(actor, exc)
            else:
                self.counters["send_failures"] += 1
            return
        actor = self._by_conn.get(conn)
        if actor is not None:
            actor.last_send = time.monotonic()

    def _send_failed(self, actor: _Actor, exc: zmq.ZMQError) -> None:
        self.counters["send_failures"] += 1
        if exc.errno == errno.EHOSTUNREACH:
            self._disconnect(actor, crashed=True, reason="peer unreachable")
        else:
            log.warning("send to %s failed: %s", actor.name, exc)

    # -- flow control ----------------------------------------------------------------------

    def _credit(self, producer: _Actor, count: int) -> None:
        producer.owed += count
        if not producer.blocked_on and producer.owed >= self._grant_batch \
                and producer.conn is not None:
            owed = producer.owed
            producer.owed = 0
            self._send(producer.conn, [wire.CREDIT, wire.pack_u32(owed)])

    def _block(self, producer: _Actor, mailbox: Mailbox) -> None:
        if mailbox not in producer.blocked_on:
            if not producer.blocked_on:
                producer.backpressure_events += 1
                producer.blocked_since = time.monotonic()
                self.counters["backpressure_events"] += 1
            producer.blocked_on.add(mailbox)
            mailbox.blocked.add(producer)

    def _release(self, mailbox: Mailbox) -> None:
        blocked = list(mailbox.blocked)
        mailbox.blocked.clear()
        for producer in blocked:
            producer.blocked_on.discard(mailbox)
            if not producer.blocked_on and producer.owed and producer.conn is not None:
                owed = producer.owed
                producer.owed = 0
                self._send(producer.conn, [wire.CREDIT, wire.pack_u32(owed)])

    # -- failure ---------------------------------------------------------------------------

    def _disconnect(self, actor: _Actor, crashed: bool, reason: str,
                    culprit: Optional[int] = None, charge_oldest: bool = False) -> None:
        """The actor's connection is gone: its inflight messages go back to their mailboxes.

        Only a message that failed its handler is charged a failure: the ``culprit`` the actor
        named, or, for a process that died without a word (``charge_oldest``: SIGKILL, a
        segfault), the oldest inflight one. At ``max_redeliveries`` failures it becomes a dead
        letter. A timer or ack failure, a liveness timeout or a replaced connection charges
        nothing: those messages did not fail.
        """
        if actor.conn is not None:
            self._by_conn.pop(actor.conn, None)
            actor.detached_at = time.monotonic()
        actor.conn = None
        if crashed:
            actor.crashes += 1
        inflight = list(actor.inflight.items())
        actor.inflight.clear()
        ids = [delivery_id for delivery_id, _ in inflight]
        index = ids.index(culprit) if culprit in ids else (0 if charge_oldest and ids else None)
        if crashed and index is not None:
            mailbox, envelope = inflight[index][1]
            envelope.failures += 1
            if envelope.failures >= self.settings.max_redeliveries:
                del inflight[index]
                mailbox.inflight -= 1
                self._dead_letter(actor, envelope, "handler failed {} times: {}".format(
                    envelope.failures, reason))
                if mailbox.blocked and mailbox.depth() <= getattr(mailbox, "low_water", 0):
                    self._release(mailbox)
        for _, (mailbox, envelope) in reversed(inflight):
            mailbox.requeue(envelope)
        if crashed:
            log.warning("%s lost its connection (%s); %d unacked messages will be redelivered",
                        actor.name, reason, len(inflight))

    def _dead_letter(self, actor: _Actor, envelope: Envelope, reason: str) -> None:
        actor.dead_letters += 1
        self.counters["dead_letters"] += 1
        self._dead_letters.append(DeadLetter(actor.name, envelope.topic, envelope.header,
                                             envelope.body, reason, envelope.failures))
        log.error("dead letter for %s on %r: %s", actor.name,
                  envelope.topic.decode("utf-8", "replace"), reason)
        if self._tap_prefixes:
            self._tap_copy(b"$dead." + envelope.topic, b"dead", envelope.header, envelope.body)

    def _housekeeping(self, now: float) -> None:
        interval = self.settings.ping_interval
        deadline = interval * self.settings.liveness_misses
        for actor in list(self._by_conn.values()):
            if actor.transport != "ipc":
                continue  # in-host threads: the supervisor watches them
            if now - actor.last_recv > deadline:
                self._disconnect(actor, crashed=True, reason="no traffic for {:.1f} s".format(
                    now - actor.last_recv))
            elif now - actor.last_send >= interval and actor.conn is not None:
                self._send(actor.conn, [wire.PING])
        self._expire_phantoms()
        keep = self.settings.detached_mailbox_seconds
        for actor in list(self._actors.values()):
            if not actor.host and actor.conn is None and actor.detached_at is not None \
                    and now - actor.detached_at >= keep:
                self._expire(actor, "did not come back within {:g} s "
                             "(bus.detached_mailbox_seconds)".format(keep))
        self.stats_snapshot = self._stats()

    def _expire_phantoms(self) -> None:
        """Forget guests that are gone and hold nothing: no subscription, no message, no
        checkpoint (a flood of HELLOs with made-up names must not stay in memory)."""
        for actor in list(self._actors.values()):
            if actor.host or actor.conn is not None or len(actor.mailboxes) > 1 \
                    or actor.direct.depth() or actor.inflight or actor.checkpoint is not None:
                continue
            self._forget(actor)
            self.counters["phantoms_expired"] += 1

    def _expire(self, actor: _Actor, reason: str) -> int:
        """A guest that left for good: its mailboxes go, loudly, so that no producer stays held
        back by them. Returns the number of messages dropped."""
        dropped = actor.depth()
        mailboxes = len(actor.mailboxes) - 1
        for mailbox in actor.mailboxes:
            self._release(mailbox)
        self._forget(actor)
        self.counters["detached_expired"] += 1
        self.counters["expired_messages"] += dropped
        self._expired.append({"name": actor.name, "ts": time.time(), "messages": dropped,
                              "subscriptions": mailboxes, "reason": reason})
        log.error("%s %s: its %d mailbox%s and %d waiting message%s are dropped so that no "
                  "producer is held back by them", actor.name, reason, mailboxes,
                  "" if mailboxes == 1 else "es", dropped, "" if dropped == 1 else "s")
        return dropped

    def _forget(self, actor: _Actor) -> None:
        self._actors.pop(actor.name, None)
        for mailbox in actor.blocked_on:
            mailbox.blocked.discard(actor)
        actor.blocked_on.clear()
        if len(actor.mailboxes) > 1:
            self._subscriptions = [entry for entry in self._subscriptions
                                   if entry[1] is not actor]
            self._route_cache.clear()

    # -- tap -------------------------------------------------------------------------------

    def _on_tap_subscription(self, tap: zmq.Socket) -> None:
        while True:
            try:
                event = tap.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not event:
                continue
            prefix = event[1:]
            if event[0] == 1:
                self._tap_prefixes[prefix] += 1
            elif event[0] == 0:
                self._tap_prefixes[prefix] -= 1
                if self._tap_prefixes[prefix] <= 0:
                    del self._tap_prefixes[prefix]
            self._tap_cache.clear()

    def _tap_copy(self, topic: bytes, kind: bytes, header: bytes, body: bytes) -> None:
        wanted = self._tap_cache.get(topic)
        if wanted is None:
            wanted = any(topic.startswith(prefix) for prefix in self._tap_prefixes)
            self._tap_cache[topic] = wanted
        if not wanted or self._tap is None:
            return
        try:
            send_frames(self._tap, [topic, kind, header, body], NOBLOCK)
            self.counters["tap_copies"] += 1
        except zmq.Again:
            self.counters["tap_dropped"] += 1

    # -- status ----------------------------------------------------------------------------

    def _stats(self) -> Dict[str, Any]:
        router: Dict[str, Any] = dict(self.counters)
        for key in ("published", "sent", "malformed", "unknown_peer", "unrouted", "unroutable",
                    "dead_letters", "tap_copies", "tap_dropped", "backpressure_events",
                    "send_failures", "internal_errors", "replies_undeliverable",
                    "injected_crashes", "injected_stalls", "refused_publishes",
                    "refused_hellos", "refused_controls", "detached_expired",
                    "expired_messages", "phantoms_expired"):
            router.setdefault(key, 0)
        router["tap_subscriptions"] = sorted(p.decode("utf-8", "replace")
                                             for p in self._tap_prefixes)
        router["uptime_seconds"] = time.time() - self.started_at
        router["peers"] = len(self._actors)
        router["drills"] = self.settings.drills
        router["flow"] = {prefix: self.flow[prefix] for prefix in self.settings.flow_topics}
        now = time.monotonic()
        return {
            "router": router,
            "actors": {name: actor.stats(now) for name, actor in self._actors.items()},
            "dead_letters": [letter.summary() for letter in list(self._dead_letters)[-20:]],
            "expired": list(self._expired),
            "host": self._host_info,
            "ts": time.time(),
        }


def _same_secret(given: Any, expected: str) -> bool:
    """``given`` (from a peer: anything) equals the non-empty secret ``expected``, compared in
    constant time."""
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _parse_subscriptions(raw: Any) -> List[Tuple[str, str, int]]:
    if not isinstance(raw, list):
        raise ProtocolError("HELLO subscriptions must be a list")
    if len(raw) > MAX_SUBSCRIPTIONS:
        raise ProtocolError("HELLO declares {} subscriptions; at most {}".format(
            len(raw), MAX_SUBSCRIPTIONS))
    result = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 3:
            raise ProtocolError("a subscription is [topic, policy, bound]")
        topic, policy, bound = item
        if not isinstance(topic, str) or not topic or topic == DIRECT \
                or len(topic) > MAX_TOPIC_CHARS:
            raise ProtocolError("subscription topic must be a string of 1..{} characters".format(
                MAX_TOPIC_CHARS))
        if policy not in POLICIES:
            raise ProtocolError("subscription policy must be one of {}".format(POLICIES))
        if not isinstance(bound, int) or isinstance(bound, bool) \
                or not 1 <= bound <= MAX_MAILBOX_BOUND:
            raise ProtocolError("subscription bound must be an integer in 1..{}".format(
                MAX_MAILBOX_BOUND))
        result.append((topic, policy, bound))
    return result


def _remove_stale_socket(endpoint: str) -> None:
    """Remove a socket file left by a dead host. Only called while holding the run-dir lock."""
    path = endpoint[len("ipc://"):]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unbind_quietly(sock: zmq.Socket, endpoint: str) -> None:
    """close() frees an inproc name later, on the context's reaper thread; unbind frees it
    now, so a router started right after this one (a restart in-process) can bind."""
    try:
        sock.unbind(endpoint)
    except zmq.ZMQError:
        pass
