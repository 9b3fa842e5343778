"""The faults: SIGKILL of a process-placed actor, a Redis outage with a restart on the same
socket, a flood of malformed frames on the bus, a flood of bad commands on Redis."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from typing import Any

import redis
import zmq

from actors._redis_server import EmbeddedRedis
from actors.command_handler._auth import sign
from protocol import wire
from tests.helpers import bus_status, wait_for


def kill_actor(run_dir: str, name: str) -> int:
    """SIGKILL the process of ``name`` once it runs; returns the pid killed."""
    def running_pid() -> int:
        view = bus_status(run_dir)["actors"].get(name, {})
        pid = int(view.get("pid") or 0)
        return pid if view.get("state") == "running" and pid else 0

    pid = int(wait_for(running_pid, 60, "{} to run before the kill".format(name), 0.1))
    os.kill(pid, signal.SIGKILL)
    return pid


def stop_redis(server: EmbeddedRedis) -> None:
    """SHUTDOWN SAVE: the server writes its dataset and exits at once, as a Redis with
    persistence does when it is restarted (so the late-joiner keys survive the outage)."""
    client = redis.Redis(unix_socket_path=server.socket_path, socket_timeout=5)
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
