"""Pipeline benchmarks: fxcm_session replay throughput, aggregation, bar latency, cold start.

Each figure stands beside a baseline measured in the same run:

- replay: ticks/s from a replay file at speed 0 through fxcm_session into a consumer, next to the
  same Tick messages published into the same consumer by a plain bus producer (the runtime
  alone, without the session's parsing, validation and queue hand-over);
- aggregation: ticks/s through the pure Aggregator (every timeframe, 13 symbols), next to a plain
  1m fold of the same ticks (protocol.bars.fold);
- bar latency: wall time from a bucket's end to its final bar reaching a subscriber, through the
  tick_aggregator actor driven by a real-time clock (as fxcm_session publishes it); the target is
  close_grace_ms + 50 ms at p99;
- cold start: loading 13 symbols x 7 timeframes of a warm bar store, next to reading the same
  bytes raw; the target is under 1 s.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

import zmq

import config
from actors.base import RunOptions
from actors.fxcm_session import FxcmSession
from actors.history_poller import BarStore
from actors.tick_aggregator import Aggregator, TickAggregator
from bus import LOSSLESS, BusClient, ControlChannel, Router, RouterSettings, Subscription
from config.calendar import load_calendar
from protocol.bars import fold
from protocol.market import CLOCK_TOPIC, MINUTE_MS, TF_MS, TIMEFRAMES, Bar, Clock, Tick

from ._results import Row, compare, median, percentile

SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "AUDUSD", "USDCAD", "USDCHF", "NZDUSD",
           "EURJPY", "GBPJPY", "EURGBP", "EURCHF", "XAGUSD"]
WEDNESDAY = 1795003200000  # 2026-11-18 12:00 UTC, markets open
TIMEOUT = 120.0


def _log(text: str) -> None:
    print("  [pipeline] " + text, file=sys.stderr, flush=True)


def _ticks(count: int, seed: int = 3) -> list[Tick]:
    rng = random.Random(seed)
    ts = WEDNESDAY
    result = []
    for _ in range(count):
        ts += rng.choice([1, 5, 20, 50])
        mid = round(1.08 + rng.random() / 100, 5)
        result.append(Tick(rng.choice(SYMBOLS), ts, mid, round(mid + 0.0002, 5)))
    return result


class _Thread:
    def __init__(self, actor: Any, options: RunOptions) -> None:
        self.actor = actor
        self.thread = threading.Thread(target=actor.run, args=(options,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.actor.request_stop()
        self.thread.join(10)


def _router(context: zmq.Context[Any], run_dir: str) -> Router:
    settings = RouterSettings(run_dir=run_dir, credit_window=256, prefetch=256,
                              direct_bound=1000, max_redeliveries=3, dead_letter_capacity=10,
                              ping_interval=1.0, liveness_misses=3, tap_hwm=1000,
                              inproc_endpoint="inproc://bench-{}".format(id(context)))
    router = Router(settings, context)
    router.start()
    return router


def _options(context: zmq.Context[Any], router: Router) -> RunOptions:
    return RunOptions(router.settings.inproc_endpoint, mailbox_bound=10000, prefetch=256,
                      send_timeout=TIMEOUT, checkpoint_every=500, status_interval=0,
                      context=context)


def _consume(client: BusClient, count: int, kind: str = "tick") -> list[float]:
    """Receive ``count`` messages of ``kind``; returns arrival times (monotonic)."""
    arrivals: list[float] = []
    deadline = time.monotonic() + TIMEOUT
    while len(arrivals) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("consumer got {} of {}".format(len(arrivals), count))
        client.poll(0.1)
        while client.buffer:
            delivery = client.buffer.popleft()
            if delivery.type == kind:
                delivery.body()
                arrivals.append(time.monotonic())
            client.handled(delivery)
        client.ack()
    return arrivals


def _replay_round(count: int) -> tuple[float, float]:
    """(session ticks/s, plain producer ticks/s) through the same router and consumer."""
    ticks = _ticks(count)
    run_dir = tempfile.mkdtemp(prefix="fxcm-b")
    context: zmq.Context[Any] = zmq.Context()
    try:
        path = os.path.join(run_dir, "ticks.csv.gz")
        with gzip.open(path, "wt") as handle:
            handle.write("ts_ms,symbol,bid,ask\n")
            for tick in ticks:
                handle.write("{},{},{},{}\n".format(tick.ts_ms, tick.symbol, tick.bid, tick.ask))
        router = _router(context, run_dir)
        # the runtime alone: a batching producer publishing the same ticks
        consumer = BusClient("sink", router.settings.inproc_endpoint, context,
                             subscriptions=(Subscription("tick.", LOSSLESS, 10000),),
                             prefetch=256)
        consumer.connect(10)
        producer = BusClient("plain", router.settings.inproc_endpoint, context, batching=True)
        producer.connect(10)

        def feed() -> None:
            for tick in ticks:
                producer.publish("tick." + tick.symbol, tick, timeout=TIMEOUT)
            producer.flush()

        started = time.monotonic()
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        arrivals = _consume(consumer, count)
        plain = count / (arrivals[-1] - started)
        feeder.join(10)
        # fxcm_session with the replay broker at speed 0
        settings = config.load(overrides={
            "symbols": SYMBOLS, "broker.kind": "replay", "broker.replay.file": path,
            "broker.replay.speed": 0.0})
        spec = next(s for s in settings.actors if s.name == "fxcm_session")
        session = FxcmSession("fxcm_session", settings.actor_settings(spec))
        started = time.monotonic()
        thread = _Thread(session, _options(context, router))
        arrivals = _consume(consumer, count)
        via_session = count / (arrivals[-1] - started)
        thread.stop()
        producer.close()
        consumer.close()
        router.stop()
        return via_session, plain
    finally:
        context.term()
        shutil.rmtree(run_dir, ignore_errors=True)


def _actor_round(count: int) -> tuple[float, float]:
    """(ticks/s through the tick_aggregator actor, ticks/s into a plain consumer): the same
    ticks from the same batching producer, timed until every one is handled and acked."""
    ticks = _ticks(count, seed=7)
    run_dir = tempfile.mkdtemp(prefix="fxcm-b")
    context: zmq.Context[Any] = zmq.Context()
    try:
        router = _router(context, run_dir)
        control = ControlChannel(router.settings.inproc_endpoint, context)

        def acked(name: str) -> int:
            actors = control.call({"op": "status"})["status"]["actors"]
            return int(actors.get(name, {}).get("acked", 0))

        producers: list[BusClient] = []

        def feed(name: str, prefix: str) -> float:
            producer = BusClient(name, router.settings.inproc_endpoint, context, batching=True)
            producers.append(producer)
            producer.connect(10)
            started = time.monotonic()
            for tick in ticks:
                producer.publish(prefix + tick.symbol, tick, timeout=TIMEOUT)
            producer.flush()
            return started

        # its own topic: a mailbox outlives its consumer, and this one's must not fill later
        sink = BusClient("sink", router.settings.inproc_endpoint, context,
                         subscriptions=(Subscription("plain.", LOSSLESS, 10000),), prefetch=256)
        sink.connect(10)
        result = {}
        holder: list[float] = []
        feeder = threading.Thread(target=lambda: holder.append(feed("feed-plain", "plain.")),
                                  daemon=True)
        feeder.start()
        arrivals = _consume(sink, count)
        feeder.join(10)
        result["plain"] = count / (arrivals[-1] - holder[0])
        sink.bye()
        sink.close()
        settings = config.load(overrides={"symbols": SYMBOLS})
        spec = next(s for s in settings.actors if s.name == "tick_aggregator")
        actor = _Thread(TickAggregator("tick_aggregator", settings.actor_settings(spec)),
                        _options(context, router))
        deadline = time.monotonic() + TIMEOUT
        while acked("tick_aggregator") == 0 and not router.stats_snapshot.get("actors", {}).get(
                "tick_aggregator", {}).get("connected"):
            if time.monotonic() > deadline:
                raise RuntimeError("tick_aggregator did not start")
            time.sleep(0.01)
        started = feed("feed-actor", "tick.")
        while acked("tick_aggregator") < count:
            if time.monotonic() > deadline:
                raise RuntimeError("tick_aggregator acked {} of {}".format(
                    acked("tick_aggregator"), count))
            time.sleep(0.005)  # polling the router's figures, not waiting for a fixed time
        result["actor"] = count / (time.monotonic() - started)
        actor.stop()
        for producer in producers:
            producer.bye(timeout=1.0)
            producer.close()
        control.close()
        router.stop()
        return result["actor"], result["plain"]
    finally:
        context.term()
        shutil.rmtree(run_dir, ignore_errors=True)


def _aggregation_round(ticks: list[Tick]) -> tuple[float, float]:
    calendar = load_calendar()
    agg = Aggregator(SYMBOLS, list(TIMEFRAMES), "mid", 1500, 60, calendar)
    started = time.perf_counter()
    for tick in ticks:
        agg.on_tick(tick)
    pure = len(ticks) / (time.perf_counter() - started)
    started = time.perf_counter()
    by_symbol: dict[str, list[tuple[int, float]]] = {}
    for tick in ticks:
        by_symbol.setdefault(tick.symbol, []).append((tick.ts_ms, (tick.bid + tick.ask) / 2))
    for points in by_symbol.values():
        fold(points, "1m")
    plain = len(ticks) / (time.perf_counter() - started)
    return pure, plain


def _latency(boundaries: int, grace_ms: int, clock_interval: float) -> list[float]:
    """Bucket end to final 1m bar at a subscriber, in ms, for 13 symbols per boundary."""
    run_dir = tempfile.mkdtemp(prefix="fxcm-b")
    context: zmq.Context[Any] = zmq.Context()
    try:
        router = _router(context, run_dir)
        sink = BusClient("sink", router.settings.inproc_endpoint, context,
                         subscriptions=(Subscription("bar.", LOSSLESS, 10000),), prefetch=256)
        sink.connect(10)
        settings = config.load(overrides={"symbols": SYMBOLS})
        spec = next(s for s in settings.actors if s.name == "tick_aggregator")
        values = settings.actor_settings(spec)
        values["close_grace_ms"] = grace_ms
        aggregator = _Thread(TickAggregator("tick_aggregator", values),
                             _options(context, router))
        producer = BusClient("clock", router.settings.inproc_endpoint, context, batching=True)
        producer.connect(10)
        samples: list[float] = []
        arrivals: dict[int, list[float]] = {}  # 1m open_time -> arrival times (monotonic)
        stop = threading.Event()

        def listen() -> None:  # on its own thread: an arrival is stamped when it arrives
            while not stop.is_set():
                sink.poll(0.01)
                while sink.buffer:
                    delivery = sink.buffer.popleft()
                    bar = delivery.body()
                    sink.handled(delivery)
                    if isinstance(bar, Bar) and bar.tf == "1m":
                        arrivals.setdefault(bar.open_time, []).append(time.monotonic())
                sink.ack()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        start = WEDNESDAY - MINUTE_MS
        for index in range(boundaries + 1):
            minute = start + index * MINUTE_MS
            for symbol in SYMBOLS:  # a minute of ticks, at once (simulated time)
                for second in range(0, 60, 6):
                    producer.publish("tick." + symbol, Tick(symbol, minute + second * 1000,
                                                            1.1, 1.1002), timeout=TIMEOUT)
            producer.flush()
            if index == 0:
                continue  # the aggregator's first minute is partial: no bar to time
            # real time from 200 ms before this bucket's end to after end + grace
            end = minute + MINUTE_MS
            offset = time.time() * 1000 - (end - 200)
            wall_end = time.monotonic() + 0.2
            while True:
                now = int(time.time() * 1000 - offset)
                producer.publish(CLOCK_TOPIC, Clock(now, "bench"), timeout=TIMEOUT)
                producer.flush()
                if now > end + grace_ms + 100:
                    break
                time.sleep(clock_interval)  # the clock cadence of fxcm_session, not a wait
            deadline = time.monotonic() + 10
            while len(arrivals.get(minute, [])) < len(SYMBOLS) and time.monotonic() < deadline:
                time.sleep(0.01)  # the listener thread stamps them
            samples += [(arrived - wall_end) * 1000 for arrived in arrivals.get(minute, [])]
        stop.set()
        listener.join(5)
        aggregator.stop()
        producer.close()
        sink.close()
        router.stop()
        return samples
    finally:
        context.term()
        shutil.rmtree(run_dir, ignore_errors=True)


def _cold_start(bars_per_key: int) -> tuple[float, float]:
    directory = tempfile.mkdtemp(prefix="fxcm-store-")
    try:
        store = BarStore(directory, bars_per_key)
        for symbol in SYMBOLS:
            for tf in TIMEFRAMES:
                step = TF_MS[tf]
                for i in range(bars_per_key):
                    start = WEDNESDAY - (bars_per_key - i) * step
                    store.put(Bar(symbol, tf, start, start + step - 1, 1.1, 1.2, 1.0, 1.15,
                                  10.0, 10, True, False, "history"))
        store.compact_all()
        started = time.perf_counter()
        fresh = BarStore(directory, bars_per_key)
        loaded = sum(fresh.load(symbol, tf) for symbol in SYMBOLS for tf in TIMEFRAMES)
        load_seconds = time.perf_counter() - started
        assert loaded == len(SYMBOLS) * len(TIMEFRAMES) * bars_per_key
        started = time.perf_counter()
        for symbol in SYMBOLS:
            for tf in TIMEFRAMES:
                with open(fresh.path(symbol, tf), "rb") as handle:
                    handle.read()
        raw_seconds = time.perf_counter() - started
        return load_seconds, raw_seconds
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(rounds: int = 3) -> list[Row]:
    replay_session: list[float] = []
    replay_plain: list[float] = []
    pure: list[float] = []
    plain_fold: list[float] = []
    via_actor: list[float] = []
    plain_sink: list[float] = []
    ticks = _ticks(200_000)
    for round_index in range(rounds):
        session, plain = _replay_round(60_000)
        replay_session.append(session)
        replay_plain.append(plain)
        _log("round {}: replay via fxcm_session {:,.0f}/s, plain producer {:,.0f}/s".format(
            round_index + 1, session, plain))
        actor_rate, sink_rate = _actor_round(60_000)
        via_actor.append(actor_rate)
        plain_sink.append(sink_rate)
        _log("round {}: tick_aggregator actor {:,.0f} ticks/s, plain consumer {:,.0f}/s".format(
            round_index + 1, actor_rate, sink_rate))
        agg, folded = _aggregation_round(ticks)
        pure.append(agg)
        plain_fold.append(folded)
        _log("round {}: aggregation {:,.0f} ticks/s, plain fold {:,.0f}/s".format(
            round_index + 1, agg, folded))
    grace = 1500
    settings = config.load()
    interval = float(settings.raw["fxcm_session"]["clock_interval_seconds"])
    latency = _latency(12, grace, interval)
    _log("bar latency over {} bars".format(len(latency)))
    loads = [_cold_start(1000) for _ in range(rounds)]
    load = median([seconds for seconds, _ in loads])
    raw = median([seconds for _, seconds in loads])
    return [
        compare("replay speed 0 -> fxcm_session -> consumer, 13 symbols", median(replay_session),
                "ticks/s", median(replay_plain),
                baseline_name="the same Ticks from a plain batching bus producer"),
        compare("tick aggregation, pure logic, 13 symbols x 7 timeframes", median(pure),
                "ticks/s", median(plain_fold),
                baseline_name="protocol.bars.fold of the same ticks, 1m only"),
        compare("tick aggregation through the actor (checkpointed), 13 symbols", median(via_actor),
                "ticks/s", median(plain_sink),
                baseline_name="the same ticks into a plain bus consumer"),
        compare("bucket end -> final 1m bar at a subscriber, p50", percentile(latency, 0.5),
                "ms", float(grace), baseline_name="close_grace_ms",
                higher_is_better=False),
        compare("bucket end -> final 1m bar at a subscriber, p99", percentile(latency, 0.99),
                "ms", float(grace), baseline_name="close_grace_ms",
                target=(grace + 50) / grace, higher_is_better=False),
        compare("cold start: load 13 symbols x 7 timeframes x 1000 bars", load * 1000, "ms",
                raw * 1000, baseline_name="reading the same files raw", target=1000.0,
                higher_is_better=False, absolute=True),
    ]
