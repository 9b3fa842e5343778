"""Attacks on a running host, as a hostile or careless local user would try them (issue 15).

Each test drives a real host (``fxcm host`` in a child process, the sim broker, the embedded
Redis) over its real sockets: the embedded Redis, the bus's ipc socket, the HTTP port and the
run dir. The tests that need a second local user run a stock ``python3`` as ``nobody`` through
``setpriv`` (CI runs as root); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import zmq

import config
from actors._health import FeedWatch
from actors._redis_server import EmbeddedRedis
from bus import BusClient
from bus._acl import enforced, owners_of
from protocol import wire
from protocol.errors import BusDenied
from protocol.market import Bar
from tests.helpers import (
    REPO_ROOT,
    HostProcess,
    RedisSubscriber,
    bus_status,
    control,
    embedded_redis_url,
    open_calendar,
    wait_for,
    write_config,
)

FXCM = [sys.executable, "-m", "actors.cli"]
SYSTEM_PYTHON = "/usr/bin/python3"
SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
NO_SECOND_USER = (os.geteuid() != 0 or SETPRIV is None or not os.path.exists(SYSTEM_PYTHON))
SECOND_USER_SKIP = "needs root, setpriv and {} to act as a second local user (nobody)".format(
    SYSTEM_PYTHON)
DANGEROUS = [("CONFIG", "SET", "dir", "/tmp"), ("CONFIG", "GET", "dir"), ("SAVE",),
             ("BGSAVE",), ("BGREWRITEAOF",), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"),
             ("SHUTDOWN", "NOSAVE"), ("REPLICAOF", "127.0.0.1", "1"), ("SLAVEOF", "NO", "ONE"),
             ("MIGRATE", "127.0.0.1", "1", "k", "0", "100"), ("ACL", "LIST"), ("MONITOR",),
             ("FLUSHALL",), ("KEYS", "*"), ("CLIENT", "KILL", "ID", "1")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pipeline(tmp_path: Path, run_dir: str, drills: bool | None = None,
             **sections: Any) -> Path:
    """The shipped actors on the sim broker, always open, with ``sections`` over them. Drills
    as the shipped default (off) unless ``drills`` says otherwise."""
    values: dict[str, Any] = dict(symbols=["EURUSD", "XAUUSD"],
                                  calendar_file=str(open_calendar(tmp_path)),
                                  cache={"dir": str(tmp_path / "cache")})
    values.update(sections)
    path = write_config(tmp_path, run_dir, config.settings.load_defaults()["actors"], **values)
    data = json.loads(path.read_text())
    if drills is None:
        data["bus"].pop("drills")
    else:
        data["bus"]["drills"] = drills
    path.write_text(json.dumps(data))
    return path


def start(tmp_path: Path, config_path: Path, run_dir: str,
          actors: tuple[str, ...] = ("redis_publisher", "tick_aggregator", "fxcm_session")
          ) -> HostProcess:
    host = HostProcess(config_path, run_dir, tmp_path / "host.log")
    try:
        host.wait_ready(actors)
    except BaseException:
        host.stop()
        raise
    return host


def fxcm(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FXCM_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(FXCM + list(argv), cwd=str(REPO_ROOT), env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def http_port(run_dir: str) -> int:
    with open(os.path.join(run_dir, "host.json")) as handle:
        return int(json.load(handle)["http_port"])


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path),
                                    timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def as_nobody(script: str, timeout: float = 60.0) -> Any:
    """Run ``script`` in a stock python3 as the user nobody; returns what it printed (JSON)."""
    done = subprocess.run(AS_NOBODY + [SYSTEM_PYTHON, "-c", script], capture_output=True,
                          text=True, timeout=timeout, cwd="/", check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class RawPeer:
    """A bus peer speaking the wire protocol by hand, as a forger would (no client checks)."""

    def __init__(self, run_dir: str) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect("ipc://" + os.path.join(run_dir, "bus.sock"))

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart([wire.SIGNATURE, *frames])

    def hello(self, name: str, **meta: Any) -> list[bytes]:
        """Say HELLO; returns the answer's frames (WELCOME or DENY)."""
        self.send(wire.HELLO, name.encode("utf-8"), wire.pack(meta))
        return self.expect((wire.WELCOME, wire.DENY))

    def expect(self, verbs: tuple[bytes, ...], timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no {} from the router".format(verbs)
            if self.sock.poll(int(remaining * 1000)):
                frames = self.sock.recv_multipart()
                if frames[1] in verbs:
                    return frames

    def close(self) -> None:
        self.sock.close(0)
        self.context.term()


@pytest.fixture(scope="module")
def host_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fxcm-s-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, host_dir: str) -> Iterator[HostProcess]:
    """The shipped pipeline as `fxcm host` runs it, with the embedded Redis also on TCP."""
    tmp_path = tmp_path_factory.mktemp("security")
    running = start(tmp_path, pipeline(tmp_path, host_dir, redis={"port": free_port()}),
                    host_dir)
    yield running
    running.stop()


