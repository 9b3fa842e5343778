"""heartbeat: the diagnostic state machine, market status, session statistics and the public
status as pure logic with the clock injected; then the actor in a real host, its payloads
checked against the shipped JSON Schemas."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.heartbeat import (
    DISCONNECTED,
    IDLE,
    RECOVERING,
    STREAM,
    BarTracker,
    DiagInputs,
    DiagnosticMachine,
    Heartbeat,
    MarketView,
    iso_utc,
    note,
    ohlcv_state,
    price_state,
    process_state,
    public_command,
    runtime_view,
)
from bus import ipc_endpoint
from config.calendar import load_calendar
from config.settings import load_defaults
from protocol import contracts
from protocol.errors import ConfigError
from protocol.market import MINUTE_MS, Bar, SessionState, Tick, tick_topic
from tests.helpers import REPO_ROOT, Probe, host_in_thread, open_calendar, wait_for

SCHEMAS = REPO_ROOT / "protocol" / "schemas"
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"]


def utc_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    moment = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


WEDNESDAY_NOON = utc_ms(2026, 11, 18, 12)  # FX open, London session
SATURDAY_NOON = utc_ms(2026, 11, 21, 12)  # closed for the weekend
CALENDAR = load_calendar()


def test_the_three_health_schemas_ship() -> None:
    for channel in ("heartbeat", "market_status", "status"):
        assert (SCHEMAS / "{}.schema.json".format(channel)).is_file()
        assert contracts.validator(channel) is not None


def public_example() -> dict[str, Any]:
    """Seed 001 section 1.2's example, verbatim."""
    return {"ts": 1764867000.0, "process": "stream", "market": "open", "price": "ok",
            "ohlcv": "ok",
            "session": {"name": "Tokyo", "tag": "TOKYO", "state": "open",
                        "current_open_utc": "2025-12-05T00:00:00Z",
                        "current_close_utc": "2025-12-05T09:00:00Z",
                        "next_open_utc": "2025-12-05T09:00:00Z",
                        "seconds_to_close": 5400, "seconds_to_next_open": 5400},
            "note": "ok"}


def test_status_schema_takes_the_seeds_example_and_refuses_words_it_does_not_know() -> None:
    assert contracts.validate("status", public_example())
    bad_word = dict(public_example(), price="fine")
    with pytest.raises(contracts.ContractError, match="price"):
        contracts.validate("status", bad_word)
    detail_while_open = public_example()
    detail_while_open["session"] = dict(detail_while_open["session"], state_detail="weekend")
    with pytest.raises(contracts.ContractError):
        contracts.validate("status", detail_while_open)
    closed_without_detail = public_example()
    closed_without_detail["session"] = dict(closed_without_detail["session"], state="closed")
    with pytest.raises(contracts.ContractError):
        contracts.validate("status", closed_without_detail)


def shipped_heartbeat_settings(**changes: Any) -> dict[str, Any]:
    raw = load_defaults()
    return dict(raw["heartbeat"], symbols=raw["symbols"], **changes)


def test_shipped_heartbeat_settings_pass_and_bad_ones_are_refused_naming_the_key() -> None:
    Heartbeat.check_settings(shipped_heartbeat_settings())
    with pytest.raises(ConfigError, match="heartbeat.lag_warn_seconds"):
        Heartbeat.check_settings(shipped_heartbeat_settings(lag_warn_seconds=200.0))
    with pytest.raises(ConfigError, match="heartbeat.lag_timeframe"):
        Heartbeat.check_settings(shipped_heartbeat_settings(lag_timeframe="2m"))
    with pytest.raises(ConfigError, match="heartbeat.interval_seconds"):
        Heartbeat.check_settings(shipped_heartbeat_settings(interval_seconds=0))


# -- the diagnostic state machine ---------------------------------------------------------------

def machine() -> DiagnosticMachine:
    return DiagnosticMachine(stale_tick_seconds=60.0, lag_error_seconds=120.0)


FLOWING = DiagInputs(market_open=True, session_state="STREAM", session_actor="running",
                     tick_silence_seconds=0.5, bars_lag_seconds=2.0)

