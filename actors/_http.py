"""The host's HTTP port: ``/metrics`` (Prometheus), ``/livez``, ``/readyz``, ``/status`` (JSON).

Metrics are read from the router's stats snapshot (refreshed by the router thread four times a
second) and the supervisor's view, at scrape time, by a custom collector: nothing on the hot
path updates a metric object.

One thread accepts connections and reads request heads (a selector); only a complete request
goes to the fixed pool of ``http.workers`` threads. A connection that has not sent its request
within ``http.timeout_seconds`` (a client that sends nothing, or a byte at a time) is closed; a
connection beyond the bounds (too many being read, every worker busy) is closed at once; both
are counted. An idle or slow client costs a descriptor for that long, never a thread.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.states import LIFECYCLE

log = logging.getLogger("fxcm.http")

StatusSource = Callable[[], dict[str, Any]]
ReadySource = Callable[[], tuple[bool, dict[str, Any]]]

# Router counters exported as <name>_total, with their help text.
_ROUTER_COUNTERS = {
    "published": ("fxcm_bus_published_messages", "PUB messages routed"),
    "sent": ("fxcm_bus_sent_messages", "SEND messages routed"),
    "malformed": ("fxcm_bus_malformed_frames", "Malformed frame sets dropped by the router"),
    "unknown_peer": ("fxcm_bus_unknown_peer_messages",
                     "Messages from peers that had not said HELLO (answered with RESET)"),
    "unrouted": ("fxcm_bus_unrouted_messages", "Published messages no one subscribed to"),
    "unroutable": ("fxcm_bus_unroutable_messages", "Sends to an actor name that does not exist"),
    "tap_copies": ("fxcm_bus_tap_copies", "Messages copied to the tap"),
    "tap_dropped": ("fxcm_bus_tap_dropped", "Tap copies dropped because the tap was slow"),
    "send_failures": ("fxcm_bus_send_failures", "Router sends that failed"),
    "internal_errors": ("fxcm_bus_internal_errors", "Router bugs caught and survived"),
    "replies_undeliverable": ("fxcm_bus_replies_undeliverable",
                              "Replies whose requester was gone"),
    "refused_publishes": ("fxcm_bus_refused_messages",
                          "Publishes refused: topic reserved for others (bus.reserved_topics)"),
    "refused_hellos": ("fxcm_bus_refused_hellos",
                       "HELLOs refused: name taken, reserved for the host, malformed, table full"),
    "refused_controls": ("fxcm_bus_refused_controls",
                         "Control ops refused: drills disabled, host-only ops"),
    "detached_expired": ("fxcm_bus_detached_expired",
                         "Attached actors that did not come back in time: mailboxes dropped"),
    "expired_messages": ("fxcm_bus_expired_messages",
                         "Messages dropped with the mailboxes of attached actors that left"),
    "phantoms_expired": ("fxcm_bus_phantoms_expired",
                         "Names forgotten: gone, holding no subscription and no message"),
}

# Per-actor router figures: key -> (metric name, help, counter?).
_ACTOR_FIGURES = {
    "depth": ("fxcm_bus_mailbox_messages", "Messages in the actor's mailboxes (incl. inflight)",
              False),
    "peak": ("fxcm_bus_mailbox_peak_messages", "Highest mailbox depth seen", False),
    "inflight": ("fxcm_bus_inflight_messages", "Delivered, not yet acked", False),
    "delivered": ("fxcm_bus_delivered_messages", "Deliveries to the actor", True),
    "redelivered": ("fxcm_bus_redelivered_messages", "Redeliveries after a crash", True),
    "dead_letters": ("fxcm_bus_dead_letters", "Messages moved to the dead-letter ring", True),
    "backpressure_events": ("fxcm_bus_backpressure_events",
                            "Times the actor was held back by a full lossless mailbox", True),
    "injected_crashes": ("fxcm_bus_injected_crashes",
                         "Crashes injected on request (crash control op: make chaos)", True),
    "injected_stalls": ("fxcm_bus_injected_stalls",
                        "Stalls injected on request (stall control op: make chaos)", True),
    "blocked_seconds": ("fxcm_bus_blocked_seconds",
                        "How long the actor has been held back by backpressure (0: not)", False),
}


_FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}

# The host's own families (BusCollector): an actor may not export these names.
HOST_FAMILIES = frozenset(
    [name + "_total" for name, _ in _ROUTER_COUNTERS.values()]
    + [name + ("_total" if counter else "") for name, _, counter in _ACTOR_FIGURES.values()]
    + ["fxcm_actor_up", "fxcm_actor_restarts_total", "fxcm_metric_conflicts",
       "fxcm_invalid_state_transitions_total"])

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    kind: str
    help: str
    owner: str                                  # the first actor (by name) that reported it
    values: dict[Labels, float] = field(default_factory=dict)


def merge_actor_metrics(statuses: dict[str, Any]
                        ) -> tuple[dict[str, _Family], dict[tuple[str, str], int]]:
    """Families that actors report in ``status()["metrics"]``:
    ``{name: {"type": "counter"|"gauge", "help": str, "samples": [[{label: value}, number]]}}``,
    merged so that every series is exported once. Actors are read in name order, which makes
    every choice below deterministic:

    - a counter reported by several actors with the same labels is summed (two actors counting
      one kind of event: ``fxcm_connector_errors_total{type="cache_io"}`` of the bar store and
      of the outage journal);
    - a gauge series belongs to the first actor that reports it; a later one is a conflict;
    - the help text is the first actor's;
    - a family whose type differs from the first actor's, or that uses a name of the host's
      own families, is a conflict: left out.

    Returns the families and the conflicts, ``{(metric, actor): samples left out}``, which the
    host exports as ``fxcm_metric_conflicts``. A malformed entry is skipped (the actor's own
    status shows what it sent)."""
    families: dict[str, _Family] = {}
    conflicts: dict[tuple[str, str], int] = {}
    for actor in sorted(statuses):
        status = statuses[actor]
        metrics = status.get("metrics") if isinstance(status, dict) else None
        if not isinstance(metrics, dict):
            continue
        for name, spec in metrics.items():
            if not isinstance(spec, dict) or spec.get("type") not in _FAMILIES:
                continue
            samples = []
            for sample in spec.get("samples", []) or []:
                try:
                    labels, value = sample
                    key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
                    samples.append((key, float(value)))
                except (TypeError, ValueError, AttributeError):
                    continue
            family = families.get(name)
            if name in HOST_FAMILIES or (family is not None and family.kind != spec["type"]):
                conflicts[(name, actor)] = conflicts.get((name, actor), 0) + max(1, len(samples))
                continue
            if family is None:
                family = families[name] = _Family(spec["type"], str(spec.get("help", name)),
                                                  actor)
            for key, value in samples:
                if key not in family.values:
                    family.values[key] = value
                elif family.kind == "counter":
                    family.values[key] += value
                else:
                    conflicts[(name, actor)] = conflicts.get((name, actor), 0) + 1
    return families, conflicts


def actor_metrics(statuses: dict[str, Any],
                  reported: set[tuple[str, str]] | None = None) -> Iterator[Metric]:
    """The merged actor families (``merge_actor_metrics``) as Prometheus families, then
    ``fxcm_metric_conflicts{metric, actor}``: samples left out by the merge. A conflict not in
    ``reported`` yet is logged once and added to it."""
    families, conflicts = merge_actor_metrics(statuses)
    if reported is not None:
        for name, actor in sorted(set(conflicts) - reported):
            reported.add((name, actor))
            log.warning("metric %s of %s left out of /metrics: another actor exports it with "
                        "another type or the same gauge series, or it is a host metric name",
                        name, actor)
    for name, family in families.items():
        kind = family.kind
        base = name[:-len("_total")] if kind == "counter" and name.endswith("_total") else name
        label_names = sorted({label for key in family.values for label, _ in key})
        built = _FAMILIES[kind](base, family.help, labels=label_names)
        for key, value in family.values.items():
            labels = dict(key)
            built.add_metric([labels.get(label, "") for label in label_names], value)
        yield built
    gauge = GaugeMetricFamily("fxcm_metric_conflicts",
                              "Actor metric samples left out: a type differing from the first "
                              "actor's, a gauge series another actor owns, or a host metric name",
                              labels=["metric", "actor"])
    for (name, actor), count in sorted(conflicts.items()):
        gauge.add_metric([name, actor], float(count))
    yield gauge
    yield invalid_transitions(statuses)


def invalid_transitions(statuses: dict[str, Any]) -> CounterMetricFamily:
    """``fxcm_invalid_state_transitions_total{actor, machine}``: moves a state table of
    ``protocol.states`` refused (``Actor.check_transition``); each actor's lifecycle is always
    there (0), other machines once they count one."""
    family = CounterMetricFamily(
        "fxcm_invalid_state_transitions",
        "State changes their machine's table does not allow (a bug; protocol.states)",
        labels=["actor", "machine"])
    for actor in sorted(statuses):
        status = statuses[actor]
        counted = status.get("invalid_transitions") if isinstance(status, dict) else None
        counts = dict(counted) if isinstance(counted, dict) else {}
        counts.setdefault(LIFECYCLE.name, 0)
        for machine, count in sorted(counts.items()):
            try:
                family.add_metric([actor, str(machine)], float(count))
            except (TypeError, ValueError):
                continue
    return family


class BusCollector(Collector):
    def __init__(self, status: StatusSource) -> None:
        self._status = status
        self._reported: set[tuple[str, str]] = set()

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        yield from actor_metrics(status.get("actor_status", {}), self._reported)
        router = status.get("router", {})
        for key, (name, text) in _ROUTER_COUNTERS.items():
            yield CounterMetricFamily(name, text, value=float(router.get(key, 0)))
        actors: dict[str, Any] = status.get("actors", {})
        for key, (name, text, is_counter) in _ACTOR_FIGURES.items():
            family: CounterMetricFamily | GaugeMetricFamily = (
                CounterMetricFamily(name, text, labels=["actor"]) if is_counter
                else GaugeMetricFamily(name, text, labels=["actor"]))
            for actor, figures in actors.items():
                family.add_metric([actor], float(figures.get(key, 0)))
            yield family
        up = GaugeMetricFamily("fxcm_actor_up", "1 when the actor is running", labels=["actor"])
        restarts = CounterMetricFamily("fxcm_actor_restarts", "Restarts by the supervisor",
                                       labels=["actor"])
        for actor, figures in actors.items():
            up.add_metric([actor], 1.0 if figures.get("state") == "running" else 0.0)
            restarts.add_metric([actor], float(figures.get("restarts", 0)))
        yield up
        yield restarts
        readiness = status.get("readiness")
        if isinstance(readiness, dict):
            yield GaugeMetricFamily("fxcm_ready", "1 when /readyz answers 200",
                                    value=1.0 if readiness.get("ready") else 0.0)


class _Listener:
    """Accepts connections and reads their requests in one thread (a selector); complete
    requests go to a fixed pool of workers through a bounded queue. A connection that has not
    sent its whole request head within the timeout is closed; beyond ``max_open`` connections
    being read, or a full queue, a new one is closed at once. Both are counted."""

    MAX_HEAD_BYTES = 16384

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler],
                 workers: int, timeout: float) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(128)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.server_address = self.sock.getsockname()
        self.handler = handler
        self.timeout = timeout
        self.max_open = 32 * workers
        self.rejected = 0  # closed at once: too many open, or every worker busy
        self.timed_out = 0  # closed: no complete request within the timeout
        self._reading: dict[socket.socket, tuple[bytearray, float, Any]] = {}
        self._queue: queue.Queue[tuple[socket.socket, bytes, Any] | None] = queue.Queue(
            maxsize=4 * workers)
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._work, name="http-{}".format(index),
                                          daemon=True) for index in range(workers)]

    def serve(self) -> None:
        for worker in self._workers:
            worker.start()
        self._selector.register(self.sock, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(0.25):
                    if key.fileobj is self.sock:
                        self._accept()
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                for conn, (_, deadline, _) in list(self._reading.items()):
                    if now > deadline:
                        self.timed_out += 1
                        self._drop(conn)
        finally:
            for conn in list(self._reading):
                self._drop(conn)
            self._selector.close()
            self.sock.close()
            for _ in self._workers:
                try:
                    self._queue.put_nowait(None)
                except queue.Full:
                    break  # daemon threads: they end with the process

    def close(self) -> None:
        self._stop.set()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: say so, and try again later
                log.warning("HTTP accept failed: %s", exc)
                return
            if len(self._reading) >= self.max_open:
                self.rejected += 1
                conn.close()
                continue
            conn.setblocking(False)
            self._reading[conn] = (bytearray(), time.monotonic() + self.timeout, address)
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        entry = self._reading.get(conn)
        if entry is None:
            return
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        head = entry[0]
        head += chunk
        if not chunk or len(head) > self.MAX_HEAD_BYTES:
            self._drop(conn)
        elif b"\r\n\r\n" in head or b"\n\n" in head:
            self._selector.unregister(conn)
            del self._reading[conn]
            try:
                self._queue.put_nowait((conn, bytes(head), entry[2]))
            except queue.Full:
                self.rejected += 1
                conn.close()

    def _drop(self, conn: socket.socket) -> None:
        self._reading.pop(conn, None)
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            conn, head, address = item
            try:
                conn.setblocking(True)
                conn.settimeout(self.timeout)  # a client that does not read its answer
                self.handler((conn, head), address, self)  # type: ignore[arg-type]
            except Exception:  # a client gone mid-answer: nothing more to do for it
                log.debug("HTTP request from %s failed", address, exc_info=True)
            finally:
                conn.close()


class _HttpCollector(Collector):
    def __init__(self, server: _Listener) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("fxcm_http_rejected_connections",
                                  "HTTP connections closed at once: every worker busy, queue full",
                                  value=float(self._server.rejected))
        yield CounterMetricFamily("fxcm_http_timed_out_connections",
                                  "HTTP connections cut off after http.timeout_seconds",
                                  value=float(self._server.timed_out))


class HttpServer:
    """Serves the host's endpoints on one port in a background thread."""

    def __init__(self, host: str, port: int, status: StatusSource,
                 live: Callable[[], bool], ready: ReadySource, timeout: float = 10.0,
                 workers: int = 8) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(BusCollector(status))
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                # the listener has read the request head already; the answer goes to the socket
                conn, head = self.request
                self.connection = conn
                self.rfile = io.BytesIO(head)
                self.wfile = conn.makefile("wb")

            def do_GET(self) -> None:  # the stdlib names it
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry),
                                "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/livez":
                    ok = live()
                    self._json(200 if ok else 503, {"live": ok})
                elif path == "/readyz":
                    ok, details = ready()
                    self._json(200 if ok else 503, dict(details, ready=ok))
                elif path == "/status":
                    self._json(200, status())
                else:
                    self._json(404, {"error": "no such endpoint",
                                     "endpoints": ["/metrics", "/livez", "/readyz", "/status"]})

            def _json(self, code: int, body: Any) -> None:
                self._reply(code, json.dumps(body, default=str).encode(), "application/json")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self._server = _Listener(host, port, Handler, workers, timeout)
        self.registry.register(_HttpCollector(self._server))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.close()
        self._thread.join(5)
