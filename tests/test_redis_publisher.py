"""redis_publisher through a real host, a real Redis server and real redis-py subscribers.

Every host test starts its own embedded Redis (``EmbeddedRedis``, the same server the host uses)
on a free port; the host is pointed at it with ``redis.url``. Bars and snapshots are published
on the bus by a Probe, as tick_aggregator and snapshotter will.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from actors._redis_server import EmbeddedRedis
from actors.host import Host
from actors.redis_publisher import (
    Journal,
    PublisherConfig,
    RedisPublisher,
    Renderer,
    Signer,
    canonical,
)
from actors.redis_publisher._render import OHLCV, Batch, Message, bar_json
from actors.redis_publisher._sink import RedisSink
from bus import ipc_endpoint
from config.settings import SHARED_KEYS, load_defaults
from protocol import contracts
from protocol.errors import ConfigError
from protocol.market import TF_MS, Bar, PriceSnapshot, Universe, wire_source
from tests.helpers import Probe, bus_status, host_in_thread, wait_for
from tests.helpers import RedisSubscriber as Subscriber

PUBLISHER = [{"name": "redis_publisher", "class": "actors.redis_publisher:RedisPublisher"}]
BASE_MS = 1_764_541_680_000  # 2025-11-30 22:28 UTC, a minute boundary
SECRET = "s3cr3t-for-tests-only"


# -- fixtures and helpers -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fxcm-r-")  # short: the unix socket lives here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_server(redis_dir: str) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(redis_dir, free_port())
    server.start()
    yield server
    server.stop()


def make_bar(index: int, symbol: str = "EURUSD", tf: str = "1m", close: float = 1.1,
             complete: bool = True, source: str = "tick", **changes: Any) -> Bar:
    step = TF_MS[tf]
    open_time = BASE_MS + index * step
    bar = Bar(symbol, tf, open_time, open_time + step - 1, close - 0.001, close + 0.002,
              close - 0.002, close, 12.0, 12, complete, False, source)
    return dataclasses.replace(bar, **changes)


def snapshot(symbol: str, mid: float, tick_ts: float = 1764541700.25) -> PriceSnapshot:
    return PriceSnapshot(symbol, mid - 0.0001, mid + 0.0001, mid, tick_ts, tick_ts + 0.5)


def public_status(note: str = "ok") -> dict[str, Any]:
    """A status.public payload shaped like seed 001 section 1.2."""
    return {"ts": 1764867000.0, "process": "stream", "market": "open", "price": "ok",
            "ohlcv": "ok", "session": {
                "name": "Tokyo", "tag": "TOKYO", "state": "open",
                "current_open_utc": "2025-12-05T00:00:00Z",
                "current_close_utc": "2025-12-05T09:00:00Z",
                "next_open_utc": "2025-12-05T09:00:00Z", "seconds_to_close": 5400,
                "seconds_to_next_open": 5400}, "note": note}


def publish_bar(probe: Probe, bar: Bar) -> None:
    probe.publish("bar.{}.{}".format(bar.symbol, bar.tf), bar, "bar")


def sections(server: EmbeddedRedis | None, tmp_path: Path, **publisher: Any) -> dict[str, Any]:
    """Config sections for a host running the publisher against ``server``."""
    settings: dict[str, Any] = {"journal_dir": str(tmp_path / "journal"),
                                "redis_backoff": {"base_seconds": 0.2, "max_seconds": 1.0,
                                                  "multiplier": 2.0, "jitter": 0.2}}
    settings.update(publisher)
    result: dict[str, Any] = {"redis_publisher": settings, "bus": {"status_interval_seconds": 0.2}}
    if server is not None:
        result["redis"] = {"url": server.url, "port": server.port, "required": True}
    return result


def publisher_status(host: Host) -> dict[str, Any]:
    status: dict[str, Any] = host.status()["actor_status"].get("redis_publisher", {})
    return status


def metric(status: dict[str, Any], name: str, **labels: str) -> float:
    for sample_labels, value in status.get("metrics", {}).get(name, {}).get("samples", []):
        if sample_labels == labels:
            return float(value)
    return 0.0


def zset_bars(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    """A late-joiner sorted set, read as a consumer does: oldest bar first."""
    members: list[str] = client.zrange(key, 0, -1)  # type: ignore[assignment]
    return [json.loads(member) for member in members]


def bus(run_dir: str) -> str:
    return ipc_endpoint(run_dir, "bus.sock")


def open_times(payloads: list[dict[str, Any]], symbol: str = "EURUSD",
               tf: str = "1m") -> list[int]:
    return [bar["open_time"] for payload in payloads
            if payload["symbol"] == symbol and payload["tf"] == tf for bar in payload["bars"]]


def canonical_base(payload: dict[str, Any]) -> bytes:
    """What ``sig`` covers, computed the way seed 001 section 10 says, independently."""
    base = {"symbol": payload["symbol"], "tf": payload["tf"], "bars": payload["bars"]}
    return json.dumps(base, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


class SeedConsumer:
    """A downstream consumer written from seed 001 sections 1.1.1 and 10 only: checks the
    signature when it has a secret, runs the ingestor's checklist, skips complete=false and
    stores bars idempotently by (symbol, tf, open_time)."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.store: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.skipped_previews = 0

    def apply(self, payload: dict[str, Any]) -> None:
        if self.secret is not None:
            expected = hmac.new(self.secret.encode(), canonical_base(payload),
                                hashlib.sha256).hexdigest()
            assert payload.get("sig") == expected, "bad or missing sig"
        previous = None
        for bar in payload["bars"]:
            for field in ("open_time", "close_time", "open", "high", "low", "close", "volume"):
                float(bar[field])
            assert bar["close_time"] >= bar["open_time"] and bar["low"] <= bar["high"]
            assert bar["open_time"] >= 946684800000  # MIN_ALLOWED_BAR_TIMESTAMP_MS
            assert previous is None or bar["open_time"] > previous
            previous = bar["open_time"]
            if bar.get("complete") is False:
                self.skipped_previews += 1
                continue
            self.store[(payload["symbol"], payload["tf"], bar["open_time"])] = bar


