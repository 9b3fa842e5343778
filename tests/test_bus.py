"""The router and the actor-side client over real ZeroMQ sockets (no host)."""

from __future__ import annotations

import os
import random
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bus import (
    LATEST,
    LOSSLESS,
    BusClient,
    ControlChannel,
    Router,
    RouterSettings,
    Subscription,
    ipc_endpoint,
)
from protocol import wire
from protocol.errors import BackpressureError, EndpointError, RequestTimeout
from tests.helpers import wait_for

CREDIT_WINDOW = 256


def router_settings(run_dir: str, **overrides: Any) -> RouterSettings:
    values: dict[str, Any] = dict(
        run_dir=run_dir, credit_window=CREDIT_WINDOW, prefetch=64, direct_bound=1000,
        max_redeliveries=3, dead_letter_capacity=100, ping_interval=1.0, liveness_misses=3,
        tap_hwm=1000)
    values.update(overrides)
    return RouterSettings(**values)


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    # destroy, not term: a failed test leaves its clients' sockets open, and term would wait
    # for them for ever (holding the GIL, so that not even the test timeout fires)
    ctx.destroy(linger=0)


@pytest.fixture
def router(run_dir: str, context: zmq.Context[Any]) -> Iterator[Router]:
    instance = Router(router_settings(run_dir), context)
    instance.start()
    yield instance
    instance.stop()


def router_status(router: Router) -> dict[str, Any]:
    channel = ControlChannel(router.settings.inproc_endpoint, router.context)
    try:
        status: dict[str, Any] = channel.call({"op": "status"})["status"]
        return status
    finally:
        channel.close()


def connect(router: Router, name: str, subscriptions: tuple[Subscription, ...] = (),
            prefetch: int = 64) -> BusClient:
    client = BusClient(name, router.settings.inproc_endpoint, router.context,
                       subscriptions=subscriptions, prefetch=prefetch)
    client.connect(10)
    return client


def produce(client: BusClient, items: list[tuple[str, Any]], errors: list[BaseException]
            ) -> threading.Thread:
    def run() -> None:
        try:
            for topic, body in items:
                client.publish(topic, body, "item", timeout=60)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_lossless_mailbox_holds_producer_back_and_loses_nothing(router: Router) -> None:
    bound = 1000
    total = 100_000
    consumer = connect(router, "slow", (Subscription("n.", LOSSLESS, bound),))
    producer = connect(router, "fast")
    errors: list[BaseException] = []
    thread = produce(producer, [("n.x", i) for i in range(total)], errors)
    # the consumer reads nothing until its mailbox is full and the producer is held back
    wait_for(lambda: router_status(router)["actors"]["fast"]["blocked"], 60,
             "the producer to be held back")

    received: list[int] = []
    deadline = time.monotonic() + 100
    while len(received) < total and time.monotonic() < deadline and not errors:
        consumer.poll(0.1)
        while consumer.buffer:
            delivery = consumer.buffer.popleft()
            received.append(delivery.body())
            consumer.handled(delivery)
        consumer.ack()
    thread.join(10)

    assert not errors
    assert received == list(range(total))  # all, in order, no duplicates
    status = router_status(router)
    mailbox = status["actors"]["slow"]["mailboxes"][1]
    assert mailbox["peak"] <= bound + CREDIT_WINDOW
    assert mailbox["peak"] >= bound  # it really filled up
    assert status["actors"]["fast"]["backpressure_events"] > 0
    assert producer.stats["blocked"] > 0


def test_latest_mailbox_keeps_newest_per_key_and_never_blocks(router: Router) -> None:
    keys = 10
    total = 100_000
    consumer = connect(router, "viewer", (Subscription("k.", LATEST, keys),), prefetch=4)
    producer = connect(router, "quotes")
    errors: list[BaseException] = []
    thread = produce(producer, [("k.{}".format(i % keys), i) for i in range(total)], errors)

    expected = {"k.{}".format(k): total - keys + k for k in range(keys)}
    newest: dict[str, int] = {}

    def caught_up() -> bool:
        consumer.poll(0.05)
        while consumer.buffer:
            delivery = consumer.buffer.popleft()
            newest[delivery.topic.decode()] = delivery.body()
            consumer.handled(delivery)
            time.sleep(0.001)  # slow consumer
        consumer.ack()
        return newest == expected

    wait_for(caught_up, 100, "the newest value of every key")
    thread.join(10)
    assert not errors
    status = router_status(router)
    assert status["actors"]["quotes"]["backpressure_events"] == 0
    assert producer.stats["backpressure_timeouts"] == 0
    assert status["actors"]["viewer"]["mailboxes"][1]["conflated"] > 0


