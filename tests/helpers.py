"""Test helpers: waiting on conditions, a probe on the bus, a host in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq

import config
from actors._parent import exit_with_parent
from actors.host import Host, merge_status
from bus import LOSSLESS, BusClient, ControlChannel, Subscription, ipc_endpoint

REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.01) -> Any:
    """Poll ``condition`` until it is truthy; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after {} s waiting for {}".format(timeout, what))
        time.sleep(interval)


class Probe:
    """A test's own connection to the bus: publishes, and collects what it subscribed to."""

    def __init__(self, name: str, endpoint: str, topics: tuple[str, ...] = (),
                 context: zmq.Context[Any] | None = None, bound: int = 1_000_000) -> None:
        self.client = BusClient(name, endpoint, context,
                                subscriptions=tuple(Subscription(t, LOSSLESS, bound)
                                                    for t in topics), prefetch=512)
        self.client.connect(10)
        self.received: list[tuple[str, Any]] = []

    def publish(self, topic: str, body: Any, msg_type: str, timeout: float = 30.0) -> None:
        self.client.publish(topic, body, msg_type, timeout=timeout)

    def pump(self, timeout: float = 0.05) -> None:
        self.client.poll(timeout)
        buffer = self.client.buffer
        while buffer:
            delivery = buffer.popleft()
            self.received.append((delivery.type, delivery.body()))
            self.client.handled(delivery)
        self.client.ack()

    def collect(self, condition: Callable[[list[tuple[str, Any]]], bool],
                timeout: float = 30.0, what: str = "messages") -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        while not condition(self.received):
            if time.monotonic() > deadline:
                raise AssertionError("timed out after {} s waiting for {} (have {})".format(
                    timeout, what, len(self.received)))
            self.pump()
        return self.received

    def bodies(self, msg_type: str) -> list[Any]:
        return [body for kind, body in self.received if kind == msg_type]

    def close(self) -> None:
        self.client.bye()
        self.client.close()


