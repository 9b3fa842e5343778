"""The soak: start a Redis server and ``fxcm host`` on the ``sim`` broker (every simulated
symbol, a calendar that is always open, ``--rate`` ticks/s in all), sample it once a second for
``--duration``, optionally stop Redis for ``--redis-outage`` in the middle of the judged part,
then stop the host, print the summary and exit non-zero when a check fails (see _analysis)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors._redis_server import EmbeddedRedis
from actors.fxcm_session._sim import INSTRUMENTS
from config.settings import load_defaults
from tests.chaos._faults import stop_redis
from tests.helpers import HostProcess, RedisSubscriber, open_calendar, wait_for
from tests.soak._analysis import RunInfo, analyse, summary
from tests.soak._sample import Sampler, status_figures

PREFIX = "fxcm"
OHLCV = PREFIX + ":ohlcv"
REDIS = "redis-server"
DRAIN_TIMEOUT = 180.0  # after Redis is back: reconnect backoff (<= 10 s here) plus the backlog
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    """``600``, ``90s``, ``30m``, ``1.5h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError("not a duration: {!r} (e.g. 600, 90s, 30m, 1h)".format(
            text))
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--duration", type=seconds, default=600.0,
                        help="sampling time, e.g. 600, 30m, 2h (default 600 s)")
    parser.add_argument("--redis-outage", type=seconds, default=0.0, metavar="DURATION",
                        help="stop Redis this long in the middle of the judged part (default 0)")
    parser.add_argument("--warmup", type=seconds, default=None,
                        help="not judged at the start (default: 10%% of the duration, at least "
                        "min(120 s, 25%%))")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="simulated ticks per second over all symbols (default 1000)")
    parser.add_argument("--symbols", type=int, default=len(INSTRUMENTS),
                        help="how many of the simulator's {} symbols".format(len(INSTRUMENTS)))
    parser.add_argument("--process", default="tick_aggregator",
                        help="comma-separated actors placed in child processes (default "
                        "tick_aggregator, so a child is measured too; '' = all in the host)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where samples.csv, host.log, config.json go (default: a new "
                        "temporary directory, kept)")
    args = parser.parse_args(argv)
    if not 1 <= args.symbols <= len(INSTRUMENTS):
        parser.error("--symbols must be 1..{}".format(len(INSTRUMENTS)))
    if args.duration < 20:
        parser.error("--duration must be at least 20 s")
    if args.warmup is None:
        args.warmup = max(0.10 * args.duration, min(120.0, 0.25 * args.duration))
    judged = args.duration - args.warmup
    if args.redis_outage and args.redis_outage > 0.8 * judged:
        parser.error("--redis-outage must leave time before and after it: at most {:.0f} s "
                     "with this duration and warm-up".format(0.8 * judged))
    return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def host_config(work: Path, run_dir: str, server: EmbeddedRedis, args: argparse.Namespace,
                symbols: list[str]) -> Path:
    in_process = {name.strip() for name in args.process.split(",") if name.strip()}
    actors: list[dict[str, Any]] = []
    for spec in load_defaults()["actors"]:
        spec = dict(spec)
        if spec["name"] in in_process:
            spec["placement"] = "process"
        actors.append(spec)
    # Reconnect backoff capped at 10 s (default 45 s): after a long outage the publisher is
    # back within seconds, so a 15-minute run still has a clean window after the outage.
    backoff = {"base_seconds": 1.0, "max_seconds": 10.0, "multiplier": 2.0, "jitter": 0.2}
    config: dict[str, Any] = {
        "run_dir": run_dir,
        "log_level": "INFO",
        "http": {"port": 0},
        "actors": actors,
        "symbols": symbols,
        "calendar_file": str(open_calendar(work)),  # the sim streams whatever the weekday
        "broker": {"kind": "sim", "sim": {"seed": args.seed,
                                          "tick_rate_per_second": args.rate / len(symbols)}},
        "cache": {"dir": str(work / "cache")},
        "redis": {"url": server.url, "port": server.port, "required": True},
        "channels": {"prefix": PREFIX},
        "redis_publisher": {"journal_dir": str(work / "journal"), "redis_backoff": backoff},
        "command_handler": {"redis_backoff": backoff},
        "bus": {"status_interval_seconds": 1.0},  # fresh actor figures for each sample
    }
    path = work / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class HostDied(Exception):
    pass