def test_send_blocks_then_raises_backpressure_error_when_mailbox_stays_full(
        router: Router) -> None:
    connect(router, "stuck", (Subscription("s.", LOSSLESS, 10),), prefetch=1)
    producer = connect(router, "eager")
    with pytest.raises(BackpressureError, match="no credit"):
        for i in range(10 * CREDIT_WINDOW):
            producer.publish("s.x", i, "item", timeout=0.5)
    assert producer.publish("s.x", "one more", "item", timeout=0) is False
    assert router_status(router)["actors"]["eager"]["blocked"] is True


def test_request_gets_reply_and_times_out_without_one(router: Router) -> None:
    server = connect(router, "server")
    client = connect(router, "client")
    answered = threading.Event()

    def serve() -> None:
        while not answered.is_set():
            server.poll(0.05)
            while server.buffer:
                delivery = server.buffer.popleft()
                server.reply(delivery, "pong", {"echo": delivery.body()})
                server.handled(delivery)
                answered.set()
            server.ack()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert client.request("server", "ping", 7, timeout=10) == ("pong", {"echo": 7})
    thread.join(5)
    with pytest.raises(RequestTimeout):
        client.request("server", "ping", 8, timeout=0.3)


def test_send_to_unknown_actor_is_a_counted_dead_letter(router: Router) -> None:
    producer = connect(router, "typo")
    producer.send("nobody", "x", 1)
    status = wait_for(lambda: (s := router_status(router))["router"]["unroutable"] == 1 and s,
                      10, "the unroutable count")
    assert status["actors"]["typo"]["dead_letters"] == 1
    assert "no actor named 'nobody'" in status["dead_letters"][-1]["reason"]


def test_garbage_on_the_ipc_socket_is_counted_and_the_bus_keeps_working(
        router: Router, context: zmq.Context[Any]) -> None:
    echo = connect(router, "echo")
    asker = BusClient("asker", router.settings.bus_endpoint, context)
    asker.connect(10)
    rng = random.Random(7)
    garbage: list[list[bytes]] = [
        [b"FXA1"],
        [b"XXXX", b"PUB", b"t", b"h", b"b"],
        [b"FXA2", b"PUB", b"t", b"h", b"b"],  # another version of the wire
        [b"", b"PUB", b"t", b"h", b"b"],
        [b"PUB", b"FXA1", b"t", b"h", b"b"],  # signature and verb swapped
        [b"FXA1", b"SEND", b"echo"],
        [b"FXA1", b"NOPE", b"x"],
        [b"FXA1", b"pub", b"t", b"h", b"b"],  # verbs are upper case
        [b"FXA1", b"", b"x"],
        [b"FXA1", b"DELIVER", b"x"],  # a verb of the router's, not a peer's
        [b"FXA1", b"PUB", b"t", b"h", b"x" * (wire.MAX_FRAME_BYTES + 1)],
        [b"FXA1", b"HELLO", b"\xff\xfe", wire.pack({})],
        [b"FXA1", b"HELLO", b"name", b"\xc1"],
        [b"FXA1", b"HELLO", b"name", wire.pack({"subscriptions": "all"})],
        [b"FXA1", b"HELLO", b"name", wire.pack({"prefetch": -1})],
    ]
    garbage += [[rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 6))]
                for _ in range(300)]
    attacker: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    attacker.setsockopt(zmq.LINGER, 0)
    attacker.connect(router.settings.bus_endpoint)
    for frames in garbage:
        attacker.send_multipart(frames)

    # A peer that said HELLO and then sends undecodable headers and bodies to an actor.
    rogue = BusClient("rogue", router.settings.bus_endpoint, context)
    rogue.connect(10)
    rogue.credit -= 1
    assert rogue.sock is not None
    rogue.sock.send_multipart([wire.SIGNATURE, wire.SEND, b"echo", b"echo", b"\xc1", b"\xc1"])

    wait_for(lambda: router_status(router)["router"]["malformed"] >= len(garbage), 20,
             "every garbage message to be counted")

    def echo_serves() -> None:
        while True:
            echo.poll(0.05)
            while echo.buffer:
                delivery = echo.buffer.popleft()
                echo.handled(delivery)
                try:
                    body = delivery.body()
                except Exception:
                    continue  # the rogue's message: undecodable, skipped
                echo.reply(delivery, "echo.reply", body)
                return

    thread = threading.Thread(target=echo_serves, daemon=True)
    thread.start()
    assert asker.request("echo", "echo", "still here", timeout=10) == ("echo.reply",
                                                                        "still here")
    thread.join(5)
    assert router.is_alive()
    status = router_status(router)
    assert status["router"]["internal_errors"] == 0
    attacker.close(0)


