"""The ``fxcm`` command: host, tap, attach, status, detach, crash/stall/release, viewer, command,
watch."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import zmq

from protocol import wire
from protocol.errors import ConfigError, ConnectorError, ProtocolError
from protocol.messages import from_wire

log = logging.getLogger("fxcm")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S")


def _run_dir(args: argparse.Namespace) -> str:
    if args.run_dir:
        return str(args.run_dir)
    from config.settings import default_run_dir
    return os.environ.get("FXCM_RUN_DIR") or default_run_dir()


# -- host ------------------------------------------------------------------------------------

def cmd_host(args: argparse.Namespace) -> int:
    import config
    from actors.host import Host

    overrides: dict[str, Any] = {
        "run_dir": args.run_dir,
        "broker.kind": args.broker,
        "broker.replay.file": args.replay_file,
        "broker.replay.speed": args.replay_speed,
        "broker.sim.seed": args.sim_seed,
        "symbols": args.symbols.split(",") if args.symbols else None,
        "redis.url": args.redis_url,
        "redis.embedded_port": args.redis_port,
        "cache.dir": args.cache_dir,
    }
    if args.replay_file and not args.broker:
        overrides["broker.kind"] = "replay"
    try:
        settings = config.load(args.config, overrides=overrides)
    except ConnectorError as exc:
        configure_logging("INFO")
        log.error("%s", exc)
        return 2
    configure_logging(settings.log_level)
    log_settings_notes(settings, getattr(args, "env_files", []))
    try:
        return Host(settings).run()
    except ConnectorError as exc:
        log.error("%s", exc)
        return 2


def log_settings_notes(settings: Any, env_files: list[str]) -> None:
    """Where the settings came from, and every predecessor key or variable that has no
    equivalent here (config/legacy.py): one line each, before the banner."""
    if env_files:
        log.info("environment: read %s (values not shown; the real environment wins)",
                 ", ".join(env_files))
    for note in settings.notes:
        log.info("%s", note)
    for warning in settings.warnings:
        log.warning("%s", warning)


# -- tap -------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def decode_tap_message(frames: list[bytes]) -> dict[str, Any]:
    """One tap copy as a map: topic, kind, type, sender, seq, ts and the decoded body."""
    if len(frames) != 4:
        raise ProtocolError("a tap message has 4 frames, got {}".format(len(frames)))
    topic, kind, header_bytes, body_bytes = frames
    header = wire.decode_header(header_bytes)
    body = wire.unpack(body_bytes)
    try:
        body = from_wire(header.type, body)
    except ProtocolError:
        pass  # show what is on the wire even when it does not match its declared type
    return {
        "topic": topic.decode("utf-8", "replace"),
        "kind": kind.decode("utf-8", "replace"),
        "type": header.type,
        "sender": header.sender,
        "seq": header.seq,
        "ts": header.ts,
        "body": _jsonable(body),
    }


# tap: how long the bus may be silent before the tap says it is still waiting (and how often)
TAP_QUIET_SECONDS = 5.0


def _host_pid(run_dir: str) -> int | None:
    """The pid in ``bus.json`` of a host running in ``run_dir``, else None."""
    try:
        with open(os.path.join(run_dir, "bus.json"), encoding="utf-8") as handle:
            return int(json.load(handle).get("host_pid") or 0) or None
    except (OSError, ValueError, AttributeError):
        return None


def cmd_tap(args: argparse.Namespace) -> int:
    from bus import check_run_dir, ipc_endpoint

    configure_logging("WARNING")
    run_dir = _run_dir(args)
    try:
        check_run_dir(run_dir)
    except FileNotFoundError:
        pass  # no host yet: the tap waits for one, as before
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    endpoint = ipc_endpoint(run_dir, "tap.sock")
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for topic in args.topic or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
    topics = ", ".join(args.topic) if args.topic else "all"
    # what the tap is waiting for goes to stderr, so that --json output stays one object a line
    print("tapping {} (topics: {}); Ctrl-C to stop".format(endpoint, topics), file=sys.stderr)
    host = _host_pid(run_dir)
    if host is None:
        print("no host runs in {} yet: waiting for one".format(run_dir), file=sys.stderr)
    seen = 0
    quiet_since = time.monotonic()
    try:
        while args.count is None or seen < args.count:
            if not sock.poll(int(TAP_QUIET_SECONDS * 1000)):
                now_host = _host_pid(run_dir)
                if now_host is None:
                    print("waiting for the host: none runs in {}".format(run_dir),
                          file=sys.stderr)
                elif host is None:
                    print("host is up (pid {}): waiting for traffic (topics: {})".format(
                        now_host, topics), file=sys.stderr)
                else:
                    print("waiting for traffic (topics: {}; host pid {}; nothing for {:.0f} s)"
                          .format(topics, now_host, time.monotonic() - quiet_since),
                          file=sys.stderr)
                host = now_host
                continue
            frames = sock.recv_multipart()
            quiet_since = time.monotonic()
            try:
                message = decode_tap_message(frames)
            except ProtocolError as exc:
                print("undecodable tap message: {}".format(exc), file=sys.stderr)
                continue
            seen += 1
            if args.json:
                print(json.dumps(message, ensure_ascii=False), flush=True)
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(message["ts"] / 1e9))
                print("{}.{:03d} {:<5} {:<28} {}#{} {}".format(
                    stamp, int(message["ts"] / 1e6) % 1000, message["kind"], message["topic"],
                    message["sender"], message["seq"],
                    json.dumps(message["body"], ensure_ascii=False)), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(0)
    return 0


# -- attach ----------------------------------------------------------------------------------

def cmd_attach(args: argparse.Namespace) -> int:
    from actors import child

    argv = ["--run-dir", _run_dir(args), "--restart", "--placement", "attached",
            "--log-level", args.log_level]
    if args.name:
        argv += ["--name", args.name]
    if args.settings:
        argv += ["--settings", args.settings]
    return child.main(argv + [args.actor_class])


# -- status ----------------------------------------------------------------------------------

def control_call(run_dir: str, request: dict[str, Any], timeout: float = 5.0
                 ) -> dict[str, Any]:
    """One CTRL request to the router of the host in ``run_dir``, after checking that the run
    dir is ours alone (a ``bus.sock`` someone else planted is never talked to)."""
    from bus import ControlChannel, check_run_dir, ipc_endpoint

    check_run_dir(run_dir)
    channel = ControlChannel(ipc_endpoint(run_dir, "bus.sock"))
    try:
        return channel.call(request, timeout=timeout)
    finally:
        channel.close()


def ask_host(args: argparse.Namespace, request: dict[str, Any]
             ) -> tuple[dict[str, Any] | None, int]:
    """``request`` to the host of ``args``' run dir: (answer, 0), or (None, exit code) after
    saying why on stderr (1: no host or no answer, 2: an unsafe run dir)."""
    run_dir = _run_dir(args)
    if not os.path.exists(os.path.join(run_dir, "bus.json")):
        print("no host runs in {}".format(run_dir), file=sys.stderr)
        return None, 1
    try:
        return control_call(run_dir, request, args.timeout), 0
    except ConfigError as exc:  # an unsafe run dir
        print(str(exc), file=sys.stderr)
        return None, 2
    except ConnectorError as exc:
        print("no answer from the host in {}: {}".format(run_dir, exc), file=sys.stderr)
        return None, 1


def fetch_status(run_dir: str, timeout: float = 5.0) -> dict[str, Any]:
    from actors.host import merge_status

    result = control_call(run_dir, {"op": "status"}, timeout)
    return merge_status(result.get("status", {}))


def format_status(status: dict[str, Any]) -> str:
    host = status.get("host") or {}
    router = status.get("router", {})
    lines = ["host pid {}  version {}  run dir {}".format(
        host.get("pid", "?"), host.get("version", "?"), host.get("run_dir", "?"))]
    columns = ("actor", "state", "placement", "pid", "depth", "peak", "restarts", "dead",
               "backpressure")
    rows = [columns]
    for name, actor in sorted(status.get("actors", {}).items()):
        rows.append((name, str(actor.get("state", "?")), str(actor.get("placement", "?")),
                     str(actor.get("pid") or "-"), str(actor.get("depth", 0)),
                     str(actor.get("peak", 0)), str(actor.get("restarts", 0)),
                     str(actor.get("dead_letters", 0)),
                     str(actor.get("backpressure_events", 0))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    lines.append("router: published {published}, sent {sent}, malformed {malformed}, "
                 "dead letters {dead_letters}, tap copies {tap_copies} (dropped {tap_dropped}), "
                 "unrouted {unrouted}".format(**{k: router.get(k, 0) for k in (
                     "published", "sent", "malformed", "dead_letters", "tap_copies",
                     "tap_dropped", "unrouted")}))
    if router.get("injected_crashes") or router.get("injected_stalls"):
        lines.append("injected faults (drills): {} crashes, {} stalls".format(
            router.get("injected_crashes", 0), router.get("injected_stalls", 0)))
    if router.get("refused_publishes") or router.get("refused_hellos") \
            or router.get("refused_controls"):
        refusers = ", ".join("{} {}".format(name, actor.get("refused")) for name, actor in
                             sorted(status.get("actors", {}).items()) if actor.get("refused"))
        lines.append("refused: {} messages{}, {} HELLOs, {} control ops".format(
            router.get("refused_publishes", 0), " ({})".format(refusers) if refusers else "",
            router.get("refused_hellos", 0), router.get("refused_controls", 0)))
    for name, actor in sorted(status.get("actors", {}).items()):
        if actor.get("blocked"):
            lines.append("held back: {} for {:.0f} s by {}".format(
                name, float(actor.get("blocked_seconds") or 0.0),
                ", ".join(actor.get("blocked_by") or []) or "?"))
    for expired in status.get("expired", [])[-5:]:
        lines.append("mailboxes dropped: {} {} at {} ({} messages)".format(
            expired.get("name"), expired.get("reason"),
            time.strftime("%H:%M:%S", time.localtime(float(expired.get("ts") or 0))),
            expired.get("messages", 0)))
    readiness = host.get("readiness") or {}
    if readiness and not readiness.get("ready", True):
        lines.append("NOT READY: " + "; ".join(readiness.get("reasons") or ["?"]))
    for letter in status.get("dead_letters", [])[-5:]:
        lines.append("dead letter: {actor} {topic}: {reason}".format(**letter))
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    configure_logging("WARNING")
    answer, code = ask_host(args, {"op": "status"})
    if answer is None:
        return code
    from actors.host import merge_status

    status = merge_status(answer.get("status", {}))
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(format_status(status))
    return 0


# -- injected faults -------------------------------------------------------------------------

def cmd_fault(args: argparse.Namespace) -> int:
    """``fxcm crash|stall|release NAME``: a drill (as ``make chaos`` does) on a running host
    whose config enables them (``bus.drills: true``)."""
    configure_logging("WARNING")
    request: dict[str, Any] = {"op": args.command, "name": args.name}
    if args.command == "stall":
        request["seconds"] = args.seconds
    result, code = ask_host(args, request)
    if result is None:
        return code
    if not result.get("ok"):
        print("{} {}: {}".format(args.command, args.name, result.get("error")), file=sys.stderr)
        return 1
    print({"crash": "{name} (pid {pid}) will crash at its next handler",
           "stall": "{name} (pid {pid}) will stall {seconds:g} s at its next handler",
           "release": "{name} (pid {pid}) told to end its stall now"}[args.command].format(
               name=args.name, pid=result.get("pid"), seconds=args.seconds or 0))
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    """``fxcm detach NAME``: drop the mailboxes of an attached actor that is gone for good, so
    that the producers feeding them are no longer held back."""
    configure_logging("WARNING")
    result, code = ask_host(args, {"op": "detach", "name": args.name})
    if result is None:
        return code
    if not result.get("ok"):
        print("detach {}: {}".format(args.name, result.get("error")), file=sys.stderr)
        return 1
    print("{}: mailboxes dropped ({} messages)".format(args.name, result.get("messages", 0)))
    return 0


# -- watch -----------------------------------------------------------------------------------

def cmd_watch(args: argparse.Namespace) -> int:
    """``fxcm watch``: print what a host publishes on Redis, one line per message: the embedded
    Redis of the run dir (its password read from the run dir), or ``--redis-url`` /
    ``FXCM_REDIS_URL``. Channels: the ones given, else the host's outputs (``--config``)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from actors.tools._connect import load_channels, resolve_redis_url
    from config.settings import redact_url

    configure_logging("WARNING")
    run_dir = _run_dir(args)
    try:
        url = resolve_redis_url(args.redis_url, run_dir)
        channels = list(args.channels)
        if not channels:
            _, names = load_channels(args.config)
            channels = [names[name] for name in ("ohlcv", "price_tik", "heartbeat",
                                                 "market_status", "status")]
    except ConnectorError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    client = redis.Redis.from_url(url, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))
    pubsub = client.pubsub()
    seen = 0
    try:
        pubsub.subscribe(*channels)
        print("watching {} on {}; Ctrl-C to stop".format(" ".join(channels), redact_url(url)),
              file=sys.stderr, flush=True)
        while args.count is None or seen < args.count:
            message = pubsub.get_message(timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            seen += 1
            channel = message["channel"]
            data = message["data"]
            print("{} {}".format(channel.decode("utf-8", "replace") if isinstance(
                channel, bytes) else channel, data.decode("utf-8", "replace") if isinstance(
                    data, bytes) else data), flush=True)
    except KeyboardInterrupt:
        pass
    except (redis.RedisError, OSError) as exc:
        print("Redis at {}: {}".format(redact_url(url), exc), file=sys.stderr)
        return 1
    finally:
        pubsub.close()
        client.close()
    return 0


# -- viewer and command (actors/tools) -------------------------------------------------------

def cmd_viewer(args: argparse.Namespace) -> int:
    from actors.tools import viewer

    configure_logging("WARNING")
    return viewer.run(_run_dir(args), args.redis_url, args.refresh, args.config, args.mode)


def cmd_command(args: argparse.Namespace) -> int:
    from actors.tools import command

    configure_logging("WARNING")
    return command.run(args, _run_dir(args))


# -- entry -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxcm", description="FXCM market-data connector")
    commands = parser.add_subparsers(dest="command", required=True)

    host = commands.add_parser("host", help="run the actor host")
    host.add_argument("--config", help="JSON settings file (over the shipped defaults)")
    host.add_argument("--run-dir", help="directory for the bus sockets and the lock")
    host.add_argument("--broker", choices=("sim", "replay", "forexconnect"),
                      help="override broker.kind")
    host.add_argument("--replay-file", help="ticks CSV (.gz accepted) for the replay broker")
    host.add_argument("--replay-speed", type=float,
                      help="1 = real time, 10 = ten times faster, 0 = as fast as possible")
    host.add_argument("--sim-seed", type=int, help="seed of the simulated market")
    host.add_argument("--symbols", help="comma-separated symbols, e.g. EURUSD,XAUUSD")
    host.add_argument("--redis-url", help="'embedded' (default) or redis://, rediss://, unix://")
    host.add_argument("--redis-port", type=int,
                      help="TCP port of the embedded Redis (redis.embedded_port)")
    host.add_argument("--cache-dir", help="the bar store directory")
    host.set_defaults(func=cmd_host)

    tap = commands.add_parser("tap", help="print the bus traffic live")
    tap.add_argument("--run-dir")
    tap.add_argument("--topic", action="append", help="topic prefix (repeatable; default all)")
    tap.add_argument("--count", type=int, help="exit after this many messages")
    tap.add_argument("--json", action="store_true", help="one JSON object per line")
    tap.set_defaults(func=cmd_tap)

    attach = commands.add_parser("attach", help="run an actor in this process, attached over ipc")
    attach.add_argument("--run-dir")
    attach.add_argument("--name", help="actor name (default: the class name)")
    attach.add_argument("--settings", help="actor settings as a JSON object")
    attach.add_argument("--log-level", default="INFO")
    attach.add_argument("actor_class", metavar="module:Class")
    attach.set_defaults(func=cmd_attach)

    status = commands.add_parser("status", help="show the actors and the bus")
    status.add_argument("--run-dir")
    status.add_argument("--json", action="store_true")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(func=cmd_status)

    detach = commands.add_parser(
        "detach", help="drop the mailboxes of an attached actor that is gone for good")
    detach.add_argument("--run-dir")
    detach.add_argument("--timeout", type=float, default=5.0)
    detach.add_argument("name", help="the attached actor's name, as in fxcm status")
    detach.set_defaults(func=cmd_detach)

    watch = commands.add_parser(
        "watch", help="print what the host publishes on Redis (its embedded Redis by default)")
    watch.add_argument("--run-dir", help="the host's run dir (its embedded Redis)")
    watch.add_argument("--redis-url", help="Redis URL (default: FXCM_REDIS_URL, else the "
                       "embedded Redis of the run dir)")
    watch.add_argument("--config", help="settings file, for the channel names (as the host)")
    watch.add_argument("--count", type=int, help="exit after this many messages")
    watch.add_argument("channels", nargs="*", help="channels (default: ohlcv, price_tik, "
                       "heartbeat, market_status and status of the host's prefix)")
    watch.set_defaults(func=cmd_watch)

    for verb, text in (("crash", "make an actor's next handler raise (a drill; bus.drills)"),
                       ("stall", "block an actor's next handler for SECONDS (a drill)"),
                       ("release", "end an actor's stall now")):
        fault = commands.add_parser(verb, help=text)
        fault.add_argument("--run-dir")
        fault.add_argument("--timeout", type=float, default=5.0)
        fault.add_argument("name", help="the actor's name, as in fxcm status")
        if verb == "stall":
            fault.add_argument("seconds", type=float, help="at most 300")
        else:
            fault.set_defaults(seconds=None)
        fault.set_defaults(func=cmd_fault)

    viewer = commands.add_parser("viewer", help="a live terminal dashboard (keys 0-9 modes, "
                                 "p pause, c clear, q quits)")
    viewer.add_argument("--run-dir", help="the host's run dir (its status, its embedded Redis)")
    viewer.add_argument("--redis-url", help="Redis URL (default: FXCM_REDIS_URL, else the "
                        "embedded Redis of the run dir)")
    viewer.add_argument("--refresh", type=float, default=1.0,
                        help="seconds between two refreshes (default 1)")
    viewer.add_argument("--config", help="settings file, for the channel names (as the host)")
    viewer.add_argument("--mode", default="1",
                        help="the mode to start in: 0 timeline, 1 summary (default), 2 session, "
                        "3 alerts, 4 streams, 5 price, 6 supervisor, 7 history, 8 stats, "
                        "9 volume calibration (a key, or the name)")
    viewer.set_defaults(func=cmd_viewer)

    from actors.tools.command import add_arguments as add_command_arguments

    command = commands.add_parser(
        "command", help="send a command (warmup, backfill, ...) and wait for its result")
    add_command_arguments(command)
    command.set_defaults(func=cmd_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from config.envfile import load_env_files

    args = build_parser().parse_args(argv)
    try:
        # the predecessor's .env dispatcher (AI_ONE_ENV_FILE), for every command alike
        args.env_files = load_env_files(os.environ)
    except ConnectorError as exc:
        print("fxcm {}: {}".format(args.command, exc), file=sys.stderr)
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
