"""The scenario: generate a tick file, start ``fxcm host`` on it, inject faults while it
streams, drain, compare with the reference, print the table, exit non-zero on any failure."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from actors._redis_server import EmbeddedRedis
from config.settings import load_defaults
from protocol.market import TIMEFRAMES
from tests.chaos import _faults
from tests.chaos._observe import Events, Monitor
from tests.chaos._observe import subscriber as make_subscriber
from tests.chaos._ticks import TickFile, expected_finals, generate
from tests.chaos._verify import Comparison, Timeliness, compare, timeliness
from tests.helpers import HostProcess, RedisSubscriber, wait_for

PREFIX = "fxcm"
KID = "chaos"
SECRET = "chaos-secret-not-for-production"
GRACE_MS = 1500
MAX_SYNTH = 60
LAST_BARS = 500


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=90.0,
                        help="wall time the replay should last (default 90)")
    parser.add_argument("--symbols", type=int, default=6, help="symbols in the file (1..13)")
    parser.add_argument("--rate", type=float, default=2500.0,
                        help="ticks per second of wall time (default 2500)")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="event time the file spans (default 30)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--outage", type=float, default=20.0, help="Redis outage, seconds")
    parser.add_argument("--tick-bound", type=int, default=10000,
                        help="bound of tick_aggregator's lossless tick. mailbox, which the stall "
                        "fills (default 10000, the shipped bus.mailbox_bound)")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def host_config(work: Path, run_dir: str, server: EmbeddedRedis, file: TickFile,
                speed: float, tick_bound: int) -> Path:
    actors: list[dict[str, Any]] = []
    for spec in load_defaults()["actors"]:
        spec = dict(spec)
        if spec["name"] == "tick_aggregator":
            spec["placement"] = "process"
            spec["mailbox_bounds"] = {"tick.": tick_bound}
        actors.append(spec)
    config: dict[str, Any] = {
        "run_dir": run_dir,
        "log_level": "WARNING",
        "http": {"port": 0},
        "actors": actors,
        "symbols": list(file.symbols),
        "broker": {"kind": "replay", "replay": {"file": str(file.path), "speed": speed}},
        "cache": {"dir": str(work / "cache")},
        "redis": {"url": server.url, "port": server.port, "required": True},
        "channels": {"prefix": PREFIX},
        "tick_aggregator": {"close_grace_ms": GRACE_MS, "max_synth_gap_minutes": MAX_SYNTH},
        "redis_publisher": {"journal_dir": str(work / "journal"), "last_bars": LAST_BARS,
                            "redis_backoff": {"base_seconds": 0.5, "max_seconds": 4.0,
                                              "multiplier": 2.0, "jitter": 0.2}},
        "command_handler": {"redis_backoff": {"base_seconds": 0.5, "max_seconds": 4.0,
                                              "multiplier": 2.0, "jitter": 0.2}},
        # drills: the crash, stall and release ops are refused unless the host enables them
        "bus": {"status_interval_seconds": 0.5, "drills": True},
        "supervisor": {"max_restarts": 20},
    }
    path = work / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def read_keys(url: str, symbols: tuple[str, ...]
              ) -> dict[tuple[str, str], list[tuple[float, str]]]:
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        result: dict[tuple[str, str], list[tuple[float, str]]] = {}
        for symbol in symbols:
            for tf in TIMEFRAMES:
                rows: Any = client.zrange("{}:ohlcv:last:{}:{}".format(PREFIX, symbol, tf), 0,
                                          -1, withscores=True)
                result[(symbol, tf)] = [(float(score), bytes(member).decode())
                                        for member, score in rows]
        return result
    finally:
        client.close()


def main(argv: list[str]) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="fxcm-chaos-"))
    run_dir = tempfile.mkdtemp(prefix="fxcm-c-")  # short: unix socket paths are bounded
    redis_dir = tempfile.mkdtemp(prefix="fxcm-cr-")
    events = Events()
    count = int(args.rate * args.seconds)
    print("chaos: generating {} ticks for {} symbols over {} min of event time".format(
        count, args.symbols, args.minutes), flush=True)
    file = generate(work / "ticks.csv.gz", args.symbols, count, args.minutes, args.seed)
    speed = file.span_seconds / args.seconds
    expected = expected_finals(file, GRACE_MS, MAX_SYNTH)
    print("chaos: replay speed {:.1f}x, {} expected final bars; work dir {}".format(
        speed, len(expected), work), flush=True)

    server = EmbeddedRedis(redis_dir, free_port())
    server.start()
    subscriber = make_subscriber(server.url, [PREFIX + ":ohlcv", PREFIX + ":commands:result"],
                                 events)
    env = {"FXCM_HMAC_KID": KID, "FXCM_HMAC_SECRET": SECRET}
    host = HostProcess(host_config(work, run_dir, server, file, speed, args.tick_bound),
                       run_dir, work / "host.log", env)
    monitor: Monitor | None = None
    faults: dict[str, Any] = {}
    recoveries: list[tuple[str, str, float]] = []  # (fault, recovery observed, seconds)
    outages: list[tuple[float, float]] = []  # (start, end) monotonic: Redis away, stall
    clock: list[tuple[float, int]] = []
    stall: _faults.Stall | None = None
    status: dict[str, Any] = {}
    actor_status: dict[str, dict[str, Any]] = {}
    keys: dict[tuple[str, str], list[tuple[float, str]]] = {}
    drained = False
    exit_code: int | None = None
    try:
        names = tuple(spec["name"] for spec in load_defaults()["actors"])
        host.wait_ready(names, timeout=120)
        events.add("start", "host ready, replay streaming (pid {})".format(host.proc.pid))
        monitor = Monitor(run_dir, events)
        start = time.monotonic()

        def at(fraction: float) -> None:
            # The fault schedule: deliberate points in the replay, not a wait for a condition.
            delay = start + fraction * args.seconds - time.monotonic()
            if delay > 0:
                time.sleep(delay)

        def kill(name: str) -> None:
            before = int(_faults.actor_view(run_dir, name).get("restarts") or 0)
            pid = _faults.kill_actor(run_dir, name)
            killed = time.monotonic()
            events.add("fault", "SIGKILL {} pid {}".format(name, pid))
            view = _faults.wait_restarted(run_dir, name, before)
            recoveries.append(("SIGKILL " + name, "running again, pid {}".format(view["pid"]),
                               time.monotonic() - killed))

        def crash(name: str) -> None:
            events.add("fault", "crash op: {}'s next handler raises InjectedCrash".format(name))
            seconds, view = _faults.crash_actor(run_dir, name)
            recoveries.append(("crash op " + name, "running again (restarts={})".format(
                view["restarts"]), seconds))
            # A thread's exit names the exception; a child process's, its exit code.
            events.add("recovery", "{} running again {:.2f} s after the crash op (exit: {})"
                       .format(name, seconds, str(view.get("last_exit", "")).split(":")[0]))

        # Each in-host actor is crashed once by the crash op, and tick_aggregator, placed in a
        # child process, too.
        at(0.05)
        crash("redis_publisher")
        at(0.09)
        crash("heartbeat")
        at(0.13)
        kill("tick_aggregator")
        at(0.17)
        crash("snapshotter")
        at(0.19)
        # The feed itself, mid-stream (it gets no message to crash in: it takes the fault
        # after 2 s idle). The restarted session resumes the replay at its clock, as a real
        # feed streams from now; the ticks in between are lost and history repairs the minutes.
        crash("fxcm_session")
        session_view = resumed_replay(monitor)
        faults["session_outage"] = session_view
        events.add("observed", "fxcm_session resumed the replay at row {} of {}, not at the "
                   "first row (DISCONNECTED, then RECOVERING, STREAM)".format(
                       session_view["resumed_at"], session_view["rows"]))
        at(0.21)
        crash("history_poller")
        at(0.25)
        sent = _faults.flood_bus(run_dir, 20_000, args.seed)
        faults["bus_frames"] = sent
        events.add("fault", "bus flood: {} malformed frame sets on bus.sock".format(sent))
        at(0.29)
        events.add("fault", "stall op: tick_aggregator blocks before its next handler until "
                   "its tick. mailbox (bound {}) is full".format(args.tick_bound))
        stall_started = time.monotonic()
        stall = _faults.stall_until_full(run_dir, "tick_aggregator", "tick.", "fxcm_session",
                                         events.add)
        recoveries.append(("stall op tick_aggregator", "backlog drained to <= {} after the "
                           "release".format(stall.drained_to), stall.drain_seconds))
        outages.append((stall_started, stall_started + stall.held_seconds
                        + stall.drain_seconds))
        at(0.38)
        events.add("fault", "Redis stopping (SHUTDOWN SAVE) for {} s".format(args.outage))
        redis_stopped = time.monotonic()
        _faults.stop_redis(server)
        time.sleep(args.outage)  # the outage itself
        server.start()
        restarted = time.monotonic()
        # the output is away on purpose: deadlines falling in here move to its end
        outages.append((redis_stopped, restarted + 1.0))
        events.add("fault", "Redis started again on the same socket and port")

        def publisher_caught_up() -> bool:
            assert monitor is not None
            publisher = monitor.get()[1].get("redis_publisher", {})
            journal = publisher.get("journal") or {}
            return bool(publisher.get("redis_connected") and not journal.get("messages")
                        and not journal.get("held"))

        wait_for(publisher_caught_up, 120, "redis_publisher back on Redis, journal empty", 0.1)
        recoveries.append(("Redis outage {:g} s".format(args.outage),
                           "publisher reconnected, journal published (peak {})".format(
                               monitor.journal_peak), time.monotonic() - restarted))
        events.add("recovery", "redis_publisher journal published, {:.2f} s after Redis "
                   "restarted".format(time.monotonic() - restarted))
        at(0.64)
        kill("tick_aggregator")
        at(0.68)
        crash("command_handler")  # no mailbox traffic: takes the crash in its loop when idle
        at(0.74)
        wait_for(subscriber.subscribed.is_set, 60, "the subscriber back on Redis")
        sent_commands = _faults.flood_commands(server.url, PREFIX + ":commands", KID,
                                               SECRET.encode(), args.seed)
        faults["commands"] = sent_commands
        events.add("fault", "commands flood: {}".format(
            ", ".join("{} {}".format(v, k) for k, v in sent_commands.items())))
        at(0.80)
        crash("tick_aggregator")  # the crash op over ipc, to a checkpointed child process

        def replay_finished() -> bool:
            if host.proc.poll() is not None:
                raise AssertionError("the host exited with {}".format(host.proc.returncode))
            assert monitor is not None
            session = monitor.get()[1].get("fxcm_session", {})
            return bool((session.get("broker") or {}).get("finished"))

        wait_for(replay_finished, args.seconds * 4 + 120, "the replay to finish", 0.5)
        events.add("observed", "replay finished (every row delivered)")
        wanted = set(expected)

        def drained_now() -> bool:
            assert monitor is not None
            bus, actors = monitor.get()
            publisher = actors.get("redis_publisher", {})
            journal = publisher.get("journal") or {}
            views = bus.get("actors", {})
            idle = all(views.get(name, {}).get("depth", 1) < 50
                       and views.get(name, {}).get("inflight", 1) < 50
                       for name in ("tick_aggregator", "redis_publisher"))
            flushed = (publisher.get("redis_connected") and not journal.get("messages")
                       and not journal.get("held"))
            if not (idle and flushed):
                return False
            # Settled: everything expected arrived and 5 s passed without a message for an
            # expected key (a late duplicate would still show), or 20 s without one (something
            # is missing). Bars the running clock closes after the file's end do not count.
            got, last = expected_arrivals(subscriber, wanted)
            quiet = time.monotonic() - last
            return quiet > 20.0 or (quiet > 5.0 and wanted <= got)

        wait_for(drained_now, 300, "the pipeline to drain", 0.5)
        drained = True
        events.add("observed", "pipeline drained (publisher journal empty, mailboxes idle)")
        keys = read_keys(server.url, file.symbols)
        status, actor_status = monitor.get()
    except AssertionError as exc:
        events.add("error", str(exc))
        exit_code = 3
    finally:
        if monitor is not None:
            monitor.close()
            clock = monitor.clock()
        host.stop()
        events.add("stop", "host stopped with exit code {}".format(host.proc.returncode))
        subscriber.close()
        messages = subscriber.snapshot()
        server.stop()
    payloads = [json.loads(data) for _, channel, data in messages
                if channel == PREFIX + ":ohlcv"]
    results = [json.loads(data) for _, channel, data in messages
               if channel == PREFIX + ":commands:result"]
    comparison = compare(expected, payloads, keys, LAST_BARS)
    timely = timeliness(expected, [(arrived, json.loads(data)) for arrived, channel, data
                                   in messages if channel == PREFIX + ":ohlcv"],
                        clock, GRACE_MS, outages)
    print_table(events, faults, status, actor_status, comparison, timely, results, drained,
                monitor.journal_peak if monitor is not None else 0, recoveries, stall)
    failed = comparison.failed or timely.failed or not drained or exit_code is not None
    print("\nVERDICT: {}".format("FAIL" if failed else "PASS"))
    if args.keep or failed:
        print("kept: {} (host.log, config.json, ticks.csv.gz), redis {}".format(work, redis_dir))
    else:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(redis_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    return exit_code or (1 if failed else 0)


def resumed_replay(monitor: Monitor) -> dict[str, Any]:
    """The restarted fxcm_session's replay, once its status says where it resumed."""
    def resumed() -> dict[str, Any] | None:
        session = monitor.get()[1].get("fxcm_session", {})
        broker = session.get("broker") or {}
        if session.get("restarted") and broker.get("resumed_at") is not None:
            return {"resumed_at": broker["resumed_at"], "rows": broker.get("rows")}
        return None

    view: dict[str, Any] = wait_for(resumed, 30, "fxcm_session's status after its restart", 0.1)
    return view


