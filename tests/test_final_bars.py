"""Every final bar, as a downstream consumer sees it on Redis (issue #14).

Replays through the whole host (fxcm_session on the replay broker, tick_aggregator,
history_poller, redis_publisher, snapshotter) against a real Redis, read by a redis-py
subscriber, compared with an independent fold of the file written here: buckets computed with
zoneinfo, not with ``protocol.bars``; prices at the instrument's precision (EURUSD and GBPUSD
quote 5 decimals, so a mid has 6).
"""

from __future__ import annotations

import datetime
import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from actors._redis_server import EmbeddedRedis
from config.settings import load_defaults
from tests.chaos._observe import Events, Monitor
from tests.helpers import RedisSubscriber, host_process, open_calendar, wait_for
from tests.test_fxcm_session import write_ticks
from tests.test_redis_publisher import redis_dir, redis_server

__all__ = ["redis_dir", "redis_server"]  # fixtures used here

NEW_YORK = ZoneInfo("America/New_York")
MINUTE = 60_000
SPANS = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240, "1d": 1440}
Key = tuple[str, str, int]


def utc_ms(year: int, month: int, day: int, hour: int, minute: int = 0, second: float = 0.0
           ) -> int:
    moment = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000 + second * 1000)


# -- the independent fold ------------------------------------------------------------------------

def trading_day_start(t_ms: int) -> int:
    """17:00 New York at or before ``t_ms``."""
    local = datetime.datetime.fromtimestamp(t_ms / 1000, NEW_YORK)
    start = local.replace(hour=17, minute=0, second=0, microsecond=0)
    if start > local:
        start = (local - datetime.timedelta(days=1)).replace(hour=17, minute=0, second=0,
                                                               microsecond=0)
    return int(start.timestamp() * 1000)


def bucket(t_ms: int, tf: str) -> int:
    if tf == "1d":
        return trading_day_start(t_ms)
    if tf == "4h":
        day = trading_day_start(t_ms)
        return day + (t_ms - day) // (240 * MINUTE) * (240 * MINUTE)
    step = SPANS[tf] * MINUTE
    return t_ms - t_ms % step


def fold(rows: list[tuple[int, str, float, float]], digits: int = 5
         ) -> dict[Key, tuple[float, float, float, float, int]]:
    """``(symbol, tf, open_time) -> (open, high, low, close, ticks)`` of every bucket the rows
    touch, on the mid, rounded to ``digits + 1`` decimals; rows in file (time) order."""
    result: dict[Key, list[Any]] = {}
    for ts, symbol, bid, ask in rows:
        mid = round((bid + ask) / 2, digits + 1)
        for tf in SPANS:
            key = (symbol, tf, bucket(ts, tf))
            bar = result.get(key)
            if bar is None:
                result[key] = [mid, mid, mid, mid, 1]
            else:
                bar[1] = max(bar[1], mid)
                bar[2] = min(bar[2], mid)
                bar[3] = mid
                bar[4] += 1
    return {key: (bar[0], bar[1], bar[2], bar[3], bar[4]) for key, bar in result.items()}


def walk(symbol: str, start: int, end: int, step_ms: tuple[int, int], seed: int,
         price: float = 1.1) -> list[tuple[int, str, float, float]]:
    """Ticks of ``symbol`` from ``start`` to before ``end``: a random walk on 5 decimals."""
    rng = random.Random(seed)
    rows = []
    ts = start
    while ts < end:
        price = round(price + rng.choice((-3, -1, 0, 1, 2)) / 100_000, 5)
        spread = rng.choice((1, 2, 3)) / 100_000
        rows.append((ts, symbol, price, round(price + spread, 5)))
        ts += rng.randint(*step_ms)
    return rows


# -- the host and what Redis shows ---------------------------------------------------------------

