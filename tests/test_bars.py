"""protocol.bars, the one home of bucket edges, derived bars and the price basis: 4h and 1d
edges at the 17:00 New York trading-day start, across both DST changes of 2026."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from config.calendar import load_calendar
from protocol.bars import PRICE_BASES, basis_price, bucket_end, bucket_start, derive
from protocol.market import MINUTE_MS, TF_MS, TIMEFRAMES, Bar

NEW_YORK = ZoneInfo("America/New_York")
HOUR_MS = 60 * MINUTE_MS
CALENDAR = load_calendar()
DAY_START = CALENDAR.trading_day_start
NEXT_DAY_START = CALENDAR.next_trading_day_start


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=NEW_YORK).timestamp()) * 1000


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()) * 1000


def edges(tf: str, t_ms: int) -> tuple[int, int]:
    start = bucket_start(t_ms, tf, DAY_START)
    return start, bucket_end(start, tf, NEXT_DAY_START)


def test_short_timeframes_align_to_the_utc_epoch_without_a_calendar() -> None:
    t = utc(2026, 1, 14, 13, 47) + 12_345
    assert bucket_start(t, "1m") == utc(2026, 1, 14, 13, 47)
    assert bucket_start(t, "15m") == utc(2026, 1, 14, 13, 45)
    assert bucket_start(t, "1h") == utc(2026, 1, 14, 13)
    assert bucket_end(utc(2026, 1, 14, 13), "1h") == utc(2026, 1, 14, 14)


@pytest.mark.parametrize("tf", ["4h", "1d"])
def test_trading_day_timeframes_refuse_to_guess_the_day_start(tf: str) -> None:
    with pytest.raises(ValueError):
        bucket_start(utc(2026, 1, 14), tf)
    with pytest.raises(ValueError):
        bucket_end(utc(2026, 1, 14), tf)


def test_daily_bar_opens_at_17_new_york_and_the_minute_before_belongs_to_the_day_before() -> None:
    assert edges("1d", ny(2026, 1, 14, 16, 59)) == (ny(2026, 1, 13, 17), ny(2026, 1, 14, 17))
    assert edges("1d", ny(2026, 1, 14, 17)) == (ny(2026, 1, 14, 17), ny(2026, 1, 15, 17))


def test_4h_buckets_count_from_17_new_york_in_winter_and_summer() -> None:
    # 17:00 New York is 22:00 UTC in winter and 21:00 UTC in summer
    assert edges("4h", utc(2026, 1, 14, 3, 30)) == (utc(2026, 1, 14, 2), utc(2026, 1, 14, 6))
    assert edges("4h", utc(2026, 7, 14, 3, 30)) == (utc(2026, 7, 14, 1), utc(2026, 7, 14, 5))
    assert edges("4h", ny(2026, 1, 14, 17)) == (ny(2026, 1, 14, 17), ny(2026, 1, 14, 21))


def test_march_dst_day_is_23_hours_and_its_last_4h_bucket_is_cut_at_the_next_day_start() -> None:
    day = ny(2026, 3, 7, 17)  # Sat 17:00 EST; clocks go forward Sun 2026-03-08 02:00
    next_day = ny(2026, 3, 8, 17)  # Sun 17:00 EDT
    assert next_day - day == 23 * HOUR_MS
    assert edges("1d", next_day - MINUTE_MS) == (day, next_day)
    last = day + 5 * TF_MS["4h"]
    assert edges("4h", next_day - MINUTE_MS) == (last, next_day)
    assert next_day - last == 3 * HOUR_MS
    # the next day's first 4h bucket starts at its own 17:00, not on the old 4h grid
    assert edges("4h", next_day) == (next_day, next_day + TF_MS["4h"])


def test_november_dst_day_is_25_hours_with_a_seventh_one_hour_4h_bucket() -> None:
    day = ny(2026, 10, 31, 17)  # Sat 17:00 EDT; clocks go back Sun 2026-11-01 02:00
    next_day = ny(2026, 11, 1, 17)  # Sun 17:00 EST
    assert next_day - day == 25 * HOUR_MS
    assert edges("1d", day + 24 * HOUR_MS + 30 * MINUTE_MS) == (day, next_day)
    seventh = day + 6 * TF_MS["4h"]
    assert edges("4h", next_day - MINUTE_MS) == (seventh, next_day)
    assert next_day - seventh == HOUR_MS


@pytest.mark.parametrize("tf", TIMEFRAMES)
@pytest.mark.parametrize("first_day", [ny(2026, 3, 5, 17), ny(2026, 10, 29, 17),
                                       ny(2026, 1, 12, 17)])
def test_buckets_tile_a_week_without_gap_or_overlap(tf: str, first_day: int) -> None:
    week_end = first_day + 7 * 24 * HOUR_MS
    start = bucket_start(first_day, tf, DAY_START)
    assert start == first_day
    while start < week_end:
        end = bucket_end(start, tf, NEXT_DAY_START)
        if tf == "1d":
            assert end == NEXT_DAY_START(start)  # 23 or 25 hours on a DST change
        else:
            assert start < end <= start + TF_MS[tf]
        # every minute of [start, end) falls in this bucket, and the next one starts at end
        assert bucket_start(end - MINUTE_MS, tf, DAY_START) == start
        assert bucket_start(end, tf, DAY_START) == end
        start = end


def test_price_basis_of_a_quote() -> None:
    assert PRICE_BASES == ("mid", "bid", "ask")
    assert basis_price(1.1000, 1.1002, "mid") == pytest.approx(1.1001)
    assert basis_price(1.1000, 1.1002, "bid") == 1.1000
    assert basis_price(1.1000, 1.1002, "ask") == 1.1002


def minute(open_time: int, o: float, h: float, low: float, c: float, ticks: int,
           synthetic: bool = False) -> Bar:
    return Bar("EURUSD", "1m", open_time, open_time + MINUTE_MS - 1, o, h, low, c, float(ticks),
               ticks, True, synthetic, "tick")


def test_derived_bar_is_first_open_extremes_last_close_and_summed_ticks() -> None:
    start = utc(2026, 1, 14, 13, 45)
    minutes = [minute(start, 1.2, 1.3, 1.1, 1.25, 4),
               minute(start + MINUTE_MS, 1.25, 1.25, 1.25, 1.25, 0, synthetic=True),
               minute(start + 2 * MINUTE_MS, 1.24, 1.35, 1.0, 1.31, 6)]
    bar = derive("EURUSD", "15m", start, minutes, "rebuilt")
    assert bar == Bar("EURUSD", "15m", start, start + TF_MS["15m"] - 1, 1.2, 1.35, 1.0, 1.31,
                      10.0, 10, True, False, "rebuilt")


def test_derived_bar_is_synthetic_only_when_every_minute_was() -> None:
    start = utc(2026, 1, 14, 13, 45)
    flat = [minute(start + i * MINUTE_MS, 1.2, 1.2, 1.2, 1.2, 0, synthetic=True)
            for i in range(3)]
    assert derive("EURUSD", "5m", start, flat, "derived").synthetic
    with pytest.raises(ValueError):
        derive("EURUSD", "5m", start, [], "derived")