def redis_port(host: HostProcess) -> int:
    config_path = Path(host.log_path).with_name("config.json")
    return int(json.loads(config_path.read_text())["redis"]["port"])


# -- 1. the embedded Redis -------------------------------------------------------------------

def test_the_embedded_redis_refuses_clients_without_the_password(host: HostProcess) -> None:
    socket_path = os.path.join(host.run_dir, "redis.sock")
    for client in (redis.Redis(unix_socket_path=socket_path, socket_timeout=5),
                   redis.Redis(port=redis_port(host), socket_timeout=5)):
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        with pytest.raises(redis.AuthenticationError):
            client.delete("fxcm:commands:nonce:any")
        client.close()


def test_the_embedded_redis_denies_dangerous_commands_even_with_the_password(
        host: HostProcess) -> None:
    client = redis.Redis.from_url(embedded_redis_url(host.run_dir), socket_timeout=5)
    try:
        for command in DANGEROUS:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        assert client.ping()  # still up: SHUTDOWN was refused
    finally:
        client.close()
    # and the pipeline publishes through it, password and all
    subscriber = RedisSubscriber(embedded_redis_url(host.run_dir), ["fxcm:price_tik"])
    try:
        subscriber.wait("fxcm:price_tik", lambda items: len(items) >= 2, 60, "snapshots")
    finally:
        subscriber.close()


def test_the_password_is_private_and_on_no_command_line(host: HostProcess) -> None:
    path = os.path.join(host.run_dir, "redis.pass")
    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    password = Path(path).read_text().strip()
    assert len(password) >= 32
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path("/proc", pid, "cmdline").read_bytes()
            except OSError:
                continue
            assert password.encode() not in cmdline, "the password is in the argv of " + pid
    assert password not in host.output()
    assert password not in json.dumps(host.status())


@pytest.mark.skipif(NO_SECOND_USER, reason=SECOND_USER_SKIP)
def test_another_local_user_cannot_reach_the_embedded_redis(host: HostProcess) -> None:
    script = """
import json, socket
result = {}
try:
    unix = socket.socket(socket.AF_UNIX)
    unix.connect(%r)
    result["unix"] = "connected"
except OSError as exc:
    result["unix"] = type(exc).__name__
def ask(line):
    tcp = socket.create_connection(("127.0.0.1", %d), timeout=10)
    tcp.sendall(line)
    answer = tcp.recv(200).decode(errors="replace")
    tcp.close()
    return answer
result["ping"] = ask(b"PING\\r\\n")
result["config"] = ask(b"CONFIG SET dir /tmp\\r\\n")
result["auth"] = ask(b"AUTH default guessed\\r\\n")
print(json.dumps(result))
""" % (os.path.join(host.run_dir, "redis.sock"), redis_port(host))
    result = as_nobody(script)
    assert result["unix"] == "PermissionError"
    assert result["ping"].startswith("-NOAUTH")
    assert result["config"].startswith("-NOAUTH")
    assert result["auth"].startswith("-WRONGPASS")


@pytest.mark.timeout(240)
def test_the_banners_watch_lines_work_as_printed(host: HostProcess) -> None:
    lines = [line.split("fxcm.host:", 1)[1].strip() for line in host.output().splitlines()
             if "fxcm.host:" in line and ("watch: " in line or "   or: " in line)]
    commands = [line.split(": ", 1)[1] for line in lines]
    assert len(commands) == 2, lines
    assert "redis.pass" not in commands[0] and "REDISCLI_AUTH" in commands[1]
    for command in commands:
        # as a user pastes it into a shell on a machine with nothing else installed
        process = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd="/",
                                   env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
                                   start_new_session=True)
        try:
            seen: list[str] = []
            assert process.stdout is not None
            deadline = time.monotonic() + 60
            while not any("fxcm:price_tik" in line and "snap_ts" in line for line in seen):
                assert time.monotonic() < deadline, "no message from {!r}: {}".format(
                    command, seen[-5:])
                line = process.stdout.readline()
                assert line, "{!r} ended: {}".format(command, seen[-5:])
                seen.append(line)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


