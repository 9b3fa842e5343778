"""The commands' effects where a consumer sees them: a whole host (sim broker, an always-open
calendar) on a real Redis, commands published on ``fxcm:commands`` the way their producers send
them, results on ``fxcm:commands:result``, bars on ``fxcm:ohlcv``, heartbeat and status.

- smc_v1's own warmup command publishes the bars it asked for (``history_s3``), even though
  the same finals went out before;
- ``fxcm_republish_tail`` reaches subscribers and keeps seed 004's watermark (``force`` past it);
- ``fxcm_backfill`` honours an explicit range as given;
- ``fxcm_set_universe``: in tests/test_set_universe_on_redis.py (two wall-clock minutes);
- ``fxcm_tail_guard`` reports seed 004's tiers in its result and in the feed's status, and
  repairs only when the market is closed (by default);
- a year-long ``fxcm_tail_guard`` with repair runs in paced chunks below live bars: the live
  final bars stay on time, the command reports progress and its true end, and can be cancelled;
- the feed is not ready (heartbeat ``warmup``) until warmup has published; a warmup that fails
  says why and is tried again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actors._redis_server import EmbeddedRedis
from config.settings import load_defaults
from protocol.market import MINUTE_MS
from tests.helpers import RedisSubscriber, host_process, wait_for
from tests.test_redis_publisher import redis_dir, redis_server

__all__ = ["redis_dir", "redis_server"]  # fixtures used here

ACTORS = load_defaults()["actors"]
CHANNELS = ["fxcm:ohlcv", "fxcm:commands:result", "fxcm:heartbeat", "fxcm:status"]
GRACE_S = 1.5


def always_open(directory: Path) -> Path:
    """A calendar open all week but one minute, no breaks, no holidays: history reaches back
    as far as a test asks, whatever the weekday."""
    path = directory / "calendar.json"
    path.write_text(json.dumps({"default": {"weekly_open": "Sun 00:01@UTC",
                                            "weekly_close": "Sun 00:00@UTC",
                                            "daily_breaks": [], "holidays": []},
                                "profiles": {}}))
    return path


def sections(tmp_path: Path, server: EmbeddedRedis, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "symbols": ["EURUSD", "XAUUSD"], "calendar_file": str(always_open(tmp_path)),
        "timeframes": ["1m", "5m", "15m"],
        "broker": {"kind": "sim", "sim": {"seed": 5, "tick_rate_per_second": 2.0}},
        "cache": {"dir": str(tmp_path / "cache")},
        "redis": {"url": server.url, "port": server.port, "required": True},
        "redis_publisher": {"journal_dir": str(tmp_path / "journal")},
        "history_poller": {"warmup_bars": 120},
        "heartbeat": {"interval_seconds": 1.0, "status_interval_seconds": 1.0},
        "bus": {"status_interval_seconds": 0.5},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = dict(result[key], **value)
        else:
            result[key] = value
    return result


class Feed:
    """The host's Redis as a consumer and a command producer see it."""

    def __init__(self, server: EmbeddedRedis) -> None:
        self.client = redis.Redis.from_url(server.url)
        self.subscriber = RedisSubscriber(server.url, CHANNELS)

    def send(self, command: Any) -> None:
        wait_for(lambda: self.client.pubsub_numsub("fxcm:commands")[0][1] >= 1, 60,
                 "command_handler to subscribe to fxcm:commands")
        data = command if isinstance(command, bytes) else json.dumps(command).encode()
        self.client.publish("fxcm:commands", data)

    def results(self, req_id: str | None = None, cmd: str | None = None) -> list[Any]:
        return [r for r in self.subscriber.payloads("fxcm:commands:result")
                if (req_id is None or r["req_id"] == req_id) and (cmd is None or r["cmd"] == cmd)]

    def final(self, req_id: str | None = None, cmd: str | None = None,
              timeout: float = 120.0) -> dict[str, Any]:
        wait_for(lambda: any(r["state"] in ("ok", "error") for r in self.results(req_id, cmd)),
                 timeout, "the end of {}".format(req_id or cmd))
        return [r for r in self.results(req_id, cmd) if r["state"] in ("ok", "error")][-1]

    def ohlcv(self, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        return [(arrived, json.loads(data)) for arrived, channel, data
                in self.subscriber.snapshot() if channel == "fxcm:ohlcv" and arrived >= since]

    def heartbeats(self) -> list[dict[str, Any]]:
        return self.subscriber.payloads("fxcm:heartbeat")

    def close(self) -> None:
        self.subscriber.close()
        self.client.close()


def envelope(cmd: str, args: dict[str, Any], req_id: str | None = None) -> dict[str, Any]:
    return {"cmd": cmd, "req_id": req_id or "t-" + uuid.uuid4().hex[:12], "ts": time.time(),
            "args": args}


@pytest.fixture
def feed(redis_server: EmbeddedRedis) -> Iterator[Feed]:
    consumer = Feed(redis_server)
    yield consumer
    consumer.close()


def stream_heartbeat(feed: Feed, timeout: float = 120.0) -> dict[str, Any]:
    wait_for(lambda: any(b["state"] == "stream" for b in feed.heartbeats()), timeout,
             "a streaming heartbeat (the warmup done)")
    return [b for b in feed.heartbeats() if b["state"] == "stream"][-1]


def bars_of(messages: list[tuple[float, dict[str, Any]]], symbol: str, tf: str,
            source: str) -> list[dict[str, Any]]:
    return [bar for _, payload in messages if payload["symbol"] == symbol
            and payload["tf"] == tf and payload["source"] == source for bar in payload["bars"]]


@pytest.mark.timeout(400)
def test_warmup_republish_and_backfill_reach_subscribers_as_their_producers_mean_them(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis, feed: Feed) -> None:
    with host_process(tmp_path, run_dir, ACTORS, **sections(tmp_path, redis_server)):
        stream_heartbeat(feed)
        # smc_v1's requester, byte for byte: 300 bars of XAUUSD 1m, extra fields and all
        since = time.monotonic()
        feed.send(b'{"fxcm_status":{"market":"open","ohlcv":"ok","price":"ok"},'
                  b'"lookback_bars":300,"lookback_minutes":300,"min_history_bars":300,'
                  b'"reason":"insufficient_history","s2":{"bars_count":0,"history_state":'
                  b'"insufficient","last_open_time_ms":null},"symbol":"XAUUSD","tf":"1m",'
                  b'"type":"fxcm_warmup"}')
        done = feed.final(cmd="fxcm_warmup")
        assert done["state"] == "ok", done
        assert done["result"]["published"] == {"XAUUSD:1m": 300}
        wait_for(lambda: len(bars_of(feed.ohlcv(since), "XAUUSD", "1m", "history_s3")) >= 300,
                 60, "the 300 bars asked for on fxcm:ohlcv")
        sent = bars_of(feed.ohlcv(since), "XAUUSD", "1m", "history_s3")
        assert len({bar["open_time"] for bar in sent}) == 300  # the newest 300, each once
        # the predecessor's 5m warmup counts bars of 5m
        feed.send({"type": "fxcm_warmup", "symbol": "EURUSD", "tf": "5m",
                   "min_history_bars": 12})
        assert feed.final(cmd="fxcm_warmup", timeout=120)["state"] == "ok"
        wait_for(lambda: len(bars_of(feed.ohlcv(since), "EURUSD", "5m", "history_s3")) == 12,
                 60, "12 bars of EURUSD 5m")

        # republish: everything in the window, then nothing new (watermark), then force
        republish = envelope("fxcm_republish_tail", {"symbol": "XAUUSD", "timeframes": ["1m"],
                                                     "window_hours": 1}, "t-rep-1")
        feed.send(republish)
        first = feed.final("t-rep-1")["result"]
        assert first["state"] == "ok" and 55 <= first["published"] <= 61
        feed.send(dict(republish, req_id="t-rep-2", ts=time.time()))
        second = feed.final("t-rep-2")["result"]
        assert second["published"] <= 1 and second["skipped_by_watermark"]["1m"] >= 55
        start = time.monotonic()
        feed.send(dict(envelope("fxcm_republish_tail", dict(republish["args"], force=True),
                                "t-rep-3")))
        forced = feed.final("t-rep-3")["result"]
        assert forced["published"] >= first["published"]
        wait_for(lambda: len(bars_of(feed.ohlcv(start), "XAUUSD", "1m", "history_s3"))
                 >= forced["published"], 60, "the forced republish on fxcm:ohlcv")

        # backfill: an explicit 8-hour range is honoured, not clamped to backfill_max_minutes
        now_ms = int(time.time() * 1000)
        begin = now_ms - now_ms % MINUTE_MS - 10 * 3_600_000
        feed.send(envelope("fxcm_backfill", {"symbol": "EURUSD", "start_ms": begin,
                                             "end_ms": begin + 8 * 3_600_000, "window_hours": 1},
                           "t-backfill"))
        result = feed.final("t-backfill")["result"]
        assert (result["start_ms"], result["end_ms"]) == (begin, begin + 8 * 3_600_000)
        assert result["lookback_minutes"] == 480 and result["clamped"] is False
        assert 480 + 59 <= result["published"]["1m"] <= 480 + 61  # the range and the tail


@pytest.mark.timeout(300)
def test_tail_guard_tiers_in_its_result_and_the_feeds_status_and_repair_waits_for_a_close(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis, feed: Feed) -> None:
    with host_process(tmp_path, run_dir, ACTORS, **sections(tmp_path, redis_server)):
        stream_heartbeat(feed)
        feed.send(envelope("fxcm_tail_guard", {"symbols": ["XAUUSD"], "window_hours": 6,
                                               "repair": True, "tfs": ["1m", "5m"]}, "t-guard"))
        result = feed.final("t-guard")["result"]
        entry = result["symbols"]["XAUUSD"]
        assert result["repair_refused"] and "market is open" in result["repair_refused"]
        assert entry["near"]["window_minutes"] == 60 and entry["far"]["window_minutes"] == 360
        assert entry["far"]["tf_states"]["1m"]["missing_bars"] >= 200  # warmup reached 120
        assert entry["near"]["tf_states"]["1m"]["state"] == "ok"
        wait_for(lambda: feed.heartbeats()[-1]["context"]["feed"].get("tail_guard", {}).get(
            "far"), 30, "the tail guard's tiers in the heartbeat's feed status")
        feed_status = feed.heartbeats()[-1]["context"]["feed"]
        assert feed_status["tail_guard"]["near"]["symbols"]["XAUUSD"]["1m"]["state"] == "ok"
        assert feed_status["ohlcv"]["final_1m"]["coverage_ok"] is True


@pytest.mark.timeout(420)
def test_a_year_long_tail_guard_repair_never_delays_live_bars_and_can_be_cancelled(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis, feed: Feed) -> None:
    poller = {"max_bars": 20_000, "tail_guard_repair_only_when_market_closed": False}
    host_started = time.time()
    with host_process(tmp_path, run_dir, ACTORS, **sections(tmp_path, redis_server,
                                                            history_poller=poller)):
        stream_heartbeat(feed)
        # the drill's schedule: the job starts 15 s before a whole minute of ticks ends, so
        # that minute's bar falls due while the job repairs and publishes
        first_whole = host_started - host_started % 60 + 60
        start_at = first_whole + 45 if time.time() < first_whole + 40 else \
            time.time() - time.time() % 60 + 105
        time.sleep(max(0.0, start_at - time.time()))
        started = time.monotonic()
        wall = time.time() - time.monotonic()
        feed.send(envelope("fxcm_tail_guard", {"symbols": ["EURUSD", "XAUUSD"],
                                               "window_hours": 8784, "repair": True},
                           "t-year"))
        done = feed.final("t-year", timeout=360)
        ended = time.monotonic()
        assert done["state"] == "ok", done
        assert ended - started > 20, "a job long enough to see a live minute end"
        result = done["result"]
        assert result["asked_window_minutes"] == 8784 * 60 and result["window_minutes"] == 20_000
        for symbol in ("EURUSD", "XAUUSD"):
            # all but the last day (the repair scan's window, done at start) and the store
            assert result["symbols"][symbol]["repaired"] >= 18_000
            assert result["symbols"][symbol]["still_missing"] == 0
        progress = [r for r in feed.results("t-year")
                    if r["state"] == "running" and "progress" in r.get("result", {})]
        assert len(progress) >= 2, "the job's progress on fxcm:commands:result"
        # every live 1m bar whose minute ended while the job ran came on time
        live = [(arrived, bar) for arrived, payload in feed.ohlcv(started)
                if payload["source"] == "tick_agg" and payload["tf"] == "1m"
                for bar in payload["bars"] if bar["complete"]]
        during = [(arrived, bar) for arrived, bar in live
                  if started + 2 <= (bar["close_time"] + 1) / 1000 - wall <= ended]
        assert {bar["open_time"] for _, bar in during}, "live minutes ended during the job"
        for arrived, bar in during:
            late = arrived + wall - (bar["close_time"] + 1) / 1000
            assert late <= GRACE_S + 2.0, (bar["open_time"], late)
        # a long republish, cancelled while it runs: it ends as cancelled
        feed.send(envelope("fxcm_republish_tail", {"symbol": "EURUSD", "timeframes": ["1m"],
                                                   "window_hours": 8784, "force": True},
                           "t-year-2"))
        wait_for(lambda: any(r["state"] == "running" for r in feed.results("t-year-2")), 60,
                 "the second job running")
        feed.send(envelope("fxcm_cancel", {"target": "t-year-2"}, "t-cancel"))
        assert feed.final("t-cancel")["state"] == "ok"
        stopped = feed.final("t-year-2")
        assert stopped["state"] == "error" and stopped["error"]["code"] == "cancelled"


@pytest.mark.timeout(300)
def test_the_feed_is_not_ready_until_warmup_published_and_a_failed_warmup_retries(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis, feed: Feed) -> None:
    failing = {"broker": {"kind": "sim", "sim": {"seed": 5, "tick_rate_per_second": 2.0,
                                                 "faults": {"history_errors": 3}}},
               "history_poller": {"warmup_retry_base_seconds": 2.0}}
    with host_process(tmp_path, run_dir, ACTORS, **sections(tmp_path, redis_server, **failing)):
        wait_for(lambda: any(b["context"].get("feed", {}).get("phase") == "failed"
                             for b in feed.heartbeats()), 90, "the failed warmup in heartbeat")
        failed = [b for b in feed.heartbeats()
                  if b["context"].get("feed", {}).get("phase") == "failed"][-1]
        assert failed["state"] == "warmup"
        assert "warmup failed" in failed["context"]["feed"]["reason"]
        statuses = feed.subscriber.payloads("fxcm:status")
        assert any(s["note"].startswith("warmup") for s in statuses)
        beat = stream_heartbeat(feed, 180)
        assert beat["context"]["feed"]["phase"] == "ready"
        assert beat["context"]["feed"]["attempts"] >= 2