# One set of inputs that calls for each state.
CALLS_FOR = {
    STREAM: FLOWING,
    IDLE: DiagInputs(market_open=False, next_open_ms=SATURDAY_NOON + 3600_000,
                     session_state="STREAM", session_actor="running"),
    DISCONNECTED: DiagInputs(market_open=True, session_state="DISCONNECTED",
                             session_reason="login failed: refused", session_actor="running"),
    RECOVERING: DiagInputs(market_open=True, session_state="RECOVERING",
                           session_reason="logged in again; waiting for ticks",
                           session_actor="running"),
}


@pytest.mark.parametrize("before,after", [(a, b) for a in CALLS_FOR for b in CALLS_FOR if a != b])
def test_machine_moves_between_every_pair_of_states_at_the_injected_time(
        before: str, after: str) -> None:
    diag = machine()
    first = diag.evaluate(CALLS_FOR[before], 1_000)
    assert first is not None and first.state == before and first.previous is None
    change = diag.evaluate(CALLS_FOR[after], 7_500)
    assert change is not None
    assert (change.previous, change.state, change.at_ms) == (before, after, 7_500)
    assert diag.view(10_000)["since_ms"] == 7_500
    assert diag.view(10_000)["seconds_in_state"] == 2.5


def test_same_state_again_is_not_a_change_but_its_reason_is_kept() -> None:
    diag = machine()
    diag.evaluate(CALLS_FOR[DISCONNECTED], 1_000)
    again = DiagInputs(market_open=True, session_state="DISCONNECTED",
                       session_reason="login failed: timeout", session_actor="running")
    assert diag.evaluate(again, 2_000) is None
    assert diag.reason == "login failed: timeout"
    assert diag.since_ms == 1_000
    assert [change.state for change in diag.changes] == [DISCONNECTED]


def test_fxcm_session_not_running_in_the_runtime_is_disconnected() -> None:
    state, reason = machine().judge(DiagInputs(market_open=True, session_state="STREAM",
                                               session_actor="restarting"))
    assert (state, reason) == (DISCONNECTED, "fxcm_session is restarting")


def test_fxcm_session_still_starting_is_not_called_disconnected() -> None:
    state, _ = machine().judge(DiagInputs(market_open=True, session_state="CONNECTING",
                                          session_actor="starting"))
    assert state == RECOVERING


def test_a_failed_history_call_in_backoff_is_disconnected_while_ticks_flow() -> None:
    inputs = DiagInputs(market_open=True, session_state="STREAM", session_actor="running",
                        tick_silence_seconds=0.1, history_error="2 failure(s) in a row")
    assert machine().judge(inputs) == (DISCONNECTED, "history failed: 2 failure(s) in a row")


def test_closed_calendar_is_idle_with_the_next_opening_in_the_reason() -> None:
    state, reason = machine().judge(CALLS_FOR[IDLE])
    assert state == IDLE
    assert reason == "market closed until 2026-11-21T13:00:00+00:00"


def test_session_reporting_idle_with_the_market_open_is_idle() -> None:
    inputs = DiagInputs(market_open=True, session_state="IDLE", session_reason="replay finished")
    assert machine().judge(inputs) == (IDLE, "replay finished")


def test_no_session_state_yet_is_recovering() -> None:
    assert machine().judge(DiagInputs(market_open=True))[0] == RECOVERING


def test_ticks_silent_past_the_threshold_with_the_market_open_is_recovering() -> None:
    silent = DiagInputs(market_open=True, session_state="STREAM", tick_silence_seconds=61.0)
    state, reason = machine().judge(silent)
    assert (state, reason) == (RECOVERING, "no tick for 61 s with the market open")
    quiet = DiagInputs(market_open=True, session_state="STREAM", tick_silence_seconds=59.0)
    assert machine().judge(quiet)[0] == STREAM


def test_bars_behind_past_the_error_threshold_is_recovering_and_names_the_target() -> None:
    late = DiagInputs(market_open=True, session_state="STREAM", tick_silence_seconds=0.2,
                      bars_lag_seconds=121.0, lag_target="EURUSD 1m")
    assert machine().judge(late) == (RECOVERING, "bars behind by 121 s (EURUSD 1m)")


def test_unknown_ticks_and_bars_are_not_judged() -> None:
    inputs = DiagInputs(market_open=True, session_state="STREAM")
    assert machine().judge(inputs)[0] == STREAM