# -- 4. the run dir ----------------------------------------------------------------------------

@pytest.mark.skipif(NO_SECOND_USER, reason=SECOND_USER_SKIP)
def test_a_run_dir_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    planted = "/tmp/fxcm-planted-{}".format(random.getrandbits(32))
    # nobody creates the run dir first (as anyone can under /tmp) and plants links in it
    as_nobody("""
import json, os
os.mkdir(%r, 0o755)
os.symlink(%r, os.path.join(%r, "host.lock"))
os.symlink(%r, os.path.join(%r, "bus.json.tmp"))
with open(os.path.join(%r, "bus.json"), "w") as handle:
    json.dump({"endpoint": "ipc://" + os.path.join(%r, "bus.sock")}, handle)
print(json.dumps("planted"))
""" % (planted, str(victim), planted, str(victim), planted, planted, planted))
    try:
        done = subprocess.run(FXCM + ["host", "--config", str(pipeline(tmp_path, planted))],
                              cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), check=False)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and "run_dir: {} belongs to uid 65534".format(
            planted) in errors[0], done.stderr
        assert victim.read_text() == "precious\n"
        assert sorted(os.listdir(planted)) == ["bus.json", "bus.json.tmp", "host.lock"]
        # the tools do not talk to what another user may have planted there either
        status = fxcm("status", "--run-dir", planted)
        assert status.returncode == 2 and "belongs to uid 65534" in status.stderr
        attach = fxcm("attach", "--run-dir", planted, "tests.sample_actors:Echo")
        assert attach.returncode == 2 and "belongs to uid 65534" in attach.stderr
    finally:
        subprocess.run(["rm", "-rf", planted], check=False)


@pytest.mark.parametrize("layout", ["writable by others", "a symlink"])
def test_an_unsafe_run_dir_of_our_own_is_refused(tmp_path: Path, layout: str) -> None:
    real = tempfile.mkdtemp(prefix="fxcm-u-")
    run_dir = real
    try:
        if layout == "writable by others":
            os.chmod(real, 0o777)
            expected = "is writable by group or others"
        else:
            run_dir = real + "-link"
            os.symlink(real, run_dir)
            expected = "is a symlink"
        done = subprocess.run(FXCM + ["host", "--config", str(pipeline(tmp_path, run_dir))],
                              cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), check=False)
        assert done.returncode == 2, done.stderr
        assert "run_dir: {} {}".format(run_dir, expected) in done.stderr
        assert not os.listdir(real)
    finally:
        if run_dir != real:
            os.unlink(run_dir)
        shutil.rmtree(real, ignore_errors=True)


def test_files_in_the_run_dir_are_created_without_following_symlinks(tmp_path: Path) -> None:
    run_dir = tempfile.mkdtemp(prefix="fxcm-l-")
    victims = {name: tmp_path / "victim-{}".format(name) for name in (
        "bus.json.tmp", "host.json.tmp", "redis.pass")}
    try:
        for name, victim in victims.items():
            victim.write_text("precious\n")
            os.symlink(victim, os.path.join(run_dir, name))
        host = start(tmp_path, pipeline(tmp_path, run_dir), run_dir)
        try:
            for name, victim in victims.items():
                assert victim.read_text() == "precious\n", name
            for name in ("bus.json", "host.json", "redis.pass"):
                info = os.lstat(os.path.join(run_dir, name))
                assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        finally:
            host.stop()
        # a lock that is a link is refused outright, with one line
        lock_victim = tmp_path / "victim-lock"
        lock_victim.write_text("precious\n")
        os.symlink(lock_victim, os.path.join(run_dir, "host.lock.new"))
        os.replace(os.path.join(run_dir, "host.lock.new"), os.path.join(run_dir, "host.lock"))
        done = subprocess.run(FXCM + ["host", "--config", str(tmp_path / "config.json")],
                              cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), check=False)
        assert done.returncode == 2 and "host.lock is a symlink" in done.stderr, done.stderr
        assert lock_victim.read_text() == "precious\n"
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# -- 5. secrets on command lines -----------------------------------------------------------------