# -- 1. what a subscriber receives ------------------------------------------------------------

def test_subscriber_receives_valid_ohlcv_and_price_tik_and_a_seed_consumer_works_unchanged(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv", "fxcm:price_tik"])
    finals = [make_bar(i, close=1.1 + i / 1000) for i in range(3)]
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER, **sections(redis_server, tmp_path)):
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(3, close=1.2, complete=False))  # a live preview
            for bar in finals:
                publish_bar(probe, bar)
            for bar in finals:  # re-emitted by history: same key, same values
                publish_bar(probe, dataclasses.replace(bar, source="history"))
            probe.publish("price.snapshot.EURUSD", snapshot("EURUSD", 1.1005), "price.snapshot")
            probe.publish("price.snapshot.XAUUSD", snapshot("XAUUSD", 4200.5), "price.snapshot")
            publish_bar(probe, make_bar(4, symbol="XAUUSD", close=4200.0))  # the last one
            subscriber.wait("fxcm:ohlcv", lambda got: 4 * TF_MS["1m"] + BASE_MS in [
                bar["open_time"] for p in got for bar in p["bars"]], what="the XAUUSD bar")
            ticks = subscriber.wait("fxcm:price_tik", lambda got: len(got) == 2,
                                    what="two price_tik messages")
            probe.close()
        ohlcv = subscriber.payloads("fxcm:ohlcv")
    finally:
        subscriber.close()
    for payload in ohlcv:
        assert contracts.validate("ohlcv", payload)
    for payload in ticks:
        assert contracts.validate("price_tik", payload)
    assert {p["symbol"]: p for p in ticks}["XAUUSD"] == {
        "symbol": "XAUUSD", "bid": 4200.4999, "ask": 4200.5001, "mid": 4200.5,
        "tick_ts": 1764541700.25, "snap_ts": 1764541700.75}
    consumer = SeedConsumer()
    for payload in ohlcv:
        consumer.apply(payload)
    expected = {bar.key: bar.to_contract() for bar in finals + [
        make_bar(4, symbol="XAUUSD", close=4200.0)]}
    assert consumer.store == expected
    assert consumer.skipped_previews == 1
    assert open_times(ohlcv).count(finals[0].open_time) == 1  # the re-emission was not sent


# -- 2. the signature ---------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_sig_verifies_with_an_independent_hmac_and_the_secret_is_never_shown(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis, algorithm: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FXCM_HMAC_SECRET", SECRET)
    monkeypatch.setenv("FXCM_HMAC_ALGO", algorithm)
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER, **sections(redis_server, tmp_path)) \
                as host:
            probe = Probe("probe", bus(run_dir))
            for i in range(3):
                publish_bar(probe, make_bar(i, symbol="XAUUSD", close=4000.0 + i))
            publish_bar(probe, make_bar(0, symbol="EURUSD", tf="5m"))
            payloads = subscriber.wait("fxcm:ohlcv", lambda got: len(open_times(
                got, "XAUUSD")) == 3 and len(open_times(got, "EURUSD", "5m")) == 1,
                what="the signed bars")
            status = wait_for(lambda: publisher_status(host).get("signed") and
                              publisher_status(host), 30, "the publisher's status")
            probe.close()
    finally:
        subscriber.close()
    for payload in payloads:
        expected = hmac.new(SECRET.encode(), canonical_base(payload),
                            getattr(hashlib, algorithm)).hexdigest()
        assert payload["sig"] == expected
        assert contracts.validate("ohlcv", payload)
    assert status["signing"] == {"algorithm": algorithm}
    assert SECRET not in json.dumps(status)
    assert SECRET not in caplog.text


# -- 3. a Redis outage ------------------------------------------------------------------------

OUTAGE_SECONDS = 30.0