def test_changes_are_kept_with_their_times_newest_last() -> None:
    diag = machine()
    for at_ms, state in enumerate([RECOVERING, STREAM, DISCONNECTED, RECOVERING, STREAM], 1):
        diag.evaluate(CALLS_FOR[state], at_ms * 1000)
    changes = diag.view(9_000)["changes"]
    assert [c["state"] for c in changes] == [RECOVERING, STREAM, DISCONNECTED, RECOVERING,
                                             STREAM]
    assert [c["at_ms"] for c in changes] == [1000, 2000, 3000, 4000, 5000]
    assert changes[2]["at_utc"] == "1970-01-01T00:00:03+00:00"


# -- market status from the calendar --------------------------------------------------------------

def test_market_status_on_a_saturday_is_closed_until_sunday_17_new_york() -> None:
    market = MarketView(load_calendar(), SYMBOLS)
    payload = market.market_status(SATURDAY_NOON, SATURDAY_NOON)
    assert payload["state"] == "closed"
    # Sun 2026-11-22 17:00 New York (EST, UTC-5); metals open an hour later, FX first.
    assert payload["next_open_utc"] == "2026-11-22T22:00:00+00:00"
    assert payload["next_open_ms"] == utc_ms(2026, 11, 22, 22)
    assert payload["next_open_in_seconds"] == 34 * 3600.0
    assert set(payload["symbols"].values()) == {"closed"}
    assert payload["session"]["next_open_ms"] == payload["next_open_ms"]
    assert payload["session"]["in_session"] is False
    assert payload["session"]["tag"] == "TOKYO"  # the next session to open
    assert contracts.validate("market_status",
                              dict(payload, session=dict(payload["session"], stats={})))


def test_market_next_open_follows_new_york_daylight_saving_time() -> None:
    market = MarketView(load_calendar(), SYMBOLS)
    summer_saturday = utc_ms(2026, 7, 18, 12)
    assert market.next_open(summer_saturday) == utc_ms(2026, 7, 19, 21)  # EDT, UTC-4
    assert market.next_close(utc_ms(2026, 7, 15, 12)) == utc_ms(2026, 7, 17, 21)


def test_market_is_open_while_any_configured_symbol_is_open() -> None:
    market = MarketView(load_calendar(), SYMBOLS)
    metals_break = utc_ms(2026, 11, 18, 22, 30)  # 17:30 New York: metals pause, FX trades
    payload = market.market_status(metals_break, metals_break)
    assert payload["state"] == "open"
    assert payload["symbols"]["XAUUSD"] == "closed"
    assert payload["symbols"]["EURUSD"] == "open"
    only_gold = MarketView(load_calendar(), ["XAUUSD"])
    assert only_gold.is_open(metals_break) is False
    assert only_gold.next_open(metals_break) == utc_ms(2026, 11, 18, 23)


def test_public_session_in_london_names_it_and_counts_down_to_new_york() -> None:
    session = MarketView(load_calendar(), SYMBOLS).public_session(WEDNESDAY_NOON)
    assert session == {
        "name": "London", "tag": "LONDON", "state": "open",
        "current_open_utc": "2026-11-18T08:00:00+00:00",
        "current_close_utc": "2026-11-18T17:00:00+00:00",
        "next_open_utc": "2026-11-18T13:00:00+00:00",
        "seconds_to_close": 5 * 3600.0, "seconds_to_next_open": 3600.0, "symbols": [],
    }


@pytest.mark.parametrize("symbols,at_ms,detail", [
    (SYMBOLS, SATURDAY_NOON, "weekend"),
    (SYMBOLS, utc_ms(2026, 11, 18, 23), "overnight"),  # FX open, no session window
    (["XAUUSD"], utc_ms(2026, 11, 18, 22, 30), "intrabreak"),  # the metals' daily break
])
def test_closed_session_says_why(symbols: list[str], at_ms: int, detail: str) -> None:
    session = MarketView(load_calendar(), symbols).public_session(at_ms)
    assert session["state"] == "closed"
    assert session["state_detail"] == detail
    assert session["seconds_to_close"] is None
    assert session["seconds_to_next_open"] > 0


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=utc_ms(2025, 1, 1, 0), max_value=utc_ms(2027, 12, 1, 0)),
       st.sampled_from([SYMBOLS, ["XAUUSD"], ["EURUSD", "XAUUSD"]]))
