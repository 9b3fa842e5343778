"""``fxcm viewer``: the pure rendering from snapshot dicts (every mode, in the seed's heartbeat
shapes, and any JSON at all without a crash), then the real thing under a pseudo-terminal
(pexpect), in each mode, against a real host on the sim broker with its embedded Redis, and
without a host; and ``fxcm tap`` saying what it waits for.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

import config
from actors.tools.viewer import MODES, Board, alerts, format_number, mode_key, render_text
from actors.tools.viewer._run import Screen as KeyState
from tests.helpers import REPO_ROOT, embedded_redis_url, host_process, open_calendar, wait_for

NOW = 1_800_000_000.0
MINUTE_MS = 60_000
LIMITS = {"tick_stale_seconds": 30.0, "status_stale_seconds": 15.0, "lag_warn_seconds": 45.0,
          "lag_error_seconds": 120.0}
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>78])")


# -- snapshots and the pure rendering ----------------------------------------------------------

def bar(open_ms: int, tf_ms: int = MINUTE_MS, close: float = 1.2345, complete: bool = True
        ) -> dict[str, Any]:
    return {"open_time": open_ms, "close_time": open_ms + tf_ms - 1, "open": 1.2, "high": 1.3,
            "low": 1.1, "close": close, "volume": 10.0, "tick_count": 10, "complete": complete,
            "synthetic": False}


def snapshot(**parts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "now": NOW, "redis": {"url": "unix:///run/redis.sock", "connected": True, "error": ""},
        "host": {"reachable": True, "error": "", "pid": 42, "version": "0.1.0",
                 "run_dir": "/run", "actors": {}},
        "status": None, "heartbeat": None, "market_status": None, "prices": {}, "bars": {},
        "limits": LIMITS}
    base.update(parts)
    return base


def price(symbol: str, bid: float, ask: float, tick_age: float) -> dict[str, Any]:
    return {"symbol": symbol, "bid": bid, "ask": ask, "mid": round((bid + ask) / 2, 6),
            "tick_ts": NOW - tick_age, "snap_ts": NOW - 0.5}


def row(text: str, first_cell: str) -> str:
    """The table line that starts with ``first_cell``."""
    for line in text.splitlines():
        if line.strip("│┃ ").startswith(first_cell):
            return line
    raise AssertionError("no row {!r} in:\n{}".format(first_cell, text))


def test_an_empty_snapshot_renders_dashes_and_not_reachable() -> None:
    text = render_text({})
    assert "redis: not reachable" in text
    assert "host: not reachable" in text
    status_row = text.splitlines()[text.splitlines().index(row(text, "process")) + 2]
    assert set(status_row.replace("│", " ").split()) == {"-"}


def test_prices_show_bid_ask_mid_and_tick_age() -> None:
    text = render_text(snapshot(prices={"XAUUSD": price("XAUUSD", 2634.55, 2634.91, 2.5)}))
    cells = row(text, "XAUUSD").replace("│", " ").split()
    assert cells == ["XAUUSD", "2634.55", "2634.91", "2634.73", "2.5s", "0.5s"]


def test_a_tick_older_than_the_stale_limit_is_marked_stale() -> None:
    text = render_text(snapshot(prices={"EURUSD": price("EURUSD", 1.1, 1.1002, 31.0),
                                        "GBPUSD": price("GBPUSD", 1.3, 1.3002, 29.0)}))
    assert "31.0s stale" in row(text, "EURUSD")
    assert "stale" not in row(text, "GBPUSD")


def test_a_price_without_fields_shows_dashes() -> None:
    text = render_text(snapshot(prices={"EURUSD": {"symbol": "EURUSD"}}))
    assert row(text, "EURUSD").replace("│", " ").split() == ["EURUSD"] + ["-"] * 5


def test_bars_show_open_close_and_lag_per_timeframe() -> None:
    end_ms = int(NOW * 1000) - int(NOW * 1000) % MINUTE_MS
    bars = {"1m": bar(end_ms - MINUTE_MS, close=1.08),
            "5m": bar(end_ms - 5 * MINUTE_MS, 5 * MINUTE_MS)}
    text = render_text(snapshot(bars={"EURUSD": bars}))
    header = next(line for line in text.splitlines() if "symbol" in line and "1m" in line)
    assert header.index(" 1m ") < header.index(" 5m ")
    lines = text.splitlines()
    first = lines.index(row(text, "EURUSD"))
    assert "1.08" in lines[first]
    lag = (NOW * 1000 - end_ms) / 1000
    assert "lag {:.1f}s".format(lag) in lines[first + 1]
    assert "stale" not in lines[first + 1] and "late" not in lines[first + 1]


def test_a_bar_overdue_past_the_error_limit_is_marked_stale() -> None:
    end_ms = int(NOW * 1000)
    text = render_text(snapshot(bars={"EURUSD": {"1m": bar(end_ms - 5 * MINUTE_MS)}},
                                status={"market": "open"}))
    lines = text.splitlines()
    assert "stale" in lines[lines.index(row(text, "EURUSD")) + 1]


def test_a_bar_overdue_past_the_warn_limit_is_marked_late() -> None:
    end_ms = int(NOW * 1000)
    # ended 1m50s ago: the next 1m bar is 50 s overdue (warn 45 s, error 120 s)
    text = render_text(snapshot(bars={"EURUSD": {"1m": bar(end_ms - 110_000 - MINUTE_MS)}}))
    lines = text.splitlines()
    following = lines[lines.index(row(text, "EURUSD")) + 1]
    assert "late" in following and "stale" not in following


def test_no_bar_is_stale_while_the_market_is_closed() -> None:
    end_ms = int(NOW * 1000)
    text = render_text(snapshot(bars={"EURUSD": {"1m": bar(end_ms - 3600_000)}},
                                status={"market": "closed"}))
    lines = text.splitlines()
    assert "stale" not in lines[lines.index(row(text, "EURUSD")) + 1]


def test_the_public_status_and_session_are_shown_and_an_old_one_is_stale() -> None:
    status = {"ts": NOW - 20.0, "process": "stream", "market": "open", "price": "ok",
              "ohlcv": "delayed", "note": "ohlcv delayed",
              "session": {"state": "open", "state_detail": "london", "name": "LDN"},
              "last_command": {"cmd": "fxcm_backfill", "state": "error", "req_id": "r-1",
                               "error": {"code": "contract_error", "message": "x"}}}
    text = render_text(snapshot(status=status, heartbeat={"state": "stream"}))
    line = row(text, "stream")
    for word in ("open", "ok", "delayed", "open london LDN", "ohlcv delayed", "20.0s stale"):
        assert word in line
    assert "last command: fxcm_backfill error r-1 (contract_error)" in text


def test_the_actors_table_shows_state_mailbox_restarts_and_dead_letters() -> None:
    actors = {"tick_aggregator": {"state": "running", "placement": "thread", "depth": 7,
                                  "peak": 90, "restarts": 2, "dead_letters": 1},
              "fxcm_session": {"state": "restarting"}}
    text = render_text(snapshot(host={"reachable": True, "pid": 1, "actors": actors}))
    assert row(text, "tick_aggregator").replace("│", " ").split() == [
        "tick_aggregator", "running", "thread", "7", "90", "2", "1"]
    assert row(text, "fxcm_session").replace("│", " ").split() == [
        "fxcm_session", "restarting", "-", "-", "-", "-", "-"]


def test_an_unreachable_host_is_said_and_the_rest_still_renders() -> None:
    text = render_text(snapshot(host={"reachable": False, "error": "no host in /run"},
                                prices={"EURUSD": price("EURUSD", 1.1, 1.1002, 1.0)}))
    assert "host: not reachable (no host in /run)" in text
    assert "1.1002" in row(text, "EURUSD")


def test_the_board_keeps_the_newest_final_bar_and_ignores_previews_and_garbage() -> None:
    board = Board()
    board.take("ohlcv", json.dumps({"symbol": "EURUSD", "tf": "1m", "source": "tick",
                                    "bars": [bar(2 * MINUTE_MS), bar(3 * MINUTE_MS)]}))
    board.take_bar("EURUSD", "1m", bar(MINUTE_MS))  # an older one, read from a key later
    board.take("ohlcv", {"symbol": "EURUSD", "tf": "1m",
                         "bars": [bar(4 * MINUTE_MS, complete=False)]})
    board.take("ohlcv", b"not json")
    board.take("price_tik", b"[1, 2]")
    assert board.bars["EURUSD"]["1m"]["open_time"] == 3 * MINUTE_MS
    assert board.bars["EURUSD"]["1m"]["source"] == "tick"
    assert board.prices == {}


def test_the_board_keeps_the_newest_price() -> None:
    board = Board()
    board.take("price_tik", json.dumps(price("EURUSD", 1.2, 1.2002, 1.0)))
    older = price("EURUSD", 1.1, 1.1002, 1.0)
    older["snap_ts"] -= 10
    board.take("price_tik", json.dumps(older))
    assert board.prices["EURUSD"]["bid"] == 1.2


def test_prices_are_shown_without_float_noise() -> None:
    assert format_number(1.0920800000000002) == "1.09208"
    assert format_number(2634.7) == "2634.7"


# -- the modes (pure) -----------------------------------------------------------------------------

# seed 001 sections 6.2.2, 6.2.3 and 9.1: the heartbeat's context blocks the modes read
SEED_CONTEXT: dict[str, Any] = {
    "diag": {"state": "STREAM", "reason": "bars and ticks flowing", "backoff": {
        "fxcm_history": {"active": True, "sleep_seconds": 12.0, "remaining_seconds": 7.5,
                         "fail_count": 2, "last_error_type": "PriceHistoryNotReady",
                         "last_error_ts": "2027-01-15T08:00:00+00:00"},
        "redis": {"active": False, "sleep_seconds": 0.0, "remaining_seconds": 0.0,
                  "fail_count": 0, "last_error_type": None, "last_error_ts": None}}},
    "history": {"calls_60s": 14, "limit_60s": 360, "calls_3600s": 140, "limit_3600s": 7200,
                "throttle_state": "warn", "next_slot_seconds": 1.5,
                "last_denied_reason": "min_interval:XAUUSD:1m",
                "priority": {"targets": ["XAUUSD:1m"], "reserve_per_min": 108,
                             "reserve_per_hour": 2160, "calls_60s": 4},
                "skipped_polls": [{"symbol": "EURUSD", "tf": "5m", "count": 7}]},
    "tick_cadence": {"state": "live", "history_state": "active", "reason": "ticks flowing",
                     "multiplier": 1.1, "tick_silence_seconds": 0.4,
                     "cadence_seconds": {"1m": 5.5, "5m": 33.0},
                     "next_poll_in_seconds": {"1m": 2.25, "5m": 20.0}},
    "price_stream": {"state": "ok", "channel": "fxcm:price_tik", "interval_seconds": 3.0,
                     "last_snap_ts": (NOW - 1) * 1000, "last_tick_ts": (NOW - 0.4) * 1000,
                     "tick_silence_seconds": 0.4, "symbols_state": [
                         {"symbol": "XAUUSD", "bid": 2634.55, "ask": 2634.91, "mid": 2634.73,
                          "tick_age_seconds": 0.4},
                         {"symbol": "EURUSD", "bid": 1.1, "ask": 1.1002, "mid": 1.1001,
                          "tick_age_seconds": 95.0},
                         {"symbol": "GBPUSD"}]},
    "stream_targets": [{"symbol": "XAU/USD", "tf": "m1", "symbol_code": "XAUUSD",
                        "timeframe": "1m", "last_close_ms": NOW * 1000 - 61_000,
                        "lag_seconds": 61.0, "staleness_seconds": 1.1, "bars": 42}],
    "session": {"tag": "LDN_METALS", "timezone": "Europe/London",
                "session_open_utc": "2027-01-15T08:30:00+00:00",
                "session_close_utc": "2027-01-15T14:30:00+00:00",
                "weekly_open": "00:00@Asia/Tokyo", "weekly_close": "21:55@America/New_York",
                "daily_breaks": [{"start": "21:55", "end": "23:00", "tz": "UTC"}],
                "next_open_utc": "2027-01-15T23:00:00+00:00", "next_open_seconds": 1800.0,
                "stats": {"LDN_METALS": {"tag": "LDN_METALS", "session_open_utc":
                                         "2027-01-15T08:30:00+00:00",
                                         "session_close_utc": "2027-01-15T14:30:00+00:00",
                                         "symbols": [{"symbol": "XAUUSD", "tf": "1m",
                                                      "bars": 240, "range": 23.83,
                                                      "avg": 2651.0}]}}},
    "published_bars": 2, "lag_seconds": 1.1, "cycle_seconds": 0.004}


def seed_snapshot(**parts: Any) -> dict[str, Any]:
    heartbeat = {"type": "heartbeat", "state": "stream", "ts": "2027-01-15T08:00:00+00:00",
                 "context": json.loads(json.dumps(SEED_CONTEXT))}
    return snapshot(heartbeat=heartbeat, **parts)


def screen_text(mode: str, **parts: Any) -> str:
    return render_text(seed_snapshot(mode=mode, **parts), width=200)


def cells(line: str) -> list[str]:
    return line.replace("│", " ").split()


def table_row(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in text.splitlines():
        if "│" in line and cells(line)[:1] == [first]:
            return cells(line)
    raise AssertionError("no table row {!r} in:\n{}".format(first, text))


def test_every_mode_has_the_predecessors_key_and_renders_an_empty_snapshot() -> None:
    assert [(key, name) for key, (name, _, _) in MODES.items()] == [
        ("0", "TL"), ("1", "SUM"), ("2", "SES"), ("3", "ALERT"), ("4", "STREAM"),
        ("5", "PRICE"), ("6", "SUPR"), ("7", "HIST"), ("8", "STAT"), ("9", "VCAL")]
    for key, (name, title, _) in MODES.items():
        text = render_text({"mode": key})
        assert "mode {} {}".format(key, name) in text
        assert "[p] pause  [c] clear  [q] quits" in text
        assert "could not be drawn" not in text, (key, text)
        assert mode_key(name) == key and mode_key(title) == key and mode_key(key) == key


def test_hist_mode_shows_the_quota_throttle_deny_reason_skipped_polls_and_backoff() -> None:
    text = screen_text("7")
    assert "14/360" in row(text, "calls 60 s") and "140/7200" in row(text, "calls 3600 s")
    assert "warn" in row(text, "throttle state")
    assert "min_interval:XAUUSD:1m" in row(text, "last deny")
    assert "XAUUSD:1m" in row(text, "priority targets")
    assert "108 / 2160" in row(text, "priority reserve")
    assert cells(row(text, "EURUSD")) == ["EURUSD", "5m", "7"]
    assert cells(row(text, "fxcm_history")) == [
        "fxcm_history", "active", "7.5s", "12.0s", "2", "PriceHistoryNotReady", "08:00:00"]
    assert table_row(text, "redis") == ["redis", "idle", "0.0s", "0.0s", "0", "-", "-"]


def test_price_mode_shows_bid_ask_mid_tick_age_waiting_stale_silence_and_cadence() -> None:
    text = screen_text("5")
    assert cells(row(text, "XAUUSD")) == ["XAUUSD", "2634.55", "2634.91", "2634.73", "0.4s",
                                          "ok"]
    assert cells(row(text, "EURUSD")) == ["EURUSD", "1.1", "1.1002", "1.1001", "95.0s",
                                          "stale"]
    assert cells(row(text, "GBPUSD")) == ["GBPUSD", "-", "-", "-", "-", "waiting"]
    assert "0.4s" in row(text, "tick silence") and "ok" in row(text, "state")
    assert cells(row(text, "1m")) == ["1m", "5.5s", "2.2s"]
    assert "ticks flowing" in row(text, "reason") and "1.1" in row(text, "multiplier")


def test_price_mode_falls_back_to_price_tik_without_symbols_state() -> None:
    snap = seed_snapshot(mode="5", prices={"XAUUSD": price("XAUUSD", 2634.55, 2634.91, 2.5)})
    del snap["heartbeat"]["context"]["price_stream"]["symbols_state"]
    text = render_text(snap, width=200)
    assert "from price_tik" in text
    assert cells(row(text, "XAUUSD")) == ["XAUUSD", "2634.55", "2634.91", "2634.73", "2.5s",
                                          "ok"]


def test_supervisor_mode_shows_mailboxes_restarts_and_dead_letters() -> None:
    actors = {"tick_aggregator": {"state": "running", "placement": "process", "pid": 77,
                                  "depth": 7, "peak": 90, "inflight": 3, "restarts": 2,
                                  "dead_letters": 1, "backpressure_events": 4,
                                  "last_exit": "crashed",
                                  "mailboxes": [{"topic": "tick.", "policy": "lossless",
                                                 "depth": 7, "bound": 10000, "peak": 90,
                                                 "blocked_producers": 1}]}}
    host = {"reachable": True, "pid": 1, "actors": actors,
            "router": {"published": 5, "dead_letters": 1},
            "dead_letters": [{"actor": "tick_aggregator", "topic": "tick.EURUSD",
                              "reason": "ValueError: boom"}]}
    text = screen_text("6", host=host)
    assert cells(row(text, "tick_aggregator")) == [
        "tick_aggregator", "running", "process", "77", "7", "90", "3", "2", "1", "4", "crashed"]
    lines = [line for line in text.splitlines() if "tick." in line and "lossless" in line]
    assert cells(lines[0]) == ["tick_aggregator", "tick.", "lossless", "7", "10000", "90", "1"]
    assert "router: published 5" in text and "ValueError: boom" in text
    assert "adaptive cadence" in text


def test_session_mode_shows_the_session_and_its_stats() -> None:
    text = screen_text("2")
    assert "LDN_METALS" in row(text, "tag") and "Europe/London" in row(text, "timezone")
    assert "21:55-23:00 UTC" in row(text, "daily breaks")
    assert "30m00s" in row(text, "next open in")
    assert cells(row(text, "LDN_METALS"))[-5:] == ["XAUUSD", "1m", "240", "23.83", "2651"]


def test_streams_mode_shows_targets_and_redis_health() -> None:
    text = screen_text("4", redis={"url": "unix:///r.sock", "connected": True, "error": "",
                                   "latency_ms": 0.25,
                                   "channels": {"fxcm:ohlcv": "ohlcv"}},
                       channels={"ohlcv": {"count": 12, "last_at": NOW - 3}})
    assert cells(row(text, "XAUUSD"))[:2] == ["XAUUSD", "1m"]
    assert "61.0s" in row(text, "XAUUSD") and "42" in row(text, "XAUUSD")
    assert "0.25 ms" in row(text, "ping")
    assert cells(row(text, "fxcm:ohlcv")) == ["fxcm:ohlcv", "12", "3.0s"]


def test_alerts_name_what_needs_an_operator() -> None:
    snap = seed_snapshot(redis={"connected": False, "error": "refused"},
                         host={"reachable": True, "actors": {
                             "fxcm_session": {"state": "restarting", "last_exit": "crashed"},
                             "heartbeat": {"state": "running", "dead_letters": 2}}},
                         channels={"ohlcv": {"count": 1, "last_at": NOW - 200}},
                         limits=dict(LIMITS, heartbeat_alert_seconds=45.0,
                                     ohlcv_idle_warn_seconds=90.0,
                                     ohlcv_idle_error_seconds=180.0))
    snap["heartbeat"]["ts"] = NOW - 60
    snap["heartbeat"]["context"]["diag"]["state"] = "DISCONNECTED"
    found = {(severity, subject) for severity, subject, _ in alerts(snap)}
    assert found == {("error", "redis"), ("error", "heartbeat"), ("error", "diagnostic"),
                     ("error", "ohlcv"), ("warn", "actor fxcm_session"),
                     ("warn", "actor heartbeat"), ("warn", "backoff fxcm_history"),
                     ("warn", "history quota")}
    text = render_text(dict(snap, mode="3"), width=200)
    assert "no bar on the channel for 3m20s" in text
    quiet = seed_snapshot(mode="3", limits=LIMITS)
    quiet["heartbeat"]["ts"] = NOW
    quiet["heartbeat"]["context"]["diag"]["backoff"] = {}
    quiet["heartbeat"]["context"]["history"]["throttle_state"] = "ok"
    assert alerts(quiet) == [] and "no active alerts" in render_text(quiet)


def test_the_timeline_lists_state_changes_newest_first() -> None:
    board = Board()
    board.take("heartbeat", {"state": "warmup", "context": {"diag": {"state": "RECOVERING"}}},
               NOW - 30)
    board.take("heartbeat", {"state": "stream", "context": {"diag": {"state": "STREAM"}}},
               NOW - 20)
    board.take("heartbeat", {"state": "stream", "context": {"diag": {"state": "STREAM"}}},
               NOW - 10)
    board.take("market_status", {"state": "closed", "next_open_utc": "2027-01-17T22:00Z"},
               NOW - 5)
    board.observe(NOW, {"connected": True}, {"reachable": True,
                                             "actors": {"echo": {"state": "running"}}})
    snap = board.snapshot(NOW, {"connected": True}, {"reachable": True}, LIMITS, mode="0")
    events = [(event["source"], event["from"], event["to"]) for event in snap["timeline"]]
    assert events == [("heartbeat", None, "warmup"), ("diagnostic", None, "RECOVERING"),
                      ("heartbeat", "warmup", "stream"), ("diagnostic", "RECOVERING", "STREAM"),
                      ("market", None, "closed"), ("redis", None, "connected"),
                      ("host", None, "reachable"), ("actor echo", None, "running")]
    lines = [line for line in render_text(snap).splitlines() if "│" in line]
    assert "actor echo" in lines[0] and "warmup -> stream" in render_text(snap)
    board.clear()
    assert board.snapshot(NOW, {}, {}, LIMITS)["timeline"] == []


def test_keys_switch_modes_pause_clear_and_quit() -> None:
    board = Board()
    board.take("market_status", {"state": "open"}, NOW)
    keys = KeyState()
    assert keys.press("7", board) is False and keys.mode == "7"
    assert keys.press("p", board) is False and keys.paused
    assert keys.press("P0", board) is False and not keys.paused and keys.mode == "0"
    keys.press("c", board)
    assert board.snapshot(NOW, {}, {}, LIMITS)["timeline"] == []
    assert keys.press("x9Q", board) is True and keys.mode == "9"


def test_a_field_of_the_wrong_type_shows_a_question_mark() -> None:
    snap = seed_snapshot(mode="7")
    context = snap["heartbeat"]["context"]
    context["history"]["calls_60s"] = {"not": "a number"}
    context["history"]["skipped_polls"] = "many"
    context["diag"]["backoff"]["fxcm_history"]["remaining_seconds"] = "soon"
    context["diag"]["backoff"]["redis"] = [1, 2]
    text = render_text(snap, width=200)
    assert "?/360" in row(text, "calls 60 s")
    assert cells(row(text, "fxcm_history"))[2] == "?"
    assert table_row(text, "redis") == ["redis"] + ["?"] * 6
    assert "could not be drawn" not in text


JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**13)
                    | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, prefix + (index,))
    return found


SNAPSHOT_PATHS = _paths(seed_snapshot(host={"reachable": True, "actors": {"a": {
    "state": "running", "mailboxes": [{"topic": "t", "depth": 1}]}}, "router": {},
    "dead_letters": [{"actor": "a"}]}, channels={"ohlcv": {"count": 1, "last_at": NOW}},
    prices={"EURUSD": price("EURUSD", 1.1, 1.1002, 1.0)}, bars={"EURUSD": {"1m": bar(0)}},
    status={"process": "stream", "ts": NOW, "session": {"state": "open"},
            "last_command": {"cmd": "x"}}, market_status={"state": "open"},
    timeline=[{"at": NOW, "source": "s", "from": "a", "to": "b", "detail": ""}]))


@settings(max_examples=150, deadline=None)
@given(index=st.integers(0, len(SNAPSHOT_PATHS) - 1), value=JSON,
       mode=st.sampled_from(sorted(MODES)))
@example(index=SNAPSHOT_PATHS.index(("now",)), value=-62135596801, mode="0")  # year 0
@example(index=SNAPSHOT_PATHS.index(("now",)), value=1e300, mode="1")
def test_any_value_anywhere_renders_every_mode_without_a_panel_failing(
        index: int, value: Any, mode: str) -> None:
    snap = seed_snapshot(host={"reachable": True, "actors": {"a": {
        "state": "running", "mailboxes": [{"topic": "t", "depth": 1}]}}, "router": {},
        "dead_letters": [{"actor": "a"}]}, channels={"ohlcv": {"count": 1, "last_at": NOW}},
        prices={"EURUSD": price("EURUSD", 1.1, 1.1002, 1.0)}, bars={"EURUSD": {"1m": bar(0)}},
        status={"process": "stream", "ts": NOW, "session": {"state": "open"},
                "last_command": {"cmd": "x"}}, market_status={"state": "open"},
        timeline=[{"at": NOW, "source": "s", "from": "a", "to": "b", "detail": ""}])
    path = SNAPSHOT_PATHS[index]
    if not path:
        return
    node: Any = snap
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    snap["mode"] = mode
    text = render_text(snap)
    assert "could not be drawn" not in text, (path, value, text)


# -- the real viewer under a pseudo-terminal ---------------------------------------------------

def clean_env() -> dict[str, str]:
    # COLUMNS and LINES would override the pty's size (a pytest-xdist worker sets 80x24)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("FXCM_") and key not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["TERM"] = "xterm-256color"
    return env


# mode key -> what it shows of a live host on the sim broker (regular expressions)
LIVE_MODES = {
    "0": [r"mode 0 TL", r"timeline of state changes", r"actor fxcm_session\s*│\s*running",
          r"redis\s*│\s*connected"],
    "2": [r"mode 2 SES", r"market\s+open", r"sessions over the last 24 h"],
    "3": [r"mode 3 ALERT", r"alerts"],
    "4": [r"mode 4 STREAM", r"ping\s+[0-9.]+ ms", r"fxcm:price_tik\s*│\s*[1-9]",
          r"stream targets", r"XAUUSD\s*│\s*1m"],
    "5": [r"mode 5 PRICE", r"price stream", r"XAUUSD\s*│\s*[0-9.]+\s*│\s*[0-9.]+",
          r"adaptive cadence"],
    "6": [r"mode 6 SUPR", r"mailboxes", r"fxcm_session\s*│\s*running\s*│\s*thread",
          r"tick_aggregator\s*│\s*tick\.", r"router: published [1-9]"],
    "7": [r"mode 7 HIST", r"backoff", r"history quota"],
    "8": [r"mode 8 STAT", r"heartbeat state\s+\w+", r"fxcm:heartbeat"],
    "9": [r"mode 9 VCAL", r"volume is the tick count"],
    "1": [r"mode 1 SUM", r"last final bars"],
}


def shows_all(screen: Screen, patterns: list[str]) -> bool:
    """Whether everything the viewer wrote (since ``forget``) matches every pattern."""
    text = screen.read()
    return all(re.search(pattern, text) for pattern in patterns)


class Screen:
    """A viewer under a pty, and everything it wrote (escape codes removed)."""

    def __init__(self, run_dir: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "actors.cli", "viewer", "--run-dir", run_dir,
                             "--refresh", "0.3", *extra],
            cwd=str(REPO_ROOT), env=dict(clean_env(), **(env or {})), dimensions=(70, 220),
            encoding="utf-8", codec_errors="replace", timeout=30)
        self.raw = ""

    def read(self) -> str:
        try:
            while True:
                self.raw += self.child.read_nonblocking(65536, timeout=0.05)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            raise AssertionError("the viewer ended early:\n" + self.text) from None
        return self.text

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def forget(self) -> None:
        self.read()
        self.raw = ""

    def quit(self, key: str = "q") -> int:
        self.child.send(key)
        self.child.expect(pexpect.EOF, timeout=30)
        self.raw += self.child.before or ""
        self.child.close()
        assert self.child.signalstatus is None
        return int(self.child.exitstatus)

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fxcm-v-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_viewer_shows_live_values_of_a_running_host_and_quits_on_q(
        tmp_path: Path, short_dir: str) -> None:
    actors = config.settings.load_defaults()["actors"]
    with host_process(tmp_path, short_dir, actors, symbols=["EURUSD", "XAUUSD"],
                      calendar_file=str(open_calendar(tmp_path)),
                      cache={"dir": str(tmp_path / "cache")}):
        # every XAUUSD (bid, ask) the sim produced while the viewer runs (and the last one)
        client = redis.Redis.from_url(embedded_redis_url(short_dir))
        pubsub = client.pubsub()
        pubsub.subscribe("fxcm:price_tik")
        quotes: set[tuple[str, str]] = set()

        def take(payload: dict[str, Any]) -> None:
            quotes.add((format_number(payload["bid"]), format_number(payload["ask"])))

        def take_bids() -> None:
            while (message := pubsub.get_message(timeout=0.01)) is not None:
                if message["type"] == "message":
                    payload = json.loads(message["data"])
                    if payload["symbol"] == "XAUUSD":
                        take(payload)

        wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, 10, "the subscription")
        last = client.get("fxcm:price_tik:last:XAUUSD")
        if last is not None:
            take(json.loads(last))
        screen = Screen(short_dir)
        try:
            def shows_a_real_bid() -> bool:
                take_bids()
                shown = re.findall(r"XAUUSD\s*│\s*([0-9.]+)\s*│\s*([0-9.]+)\s*│",
                                   screen.read())
                return bool(quotes.intersection(shown))

            wait_for(shows_a_real_bid, 60, "a bid of the sim on the viewer", interval=0.1)
            wait_for(lambda: re.search(r"fxcm_session\s*│\s*running", screen.read()), 30,
                     "fxcm_session running on the viewer", interval=0.1)
            assert "redis: connected" in screen.text
            assert re.search(r"EURUSD\s*│\s*\d\d:\d\d [0-9.]+", screen.text), "a 1m bar"
            # every mode, on the live host: its panels with values of the running pipeline
            for key, expected in LIVE_MODES.items():
                screen.forget()
                screen.child.send(key)
                wait_for(functools.partial(shows_all, screen, expected), 30,
                         "mode {} showing {}".format(key, expected), interval=0.1)
            assert screen.quit() == 0
        finally:
            screen.kill()
            pubsub.close()
            client.close()


def test_the_viewer_keeps_running_when_the_host_goes_away(tmp_path: Path,
                                                          short_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    with host_process(tmp_path, short_dir, actors):
        screen = Screen(short_dir)
        try:
            wait_for(lambda: re.search(r"echo\s*│\s*running", screen.read()), 60,
                     "the echo actor on the viewer", interval=0.1)
            assert "redis: connected" in screen.text
        except BaseException:
            screen.kill()
            raise
    try:
        screen.forget()
        wait_for(lambda: "host: not reachable" in screen.read(), 30,
                 "host: not reachable on the viewer", interval=0.1)
        wait_for(lambda: "redis: not reachable" in screen.read(), 30,
                 "redis: not reachable on the viewer", interval=0.1)
        assert screen.quit() == 0
    finally:
        screen.kill()


def test_without_a_host_the_viewer_says_so_and_ctrl_c_exits_0(short_dir: str) -> None:
    screen = Screen(short_dir)
    try:
        wait_for(lambda: "host: not reachable" in screen.read(), 30,
                 "host: not reachable on the viewer", interval=0.1)
        assert "redis: not reachable" in screen.text and "no Redis" in screen.text
        assert screen.quit("\x03") == 0
        assert "Traceback" not in screen.raw
    finally:
        screen.kill()


def test_without_a_host_every_mode_says_so_and_q_quits(short_dir: str) -> None:
    screen = Screen(short_dir, "--mode", "TL")
    try:
        wait_for(lambda: "mode 0 TL" in screen.read() and "host: not reachable" in screen.text,
                 30, "the timeline without a host", interval=0.1)
        for key, (name, _, _) in MODES.items():
            screen.forget()
            screen.child.send(key)
            wait_for(functools.partial(shows_all, screen, [
                "mode {} {}".format(key, name), "host: not reachable", "redis: not reachable"]),
                30, "mode {} without a host".format(key), interval=0.1)
            assert "could not be drawn" not in screen.text
        screen.forget()
        screen.child.send("3")
        wait_for(lambda: re.search(r"error\s*│\s*host\s*│\s*not reachable", screen.read()), 30,
                 "the host alert", interval=0.1)
        assert screen.quit("q") == 0
        assert "Traceback" not in screen.raw
    finally:
        screen.kill()


def test_q_quits_while_redis_does_not_answer(short_dir: str) -> None:
    """A Redis that accepts connections and never answers: the viewer says it is connecting
    or not reachable, and q still quits (the I/O waits on a thread of its own)."""
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = "redis://127.0.0.1:{}/0".format(silent.getsockname()[1])
    screen = Screen(short_dir, "--redis-url", url)
    try:
        wait_for(lambda: "redis: connecting" in screen.read()
                 or "redis: not reachable" in screen.text, 30, "the Redis line", interval=0.1)
        assert screen.quit("q") == 0
    finally:
        screen.kill()
        silent.close()


def test_tap_says_what_it_waits_for(short_dir: str) -> None:
    child = pexpect.spawn(sys.executable, ["-m", "actors.cli", "tap", "--run-dir", short_dir,
                                           "--topic", "bar."],
                          cwd=str(REPO_ROOT), env=clean_env(), encoding="utf-8", timeout=30)
    try:
        child.expect("no host runs in {} yet: waiting for one".format(re.escape(short_dir)))
        child.expect("waiting for the host: none runs in")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_tap_says_when_the_host_is_up_and_traffic_is_quiet(tmp_path: Path,
                                                           short_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    with host_process(tmp_path, short_dir, actors):
        child = pexpect.spawn(sys.executable, ["-m", "actors.cli", "tap", "--run-dir",
                                               short_dir, "--topic", "nothing.here"],
                              cwd=str(REPO_ROOT), env=clean_env(), encoding="utf-8",
                              timeout=30)
        try:
            child.expect(r"waiting for traffic \(topics: nothing.here; host pid \d+; nothing "
                         r"for \d+ s\)")
            child.sendintr()
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)


def test_the_viewer_finds_the_predecessors_redis_by_host_port_and_password(
        short_dir: str) -> None:
    """FXCM_REDIS_HOST/PORT/PASSWORD, as the predecessor's viewer read them, name its Redis."""
    import socket
    import subprocess

    from actors._parent import exit_with_parent
    from actors._redis_server import find_redis_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass",
         "pw-of-ops", "--save", "", "--dir", short_dir], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=exit_with_parent)
    client = redis.Redis(port=port, password="pw-of-ops")
    try:
        wait_for(lambda: _pings(client), 30, "the redis-server")
        client.set("fxcm:price_tik:last:XAUUSD", json.dumps(price("XAUUSD", 2634.5, 2634.9, 1)))
        env = dict(FXCM_REDIS_HOST="127.0.0.1", FXCM_REDIS_PORT=str(port),
                   FXCM_REDIS_PASSWORD="pw-of-ops")
        screen = Screen(short_dir, env=env)
        try:
            wait_for(lambda: "redis: connected redis://:***@127.0.0.1:{}/0".format(port)
                     in screen.read() and "2634.5" in screen.text, 30,
                     "the viewer on the operator's Redis", interval=0.1)
            assert "pw-of-ops" not in screen.raw
            assert screen.quit() == 0
        finally:
            screen.kill()
    finally:
        client.close()
        server.terminate()
        server.wait(30)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
