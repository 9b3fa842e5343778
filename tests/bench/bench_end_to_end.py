"""The whole connector as an operator runs it: ``fxcm host`` in a child process with every
shipped actor, the embedded Redis.

- end-to-end replay: a generated 13-symbol tick file replayed at speed 0, as shipped
  (fxcm_session on a thread of the host, as with sim and replay) and with fxcm_session placed
  in a process of its own (as with ForexConnect), which takes its work off the host's GIL;
  the figure is ticks per second folded by tick_aggregator (read from its own status,
  published every 0.1 s, from the first sample to the one that has every tick), while the
  publisher writes the bars to Redis and the snapshotter, heartbeat and poller run beside
  them. The target (>= 50,000 ticks/s) is absolute; the baseline is the runtime alone in the
  same run: the same ticks from a plain batching producer into a plain consumer over one
  router (no parsing, no actors).
- tick -> snapshot: the sim broker in real time (ticks stamped with the wall clock), a redis-py
  subscriber on ``price_tik``: how old the newest tick of a snapshot is when the snapshot
  reaches the subscriber, and how long the snapshot itself took from ``snap_ts`` to the
  subscriber. The second has a baseline: redis-py PUBLISH -> the same kind of subscriber,
  measured in the same run (Redis pub/sub alone).
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
import zmq

from actors._redis_server import EmbeddedRedis
from bus import LOSSLESS, BusClient, Router, RouterSettings, Subscription
from config.settings import load_defaults
from protocol.market import Tick
from tests.chaos._ticks import SYMBOLS, generate
from tests.helpers import HostProcess, Probe, RedisSubscriber, open_calendar, wait_for

from ._results import Row, compare, median, percentile

REPLAY_TICKS = 400_000
SNAPSHOT_SECONDS = 20.0
TICK_RATE = 20.0  # sim ticks per second per symbol
TARGET_TICKS_PER_SECOND = 50_000.0
TIMEOUT = 180.0


def _log(text: str) -> None:
    print("  [end_to_end] " + text, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(work: Path, run_dir: str, server: EmbeddedRedis, symbols: list[str],
            broker: dict[str, Any], session_process: bool = False, **sections: Any) -> Path:
    actors = load_defaults()["actors"]
    if session_process:
        actors = [dict(spec, placement="process") if spec["name"] == "fxcm_session" else spec
                  for spec in actors]
    config: dict[str, Any] = {
        "run_dir": run_dir,
        "log_level": "WARNING",
        "http": {"port": 0},
        "actors": actors,
        "symbols": symbols,
        "broker": broker,
        "cache": {"dir": str(work / "cache")},
        "redis": {"url": server.url, "port": server.port, "required": True},
        "redis_publisher": {"journal_dir": str(work / "journal")},
        "bus": {"status_interval_seconds": 0.1},
    }
    config.update(sections)
    path = work / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class _Statuses:
    """The newest status each actor published, with when it arrived (a Probe thread)."""

    def __init__(self, run_dir: str) -> None:
        self.samples: list[tuple[float, int]] = []  # (arrival, ticks folded by the aggregator)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._run_dir = run_dir
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the status probe did not connect")

    def _run(self) -> None:
        probe = Probe("bench_status", "ipc://{}/bus.sock".format(self._run_dir),
                      ("actor.status.tick_aggregator",))
        self._ready.set()
        try:
            while not self._stop.is_set():
                client = probe.client
                client.poll(0.02)
                while client.buffer:
                    delivery = client.buffer.popleft()
                    body = delivery.body()
                    client.handled(delivery)
                    counters = body.get("aggregation", {}) if isinstance(body, dict) else {}
                    folded = int(counters.get("ticks", 0)) + int(counters.get("late_ticks", 0))
                    self.samples.append((time.monotonic(), folded))
                client.ack()
        finally:
            probe.close()

    def folded(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _replay_round(work: Path, session_process: bool = False) -> float:
    """Ticks/s folded by the aggregator while the whole host replays the file at speed 0
    (with fxcm_session in a child process of its own when ``session_process``)."""
    run_dir = tempfile.mkdtemp(prefix="fxcm-e")
    server = EmbeddedRedis(str(work / "redis"), _free_port())
    server.start()
    file = generate(work / "ticks.csv.gz", len(SYMBOLS), REPLAY_TICKS, REPLAY_TICKS / 2000.0,
                    seed=11)
    config = _config(work, run_dir, server, list(file.symbols),
                     {"kind": "replay", "replay": {"file": str(file.path), "speed": 0.0}},
                     session_process)
    host = HostProcess(config, run_dir, work / "host.log")
    statuses: _Statuses | None = None
    try:
        wait_for(lambda: (Path(run_dir) / "bus.json").exists(), 60, "the host's bus")
        statuses = _Statuses(run_dir)
        probe = statuses
        wait_for(lambda: probe.folded() >= REPLAY_TICKS, TIMEOUT,
                 "the aggregator to fold every tick")
        samples = statuses.samples
        first = next((at, done) for at, done in samples if done > 0)
        last = next((at, done) for at, done in samples if done >= REPLAY_TICKS)
        if first[1] > REPLAY_TICKS // 2:
            raise RuntimeError("the status probe joined too late to time the replay")
        return (last[1] - first[1]) / (last[0] - first[0])
    finally:
        if statuses is not None:
            statuses.close()
        host.stop()
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _runtime_alone(count: int) -> float:
    """The same number of 13-symbol ticks from a plain batching producer into a plain consumer
    over one router, in this process: what the bus itself carries."""
    run_dir = tempfile.mkdtemp(prefix="fxcm-e")
    context: zmq.Context[Any] = zmq.Context()
    ticks = [Tick(SYMBOLS[index % len(SYMBOLS)], 1_794_992_400_000 + index, 1.1, 1.1002)
             for index in range(count)]
    try:
        settings = RouterSettings(
            run_dir=run_dir, credit_window=256, prefetch=256, direct_bound=1000,
            max_redeliveries=3, dead_letter_capacity=10, ping_interval=1.0, liveness_misses=3,
            tap_hwm=1000, inproc_endpoint="inproc://bench-e2e")
        router = Router(settings, context)
        router.start()
        consumer = BusClient("sink", settings.inproc_endpoint, context,
                             subscriptions=(Subscription("tick.", LOSSLESS, 10000),),
                             prefetch=256)
        consumer.connect(10)
        producer = BusClient("plain", settings.inproc_endpoint, context, batching=True)
        producer.connect(10)

        def feed() -> None:
            for tick in ticks:
                producer.publish("tick." + tick.symbol, tick, timeout=TIMEOUT)
            producer.flush()

        started = time.monotonic()
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        received = 0
        deadline = started + TIMEOUT
        while received < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the plain consumer got {} of {}".format(received, count))
            consumer.poll(0.1)
            while consumer.buffer:
                delivery = consumer.buffer.popleft()
                delivery.body()
                consumer.handled(delivery)
                received += 1
            consumer.ack()
        rate = count / (time.monotonic() - started)
        feeder.join(10)
        producer.close()
        consumer.close()
        router.stop()
        return rate
    finally:
        context.term()
        shutil.rmtree(run_dir, ignore_errors=True)


def _snapshot_round(work: Path) -> tuple[list[float], list[float]]:
    """(tick_ts -> subscriber ms, snap_ts -> subscriber ms) for every price_tik received."""
    run_dir = tempfile.mkdtemp(prefix="fxcm-e")
    server = EmbeddedRedis(str(work / "redis"), _free_port())
    server.start()
    symbols = list(SYMBOLS)
    config = _config(work, run_dir, server, symbols,
                     {"kind": "sim", "sim": {"seed": 5, "tick_rate_per_second": TICK_RATE}},
                     calendar_file=str(open_calendar(work)))
    host = HostProcess(config, run_dir, work / "host.log")
    subscriber = RedisSubscriber(server.url, ["fxcm:price_tik"])
    wall = time.time() - time.monotonic()
    try:
        host.wait_ready(("snapshotter", "redis_publisher"), 60)
        started = time.monotonic()
        wanted = int(SNAPSHOT_SECONDS / 3.0) * len(symbols)
        subscriber.wait("fxcm:price_tik", lambda got: len(got) >= wanted,
                        SNAPSHOT_SECONDS + 30, "{} snapshots".format(wanted))
        from_tick: list[float] = []
        from_snap: list[float] = []
        for arrived, _, data in subscriber.snapshot():
            if arrived < started:
                continue  # the first cycle may carry the warm-up's ticks
            payload = json.loads(data)
            at = (arrived + wall) * 1000.0
            from_tick.append(at - payload["tick_ts"] * 1000.0)
            from_snap.append(at - payload["snap_ts"] * 1000.0)
        return from_tick, from_snap
    finally:
        subscriber.close()
        host.stop()
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _redis_pubsub(work: Path, count: int = 300) -> list[float]:
    """redis-py PUBLISH -> a RedisSubscriber, ms, one message every 10 ms."""
    server = EmbeddedRedis(str(work / "redis-ps"), _free_port())
    server.start()
    subscriber = RedisSubscriber(server.url, ["bench"])
    client = redis.Redis.from_url(server.url)
    try:
        sent: list[float] = []
        for index in range(count):
            sent.append(time.monotonic())
            client.publish("bench", str(index))
            time.sleep(0.01)  # the pacing of the publisher, not a wait for a condition
        wait_for(lambda: subscriber.count("bench") >= count, 30, "the pub/sub messages")
        return [(arrived - sent[int(data)]) * 1000.0
                for arrived, _, data in subscriber.snapshot()]
    finally:
        client.close()
        subscriber.close()
        server.stop()


def run(rounds: int = 3) -> list[Row]:
    replay: list[float] = []
    replay_process: list[float] = []
    plain: list[float] = []
    from_tick: list[float] = []
    from_snap: list[float] = []
    pubsub: list[float] = []
    for number in range(1, rounds + 1):
        work = Path(tempfile.mkdtemp(prefix="fxcm-e2e-"))
        try:
            replay.append(_replay_round(work / "replay"))
            replay_process.append(_replay_round(work / "replay-process", session_process=True))
            plain.append(_runtime_alone(REPLAY_TICKS // 4))
            _log("round {}: host replay {:,.0f} ticks/s folded ({:,.0f} with fxcm_session in "
                 "a process), runtime alone {:,.0f} ticks/s".format(
                     number, replay[-1], replay_process[-1], plain[-1]))
            if number == 1:
                ticks, snaps = _snapshot_round(work / "snapshot")
                from_tick += ticks
                from_snap += snaps
                pubsub += _redis_pubsub(work)
                _log("tick -> snapshot at a subscriber: {} snapshots, p50 {:.0f} ms".format(
                    len(ticks), percentile(ticks, 0.5)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    runtime = "the runtime alone: the same number of ticks, plain producer -> plain consumer"
    pubsub_name = "redis-py PUBLISH -> subscriber, the same Redis, this run"
    return [
        compare("end-to-end replay speed 0, whole host as shipped, 13 symbols", median(replay),
                "ticks/s", median(plain), baseline_name=runtime, target=TARGET_TICKS_PER_SECOND,
                absolute=True),
        compare("end-to-end replay speed 0, fxcm_session in its own process, 13 symbols",
                median(replay_process), "ticks/s", median(plain), baseline_name=runtime,
                target=TARGET_TICKS_PER_SECOND, absolute=True),
        compare("tick -> price_tik at a Redis subscriber (sim, {:.0f} ticks/s/symbol), p50".format(
                    TICK_RATE), percentile(from_tick, 0.5), "ms", 3000.0,
                baseline_name="price_snap_interval_seconds", higher_is_better=False),
        compare("tick -> price_tik at a Redis subscriber, p99", percentile(from_tick, 0.99),
                "ms", 3000.0, baseline_name="price_snap_interval_seconds",
                higher_is_better=False),
        compare("snapshot (snap_ts) -> price_tik at a Redis subscriber, p50",
                percentile(from_snap, 0.5), "ms", percentile(pubsub, 0.5),
                baseline_name=pubsub_name, higher_is_better=False),
        compare("snapshot (snap_ts) -> price_tik at a Redis subscriber, p99",
                percentile(from_snap, 0.99), "ms", percentile(pubsub, 0.99),
                baseline_name=pubsub_name, higher_is_better=False),
    ]