class Producer(threading.Thread):
    """Publishes final 1m bars of two symbols, one step every ``interval`` seconds, recording
    when each was handed to the bus, until stopped."""

    def __init__(self, endpoint: str, interval: float) -> None:
        super().__init__(name="test-producer", daemon=True)
        self.endpoint = endpoint
        self.interval = interval
        self.published: list[tuple[float, Bar]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        probe = Probe("producer", self.endpoint)
        index = 0
        try:
            while not self.stop.wait(self.interval):
                for symbol in ("EURUSD", "XAUUSD"):
                    bar = make_bar(index, symbol=symbol,
                                   close=(1.1 if symbol == "EURUSD" else 4000.0) + index / 1e4)
                    publish_bar(probe, bar)
                    self.published.append((time.monotonic(), bar))
                index += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            probe.close()


def test_redis_outage_of_30_seconds_loses_no_final_bar_and_keeps_the_host_up(
        tmp_path: Path, run_dir: str, redis_dir: str, redis_server: EmbeddedRedis) -> None:
    config = sections(redis_server, tmp_path, resume_wait_seconds=30.0)
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    server = redis_server
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER, **config) as host:
            producer = Producer(bus(run_dir), 0.05)
            producer.start()
            subscriber.wait("fxcm:ohlcv", lambda got: len(got) >= 20, what="bars before")
            server.stop()
            stopped = time.monotonic()
            outage = wait_for(lambda: (lambda s: s if not s.get("redis_connected", True)
                                       and s["journal"]["messages"] > 0
                                       and s["redis"]["reconnect_attempts"] > 0
                                       and s["redis"]["down_seconds"] > 0 else None)(
                publisher_status(host)), 30, "the outage in the publisher's status")
            assert outage["redis"]["mode"] == "down"
            assert outage["state"] == "degraded"
            assert metric(outage, "fxcm_redis_up") == 0.0
            assert metric(outage, "fxcm_redis_journal_messages") > 0
            assert host.http is not None
            url = "http://127.0.0.1:{}/metrics".format(host.http.port)
            with urllib.request.urlopen(url, timeout=10) as response:
                exported = response.read().decode()
            assert "fxcm_redis_up 0.0" in exported
            assert "fxcm_redis_journal_bytes" in exported
            time.sleep(max(0.0, stopped + OUTAGE_SECONDS - time.monotonic()))  # the outage
            restarting = time.monotonic()
            server = EmbeddedRedis(redis_dir, redis_server.port)
            server.start()
            wait_for(lambda: publisher_status(host).get("redis", {}).get("mode") == "up",
                     60, "the publisher to publish its backlog")
            after = len(producer.published)
            wait_for(lambda: len(producer.published) >= after + 20, 30, "bars after")
            producer.stop.set()
            producer.join(30)
            assert producer.error is None
            published = [bar for _, bar in producer.published]
            during = [bar for at, bar in producer.published if stopped < at < restarting]
            for symbol in ("EURUSD", "XAUUSD"):
                last = max(bar.open_time for bar in published if bar.symbol == symbol)

                def arrived(got: list[Any], symbol: str = symbol, last: int = last) -> bool:
                    return last in open_times(got, symbol)
                subscriber.wait("fxcm:ohlcv", arrived, 60, "every bar of " + symbol)
            final = publisher_status(host)
            figures = bus_status(run_dir)["actors"]["redis_publisher"]
            assert host.is_live()
    finally:
        subscriber.close()
        server.stop()
    assert figures["restarts"] == 0 and figures["state"] == "running"
    assert final["journal"]["messages"] == 0 and final["redis_connected"] is True
    payloads = subscriber.payloads("fxcm:ohlcv")
    assert len(during) > 100  # the stream went on through the outage
    for symbol in ("EURUSD", "XAUUSD"):
        received = open_times(payloads, symbol)
        sent = [bar.open_time for bar in published if bar.symbol == symbol]
        outage_bars = [bar.open_time for bar in during if bar.symbol == symbol]
        assert all(received.count(t) == 1 for t in outage_bars), "outage bars exactly once"
        first_seen = list(dict.fromkeys(received))
        assert first_seen == sent  # everything, in order per key
        # a pipeline cut by the stop may be written again; nothing else is repeated
        assert len(received) - len(first_seen) <= 50


def test_the_feed_resumes_within_a_second_of_redis_answering_after_a_long_outage(
        tmp_path: Path, run_dir: str, redis_dir: str, redis_server: EmbeddedRedis,
        caplog: pytest.LogCaptureFixture) -> None:
    """With the shipped reconnect settings, a 20 s outage: the publisher is connected again
    within 1 s of Redis answering, and the subscriber has the backlog's first bar within 1 s
    too. Probes are frequent; the log lines about them are few (they back off)."""
    import logging

    shipped = load_defaults()["redis_publisher"]
    config = sections(redis_server, tmp_path, redis_backoff=shipped["redis_backoff"],
                      resume_wait_seconds=shipped["resume_wait_seconds"])
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    server = redis_server
    caplog.set_level(logging.WARNING, logger="fxcm.redis_publisher")
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER, **config) as host:
            producer = Producer(bus(run_dir), 0.1)
            producer.start()
            subscriber.wait("fxcm:ohlcv", lambda got: len(got) >= 10, what="bars before")
            server.stop()
            stopped = time.monotonic()
            time.sleep(20.0)  # the outage itself
            lines_before = len(subscriber.snapshot())
            server = EmbeddedRedis(redis_dir, redis_server.port)
            server.start()
            answering = time.monotonic()  # start() returns once the server answers PING
            client = redis.Redis.from_url(server.url, decode_responses=True)

            def publisher_connected() -> bool:
                clients: Any = client.client_list()
                return any(entry.get("name") == "fxcm-redis_publisher" for entry in clients)

            wait_for(publisher_connected, 10, "the publisher's connection", interval=0.01)
            connected = time.monotonic() - answering
            wait_for(lambda: len(subscriber.snapshot()) > lines_before, 10,
                     "the first bar after the outage", interval=0.01)
            first_bar = subscriber.snapshot()[lines_before][0] - answering
            client.close()
            attempts = publisher_status(host)["redis"]["reconnect_attempts"]
            producer.stop.set()
            producer.join(30)
    finally:
        subscriber.close()
        server.stop()
    assert connected <= 1.0, connected
    assert first_bar <= 1.0, first_bar
    outage = answering - stopped
    assert attempts >= outage / 0.5  # probed every 0.25 s
    # the publisher's own lines (the router's "peer unreachable" about a busy peer is another)
    unreachable = [r for r in caplog.records if r.name == "fxcm.redis_publisher"
                   and "unreachable" in r.getMessage()]
    assert 1 <= len(unreachable) <= 6, [r.getMessage() for r in unreachable]


