"""The faults: SIGKILL of a process-placed actor, an injected crash of an actor's next handler
(the router's ``crash`` control op), a consumer stalled until its lossless mailbox is full (the
``stall`` and ``release`` ops), a Redis outage with a restart on the same socket, a flood of
malformed frames on the bus, a flood of bad commands on Redis."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import zmq
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors._redis_server import EmbeddedRedis
from actors.command_handler._auth import sign
from protocol import wire
from tests.helpers import bus_status, control, wait_for


def kill_actor(run_dir: str, name: str) -> int:
    """SIGKILL the process of ``name`` once it runs; returns the pid killed."""
    def running_pid() -> int:
        view = bus_status(run_dir)["actors"].get(name, {})
        pid = int(view.get("pid") or 0)
        return pid if view.get("state") == "running" and pid else 0

    pid = int(wait_for(running_pid, 60, "{} to run before the kill".format(name), 0.1))
    os.kill(pid, signal.SIGKILL)
    return pid


def actor_view(run_dir: str, name: str) -> dict[str, Any]:
    view: dict[str, Any] = bus_status(run_dir)["actors"].get(name, {})
    return view


def wait_restarted(run_dir: str, name: str, restarts_before: int, timeout: float = 60.0
                   ) -> dict[str, Any]:
    """Wait until the supervisor has restarted ``name`` and it runs (connected) again."""
    def again() -> dict[str, Any] | None:
        view = actor_view(run_dir, name)
        if int(view.get("restarts") or 0) > restarts_before and view.get("state") == "running" \
                and view.get("connected"):
            return view
        return None

    view: dict[str, Any] = wait_for(again, timeout, "{} to run again".format(name), 0.02)
    return view


def crash_actor(run_dir: str, name: str) -> tuple[float, dict[str, Any]]:
    """The crash op: ``name``'s next handler raises InjectedCrash. Returns the seconds from
    the request until it runs again, and its view then (restarts, last_exit)."""
    before = int(wait_for(lambda: (v := actor_view(run_dir, name)).get("state") == "running"
                          and v.get("connected") and v, 60,
                          "{} to run before the crash".format(name), 0.05)["restarts"])
    answer = control(run_dir, {"op": "crash", "name": name})
    if not answer.get("ok"):
        raise AssertionError("crash {} refused: {}".format(name, answer.get("error")))
    started = time.monotonic()
    view = wait_restarted(run_dir, name, before)
    return time.monotonic() - started, view


@dataclass
class Stall:
    """What a stall of a lossless consumer showed."""

    actor: str
    topic: str
    producer: str
    bound: int = 0
    max_depth: int = 0
    fill_seconds: float = 0.0  # from the stall request to the mailbox at its bound
    held_seconds: float = 0.0  # from the stall request to the release
    drain_seconds: float = 0.0  # from the release to the backlog drained
    drained_to: int = 0
    producer_blocked: bool = False
    backpressure_events: int = 0  # the producer's, during the stall
    samples: int = 0


def stall_until_full(run_dir: str, name: str, topic: str, producer: str,
                     on_event: Callable[[str, str], None], hold: float = 1.0,
                     timeout: float = 30.0) -> Stall:
    """The stall op on ``name`` until its ``topic`` mailbox reaches its bound and ``producer``
    is held back, for ``hold`` seconds more; then the release op, and the time until the
    backlog is drained. Samples the router's figures every 50 ms; tells ``on_event(kind,
    text)`` as each stage is reached."""
    result = Stall(name, topic, producer)

    def sample() -> tuple[dict[str, Any], dict[str, Any]]:
        actors = bus_status(run_dir)["actors"]
        box: dict[str, Any] = next((b for b in actors.get(name, {}).get("mailboxes", [])
                                    if b.get("topic") == topic), {})
        result.samples += 1
        result.max_depth = max(result.max_depth, int(box.get("depth") or 0))
        return box, actors.get(producer, {})

    box, before = sample()
    result.bound = int(box.get("bound") or 0)
    events_before = int(before.get("backpressure_events") or 0)
    answer = control(run_dir, {"op": "stall", "name": name, "seconds": timeout + hold + 30})
    if not answer.get("ok"):
        raise AssertionError("stall {} refused: {}".format(name, answer.get("error")))
    started = time.monotonic()
    try:
        def full() -> bool:
            box, source = sample()
            return int(box.get("depth") or 0) >= result.bound and bool(source.get("blocked"))

        wait_for(full, timeout, "{}'s {} mailbox at its bound of {} with {} held back".format(
            name, topic, result.bound, producer), 0.05)
        result.fill_seconds = time.monotonic() - started
        result.producer_blocked = True
        on_event("observed", "{}'s {} mailbox at its bound ({} messages) {:.2f} s into the "
                 "stall; {} held back (no credit)".format(name, topic, result.bound,
                                                           result.fill_seconds, producer))
        end = time.monotonic() + hold
        while time.monotonic() < end:
            _, source = sample()
            time.sleep(0.05)  # the hold itself: the stall lasts this long on purpose
        result.backpressure_events = int(source.get("backpressure_events") or 0) - events_before
    finally:
        released = control(run_dir, {"op": "release", "name": name})
        result.held_seconds = time.monotonic() - started
    if not released.get("ok"):
        raise AssertionError("release {} refused: {}".format(name, released.get("error")))
    released_at = time.monotonic()
    on_event("fault", "release op: {} after {:.2f} s stalled (max depth seen {})".format(
        name, result.held_seconds, result.max_depth))
    result.drained_to = max(256, result.bound // 20)
    wait_for(lambda: int(sample()[0].get("depth") or 0) <= result.drained_to, 120,
             "{}'s backlog to drain".format(name), 0.05)
    result.drain_seconds = time.monotonic() - released_at
    on_event("recovery", "{}'s {} backlog drained to <= {} {:.2f} s after the release".format(
        name, topic, result.drained_to, result.drain_seconds))
    return result


def stop_redis(server: EmbeddedRedis) -> None:
    """SHUTDOWN SAVE: the server writes its dataset and exits at once, as a Redis with
    persistence does when it is restarted (so the late-joiner keys survive the outage)."""
    # No retries: redis-py would otherwise reconnect to the server it just shut down, for
    # about 4 s, before it reports the (expected) lost connection.
    client = redis.Redis(unix_socket_path=server.socket_path, socket_timeout=5,
                         retry=Retry(NoBackoff(), 0))
    try:
        client.shutdown(save=True)
    except (redis.ConnectionError, OSError):
        pass  # the server closed the connection: that is the shutdown
    finally:
        client.close()
    process = server.process
    if process is not None:
        process.wait(30)


def flood_bus(run_dir: str, frames: int, seed: int) -> int:
    """Raw DEALER peers that never say HELLO: random bytes, bad signatures, truncated frame
    sets, unknown verbs. Returns the number of frame sets sent."""
    rng = random.Random(seed)
    context = zmq.Context()
    sent = 0
    try:
        for peer in range(4):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.connect("ipc://" + os.path.join(run_dir, "bus.sock"))
            for _ in range(frames // 4):
                kind = rng.randrange(6)
                if kind == 0:  # random bytes
                    message = [rng.randbytes(rng.randint(0, 200))]
                elif kind == 1:  # bad signature
                    message = [b"FXA0", wire.PUB, b"bar.EURUSD.1m", b"bar", b"", b"\x00"]
                elif kind == 2:  # truncated
                    message = [wire.SIGNATURE, rng.choice([wire.PUB, wire.SEND, wire.HELLO,
                                                           wire.ACK, wire.PUBN])]
                elif kind == 3:  # unknown verb
                    message = [wire.SIGNATURE, b"NOPE" + rng.randbytes(4), b"x"]
                elif kind == 4:  # a plausible PUB from a peer that never said HELLO
                    message = [wire.SIGNATURE, wire.PUB, b"bar.EURUSD.1m", b"bar",
                               rng.randbytes(8), rng.randbytes(32)]
                else:  # garbage msgpack in a HELLO
                    message = [wire.SIGNATURE, wire.HELLO, b"chaos-" + str(peer).encode(),
                               rng.randbytes(rng.randint(1, 64))]
                sock.send_multipart(message)
                sent += 1
            sock.close()
    finally:
        context.term()
    return sent


def flood_commands(url: str, channel: str, kid: str, secret: bytes, seed: int
                   ) -> dict[str, int]:
    """Malformed, unsigned, badly signed, oversized and replayed commands on the commands
    channel (redis-py PUBLISH). Returns how many of each were sent."""
    rng = random.Random(seed)
    client = redis.Redis.from_url(url, socket_timeout=10)
    counts: dict[str, int] = {}

    def send(kind: str, payload: bytes | str) -> None:
        client.publish(channel, payload)
        counts[kind] = counts.get(kind, 0) + 1

    try:
        # First, while the rate limiter's bucket is full: one valid signed command (an audit,
        # no repair) and the same bytes again, which replay protection must refuse.
        now = time.time()
        nonce = uuid.uuid4().hex
        args: dict[str, Any] = {"symbols": ["EURUSD"], "repair": False}
        valid = json.dumps({"cmd": "fxcm_tail_guard", "req_id": "chaos-valid", "ts": now,
                            "args": args, "auth": {"kid": kid, "nonce": nonce, "sig": sign(
                                secret, "fxcm_tail_guard", "chaos-valid", now, args, kid,
                                nonce)}})
        send("valid_signed", valid)
        for _ in range(5):
            send("replayed", valid)
        for _ in range(100):
            send("not_json", rng.randbytes(rng.randint(1, 300)))
        bodies: tuple[Any, ...] = ([], "text", 42, {"cmd": 7}, {"req_id": "x"},
                                     {"cmd": "fxcm_warmup"},
                                     {"cmd": "rm_rf", "req_id": "chaos-unknown",
                                      "ts": time.time(), "args": {}})
        for body in bodies:
            for _ in range(10):
                send("malformed", json.dumps(body))
        for index in range(30):
            send("unsigned_legacy", json.dumps({"type": "fxcm_warmup",
                                                "req_id": "chaos-legacy-{}".format(index)}))
        for index in range(30):
            send("bad_signature", json.dumps({
                "cmd": "fxcm_tail_guard", "req_id": "chaos-badsig-{}".format(index), "ts": now,
                "args": {"symbols": ["EURUSD"]},
                "auth": {"kid": kid, "nonce": uuid.uuid4().hex, "sig": "0" * 64}}))
        for index in range(10):
            send("oversized", json.dumps({"cmd": "fxcm_tail_guard",
                                          "req_id": "chaos-big-{}".format(index), "ts": now,
                                          "args": {"symbols": ["EURUSD"]},
                                          "padding": "x" * 70_000}))
    finally:
        client.close()
    return counts