def test_market_next_open_is_in_the_future_open_there_and_closed_just_before(
        t_ms: int, symbols: list[str]) -> None:
    market = MarketView(CALENDAR, symbols)
    opens = market.next_open(t_ms)
    assert opens > t_ms
    assert market.is_open(opens) and not market.is_open(opens - 1)
    closes = market.next_close(t_ms)
    assert closes > t_ms and not market.is_open(closes) and market.is_open(closes - 1)
    assert market.is_open(t_ms) == any(CALENDAR.is_open(t_ms, symbol) for symbol in symbols)


def test_market_change_key_moves_at_the_weekly_close_and_at_session_changes_only() -> None:
    market = MarketView(load_calendar(), SYMBOLS)
    friday_close = utc_ms(2026, 11, 20, 22)  # Fri 17:00 New York
    before, after = market.change_key(friday_close - 1), market.change_key(friday_close)
    assert before[0] is True and after[0] is False
    assert market.change_key(WEDNESDAY_NOON) == market.change_key(WEDNESDAY_NOON + 30 * 60_000)
    new_york_opens = utc_ms(2026, 11, 18, 13)  # the tag moves London -> New York
    assert market.change_key(new_york_opens - 1) != market.change_key(new_york_opens)
    assert market.change_key(SATURDAY_NOON) == market.change_key(SATURDAY_NOON + 3600_000)


def test_next_session_after_the_weekend_is_tokyo_monday_morning() -> None:
    upcoming = MarketView(load_calendar(), SYMBOLS).next_session(SATURDAY_NOON)
    assert upcoming is not None
    session, opens = upcoming
    assert (session.tag, opens) == ("TOKYO", utc_ms(2026, 11, 23, 0))


# -- bars: session statistics and lag -------------------------------------------------------------

def bar(symbol: str, open_time: int, low: float, high: float, close: float,
        complete: bool = True, tf: str = "1m") -> Bar:
    return Bar(symbol, tf, open_time, open_time + MINUTE_MS - 1, close, high, low, close, 3.0, 3,
               complete, False, "tick")


def test_session_stats_count_range_and_average_per_window_and_symbol_over_24_hours() -> None:
    calendar = load_calendar()
    tracker = BarTracker(calendar, 24 * 3600_000, "1m")
    now = utc_ms(2026, 11, 19, 10)  # Thursday 10:00 UTC, London open since 08:00
    tokyo = utc_ms(2026, 11, 19, 1)  # Tokyo only
    london = utc_ms(2026, 11, 19, 9)  # Tokyo and London: London opened last
    for index, (low, high, close) in enumerate([(1.0, 1.2, 1.1), (0.9, 1.1, 1.0),
                                                (1.1, 1.3, 1.2)]):
        tracker.add(bar("EURUSD", tokyo + index * MINUTE_MS, low, high, close), 0.0)
    tracker.add(bar("EURUSD", london, 1.5, 1.6, 1.55), 0.0)
    tracker.add(bar("XAUUSD", london, 4000.0, 4010.0, 4005.0), 0.0)
    tracker.add(bar("EURUSD", london, 1.5, 1.6, 1.55), 0.0)  # the same final again
    tracker.add(bar("EURUSD", london + MINUTE_MS, 1.0, 9.0, 5.0, complete=False), 0.0)
    tracker.add(bar("EURUSD", now - 25 * 3600_000, 0.1, 0.2, 0.15), 0.0)  # older than 24 h
    tracker.add(bar("EURUSD", utc_ms(2026, 11, 18, 23), 2.0, 2.1, 2.05), 0.0)  # no window
    tracker.add(bar("EURUSD", tokyo, 1.0, 1.2, 1.1, tf="5m"), 0.0)  # not the stats tf
    stats = tracker.stats(now)
    assert list(stats) == ["TOKYO", "LONDON"]
    assert stats["TOKYO"]["symbols"] == [{"symbol": "EURUSD", "tf": "1m", "bars": 3,
                                          "range": 0.4, "high": 1.3, "low": 0.9,
                                          "avg": 1.1}]
    assert stats["TOKYO"]["session_open_utc"] == "2026-11-19T00:00:00+00:00"
    assert stats["TOKYO"]["timezone"] == "Asia/Tokyo"
    assert stats["LONDON"]["symbols"] == [
        {"symbol": "EURUSD", "tf": "1m", "bars": 1, "range": 0.1, "high": 1.6, "low": 1.5,
         "avg": 1.55},
        {"symbol": "XAUUSD", "tf": "1m", "bars": 1, "range": 10.0, "high": 4010.0,
         "low": 4000.0, "avg": 4005.0}]
    # the public status shows the open session's rows in the predecessor's closed shape
    public = MarketView(calendar, ["EURUSD", "XAUUSD"]).public_session(now, stats)
    assert public["symbols"] == [
        {"symbol": "EURUSD", "tf": "1m", "high": 1.6, "low": 1.5, "avg": 1.55},
        {"symbol": "XAUUSD", "tf": "1m", "high": 4010.0, "low": 4000.0, "avg": 4005.0}]
    assert stats["LONDON"]["session_close_utc"] == "2026-11-19T17:00:00+00:00"
    assert tracker.previews == 1


