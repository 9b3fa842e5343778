"""The actor side of the bus: one DEALER connection to the router.

A ``BusClient`` belongs to one thread (ZeroMQ sockets are not thread-safe). It says HELLO,
keeps count of its send credit, buffers deliveries until the actor handles them, acks them
(cumulatively, optionally with a checkpoint), answers PINGs and, over ipc, notices a silent
router and reconnects with backoff.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import zmq

from bus._acl import may_publish
from bus._backoff import Backoff
from bus._frames import NOBLOCK, recv_frames, send_frames
from protocol import wire
from protocol.errors import (
    BackpressureError,
    BusDenied,
    EndpointError,
    ProtocolError,
    RequestTimeout,
)
from protocol.messages import from_wire, to_wire, wire_name

log = logging.getLogger("fxcm.bus")


class Subscription(object):
    """A topic prefix an actor receives, with the policy of its mailbox and its bound."""

    __slots__ = ("topic", "policy", "bound")

    def __init__(self, topic: str, policy: str, bound: int) -> None:
        self.topic = topic
        self.policy = policy
        self.bound = bound

    def to_wire(self) -> List[Any]:
        return [self.topic, self.policy, self.bound]

    def __repr__(self) -> str:
        return "Subscription({!r}, {!r}, bound={})".format(self.topic, self.policy, self.bound)


class Delivery(object):
    """One message handed to this actor: raw frames, decoded on demand. ``generation`` is
    the client connection it came on: delivery ids count per connection, so one handled
    after a reconnect must not be acked on the new connection."""

    __slots__ = ("delivery_id", "attempt", "topic", "header_bytes", "body_bytes", "_header",
                 "generation")

    def __init__(self, delivery_id: int, attempt: int, topic: bytes, header: bytes,
                 body: bytes, generation: int = 0) -> None:
        self.delivery_id = delivery_id
        self.attempt = attempt
        self.topic = topic
        self.header_bytes = header
        self.body_bytes = body
        self._header: Optional[wire.Header] = None
        self.generation = generation

    @property
    def redelivered(self) -> bool:
        return self.attempt > 1

    @property
    def header(self) -> wire.Header:
        if self._header is None:
            self._header = wire.decode_header(self.header_bytes)
        return self._header

    @property
    def type(self) -> str:
        declared = self.header.type
        return declared if declared is not None else self.topic.decode("utf-8", "replace")

    def body(self) -> Any:
        """The decoded body; a registered message type comes back as its class."""
        return from_wire(self.header.type, wire.unpack(self.body_bytes))


class BusClient(object):
    """One actor's connection to the router. Not thread-safe: use it from one thread."""

    # An outbox flushes at this many messages or bytes even inside one loop turn.
    MAX_BATCH = 512
    MAX_BATCH_BYTES = 1 << 20

    def __init__(self, name: str, endpoint: str, context: Optional[zmq.Context] = None,
                 subscriptions: Tuple[Subscription, ...] = (), prefetch: int = 64,
                 ack_mode: str = "auto", meta: Optional[Dict[str, Any]] = None,
                 reconnect: Optional[Backoff] = None, batching: bool = False,
                 token: Optional[str] = None) -> None:
        """``batching``: publish/send only queue into an outbox that goes out as one batch on
        ``flush()`` (the actor loop flushes every turn; acks, replies, BYE and every wait flush
        first, so nothing is reordered or held back). Off: every send goes out at once.
        ``token``: the host's secret, for the host's own actors (their names are refused to
        anyone without it)."""
        self.name = name
        self.endpoint = endpoint
        self.context = context or zmq.Context.instance()
        self.subscriptions = subscriptions
        self.prefetch = prefetch
        self.ack_mode = ack_mode
        self.transport = "inproc" if endpoint.startswith("inproc://") else "ipc"
        self.meta = dict(meta or {})
        self.reconnect_backoff = reconnect or Backoff(0.1, 5.0)
        self.token = token
        # This client's secret: lets it replace its own connection (a reconnect) while the
        # router still counts that one alive; anybody else is refused the name meanwhile.
        self.incarnation = os.urandom(16).hex()
        self._reserved: Dict[str, List[str]] = {}  # from WELCOME: who may publish what
        self._allowed: Dict[str, bool] = {}
        self._denial: Optional[BusDenied] = None  # a DENY from the router, raised next call
        self._hello_denied = ""
        self.sock: Optional[zmq.Socket] = None
        self.credit = 0
        self.buffer: Deque[Delivery] = deque()
        self.welcome: Dict[str, Any] = {}
        self.on_welcome: Optional[Callable[[Dict[str, Any]], None]] = None
        self._seq = itertools.count(1)
        self._corr = itertools.count(1)
        self._awaiting: Optional[str] = None
        self._reply: Optional[Tuple[wire.Header, bytes]] = None
        self._ctrl_results: Deque[Any] = deque()
        self._last_recv = 0.0
        self._liveness = 3.0
        self._last_handled = 0  # highest delivery id handled
        self._handled_since_ack = 0
        self._bye_answered = False
        self._keepalive: Optional[threading.Thread] = None
        self._keepalive_stop = threading.Event()
        self.batching = batching
        self._outbox: List[List[bytes]] = []  # [b"P", topic, header, body] or [b"S", dest, ...]
        self._outbox_bytes = 0
        # An injected fault (FAULT from the router) waiting for the actor's next handler, when
        # it came, and how many releases came so far (a stall in progress ends on a new one).
        self.fault: Optional[Dict[str, Any]] = None
        self.fault_since = 0.0
        self.releases = 0
        self.stats: Dict[str, Any] = {
            "sent": 0, "published": 0, "received": 0, "acked": 0, "checkpoints": 0,
            "blocked": 0, "blocked_seconds": 0.0, "backpressure_timeouts": 0,
            "late_replies": 0, "resets": 0, "reconnects": 0, "malformed": 0,
            "stale_handled": 0, "denied": 0,
        }
        self._generation = 0  # the connection (socket or HELLO) the deliveries belong to

    # -- connection ------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> Dict[str, Any]:
        """Open the socket, say HELLO and wait for WELCOME; returns the WELCOME info."""
        deadline = time.monotonic() + timeout
        failures = 0
        while True:
            self._open()
            try:
                return self._hello(min(2.0, max(0.05, deadline - time.monotonic())))
            except EndpointError:
                failures += 1
                if time.monotonic() >= deadline:
                    self.close()
                    raise EndpointError("{}: no WELCOME from the router at {} within {} s"
                                        .format(self.name, self.endpoint, timeout)) from None
                time.sleep(min(self.reconnect_backoff.compute(failures),
                               max(0.0, deadline - time.monotonic())))

    def _open(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise EndpointError("{}: cannot connect to {}: {}".format(
                self.name, self.endpoint, exc)) from exc
        self.sock = sock
        self._generation += 1
        self.buffer.clear()
        self._last_handled = 0
        self._handled_since_ack = 0

    def _hello_frames(self) -> List[bytes]:
        meta = dict(self.meta)
        meta.update({
            "subscriptions": [s.to_wire() for s in self.subscriptions],
            "prefetch": self.prefetch,
            "ack_mode": self.ack_mode,
            "pid": os.getpid(),
            "transport": self.transport,
            "incarnation": self.incarnation,
        })
        if self.token:
            meta["token"] = self.token
        return [wire.HELLO, self.name.encode("utf-8"), wire.pack(meta)]

    def _hello(self, timeout: float) -> Dict[str, Any]:
        self._raw_send(self._hello_frames())
        deadline = time.monotonic() + timeout
        self.welcome = {}
        self._hello_denied = ""
        while not self.welcome:
            if self._hello_denied:
                raise BusDenied("{}: the router at {} refused the name: {}".format(
                    self.name, self.endpoint, self._hello_denied))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EndpointError("{}: no WELCOME from {}".format(self.name, self.endpoint))
            self._read(remaining)
        return self.welcome

    def close(self) -> None:
        self._keepalive_stop.set()
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def _start_keepalive(self) -> None:
        """Over ipc, a thread with its own socket tells the router this process is alive
        while a long handler keeps the actor's thread from answering PINGs; it ends with
        the client (or the process)."""
        if self.transport != "ipc" or self._keepalive is not None:
            return
        interval = float(self.welcome.get("ping_interval", 1.0))
        stop = self._keepalive_stop
        context, endpoint, name = self.context, self.endpoint, self.name
        incarnation = self.incarnation
        # A weak reference: a client dropped without close() must not keep this thread (and
        # its socket, which would block the context's termination) alive.
        client = weakref.ref(self)

        def run() -> None:
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 4)
            try:
                sock.connect(endpoint)
                payload = wire.pack({"op": "alive", "name": name, "pid": os.getpid(),
                                     "incarnation": incarnation})
                while not stop.wait(interval):
                    alive = client()
                    if alive is None or alive.sock is None:
                        return
                    del alive
                    try:
                        sock.send_multipart([wire.SIGNATURE, wire.CTRL, payload], zmq.NOBLOCK)
                    except zmq.ZMQError:
                        pass  # the router is away: the actor's own liveness check decides
            finally:
                sock.close(0)

        self._keepalive = threading.Thread(target=run, name="keepalive-" + self.name,
                                           daemon=True)
        self._keepalive.start()

    def bye(self, crashed: bool = False, delivery: Optional[int] = None,
            error: str = "", timeout: float = 5.0) -> bool:
        """Leave: orderly (``crashed=False``) or after a handler crash naming the delivery.

        Waits up to ``timeout`` for the router's answer, which proves that every message sent
        before was routed; returns False if none came (the router is gone)."""
        if self.sock is None or not self.welcome:
            return False
        info: Dict[str, Any] = {"reason": "crash" if crashed else "stop"}
        if delivery is not None:
            info["delivery"] = delivery
        if error:
            info["error"] = error[:500]
        self._bye_answered = False
        try:
            self.flush()
        except EndpointError:
            return False
        try:
            self._raw_send([wire.BYE, wire.pack(info)])
            deadline = time.monotonic() + timeout
            while not self._bye_answered:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("%s: no answer to BYE from %s within %.1f s; sends made just "
                                "before may be lost", self.name, self.endpoint, timeout)
                    return False
                self._read(remaining)
        except EndpointError:
            return False
        return True

    # -- sending ---------------------------------------------------------------------------

    def _raw_send(self, frames: List[bytes]) -> None:
        if self.sock is None:
            raise EndpointError("{}: not connected to {}".format(self.name, self.endpoint))
        try:
            send_frames(self.sock, [wire.SIGNATURE] + frames)
        except zmq.ZMQError as exc:
            raise EndpointError("{}: send to {} failed: {}".format(
                self.name, self.endpoint, exc)) from exc

    def header(self, msg_type: Optional[str], corr: Optional[str] = None,
               reply_to: Optional[str] = None) -> bytes:
        return wire.make_header(self.name, next(self._seq), time.time_ns(), msg_type, corr,
                                reply_to)

    def _take_credit(self, timeout: Optional[float]) -> bool:
        """Wait for one unit of send credit; False when ``timeout`` passes first."""
        if self.credit > 0:
            self.credit -= 1
            return True
        self.flush()  # the router can only hand credit back for what it has received
        self._read(0)
        if self.credit > 0:
            self.credit -= 1
            return True
        if timeout is not None and timeout <= 0:
            return False
        self.stats["blocked"] += 1
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        try:
            while self.credit <= 0:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._read(min(remaining, 1.0))
                self._check_router_alive()
        finally:
            self.stats["blocked_seconds"] += time.monotonic() - started
        self.credit -= 1
        return True

    def publish(self, topic: str, body: Any, msg_type: Optional[str] = None,
                timeout: Optional[float] = None) -> bool:
        """Publish ``body`` on ``topic``. Blocks for credit up to ``timeout`` (None: forever);
        ``timeout=0`` makes it a try: returns False instead of blocking."""
        if msg_type is None:
            msg_type = wire_name(body)
        self._check_allowed(topic)
        topic_bytes = topic.encode("utf-8")
        header = self.header(msg_type)
        payload = wire.pack(to_wire(body))
        if not self._take_credit(timeout):
            return self._refused(timeout, topic)
        self.stats["published"] += 1
        if self.batching:
            self._queue([b"P", topic_bytes, header, payload])
        else:
            self._raw_send([wire.PUB, topic_bytes, header, payload])
        return True

    def send(self, dest: str, msg_type: str, body: Any, timeout: Optional[float] = None,
             corr: Optional[str] = None, reply_to: Optional[str] = None) -> bool:
        """Send ``body`` to the actor ``dest``'s mailbox; credit rules as in ``publish``."""
        item = [b"S", dest.encode("utf-8"), msg_type.encode("utf-8"),
                self.header(msg_type, corr, reply_to), wire.pack(to_wire(body))]
        if not self._take_credit(timeout):
            return self._refused(timeout, dest)
        self.stats["sent"] += 1
        if self.batching:
            self._queue(item)
        else:
            self._raw_send([wire.SEND] + item[1:])
        return True

    def _check_allowed(self, topic: str) -> None:
        """Raise BusDenied for a topic reserved for other actors, and for a refusal the
        router sent since the last call: a refused publish never passes silently."""
        denial = self._denial
        if denial is not None:
            self._denial = None
            raise denial
        if not self._reserved:
            return
        allowed = self._allowed.get(topic)
        if allowed is None:
            allowed = may_publish(self.name, topic, self._reserved)
            if len(self._allowed) > 10000:
                self._allowed.clear()
            self._allowed[topic] = allowed
        if not allowed:
            self.stats["denied"] += 1
            raise BusDenied("{}: may not publish {!r}: it is reserved for other actors of the "
                            "host (bus.reserved_topics)".format(self.name, topic))

    def _queue(self, item: List[bytes]) -> None:
        self._outbox.append(item)
        self._outbox_bytes += len(item[-1]) + len(item[-2])
        if len(self._outbox) >= self.MAX_BATCH or self._outbox_bytes >= self.MAX_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Send what the outbox holds, in order: runs of publishes as PUBN, runs of sends as
        SENDN (a run of one in the plain multi-frame form)."""
        outbox = self._outbox
        if not outbox:
            return
        self._outbox = []
        self._outbox_bytes = 0
        start = 0
        while start < len(outbox):
            kind = outbox[start][0]
            end = start
            while end < len(outbox) and outbox[end][0] == kind:
                end += 1
            run = outbox[start:end]
            if len(run) == 1:
                self._raw_send([wire.PUB if kind == b"P" else wire.SEND] + run[0][1:])
            else:
                self._raw_send([wire.PUBN if kind == b"P" else wire.SENDN,
                                wire.pack([item[1:] for item in run])])
            start = end

    def _refused(self, timeout: Optional[float], where: str) -> bool:
        if timeout is not None and timeout <= 0:
            return False
        self.stats["backpressure_timeouts"] += 1
        raise BackpressureError("{}: no credit to send to {} within {} s (a lossless mailbox "
                                "downstream is full)".format(self.name, where, timeout))

    def reply(self, delivery: Delivery, msg_type: str, body: Any) -> None:
        """Answer a request; goes to the requester's live connection, outside mailboxes."""
        header = delivery.header
        if header.reply_to is None:
            raise ProtocolError("{}: cannot reply to a message without reply_to".format(
                self.name))
        self.flush()  # what the handler published before replying goes out first
        self._raw_send([wire.REPLY, header.reply_to.encode("utf-8"), msg_type.encode("utf-8"),
                        self.header(msg_type, header.corr), wire.pack(to_wire(body))])

    def request(self, dest: str, msg_type: str, body: Any, timeout: float,
                cancel: Optional[threading.Event] = None) -> Tuple[str, Any]:
        """Send a request and wait for its reply; returns (reply type, decoded body).

        Deliveries that arrive meanwhile stay buffered for the actor's loop. ``cancel`` (set
        from another thread) ends the wait early with RequestTimeout."""
        # unguessable: a reply is matched by it, and a forged one must not match
        corr = "{}:{}:{}".format(self.name, next(self._corr), os.urandom(8).hex())
        deadline = time.monotonic() + timeout
        self.send(dest, msg_type, body, timeout=timeout, corr=corr, reply_to=self.name)
        self.flush()
        self._awaiting = corr
        self._reply = None
        try:
            while self._reply is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout("{}: no reply from {} to {!r} within {} s".format(
                        self.name, dest, msg_type, timeout))
                if cancel is not None and cancel.is_set():
                    raise RequestTimeout("{}: request to {} cancelled (stopping)".format(
                        self.name, dest))
                self._read(min(remaining, 0.2 if cancel is not None else 1.0))
                self._check_router_alive()
            header, body_bytes = self._reply
        finally:
            self._awaiting = None
            self._reply = None
        reply_type = header.type or ""
        return reply_type, from_wire(reply_type, wire.unpack(body_bytes))

    def control(self, request: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
        """A CTRL request to the router (status, host info); returns its result map."""
        self._raw_send([wire.CTRL, wire.pack(request)])
        deadline = time.monotonic() + timeout
        while not self._ctrl_results:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout("{}: router did not answer CTRL {!r} within {} s".format(
                    self.name, request.get("op"), timeout))
            self._read(remaining)
        result = self._ctrl_results.popleft()
        if not isinstance(result, dict):
            raise ProtocolError("CTRL result must be a map")
        return result

    # -- receiving -------------------------------------------------------------------------

    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for input and take it; returns the buffered count."""
        self._read(timeout)
        self._check_router_alive()
        denial = self._denial
        if denial is not None:
            self._denial = None
            raise denial
        return len(self.buffer)

    def _read(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for input, then take everything available."""
        sock = self.sock
        if sock is None:
            raise EndpointError("{}: not connected".format(self.name))
        if timeout > 0 and not sock.poll(int(timeout * 1000) or 1):
            return
        self.drain()

    def drain(self) -> None:
        """Take every frame set waiting on the socket, without blocking."""
        sock = self.sock
        if sock is None:
            return
        while True:
            try:
                frames = recv_frames(sock, NOBLOCK)
            except zmq.Again:
                return
            self._last_recv = time.monotonic()
            try:
                self._dispatch(frames)
            except ProtocolError as exc:
                self.stats["malformed"] += 1
                log.warning("%s: dropped a malformed frame from the router: %s", self.name, exc)

    def _dispatch(self, frames: List[bytes]) -> None:
        verb = frames[1] if len(frames) > 1 and frames[0] == wire.SIGNATURE else b""
        if verb == wire.DELIVER and len(frames) == 6:
            delivery_id, attempt = wire.unpack_tag(frames[2])
            self.buffer.append(Delivery(delivery_id, attempt, frames[3], frames[4], frames[5],
                                        self._generation))
            self.stats["received"] += 1
        elif verb == wire.DELIVERN and len(frames) == 3:
            items = wire.unpack(frames[2], "DELIVERN")
            if not isinstance(items, list):
                raise ProtocolError("DELIVERN must carry a list")
            append = self.buffer.append
            generation = self._generation
            for item in items:
                if not isinstance(item, list) or len(item) != 5:
                    raise ProtocolError("a DELIVERN item is [id, attempt, topic, header, body]")
                append(Delivery(item[0], item[1], item[2], item[3], item[4], generation))
            self.stats["received"] += len(items)
        elif verb == wire.CREDIT and len(frames) == 3:
            self.credit += wire.unpack_u32(frames[2], "CREDIT")
        elif verb == wire.REPLY and len(frames) == 5:
            header = wire.decode_header(frames[3])
            if self._awaiting is not None and header.corr == self._awaiting:
                self._reply = (header, frames[4])
            else:
                self.stats["late_replies"] += 1
        elif verb == wire.PING:
            self._raw_send([wire.PONG])
        elif verb == wire.PONG:
            pass
        elif verb == wire.BYE:
            self._bye_answered = True
        elif verb == wire.WELCOME and len(frames) == 3:
            welcome = wire.unpack(frames[2], "WELCOME")
            if not isinstance(welcome, dict):
                raise ProtocolError("WELCOME must be a map")
            self.credit = int(welcome.get("credit", 0))
            reserved = welcome.get("reserved")
            self._reserved = reserved if isinstance(reserved, dict) else {}
            self._allowed = {}
            self._liveness = float(welcome.get("ping_interval", 1.0)) * int(
                welcome.get("liveness_misses", 3))
            self.welcome = welcome
            self._start_keepalive()
            if self.on_welcome is not None:
                self.on_welcome(welcome)
        elif verb == wire.CTRL and len(frames) == 3:
            self._ctrl_results.append(wire.unpack(frames[2], "CTRL result"))
        elif verb == wire.FAULT and len(frames) == 3:
            self._on_fault(wire.unpack(frames[2], "FAULT"))
        elif verb == wire.DENY and len(frames) == 4:
            reason = frames[3].decode("utf-8", "replace")
            if frames[2] == wire.HELLO:
                self._hello_denied = reason or "refused"
                return
            self.stats["denied"] += 1
            log.error("%s: the router refused a message: %s", self.name, reason)
            self._denial = BusDenied("{}: the router refused a message: {}".format(
                self.name, reason))
        elif verb == wire.RESET:
            self.stats["resets"] += 1
            log.warning("%s: the router does not know this connection; saying HELLO again",
                        self.name)
            self._rejoin()
        else:
            raise ProtocolError("unexpected frames from the router (verb {!r}, {} frames)".format(
                bytes(verb[:16]), len(frames)))

    def _on_fault(self, spec: Any) -> None:
        if not isinstance(spec, dict) or spec.get("kind") not in wire.FAULT_KINDS:
            raise ProtocolError("FAULT must be a map with a kind in {}".format(wire.FAULT_KINDS))
        if spec["kind"] == "release":
            self.releases += 1
            self.fault = None
            return
        if spec["kind"] == "stall":
            seconds = spec.get("seconds")
            if not isinstance(seconds, (int, float)) or not 0 < seconds <= \
                    wire.MAX_STALL_SECONDS:
                raise ProtocolError("FAULT stall seconds must be in (0, {}], got {!r}".format(
                    wire.MAX_STALL_SECONDS, seconds))
        self.fault = spec
        self.fault_since = time.monotonic()

    def take_fault(self) -> Optional[Dict[str, Any]]:
        """The injected fault waiting for the next handler, if any, now consumed."""
        fault = self.fault
        self.fault = None
        return fault

    def _rejoin(self) -> None:
        self._generation += 1
        self.buffer.clear()
        self._last_handled = 0
        self._handled_since_ack = 0
        self.welcome = {}
        self._raw_send(self._hello_frames())

    def _check_router_alive(self) -> None:
        """Over ipc, a router silent for the liveness interval is gone: reconnect."""
        if self.transport != "ipc" or not self.welcome:
            return
        if time.monotonic() - self._last_recv <= self._liveness:
            return
        self.drain()  # after a long handler, the router's PINGs wait unread in the socket
        if time.monotonic() - self._last_recv <= self._liveness:
            return
        self.stats["reconnects"] += 1
        log.warning("%s: router at %s silent for %.1f s; reconnecting", self.name,
                    self.endpoint, time.monotonic() - self._last_recv)
        self.connect(timeout=float("inf"))

    def check_alive(self) -> None:
        self._check_router_alive()

    # -- acknowledging ---------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The current connection's number; each delivery carries the one it came on."""
        return self._generation

    def handled(self, delivery: Delivery) -> None:
        """Record that the actor finished ``delivery`` (acks go out in batches). One from an
        earlier connection (the client reconnected while it was being handled) is not acked:
        its id means another message on this connection, and the router delivers it again."""
        if delivery.generation != self._generation:
            self.stats["stale_handled"] += 1
            return
        self._last_handled = delivery.delivery_id
        self._handled_since_ack += 1

    def unacked(self) -> int:
        return self._handled_since_ack

    def ack(self, checkpoint: Optional[bytes] = None) -> None:
        """Ack everything handled so far; in checkpoint mode ``checkpoint`` is required."""
        if not self._handled_since_ack and checkpoint is None:
            return
        # Outputs first: an ack (or checkpoint) must never overtake the messages published
        # while handling what it acknowledges, or a crash would lose them.
        self.flush()
        frames = [wire.ACK, wire.pack_u64(self._last_handled)]
        if checkpoint is not None:
            frames.append(checkpoint)
            self.stats["checkpoints"] += 1
        self._raw_send(frames)
        self.stats["acked"] += self._handled_since_ack
        self._handled_since_ack = 0


class ControlChannel(object):
    """CTRL requests to the router without joining the bus (no HELLO, no mailbox).

    Used by the host's supervisor, ``fxcm status`` and the drills (``fxcm crash``, ``make
    chaos``). Each request carries an id; a late answer to an earlier, timed-out request is
    skipped."""

    def __init__(self, endpoint: str, context: Optional[zmq.Context] = None,
                 token: Optional[str] = None) -> None:
        """``token``: the host's secret, which its privileged ops (host, dead) carry."""
        self.endpoint = endpoint
        self.context = context or zmq.Context.instance()
        self.token = token
        self._ids = itertools.count(1)
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise EndpointError("cannot connect to {}: {}".format(endpoint, exc)) from exc

    def call(self, request: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
        rid = next(self._ids)
        payload = dict(request, rid=rid)
        if self.token:
            payload["token"] = self.token
        try:
            self.sock.send_multipart([wire.SIGNATURE, wire.CTRL, wire.pack(payload)])
        except zmq.ZMQError as exc:
            raise EndpointError("CTRL to {} failed: {}".format(self.endpoint, exc)) from exc
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(int(remaining * 1000) or 1):
                raise RequestTimeout("the router at {} did not answer {!r} within {} s".format(
                    self.endpoint, request.get("op"), timeout))
            frames = self.sock.recv_multipart()
            if len(frames) != 3 or frames[0] != wire.SIGNATURE or frames[1] != wire.CTRL:
                continue  # PING or RESET meant for a bus peer: not ours
            result = wire.unpack(frames[2], "CTRL result")
            if isinstance(result, dict) and result.get("rid") == rid:
                return result

    def close(self) -> None:
        self.sock.close(0)