def main(argv: list[str]) -> int:
    args = parse(argv)
    work: Path = args.work_dir or Path(tempfile.mkdtemp(prefix="fxcm-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir = tempfile.mkdtemp(prefix="fxcm-s-")  # short: unix socket paths are bounded
    redis_dir = tempfile.mkdtemp(prefix="fxcm-sr-")
    symbols = list(INSTRUMENTS)[:args.symbols]
    names = [spec["name"] for spec in load_defaults()["actors"]]
    info = RunInfo(duration=args.duration, warmup=args.warmup, rate=args.rate,
                   symbols=len(symbols), judged=["host"], reported=[REDIS], actors=names,
                   outage=args.redis_outage)
    print("soak: {:.0f} s ({} warm-up), {} symbols at {:.0f} ticks/s, Redis outage {}; work dir "
          "{}".format(args.duration, args.warmup, len(symbols), args.rate,
                      "{:.0f} s".format(args.redis_outage) if args.redis_outage else "none",
                      work), flush=True)

    server = EmbeddedRedis(redis_dir, free_port())
    server.start()
    subscriber = RedisSubscriber(server.url, [OHLCV])
    host = HostProcess(host_config(work, run_dir, server, args, symbols), run_dir,
                       work / "host.log")
    sampler: Sampler | None = None
    try:
        host.wait_ready(tuple(names), timeout=120)
        status = host.status()
        children = {name: int(view["pid"]) for name, view in status["actors"].items()
                    if view.get("placement") == "process" and view.get("pid")}
        info.judged += sorted(children)
        port = int(json.loads((Path(run_dir) / "host.json").read_text())["http_port"])

        def processes() -> dict[str, int]:
            found = {"host": host.proc.pid}
            # a restarted child has a new pid: follow the supervisor's view
            for name, view in (sampler.latest_status() if sampler else {}).get(
                    "actors", {}).items():
                if name in children and view.get("pid"):
                    found[name] = int(view["pid"])
            for name, pid in children.items():
                found.setdefault(name, pid)
            if server.process is not None and server.process.poll() is None:
                found[REDIS] = server.process.pid
            return found

        columns = ["t", "phase", "status_ok"]
        for name in [*info.judged, REDIS]:
            columns += ["{}.{}".format(kind, name) for kind in ("rss_mb", "fds", "threads",
                                                                 "cpu_s")]
        columns += ["depth." + name for name in names]
        columns += [key for key in status_figures({}) if not key.startswith("depth.")]
        columns += ["bars_rx", "bar_latency_ms"]
        sampler = Sampler(work / "samples.csv", port, processes, subscriber, OHLCV, columns)
        print("soak: host pid {} ({}), http port {}, sampling to {}".format(
            host.proc.pid, ", ".join("{} pid {}".format(k, v) for k, v in children.items())
            or "all actors in the host", port, work / "samples.csv"), flush=True)
        scenario(args, info, host, server, sampler)
    except (AssertionError, HostDied) as exc:
        info.errors.append(str(exc).splitlines()[0])
        print("soak: ERROR {}".format(exc), flush=True)
    except KeyboardInterrupt:
        info.errors.append("interrupted")
    finally:
        if sampler is not None:
            sampler.close()
            info.final_status = sampler.latest_status()
            info.duplicate_bars = list(sampler.duplicate_bars)
        alive = host.proc.poll() is None
        host.stop()
        info.host_exit = host.proc.returncode if alive else None
        if not alive:
            info.errors.append("the host exited on its own with {}".format(
                host.proc.returncode))
        subscriber.close()
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(redis_dir, ignore_errors=True)
    rows = sampler.rows if sampler is not None else []
    bars = sampler.bars if sampler is not None else []
    windows, checks = analyse(rows, bars, info)
    text = summary(rows, bars, info, windows, checks)
    print(text, flush=True)
    (work / "summary.txt").write_text(text + "\n")
    print("soak: samples in {}, host log in {}".format(work / "samples.csv", work / "host.log"))
    if info.errors and not rows:
        return 3
    return 0 if all(check.ok for check in checks) else 1


def scenario(args: argparse.Namespace, info: RunInfo, host: HostProcess, server: EmbeddedRedis,
             sampler: Sampler) -> None:
    """The schedule: warm-up, the judged run, the outage in the middle of it, the end."""
    t0 = sampler.t0

    def until(t: float, watch: Callable[[], None] | None = None) -> None:
        # deliberate points in the run (not a wait for a condition), watching the host
        while True:
            if host.proc.poll() is not None:
                raise HostDied("the host exited with {} at t={:.0f} s".format(
                    host.proc.returncode, time.monotonic() - t0))
            if watch is not None:
                watch()
            left = t0 + t - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(1.0, left))

    def progress(text: str) -> None:
        print("  [{:7.1f} s] {}".format(time.monotonic() - t0, text), flush=True)

    def publisher() -> dict[str, Any]:
        found: dict[str, Any] = (sampler.latest_status().get("actor_status") or {}).get(
            "redis_publisher") or {}
        return found

    noticed: list[float] = []

    def notice() -> None:
        if not noticed and (publisher().get("redis") or {}).get("mode") not in (None, "up"):
            noticed.append(time.monotonic() - t0)
            progress("redis_publisher noticed: mode {}".format(publisher()["redis"]["mode"]))

    until(args.warmup)
    sampler.phase = "run"
    progress("warm-up over")
    if args.redis_outage > 0:
        start = args.warmup + (args.duration - args.warmup - args.redis_outage) / 2.0
        until(start)
        sampler.phase = "outage"
        info.outage_start = time.monotonic() - t0
        stop_redis(server)
        down = time.monotonic() - t0
        progress("Redis stopped (SHUTDOWN SAVE) for {:.0f} s".format(args.redis_outage))
        until(down + args.redis_outage, notice)
        if not noticed:
            # else "drained" below could be a status from before the outage
            raise AssertionError("redis_publisher did not report Redis down during the outage")
        server.start()
        info.outage_end = time.monotonic() - t0
        sampler.phase = "recovering"
        progress("Redis started again on the same socket and port")

        def drained() -> bool:
            if host.proc.poll() is not None:
                raise HostDied("the host exited with {}".format(host.proc.returncode))
            status = publisher()
            journal = status.get("journal") or {}
            return ((status.get("redis") or {}).get("mode") == "up"
                    and not journal.get("messages") and not journal.get("held"))

        wait_for(drained, DRAIN_TIMEOUT, "the publisher to drain its journal", 0.2)
        info.drained_at = time.monotonic() - t0
        sampler.phase = "after"
        progress("publisher drained its journal ({:.1f} s after Redis came back)".format(
            info.drained_at - info.outage_end))
    end = args.duration
    if info.drained_at is not None:
        # the last window must not be empty when the recovery was slow: extend the run
        end = max(end, info.drained_at + max(5.0, 0.1 * (args.duration - args.warmup)))
        if end > args.duration:
            progress("run extended to {:.0f} s for a window after the recovery".format(end))
    until(end)
    progress("done; stopping the host")
