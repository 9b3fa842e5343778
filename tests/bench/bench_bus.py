"""The bus against raw pyzmq, in one run (DESIGN.md sections 5 and 10).

Every figure is a median over ``ROUNDS`` rounds; in each round every baseline and every subject
runs once, interleaved, so that the CPU's speed changes hit both alike.

Payload: a tick body ``["EURUSD", 1732270000123, 1.05123, 1.05131]`` (35 bytes packed) with a
header map ``sender, seq, ts`` (~33 bytes), both msgpack, a new header per message.

Throughput (messages/s, counted at the consumer after the first ``WARM_FRACTION``):
- baseline: raw PUSH -> PULL; the sender packs header and body into two frames, the receiver
  unpacks both. inproc: two threads; ipc: sender in a child process.
- subject: a ``BusClient`` producer publishes on ``tick.EURUSD``; the router puts it in a
  lossless mailbox of a consumer subscribed to ``tick.``; the consumer decodes header and body,
  marks each handled and acks in batches of prefetch/2 (and when idle), as ``Actor._loop`` does.
  Two consumers: a bare ``BusClient`` loop and an ``Actor`` subclass with a handler.
  inproc: producer, router and consumer are threads of one process; ipc: the producer is a child
  process on ``ipc://<run_dir>/bus.sock``, the router and consumer are threads of this process.

Round trip (microseconds, p50 and p99):
- baseline: raw DEALER -> ROUTER echo server thread; both sides pack and unpack header and body.
- subject: ``BusClient.request`` to an ``Actor`` whose handler answers with ``Actor.reply``.
  The requester is a thread here (inproc) or a child process (ipc); the echo side is a thread.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

import msgpack
import zmq

from actors.base import Actor, RunOptions, Subscribe, handles
from bus import LOSSLESS, BusClient, Delivery, Router, RouterSettings, Subscription

from ._results import Row, compare, median, percentile

ROUNDS = 3
MESSAGES = 100_000  # per throughput run
WARM_FRACTION = 0.1  # the first tenth of a run is not timed (connects, caches, ramp-up)
ROUND_TRIPS = 2_000  # per round-trip run, after RTT_WARM untimed ones
RTT_WARM = 200

CREDIT_WINDOW = 256
PREFETCH = 128
MAILBOX_BOUND = 4096
TIMEOUT = 60.0  # any single run taking longer than this is a failure, not a slow result

TOPIC = "tick.EURUSD"
TICK: list[Any] = ["EURUSD", 1732270000123, 1.05123, 1.05131]
PRODUCER = "bench-feed"  # same length in the baseline header as in the bus header
CONSUMER = "bench-sink"
ECHO = "bench-echo"
REQUESTER = "bench-requester"

_ids = itertools.count(1)
_spawn = multiprocessing.get_context("spawn")


class _Waitable(Protocol):
    def wait(self, timeout: float | None = ...) -> bool: ...


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- raw pyzmq baselines ----------------------------------------------------------------------

def _push_ticks(context: zmq.Context, endpoint: str, count: int, done: _Waitable) -> None:
    """Baseline sender: pack a fresh header and the body per message, two frames."""
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    send = sock.send_multipart
    body = TICK
    try:
        for seq in range(1, count + 1):
            send([pack({"sender": PRODUCER, "seq": seq, "ts": time.time_ns()}), pack(body)])
        done.wait(TIMEOUT)  # LINGER 0: keep the socket until the receiver has everything
    finally:
        sock.close(0)


def _child_push_ticks(endpoint: str, count: int, done: _Waitable) -> None:
    context = zmq.Context()
    try:
        _push_ticks(context, endpoint, count, done)
    finally:
        context.term()


def _pull_ticks(sock: zmq.Socket, count: int, warm: int) -> float:
    """Baseline receiver: unpack header and body of ``count`` messages; messages/s after warm."""
    sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    recv = sock.recv_multipart
    unpackb = msgpack.unpackb
    started = 0.0
    for index in range(count):
        if index == warm:
            started = time.perf_counter()
        header, body = recv()
        unpackb(header, raw=False)
        unpackb(body, raw=False)
    return (count - warm) / (time.perf_counter() - started)


def _raw_stream(context: zmq.Context, run_dir: str, transport: str, count: int) -> float:
    warm = int(count * WARM_FRACTION)
    if transport == "inproc":
        endpoint = "inproc://bench-push-{}".format(next(_ids))
    else:
        endpoint = "ipc://" + os.path.join(run_dir, "push.sock")
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(endpoint)
    try:
        if transport == "inproc":
            done_thread = threading.Event()
            thread = threading.Thread(target=_push_ticks, name="bench-push",
                                      args=(context, endpoint, count, done_thread))
            thread.start()
            try:
                return _pull_ticks(pull, count, warm)
            finally:
                done_thread.set()
                thread.join(TIMEOUT)
        done_process = _spawn.Event()
        process = _spawn.Process(target=_child_push_ticks, name="bench-push",
                                 args=(endpoint, count, done_process))
        process.start()
        try:
            return _pull_ticks(pull, count, warm)
        finally:
            done_process.set()
            _reap(process)
    finally:
        pull.close(0)


def _echo_server(context: zmq.Context, endpoint: str, ready: threading.Event,
                 stop: threading.Event) -> None:
    """Baseline echo: unpack the request's header and body, pack a reply header and body."""
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    ready.set()
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    unpackb = msgpack.unpackb
    seq = 0
    try:
        while not stop.is_set():
            if not sock.poll(100):
                continue
            while True:
                try:
                    identity, header, body = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                request = unpackb(header, raw=False)
                value = unpackb(body, raw=False)
                seq += 1
                sock.send_multipart([identity, pack({
                    "sender": ECHO, "seq": seq, "ts": time.time_ns(), "type": "echo.reply",
                    "corr": request["corr"]}), pack(value)])
    finally:
        sock.close(0)


