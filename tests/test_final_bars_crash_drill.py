"""Every final bar on time through a crash of each actor (issue #14): the sim in real time,
crashes at chosen seconds of the minute, arrivals read by a redis-py subscriber. In a file of
its own: it runs five wall-clock minutes, and the suite runs one file a worker.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from actors._redis_server import EmbeddedRedis
from tests.chaos._faults import crash_actor
from tests.helpers import RedisSubscriber, host_process, open_calendar
from tests.test_final_bars import LIVE_ACTORS, MINUTE, SPANS, Key, subscriber
from tests.test_redis_publisher import redis_dir, redis_server

__all__ = ["redis_dir", "redis_server", "subscriber"]  # fixtures this file's tests use


GRACE_MS = 1500


def arrivals(subscriber: RedisSubscriber, offset: float
             ) -> dict[Key, tuple[float, dict[str, Any]]]:
    """Each final bar's first arrival at the subscriber (wall seconds) and its values; a key
    with two different finals fails the test."""
    result: dict[Key, tuple[float, dict[str, Any]]] = {}
    for arrived, channel, data in subscriber.snapshot():
        if channel != "fxcm:ohlcv":
            continue
        payload = json.loads(data)
        for bar in payload["bars"]:
            if not bar["complete"]:
                continue
            key = (payload["symbol"], payload["tf"], int(bar["open_time"]))
            first = result.setdefault(key, (arrived + offset, bar))
            assert first[1] == bar, "two different finals for {}".format(key)
    return result


def at_second(second: float) -> float:
    """Sleep until the wall clock is ``second`` seconds into a minute (the next such moment);
    returns that wall time. The drill's schedule: deliberate points, not a condition."""
    now = time.time()
    target = now - now % 60 + second
    if target <= now + 1:
        target += 60
    time.sleep(target - now)
    return target


@pytest.mark.timeout(900)
def test_every_final_bar_reaches_redis_on_time_through_a_crash_of_each_actor(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis,
        subscriber: RedisSubscriber) -> None:
    """The sim at 2 ticks/s on two symbols; from the start on, crashes of fxcm_session (its
    minute's ticks are lost: history fills it), tick_aggregator (just before a minute's end),
    history_poller and redis_publisher (just before a minute's end). Every final 1m bar reaches
    the subscriber within close_grace_ms + 2 s of its bucket's end, every derived bar within
    1 s of its last minute, whatever their source; none is missing, none has two finals."""
    calendar = open_calendar(tmp_path)
    sections: dict[str, Any] = {
        "symbols": ["EURUSD", "XAUUSD"], "calendar_file": str(calendar),
        "timeframes": ["1m", "5m", "15m"],
        "broker": {"kind": "sim", "sim": {"seed": 3, "tick_rate_per_second": 2.0}},
        "cache": {"dir": str(tmp_path / "cache")},
        "redis": {"url": redis_server.url, "port": redis_server.port, "required": True},
        "redis_publisher": {"journal_dir": str(tmp_path / "journal")},
        "tick_aggregator": {"close_grace_ms": GRACE_MS},
        "history_poller": {"warmup_bars": 30},
        "bus": {"status_interval_seconds": 0.5},
    }
    offset = time.time() - time.monotonic()
    crashes: list[tuple[str, float]] = []
    with host_process(tmp_path, run_dir, LIVE_ACTORS, **sections):
        started = time.time()
        for name, second in (("fxcm_session", 20.0), ("tick_aggregator", 58.5),
                             ("history_poller", 30.0), ("redis_publisher", 59.0)):
            crashes.append((name, at_second(second)))
            crash_actor(run_dir, name)
        # the 5m buckets holding the start and each crash are over, and two more minutes
        last = max(started, crashes[-1][1]) + 120
        five = 300.0
        until = max(last, (crashes[0][1] // five + 1) * five + 10, (started // five + 1) * five
                    + 10)
        time.sleep(max(0.0, until - time.time()))  # the observation window itself
        got = arrivals(subscriber, offset)
    window_start = started * 1000
    window_end = (until - 8) * 1000
    problems: list[str] = []
    for symbol in ("EURUSD", "XAUUSD"):
        minute = int(window_start // MINUTE * MINUTE)
        while minute + MINUTE <= window_end:
            key = (symbol, "1m", minute)
            if key not in got:
                problems.append("missing {}".format(key))
            else:
                late = got[key][0] - (minute + MINUTE) / 1000
                if late > (GRACE_MS + 2000) / 1000:
                    problems.append("{} arrived {:.2f} s after its end".format(key, late))
            minute += MINUTE
        for tf in ("5m", "15m"):
            span = SPANS[tf] * MINUTE
            start = int(window_start // span * span)
            while start + span <= window_end:
                key = (symbol, tf, start)
                last_minute = (symbol, "1m", start + span - MINUTE)
                if key not in got:
                    problems.append("missing {}".format(key))
                elif last_minute in got:
                    after = got[key][0] - got[last_minute][0]
                    if after > 1.0:
                        problems.append("{} arrived {:.2f} s after its last minute".format(
                            key, after))
                start += span
    assert problems == [], "{} (crashes at {})".format(problems, [
        (name, time.strftime("%H:%M:%S", time.gmtime(at))) for name, at in crashes])