def test_a_process_placed_actor_gets_its_settings_without_argv(tmp_path: Path,
                                                               run_dir: str) -> None:
    secret = "s3cret-{}".format(random.getrandbits(32))
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo", "placement": "process",
               "settings": {"api_key": secret}}]
    path = write_config(tmp_path, run_dir, actors,
                        redis={"url": "redis://fxcm:{}@127.0.0.1:1/0".format(secret)})
    host = start(tmp_path, path, run_dir, ("echo",))
    try:
        pid = int(bus_status(run_dir)["actors"]["echo"]["pid"])
        assert pid and pid != host.proc.pid
        cmdline = Path("/proc", str(pid), "cmdline").read_bytes().decode()
        assert "actors.child" in cmdline and "--stdin" in cmdline
        assert secret not in cmdline
        # ... and it got them: it echoes (it joined with the host's settings and token)
        answer = control(run_dir, {"op": "status"})["status"]["actors"]["echo"]
        assert answer["connected"] and answer["connects"] == 1
    finally:
        host.stop()


# -- 6. the bus ----------------------------------------------------------------------------------

def forged_bar() -> Bar:
    now = int(time.time() // 60 * 60_000) - 120_000
    return Bar("EURUSD", "1m", now, now + 59_999, 9.9, 9.9, 9.9, 9.9, 1.0, 1, True, False,
               "tick")


@pytest.mark.timeout(300)
def test_an_attached_actor_cannot_forge_bars_or_health(host: HostProcess) -> None:
    subscriber = RedisSubscriber(embedded_redis_url(host.run_dir), ["fxcm:ohlcv"])
    client = BusClient("forger", "ipc://" + os.path.join(host.run_dir, "bus.sock"))
    try:
        client.connect(10)
        before = bus_status(host.run_dir)["router"]["refused_publishes"]
        for topic, body, kind in (("bar.EURUSD.1m", forged_bar(), "bar"),
                                  ("command.result", {"req_id": "x", "state": "ok"},
                                   "command.result"),
                                  ("heartbeat", {"state": "stream"}, "heartbeat"),
                                  ("status.public", {"note": "all fine"}, "status.public"),
                                  ("actor.status.tick_aggregator", {"state": "running"},
                                   "actor.status")):
            with pytest.raises(BusDenied, match="reserved for other actors"):
                client.publish(topic, body, kind, timeout=5)
        # a forger that skips the client's own check: the router refuses and says so
        client._reserved = {}
        client._allowed = {}
        client.publish("bar.EURUSD.1m", forged_bar(), "bar", timeout=5)
        with pytest.raises(BusDenied, match="may only come from history_poller, "
                                            "tick_aggregator"):
            wait_for(lambda: client.poll(0.1) and False, 10, "the router's DENY")
        status = bus_status(host.run_dir)
        assert status["router"]["refused_publishes"] == before + 1
        assert status["actors"]["forger"]["refused"] == 1
        # its own topics it may publish
        assert client.publish("alert.forger", {"ok": True}, "alert", timeout=5)
        # the forged bar never reaches Redis; the real ones published after it do
        published = len(subscriber.payloads("fxcm:ohlcv"))
        subscriber.wait("fxcm:ohlcv", lambda items: len(items) > published, 120,
                        "a real bar after the forged one")
        assert all(bar["close"] != 9.9 for payload in subscriber.payloads("fxcm:ohlcv")
                   for bar in payload["bars"])
    finally:
        client.bye()
        client.close()
        subscriber.close()


def test_a_name_held_by_a_live_connection_or_the_host_cannot_be_taken(
        host: HostProcess) -> None:
    owner = BusClient("watcher", "ipc://" + os.path.join(host.run_dir, "bus.sock"))
    thief = RawPeer(host.run_dir)
    try:
        owner.connect(10)
        refused = thief.hello("watcher", pid=1)
        assert refused[1] == wire.DENY and b"held by a live connection" in refused[3]
        for name in ("tick_aggregator", "$host"):
            refused = thief.hello(name, pid=1, transport="inproc")
            assert refused[1] == wire.DENY and b"belongs to the host's own actors" in refused[3]
        status = bus_status(host.run_dir)
        assert status["actors"]["watcher"]["pid"] == os.getpid()
        assert status["actors"]["tick_aggregator"]["connects"] == 1
        assert status["router"]["refused_hellos"] >= 3
        # the owner is undisturbed
        owner.poll(0.2)
        assert owner.publish("alert.watcher", {"n": 1}, "alert", timeout=5)
    finally:
        owner.bye()
        owner.close()
        thief.close()


@pytest.mark.parametrize("name, meta, refusal", [
    ("evil\nfxcm.host: all good", {}, "the name must be"),
    ("x" * 65, {}, "the name must be"),
    ("big", {"subscriptions": [["tick.", "lossless", 2 ** 64 - 1]]}, None),
    ("greedy", {"prefetch": 10 ** 9}, None),
])
def test_hello_names_and_bounds_are_checked(host: HostProcess, name: str, meta: dict[str, Any],
                                            refusal: str | None) -> None:
    peer = RawPeer(host.run_dir)
    before = bus_status(host.run_dir)["router"]
    try:
        if refusal is not None:
            answer = peer.hello(name, **meta)
            assert answer[1] == wire.DENY and refusal.encode() in answer[3]
        else:
            peer.send(wire.HELLO, name.encode(), wire.pack(meta))
            wait_for(lambda: bus_status(host.run_dir)["router"]["malformed"]
                     > before["malformed"], 20, "the malformed HELLO to be counted")
        status = bus_status(host.run_dir)
        assert name not in status["actors"]
        assert not any(line.startswith("fxcm.host: all good")
                       for line in host.output().splitlines())
    finally:
        peer.close()


def test_drills_and_host_ops_are_refused_on_a_host_that_does_not_enable_them(
        host: HostProcess) -> None:
    crash = fxcm("crash", "--run-dir", host.run_dir, "tick_aggregator")
    assert crash.returncode == 1
    assert "drills are disabled on this host (set bus.drills" in crash.stderr
    answer = control(host.run_dir, {"op": "dead", "name": "tick_aggregator", "reason": "x"})
    assert answer["ok"] is False and "only the host" in answer["error"]
    status = bus_status(host.run_dir)
    assert status["actors"]["tick_aggregator"]["injected_crashes"] == 0
    assert status["actors"]["tick_aggregator"]["connected"]
    assert status["actors"]["tick_aggregator"]["crashes"] == 0
    assert status["router"]["refused_controls"] >= 2


# -- 2. a subscriber that leaves ------------------------------------------------------------------

def attach_subscriber(run_dir: str, log_path: Path) -> subprocess.Popen[bytes]:
    """``fxcm attach`` of a lossless ``tick.`` collector, as an actor author runs one."""
    handle = open(log_path, "wb")  # noqa: SIM115 - the child holds it
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        FXCM + ["attach", "--run-dir", run_dir, "--name", "collector", "--settings",
                json.dumps({"topics": ["tick."]}), "tests.sample_actors:Collector"],
        cwd=str(REPO_ROOT), env=env, stdout=handle, stderr=subprocess.STDOUT)