def test_run_dir_and_socket_file_are_private(router: Router, run_dir: str) -> None:
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    socket_path = router.settings.bus_endpoint[len("ipc://"):]
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600


def test_ipc_path_over_107_bytes_is_refused_with_a_clear_error() -> None:
    with pytest.raises(EndpointError, match="107"):
        ipc_endpoint("/tmp/" + "d" * 120, "bus.sock")


def test_router_delivers_nothing_to_the_tap_when_nobody_taps(router: Router) -> None:
    consumer = connect(router, "c", (Subscription("t.", LOSSLESS, 100),))
    producer = connect(router, "p")
    for i in range(50):
        producer.publish("t.x", i, "item")
    wait_for(lambda: consumer.poll(0.05) >= 50 or len(consumer.buffer) >= 50, 10,
             "50 deliveries")
    assert router_status(router)["router"]["tap_copies"] == 0


# -- regressions found in review ----------------------------------------------------------------

def test_a_delivery_handled_across_a_router_restart_is_not_acked_on_the_new_router(
        run_dir: str, context: zmq.Context[Any]) -> None:
    """Delivery ids count per router connection: a message still being handled when the
    client joined a restarted router must not ack the new router's message of the same id."""
    first = Router(router_settings(run_dir), context)
    first.start()
    consumer = connect(first, "consumer", (Subscription("x.", LOSSLESS, 100),))
    producer = connect(first, "producer")
    producer.publish("x.1", "old", "item", timeout=10)
    wait_for(lambda: consumer.poll(0.05) or bool(consumer.buffer), 10, "the old delivery")
    in_hand = consumer.buffer.popleft()  # a handler is busy with it
    producer.close()
    first.stop()
    second = Router(router_settings(run_dir), context)
    second.start()
    try:
        consumer.connect(10)  # as after the old router fell silent
        producer = connect(second, "producer")
        producer.publish("x.2", "new", "item", timeout=10)
        wait_for(lambda: consumer.poll(0.05) or bool(consumer.buffer), 10, "the new delivery")
        assert consumer.buffer[0].delivery_id == in_hand.delivery_id  # ids start over
        consumer.handled(in_hand)  # the handler finishes the old message
        consumer.ack()
        assert consumer.stats["stale_handled"] == 1
        status = router_status(second)["actors"]["consumer"]
        assert (status["acked"], status["inflight"]) == (0, 1)  # "new" still owed
        consumer.handled(consumer.buffer.popleft())
        consumer.ack()
        wait_for(lambda: router_status(second)["actors"]["consumer"]["acked"] == 1, 10,
                 "the new delivery acked")
        producer.close()
        consumer.close()
    finally:
        second.stop()


def test_a_producer_is_never_held_back_by_its_own_mailbox(router: Router) -> None:
    # it subscribes to what it publishes (as history_poller does with bars): only it could
    # drain that mailbox, so blocking it there would be a deadlock
    loop = connect(router, "loop", (Subscription("self.", LOSSLESS, 10),))
    for index in range(5 * CREDIT_WINDOW):
        assert loop.publish("self.x", index, "item", timeout=1.0)
    assert router_status(router)["actors"]["loop"]["backpressure_events"] == 0


def test_a_crash_that_names_no_delivery_charges_no_message(router: Router) -> None:
    first = connect(router, "victim")  # the name exists before anything is sent to it
    producer = connect(router, "p")
    producer.send("victim", "job", "fine")
    wait_for(lambda: first.poll(0.05) or first.buffer, 10, "the delivery")
    first.bye(crashed=True, error="a timer failed")  # not the message's fault
    first.close()
    for _ in range(3):
        victim = connect(router, "victim")

        def delivered(client: BusClient = victim) -> bool:
            return bool(client.poll(0.05) or client.buffer)

        wait_for(delivered, 10, "the redelivery")
        victim.bye(crashed=True, error="a timer failed")
        victim.close()
    victim = connect(router, "victim")
    wait_for(lambda: victim.poll(0.05) or victim.buffer, 10, "the redelivery")
    assert victim.buffer[0].body() == "fine"
    status = router_status(router)
    assert status["actors"]["victim"]["dead_letters"] == 0
    assert status["actors"]["victim"]["crashes"] == 4


