"""``fxcm viewer``: the pure rendering from snapshot dicts, then the real thing under a
pseudo-terminal (pexpect) against a real host on the sim broker with its embedded Redis.
"""

from __future__ import annotations

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

import config
from actors.tools.viewer import Board, format_number, render_text
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


# -- the real viewer under a pseudo-terminal ---------------------------------------------------

def clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FXCM_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["TERM"] = "xterm-256color"
    return env


class Screen:
    """A viewer under a pty, and everything it wrote (escape codes removed)."""

    def __init__(self, run_dir: str) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "actors.cli", "viewer", "--run-dir", run_dir,
                             "--refresh", "0.3"],
            cwd=str(REPO_ROOT), env=clean_env(), dimensions=(70, 220), encoding="utf-8",
            codec_errors="replace", timeout=30)
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
