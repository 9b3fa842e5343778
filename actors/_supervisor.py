"""Supervision: runners for the two placements, and the restart rules.

A runner starts one instance of an actor and reports its end on the host's event queue. The
host restarts a crashed actor one-for-one after a backoff (exponential, capped, jittered); more
than ``max_restarts`` restarts within ``restart_window_seconds`` escalates (ordered stop, exit
non-zero, so that systemd restarts the whole host).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from actors.base import Actor, RunOptions
from actors.child import load_class
from config import ActorSpec
from protocol.errors import ConfigError

log = logging.getLogger("fxcm.supervisor")

# The checkout root: a child on another interpreter imports the portable subset from here.
SOURCE_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class Exit:
    """An actor instance ended. ``requested`` is True when the host asked it to stop."""

    name: str
    generation: int
    requested: bool
    error: str


class RestartIntensity:
    """Counts restarts in a sliding window; ``record`` says whether the limit is exceeded."""

    def __init__(self, max_restarts: int, window_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_seconds:
            self._times.popleft()
        return len(self._times) > self.max_restarts

    def recent(self, now: float) -> int:
        # read from the HTTP thread while the supervisor appends: iterate a copy
        return sum(1 for t in list(self._times) if now - t <= self.window_seconds)


class Runner:
    """One instance of an actor, in a thread or a child process."""

    placement = ""

    def __init__(self, spec: ActorSpec, generation: int, events: queue.Queue[Exit]) -> None:
        self.spec = spec
        self.generation = generation
        self.events = events
        self.started_at = time.time()
        self._stop_requested = False

    @property
    def pid(self) -> int:
        return os.getpid()

    def start(self) -> None:
        raise NotImplementedError

    def request_stop(self) -> None:
        raise NotImplementedError

    def join(self, timeout: float) -> bool:
        """Wait for the instance to end; True if it did."""
        raise NotImplementedError

    def kill(self) -> None:
        """Last resort after the stop timeout."""

    def _report(self, error: str) -> None:
        self.events.put(Exit(self.spec.name, self.generation, self._stop_requested, error))


class ThreadRunner(Runner):
    placement = "thread"

    def __init__(self, spec: ActorSpec, generation: int, events: queue.Queue[Exit],
                 options: RunOptions) -> None:
        super().__init__(spec, generation, events)
        self.options = options
        self.actor: Actor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        cls = load_class(self.spec.cls)
        self.actor = cls(self.spec.name, self.spec.settings)
        self._thread = threading.Thread(target=self._main, name="actor-" + self.spec.name,
                                        daemon=True)
        self._thread.start()

    def _main(self) -> None:
        actor = self.actor
        assert actor is not None
        error = ""
        try:
            actor.run(self.options)
            if not self._stop_requested:
                error = "returned without being asked to stop"
        except BaseException as exc:
            error = "{}: {}".format(type(exc).__name__, exc)
            log.error("%s crashed: %s", self.spec.name, error,
                      exc_info=not isinstance(exc, Exception) or None)
        finally:
            actor.close()
            self._report(error)

    def request_stop(self) -> None:
        self._stop_requested = True
        if self.actor is not None:
            self.actor.request_stop()

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


class ProcessRunner(Runner):
    """A child process running ``python -m actors.child`` on the configured interpreter.

    Its settings (which may hold a Redis password), bus overrides and the host's token go to
    it on stdin (``--stdin``), never on its command line: ``ps`` shows argv to every user."""

    placement = "process"

    def __init__(self, spec: ActorSpec, generation: int, events: queue.Queue[Exit],
                 run_dir: str, log_level: str, overrides: dict[str, object],
                 token: str | None = None) -> None:
        super().__init__(spec, generation, events)
        self.run_dir = run_dir
        self.log_level = log_level
        self.overrides = overrides
        self.token = token
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def command(self) -> list[str]:
        python = self.spec.python or sys.executable
        resolved = shutil.which(python) if os.sep not in python else python
        if resolved is None or not os.access(resolved, os.X_OK):
            raise ConfigError("actors[{}].python: no interpreter {!r}".format(
                self.spec.name, python))
        return [resolved, "-m", "actors.child", "--run-dir", self.run_dir,
                "--name", self.spec.name, "--stdin", "--log-level", self.log_level,
                "--placement", "process", self.spec.cls]

    def stdin_payload(self) -> bytes:
        """What the child reads on stdin (actors/child.py ``--stdin``)."""
        return json.dumps({"settings": self.spec.settings, "options": self.overrides,
                           "token": self.token}).encode("utf-8")

    def start(self) -> None:
        cwd = self.spec.cwd or os.path.join(self.run_dir, "actors", self.spec.name)
        os.makedirs(cwd, mode=0o700, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [SOURCE_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.process = subprocess.Popen(
            self.command(), cwd=cwd, env=env, stdin=subprocess.PIPE,
            # Its own process group: a Ctrl-C on the host's terminal reaches the host, which
            # then stops the children in order instead of all at once.
            start_new_session=True)
        threading.Thread(target=self._wait, name="wait-" + self.spec.name, daemon=True).start()

    def _wait(self) -> None:
        process = self.process
        assert process is not None and process.stdin is not None
        try:
            # Written here, not in start(): a payload over the pipe's buffer must not block
            # the supervisor until the child reads it.
            process.stdin.write(self.stdin_payload())
            process.stdin.close()
        except OSError as exc:  # the child died before reading: its exit code says why
            log.warning("%s: could not hand the child its settings: %s", self.spec.name, exc)
        code = process.wait()
        if code == 0 and self._stop_requested:
            error = ""
        elif code < 0:
            error = "killed by signal {}".format(signal.Signals(-code).name)
        else:
            error = "exited with code {}".format(code)
        self._report(error)

    def request_stop(self) -> None:
        self._stop_requested = True
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def join(self, timeout: float) -> bool:
        if self.process is None:
            return True
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