def test_an_ipc_actor_busy_longer_than_the_liveness_window_is_not_declared_dead(
        router: Router, context: zmq.Context[Any]) -> None:
    from actors.base import Actor, RunOptions, handles

    calls: list[int] = []

    class Slow(Actor):
        @handles("job")
        def on_job(self, body: Any, delivery: Any) -> None:
            calls.append(delivery.attempt)
            time.sleep(3.5)  # a long handler, longer than 3 missed 1 s pings

    options = RunOptions(router.settings.bus_endpoint, mailbox_bound=50, prefetch=8,
                         send_timeout=5, context=zmq.Context(), status_interval=0,
                         placement="process")
    slow = Slow("slow")
    thread = threading.Thread(target=slow.run, args=(options,), daemon=True)
    thread.start()
    wait_for(lambda: router_status(router)["actors"].get("slow", {}).get("connected"), 10,
             "the slow actor")
    producer = connect(router, "producer")
    producer.send("slow", "job", 1)
    wait_for(lambda: router_status(router)["actors"]["slow"]["acked"] == 1, 15, "the ack")
    status = router_status(router)["actors"]["slow"]
    slow.request_stop()
    thread.join(10)
    assert calls == [1]
    assert status["crashes"] == 0 and status["redelivered"] == 0


def test_a_callback_that_posts_itself_again_does_not_starve_timers_or_stop(
        router: Router) -> None:
    from actors.base import Actor, RunOptions

    class Busy(Actor):
        def on_start(self) -> None:
            self.ticks = 0
            self.every(0.05, self.tick)
            self.call_soon(self.again)

        def again(self) -> None:
            self.call_soon(self.again)  # always more to do, like a tick drain under load

        def tick(self) -> None:
            self.ticks += 1

    busy = Busy("busy")
    options = RunOptions(router.settings.inproc_endpoint, mailbox_bound=50, prefetch=8,
                         send_timeout=5, context=router.context, status_interval=0)
    thread = threading.Thread(target=busy.run, args=(options,), daemon=True)
    thread.start()
    wait_for(lambda: getattr(busy, "ticks", 0) >= 3, 10, "the timer to run")
    busy.request_stop()
    thread.join(5)
    assert not thread.is_alive()


def test_a_paced_latest_consumer_gets_the_newest_per_key_and_few_deliveries(
        router: Router) -> None:
    """prefetch_limit + ack_interval: the router conflates between pulls, so a flood costs the
    consumer a handful of deliveries, and the newest value of every key still arrives."""
    from actors.base import Actor, RunOptions, Subscribe, handles

    class Paced(Actor):
        subscriptions = (Subscribe("px.", LATEST),)
        prefetch_limit = 4
        ack_interval = 0.2

        def on_start(self) -> None:
            self.newest: dict[str, int] = {}
            self.deliveries = 0

        @handles("item")
        def on_item(self, body: Any, delivery: Any) -> None:
            self.deliveries += 1
            self.newest[delivery.topic.decode()] = body

    paced = Paced("paced")
    options = RunOptions(router.settings.inproc_endpoint, mailbox_bound=100, prefetch=128,
                         send_timeout=5, context=router.context, status_interval=0)
    thread = threading.Thread(target=paced.run, args=(options,), daemon=True)
    thread.start()
    wait_for(lambda: hasattr(paced, "newest") and router_status(router)["actors"].get(
        "paced", {}).get("connected"), 10, "the paced consumer to join")
    producer = connect(router, "producer")
    keys = ["px.a", "px.b", "px.c"]
    total = 6000
    for value in range(total):
        producer.publish(keys[value % 3], value, "item", timeout=10)
    newest = {key: total - 3 + index for index, key in enumerate(keys)}
    wait_for(lambda: getattr(paced, "newest", {}) == newest, 20, "the newest of every key")
    paced.request_stop()
    thread.join(10)
    producer.close()
    assert paced.deliveries < total // 20, paced.deliveries