# -- 4. late joiners ---------------------------------------------------------------------------

def test_late_joiner_reads_last_bars_snapshots_and_status_from_keys(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:status"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path, last_bars=5)):
            probe = Probe("probe", bus(run_dir))
            for i in range(8):
                publish_bar(probe, make_bar(i, close=1.1 + i / 1000))
            publish_bar(probe, make_bar(8, complete=False))  # a preview: not a final
            publish_bar(probe, make_bar(0, tf="1h"))
            probe.publish("price.snapshot.EURUSD", snapshot("EURUSD", 1.1), "price.snapshot")
            probe.publish("price.snapshot.EURUSD", snapshot("EURUSD", 1.2, 1764541800.0),
                          "price.snapshot")
            probe.publish("price.snapshot.XAUUSD", snapshot("XAUUSD", 4100.0), "price.snapshot")
            probe.publish("status.public", public_status("first"), "status.public")
            probe.publish("status.public", public_status("ok"), "status.public")
            subscriber.wait("fxcm:status", lambda got: any(p["note"] == "ok" for p in got),
                            what="the newest status")
            probe.close()
    finally:
        subscriber.close()
    # A consumer starting now reads the state at once, no subscription needed:
    late = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        bars = zset_bars(late, "fxcm:ohlcv:last:EURUSD:1m")
        hourly = zset_bars(late, "fxcm:ohlcv:last:EURUSD:1h")
        eurusd = json.loads(late.get("fxcm:price_tik:last:EURUSD") or "null")
        xauusd = json.loads(late.get("fxcm:price_tik:last:XAUUSD") or "null")
        status = json.loads(late.get("fxcm:status:last") or "null")
    finally:
        late.close()
    assert bars == [make_bar(i, close=1.1 + i / 1000).to_contract() for i in range(3, 8)]
    assert hourly == [make_bar(0, tf="1h").to_contract()]
    assert eurusd["mid"] == 1.2 and eurusd["tick_ts"] == 1764541800.0
    assert xauusd["mid"] == 4100.0
    assert status == public_status("ok")
    assert contracts.validate("price_tik", eurusd) and contracts.validate("status", status)


# -- 5. dedup ----------------------------------------------------------------------------------

def test_identical_final_published_twice_reaches_subscribers_once(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(0))
            subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 1, what="the first bar")
            publish_bar(probe, make_bar(0))
            publish_bar(probe, make_bar(0, source="history"))
            publish_bar(probe, make_bar(1))  # the sentinel: behind the re-emissions
            got = subscriber.wait("fxcm:ohlcv", lambda got: make_bar(1).open_time in
                                  open_times(got), what="the sentinel")
            status = wait_for(lambda: publisher_status(host).get("duplicates") == 2
                              and publisher_status(host), 30, "2 duplicates counted")
            probe.close()
    finally:
        subscriber.close()
    assert open_times(got) == [make_bar(0).open_time, make_bar(1).open_time]
    assert metric(status, "fxcm_redis_duplicate_bars_total", symbol="EURUSD", tf="1m") == 2
    assert status["conflicts"] == 0


def test_a_commands_bars_reach_subscribers_even_when_the_same_finals_went_out_before(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    # fxcm_republish_tail, fxcm_warmup: a consumer asked for them (smc_v1 keeps the first
    # bar it stored, so sending them again is harmless and what it needs after a gap).
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            for index in range(3):
                publish_bar(probe, make_bar(index))
            subscriber.wait("fxcm:ohlcv", lambda got: len(open_times(got)) == 3,
                            what="the live bars")
            for index in range(3):
                publish_bar(probe, make_bar(index, source="command"))
            got = subscriber.wait("fxcm:ohlcv", lambda got: len(open_times(got)) == 6,
                                  what="the command's bars")
            status = wait_for(lambda: "conflicts" in publisher_status(host)
                              and publisher_status(host), 30, "the publisher's status")
            probe.close()
    finally:
        subscriber.close()
    assert [payload["source"] for payload in got][-1] == "history_s3"
    assert open_times(got)[3:] == [make_bar(i).open_time for i in range(3)]
    assert status["conflicts"] == 0


def test_bars_outside_the_live_universe_are_not_streamed_but_a_commands_are(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            probe.publish("universe", Universe([["EURUSD", "5m"]], "dynamic", 0), "universe")
            publish_bar(probe, make_bar(0))                      # EURUSD 1m: outside
            publish_bar(probe, make_bar(0, symbol="XAUUSD", tf="5m", close=4000.0))
            publish_bar(probe, make_bar(0, tf="5m"))              # inside
            publish_bar(probe, make_bar(1, source="command"))     # asked for: published
            got = subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 2, what="two messages")
            status = wait_for(lambda: metric(publisher_status(host),
                                             "fxcm_ohlcv_outside_universe_total",
                                             symbol="XAUUSD", tf="5m") == 1
                              and publisher_status(host), 30, "the skipped bars counted")
            probe.close()
    finally:
        subscriber.close()
    assert [(p["symbol"], p["tf"], p["source"]) for p in got] == [
        ("EURUSD", "5m", "tick_agg"), ("EURUSD", "1m", "history_s3")]
    assert metric(status, "fxcm_ohlcv_outside_universe_total", symbol="EURUSD", tf="1m") == 1


def test_conflicting_final_is_published_counted_and_replaces_the_late_joiner_bar(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis,
        caplog: pytest.LogCaptureFixture) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    first, second = make_bar(0, close=1.1), make_bar(0, close=1.105, source="history")
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, first)
            publish_bar(probe, second)
            publish_bar(probe, make_bar(1))
            got = subscriber.wait("fxcm:ohlcv", lambda got: make_bar(1).open_time in
                                  open_times(got), what="the sentinel")
            status = wait_for(lambda: publisher_status(host).get("conflicts") == 1
                              and publisher_status(host), 30, "the conflict counted")
            probe.close()
    finally:
        subscriber.close()
    closes = [bar["close"] for payload in got for bar in payload["bars"]
              if bar["open_time"] == first.open_time]
    assert closes == [1.1, 1.105]
    assert metric(status, "fxcm_redis_bar_conflicts_total", symbol="EURUSD", tf="1m") == 1
    assert "CONFLICT" in caplog.text
    late = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        kept = zset_bars(late, "fxcm:ohlcv:last:EURUSD:1m")
    finally:
        late.close()
    assert kept == [second.to_contract(), make_bar(1).to_contract()]


