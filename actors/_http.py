"""The host's HTTP port: ``/metrics`` (Prometheus), ``/livez``, ``/readyz``, ``/status`` (JSON).

Metrics are read from the router's stats snapshot (refreshed by the router thread four times a
second) and the supervisor's view, at scrape time, by a custom collector: nothing on the hot
path updates a metric object.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("fxcm.http")

StatusSource = Callable[[], dict[str, Any]]

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
}


_FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}

# The host's own families (BusCollector): an actor may not export these names.
HOST_FAMILIES = frozenset(
    [name + "_total" for name, _ in _ROUTER_COUNTERS.values()]
    + [name + ("_total" if counter else "") for name, _, counter in _ACTOR_FIGURES.values()]
    + ["fxcm_actor_up", "fxcm_actor_restarts_total", "fxcm_metric_conflicts"])

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


class HttpServer:
    """Serves the host's endpoints on one port in a background thread."""

    def __init__(self, host: str, port: int, status: StatusSource,
                 live: Callable[[], bool], ready: Callable[[], tuple[bool, list[str]]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(BusCollector(status))
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib names it
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry),
                                "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/livez":
                    ok = live()
                    self._json(200 if ok else 503, {"live": ok})
                elif path == "/readyz":
                    ok, missing = ready()
                    self._json(200 if ok else 503, {"ready": ok, "not_running": missing})
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

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