def test_lag_and_staleness_of_each_stream_target() -> None:
    tracker = BarTracker(load_calendar(), 24 * 3600_000, "1m")
    tracker.add(bar("XAUUSD", WEDNESDAY_NOON, 1.0, 2.0, 1.5), mono=100.0)
    targets = tracker.targets_view(WEDNESDAY_NOON + 61_000, 101.5,
                                   [("XAUUSD", "1m"), ("EURUSD", "1m")])
    assert targets == [
        {"symbol": "EUR/USD", "tf": "m1", "symbol_code": "EURUSD", "timeframe": "1m",
         "last_close_ms": None, "lag_seconds": None, "staleness_seconds": None, "bars": 0},
        {"symbol": "XAU/USD", "tf": "m1", "symbol_code": "XAUUSD", "timeframe": "1m",
         "last_close_ms": WEDNESDAY_NOON + 59_999, "lag_seconds": 1.001,
         "staleness_seconds": 1.5, "bars": 1}]


def test_bars_are_late_only_past_their_own_length_and_not_before_the_market_reopened() -> None:
    tracker = BarTracker(load_calendar(), 24 * 3600_000, "1m")
    tracker.add(bar("EURUSD", WEDNESDAY_NOON, 1.0, 2.0, 1.5), 0.0)
    next_close = WEDNESDAY_NOON + 2 * MINUTE_MS
    opened = {"EURUSD": WEDNESDAY_NOON - 3600_000}
    late, which = tracker.overdue(next_close + 10_000, ["EURUSD"], "1m", opened, 0)
    assert (late, which) == (10.0, "EURUSD 1m")
    assert tracker.overdue(next_close - 5_000, ["EURUSD"], "1m", opened, 0)[0] == 0.0
    reopened = {"EURUSD": next_close + 3600_000}  # a week-end later: counted from the opening
    assert tracker.overdue(next_close + 3600_000 + 30_000, ["EURUSD"], "1m", reopened, 0)[0] \
        == 0.0
    assert tracker.overdue(next_close, ["EURUSD"], "1m", {"EURUSD": None}, 0) == (None, "")


# -- the public words -----------------------------------------------------------------------------

def test_public_process_words_follow_the_diagnostic_state() -> None:
    assert process_state(STREAM, True) == "stream"
    assert process_state(DISCONNECTED, True) == "error"
    assert process_state(IDLE, False) == "sleep"
    assert process_state(IDLE, True) == "idle"
    assert process_state(RECOVERING, True) == "idle"


def test_public_price_word_comes_from_fresh_snapshotter_telemetry_only() -> None:
    assert price_state({"state": "ok"}, 1.0, 10.0) == "ok"
    assert price_state({"state": "stale"}, 1.0, 10.0) == "stale"
    assert price_state({"state": "waiting"}, 1.0, 10.0) == "down"
    assert price_state({"state": "ok"}, 11.0, 10.0) == "down"  # the snapshotter went quiet
    assert price_state(None, None, 10.0) == "down"


def test_public_ohlcv_word_is_delayed_past_60_s_of_lag_beyond_a_bar_on_time() -> None:
    on_time = 60.0 + 1.5 + 2.0  # a 1m bar, its close grace, 2 s of delivery
    assert ohlcv_state(True, True, 10.0, on_time, 60.0, 180.0) == "ok"
    assert ohlcv_state(True, True, 63.0, on_time, 60.0, 180.0) == "ok"  # the next is not due
    assert ohlcv_state(True, True, 64.0, on_time, 60.0, 180.0) == "delayed"
    assert ohlcv_state(True, True, 90.0, 10.0, 60.0, 180.0) == "delayed"  # the seed's 60 s
    assert ohlcv_state(True, True, 181.0, on_time, 60.0, 180.0) == "down"
    assert ohlcv_state(True, False, None, on_time, 60.0, 180.0) == "down"
    assert ohlcv_state(False, True, 9999.0, on_time, 60.0, 180.0) == "ok"  # closed