ACTORS = [
    {"name": "redis_publisher", "class": "actors.redis_publisher:RedisPublisher"},
    {"name": "snapshotter", "class": "actors.snapshotter:Snapshotter"},
    {"name": "history_poller", "class": "actors.history_poller:HistoryPoller"},
    {"name": "tick_aggregator", "class": "actors.tick_aggregator:TickAggregator"},
    {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"},
]


def replay_sections(tmp_path: Path, server: EmbeddedRedis, file: Path, speed: float,
                    symbols: list[str], **extra: Any) -> dict[str, Any]:
    sections: dict[str, Any] = {
        "symbols": symbols,
        "broker": {"kind": "replay", "replay": {"file": str(file), "speed": speed}},
        "cache": {"dir": str(tmp_path / "cache")},
        "redis": {"url": server.url, "port": server.port, "required": True},
        "redis_publisher": {"journal_dir": str(tmp_path / "journal")},
        "snapshotter": {"price_snap_interval_seconds": 0.2, "stale_seconds": 30.0},
        "bus": {"status_interval_seconds": 0.2},
    }
    sections.update(extra)
    return sections


def finals(subscriber: RedisSubscriber) -> dict[Key, dict[str, Any]]:
    """The final bars on ``fxcm:ohlcv`` by key, each with its ``source``; a key with two
    different finals fails the test."""
    result: dict[Key, dict[str, Any]] = {}
    for payload in subscriber.payloads("fxcm:ohlcv"):
        for bar in payload["bars"]:
            if not bar["complete"]:
                continue
            key = (payload["symbol"], payload["tf"], int(bar["open_time"]))
            seen = result.setdefault(key, dict(bar, source=payload["source"]))
            assert {k: v for k, v in seen.items() if k != "source"} == bar, (
                "two different finals for {}: {} and {}".format(key, seen, bar))
    return result


def unsettled(monitor: Monitor) -> dict[str, Any]:
    """What is still going on (empty when the replay is over and nothing is left to do: no
    poller job, no gap minute due, empty mailboxes of the aggregator, the poller and the
    publisher). A minute ``waiting`` for a clock that stopped at the file's end is not work
    left: the poller has handled every clock message (its mailbox is empty)."""
    status, actors = monitor.get()
    session = actors.get("fxcm_session", {})
    poller = actors.get("history_poller", {})
    views = status.get("actors", {})
    busy: dict[str, Any] = {}
    if not (session.get("broker") or {}).get("finished"):
        busy["replay"] = session.get("broker")
    if not poller.get("ready") or poller.get("jobs") or (poller.get("gaps") or {}).get("due"):
        busy["poller"] = {key: poller.get(key) for key in ("ready", "jobs", "gaps")}
    for name in ("tick_aggregator", "history_poller", "redis_publisher"):
        depth = views.get(name, {}).get("depth")
        if depth != 0:
            busy[name] = depth
    return busy


def wait_settled(run_dir: str, timeout: float = 60.0) -> None:
    monitor = Monitor(run_dir, Events())
    try:
        wait_for(lambda: not unsettled(monitor), timeout, "the pipeline to settle", 0.2)
    except AssertionError as exc:
        raise AssertionError("{}: {}".format(exc, unsettled(monitor))) from None
    finally:
        monitor.close()


def check_against_the_fold(got: dict[Key, dict[str, Any]],
                           expected: dict[Key, tuple[float, float, float, float, int]]) -> None:
    assert sorted(got) == sorted(expected)
    for key, (open_, high, low, close, ticks) in expected.items():
        bar = got[key]
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (open_, high, low,
                                                                         close), key
        assert bar["volume"] == ticks and bar["tick_count"] == ticks, key
        assert bar["close_time"] == key[2] + SPANS[key[1]] * MINUTE - 1
        assert bar["synthetic"] is False


@pytest.fixture
def subscriber(redis_server: EmbeddedRedis) -> Iterator[RedisSubscriber]:
    consumer = RedisSubscriber(redis_server.url, ["fxcm:ohlcv", "fxcm:price_tik"])
    yield consumer
    consumer.close()


# -- a replay from a minute boundary to Friday's close --------------------------------------------

# Friday 2026-11-20 16:58 New York (21:58 UTC): two minutes before the weekly close.
FRIDAY_1658 = utc_ms(2026, 11, 20, 21, 58)
WEEKLY_CLOSE = utc_ms(2026, 11, 20, 22, 0)


def weekly_close_file(tmp_path: Path) -> tuple[Path, list[tuple[int, str, float, float]]]:
    """EURUSD from exactly 16:58:00.000 New York, GBPUSD from 16:58:12.345 (its first minute
    is partial: history must fill it from the file), both until just before the close."""
    rows = walk("EURUSD", FRIDAY_1658, WEEKLY_CLOSE - 50, (300, 1500), 1)
    rows += walk("GBPUSD", FRIDAY_1658 + 12_345, WEEKLY_CLOSE - 50, (300, 1500), 2, 1.27)
    rows.sort(key=lambda row: row[0])
    return write_ticks(tmp_path / "ticks.csv", rows), rows


def run_weekly_close_replay(tmp_path: Path, run_dir: str, server: EmbeddedRedis,
                            subscriber: RedisSubscriber, speed: float) -> None:
    file, rows = weekly_close_file(tmp_path)
    expected = fold(rows)
    # what the data closes: every bucket it touches ends at the weekly close
    assert {key[1] for key in expected} == set(SPANS)
    assert all(bucket(key[2], key[1]) == key[2] for key in expected)
    sections = replay_sections(tmp_path, server, file, speed, ["EURUSD", "GBPUSD"])
    with host_process(tmp_path, run_dir, ACTORS, **sections):
        span = 120.0 / speed if speed else 0.0  # the file's two minutes, replayed
        wait_for(lambda: set(expected) <= set(finals(subscriber)), 60 + 2 * span,
                 "every bucket of the fold final on Redis", interval=0.2)
        wait_settled(run_dir)
        got = finals(subscriber)
    check_against_the_fold(got, expected)
    sources = {(key[0], key[1]): bar["source"] for key, bar in got.items()
               if key[2] == bucket(FRIDAY_1658, key[1])}
    assert sources[("GBPUSD", "1m")] == "stream"  # the partial first minute, from history


@pytest.mark.timeout(240)
@pytest.mark.parametrize("speed", [0.0, 60.0])
def test_a_replay_from_a_minute_boundary_yields_every_bar_of_the_fold_weekly_close_included(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis, subscriber: RedisSubscriber,
        speed: float) -> None:
    run_weekly_close_replay(tmp_path, run_dir, redis_server, subscriber, speed)


@pytest.mark.timeout(400)
def test_the_same_replay_in_real_time_yields_the_same_bars(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis,
        subscriber: RedisSubscriber) -> None:
    run_weekly_close_replay(tmp_path, run_dir, redis_server, subscriber, 1.0)


# -- a tick half a second past the 15m bucket's end ---------------------------------------------

@pytest.mark.timeout(180)
def test_a_tick_half_a_second_past_the_15m_end_closes_the_15m_bar(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis,
        subscriber: RedisSubscriber) -> None:
    ten = utc_ms(2026, 11, 18, 10)  # a Wednesday
    rows = walk("EURUSD", ten, ten + 15 * MINUTE, (1500, 2500), 3)
    rows.append((ten + 15 * MINUTE + 500, "EURUSD", 1.10001, 1.10003))
    file = write_ticks(tmp_path / "ticks.csv", rows)
    touched = fold(rows)
    end = ten + 16 * MINUTE  # the data's last minute ends here; the market stays open
    expected = {key: bar for key, bar in touched.items()
                if key[2] + SPANS[key[1]] * MINUTE <= end}
    assert ("EURUSD", "15m", ten) in expected and ("EURUSD", "1m", ten + 15 * MINUTE) in expected
    sections = replay_sections(tmp_path, redis_server, file, 0.0, ["EURUSD"])
    with host_process(tmp_path, run_dir, ACTORS, **sections):
        wait_for(lambda: set(expected) <= set(finals(subscriber)), 90,
                 "the 15m 10:00 bar and every minute on Redis", interval=0.2)
        wait_settled(run_dir)
        got = finals(subscriber)
    check_against_the_fold(got, expected)


# -- precision on the wire --------------------------------------------------------------------

NUMBER = re.compile(r'"(open|high|low|close|bid|ask|mid)":\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


def decimals(text: str) -> dict[str, int]:
    """The most decimals of each price field in a JSON text, as written."""
    most: dict[str, int] = {}
    for name, number in NUMBER.findall(text):
        places = len(number.partition(".")[2]) if "e" not in number.lower() else 99
        most[name] = max(most.get(name, 0), places)
    return most


@pytest.mark.timeout(180)
def test_prices_on_the_wire_carry_the_instruments_precision(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis,
        subscriber: RedisSubscriber) -> None:
    """Bid/ask at 5 decimals whose mean is a binary fraction with noise (1.10328 and 1.1033
    average to 1.1032899999999999): bars (from ticks, from history, derived), late-joiner keys
    and price snapshots show at most 6 decimals; a yen pair at 3 shows at most 4."""
    import redis

    start = utc_ms(2026, 11, 18, 10)
    rng = random.Random(4)
    rows = []
    for index in range(600):
        ts = start + 20_000 + index * 1_000  # the first minute is partial: history fills it
        low = 110_300 + rng.randint(0, 40)
        rows.append((ts, "EURUSD", low / 100_000, (low + 2) / 100_000))
        yen = 151_200 + rng.randint(0, 40)
        rows.append((ts + 1, "USDJPY", yen / 1000, (yen + 3) / 1000))
    noisy = [(bid + ask) / 2 for _, _, bid, ask in rows]
    assert any(len(repr(mid)) > 12 for mid in noisy)  # the noise is there to be removed
    file = write_ticks(tmp_path / "ticks.csv", rows)
    sections = replay_sections(tmp_path, redis_server, file, 0.0, ["EURUSD", "USDJPY"])
    with host_process(tmp_path, run_dir, ACTORS, **sections):
        wait_for(lambda: {("EURUSD", "5m"), ("EURUSD", "1m"), ("USDJPY", "5m")} <= {
            (key[0], key[1]) for key in finals(subscriber)} and subscriber.count(
            "fxcm:price_tik") >= 2, 90, "bars and snapshots on Redis", interval=0.2)
        wait_settled(run_dir)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        names: Any = client.keys("fxcm:ohlcv:last:*")
        keys: dict[str, Any] = {name: client.zrange(name, 0, -1) for name in names}
        names = client.keys("fxcm:price_tik:last:*")
        snapshot_keys: dict[str, Any] = {name: client.get(name) for name in names}
        client.close()
    messages = subscriber.snapshot()
    for symbol, places in (("EURUSD", 6), ("USDJPY", 4)):
        texts = [data.decode() for _, channel, data in messages
                 if json.loads(data).get("symbol") == symbol]
        texts += [str(member) for name, members in keys.items() if symbol in name
                  for member in members]
        texts += [str(value) for name, value in snapshot_keys.items()
                  if symbol in name and value is not None]
        assert texts
        for text in texts:
            for field, most in decimals(text).items():
                limit = places - 1 if field in ("bid", "ask") else places
                assert most <= limit, (symbol, field, most, text[:300])
    sources = {json.loads(data)["source"] for _, channel, data in messages
               if channel == "fxcm:ohlcv"}
    assert {"stream", "tick_agg"} <= sources, sources  # bars of ticks and of history checked


# -- live, through a crash of each actor ---------------------------------------------------------

LIVE_ACTORS = [spec for spec in load_defaults()["actors"]]


# -- only the configured timeframes ----------------------------------------------------------------

@pytest.mark.timeout(240)
def test_only_the_configured_timeframes_reach_redis(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis,
        subscriber: RedisSubscriber) -> None:
    """``tick_aggregator.timeframes`` (the older spelling) set to 1m, 5m, 15m, 1h: tick
    aggregation and history (warmup over a store of six hours of 1m bars) publish nothing
    else."""
    from actors.fxcm_session._sim import SimMarket
    from actors.history_poller import BarStore
    from config.calendar import load_calendar
    from protocol.market import Bar

    calendar_path = open_calendar(tmp_path)
    calendar = load_calendar(str(calendar_path))
    now = int(time.time() * 1000)
    newest = now - now % MINUTE - 20 * MINUTE
    store = BarStore(str(tmp_path / "cache"), 3000)
    for row in SimMarket(3, 2.0, calendar).bars("EURUSD", "1m", newest - 360 * MINUTE, newest,
                                                now, "mid", calendar.trading_day_start):
        store.put(Bar("EURUSD", "1m", int(row[0]), int(row[0]) + MINUTE - 1, row[1], row[2],
                      row[3], row[4], row[5], int(row[5]), True, False, "history"))
    store.compact_all()
    configured = ["1m", "5m", "15m", "1h"]
    sections: dict[str, Any] = {
        "symbols": ["EURUSD"], "calendar_file": str(calendar_path),
        "broker": {"kind": "sim", "sim": {"seed": 3, "tick_rate_per_second": 2.0}},
        "cache": {"dir": str(tmp_path / "cache")},
        "redis": {"url": redis_server.url, "port": redis_server.port, "required": True},
        "redis_publisher": {"journal_dir": str(tmp_path / "journal")},
        "tick_aggregator": {"timeframes": configured},
        "history_poller": {"warmup_bars": 400},
    }
    with host_process(tmp_path, run_dir, LIVE_ACTORS, **sections):
        # the warmup fills the last 20 minutes and rebuilds the hours of derived bars
        wait_for(lambda: {"1m", "5m", "15m", "1h"} <= {key[1] for key in finals(subscriber)}
                 and len([key for key in finals(subscriber) if key[1] == "1h"]) >= 5, 120,
                 "1m to 1h bars from the warmup", interval=0.5)
        wait_for(lambda: any(bar["source"] == "tick_agg" for bar in finals(subscriber).values()),
                 150, "a bar from tick aggregation", interval=0.5)
        got = finals(subscriber)
    assert {key[1] for key in got} == set(configured)
    assert not any((tmp_path / "cache" / "EURUSD" / "{}.bars".format(tf)).exists()
                   for tf in ("30m", "4h", "1d"))


def test_one_timeframes_setting_for_aggregation_and_history(tmp_path: Path) -> None:
    """``timeframes`` is shared by every actor; the older ``tick_aggregator.timeframes`` still
    sets it; both set and different is refused naming the key."""
    import config
    from protocol.errors import ConfigError

    def load(**sections: Any) -> Any:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(sections))
        return config.load(str(path), environ={})

    shipped = load()
    poller = next(spec for spec in shipped.actors if spec.name == "history_poller")
    assert shipped.actor_settings(poller)["timeframes"] == load_defaults()["timeframes"]
    legacy = load(tick_aggregator={"timeframes": ["5m", "1m"]})
    for spec in legacy.actors:
        assert legacy.actor_settings(spec)["timeframes"] == ["1m", "5m"], spec.name
    assert load(timeframes=["1m", "1h"]).raw["timeframes"] == ["1m", "1h"]
    with pytest.raises(ConfigError, match=r"^tick_aggregator.timeframes: .* differs"):
        load(timeframes=["1m", "1h"], tick_aggregator={"timeframes": ["1m", "5m"]})
    with pytest.raises(ConfigError, match=r"^timeframes: must include 1m"):
        load(timeframes=["5m"])
    with pytest.raises(ConfigError, match=r"^timeframes: unknown timeframe '2h'"):
        load(timeframes=["1m", "2h"])