def feed_held(run_dir: str) -> bool:
    session = bus_status(run_dir)["actors"]["fxcm_session"]
    return bool(session["blocked"]) and "collector:tick." in session["blocked_by"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("leaves", ["ctrl-c", "kill -9"])
def test_a_vanished_attached_subscriber_stops_holding_the_feed(
        tmp_path: Path, run_dir: str, leaves: str) -> None:
    path = pipeline(tmp_path, run_dir, bus={"mailbox_bound": 200,
                                            "detached_mailbox_seconds": 6.0},
                    broker={"sim": {"tick_rate_per_second": 50.0}})
    host = start(tmp_path, path, run_dir)
    subscriber = attach_subscriber(run_dir, tmp_path / "attach.log")
    try:
        wait_for(lambda: bus_status(run_dir)["actors"].get("collector", {}).get("connected"),
                 60, "the collector to attach", 0.05)
        subscriber.send_signal(signal.SIGINT if leaves == "ctrl-c" else signal.SIGKILL)
        subscriber.wait(30)
        wait_for(lambda: feed_held(run_dir), 60, "fxcm_session held back by the gone collector",
                 0.05)
        held_at = time.monotonic()
        wait_for(lambda: not feed_held(run_dir), 60, "the feed to be released", 0.1)
        assert time.monotonic() - held_at < 30
        status = bus_status(run_dir)
        assert "collector" not in status["actors"]
        [expired] = [item for item in status["expired"] if item["name"] == "collector"]
        assert expired["messages"] >= 200 and "bus.detached_mailbox_seconds" in expired["reason"]
        assert status["router"]["detached_expired"] == 1
        assert "collector did not come back within 6 s" in host.output()
        shown = fxcm("status", "--run-dir", run_dir)
        assert "mailboxes dropped: collector did not come back" in shown.stdout
        with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(
                http_port(run_dir)), timeout=10) as response:
            assert "fxcm_bus_detached_expired_total 1.0" in response.read().decode()
        # the feed flows again: ticks reach the host's own tick_aggregator
        delivered = status["actors"]["tick_aggregator"]["delivered"]
        wait_for(lambda: bus_status(run_dir)["actors"]["tick_aggregator"]["delivered"]
                 > delivered + 100, 60, "ticks to flow again")
        assert not bus_status(run_dir)["actors"]["fxcm_session"]["blocked"]
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
        host.stop()