def test_public_note_is_short_and_says_what_is_wrong_first() -> None:
    assert note(STREAM, "", True, "ok", "ok", None) == "ok"
    assert note(IDLE, "market closed", False, "stale", "ok", None) == "idle: calendar_closed"
    assert note(DISCONNECTED, "login failed", True, "down", "down", 30.2) == "backoff FXCM 30s"
    assert note(STREAM, "", True, "stale", "ok", None) == "price stale"
    assert len(note(RECOVERING, "x" * 500, True, "ok", "ok", None)) == 160


def test_last_command_shows_who_and_how_never_the_result_body() -> None:
    shown = public_command({"req_id": "r1", "cmd": "fxcm_warmup", "state": "error",
                            "error": {"code": "timeout", "message": "no reply"},
                            "result": {"secret": "x"}}, 12.5)
    assert shown == {"req_id": "r1", "cmd": "fxcm_warmup", "state": "error", "ts": 12.5,
                     "error": {"code": "timeout", "message": "no reply"}}


def test_runtime_view_sums_restarts_depth_and_dead_letters_and_hides_the_host() -> None:
    merged = {
        "router": {"dead_letters": 2, "published": 10},
        "actors": {
            "a": {"state": "running", "restarts": 1, "depth": 5, "dead_letters": 2},
            "b": {"state": "restarting", "restarts": 3, "depth": 0, "dead_letters": 0},
            "$host": {"state": "running", "depth": 99},
        },
        "dead_letters": [{"actor": "a", "reason": "boom"}],
    }
    view = runtime_view(merged)
    assert sorted(view["actors"]) == ["a", "b"]
    assert (view["restarts_total"], view["mailbox_depth_total"], view["dead_letters_total"]) \
        == (4, 5, 2)
    assert view["actors"]["b"]["state"] == "restarting"
    assert view["recent_dead_letters"] == [{"actor": "a", "reason": "boom"}]


# -- through a real host --------------------------------------------------------------------------

FAST = {"interval_seconds": 0.5, "status_interval_seconds": 0.5,
        "market_status_interval_seconds": 1.0, "evaluate_interval_seconds": 0.2}


