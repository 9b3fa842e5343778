"""What the runner watches: a redis-py subscriber recording every message, and a monitor of the
host's status (supervisor view, router counters, each actor's published status)."""

from __future__ import annotations

import threading
import time
from typing import Any

from bus import LATEST, LOSSLESS, BusClient, Subscription
from protocol.market import CLOCK_TOPIC
from tests.helpers import RedisSubscriber, bus_status


class Events:
    """Timestamped log lines (seconds since ``t0``), thread-safe."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.items: list[tuple[float, str, str]] = []

    def add(self, kind: str, text: str) -> None:
        with self._lock:
            self.items.append((time.monotonic() - self.t0, kind, text))
        print("  [{:7.2f} s] {:9} {}".format(time.monotonic() - self.t0, kind, text), flush=True)

    def of(self, kind: str) -> list[tuple[float, str, str]]:
        with self._lock:
            return [item for item in self.items if item[1] == kind]


def subscriber(url: str, channels: list[str], events: Events) -> RedisSubscriber:
    """A consumer's subscription whose losses and recoveries go to the event log."""
    seen = [0]

    def on_change(state: str) -> None:
        if state == "lost":
            events.add("observed", "subscriber lost Redis")
        else:
            seen[0] += 1
            if seen[0] > 1:
                events.add("recovery", "subscriber re-subscribed to Redis")

    return RedisSubscriber(url, channels, on_change)


class Monitor:
    """Polls the host's status twice a second and keeps each actor's newest published status
    (``actor.status.``, lossless); logs restarts, pid changes and Redis reconnects. It also
    samples the pipeline clock (``tick.$clock``, latest): ``clock_samples`` holds
    ``(monotonic, clock ms)`` each time the clock moved on, which maps data time to wall time
    for the timeliness check."""

    def __init__(self, run_dir: str, events: Events) -> None:
        self.run_dir = run_dir
        self.events = events
        self.status: dict[str, Any] = {}
        self.actor_status: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seen: dict[str, tuple[Any, Any, Any]] = {}
        self._redis_connected: bool | None = None
        self.journal_peak = 0  # the publisher's journal, most messages seen at once
        self.errors = 0
        self.clock_samples: list[tuple[float, int]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the monitor's probe did not connect within 30 s")

    def _run(self) -> None:
        import os

        client = BusClient("chaos_monitor", "ipc://" + os.path.join(self.run_dir, "bus.sock"),
                           subscriptions=(Subscription("actor.status.", LOSSLESS, 1_000_000),
                                          Subscription(CLOCK_TOPIC, LATEST, 1)), prefetch=512)
        client.connect(10)
        self._ready.set()
        next_poll = 0.0
        try:
            while not self._stop.is_set():
                client.poll(0.02)
                got = False
                while client.buffer:
                    delivery = client.buffer.popleft()
                    topic = delivery.topic.decode("utf-8", "replace")
                    body = delivery.body()
                    if topic == CLOCK_TOPIC:
                        now_ms = int(getattr(body, "now_ms", 0))
                        with self._lock:
                            if not self.clock_samples or now_ms > self.clock_samples[-1][1]:
                                self.clock_samples.append((time.monotonic(), now_ms))
                    elif isinstance(body, dict):
                        with self._lock:
                            self.actor_status[topic[len("actor.status."):]] = body
                        got = True
                    client.handled(delivery)
                client.ack()
                if got:
                    self._watch_publisher()
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + 0.5
                    self._poll()
        finally:
            client.bye()
            client.close()

    def _poll(self) -> None:
        try:
            status = bus_status(self.run_dir)
        except Exception:
            self.errors += 1
            return
        with self._lock:
            self.status = status
        for name, view in status.get("actors", {}).items():
            if name.startswith("chaos"):
                continue
            now = (view.get("pid"), view.get("state"), view.get("restarts"))
            before = self._seen.get(name)
            self._seen[name] = now
            if before is None or before == now:
                continue
            if now[2] != before[2]:
                self.events.add("recovery", "{} restarted (restarts={}, old pid {})".format(
                    name, now[2], before[0]))
            elif now[1] != before[1]:
                self.events.add("observed", "{} state {} -> {}".format(name, before[1], now[1]))

    def _watch_publisher(self) -> None:
        publisher = self.actor_status.get("redis_publisher")
        if publisher is None:
            return
        journal = publisher.get("journal") or {}
        self.journal_peak = max(self.journal_peak, int(journal.get("messages") or 0))
        connected = bool(publisher.get("redis_connected"))
        if self._redis_connected is not None and connected != self._redis_connected:
            if connected:
                self.events.add("recovery", "redis_publisher reconnected to Redis")
            else:
                self.events.add("observed", "redis_publisher lost Redis ({})".format(
                    (publisher.get("redis") or {}).get("last_error")))
        self._redis_connected = connected

    def get(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        with self._lock:
            return dict(self.status), dict(self.actor_status)

    def clock(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self.clock_samples)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)