def control(run_dir: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    channel = ControlChannel(ipc_endpoint(run_dir, "bus.sock"))
    try:
        return channel.call(request, timeout)
    finally:
        channel.close()


def embedded_redis_url(run_dir: str) -> str:
    """The URL of a host's embedded Redis, password included, as the tools find it."""
    from actors.tools._connect import resolve_redis_url

    return resolve_redis_url(None, run_dir, environ={})


def bus_status(run_dir: str) -> dict[str, Any]:
    return merge_status(control(run_dir, {"op": "status"})["status"])


def write_config(directory: Path, run_dir: str, actors: list[dict[str, Any]],
                 **sections: Any) -> Path:
    # Port 0: the HTTP port is picked by the kernel, and the embedded Redis listens on its unix
    # socket only, so hosts of concurrent tests never fight over a port.
    # Drills (crash, stall, release) are off by default in a host; the suite uses them.
    config: dict[str, Any] = {"run_dir": run_dir, "http": {"port": 0}, "actors": actors,
                              "redis": {"embedded_port": 0}}
    config.update(sections)
    config["bus"] = dict({"drills": True}, **sections.get("bus", {}))
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


class HostProcess:
    """``fxcm host`` in a child process, as an operator runs it."""

    def __init__(self, config: Path, run_dir: str, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(dict(os.environ, PYTHONPATH=str(REPO_ROOT)), **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "host", "--config", str(config)],
            cwd=str(REPO_ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=exit_with_parent)  # no host outlives a killed test run

    def wait_ready(self, actors: tuple[str, ...] = (), timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("host exited with {}:\n{}".format(
                    self.proc.returncode, self.output()))
            if not os.path.exists(os.path.join(self.run_dir, "bus.json")):
                return False
            try:
                status = bus_status(self.run_dir)
            except Exception:
                return False
            states = status.get("actors", {})
            return all(states.get(name, {}).get("state") == "running" for name in actors)
        wait_for(ready, timeout, "the host and {} to run".format(", ".join(actors) or "router"),
                 interval=0.05)

    def status(self) -> dict[str, Any]:
        return bus_status(self.run_dir)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def open_calendar(directory: Path, now_ms: int | None = None) -> Path:
    """A calendar open from two days before ``now_ms`` to two days after (UTC), with no breaks
    and no holidays, so that tests on a simulated market do not depend on the weekday."""
    import datetime

    now = datetime.datetime.fromtimestamp((now_ms or time.time() * 1000) / 1000,
                                          datetime.timezone.utc)
    names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    data = {
        "default": {"weekly_open": "{} 00:00@UTC".format(names[(now.weekday() - 2) % 7]),
                    "weekly_close": "{} 00:00@UTC".format(names[(now.weekday() + 3) % 7]),
                    "daily_breaks": [], "holidays": []},
        "profiles": {},
    }
    path = directory / "calendar.json"
    path.write_text(json.dumps(data))
    return path


@contextmanager
def host_in_thread(tmp_path: Path, run_dir: str, actors: list[dict[str, Any]],
                   **sections: Any) -> Iterator[Host]:
    """A real Host (router, supervisor, thread actors) inside the test process."""
    settings = config.load(str(write_config(tmp_path, run_dir, actors, **sections)))
    host = Host(settings, context=zmq.Context())
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(host.run())
        except BaseException as exc:  # shown by the wait below, not lost in a thread
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    names = tuple(actor["name"] for actor in actors)

    def running() -> bool:
        if result:
            raise AssertionError("the host ended before its actors ran: {!r}".format(result[0]))
        return os.path.exists(os.path.join(run_dir, "bus.json")) and all(
            bus_status(run_dir)["actors"].get(n, {}).get("state") == "running" for n in names)

    wait_for(running, 60, "the host's actors to run", interval=0.05)
    try:
        yield host
    finally:
        host.request_stop()
        thread.join(60)
        assert result == [0]


@contextmanager
def host_process(tmp_path: Path, run_dir: str, actors: list[dict[str, Any]],
                 env: dict[str, str] | None = None, **sections: Any) -> Iterator[HostProcess]:
    host = HostProcess(write_config(tmp_path, run_dir, actors, **sections), run_dir,
                       tmp_path / "host.log", env)
    try:
        host.wait_ready(tuple(actor["name"] for actor in actors))
        yield host
    finally:
        host.stop()




class RedisSubscriber:
    """A downstream consumer's redis-py subscription on a thread of its own. Like a real
    consumer it subscribes again by itself when Redis comes back. It keeps every message raw,
    with its arrival time, and calls ``on_change("subscribed" | "lost")`` as that happens."""

    def __init__(self, url: str, channels: list[str],
                 on_change: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.channels = channels
        self.on_change = on_change
        self.messages: list[tuple[float, str, bytes]] = []  # (monotonic, channel, data)
        self.subscriptions = 0
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-subscriber", daemon=True)
        self._thread.start()
        wait_for(self.subscribed.is_set, 30, "the Redis subscriber to subscribe")

    def _run(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url, socket_timeout=5,
                                          retry=Retry(NoBackoff(), 0))
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(*self.channels)
                confirmed = 0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.1)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(self.channels):
                            self.subscriptions += 1
                            self.subscribed.set()
                            if self.on_change is not None:
                                self.on_change("subscribed")
                    elif message["type"] == "message":
                        with self._lock:
                            self.messages.append((time.monotonic(),
                                                  message["channel"].decode(),
                                                  message["data"]))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if self.subscribed.is_set() and self.on_change is not None:
                    self.on_change("lost")
                self.subscribed.clear()
                self._stop.wait(0.05)  # Redis is away: the consumer's own retry interval
            finally:
                try:
                    pubsub.close()
                    client.close()
                except (redis.RedisError, OSError):
                    pass

    def snapshot(self) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return list(self.messages)

    def count(self, channel: str) -> int:
        return sum(1 for _, name, _ in self.snapshot() if name == channel)

    def payloads(self, channel: str) -> list[Any]:
        """The JSON payloads received on ``channel``, in arrival order."""
        return [json.loads(data) for _, name, data in self.snapshot() if name == channel]

    def wait(self, channel: str, condition: Callable[[list[Any]], bool], timeout: float = 30.0,
             what: str = "messages") -> list[Any]:
        wait_for(lambda: condition(self.payloads(channel)), timeout, what)
        return self.payloads(channel)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
