"""``fxcm_set_universe`` where a consumer sees it: a whole host (sim broker, an always-open
calendar) on a real Redis streams the targets it starts with, then, after the command, only the
new ones, and heartbeat shows them as stream targets. It waits for live minutes to end, so it
has a file of its own (the suite runs one file a worker); its fixtures are
tests/test_commands_on_redis.py's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors._redis_server import EmbeddedRedis
from tests.helpers import host_process, wait_for
from tests.test_commands_on_redis import (
    ACTORS,
    Feed,
    bars_of,
    feed,
    sections,
    stream_heartbeat,
)
from tests.test_redis_publisher import redis_dir, redis_server

__all__ = ["feed", "redis_dir", "redis_server"]  # fixtures this file's tests use


@pytest.mark.timeout(400)
def test_set_universe_changes_what_is_streamed_and_the_stream_targets(
        tmp_path: Path, run_dir: str, redis_server: EmbeddedRedis, feed: Feed) -> None:
    dynamic = {"dynamic_universe_enabled": True,
               "dynamic_universe_default_targets": "XAU/USD:m1", "max_targets": 5}
    with host_process(tmp_path, run_dir, ACTORS, **sections(
            tmp_path, redis_server, history_poller=dynamic)):
        beat = stream_heartbeat(feed)
        assert [(t["symbol"], t["tf"]) for t in beat["context"]["stream_targets"]] == [
            ("XAU/USD", "m1")]
        since = time.monotonic()
        # the first whole minute after the start: up to two minutes away
        wait_for(lambda: bars_of(feed.ohlcv(since), "XAUUSD", "1m", "tick_agg"), 150,
                 "a live XAUUSD 1m bar")
        assert not [p for _, p in feed.ohlcv(since) if p["symbol"] == "EURUSD"
                    and p["source"] != "history_s3"]
        feed.send({"type": "fxcm_set_universe", "targets": [{"symbol": "EUR/USD", "tf": "m1"}]})
        done = feed.final(cmd="fxcm_set_universe")
        assert done["result"]["applied"] is True
        wait_for(lambda: [(t["symbol"], t["tf"]) for t in
                          feed.heartbeats()[-1]["context"]["stream_targets"]]
                 == [("EUR/USD", "m1")], 30, "the new stream targets in heartbeat")
        switched = time.monotonic()
        wait_for(lambda: bars_of(feed.ohlcv(switched), "EURUSD", "1m", "tick_agg"), 90,
                 "a live EURUSD 1m bar")  # the next minute's end
        later = [p for _, p in feed.ohlcv(switched + 2)
                 if p["symbol"] == "XAUUSD" and p["source"] == "tick_agg"]
        assert later == []