@pytest.mark.timeout(300)
def test_fxcm_detach_releases_a_gone_subscriber_by_hand(tmp_path: Path, run_dir: str) -> None:
    path = pipeline(tmp_path, run_dir, bus={"mailbox_bound": 200,
                                            "detached_mailbox_seconds": 3600.0},
                    broker={"sim": {"tick_rate_per_second": 50.0}})
    host = start(tmp_path, path, run_dir)
    subscriber = attach_subscriber(run_dir, tmp_path / "attach.log")
    try:
        wait_for(lambda: bus_status(run_dir)["actors"].get("collector", {}).get("connected"),
                 60, "the collector to attach", 0.05)
        connected = fxcm("detach", "--run-dir", run_dir, "collector")
        assert connected.returncode == 1 and "is connected" in connected.stderr
        subscriber.send_signal(signal.SIGINT)
        subscriber.wait(30)
        wait_for(lambda: feed_held(run_dir), 60, "fxcm_session held back", 0.05)
        own = fxcm("detach", "--run-dir", run_dir, "tick_aggregator")
        assert own.returncode == 1 and "one of the host's actors" in own.stderr
        done = fxcm("detach", "--run-dir", run_dir, "collector")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("collector: mailboxes dropped (")
        wait_for(lambda: not feed_held(run_dir), 20, "the feed to be released", 0.05)
        status = bus_status(run_dir)
        assert "collector" not in status["actors"]
        assert status["expired"][-1]["reason"] == "released by hand (fxcm detach)"
        assert status["actors"]["tick_aggregator"]["mailboxes"]  # kept: the host's own
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
        host.stop()


# -- 10. phantom peers, slowloris -----------------------------------------------------------------