def test_late_joiner_bars_are_kept_after_the_script_cache_is_flushed(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER, **sections(redis_server, tmp_path)):
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(0))
            subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 1, what="the first bar")
            admin.script_flush()  # an operator's SCRIPT FLUSH
            publish_bar(probe, make_bar(1))
            subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 2, what="the second bar")
            probe.close()
        kept = zset_bars(admin, "fxcm:ohlcv:last:EURUSD:1m")
    finally:
        admin.close()
        subscriber.close()
    assert kept == [make_bar(0).to_contract(), make_bar(1).to_contract()]


def test_late_joiner_upsert_appends_replaces_by_open_time_and_trims(
        redis_server: EmbeddedRedis) -> None:
    """The sink's script straight: appends in chunks (more bars than one ZADD takes), replaces
    the member at an open_time the set already holds, keeps the newest ``last_bars``."""
    key = "fxcm:ohlcv:last:EURUSD:1m"
    sink = RedisSink(redis_server.url, 5.0, 500, "test-upsert")
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)

    def message(bars: list[Bar]) -> Message:
        written = Message(OHLCV, "fxcm:ohlcv", "{}")
        written.zset_key = key
        for bar in bars:
            written.zset_members += [bar.open_time, bar_json(bar.to_contract())]
        return written

    def kept() -> list[dict[str, Any]]:
        return zset_bars(admin, key)

    try:
        sink.connect()
        first = [make_bar(index) for index in range(200)]
        sink.write([message(first[:150]), message(first[150:])])
        assert kept() == [bar.to_contract() for bar in first]
        fixed = [dataclasses.replace(first[10], close=first[10].high),
                 dataclasses.replace(first[199], volume=99.0)]
        sink.write([message(fixed)])
        expected = first[:10] + [fixed[0]] + first[11:199] + [fixed[1]]
        assert kept() == [bar.to_contract() for bar in expected]
        newer = [make_bar(index) for index in range(200, 600)]
        sink.write([message(newer)])
        expected = (expected + newer)[-500:]
        assert kept() == [bar.to_contract() for bar in expected]
        sink.write([message(first[:1])])  # older than all that is kept: in, then trimmed out
        assert kept() == [bar.to_contract() for bar in expected]
    finally:
        sink.close()
        admin.close()


def test_a_command_redis_refuses_is_counted_and_the_message_still_published(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    admin = redis.Redis.from_url(redis_server.url)
    admin.set("fxcm:ohlcv:last:EURUSD:1m", "not a sorted set")  # WRONGTYPE for the upsert
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(0))
            got = subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 1, what="the bar")
            status = wait_for(lambda: metric(publisher_status(host),
                                             "fxcm_connector_errors_total", type="redis")
                              and publisher_status(host), 30, "the refused command counted")
            probe.close()
    finally:
        admin.close()
        subscriber.close()
    assert open_times(got) == [make_bar(0).open_time]
    assert metric(status, "fxcm_connector_errors_total", type="redis") == 1
    assert status["redis_connected"] is True


def test_restarted_publisher_does_not_publish_again_finals_it_already_wrote(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    config = sections(redis_server, tmp_path)
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER, **config):
            probe = Probe("probe", bus(run_dir))
            for i in range(3):
                publish_bar(probe, make_bar(i))
            subscriber.wait("fxcm:ohlcv", lambda got: len(open_times(got)) == 3,
                            what="three bars")
            probe.close()
        with host_in_thread(tmp_path, run_dir, PUBLISHER, **config) as host:
            probe = Probe("probe", bus(run_dir))
            for i in range(4):  # the tail again, plus one new bar
                publish_bar(probe, make_bar(i, source="store"))
            subscriber.wait("fxcm:ohlcv", lambda got: make_bar(3).open_time in open_times(
                got), what="the new bar")
            status = wait_for(lambda: publisher_status(host).get("duplicates") == 3
                              and publisher_status(host), 30, "3 duplicates counted")
            probe.close()
    finally:
        subscriber.close()
    assert open_times(subscriber.payloads("fxcm:ohlcv")) == [
        make_bar(i).open_time for i in range(4)]
    assert status["duplicates"] == 3