def _raw_requests(context: zmq.Context, endpoint: str, count: int, warm: int) -> list[float]:
    """Baseline requester: DEALER, header and body packed and unpacked; latencies in µs."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    sock.connect(endpoint)
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    unpackb = msgpack.unpackb
    latencies: list[float] = []
    clock = time.perf_counter_ns
    try:
        for seq in range(1, warm + count + 1):
            started = clock()
            corr = "{}:{}:{}".format(REQUESTER, os.getpid(), seq)
            sock.send_multipart([pack({
                "sender": REQUESTER, "seq": seq, "ts": time.time_ns(), "type": "echo",
                "corr": corr, "reply_to": REQUESTER}), pack(TICK)])
            header, body = sock.recv_multipart()
            if unpackb(header, raw=False)["corr"] != corr:
                raise RuntimeError("baseline echo answered the wrong request")
            unpackb(body, raw=False)
            if seq > warm:
                latencies.append((clock() - started) / 1000.0)
    finally:
        sock.close(0)
    return latencies


def _child_raw_requests(endpoint: str, count: int, warm: int, out: Connection) -> None:
    context = zmq.Context()
    try:
        out.send(_raw_requests(context, endpoint, count, warm))
    finally:
        context.term()


def _raw_round_trip(context: zmq.Context, run_dir: str, transport: str,
                    count: int) -> list[float]:
    if transport == "inproc":
        endpoint = "inproc://bench-echo-{}".format(next(_ids))
    else:
        endpoint = "ipc://" + os.path.join(run_dir, "echo.sock")
    ready = threading.Event()
    stop = threading.Event()
    server = threading.Thread(target=_echo_server, name="bench-echo",
                              args=(context, endpoint, ready, stop))
    server.start()
    try:
        if not ready.wait(TIMEOUT):
            raise RuntimeError("baseline echo server did not start")
        if transport == "inproc":
            return _raw_requests(context, endpoint, count, RTT_WARM)
        return _in_child(_child_raw_requests, endpoint, count, RTT_WARM)
    finally:
        stop.set()
        server.join(TIMEOUT)


# -- the bus ------------------------------------------------------------------------------------

def _start_router(context: zmq.Context, run_dir: str) -> Router:
    settings = RouterSettings(
        run_dir=run_dir, credit_window=CREDIT_WINDOW, prefetch=PREFETCH,
        direct_bound=MAILBOX_BOUND, max_redeliveries=3, dead_letter_capacity=100,
        ping_interval=1.0, liveness_misses=3, tap_hwm=1000,
        inproc_endpoint="inproc://bench-bus-{}".format(next(_ids)), bind_ipc=True)
    router = Router(settings, context)
    router.start()
    return router


def _feed_bus(context: zmq.Context, endpoint: str, count: int, done: _Waitable) -> None:
    """Subject producer: ``BusClient.publish`` of the tick, blocking on credit, batching as an
    actor does (its loop flushes the outbox every turn; a tight loop flushes at MAX_BATCH and
    whenever it waits for credit)."""
    client = BusClient(PRODUCER, endpoint, context, batching=True)
    client.connect(TIMEOUT)
    try:
        publish = client.publish
        body = TICK
        for _ in range(count):
            publish(TOPIC, body, timeout=TIMEOUT)
        client.flush()
        done.wait(TIMEOUT)  # LINGER 0: keep the socket until the consumer has everything
    finally:
        client.close()


def _child_feed_bus(endpoint: str, count: int, done: _Waitable) -> None:
    context = zmq.Context()
    try:
        _feed_bus(context, endpoint, count, done)
    finally:
        context.term()


def _consume_client(client: BusClient, count: int, warm: int,
                    check: Callable[[], None]) -> float:
    """Subject consumer, a bare ``BusClient`` loop: decode, mark handled, ack in batches.

    ``check`` raises when the router or the producer died (instead of waiting for TIMEOUT)."""
    sock = client.sock
    assert sock is not None
    buffer = client.buffer
    handled = client.handled
    ack_batch = max(1, client.prefetch // 2)
    since_ack = 0
    received = 0
    started = 0.0
    deadline = time.monotonic() + TIMEOUT
    while received < count:
        if not buffer:
            if since_ack:
                client.ack()
                since_ack = 0
            if not sock.poll(200):
                check()
                if time.monotonic() > deadline:
                    raise RuntimeError("bus consumer got {} of {} messages in {} s".format(
                        received, count, TIMEOUT))
            client.drain()
            continue
        while buffer:
            delivery = buffer.popleft()
            delivery.header  # noqa: B018 - decoding the header is part of the work measured
            delivery.body()
            handled(delivery)
            received += 1
            if received == warm:
                started = time.perf_counter()
            since_ack += 1
            if since_ack >= ack_batch:
                client.ack()
                since_ack = 0
    elapsed = time.perf_counter() - started
    client.ack()
    return (count - warm) / elapsed


class _TickSink(Actor):
    """Subject consumer as an actor: one handler, the base class's loop and acks."""

    subscriptions = (Subscribe("tick.", LOSSLESS),)

    def __init__(self, name: str, count: int, warm: int) -> None:
        super().__init__(name)
        self.count = count
        self.warm = warm
        self.received = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self.running = threading.Event()
        self.finished = threading.Event()

    def on_start(self) -> None:
        self.running.set()

    @handles(TOPIC)
    def on_tick(self, body: Any, delivery: Delivery) -> None:
        self.received += 1
        if self.received == self.warm:
            self.started_at = time.perf_counter()
        elif self.received == self.count:
            self.finished_at = time.perf_counter()
            self.finished.set()