def expected_arrivals(subscriber: RedisSubscriber, wanted: set[tuple[str, str, int]]
                      ) -> tuple[set[tuple[str, str, int]], float]:
    """The expected keys received so far, and when the newest message holding one arrived."""
    got: set[tuple[str, str, int]] = set()
    last = 0.0
    for arrived, channel, data in subscriber.snapshot():
        if channel != PREFIX + ":ohlcv":
            continue
        payload = json.loads(data)
        for bar in payload.get("bars", []):
            key = (payload["symbol"], payload["tf"], int(bar["open_time"]))
            if bar.get("complete") and key in wanted:
                got.add(key)
                last = arrived
    return got, last


def print_table(events: Events, faults: dict[str, Any], status: dict[str, Any],
                actor_status: dict[str, dict[str, Any]], c: Comparison, timely: Timeliness,
                results: list[dict[str, Any]], drained: bool, journal_peak: int,
                recoveries: list[tuple[str, str, float]], stall: _faults.Stall | None
                ) -> None:
    line = "-" * 78
    print("\n" + line + "\nFAULTS INJECTED")
    for ts, _, text in events.of("fault"):
        print("  {:8.2f} s  {}".format(ts, text))
    print("  (fxcm_session too: its replay keeps its timeline in the run dir and resumes at the\n"
          "   replay clock, as a real feed streams from now after a session restart; the ticks\n"
          "   of the outage are lost, tick_aggregator drops the minutes it saw partly and\n"
          "   history_poller repairs them from history. The process-death path is the SIGKILL\n"
          "   of tick_aggregator.)")
    print("RECOVERIES / OBSERVATIONS")
    for ts, kind, text in events.items:
        if kind in ("recovery", "observed", "error"):
            print("  {:8.2f} s  {:9} {}".format(ts, kind, text))
    print("RECOVERY TIMES")
    for fault, recovery, seconds in recoveries:
        print("  {:30} {:8.2f} s  {}".format(fault, seconds, recovery))
    if stall is not None:
        print("STALL ({} stalled, {} its producer)".format(stall.actor, stall.producer))
        for name, value in [
            ("mailbox, bound", "{} {}".format(stall.topic, stall.bound)),
            ("max depth observed", "{} ({} samples)".format(stall.max_depth, stall.samples)),
            ("bound reached after", "{:.2f} s".format(stall.fill_seconds)),
            ("producer held back", stall.producer_blocked),
            ("producer backpressure events", stall.backpressure_events),
            ("released after", "{:.2f} s".format(stall.held_seconds)),
            ("backlog drained after release", "{:.2f} s (depth <= {})".format(
                stall.drain_seconds, stall.drained_to)),
        ]:
            print("  {:40} {}".format(name, value))
    print("COUNTS")
    router = status.get("router", {})
    views = status.get("actors", {})
    publisher = actor_status.get("redis_publisher", {})
    journal = publisher.get("journal") or {}
    aggregation = actor_status.get("tick_aggregator", {}).get("aggregation") or {}
    # since history_poller's own restart (its counters are not checkpointed)
    poller_counts = actor_status.get("history_poller", {}).get("counts") or {}
    rows = [
        ("router malformed frames", router.get("malformed", "?")),
        ("router unknown-peer frames", router.get("unknown_peer", "?")),
        ("router dead letters", router.get("dead_letters", "?")),
        ("router backpressure events", router.get("backpressure_events", "?")),
        ("router injected crashes / stalls", "{} / {}".format(
            router.get("injected_crashes", "?"), router.get("injected_stalls", "?"))),
        ("restarts per actor", ", ".join("{}={}".format(n, v.get("restarts", 0))
                                         for n, v in sorted(views.items())
                                         if not n.startswith("chaos"))),
        ("redeliveries per actor", ", ".join("{}={}".format(n, v.get("redelivered", 0))
                                             for n, v in sorted(views.items())
                                             if not n.startswith("chaos"))),
        ("aggregator late ticks / partial minutes", "{} / {}".format(
            aggregation.get("late_ticks", 0 if aggregation else "?"),
            aggregation.get("partial_minutes_dropped", 0 if aggregation else "?"))),
        ("session outage: replay resumed at row", "{} of {}".format(
            (faults.get("session_outage") or {}).get("resumed_at", "?"),
            (faults.get("session_outage") or {}).get("rows", "?"))),
        ("poller repairs / history bars stored", "{} / {}".format(
            poller_counts.get("repairs", "?" if not poller_counts else 0),
            poller_counts.get("stored", "?" if not poller_counts else 0))),
        ("publisher journal now (messages/bytes)", "{}/{}".format(
            journal.get("messages", "?"), journal.get("bytes", "?"))),
        ("publisher journal peak (messages)", journal_peak),
        ("publisher messages published", json.dumps(publisher.get("published", {}),
                                                    sort_keys=True)),
        ("publisher duplicates filtered", publisher.get("duplicates", "?")),
        ("publisher bar conflicts", publisher.get("conflicts", "?")),
        ("publisher schema errors", publisher.get("schema_errors", "?")),
        ("publisher reconnect attempts", (publisher.get("redis") or {}).get(
            "reconnect_attempts", "?")),
        ("command results on Redis", len(results)),
        ("command results by state/code", ", ".join("{}={}".format(k, v) for k, v in sorted(
            _tally(results).items()))),
        ("faults", json.dumps(faults.get("commands", {}))),
    ]
    for name, value in rows:
        print("  {:40} {}".format(name, value))
    print("BARS")
    for name, value in [
        ("expected final bars (reference)", c.expected),
        ("final bars received on the channel", c.received_finals),
        ("  by source", json.dumps(c.sources, sort_keys=True)),
        ("  extra before the first final (history)", c.extra_head),
        ("  extra after the newest final (clock)", c.extra_tail),
        ("  (extras are not failures: see _verify)", ""),
        ("previews received", c.previews),
        ("missing", len(c.missing)),
        ("duplicate (identical re-sends)", sum(c.duplicates.values())),
        ("mismatched", len(c.mismatched)),
        ("out of order", len(c.out_of_order)),
        ("  late, filling a gap (history repair)", c.repaired_late),
        ("unexpected keys", len(c.extra_other)),
        ("late-joiner keys checked", c.key_checked),
        ("late-joiner missing/dup/mismatch", "{}/{}/{}".format(
            len(c.key_missing), len(c.key_duplicates), len(c.key_mismatched))),
        ("drained", drained),
        ("on time: bars checked", timely.checked),
        ("  late (arrival-time limits)", len(timely.late)),
        ("  deadlines moved by Redis away / stall", timely.excused),
        ("  1m: bucket end -> subscriber p50/p99/max", _spread(timely, "1m")),
        ("  derived: its last minute -> it p50/p99/max", _spread(timely, "derived")),
        ("  (percentiles without the bars Redis away", "or the stall delayed)"),
    ]:
        print("  {:40} {}".format(name, value))
    for title, items in (("missing", c.missing), ("duplicates", list(c.duplicates.items())),
                         ("mismatched", c.mismatched), ("out of order", c.out_of_order),
                         ("unexpected", c.extra_other), ("key missing", c.key_missing),
                         ("key mismatched", c.key_mismatched),
                         ("late (key, s past due)", timely.late)):
        for item in list(items)[:10]:
            print("  {}: {}".format(title, item))
    print(line)


def _spread(timely: Timeliness, group: str) -> str:
    values = [timely.percentile(group, fraction) for fraction in (0.5, 0.99, 1.0)]
    if values[0] is None:
        return "-"
    return " / ".join("{:.2f} s".format(value or 0.0) for value in values)


def _tally(results: list[dict[str, Any]]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for result in results:
        error = result.get("error") or {}
        name = "{}:{}".format(result.get("state"), error.get("code", "")) if error else str(
            result.get("state"))
        tally[name] = tally.get(name, 0) + 1
    return tally