def test_finals_re_emitted_after_redis_lost_its_data_reach_the_new_redis(
        tmp_path: Path, run_dir: str, redis_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    server = redis_server
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path, health_check_seconds=0.2)) \
                as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(0))
            subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 1, what="the first bar")
            server.stop()
            wait_for(lambda: publisher_status(host).get("redis", {}).get("mode") == "down", 30,
                     "the publisher to notice")
            server = EmbeddedRedis(redis_dir, redis_server.port)  # empty: no persistence
            server.start()
            wait_for(lambda: publisher_status(host).get("redis", {}).get("mode") == "up", 30,
                     "the publisher to reconnect")
            publish_bar(probe, make_bar(0, source="store"))  # e.g. republish_tail
            got = subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 2,
                                  what="the re-emitted bar")
            probe.close()
        late = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            kept = zset_bars(late, "fxcm:ohlcv:last:EURUSD:1m")
        finally:
            late.close()
    finally:
        subscriber.close()
        server.stop()
    assert open_times(got) == [make_bar(0).open_time] * 2
    assert kept == [make_bar(0).to_contract()]


def test_journal_left_by_a_run_without_redis_is_published_first_at_the_next_start(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    offline = sections(None, tmp_path)
    offline["redis"] = {"required": False}
    with host_in_thread(tmp_path, run_dir, PUBLISHER, **offline):
        probe = Probe("probe", bus(run_dir))
        for i in range(3):
            publish_bar(probe, make_bar(i))
        wait_for(lambda: bus_status(run_dir)["actors"]["redis_publisher"]["acked"] >= 3, 30,
                 "the bars to be journaled")
        probe.close()
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(1))  # already journaled: a duplicate
            publish_bar(probe, make_bar(3))
            got = subscriber.wait("fxcm:ohlcv", lambda got: make_bar(3).open_time in
                                  open_times(got), what="the new bar")
            status = wait_for(lambda: publisher_status(host).get("journal", {}).get(
                "messages") == 0 and publisher_status(host), 30, "an empty journal")
            probe.close()
    finally:
        subscriber.close()
    assert open_times(got) == [make_bar(i).open_time for i in range(4)]
    assert status["duplicates"] == 1


# -- 6. the journal's bound --------------------------------------------------------------------

def test_full_journal_holds_the_producer_back_and_loses_nothing(
        tmp_path: Path, run_dir: str, redis_dir: str, redis_server: EmbeddedRedis) -> None:
    count = 120
    config = sections(redis_server, tmp_path, journal_max_bytes=2400, journal_segment_bytes=600,
                      pipeline_max=4)
    config["bus"].update({"credit_window": 8})
    actors = [dict(PUBLISHER[0], prefetch=4, mailbox_bounds={"bar.": 8})]
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    server = redis_server
    done = threading.Event()
    sent: list[int] = []

    def produce() -> None:
        probe = Probe("producer", bus(run_dir))
        try:
            for i in range(count):
                probe.client.publish("bar.EURUSD.1m", make_bar(i, close=1.1 + i / 1e4), "bar",
                                     timeout=None)  # blocks while the bus holds it back
                sent.append(i)
        finally:
            done.set()
            probe.close()

    try:
        with host_in_thread(tmp_path, run_dir, actors, **config) as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(count, symbol="XAUUSD", close=4000.0))
            subscriber.wait("fxcm:ohlcv", lambda got: len(got) == 1, what="a first bar")
            probe.close()
            server.stop()
            thread = threading.Thread(target=produce, daemon=True)
            thread.start()
            held = wait_for(lambda: (lambda s: s if s.get("journal", {}).get("held", 0) > 0
                                     and s["journal"]["refusals"] > 0 else None)(
                publisher_status(host)), 30, "the journal to refuse")
            wait_for(lambda: bus_status(run_dir)["actors"].get("producer", {}).get("blocked"),
                     30, "the producer to be held back")
            router = bus_status(run_dir)["actors"]["producer"]
            assert not done.is_set() and len(sent) < count
            assert held["journal"]["disk_bytes"] <= 2400
            assert metric(held, "fxcm_redis_held_messages") > 0
            server = EmbeddedRedis(redis_dir, redis_server.port)
            server.start()
            wait_for(done.is_set, 60, "the producer to get everything out")
            got = subscriber.wait("fxcm:ohlcv", lambda got: make_bar(count - 1).open_time
                                  in open_times(got), 60, what="the last bar")
            thread.join(10)
            final = publisher_status(host)
    finally:
        subscriber.close()
        server.stop()
    assert router["backpressure_events"] > 0
    received = open_times(got)
    assert list(dict.fromkeys(received)) == [make_bar(i).open_time for i in range(count)]
    assert received == sorted(received)
    assert final["journal"]["refusals"] >= 1


# -- contracts, settings, file-only ------------------------------------------------------------

