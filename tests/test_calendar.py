"""The trading calendar: weekly hours, DST, daily breaks, holidays, sessions, trading days, and
malformed configs. Times are driven by the tests (ms UTC), never read from the clock."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.calendar import MINUTE_MS, Session, TradingCalendar, load_calendar
from protocol.errors import ConfigError

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
TOKYO = ZoneInfo("Asia/Tokyo")
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

CALENDAR = load_calendar()
SYMBOLS = [None, "EURUSD", "XAUUSD", "XAG/USD"]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()) * 1000


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()) * 1000


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return local(NEW_YORK, year, month, day, hour, minute)


# -- weekly hours and DST ----------------------------------------------------------------------


def test_next_open_on_a_summer_saturday_is_sunday_17_new_york() -> None:
    saturday = utc(2026, 7, 11, 12)
    assert not CALENDAR.is_open(saturday)
    assert CALENDAR.next_open(saturday) == utc(2026, 7, 12, 21)


def test_next_open_on_a_winter_saturday_is_sunday_17_new_york() -> None:
    saturday = utc(2026, 1, 10, 12)
    assert not CALENDAR.is_open(saturday)
    assert CALENDAR.next_open(saturday) == utc(2026, 1, 11, 22)


def test_weekly_open_moves_an_hour_earlier_in_utc_when_march_dst_starts() -> None:
    # US DST starts on the second Sunday of March: 2026-03-08.
    assert CALENDAR.next_open(utc(2026, 2, 28, 12)) == utc(2026, 3, 1, 22)
    assert CALENDAR.next_open(utc(2026, 3, 7, 12)) == utc(2026, 3, 8, 21)


def test_weekly_open_moves_an_hour_later_in_utc_when_november_dst_ends() -> None:
    # US DST ends on the first Sunday of November: 2026-11-01.
    assert CALENDAR.next_open(utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 21)
    assert CALENDAR.next_open(utc(2026, 10, 31, 12)) == utc(2026, 11, 1, 22)


def test_weekly_close_is_friday_17_new_york() -> None:
    wednesday = ny(2026, 7, 15, 12)
    assert CALENDAR.next_close(wednesday) == ny(2026, 7, 17, 17)
    assert CALENDAR.is_open(ny(2026, 7, 17, 16, 59))
    assert not CALENDAR.is_open(ny(2026, 7, 17, 17))


def test_next_open_while_open_is_the_opening_after_the_current_close() -> None:
    wednesday = ny(2026, 7, 15, 12)
    assert CALENDAR.next_open(wednesday) == ny(2026, 7, 19, 17)


def test_next_close_while_closed_is_the_close_of_the_next_opening() -> None:
    saturday = ny(2026, 7, 11, 12)
    assert CALENDAR.next_close(saturday) == ny(2026, 7, 17, 17)


# -- daily breaks and profiles -----------------------------------------------------------------


def test_metals_daily_break_closes_at_17_and_reopens_at_18_new_york() -> None:
    for day in (14, 15, 16):  # Tuesday to Thursday, summer time
        assert CALENDAR.is_open(ny(2026, 7, day, 16, 59), "XAUUSD")
        assert not CALENDAR.is_open(ny(2026, 7, day, 17), "XAUUSD")
        assert not CALENDAR.is_open(ny(2026, 7, day, 17, 59), "XAUUSD")
        assert CALENDAR.is_open(ny(2026, 7, day, 18), "XAUUSD")
        assert CALENDAR.next_close(ny(2026, 7, day, 12), "XAUUSD") == ny(2026, 7, day, 17)
        assert CALENDAR.next_open(ny(2026, 7, day, 17, 30), "XAUUSD") == ny(2026, 7, day, 18)


def test_daily_break_follows_new_york_time_across_dst() -> None:
    winter, summer = ny(2026, 1, 14, 17), ny(2026, 7, 15, 17)
    assert (winter // HOUR_MS) % 24 == 22 and (summer // HOUR_MS) % 24 == 21
    for moment in (winter, summer):
        assert not CALENDAR.is_open(moment, "XAGUSD")
        assert CALENDAR.next_open(moment, "XAGUSD") == moment + HOUR_MS


def test_symbols_outside_every_profile_have_no_daily_break() -> None:
    assert CALENDAR.is_open(ny(2026, 7, 15, 17, 30), "EURUSD")
    assert CALENDAR.is_open(ny(2026, 7, 15, 17, 30))


def test_symbol_spelling_does_not_matter_for_its_profile() -> None:
    moment = ny(2026, 7, 15, 17, 30)
    assert not CALENDAR.is_open(moment, "XAU/USD")
    assert not CALENDAR.is_open(moment, "xauusd")
    assert CALENDAR.profile_for("XAU/USD").name == "metals"


def test_metals_week_opens_sunday_18_and_closes_friday_16_55_new_york() -> None:
    assert CALENDAR.next_open(ny(2026, 7, 11, 12), "XAUUSD") == ny(2026, 7, 12, 18)
    assert CALENDAR.next_close(ny(2026, 7, 17, 12), "XAUUSD") == ny(2026, 7, 17, 16, 55)


def test_daily_break_spelled_as_string_list_or_object_is_the_same() -> None:
    spellings: list[Any] = ["17:00-18:00@America/New_York",
                            ["17:00", "18:00", "America/New_York"],
                            {"start": "17:00", "end": "18:00", "tz": "America/New_York"}]
    moment = ny(2026, 7, 15, 17, 30)
    for spelling in spellings:
        calendar = TradingCalendar.from_dict({"default": {"daily_breaks": [spelling]}})
        assert not calendar.is_open(moment)
        assert calendar.next_open(moment) == ny(2026, 7, 15, 18)


def test_daily_break_across_midnight_closes_both_sides() -> None:
    calendar = TradingCalendar.from_dict({"default": {"daily_breaks": ["23:30-00:30@UTC"]}})
    assert calendar.is_open(utc(2026, 7, 15, 23, 29))
    assert not calendar.is_open(utc(2026, 7, 15, 23, 30))
    assert not calendar.is_open(utc(2026, 7, 16, 0, 29))
    assert calendar.is_open(utc(2026, 7, 16, 0, 30))


# -- holidays ----------------------------------------------------------------------------------


def test_holiday_closes_its_whole_trading_day() -> None:
    calendar = TradingCalendar.from_dict({"default": {"holidays": ["2026-07-01"]}})
    # Trading day 2026-07-01 runs from 2026-06-30 17:00 to 2026-07-01 17:00 New York.
    assert calendar.is_open(ny(2026, 6, 30, 16, 59))
    assert not calendar.is_open(ny(2026, 6, 30, 17))
    assert not calendar.is_open(ny(2026, 7, 1, 12))
    assert calendar.next_close(ny(2026, 6, 30, 12)) == ny(2026, 6, 30, 17)
    assert calendar.next_open(ny(2026, 7, 1, 9)) == ny(2026, 7, 1, 17)


def test_next_open_after_christmas_friday_is_sunday() -> None:
    # 2026-12-25 is a Friday: closed from Thursday 17:00 New York until the week reopens.
    assert CALENDAR.is_open(ny(2026, 12, 24, 16, 59))
    assert not CALENDAR.is_open(ny(2026, 12, 24, 17))
    assert not CALENDAR.is_open(ny(2026, 12, 25, 10))
    assert CALENDAR.next_open(ny(2026, 12, 25, 10)) == ny(2026, 12, 27, 17)
    assert CALENDAR.next_close(ny(2026, 12, 22, 10)) == ny(2026, 12, 24, 17)


def test_profile_holidays_replace_the_default_ones() -> None:
    calendar = TradingCalendar.from_dict({
        "default": {"holidays": ["2026-07-01"]},
        "profiles": {"metals": {"symbols": ["XAUUSD"], "holidays": [
            {"date": "2026-07-02", "name": "test"}]}},
    })
    assert calendar.is_open(ny(2026, 7, 1, 12), "XAUUSD")
    assert not calendar.is_open(ny(2026, 7, 2, 12), "XAUUSD")
    assert not calendar.is_open(ny(2026, 7, 1, 12), "EURUSD")


# -- trading days ------------------------------------------------------------------------------


@pytest.mark.parametrize("day", [date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9),
                                 date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)])
def test_trading_day_starts_at_17_new_york_around_dst_switches(day: date) -> None:
    before = ny(day.year, day.month, day.day, 16, 59)
    at = ny(day.year, day.month, day.day, 17)
    after = ny(day.year, day.month, day.day, 17, 1)
    previous_day = day - timedelta(days=1)
    assert CALENDAR.trading_day_start(before) == ny(previous_day.year, previous_day.month,
                                                    previous_day.day, 17)
    assert CALENDAR.trading_day_start(at) == at
    assert CALENDAR.trading_day_start(after) == at


def test_trading_day_is_23_hours_in_march_and_25_in_november() -> None:
    march = CALENDAR.trading_day_start(ny(2026, 3, 8, 12))
    november = CALENDAR.trading_day_start(ny(2026, 11, 1, 12))
    assert CALENDAR.next_trading_day_start(march) - march == 23 * HOUR_MS
    assert CALENDAR.next_trading_day_start(november) - november == 25 * HOUR_MS


def test_trading_date_after_17_new_york_is_the_next_date() -> None:
    assert CALENDAR.trading_date(ny(2026, 12, 24, 18)) == date(2026, 12, 25)
    assert CALENDAR.trading_date(ny(2026, 12, 24, 16)) == date(2026, 12, 24)


# -- sessions ----------------------------------------------------------------------------------


def test_session_at_10_london_on_a_weekday_is_london() -> None:
    for moment in (local(LONDON, 2026, 7, 15, 10), local(LONDON, 2026, 1, 14, 10)):
        session = CALENDAR.session_at(moment)
        assert session is not None and session.tag == "LONDON"
    assert CALENDAR.session_at(local(LONDON, 2026, 7, 15, 10)) == Session(
        "LONDON", local(LONDON, 2026, 7, 15, 8), local(LONDON, 2026, 7, 15, 17))


def test_session_at_10_tokyo_on_a_weekday_is_tokyo() -> None:
    session = CALENDAR.session_at(local(TOKYO, 2026, 7, 15, 10))
    assert session is not None and session.tag == "TOKYO"


def test_overlapping_sessions_go_to_the_one_that_opened_last() -> None:
    session = CALENDAR.session_at(ny(2026, 7, 15, 10))  # London is still open too
    assert session is not None and session.tag == "NEW_YORK"
    assert session.start_ms == ny(2026, 7, 15, 8)


def test_no_session_when_the_market_is_closed_or_between_windows() -> None:
    assert CALENDAR.session_at(local(LONDON, 2026, 7, 11, 10)) is None  # Saturday
    assert CALENDAR.session_at(ny(2026, 7, 15, 18)) is None  # after New York, before Tokyo


# -- open intervals and minutes ----------------------------------------------------------------


def test_open_minutes_skip_the_weekend_and_the_metals_break() -> None:
    start, end = ny(2026, 7, 17, 16, 50), ny(2026, 7, 19, 18, 3)
    minutes = list(CALENDAR.open_minutes(start, end, "XAUUSD"))
    expected = [start + k * MINUTE_MS for k in range(5)] + [
        ny(2026, 7, 19, 18) + k * MINUTE_MS for k in range(3)]
    assert minutes == expected
    assert CALENDAR.count_open_minutes(start, end, "XAUUSD") == 8


def test_open_minutes_start_at_the_first_whole_minute() -> None:
    start = ny(2026, 7, 15, 10) + 1
    assert next(CALENDAR.open_minutes(start, start + 2 * MINUTE_MS)) == start - 1 + MINUTE_MS


# -- properties over several years -------------------------------------------------------------

ANY_TIME = st.integers(min_value=utc(2024, 1, 1), max_value=utc(2030, 12, 31))
ANY_SYMBOL = st.sampled_from(SYMBOLS)


@settings(max_examples=300, deadline=None)
@given(t=ANY_TIME, symbol=ANY_SYMBOL)
def test_next_open_is_later_open_and_closed_just_before(t: int, symbol: str | None) -> None:
    opening = CALENDAR.next_open(t, symbol)
    assert opening > t
    assert CALENDAR.is_open(opening, symbol)
    assert not CALENDAR.is_open(opening - 1, symbol)


@settings(max_examples=300, deadline=None)
@given(t=ANY_TIME, symbol=ANY_SYMBOL)
def test_next_close_is_later_closed_and_open_just_before(t: int, symbol: str | None) -> None:
    closing = CALENDAR.next_close(t, symbol)
    assert closing > t
    assert not CALENDAR.is_open(closing, symbol)
    assert CALENDAR.is_open(closing - 1, symbol)
    if CALENDAR.is_open(t, symbol):
        assert closing < CALENDAR.next_open(t, symbol)
    else:
        assert CALENDAR.next_open(t, symbol) < closing


@settings(max_examples=200, deadline=None)
@given(t=ANY_TIME, span=st.integers(min_value=1, max_value=20 * DAY_MS), symbol=ANY_SYMBOL)
def test_is_open_agrees_with_open_intervals(t: int, span: int, symbol: str | None) -> None:
    intervals = CALENDAR.open_intervals(t, t + span, symbol)
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert end < start  # sorted, never touching
    for begin, finish in intervals:
        assert t <= begin < finish <= t + span
        assert CALENDAR.is_open(begin, symbol) and CALENDAR.is_open(finish - 1, symbol)
        if begin > t:
            assert not CALENDAR.is_open(begin - 1, symbol)
        if finish < t + span:
            assert not CALENDAR.is_open(finish, symbol)
    for probe in (t, t + span // 3, t + span // 2, t + span - 1):
        inside = any(begin <= probe < finish for begin, finish in intervals)
        assert CALENDAR.is_open(probe, symbol) == inside


@settings(max_examples=40, deadline=None)
@given(t=ANY_TIME, symbol=ANY_SYMBOL)
def test_open_minutes_agree_with_is_open_minute_by_minute(t: int, symbol: str | None) -> None:
    start, end = t, t + 2 * DAY_MS
    first = -(-start // MINUTE_MS) * MINUTE_MS
    expected = [minute for minute in range(first, end, MINUTE_MS)
                if CALENDAR.is_open(minute, symbol)]
    assert list(CALENDAR.open_minutes(start, end, symbol)) == expected


@settings(max_examples=200, deadline=None)
@given(t=ANY_TIME)
def test_trading_day_start_is_17_new_york_at_or_before_t(t: int) -> None:
    start = CALENDAR.trading_day_start(t)
    assert start <= t < CALENDAR.next_trading_day_start(t)
    moment = datetime.fromtimestamp(start / 1000, NEW_YORK)
    assert (moment.hour, moment.minute, moment.second) == (17, 0, 0)


# -- malformed configs -------------------------------------------------------------------------

MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"default": {"weekly_open": "Sun 25:00@America/New_York"}},
     "calendar.default.weekly_open: the time must be HH:MM"),
    ({"default": {"weekly_close": "Fry 17:00@America/New_York"}},
     "calendar.default.weekly_close: unknown weekday 'Fry'"),
    ({"default": {"daily_breaks": ["17:00-18:00@Mars/Olympus"]}},
     "calendar.default.daily_breaks[0]: unknown time zone 'Mars/Olympus'"),
    ({"default": {"daily_breaks": ["17:00-17:00@UTC"]}},
     "calendar.default.daily_breaks[0]: start and end are both 17:00"),
    ({"default": {"daily_breaks": ["17:60-18:00@UTC"]}},
     "calendar.default.daily_breaks[0]: the time must be HH:MM"),
    ({"default": {"daily_breaks": [["17:00", "18:00", "UTC", "extra"]]}},
     "calendar.default.daily_breaks[0]: must be ['HH:MM', 'HH:MM', 'Zone']"),
    ({"default": {"daily_breaks": [{"start": "17:00", "end": "18:00", "zone": "UTC"}]}},
     "calendar.default.daily_breaks[0].zone: unknown setting"),
    ({"profiles": {"metals": {"symbols": ["XAUUSD"], "daily_breaks": [
        "17:00-18:00@America/New_York", "17:30-18:30@America/New_York"]}}},
     "calendar.profiles.metals.daily_breaks[1]: overlaps daily_breaks[0]"),
    ({"profiles": {"metals": {"symbols": ["XAUUSD"], "daily_breaks": [
        "21:30-21:45@UTC", "10:00-11:00@UTC", "17:00-18:00@America/New_York"]}}},
     "calendar.profiles.metals.daily_breaks[2]: overlaps daily_breaks[0]"),
    ({"profiles": {"metals": {"symbols": ["XAUUSD"]},
                   "gold": {"symbols": ["XAU/USD"]}}},
     "calendar.profiles.gold.symbols[0]: XAUUSD is already in profile 'metals'"),
    ({"profiles": {"metals": {"symbols": ["XAUUSD"], "daily_break": []}}},
     "calendar.profiles.metals.daily_break: unknown setting"),
    ({"weekly_open": "Sun 17:00@UTC"}, "calendar.weekly_open: unknown setting"),
    ({"profiles": {"metals": {"daily_breaks": []}}},
     "calendar.profiles.metals.symbols: must be a non-empty list"),
    ({"default": {"holidays": ["2026-02-30"]}},
     "calendar.default.holidays[0]: not a date 'YYYY-MM-DD': '2026-02-30'"),
    ({"default": {"holidays": ["2026-12-25", {"date": "2026-12-25", "name": "again"}]}},
     "calendar.default.holidays[1]: 2026-12-25 is already holidays[0]"),
    ({"default": {"weekly_open": "Fri 17:00@UTC", "weekly_close": "Fri 17:00@UTC"}},
     "calendar.default.weekly_close: equals weekly_open"),
    ({"default": {"weekly_open": "Sun 17:00@UTC", "weekly_open_utc": "Sun 17:00@UTC"}},
     "calendar.default.weekly_open_utc: given twice"),
    ({"default": {"daily_breaks": ["00:00-12:00@UTC", "12:00-00:00@UTC"]}},
     "calendar.default: the weekly hours and daily breaks leave the market never open"),
    ({"session_windows": [{"tag": "LONDON", "start": "08:00", "end": "08:00",
                           "tz": "Europe/London"}]},
     "calendar.session_windows[0]: start and end are both 08:00"),
    ({"session_windows": [{"tag": "A", "start": "08:00", "end": "09:00"},
                          {"tag": "A", "start": "10:00", "end": "11:00"}]},
     "calendar.session_windows[1].tag: 'A' is already session_windows[0]"),
    ({"trading_day_start": "17:00@Nowhere/City"},
     "calendar.trading_day_start: unknown time zone 'Nowhere/City'"),
]


@pytest.mark.parametrize("data,message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_calendar_raises_config_error_naming_the_entry(
        data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TradingCalendar.from_dict(data)
    assert str(caught.value).startswith(message), str(caught.value)


def test_touching_daily_breaks_are_not_an_overlap() -> None:
    calendar = TradingCalendar.from_dict(
        {"default": {"daily_breaks": ["10:00-11:00@UTC", "11:00-12:00@UTC"]}})
    assert calendar.next_open(utc(2026, 7, 15, 10, 30)) == utc(2026, 7, 15, 12)


def test_empty_config_is_the_fx_week_without_holidays() -> None:
    calendar = TradingCalendar.from_dict({})
    assert calendar.next_open(utc(2026, 7, 11, 12)) == utc(2026, 7, 12, 21)
    assert calendar.is_open(ny(2026, 12, 25, 10))
    assert calendar.session_at(ny(2026, 7, 15, 10)) is None


def test_predecessor_key_names_and_day_defaults_are_accepted() -> None:
    calendar = TradingCalendar.from_dict({"default": {
        "weekly_open_utc": "18:00@America/New_York", "weekly_close_utc": "16:55@America/New_York",
    }})
    assert calendar.next_open(ny(2026, 7, 11, 12)) == ny(2026, 7, 12, 18)
    assert calendar.next_close(ny(2026, 7, 15, 12)) == ny(2026, 7, 17, 16, 55)


def test_load_calendar_names_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "calendar.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="calendar file .*calendar.json: not JSON"):
        load_calendar(path)


def test_load_calendar_reads_a_given_file(tmp_path: Path) -> None:
    path = tmp_path / "calendar.json"
    path.write_text(json.dumps({"default": {"holidays": ["2026-07-01"]}}), encoding="utf-8")
    assert not load_calendar(path).is_open(ny(2026, 7, 1, 12))