def actors(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    collector = {"name": "collector", "class": "tests.sample_actors:Collector",
                 "settings": {"topics": ["heartbeat", "market_status", "status.public"]}}
    return [collector, *extra, {"name": "heartbeat", "class": "actors.heartbeat:Heartbeat"}]


def calendar_with_sessions(tmp_path: Path) -> Path:
    """An always-open calendar (around now) with two session windows covering the day."""
    path = open_calendar(tmp_path)
    data = json.loads(path.read_text())
    data["session_windows"] = [{"tag": "DAY", "start": "00:00", "end": "12:00", "tz": "UTC"},
                               {"tag": "NIGHT", "start": "12:00", "end": "00:00", "tz": "UTC"}]
    path.write_text(json.dumps(data))
    return path


def sections(tmp_path: Path, **heartbeat: Any) -> dict[str, Any]:
    return {"calendar_file": str(calendar_with_sessions(tmp_path)),
            "redis": {"port": 0},
            "bus": {"status_interval_seconds": 0.2},
            "heartbeat": dict(FAST, **heartbeat)}


def collected(probe: Probe, start: int = 0) -> list[tuple[str, Any]]:
    _, kept = probe.client.request("collector", "collected", start, timeout=30)
    return [(kind, body) for kind, body, _ in kept]


def wait_collected(probe: Probe, condition: Any, what: str,
                   timeout: float = 30.0) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def check() -> bool:
        nonlocal found
        found = collected(probe)
        return bool(condition(found))
    wait_for(check, timeout, what, interval=0.1)
    return found


def test_heartbeat_market_status_and_public_status_validate_against_their_schemas(
        tmp_path: Path, run_dir: str) -> None:
    snapshotter = {"name": "snapshotter", "class": "actors.snapshotter:Snapshotter",
                   "settings": {"price_snap_interval_seconds": 0.5}}
    with host_in_thread(tmp_path, run_dir, actors(snapshotter), **sections(tmp_path)):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))
        now = int(time.time() * 1000)
        probe.publish("session.state", SessionState("STREAM", "ticks flowing", now, "sim"),
                      "session.state")
        minute = now // MINUTE_MS * MINUTE_MS - MINUTE_MS
        for symbol, price in (("EURUSD", 1.1), ("XAUUSD", 4000.0)):
            probe.publish(tick_topic(symbol), Tick(symbol, now, price, price + 0.0002), "tick")
            probe.publish("bar.{}.1m".format(symbol),
                          bar(symbol, minute, price - 0.001, price + 0.001, price), "bar")
        probe.publish("command.result", {"req_id": "r-7", "cmd": "fxcm_warmup", "state": "ok",
                                         "ts": time.time(), "result": {"bars": 3}},
                      "command.result")

        def complete(found: list[tuple[str, Any]]) -> bool:
            beats = [b for kind, b in found if kind == "heartbeat"]
            statuses = [b for kind, b in found if kind == "status.public"]
            return (any(b["state"] == "stream"
                        and b["context"]["price_stream"]["state"] == "ok"
                        and "snapshotter" in b["context"]["runtime"].get("actors", {})
                        and b["context"]["session"]["stats"] for b in beats)
                    and any(b["context"]["last_command"] for b in beats)
                    and any(s["price"] == "ok" for s in statuses)
                    and any(kind == "market_status" for kind, _ in found))
        found = wait_collected(probe, complete, "a streaming heartbeat and a full status", 60)
        channel = {"heartbeat": "heartbeat", "market_status": "market_status",
                   "status.public": "status"}
        for kind, payload in found:
            assert contracts.validate(channel[kind], payload)  # or ContractError names the field
        beat = [b for kind, b in found if kind == "heartbeat" and b["state"] == "stream"][-1]
        context = beat["context"]
        assert context["price_stream"]["symbols"] == ["EURUSD", "XAUUSD"]
        assert context["runtime"]["actors"]["heartbeat"]["restarts"] == 0
        assert {t["symbol_code"] for t in context["stream_targets"]} == set(SYMBOLS)
        assert beat["last_bar_close_ms"] == minute + MINUTE_MS - 1
        session = dict(context["session"]["stats"])
        assert sorted(entry["symbol"] for stats in session.values()
                      for entry in stats["symbols"]) == ["EURUSD", "XAUUSD"]
        market = [b for kind, b in found if kind == "market_status"][-1]
        assert market["state"] == "open"
        last = [b for kind, b in found if kind == "heartbeat"][-1]["context"]["last_command"]
        assert last["req_id"] == "r-7" and "result" not in last
        public = [b for kind, b in found if kind == "status.public"][-1]
        assert public["market"] == "open"
        assert set(public) == {"ts", "process", "market", "price", "ohlcv", "session", "note"}
        probe.close()


def test_diagnostic_state_follows_session_state_changes(tmp_path: Path, run_dir: str) -> None:
    with host_in_thread(tmp_path, run_dir, actors(), **sections(tmp_path)):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))
        start = len(collected(probe))
        # fxcm_session's state -> seed 000's diagnostic state (context.diag.state), the seed's
        # heartbeat state, the public process
        steps = [("CONNECTING", "logging in", RECOVERING, "stream", "idle"),
                 ("STREAM", "ticks flowing", STREAM, "stream", "stream"),
                 ("DISCONNECTED", "connection lost", DISCONNECTED, "idle", "error"),
                 ("RECOVERING", "logged in again", RECOVERING, "stream", "idle"),
                 ("STREAM", "ticks flowing", STREAM, "stream", "stream"),
                 ("IDLE", "replay finished", IDLE, "idle", "idle")]
        since = int(time.time() * 1000)
        for index, (session, reason, diag, heartbeat_state, process) in enumerate(steps):
            probe.publish("session.state", SessionState(session, reason, since + index, "sim"),
                          "session.state")

            def reached(found: list[tuple[str, Any]], expected: str = diag,
                        seed_state: str = heartbeat_state, proc: str = process,
                        first: int = start) -> bool:
                new = found[first:]
                return any(kind == "heartbeat" and body["context"]["diag"]["state"] == expected
                           and body["state"] == seed_state for kind, body in new) and any(
                    kind == "status.public" and body["process"] == proc for kind, body in new)
            found = wait_collected(probe, reached, "diagnostic state {}".format(diag))
            start = len(found)
        beat = [body for kind, body in found if kind == "heartbeat"][-1]
        changes = beat["context"]["diag"]["changes"]
        assert [change["state"] for change in changes][-6:] == [
            RECOVERING, STREAM, DISCONNECTED, RECOVERING, STREAM, IDLE]
        assert all(change["at_ms"] >= since for change in changes[-5:])
        assert changes[-4]["reason"] == "connection lost"
        probe.close()


