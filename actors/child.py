"""Run one actor in this process, attached to a host's router over ipc.

Used by the host for actors placed ``process`` (possibly on another interpreter, e.g. the
Python 3.7 one the ForexConnect SDK needs) and by ``fxcm attach``::

    python -m actors.child --run-dir /tmp/fxcm-1000 --name extra examples.echo:Echo

The bus settings (endpoint, bounds, prefetch, timeouts) come from ``<run_dir>/bus.json``, which
the host writes at start, so an attached actor uses the same explicit bounds as the host's own.
The run dir is used only when it is ours alone (bus/_rundir.py): a ``bus.sock`` someone else
could have planted is never connected to. A host starts its children with ``--stdin``: the
actor's settings (a Redis password, say), the bus overrides and the host's token come as one
JSON object on stdin, never on the command line where ``ps`` shows them to every user.
SIGTERM/SIGINT stop the actor in order. With ``--restart`` (attach mode) a crashed actor is
restarted here with backoff, and a host that is not there yet, or restarts, is waited for.
Started by a host (``--placement process``), the actor stops by itself when that host dies
without stopping it (SIGKILL, OOM): no orphan keeps a broker session or a file open.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Type

import zmq

from actors.base import Actor, RunOptions
from bus import Backoff, check_run_dir, open_private
from protocol.errors import ConfigError, ConnectorError, EndpointError

log = logging.getLogger("fxcm.child")

BUS_FILE = "bus.json"


def load_class(path: str) -> Type[Actor]:
    """Import ``module:Class`` and check that it is an Actor."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ConfigError("actor class must be 'module:Class', got {!r}".format(path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("cannot import {!r}: {}".format(module_name, exc)) from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Actor):
        raise ConfigError("{!r} is not an Actor subclass".format(path))
    return cls


def read_bus_file(run_dir: str) -> Dict[str, Any]:
    """The host's published bus settings; EndpointError while no host has written them."""
    path = os.path.join(run_dir, BUS_FILE)
    try:
        check_run_dir(run_dir)  # UnsafeRunDir (a ConfigError) when others could plant it
        with os.fdopen(open_private(path, os.O_RDONLY), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise EndpointError("no host runs in {} (no {})".format(run_dir, BUS_FILE)) from None
    except ValueError as exc:
        raise EndpointError("{} is not valid JSON: {}".format(path, exc)) from exc
    if not isinstance(data, dict):
        raise EndpointError("{} must hold an object".format(path))
    return data


def options_from_bus_file(bus: Dict[str, Any], placement: str,
                          overrides: Optional[Dict[str, Any]] = None,
                          run_dir: Optional[str] = None,
                          token: Optional[str] = None) -> RunOptions:
    values = dict(bus)
    values.update(overrides or {})
    return RunOptions(
        endpoint=values["endpoint"],
        mailbox_bound=int(values["mailbox_bound"]),
        prefetch=int(values["prefetch"]),
        send_timeout=float(values["send_timeout_seconds"]),
        checkpoint_every=int(values["checkpoint_every"]),
        status_interval=float(values["status_interval_seconds"]),
        mailbox_bounds=values.get("mailbox_bounds") or {},
        context=zmq.Context.instance(),
        connect_timeout=float(values.get("connect_timeout_seconds", 10.0)),
        placement=placement,
        run_dir=run_dir,
        token=token,
    )


# How often a host-started child checks that its host is still its parent, and how long it
# then gives the actor to stop in order (fxcm_session's logout takes up to 40 s) before it
# exits anyway: an actor blocked on a bus that is gone must not keep the process alive.
PARENT_CHECK_SECONDS = 0.5
ORPHAN_EXIT_SECONDS = 60.0


def watch_parent(on_gone: Any, interval: float = PARENT_CHECK_SECONDS,
                 grace: float = ORPHAN_EXIT_SECONDS) -> threading.Thread:
    """Call ``on_gone(pid)`` once when this process's parent dies (it is re-parented); if
    the process is still there ``grace`` seconds later, end it (exit code 3)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)  # a poll of the parent's pid: nothing to wait on instead
        on_gone(parent)
        time.sleep(grace)
        log.error("still running %.0f s after the host died: exiting", grace)
        logging.shutdown()
        os._exit(3)

    thread = threading.Thread(target=watch, name="watch-host", daemon=True)
    thread.start()
    return thread


def run_child(run_dir: str, name: str, class_path: str, settings: Dict[str, Any],
              overrides: Dict[str, Any], restart: bool, placement: str,
              token: Optional[str] = None) -> int:
    """Run the actor until stopped; returns the process exit code."""
    cls = load_class(class_path)
    stop_requested: List[bool] = []
    current: List[Actor] = []

    def stop() -> None:
        stop_requested.append(True)
        for actor in current:
            actor.request_stop()

    def on_signal(signum: int, frame: Any) -> None:
        stop()

    def host_gone(pid: int) -> None:
        log.error("%s: the host (pid %d) is gone without stopping this actor: stopping",
                  name, pid)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if placement == "process" and not restart:
        watch_parent(host_gone)
    backoff = Backoff(0.2, 5.0)
    failures = 0
    while not stop_requested:
        try:
            options = options_from_bus_file(read_bus_file(run_dir), placement, overrides,
                                            os.path.abspath(run_dir), token)
        except EndpointError as exc:
            if not restart:
                log.error("%s: %s", name, exc)
                return 2
            failures += 1
            delay = backoff.compute(failures)
            log.warning("%s: %s; retrying in %.1f s", name, exc, delay)
            time.sleep(delay)
            continue
        actor = cls(name, settings)
        current[:] = [actor]
        try:
            actor.run(options)
            return 0
        except ConnectorError as exc:
            failures += 1
            log.error("%s: %s", name, exc)
        except Exception:
            failures += 1
            log.exception("%s crashed", name)
        finally:
            actor.close()
        if not restart:
            return 1
        delay = backoff.compute(failures)
        log.warning("%s: restarting in %.1f s (failure %d)", name, delay, failures)
        time.sleep(delay)
    return 0


def build_parser(prog: str = "python -m actors.child") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="the host's run dir")
    parser.add_argument("--name", help="actor name on the bus (default: the class name)")
    parser.add_argument("--settings", default="{}", help="actor settings as a JSON object")
    parser.add_argument("--options", default="{}",
                        help="overrides of the bus settings for this actor, as JSON")
    parser.add_argument("--stdin", action="store_true",
                        help="read settings, options and the host's token as one JSON object "
                        "from stdin (how a host starts its children: no secret in argv)")
    parser.add_argument("--restart", action="store_true",
                        help="restart after a crash and wait for a missing host (attach mode)")
    parser.add_argument("--placement", default="process", help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default=os.environ.get("FXCM_LOG_LEVEL", "INFO"))
    parser.add_argument("actor_class", metavar="module:Class")
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s[%(process)d]: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    token = None
    try:
        if args.stdin:
            given = json.loads(sys.stdin.read())
            if not isinstance(given, dict):
                raise ValueError("stdin must hold a JSON object")
            settings = given.get("settings", {})
            overrides = given.get("options", {})
            token = given.get("token")
        else:
            settings = json.loads(args.settings)
            overrides = json.loads(args.options)
        if not isinstance(settings, dict) or not isinstance(overrides, dict):
            raise ValueError("settings and options must be objects")
    except ValueError as exc:
        log.error("--settings and --options must be JSON objects: %s", exc)
        return 2
    name = args.name or args.actor_class.partition(":")[2]
    try:
        return run_child(args.run_dir, name, args.actor_class, settings, overrides,
                         args.restart, args.placement, token)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