class _Echo(Actor):
    """The subject's echo: answers every ``echo`` request with its body."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.running = threading.Event()

    def on_start(self) -> None:
        self.running.set()

    @handles("echo")
    def on_echo(self, body: Any, delivery: Delivery) -> None:
        self.reply(delivery, "echo.reply", body)


def _run_options(context: zmq.Context, endpoint: str) -> RunOptions:
    return RunOptions(endpoint=endpoint, mailbox_bound=MAILBOX_BOUND, prefetch=PREFETCH,
                      send_timeout=TIMEOUT, status_interval=0, context=context)


class _ActorThread:
    """Run an actor on a thread of this process; stop it and release it on exit."""

    def __init__(self, actor: Actor, running: threading.Event, options: RunOptions) -> None:
        self.actor = actor
        self.thread = threading.Thread(target=actor.run, args=(options,), name=actor.name,
                                       daemon=True)
        self.thread.start()
        if not running.wait(TIMEOUT):
            self.close()
            raise RuntimeError("{} did not start".format(actor.name))

    def close(self) -> None:
        self.actor.request_stop()
        self.thread.join(TIMEOUT)
        self.actor.close()


def _bus_stream(context: zmq.Context, run_dir: str, transport: str, consumer: str,
                count: int) -> float:
    """Producer (thread for inproc, child process for ipc) -> router -> consumer thread."""
    warm = int(count * WARM_FRACTION)
    router = _start_router(context, run_dir)
    inproc = router.settings.inproc_endpoint
    producer_endpoint = inproc if transport == "inproc" else router.settings.bus_endpoint
    sink: _ActorThread | None = None
    client: BusClient | None = None
    stop: Callable[[], None] = _nothing
    try:
        # The consumer subscribes first: a PUB that nobody is subscribed to is dropped.
        if consumer == "actor":
            actor = _TickSink(CONSUMER, count, warm)
            sink = _ActorThread(actor, actor.running, _run_options(context, inproc))
        else:
            client = BusClient(CONSUMER, inproc, context, prefetch=PREFETCH,
                               subscriptions=(Subscription("tick.", LOSSLESS, MAILBOX_BOUND),))
            client.connect(TIMEOUT)
        if transport == "inproc":
            done_thread = threading.Event()
            producer_thread = threading.Thread(
                target=_feed_bus, name="bench-feed",
                args=(context, producer_endpoint, count, done_thread))
            producer_thread.start()
            feeding: Callable[[], bool] = producer_thread.is_alive

            def stop_thread() -> None:
                done_thread.set()
                producer_thread.join(TIMEOUT)
            stop = stop_thread
        else:
            done_process = _spawn.Event()
            process = _spawn.Process(target=_child_feed_bus, name="bench-feed",
                                     args=(producer_endpoint, count, done_process))
            process.start()
            feeding = process.is_alive

            def stop_process() -> None:
                done_process.set()
                _reap(process)
            stop = stop_process

        def check() -> None:
            if not router.is_alive():
                raise RuntimeError("the router thread died")
            if not feeding():
                raise RuntimeError("the producer died before the consumer had everything")
            if sink is not None and not sink.thread.is_alive():
                raise RuntimeError("the consumer actor died")

        if client is not None:
            return _consume_client(client, count, warm, check)
        assert sink is not None
        ticks = sink.actor
        assert isinstance(ticks, _TickSink)
        deadline = time.monotonic() + TIMEOUT
        while not ticks.finished.wait(0.2):
            check()
            if time.monotonic() > deadline:
                raise RuntimeError("actor consumer got {} of {} messages in {} s".format(
                    ticks.received, count, TIMEOUT))
        return (count - warm) / (ticks.finished_at - ticks.started_at)
    finally:
        stop()
        if client is not None:
            client.close()
        if sink is not None:
            sink.close()
        router.stop()


def _bus_requests(context: zmq.Context, endpoint: str, count: int, warm: int) -> list[float]:
    """Subject requester: ``BusClient.request`` to the echo actor; latencies in µs."""
    client = BusClient(REQUESTER, endpoint, context)
    client.connect(TIMEOUT)
    latencies: list[float] = []
    clock = time.perf_counter_ns
    try:
        for index in range(warm + count):
            started = clock()
            client.request(ECHO, "echo", TICK, timeout=TIMEOUT)
            if index >= warm:
                latencies.append((clock() - started) / 1000.0)
    finally:
        client.close()
    return latencies


def _child_bus_requests(endpoint: str, count: int, warm: int, out: Connection) -> None:
    context = zmq.Context()
    try:
        out.send(_bus_requests(context, endpoint, count, warm))
    finally:
        context.term()


def _bus_round_trip(context: zmq.Context, run_dir: str, transport: str,
                    count: int) -> list[float]:
    router = _start_router(context, run_dir)
    inproc = router.settings.inproc_endpoint
    echo = _Echo(ECHO)
    try:
        server = _ActorThread(echo, echo.running, _run_options(context, inproc))
        try:
            if transport == "inproc":
                return _bus_requests(context, inproc, count, RTT_WARM)
            return _in_child(_child_bus_requests, router.settings.bus_endpoint, count,
                             RTT_WARM)
        finally:
            server.close()
    finally:
        router.stop()


# -- processes --------------------------------------------------------------------------------

def _nothing() -> None:
    pass


def _reap(process: Any) -> None:
    process.join(TIMEOUT)
    if process.is_alive():
        process.terminate()
        process.join(5)


def _in_child(target: Callable[[str, int, int, Connection], None], endpoint: str, count: int,
              warm: int) -> list[float]:
    """Run a requester in a spawned child and return the latencies it sends back."""
    receiver, sender = _spawn.Pipe(duplex=False)
    process = _spawn.Process(target=target, name="bench-requester",
                             args=(endpoint, count, warm, sender))
    process.start()
    sender.close()
    try:
        if not receiver.poll(TIMEOUT):
            raise RuntimeError("requester child sent no results (exit code {})".format(
                process.exitcode))
        result: list[float] = receiver.recv()
        return result
    finally:
        receiver.close()
        _reap(process)


# -- the benchmark ------------------------------------------------------------------------------

RAW_STREAM = {
    "inproc": "raw PUSH/PULL inproc, two threads, msgpack header+body both sides",
    "ipc": "raw PUSH/PULL ipc, sender in a child process, msgpack header+body both sides",
}
RAW_ECHO = {
    "inproc": "raw DEALER/ROUTER echo inproc, two threads, msgpack header+body both sides",
    "ipc": "raw DEALER/ROUTER echo ipc, requester in a child process, msgpack both sides",
}


def run(rounds: int = ROUNDS, messages: int = MESSAGES,
        round_trips: int = ROUND_TRIPS) -> list[Row]:
    """Measure every case ``rounds`` times, interleaved; return one row per figure.

    The ipc cases start children with the ``spawn`` method: a script calling this must guard
    its entry point with ``if __name__ == "__main__":`` (``python -m tests.bench`` does)."""
    run_dir = tempfile.mkdtemp(prefix="fxcm-")
    context = zmq.Context()
    streams: dict[tuple[str, str], list[float]] = {}
    trips: dict[tuple[str, str], list[tuple[float, float]]] = {}
    stream_cases = [(transport, kind) for transport in ("inproc", "ipc")
                    for kind in ("raw", "client", "actor")]
    trip_cases = [(transport, kind) for transport in ("inproc", "ipc") for kind in ("raw", "bus")]
    _log("bus: {} rounds; {:,} messages per stream run, {:,} round trips per latency run; "
         "credit {}, prefetch {}, mailbox bound {}".format(
             rounds, messages, round_trips, CREDIT_WINDOW, PREFETCH, MAILBOX_BOUND))
    try:
        for number in range(1, rounds + 1):
            line = []
            for transport, kind in stream_cases:
                if kind == "raw":
                    rate = _raw_stream(context, run_dir, transport, messages)
                else:
                    rate = _bus_stream(context, run_dir, transport, kind, messages)
                streams.setdefault((transport, kind), []).append(rate)
                line.append("{} {} {:,.0f}/s".format(transport, kind, rate))
            for transport, kind in trip_cases:
                if kind == "raw":
                    latencies = _raw_round_trip(context, run_dir, transport, round_trips)
                else:
                    latencies = _bus_round_trip(context, run_dir, transport, round_trips)
                p50 = percentile(latencies, 0.50)
                p99 = percentile(latencies, 0.99)
                trips.setdefault((transport, kind), []).append((p50, p99))
                line.append("{} {} rtt {:.0f}/{:.0f} us".format(transport, kind, p50, p99))
            ratios = ["{} {} {:.2f}".format(transport, kind, streams[(transport, kind)][-1]
                                            / streams[(transport, "raw")][-1])
                      for transport, kind in stream_cases if kind != "raw"]
            _log("  round {}: {}\n    ratios this round: {}".format(
                number, "; ".join(line), ", ".join(ratios)))
    finally:
        context.term()
        shutil.rmtree(run_dir, ignore_errors=True)

    rows: list[Row] = []
    consumers = {"client": "BusClient consumer", "actor": "Actor consumer"}
    for transport in ("inproc", "ipc"):
        baseline = median(streams[(transport, "raw")])
        producer = "" if transport == "inproc" else " (producer in child process)"
        for kind in ("client", "actor"):
            rows.append(compare(
                "bus pub->sub lossless {}{}, {}".format(transport, producer, consumers[kind]),
                median(streams[(transport, kind)]), "msgs/s", baseline,
                baseline_name=RAW_STREAM[transport],
                target=0.40 if transport == "inproc" else None))
    for transport in ("inproc", "ipc"):
        requester = "" if transport == "inproc" else " (requester in child process)"
        for index, label in ((0, "p50"), (1, "p99")):
            rows.append(compare(
                "bus request/reply {}{} {}".format(transport, requester, label),
                median([pair[index] for pair in trips[(transport, "bus")]]), "us",
                median([pair[index] for pair in trips[(transport, "raw")]]),
                baseline_name=RAW_ECHO[transport], higher_is_better=False))
    return rows
