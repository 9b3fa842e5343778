"""The viewer's I/O: Redis (``RedisFeed``), the host over ipc (``fetch_host``), and the
thresholds from the settings (``load_limits``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors.tools.viewer._board import WATCHED, Board, as_dict, host_view
from bus import Backoff
from config.settings import redact_url
from protocol.errors import ConfigError, ConnectorError

# Redis: connect/read timeout, and the reconnect backoff (bus.Backoff).
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_BACKOFF = Backoff(0.5, 5.0, 0.2)
# At most this many channel messages are taken per poll (the rest wait for the next one).
MAX_MESSAGES_PER_POLL = 20000
# The host's status over ipc: the longest one look waits for it.
HOST_TIMEOUT_SECONDS = 1.0
# The public status is stale after this many of heartbeat.status_interval_seconds.
STATUS_STALE_INTERVALS = 3.0


class RedisFeed:
    """Subscribes to the watched channels, then reads the late-joiner keys into ``board``;
    afterwards each ``poll`` takes what the channels delivered, and PINGs Redis every
    ``health_interval`` seconds (its latency is shown). Reconnects with backoff."""

    def __init__(self, url_source: Callable[[], str], prefix: str, channels: Mapping[str, str],
                 board: Board, clock: Callable[[], float] = time.monotonic,
                 health_interval: float = 8.0, wall: Callable[[], float] = time.time) -> None:
        self.url_source = url_source
        self.prefix = prefix
        self.kinds = {channels[kind]: kind for kind in WATCHED}
        self.board = board
        self.clock = clock
        self.wall = wall
        self.health_interval = health_interval
        self.url: str | None = None
        self.error = ""
        self.failures = 0
        self.retry_at = 0.0
        self.latency_ms: float | None = None
        self.next_ping = 0.0
        self._client: redis.Redis | None = None
        self._pubsub: Any = None

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    def view(self) -> dict[str, Any]:
        return {"url": redact_url(self.url) if self.url else None, "connected": self.connected,
                "error": self.error, "latency_ms": self.latency_ms if self.connected else None,
                "channels": dict(self.kinds)}

    def poll(self) -> None:
        if self._pubsub is None:
            if self.clock() < self.retry_at:
                return
            try:
                self._connect()
            except (ConfigError, redis.RedisError, OSError) as exc:
                self._down(exc)
                return
        try:
            for _ in range(MAX_MESSAGES_PER_POLL):
                message = self._pubsub.get_message(timeout=0)
                if message is None:
                    break
                if message.get("type") == "message":
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode("utf-8", "replace")
                    kind = self.kinds.get(channel)
                    if kind is not None:
                        self.board.take(kind, message["data"], self.wall())
            if self.clock() >= self.next_ping and self._client is not None:
                started = time.perf_counter()
                self._client.ping()
                self.latency_ms = (time.perf_counter() - started) * 1000.0
                self.next_ping = self.clock() + self.health_interval
        except (redis.RedisError, OSError) as exc:
            self._down(exc)

    def _connect(self) -> None:
        self.url = self.url_source()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                      socket_timeout=REDIS_TIMEOUT_SECONDS,
                                      retry=Retry(NoBackoff(), 0))
        self._client = client
        pubsub = client.pubsub()
        pubsub.subscribe(*self.kinds)
        confirmed = 0
        deadline = self.clock() + REDIS_TIMEOUT_SECONDS
        while confirmed < len(self.kinds):
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "subscribe":
                confirmed += 1
            elif self.clock() > deadline:
                raise redis.TimeoutError("no confirmation of SUBSCRIBE within {} s".format(
                    REDIS_TIMEOUT_SECONDS))
        self._pubsub = pubsub
        self._read_keys(client)
        self.failures = 0
        self.error = ""
        self.next_ping = 0.0

    def _read_keys(self, client: redis.Redis) -> None:
        prefix = self.prefix
        for name in ("status", "heartbeat", "market_status"):
            value = client.get("{}:{}:last".format(prefix, name))
            if value is not None:
                self.board.take(name, value)
        for key in client.scan_iter(match="{}:price_tik:last:*".format(prefix), count=500):
            value = client.get(key)
            if value is not None:
                self.board.take("price_tik", value)
        for key in client.scan_iter(match="{}:ohlcv:last:*".format(prefix), count=500):
            text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            symbol, _, tf = text[len(prefix) + len(":ohlcv:last:"):].rpartition(":")
            if not symbol or not tf:
                continue
            for member in client.zrange(key, -1, -1):
                bar = as_dict(member)
                if bar is not None:
                    self.board.take_bar(symbol, tf, bar)

    def _down(self, exc: BaseException) -> None:
        self.close()
        self.failures += 1
        self.error = "{}: {}".format(type(exc).__name__, exc) if not isinstance(
            exc, ConfigError) else str(exc)
        self.retry_at = self.clock() + REDIS_BACKOFF.compute(self.failures)

    def close(self) -> None:
        for closable in (self._pubsub, self._client):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a broken connection: nothing more to do
                    pass
        self._pubsub = None
        self._client = None


def fetch_host(run_dir: str, timeout: float = HOST_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The host's actor table over ipc, or ``{"reachable": False, "error": ...}``."""
    if not os.path.exists(os.path.join(run_dir, "bus.json")):
        return {"reachable": False, "error": "no host in {}".format(run_dir), "actors": {}}
    from actors.cli import fetch_status

    try:
        return host_view(fetch_status(run_dir, timeout))
    except ConnectorError as exc:
        return {"reachable": False, "error": str(exc), "actors": {}}


def load_limits(raw: Mapping[str, Any]) -> dict[str, float]:
    """Thresholds, from the settings the host reads (``viewer.*``, as in the predecessor's
    runtime_settings.json, and the snapshotter's and heartbeat's own)."""
    viewer = raw["viewer"]
    return {"tick_stale_seconds": float(raw["snapshotter"]["stale_seconds"]),
            "status_stale_seconds": STATUS_STALE_INTERVALS * float(
                raw["heartbeat"]["status_interval_seconds"]),
            "lag_warn_seconds": float(viewer["ohlcv_lag_warn_seconds"]),
            "lag_error_seconds": float(viewer["ohlcv_lag_error_seconds"]),
            "heartbeat_alert_seconds": float(viewer["heartbeat_alert_seconds"]),
            "ohlcv_idle_warn_seconds": float(viewer["ohlcv_msg_idle_warn_seconds"]),
            "ohlcv_idle_error_seconds": float(viewer["ohlcv_msg_idle_error_seconds"]),
            "redis_health_interval": float(viewer["redis_health_interval"]),
            "timeline_history_max": float(viewer["timeline_history_max"])}