def test_bar_failing_its_contract_is_counted_and_never_published(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:ohlcv"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(0, low=1.5))  # low above high
            publish_bar(probe, make_bar(1, close=math.nan))
            publish_bar(probe, make_bar(2))
            got = subscriber.wait("fxcm:ohlcv", lambda got: make_bar(2).open_time in
                                  open_times(got), what="the good bar")
            status = wait_for(lambda: publisher_status(host).get("schema_errors") == 2
                              and publisher_status(host), 30, "2 contract errors counted")
            probe.close()
    finally:
        subscriber.close()
    assert open_times(got) == [make_bar(2).open_time]
    assert metric(status, "fxcm_dropped_bars_total", symbol="EURUSD", tf="1m") == 2
    assert metric(status, "fxcm_redis_schema_errors_total", channel="ohlcv") == 2


def test_command_results_pass_through_when_valid_and_are_refused_when_not(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis) -> None:
    subscriber = Subscriber(redis_server.url, ["fxcm:commands:result"])
    good = {"req_id": "r-1", "cmd": "fxcm_warmup", "state": "accepted", "ts": 1764867000.0}
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            probe.publish("command.result", {"req_id": "r-0", "state": "nonsense"},
                          "command.result")
            probe.publish("command.result", good, "command.result")
            got = subscriber.wait("fxcm:commands:result", lambda got: len(got) == 1,
                                  what="the good result")
            status = wait_for(lambda: publisher_status(host).get("schema_errors") == 1
                              and publisher_status(host), 30, "the bad result counted")
            probe.close()
    finally:
        subscriber.close()
    assert got == [good]
    assert metric(status, "fxcm_redis_schema_errors_total", channel="commands_result") == 1


def test_channel_prefix_and_overrides_from_the_environment_name_channels_and_keys(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXCM_CHANNEL_PREFIX", "fxcm_local")
    monkeypatch.setenv("FXCM_OHLCV_CHANNEL", "custom:bars")
    subscriber = Subscriber(redis_server.url, ["custom:bars", "fxcm_local:price_tik"])
    try:
        with host_in_thread(tmp_path, run_dir, PUBLISHER,
                            **sections(redis_server, tmp_path)) as host:
            probe = Probe("probe", bus(run_dir))
            publish_bar(probe, make_bar(0))
            probe.publish("price.snapshot.EURUSD", snapshot("EURUSD", 1.1), "price.snapshot")
            subscriber.wait("custom:bars", lambda got: len(got) == 1, what="the bar")
            subscriber.wait("fxcm_local:price_tik", lambda got: len(got) == 1,
                            what="the snapshot")
            status = wait_for(lambda: publisher_status(host).get("channels") and
                              publisher_status(host), 30, "the publisher's status")
            probe.close()
    finally:
        subscriber.close()
    assert status["channels"]["ohlcv"] == "custom:bars"
    assert status["channels"]["commands_result"] == "fxcm_local:commands:result"
    late = redis.Redis.from_url(redis_server.url)
    try:
        assert late.zcard("fxcm_local:ohlcv:last:EURUSD:1m") == 1
        assert late.exists("fxcm_local:price_tik:last:EURUSD") == 1
    finally:
        late.close()


def test_without_redis_final_bars_and_command_results_go_to_the_journal_only(
        tmp_path: Path, run_dir: str) -> None:
    config = sections(None, tmp_path)
    config["redis"] = {"required": False}
    with host_in_thread(tmp_path, run_dir, PUBLISHER, **config) as host:
        probe = Probe("probe", bus(run_dir))
        for i in range(3):
            publish_bar(probe, make_bar(i))
        publish_bar(probe, make_bar(3, complete=False))
        probe.publish("price.snapshot.EURUSD", snapshot("EURUSD", 1.1), "price.snapshot")
        probe.publish("command.result", {"req_id": "r-1", "cmd": "fxcm_warmup",
                                         "state": "ok", "ts": 1764867000.0}, "command.result")
        wait_for(lambda: bus_status(run_dir)["actors"]["redis_publisher"]["acked"] >= 6, 30,
                 "the publisher to handle and ack all 6 messages")
        status = wait_for(lambda: publisher_status(host).get("journal", {}).get(
            "messages", 0) >= 2 and publisher_status(host), 30, "the journal in the status")
        probe.close()
    assert status["redis"]["mode"] == "off" and status["redis_connected"] is False
    assert status["redis"]["reconnect_attempts"] == 0
    journal = Journal(str(tmp_path / "journal" / "redis_publisher"), 1 << 20, 1 << 20)
    journal.open()
    records = journal.read(10)
    journal.close()
    bars = [bar for record in records if record[0] == "ohlcv" for bar in record[4]]
    assert bars == [make_bar(i).to_contract() for i in range(3)]  # finals only
    assert [record[1:] for record in records if record[0] == "payload"] == [
        ["commands_result", {"req_id": "r-1", "cmd": "fxcm_warmup", "state": "ok",
                             "ts": 1764867000.0}, "fxcm:commands:result:last"]]


def publisher_settings(**changes: Any) -> dict[str, Any]:
    defaults = load_defaults()
    settings: dict[str, Any] = {key: defaults[key] for key in SHARED_KEYS}
    settings.update(defaults["redis_publisher"])
    settings.update(changes)
    return settings


@pytest.mark.parametrize(("changes", "key"), [
    ({"channels": {"prefix": ""}}, "channels.prefix"),
    ({"hmac_algo": "md42"}, "redis_publisher.hmac_algo"),
    ({"journal_max_bytes": 0}, "redis_publisher.journal_max_bytes"),
    ({"pipeline_max": "10"}, "redis_publisher.pipeline_max"),
    ({"channels": {"prefix": "fxcm", "ohlcv": "has space"}}, "channels.ohlcv"),
    ({"channels": {"prefix": "fxcm", "bars": "x"}}, "channels.bars"),
    ({"redis_backoff": {"base_seconds": 5.0, "max_seconds": 1.0, "multiplier": 2.0,
                        "jitter": 0.2}}, "redis_publisher.redis_backoff.max_seconds"),
    ({"journal_dir": "", "cache": {"dir": ""}}, "redis_publisher.journal_dir"),
])
def test_bad_settings_are_refused_naming_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RedisPublisher.check_settings(publisher_settings(**changes))


def test_shipped_settings_pass_the_check() -> None:
    RedisPublisher.check_settings(publisher_settings())
    config = PublisherConfig.from_settings(publisher_settings())
    assert config.channels["commands_result"] == "fxcm:commands:result"


# -- pure parts ------------------------------------------------------------------------------

def test_ohlcv_text_is_the_canonical_json_its_sig_covers() -> None:
    config = PublisherConfig.from_settings(publisher_settings())
    renderer = Renderer(config.channels, "fxcm", 10, Signer(SECRET.encode(), "sha256"),
                        {"ohlcv": contracts.validator("ohlcv")})
    batch = Batch()
    for i in (2, 0, 1):  # out of order: the message is sorted by open_time
        bar = make_bar(i, symbol="XAUUSD", close=4000.0 + i / 3)
        batch.add_bar(bar.symbol, bar.tf, wire_source(bar.source), bar.complete, bar.to_contract())
    (message,), rejected = renderer.render(batch.take())
    assert rejected == []
    payload = json.loads(message.text)
    assert message.text == json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                      ensure_ascii=False)
    assert [bar["open_time"] for bar in payload["bars"]] == [make_bar(i).open_time
                                                             for i in range(3)]
    assert payload["sig"] == hmac.new(SECRET.encode(), canonical_base(payload),
                                      hashlib.sha256).hexdigest()
    assert message.zset_members[1::2] == [canonical(bar) for bar in payload["bars"]]


@settings(max_examples=300, deadline=None)
@given(prices=st.lists(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False,
                                 allow_infinity=False), min_size=4, max_size=4),
       volume=st.one_of(st.integers(0, 10**9), st.floats(0, 1e12, allow_nan=False)),
       open_time=st.integers(946684800000, 4102444800000), ticks=st.integers(0, 10**9),
       complete=st.booleans(), synthetic=st.booleans())