def rss_kib(pid: int) -> int:
    for line in Path("/proc", str(pid), "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    for line in Path("/proc", str(pid), "status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def test_a_flood_of_hellos_with_made_up_names_does_not_stay(tmp_path: Path,
                                                            run_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    host = start(tmp_path, write_config(tmp_path, run_dir, actors,
                                        bus={"max_peers": 200,
                                             "detached_mailbox_seconds": 2.0}),
                 run_dir, ("echo",))
    try:
        baseline = bus_status(run_dir)["router"]["peers"]
        peers = [RawPeer(run_dir) for _ in range(10)]
        try:
            for index in range(3000):
                peer = peers[index % len(peers)]
                meta: dict[str, Any] = {"pid": index}
                if index % 2:
                    meta["subscriptions"] = [["junk.{}".format(index), "lossless", 10]]
                peer.send(wire.HELLO, "phantom-{}".format(index).encode(), wire.pack(meta))
            wait_for(lambda: bus_status(run_dir)["router"]["refused_hellos"]
                     + bus_status(run_dir)["router"]["phantoms_expired"] >= 1000, 60,
                     "the flood to be handled")
            assert bus_status(run_dir)["router"]["peers"] <= baseline + 200
        finally:
            for peer in peers:
                peer.close()
        # silent, they are dropped: the table is back to the host's own names
        wait_for(lambda: bus_status(run_dir)["router"]["peers"] == baseline, 60,
                 "the phantom names to expire")
        status = bus_status(run_dir)
        assert status["router"]["refused_hellos"] > 0  # beyond bus.max_peers
        assert status["actors"]["echo"]["connected"]
    finally:
        host.stop()


def test_idle_http_connections_hold_no_thread_and_are_cut_off(tmp_path: Path,
                                                              run_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    host = start(tmp_path, write_config(tmp_path, run_dir, actors,
                                        http={"port": 0, "timeout_seconds": 3.0}),
                 run_dir, ("echo",))
    idle: list[socket.socket] = []
    try:
        port = http_port(run_dir)
        before = threads(host.proc.pid)
        for index in range(120):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            if index % 2:
                conn.sendall(b"GET /metr")  # a slowloris: a request that never ends
            idle.append(conn)
        assert get(port, "/livez", timeout=10)[0] == 200  # served meanwhile
        assert threads(host.proc.pid) <= before + 2
        started = time.monotonic()
        for conn in idle:
            conn.settimeout(30)
            assert conn.recv(100) == b""  # closed by the host
        assert time.monotonic() - started < 20
        with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(port),
                                    timeout=10) as response:
            text = response.read().decode()
        assert "fxcm_http_timed_out_connections_total 120.0" in text
    finally:
        for conn in idle:
            conn.close()
        host.stop()


# -- 9. readiness ---------------------------------------------------------------------------------

@pytest.mark.timeout(300)
@pytest.mark.parametrize("stalled, reason", [
    ("tick_aggregator", "fxcm_session held back by backpressure"),
    ("fxcm_session", "no tick or bar published for"),
])
def test_readiness_fails_while_the_feed_is_stalled_and_recovers(
        tmp_path: Path, run_dir: str, stalled: str, reason: str) -> None:
    path = pipeline(tmp_path, run_dir, drills=True, health={"feed_stall_seconds": 4.0},
                    bus={"mailbox_bound": 100},
                    broker={"sim": {"tick_rate_per_second": 20.0}})
    host = start(tmp_path, path, run_dir)
    try:
        port = http_port(run_dir)
        wait_for(lambda: get(port, "/readyz")[0] == 200, 60, "/readyz 200 before the stall")
        stall = fxcm("stall", "--run-dir", run_dir, stalled, "120")
        assert stall.returncode == 0, stall.stderr
        started = time.monotonic()
        code, body = wait_for(lambda: (answer := get(port, "/readyz"))[0] == 503 and answer,
                              60, "/readyz to fail", 0.2)
        assert time.monotonic() - started < 40
        assert body["ready"] is False and body["not_running"] == []
        assert any(reason in line for line in body["reasons"]), body
        _, status = get(port, "/status")
        assert any(reason in line for line in status["readiness"]["reasons"])
        assert get(port, "/livez")[0] == 200  # the process is alive all along
        assert fxcm("release", "--run-dir", run_dir, stalled).returncode == 0
        wait_for(lambda: get(port, "/readyz")[0] == 200, 60, "/readyz 200 after the release",
                 0.2)
    finally:
        host.stop()


@pytest.mark.timeout(300)
def test_an_unwritable_cache_dir_degrades_the_cache_instead_of_crashing(
        tmp_path: Path, run_dir: str) -> None:
    # Root writes through any mode bits, so the cache dir sits under a regular file: no one
    # can create it. Seed 001 runs on with a read-only cache and counts cache_io errors.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cache_dir = blocker / "cache"
    host = start(tmp_path, pipeline(tmp_path, run_dir, cache={"dir": str(cache_dir)}), run_dir)
    try:
        subscriber = RedisSubscriber(embedded_redis_url(run_dir), ["fxcm:ohlcv"])
        try:
            subscriber.wait("fxcm:ohlcv", lambda items: any(
                item.get("complete") is not False for item in items), 120, "a final bar")
        finally:
            subscriber.close()
        assert "NOT WRITABLE (Not a directory)" in host.output()  # said at start

        def metrics() -> str:
            with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(
                    http_port(run_dir)), timeout=10) as reply:
                return str(reply.read().decode())

        def cache_io(page: str) -> float:
            line = 'fxcm_connector_errors_total{type="cache_io"} '
            found = [row[len(line):] for row in page.splitlines() if row.startswith(line)]
            return float(found[0]) if found else 0.0

        # errors of the bar store (each file it could not open) and of the publisher's journal
        # (actors' figures reach /metrics with their next status)
        text = wait_for(lambda: "fxcm_store_read_only 1.0" in (page := metrics())
                        and "fxcm_redis_journal_unavailable 1.0" in page and page, 60,
                        "the actors' metrics")
        assert cache_io(text) >= 2, text
        _, status = get(http_port(run_dir), "/status")
        assert status["actor_status"]["history_poller"]["store"]["counters"]["io_errors"] >= 1
        samples = status["actor_status"]["redis_publisher"]["metrics"][
            "fxcm_connector_errors_total"]["samples"]
        assert [{"type": "cache_io"}, 1.0] in samples
        _, status = get(http_port(run_dir), "/status")
        actors = status["actor_status"]
        assert actors["history_poller"]["store"]["read_only"] is True
        assert "Not a directory" in actors["redis_publisher"]["journal"]["unavailable"]
        assert all(info["restarts"] == 0 for info in status["host"]["actors"].values()), \
            status["host"]["actors"]
    finally:
        host.stop()


def test_feed_watch_judges_silence_only_with_the_market_open() -> None:
    open_now = [True]
    watch = FeedWatch(10.0, lambda now_ms: open_now[0], now=0.0)
    watch.observe({"tick.": 5}, 0.0, 0)
    watch.observe({"tick.": 5}, 9.0, 0)
    assert watch.reasons({}, 9.0) == []
    assert "no tick or bar published for 11 s" in watch.reasons({}, 11.0)[0]
    watch.observe({"tick.": 6}, 12.0, 0)
    assert watch.reasons({}, 12.0) == []
    open_now[0] = False
    watch.observe({"tick.": 6}, 100.0, 0)
    assert watch.reasons({}, 100.0) == []  # closed: silence is expected
    open_now[0] = True
    watch.observe({"tick.": 6}, 101.0, 0)
    assert watch.reasons({}, 105.0) == []  # just opened: the full interval first
    held = {"fxcm_session": {"blocked_seconds": 12.0, "blocked_by": ["x:tick."]}}
    assert "fxcm_session held back by backpressure for 12 s (full: x:tick." in \
        watch.reasons(held, 105.0)[0]
    assert FeedWatch(0.0, None, 0.0).reasons(held, 105.0) == []  # off


def test_reserved_topics_follow_the_longest_prefix_and_the_hosts_actors() -> None:
    reserved = {"tick.": ["fxcm_session"], "tick.$clock": ["clock"], "bar.": ["a", "b"]}
    assert owners_of("tick.EURUSD", reserved) == {"fxcm_session"}
    assert owners_of("tick.$clock", reserved) == {"clock"}
    assert owners_of("actor.status.a", reserved) == {"a"}
    assert owners_of("alert.x", reserved) is None
    assert enforced(reserved, ["fxcm_session", "b"]) == {"tick.": ["fxcm_session"],
                                                        "bar.": ["a", "b"]}


# -- 10. a least-privilege Redis ACL --------------------------------------------------------------

LEAST_PRIVILEGE = [
    "resetkeys", "~fxcm:*", "resetchannels", "&fxcm:*", "-@all", "+ping", "+select",
    "+script|load", "+evalsha", "+set", "+get", "+publish", "+pubsub|numsub", "+pubsub|numpat",
    "+scan", "+zrange", "+zadd", "+zremrangebyscore", "+zremrangebyrank", "+subscribe",
    "+unsubscribe"]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("rules", [
    ["~fxcm:*", "resetchannels", "&fxcm:*", "+@all", "-@dangerous"],
    LEAST_PRIVILEGE,
], ids=["minus-dangerous", "least-privilege"])
def test_the_pipeline_publishes_to_a_redis_user_with_a_least_privilege_acl(
        tmp_path: Path, run_dir: str, rules: list[str]) -> None:
    redis_dir = tempfile.mkdtemp(prefix="fxcm-a-")
    server = EmbeddedRedis(redis_dir, free_port(), bound_to_parent=True)  # none left behind
    server.start()
    host = None
    try:
        admin = redis.Redis(unix_socket_path=server.socket_path)
        admin.execute_command("ACL", "SETUSER", "fxcm", "on", ">acl-secret", *rules)
        url = "redis://fxcm:acl-secret@127.0.0.1:{}/0".format(server.port)
        host = start(tmp_path, pipeline(tmp_path, run_dir, redis={"url": url}), run_dir,
                     ("redis_publisher", "tick_aggregator", "command_handler",
                      "fxcm_session"))
        subscriber = RedisSubscriber("unix://" + server.socket_path,
                                     ["fxcm:ohlcv", "fxcm:price_tik", "fxcm:commands:result"])
        try:
            subscriber.wait("fxcm:ohlcv", lambda items: len(items) >= 1, 120, "bars")
            subscriber.wait("fxcm:price_tik", lambda items: len(items) >= 1, 60, "snapshots")
            assert admin.zcard("fxcm:ohlcv:last:EURUSD:1m") or admin.zcard(
                "fxcm:ohlcv:last:XAUUSD:1m")
            admin.publish("fxcm:commands", json.dumps(
                {"cmd": "fxcm_warmup", "req_id": "acl-1", "ts": time.time(),
                 "args": {"symbols": ["EURUSD"], "lookback_minutes": 30}}))
            subscriber.wait("fxcm:commands:result", lambda items: any(
                item.get("req_id") == "acl-1" and item.get("state") in ("ok", "error")
                for item in items), 120, "the command's result")
        finally:
            subscriber.close()
        assert json.loads(admin.get("fxcm:status:last") or b"{}"), "the late-joiner status key"
        output = host.output()
        assert "denies CLIENT SETNAME (ACL)" in output and "denies INFO (ACL)" in output
        assert "NoPermissionError" not in output
        _, status = get(http_port(run_dir), "/status")
        denied = status["actor_status"]["redis_publisher"]["redis"]["denied"]
        assert denied == {"client setname": 1, "info": 1}
        assert admin.get("fxcm:publisher:run")  # the marker that stands in for INFO's run_id
    finally:
        if host is not None:
            host.stop()
        server.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)