def test_heartbeat_shows_restarts_and_dead_letters_of_a_crashing_actor(
        tmp_path: Path, run_dir: str) -> None:
    echo = {"name": "echo", "class": "tests.sample_actors:Echo"}
    fast_restarts = {"backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.5,
                     "max_restarts": 20, "restart_window_seconds": 60.0}
    with host_in_thread(tmp_path, run_dir, actors(echo), supervisor=fast_restarts,
                        bus={"max_redeliveries": 3, "status_interval_seconds": 0.2},
                        **{k: v for k, v in sections(tmp_path).items() if k != "bus"}):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))
        probe.publish("echo.x", "poison", "echo")

        def shows_it(found: list[tuple[str, Any]]) -> bool:
            return any(kind == "heartbeat"
                       and body["context"]["runtime"]["actors"].get("echo", {}).get("state")
                       == "running"
                       and body["context"]["runtime"]["dead_letters_total"] == 1
                       for kind, body in found)
        found = wait_collected(probe, shows_it, "the dead letter in a heartbeat", 60)
        runtime = [body for kind, body in found if kind == "heartbeat"
                   and body["context"]["runtime"]["dead_letters_total"] == 1][-1][
                       "context"]["runtime"]
        assert runtime["actors"]["echo"]["restarts"] == 3
        assert runtime["actors"]["echo"]["dead_letters"] == 1
        assert runtime["restarts_total"] == 3
        assert runtime["recent_dead_letters"][-1]["topic"] == "echo.x"
        assert runtime["actors"]["heartbeat"]["mailbox_depth"] >= 0
        probe.close()


def test_health_reaches_a_redis_subscriber_on_the_seeds_channels_and_validates(
        tmp_path: Path, run_dir: str) -> None:
    team: list[dict[str, Any]] = [
        {"name": "redis_publisher", "class": "actors.redis_publisher:RedisPublisher"},
        {"name": "snapshotter", "class": "actors.snapshotter:Snapshotter",
         "settings": {"price_snap_interval_seconds": 0.5}},
        {"name": "heartbeat", "class": "actors.heartbeat:Heartbeat"},
        {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"}]
    with host_in_thread(tmp_path, run_dir, team, **sections(tmp_path)) as host:
        assert host.redis is not None
        client = redis.Redis.from_url(host.redis.url)
        pubsub = client.pubsub()
        channels = {"fxcm:heartbeat": "heartbeat", "fxcm:market_status": "market_status",
                    "fxcm:status": "status"}
        pubsub.subscribe(*channels)
        received: dict[str, list[dict[str, Any]]] = {name: [] for name in channels.values()}

        def listen() -> bool:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                received[channels[message["channel"].decode()]].append(
                    json.loads(message["data"]))
            beats = received["heartbeat"]
            return (any(beat["state"] == "stream" and beat["context"]["redis_connected"]
                        for beat in beats)
                    and any(status["price"] == "ok" for status in received["status"])
                    and bool(received["market_status"]))
        wait_for(listen, 60, "stream heartbeat, status and market_status on Redis",
                 interval=0)
        for channel, payloads in received.items():
            for payload in payloads:
                assert contracts.validate(channel, payload)
        beat = [b for b in received["heartbeat"] if b["state"] == "stream"][-1]
        assert beat["context"]["channel"] == "fxcm:heartbeat"
        assert beat["context"]["price_stream"]["channel"] == "fxcm:price_tik"
        assert beat["context"]["fxcm"]["session_state"] == "STREAM"
        assert beat["context"]["redis"]["connected"] is True
        status = received["status"][-1]
        assert (status["market"], status["process"]) == ("open", "stream")
        # a late joiner reads the last of each from its key, without waiting
        for channel in ("heartbeat", "market_status", "status"):
            last = client.get("fxcm:{}:last".format(channel))
            assert last is not None, channel
            assert contracts.validate(channel, json.loads(last))
        pubsub.close()
        client.close()


def test_iso_utc_is_the_seeds_timestamp_shape() -> None:
    assert iso_utc(1764541739999) == "2025-11-30T22:28:59+00:00"
