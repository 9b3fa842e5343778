"""fxcm_session and its brokers: the simulator, the replay, the quota and the real SDK."""

from __future__ import annotations

import datetime
import gzip
import json
import math
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.fxcm_session import HistoryQuota, QuotaSettings, redact
from actors.fxcm_session._sim import SimMarket
from bus import Backoff, ipc_endpoint
from config.calendar import load_calendar
from protocol.bars import fold
from protocol.market import MINUTE_MS, HistoryReply, HistoryRequest, Tick
from tests.helpers import (
    REPO_ROOT,
    Probe,
    bus_status,
    control,
    host_in_thread,
    host_process,
    open_calendar,
    wait_for,
)

SESSION = [{"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"}]
def utc_ms(year: int, month: int, day: int, hour: int) -> int:
    moment = datetime.datetime(year, month, day, hour, tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


WEDNESDAY_NOON = utc_ms(2026, 11, 18, 12)  # FX market open
SATURDAY_NOON = utc_ms(2026, 11, 21, 12)  # closed


# -- the simulator, as pure code --------------------------------------------------------------

def test_sim_market_is_deterministic_for_a_seed() -> None:
    calendar = load_calendar()
    minute = WEDNESDAY_NOON // MINUTE_MS
    first = [SimMarket(7, 3.0, calendar).ticks("EURUSD", minute + i) for i in range(5)]
    second = [SimMarket(7, 3.0, calendar).ticks("EURUSD", minute + i) for i in range(5)]
    other = [SimMarket(8, 3.0, calendar).ticks("EURUSD", minute + i) for i in range(5)]
    assert first == second
    assert first != other
    assert sum(len(ticks) for ticks in first) > 0


def test_sim_prices_are_realistic_per_symbol() -> None:
    market = SimMarket(1, 2.0, load_calendar())
    minute = WEDNESDAY_NOON // MINUTE_MS
    levels = {"EURUSD": (0.8, 1.5), "USDJPY": (100.0, 200.0), "XAUUSD": (1500.0, 4500.0),
              "GBPUSD": (1.0, 1.7)}
    for symbol, (low, high) in levels.items():
        ticks = [tick for i in range(10) for tick in market.ticks(symbol, minute + i)]
        assert ticks, symbol
        for _, bid, ask in ticks:
            assert low < bid <= ask < high, (symbol, bid, ask)


def test_sim_market_has_no_ticks_while_the_calendar_says_closed() -> None:
    market = SimMarket(1, 5.0, load_calendar())
    assert all(market.ticks("EURUSD", SATURDAY_NOON // MINUTE_MS + i) == [] for i in range(30))
    assert any(market.ticks("EURUSD", WEDNESDAY_NOON // MINUTE_MS + i) for i in range(30))


@pytest.mark.parametrize("tf", ["1m", "5m", "1h"])
@pytest.mark.parametrize("basis", ["mid", "bid", "ask"])
def test_sim_history_agrees_with_what_its_ticks_produce(tf: str, basis: str) -> None:
    calendar = load_calendar()
    market = SimMarket(3, 1.0, calendar)
    start = WEDNESDAY_NOON - 2 * 3600 * 1000
    end = WEDNESDAY_NOON
    prices = {"mid": lambda b, a: (b + a) / 2.0, "bid": lambda b, a: b, "ask": lambda b, a: a}
    points = [(ts, prices[basis](bid, ask))
              for minute in range(start // MINUTE_MS, end // MINUTE_MS)
              for ts, bid, ask in market.ticks("XAUUSD", minute)]
    expected = [[start_ms, bar.open, bar.high, bar.low, bar.close, float(bar.count)]
                for start_ms, bar in fold(points, tf, calendar.trading_day_start)]
    history = market.bars("XAUUSD", tf, start, end - 1, end + 10 * MINUTE_MS, basis,
                          calendar.trading_day_start)
    assert len(history) == len(expected) > 0
    for got, want in zip(history, expected, strict=True):
        assert got[0] == want[0]
        assert got[5] == want[5]
        for a, b in zip(got[1:5], want[1:5], strict=True):
            assert math.isclose(a, b, rel_tol=1e-9), (got, want)


# -- quota and backoff, as pure code -----------------------------------------------------------

def quota(**overrides: Any) -> HistoryQuota:
    data: dict[str, Any] = {
        "max_calls_per_min": 10, "max_calls_per_hour": 100,
        "min_interval_seconds": {"1m": 2.0, "5m": 6.0},
        "priority_targets": ["XAUUSD:1m"],
        "priority_reserve_per_min": 3, "priority_reserve_per_hour": 20,
        "load_thresholds": {"min_interval": 0.5, "warn": 0.8, "reserve": 0.8,
                            "critical": 0.95},
    }
    data.update(overrides)
    return HistoryQuota(QuotaSettings.from_dict(data))


def test_quota_burst_is_cut_at_the_share_left_by_the_priority_reserve() -> None:
    limiter = quota()
    allowed = [limiter.acquire("EURUSD:{}".format(tf), 0.0).allowed
               for tf in ["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1m", "5m", "15m"]]
    assert allowed[:5] == [True] * 5  # load below min_interval: no per-tf interval yet
    assert allowed.count(True) == 7  # 10 per minute minus 3 reserved for priority
    assert limiter.denied["reserve"] >= 1


def test_quota_min_interval_applies_under_load_and_says_when_to_retry() -> None:
    limiter = quota()
    for index in range(5):
        assert limiter.acquire("GBPUSD:{}".format(["15m", "30m", "1h", "4h", "1d"][index]),
                               float(index)).allowed
    assert limiter.acquire("EURUSD:1m", 10.0).allowed
    refused = limiter.acquire("EURUSD:1m", 11.0)
    assert not refused.allowed and refused.reason == "min_interval"
    assert refused.retry_after == pytest.approx(1.0)
    assert limiter.acquire("EURUSD:1m", 12.0).allowed


def test_quota_priority_targets_pass_when_others_are_refused() -> None:
    limiter = quota()
    for index in range(7):
        limiter.acquire("EURUSD:{}".format(index), 0.0)
    assert not limiter.acquire("EURUSD:x", 0.0).allowed
    assert limiter.acquire("XAUUSD:1m", 0.0).allowed
    assert limiter.acquire("GBPUSD:5m", 0.0, priority=True).allowed


def test_quota_hard_cap_refuses_everyone_until_the_window_slides() -> None:
    limiter = quota()
    for index in range(7):
        assert limiter.acquire("EURUSD:{}".format(index), index * 0.001).allowed
    for index in range(7, 10):
        assert limiter.acquire("GBPUSD:{}".format(index), index * 0.001, priority=True).allowed
    refused = limiter.acquire("XAUUSD:1m", 1.0)
    assert not refused.allowed and refused.reason == "cap"
    assert 58.0 < refused.retry_after <= 60.0
    assert limiter.acquire("XAUUSD:1m", 61.0).allowed
    assert sum(limiter.denied.values()) == 1


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    backoff = Backoff(2.0, 60.0, 0.2, random.Random(1))
    delays = [backoff.compute(n) for n in range(1, 10)]
    assert 1.6 <= delays[0] <= 2.4
    assert delays[:5] == sorted(delays[:5])
    assert max(delays) <= 72.0 and delays[-1] >= 48.0


def test_redact_hides_every_secret() -> None:
    text = "ORA-499 ... LN=jdoe&AT=PLAIN errorCode=7 jdoe"
    assert redact(text, ["jdoe", ""]) == "ORA-499 ... LN=***&AT=PLAIN errorCode=7 ***"


# -- through the bus --------------------------------------------------------------------------

def bus(run_dir: str) -> str:
    return ipc_endpoint(run_dir, "bus.sock")


def session_status(probe: Probe) -> dict[str, Any]:
    """The newest status fxcm_session published on ``actor.status.fxcm_session`` ({} if none
    came yet)."""
    bodies = probe.bodies("actor.status")
    status: dict[str, Any] = bodies[-1] if bodies else {}
    return status


def test_sim_disconnect_leads_to_recovering_then_stream_with_a_new_subscription(
        tmp_path: Path, run_dir: str) -> None:
    sections = {"calendar_file": str(open_calendar(tmp_path)),
                "broker": {"sim": {"tick_rate_per_second": 20.0,
                                   "faults": {"disconnect_after_seconds": 1.0,
                                              "disconnects": 1}}},
                "bus": {"status_interval_seconds": 0.2}}
    with host_in_thread(tmp_path, run_dir, SESSION, **sections):
        probe = Probe("probe", bus(run_dir), ("session.state", "actor.status."))

        def states(received: list[tuple[str, Any]]) -> list[str]:
            return [body.state for kind, body in received if kind == "session.state"]

        def recovered(received: list[tuple[str, Any]]) -> bool:
            seen = states(received)
            return "DISCONNECTED" in seen and "STREAM" in seen[seen.index("DISCONNECTED"):]

        probe.collect(recovered, 60, "DISCONNECTED then STREAM")
        seen = states(probe.received)
        after = seen[seen.index("DISCONNECTED"):]
        assert "RECOVERING" in after and after.index("RECOVERING") < after.index("STREAM"), seen
        probe.collect(lambda received: any(
            kind == "actor.status" and body["broker"]["subscriptions"] == 2
            and body["session_state"] == "STREAM" for kind, body in received[-5:]), 30,
            "a status showing the new subscription streaming")
        status = session_status(probe)
        assert status["broker"]["logins"] == 2
        assert status["reconnects"] == 1
        assert status["session_state"] == "STREAM"
        probe.close()


def write_ticks(path: Path, rows: list[tuple[Any, str, Any, Any]]) -> Path:
    lines = ["ts_ms,symbol,bid,ask"] + ["{},{},{},{}".format(*row) for row in rows]
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def replay_sections(file: Path, speed: float, symbols: list[str]) -> dict[str, Any]:
    return {"symbols": symbols, "broker": {"kind": "replay",
                                           "replay": {"file": str(file), "speed": speed}},
            "bus": {"status_interval_seconds": 0.2}}


def collector(*topics: str) -> dict[str, Any]:
    return {"name": "collector", "class": "tests.sample_actors:Collector",
            "settings": {"topics": list(topics)}}


def collected(probe: Probe, msg_type: str, count: int, timeout: float = 60.0,
              with_times: bool = False) -> list[Any]:
    """What the collector kept of ``msg_type``, once it holds at least ``count`` of them
    (with ``with_times``: ``(body, arrival time)`` pairs)."""
    from protocol.messages import from_wire

    deadline = time.monotonic() + timeout
    while True:
        _, kept = probe.client.request("collector", "collected", 0, timeout=30)
        bodies = [(from_wire(kind, body), arrived) for kind, body, arrived in kept
                  if kind == msg_type]
        if len(bodies) >= count:
            return bodies if with_times else [body for body, _ in bodies]
        if time.monotonic() > deadline:
            raise AssertionError("the collector has {} {} messages, not {}".format(
                len(bodies), msg_type, count))
        probe.pump(0.1)


def test_replay_at_speed_zero_delivers_every_tick_of_a_file_in_order(
        tmp_path: Path, run_dir: str) -> None:
    rng = random.Random(5)
    start = WEDNESDAY_NOON
    rows: list[tuple[Any, str, Any, Any]] = []
    for index in range(5000):
        symbol = rng.choice(["EUR/USD", "XAUUSD", "GBP/USD"])
        bid = round(1.0 + rng.random(), 5)
        rows.append((start + index * 7, symbol, bid, round(bid + 0.0001, 5)))
    file = write_ticks(tmp_path / "ticks.csv.gz", rows)
    sections = replay_sections(file, 0.0, ["EURUSD", "XAUUSD", "GBPUSD"])
    with host_in_thread(tmp_path, run_dir, [collector("tick.")] + SESSION, **sections):
        probe = Probe("probe", bus(run_dir))
        ticks = collected(probe, "tick", len(rows))
        assert ticks == [Tick(symbol.replace("/", ""), ts, bid, ask)
                         for ts, symbol, bid, ask in rows]
        probe.close()


def test_replay_at_speed_ten_plays_ten_seconds_in_about_one(
        tmp_path: Path, run_dir: str) -> None:
    rows = [(WEDNESDAY_NOON + index * 100, "EURUSD", 1.1, 1.1002) for index in range(101)]
    file = write_ticks(tmp_path / "ticks.csv", rows)
    with host_in_thread(tmp_path, run_dir, [collector("tick.")] + SESSION,
                        **replay_sections(file, 10.0, ["EURUSD"])):
        probe = Probe("probe", bus(run_dir))
        arrivals = [arrived for _, arrived in collected(probe, "tick", len(rows),
                                                         with_times=True)]
        elapsed = arrivals[-1] - arrivals[0]
        assert 0.5 < elapsed < 4.0, elapsed  # 10 s of ticks at 10x: about 1 s
        probe.close()


def test_replay_clock_never_passes_a_row_its_stalled_stream_thread_has_not_handed_over(
        tmp_path: Path) -> None:
    from actors.fxcm_session._replay import ReplayBroker

    # 1 s of event time per row, at 1000x: the paced clock passes a row every millisecond.
    rows = [(WEDNESDAY_NOON + index * 1000, "EURUSD", 1.1, 1.1002) for index in range(100)]
    broker = ReplayBroker({"file": str(write_ticks(tmp_path / "ticks.csv", rows)),
                           "speed": 1000.0}, None)
    handed: list[int] = []
    release = threading.Event()

    def on_tick(symbol: Any, ts_ms: Any, bid: Any, ask: Any) -> None:
        handed.append(ts_ms)
        if len(handed) == 3:
            release.wait(30)  # a stream thread starved of CPU, mid-hand-over

    broker.on_tick = on_tick
    broker.login()
    broker.subscribe(["EURUSD"])
    try:
        wait_for(lambda: broker._paced_ms() > rows[20][0], 10, "the paced clock far ahead")
        # The third row is being handed over: the clock stays just before it.
        assert broker.clock_ms() == rows[2][0] - 1
        release.set()
        wait_for(broker.finished, 10, "the replay to finish")
        assert handed == [row[0] for row in rows]
        assert broker.clock_ms() >= rows[-1][0]  # past the last row it runs on, paced
    finally:
        release.set()
        broker.close()


# -- the replay's timeline across a restart of fxcm_session -------------------------------------

def timeline_broker(file: Path, speed: float, state: Path, run: str,
                    on_tick: Any = None) -> Any:
    """A replay broker keeping its timeline in ``state`` for router id ``run``, logged in."""
    from actors.fxcm_session._replay import ReplayBroker

    broker = ReplayBroker({"file": str(file), "speed": speed}, None)
    broker.keep_timeline(str(state), run)
    broker.on_tick = on_tick
    broker.login()
    return broker


def test_replay_restarted_at_speed_zero_resumes_after_its_reserved_rows_never_before(
        tmp_path: Path) -> None:
    from actors.fxcm_session._replay import RESERVE_ROWS

    rows = [(WEDNESDAY_NOON + index, "EURUSD", 1.1, 1.1002) for index in range(3 * RESERVE_ROWS)]
    file = write_ticks(tmp_path / "ticks.csv", rows)
    state = tmp_path / "fxcm_session.timeline.json"
    crash_at = RESERVE_ROWS + 100  # in the second reservation
    first: list[int] = []
    crashing = threading.Event()
    release = threading.Event()

    def hand_over(symbol: Any, ts_ms: Any, bid: Any, ask: Any) -> None:
        first.append(ts_ms)
        if len(first) == crash_at:
            crashing.set()
            release.wait(30)  # the session dies while this row is being handed over

    broker = timeline_broker(file, 0.0, state, "run-1", hand_over)
    broker.subscribe(["EURUSD"])
    closer = threading.Thread(target=broker.close)
    try:
        wait_for(crashing.is_set, 10, "the rows before the crash handed over")
        saved = json.loads(state.read_text())
        assert saved["run"] == "run-1"
        assert saved["reserved"] == 2 * RESERVE_ROWS  # persisted before its rows went out
        # The stream is told to stop before the row in hand returns: nothing more goes out.
        closer.start()
        wait_for(lambda: broker._stop.is_set(), 10, "the stream told to stop")
    finally:
        release.set()
        if closer.ident is not None:
            closer.join(10)
        broker.close()  # idempotent
    assert first == [row[0] for row in rows[:crash_at]]

    second: list[int] = []
    again = timeline_broker(file, 0.0, state, "run-1",
                            lambda symbol, ts_ms, bid, ask: second.append(ts_ms))
    assert again.resumed_at == 2 * RESERVE_ROWS
    assert again.clock_ms() == rows[2 * RESERVE_ROWS - 1][0]  # the time of the last row before
    again.subscribe(["EURUSD"])
    try:
        wait_for(again.finished, 10, "the resumed replay to finish")
    finally:
        again.close()
    # The reserved rows the crash did not reach are lost, like a real outage; none comes twice.
    assert second == [row[0] for row in rows[2 * RESERVE_ROWS:]]
    assert json.loads(state.read_text())["reserved"] == len(rows)


def test_replay_restarted_at_speed_ten_resumes_at_the_paced_time_now(tmp_path: Path) -> None:
    # A row every 100 ms of event time at 10x: one every 10 ms of wall time.
    rows = [(WEDNESDAY_NOON + index * 100, "EURUSD", 1.1, 1.1002) for index in range(3000)]
    file = write_ticks(tmp_path / "ticks.csv", rows)
    state = tmp_path / "fxcm_session.timeline.json"
    first: list[int] = []
    broker = timeline_broker(file, 10.0, state, "run-1",
                             lambda symbol, ts_ms, bid, ask: first.append(ts_ms))
    broker.subscribe(["EURUSD"])
    try:
        wait_for(lambda: len(first) >= 20, 10, "some rows streamed")
    finally:
        broker.close()
    last_clock = broker.clock_ms()
    # The session stays down 20 s (200 s of replay time): moved back in the file, not slept.
    saved = json.loads(state.read_text())
    saved["anchor_monotonic"] -= 20.0
    saved["anchor_epoch"] -= 20.0
    state.write_text(json.dumps(saved))

    def paced_now() -> int:
        return int(saved["anchor_clock"] + (time.monotonic() - saved["anchor_monotonic"])
                   * 1000.0 * 10.0)

    def first_after(clock: int) -> int:
        return next(index for index, row in enumerate(rows) if row[0] > clock)

    earliest = first_after(paced_now())
    second: list[int] = []
    again = timeline_broker(file, 10.0, state, "run-1",
                            lambda symbol, ts_ms, bid, ask: second.append(ts_ms))
    latest = first_after(paced_now())
    resumed = again.resumed_at
    assert resumed is not None and earliest <= resumed <= latest
    assert resumed >= len(first) + 1990  # 199 s of rows skipped at least
    assert last_clock <= again.clock_ms() < rows[resumed][0]
    again.subscribe(["EURUSD"])
    try:
        wait_for(lambda: len(second) >= 10, 10, "the resumed stream")
    finally:
        again.close()
    assert second[:10] == [row[0] for row in rows[resumed:resumed + 10]]
    assert not set(first) & set(second)


def test_replay_timeline_of_another_host_run_is_discarded_and_the_file_replays_from_the_start(
        tmp_path: Path) -> None:
    rows = [(WEDNESDAY_NOON + index, "EURUSD", 1.1, 1.1002) for index in range(100)]
    file = write_ticks(tmp_path / "ticks.csv", rows)
    state = tmp_path / "fxcm_session.timeline.json"
    broker = timeline_broker(file, 0.0, state, "run-1")
    broker.subscribe(["EURUSD"])
    try:
        wait_for(broker.finished, 10, "the first run's replay to finish")
    finally:
        broker.close()
    assert json.loads(state.read_text())["run"] == "run-1"

    handed: list[int] = []
    fresh = timeline_broker(file, 0.0, state, "run-2",
                            lambda symbol, ts_ms, bid, ask: handed.append(ts_ms))
    assert fresh.resumed_at is None and not state.exists()  # discarded at once
    fresh.subscribe(["EURUSD"])
    try:
        wait_for(fresh.finished, 10, "the new run's replay to finish")
    finally:
        fresh.close()
    assert handed == [row[0] for row in rows]
    assert json.loads(state.read_text())["run"] == "run-2"
    # Another file under the same run is not resumed either.
    other = write_ticks(tmp_path / "other.csv", rows[:50])
    assert timeline_broker(other, 0.0, state, "run-2").resumed_at is None


@pytest.mark.parametrize("placement", ["thread", "process"])
def test_session_crashed_mid_replay_resumes_its_timeline_after_a_disconnected_state(
        tmp_path: Path, run_dir: str, placement: str) -> None:
    """The crash op on fxcm_session while it replays at 20x: the restarted instance (in the
    host or a child process) publishes DISCONNECTED before its first tick and resumes at the
    replay clock; no tick comes twice, the clock never goes back, the gap is one run of rows.
    (An idle session takes the crash after 2 s: about 40 s of the file's 300 are lost; the
    file lasts 15 s of wall time so that a slow restart in a busy CI still finds rows left.)"""
    from protocol.market import Clock, SessionState

    rows = [(WEDNESDAY_NOON + index * 100, "EURUSD", 1.1, 1.1002) for index in range(3000)]
    file = write_ticks(tmp_path / "ticks.csv", rows)
    session = [dict(SESSION[0], placement=placement)]
    with host_in_thread(tmp_path, run_dir, [collector("tick.")] + session,
                        **replay_sections(file, 20.0, ["EURUSD"])):
        probe = Probe("probe", bus(run_dir), ("actor.status.fxcm_session",))
        collected(probe, "tick", 50)
        answer = control(run_dir, {"op": "crash", "name": "fxcm_session"})
        assert answer.get("ok"), answer
        wait_for(lambda: bus_status(run_dir)["actors"]["fxcm_session"].get("restarts", 0) >= 1,
                 30, "fxcm_session restarted")
        wait_for(lambda: collected(probe, "tick", 1)[-1].ts_ms == rows[-1][0], 60,
                 "the resumed replay to reach the file's last row")
        probe.collect(lambda _: session_status(probe).get("restarted") is True, 30,
                      "the restarted instance's status")
        status = session_status(probe)
        _, kept = probe.client.request("collector", "collected", 0, timeout=30)
        probe.close()
    from protocol.messages import from_wire

    stream = [from_wire(kind, body) for kind, body, _ in kept]
    ticks = [message.ts_ms for message in stream if isinstance(message, Tick)]
    assert ticks == sorted(set(ticks))  # in order, none twice
    index = {row[0]: position for position, row in enumerate(rows)}
    positions = [index[ts] for ts in ticks]
    gaps = [(a, b) for a, b in zip(positions, positions[1:], strict=False) if b != a + 1]
    assert positions[0] == 0 and len(gaps) == 1, gaps  # one outage, then the file to its end
    before, resumed = gaps[0]
    assert status["broker"]["resumed_at"] == resumed
    # Between the old instance's last tick and the new one's first: DISCONNECTED.
    start = stream.index(next(m for m in stream if isinstance(m, Tick)
                              and m.ts_ms == rows[before][0]))
    end = stream.index(next(m for m in stream if isinstance(m, Tick)
                            and m.ts_ms == rows[resumed][0]))
    states = [m.state for m in stream[start:end] if isinstance(m, SessionState)]
    assert "DISCONNECTED" in states, states
    clocks = [m.now_ms for m in stream if isinstance(m, Clock)]
    assert clocks == sorted(clocks)  # the replay clock survived the restart


def test_bad_replay_rows_are_rejected_by_line_and_unknown_symbols_by_the_session(
        tmp_path: Path, run_dir: str) -> None:
    t = WEDNESDAY_NOON
    rows: list[tuple[Any, str, Any, Any]] = [
        (t, "EURUSD", 1.1, 1.1002),  # line 2
        (t + 1, "EURUSD", 1.2, 1.1),  # ask below bid
        ("", "EURUSD", 1.1, 1.1002),  # missing time
        (t + 2, "EURUSD", "nan", 1.1002),  # NaN
        (t + 3, "USDXYZ", 1.1, 1.1002),  # a valid row, not in the configured universe
        (t + 4, "EURUSD", "abc", 1.1002),  # not a number
        (t + 5, "EURUSD", -1.0, 1.1002),  # not positive
        (t + 6, "EURUSD", 1.1001, 1.1003),
    ]
    file = write_ticks(tmp_path / "ticks.csv", rows)
    with host_in_thread(tmp_path, run_dir, [collector("tick.")] + SESSION,
                        **replay_sections(file, 0.0, ["EURUSD"])):
        probe = Probe("probe", bus(run_dir), ("actor.status.fxcm_session",))
        probe.collect(lambda _: session_status(probe).get("rejected_ticks", {}).get(
                          "unknown_symbol"), 30, "the unknown symbol in status")
        assert [tick.ts_ms for tick in collected(probe, "tick", 2)] == [t, t + 6]
        status = session_status(probe)
        assert status["rejected_ticks"] == {"unknown_symbol": 1}
        assert status["broker"]["input"]["rejected"] == {
            "counts": {"ask_below_bid": 1, "bad_time": 1, "bad_price": 3},
            "lines": {"ask_below_bid": [3], "bad_time": [4], "bad_price": [5, 7, 8]}}
        probe.close()


def test_history_burst_is_throttled_and_priority_requests_still_get_through(
        tmp_path: Path, run_dir: str) -> None:
    sections = {"calendar_file": str(open_calendar(tmp_path)),
                "fxcm_session": {"quota": {
                    "max_calls_per_min": 8, "priority_reserve_per_min": 3,
                    "priority_targets": ["XAUUSD:1m"],
                    "load_thresholds": {"min_interval": 0.5, "warn": 0.8, "reserve": 0.8,
                                        "critical": 0.99}}},
                "bus": {"status_interval_seconds": 0.2}}
    with host_in_thread(tmp_path, run_dir, SESSION, **sections):
        probe = Probe("probe", bus(run_dir), ("actor.status.fxcm_session", "session.state"))
        probe.collect(lambda received: any(kind == "session.state" and body.state == "STREAM"
                                           for kind, body in received), 30, "the stream")
        replies: list[HistoryReply] = []
        before = int(time.time() * 1000)
        for index in range(12):
            tf = ["1m", "5m", "15m", "30m", "1h", "4h"][index % 6]
            _, reply = probe.client.request(
                "fxcm_session", "history.get",
                HistoryRequest("EURUSD", tf, None, None, 5, False), timeout=30)
            replies.append(reply)
        _, priority = probe.client.request(
            "fxcm_session", "history.get", HistoryRequest("XAUUSD", "1m", None, None, 3, False),
            timeout=30)
        after = int(time.time() * 1000)
        statuses = [reply.status for reply in replies]
        assert statuses.count("ok") == 5  # 8 per minute, 3 kept for the priority target
        assert statuses[5:] == ["throttled"] * 7
        assert all(reply.retry_after > 0 for reply in replies[5:])
        assert priority.status == "ok" and len(priority.bars) >= 1
        for row in priority.bars:  # [open_time, o, h, l, c, volume, complete]
            if row[0] + MINUTE_MS - 1 < before:
                assert row[6] is True
            if row[0] + MINUTE_MS - 1 >= after:
                assert row[6] is False
        probe.collect(lambda _: session_status(probe).get("quota", {}).get("denied", {}).get(
                          "reserve") == 7,
                      30, "the denials in status")
        probe.close()


def scrape(run_dir: str) -> dict[str, float]:
    """``/metrics`` of the host in ``run_dir`` as {"name{labels}": value}."""
    import urllib.request

    with open(Path(run_dir) / "host.json") as handle:
        port = json.load(handle)["http_port"]
    with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(port), timeout=10) as page:
        text = page.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_quota_use_and_throttled_history_are_on_metrics(tmp_path: Path, run_dir: str) -> None:
    sections: dict[str, Any] = {"calendar_file": str(open_calendar(tmp_path)),
                "fxcm_session": {"quota": {
                    "max_calls_per_min": 6, "max_calls_per_hour": 100,
                    "priority_reserve_per_min": 2, "priority_reserve_per_hour": 10,
                    "priority_targets": ["XAUUSD:1m"],
                    "load_thresholds": {"min_interval": 0.9, "warn": 0.9, "reserve": 0.9,
                                        "critical": 0.99}}},
                "bus": {"status_interval_seconds": 0.2}}
    with host_process(tmp_path, run_dir, SESSION, **sections):
        probe = Probe("probe", bus(run_dir), ("actor.status.fxcm_session",))
        probe.collect(lambda _: session_status(probe).get("session_state") == "STREAM", 60,
                      "the stream")
        replies = [probe.client.request("fxcm_session", "history.get", HistoryRequest(
            "EURUSD", tf, None, None, 3, False), timeout=30)[1]
            for tf in ["1m", "5m", "15m", "30m", "1h", "4h"]]
        assert [reply.status for reply in replies] == ["ok"] * 4 + ["throttled"] * 2
        for tf in ["5m", "15m", "30m"]:  # priority, into the reserve
            _, reply = probe.client.request("fxcm_session", "history.get", HistoryRequest(
                "EURUSD", tf, None, None, 3, True), timeout=30)
            assert reply.status == ("ok" if tf != "30m" else "throttled")
        probe.close()
        wanted = {
            'fxcm_history_quota_calls{window="minute"}': 6.0,
            'fxcm_history_quota_calls{window="hour"}': 6.0,
            'fxcm_history_quota_limit_calls{window="minute"}': 6.0,
            'fxcm_history_quota_limit_calls{window="hour"}': 100.0,
            'fxcm_history_quota_reserve_calls{window="minute"}': 2.0,
            'fxcm_history_quota_reserve_used_calls{window="minute"}': 2.0,
            'fxcm_history_quota_reserve_used_calls{window="hour"}': 0.0,
            "fxcm_history_quota_load_ratio": 1.0,
            'fxcm_history_quota_denied_total{reason="reserve"}': 2.0,
            'fxcm_history_quota_denied_total{reason="cap"}': 1.0,
            "fxcm_history_throttled_total": 3.0,
            "fxcm_login_failures_total": 0.0,
            'fxcm_connector_errors_total{type="fxcm"}': 0.0,
            'fxcm_connector_errors_total{type="pricehistory_not_ready"}': 0.0,
            "fxcm_pricehistory_not_ready_total": 0.0,
            'fxcm_instrument_subscribed{symbol="EURUSD"}': 1.0,
        }

        def moved() -> bool:
            got = scrape(run_dir)
            return all(got.get(name) == value for name, value in wanted.items())

        wait_for(moved, 30, "the quota figures on /metrics")
        got = scrape(run_dir)
        assert "fxcm_clock_skew_seconds" not in got  # the sim has no server clock to differ


# -- the real SDK, on Python 3.7, against loopback only -----------------------------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SDK_USER = "sdk-test-user-4711"


def sdk_env(port: int) -> dict[str, str]:
    return {"FXCM_USERNAME": SDK_USER, "FXCM_PASSWORD": "not-a-password",
            "FXCM_CONNECTION": "Demo", "FXCM_HOST_URL": "http://127.0.0.1:{}/Hosts.jsp".format(port)}


def sdk_sections(python: str, **session: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "broker": {"kind": "forexconnect", "python": python},
        "fxcm_session": {"login_backoff": {"base_seconds": 0.3, "max_seconds": 5.0,
                                           "multiplier": 2.0, "jitter": 0.1}},
        "bus": {"status_interval_seconds": 0.3}}
    settings["fxcm_session"].update(session)
    return settings


def test_real_sdk_refused_port_reports_disconnected_redacted_and_backs_off(
        tmp_path: Path, run_dir: str, sdk_python: str) -> None:
    actors = [dict(SESSION[0], stop_timeout_seconds=10.0)]
    with host_process(tmp_path, run_dir, actors, env=sdk_env(closed_port()),
                      **sdk_sections(sdk_python)) as host:
        probe = Probe("probe", bus(run_dir), ("actor.status.fxcm_session", "session.state"))
        probe.collect(lambda _: session_status(probe).get("backoff", {}).get(
                          "login_failures", 0) >= 4, 90,
                      "four failed logins")
        status = session_status(probe)
        assert status["session_state"] == "DISCONNECTED"
        assert "login failed" in status["session_reason"]
        assert status["broker"]["kind"] == "forexconnect"
        probe.close()
        output = host.output()
        delays = [float(d) for d in re.findall(r"login failed .*; retry \d+ in ([\d.]+) s", output)]
        assert len(delays) >= 4 and delays[:4] == sorted(delays[:4]) and delays[3] > delays[0]
        assert "ORA-499" in output or "Unable" in output  # the SDK's own error text...
        assert SDK_USER not in output  # ...without the user name
        assert SDK_USER not in str(status)
        assert bus_status(run_dir)["actors"]["fxcm_session"]["restarts"] == 0


class SilentServer:
    """A loopback TCP server that accepts connections and never answers; it knows how many of
    them the client still holds open."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            connection.setblocking(False)
            with self._lock:
                self.held.append(connection)
            self.accepted.set()

    def open_connections(self) -> int:
        """Connections the client has not closed (a closed one reads as end of stream)."""
        count = 0
        with self._lock:
            for connection in self.held:
                closed = False
                try:
                    while True:  # read what the client sent (its request) up to the end
                        if connection.recv(65536) == b"":
                            closed = True
                            break
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                count += 0 if closed else 1
        return count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.held:
            connection.close()
        self.server.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_real_sdk_hanging_server_keeps_the_host_responsive_and_sigterm_in_time(
        tmp_path: Path, run_dir: str, sdk_python: str, silent_server: SilentServer) -> None:
    stop_timeout = 5.0
    actors = [dict(SESSION[0], stop_timeout_seconds=stop_timeout)]
    with host_process(tmp_path, run_dir, actors, env=sdk_env(silent_server.port),
                      **sdk_sections(sdk_python)) as host:
        assert silent_server.accepted.wait(60), "the SDK never connected to the silent server"
        started = time.monotonic()
        answer = subprocess.run(
            [sys.executable, "-m", "actors.cli", "status", "--run-dir", run_dir, "--json"],
            cwd=str(REPO_ROOT), capture_output=True, timeout=30, check=True)
        assert time.monotonic() - started < 10
        assert b'"fxcm_session"' in answer.stdout
        signalled = time.monotonic()
        host.signal()
        assert host.wait(stop_timeout + 20) == 0
        elapsed = time.monotonic() - signalled
        # The login waiting inside the SDK is not waited for: the child ends, which closes
        # its connection, well within its stop timeout (no kill).
        assert elapsed < stop_timeout + 2, elapsed
        assert "did not stop within" not in host.output()
        wait_for(lambda: silent_server.open_connections() == 0, 10, "the connection closed")


@pytest.mark.timeout(240)
def test_real_sdk_timed_out_login_waits_on_its_session_and_never_opens_a_second(
        tmp_path: Path, run_dir: str, sdk_python: str, silent_server: SilentServer) -> None:
    """Against a server that never answers, the SDK's login times out after 30 s with its
    session still CONNECTING; the retries wait on that session instead of opening more."""
    actors = [dict(SESSION[0], stop_timeout_seconds=10.0)]
    with host_process(tmp_path, run_dir, actors, env=sdk_env(silent_server.port),
                      **sdk_sections(sdk_python, login_wait_seconds=3.0)):
        probe = Probe("probe", bus(run_dir), ("actor.status.fxcm_session",))
        probe.collect(lambda _: session_status(probe).get("broker", {}).get(
            "waits_on_connecting_session", 0) >= 3, 150, "three retries waiting on the session")
        broker = session_status(probe)["broker"]
        assert broker["sessions_created"] == 1
        assert broker["session_status"] == "CONNECTING"
        assert "still CONNECTING" in session_status(probe)["backoff"]["last_login_error"]
        assert silent_server.open_connections() == 1
        assert len(silent_server.held) == 1  # one connection ever, not one per attempt
        assert bus_status(run_dir)["actors"]["fxcm_session"]["restarts"] == 0
        probe.close()