def test_fast_bar_json_is_byte_for_byte_the_canonical_json(
        prices: list[float], volume: float, open_time: int, ticks: int, complete: bool,
        synthetic: bool) -> None:
    low, high = min(prices), max(prices)
    bar = {"open_time": open_time, "close_time": open_time + 59999, "open": prices[0],
           "high": high, "low": low, "close": prices[3], "volume": volume, "complete": complete,
           "synthetic": synthetic, "tick_count": ticks}
    assert bar_json(bar) == json.dumps(bar, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False)


def test_journal_refuses_at_its_bound_and_gives_everything_back_in_order_after_reopen(
        tmp_path: Path) -> None:
    records = [["payload", "commands_result", {"n": i, "pad": "x" * 40}] for i in range(40)]
    journal = Journal(str(tmp_path), 1000, 300)
    journal.open()
    taken = journal.append(records)
    assert 0 < taken < len(records)
    assert journal.disk_bytes <= 1000 and journal.refusals == 1
    first = journal.read(5)
    journal.commit()
    journal.close()
    reopened = Journal(str(tmp_path), 1000, 300)
    seen: list[Any] = []
    reopened.open(seen.append)
    rest = reopened.read(1000)
    reopened.commit()
    assert first + rest == records[:taken]
    assert seen == records[5:taken]
    assert len(reopened) == 0 and os.listdir(tmp_path) == []


def test_journal_cuts_a_torn_last_record_on_open(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), 10_000, 10_000)
    journal.open()
    journal.append([["payload", "x", {"n": 1}], ["payload", "x", {"n": 2}]])
    journal.close()
    (segment,) = [name for name in os.listdir(tmp_path) if name.endswith(".jnl")]
    with open(tmp_path / segment, "ab") as handle:
        handle.write(b"0badf00d [\"payload\",\"x\",{\"n\":")  # a crash mid-append
    reopened = Journal(str(tmp_path), 10_000, 10_000)
    reopened.open()
    assert reopened.read(10) == [["payload", "x", {"n": 1}], ["payload", "x", {"n": 2}]]
    assert reopened.append([["payload", "x", {"n": 3}]]) == 1
    reopened.commit()
    assert reopened.read(10) == [["payload", "x", {"n": 3}]]
    reopened.close()


def test_a_journal_that_cannot_open_its_directory_refuses_instead_of_raising(
        tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    journal = Journal(str(blocker / "journal"), 10_000, 10_000)
    journal.open()  # an unwritable cache dir: no exception, the publisher runs on
    assert "Not a directory" in journal.unavailable
    assert journal.append([["payload", "x", {"n": 1}]]) == 0
    assert journal.append([["payload", "x", {"n": 2}]], force=True) == 0
    assert journal.read(10) == [] and journal.stats()["refusals"] == 2
    journal.close()


def test_a_final_goes_out_before_any_later_preview_and_supersedes_its_own_preview() -> None:
    # smc_v1's ingestor writes the last preview as final when a preview of the next minute
    # arrives first, and keeps the first bar it wrote: the real final must come before.
    config = PublisherConfig.from_settings(publisher_settings())
    renderer = Renderer(config.channels, "fxcm", 10, None, {"ohlcv": contracts.validator("ohlcv")})
    batch = Batch()
    for bar in (make_bar(5, complete=False, close=1.2), make_bar(5, close=1.3),
                make_bar(6, complete=False, close=1.4)):
        batch.add_bar(bar.symbol, bar.tf, wire_source(bar.source), bar.complete,
                      bar.to_contract())
    messages, rejected = renderer.render(batch.take())
    assert not rejected
    sent = [json.loads(message.text) for message in messages]
    assert [[(b["open_time"], b["complete"], b["close"]) for b in payload["bars"]]
            for payload in sent] == [[(BASE_MS + 5 * 60_000, True, 1.3)],
                                     [(BASE_MS + 6 * 60_000, False, 1.4)]]
