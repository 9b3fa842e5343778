"""tick_aggregator: the aggregation rules as pure code, and the actor through crashes."""

from __future__ import annotations

import datetime
import math
import random
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.tick_aggregator import Aggregator
from config.calendar import load_calendar
from protocol.market import MINUTE_MS, TF_MS, TIMEFRAMES, Bar, Tick

CALENDAR = load_calendar()
NEW_YORK = ZoneInfo("America/New_York")
MAX_SYNTH = 5


def utc_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    moment = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


def aggregator(symbols: tuple[str, ...] = ("EURUSD",), grace: int = 1500,
               max_synth: int = MAX_SYNTH) -> Aggregator:
    return Aggregator(list(symbols), list(TIMEFRAMES), "mid", grace, max_synth, CALENDAR)


def tick(ts: int, mid: float, symbol: str = "EURUSD") -> Tick:
    return Tick(symbol, ts, mid - 0.0001, mid + 0.0001)


def warm(agg: Aggregator, before: int, symbol: str = "EURUSD") -> None:
    """A first tick long before ``before``: the partial first minute and the derived buckets
    holding it are behind us."""
    agg.on_tick(tick(before - 3 * 86_400_000, 1.0, symbol))


def finals(bars: list[Bar]) -> dict[tuple[str, str, int], Bar]:
    result: dict[tuple[str, str, int], Bar] = {}
    for bar in bars:
        assert bar.complete
        assert bar.key not in result, "a final bar emitted twice: {}".format(bar.key)
        result[bar.key] = bar
    return result


# -- the reference: a plain fold written from the rules, sharing no code ------------------------

def reference(ticks: list[Tick], max_synth: int) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    """Final bars the rules of DESIGN.md section 6 produce when only ticks arrive (no clock):
    ``(symbol, tf, open_time) -> (open, high, low, close, tick_count, synthetic)``, prices at
    EURUSD's precision (5 decimals quoted, so 6 for a mid). The first minute seen is partial
    (the aggregator started mid-stream) unless the first tick opens it exactly; a derived bar
    opening before the first whole minute is partial too. Partial bars are never final."""
    accepted: dict[int, list[tuple[int, float]]] = {}
    newest_minute: int | None = None
    for t in ticks:  # arrival order
        minute = t.ts_ms // MINUTE_MS * MINUTE_MS
        if newest_minute is not None and minute < newest_minute:
            continue  # its minute is final already: late
        newest_minute = minute
        accepted.setdefault(minute, []).append((t.ts_ms, round((t.bid + t.ask) / 2, 6)))
    minutes = sorted(accepted)
    if not minutes:
        return {}
    first_whole = ticks[0].ts_ms % MINUTE_MS == 0
    owned_from = minutes[0] if first_whole else minutes[0] + MINUTE_MS
    one: dict[int, tuple[Any, ...]] = {}
    for index, minute in enumerate(minutes[:-1]):  # the newest minute is never final here
        points = accepted[minute]
        prices = [p for _, p in points]
        latest = max(ts for ts, _ in points)
        close = [p for ts, p in points if ts == latest][-1]
        if index > 0 or first_whole:
            one[minute] = (points[0][1], max(prices), min(prices), close, len(points), False)
        gap = 0
        quiet = minute + MINUTE_MS
        while quiet < minutes[index + 1]:
            if CALENDAR.is_open(quiet, "EURUSD"):
                if gap < max_synth:
                    one[quiet] = (close, close, close, close, 0, True)
                gap += 1
            else:
                gap = 0
            quiet += MINUTE_MS
    result: dict[tuple[str, str, int], tuple[Any, ...]] = {
        ("EURUSD", "1m", m): bar for m, bar in one.items()}
    final_minutes = sorted(one)
    for tf in TIMEFRAMES[1:]:
        groups: dict[int, list[int]] = {}
        for m in final_minutes:
            if tf in ("4h", "1d"):
                day = CALENDAR.trading_day_start(m)
                start = day if tf == "1d" else day + (m - day) // TF_MS[tf] * TF_MS[tf]
            else:
                start = m // TF_MS[tf] * TF_MS[tf]
            groups.setdefault(start, []).append(m)
        starts = sorted(groups)
        for position, start in enumerate(starts):
            if start < owned_from:
                continue  # holds the partial first minute, or minutes before the first tick
            last = groups[start][-1]
            if tf == "1d":
                end = CALENDAR.next_trading_day_start(start)
            elif tf == "4h":
                end = min(start + TF_MS[tf], CALENDAR.next_trading_day_start(start))
            else:
                end = start + TF_MS[tf]
            complete = position < len(starts) - 1 or last + MINUTE_MS >= end
            if not complete:
                continue
            bars = [one[m] for m in groups[start]]
            result[("EURUSD", tf, start)] = (
                bars[0][0], max(b[1] for b in bars), min(b[2] for b in bars), bars[-1][3],
                sum(b[4] for b in bars), all(b[5] for b in bars))
    return result


def same(bar: Bar, expected: tuple[Any, ...]) -> bool:
    return (all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(
        (bar.open, bar.high, bar.low, bar.close), expected[:4], strict=True))
        and bar.tick_count == expected[4] and bar.volume == expected[4]
        and bar.synthetic == expected[5])


steps = st.lists(st.one_of(
    st.integers(min_value=0, max_value=20_000),  # ticks within seconds
    st.integers(min_value=-5_000, max_value=-1),  # out of order (may cross a boundary: late)
    st.sampled_from([MINUTE_MS, 2 * MINUTE_MS, 7 * MINUTE_MS, 61 * MINUTE_MS]),  # gaps
    st.integers(min_value=1, max_value=3).map(lambda days: days * 86_400_000),  # weekends
), min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(start=st.integers(min_value=utc_ms(2026, 1, 5, 0), max_value=utc_ms(2026, 12, 20, 0)),
       deltas=steps, seed=st.integers(min_value=0, max_value=2**31))
def test_aggregation_matches_a_reference_fold_for_every_timeframe(
        start: int, deltas: list[int], seed: int) -> None:
    rng = random.Random(seed)
    ts = start - start % MINUTE_MS  # include ticks exactly on boundaries
    ticks: list[Tick] = []
    for delta in deltas:
        ts += delta
        if CALENDAR.is_open(ts, "EURUSD"):
            ticks.append(tick(ts, round(1.08 + rng.random() / 100, 5)))
    agg = aggregator()
    emitted = [bar for t in ticks for bar in agg.on_tick(t)]
    got = finals(emitted)
    expected = reference(ticks, MAX_SYNTH)
    assert set(got) == set(expected)
    for key, bar in got.items():
        assert same(bar, expected[key]), (key, bar, expected[key])
        assert bar.close_time == bar.open_time + TF_MS[bar.tf] - 1


# -- boundaries ---------------------------------------------------------------------------------

def test_a_tick_exactly_at_the_end_of_a_bucket_opens_the_next_bar() -> None:
    agg = aggregator(max_synth=0)
    t0 = utc_ms(2026, 11, 18, 12)
    warm(agg, t0)
    agg.on_tick(tick(t0 - 1, 1.0))
    assert [b.open_time for b in agg.on_tick(tick(t0 + 10, 1.1)) if b.tf == "1m"] == [
        t0 - MINUTE_MS]
    assert agg.on_tick(tick(t0 + MINUTE_MS - 1, 1.2)) == []
    bars = agg.on_tick(tick(t0 + MINUTE_MS, 1.3))
    one = [bar for bar in bars if bar.tf == "1m"]
    assert [(b.open_time, b.open, b.close, b.tick_count) for b in one] == [
        (t0, 1.1, 1.2, 2)]
    assert agg.previews()[0].open_time == t0 + MINUTE_MS
    assert agg.previews()[0].open == 1.3


def test_close_is_the_tick_with_the_latest_event_time_and_open_the_first_arrival() -> None:
    agg = aggregator(max_synth=0)
    t0 = utc_ms(2026, 11, 18, 12)
    warm(agg, t0)
    agg.on_tick(tick(t0 - 1, 1.0))
    for ts, mid in ((t0 + 30_000, 1.2), (t0 + 50_000, 1.4), (t0 + 10_000, 1.0),
                    (t0 + 40_000, 1.3)):
        agg.on_tick(tick(ts, mid))
    bar = agg.on_tick(tick(t0 + MINUTE_MS, 1.5))[0]
    assert (bar.open, bar.high, bar.low, bar.close) == (1.2, 1.4, 1.0, 1.4)


def local_hour(ms: int) -> tuple[int, int]:
    moment = datetime.datetime.fromtimestamp(ms / 1000, NEW_YORK)
    return moment.hour, moment.minute


def test_daily_and_4h_bars_start_at_17_new_york_around_both_dst_changes() -> None:
    for year, month, days in ((2026, 3, (5, 6, 9, 10)), (2026, 10, (27, 30)),
                              (2026, 11, (2, 3))):
        agg = aggregator(max_synth=10_000)
        emitted: list[Bar] = []
        first, last = days[0], days[-1]
        ts = utc_ms(year, month, first, 0)
        end = utc_ms(year, month, last, 23)
        while ts < end:
            if CALENDAR.is_open(ts, "EURUSD"):
                emitted += agg.on_tick(tick(ts, 1.1))
            ts += 10 * MINUTE_MS
        daily = [bar for bar in emitted if bar.tf == "1d"]
        assert daily, (year, month)
        for bar in daily:
            assert local_hour(bar.open_time) == (17, 0), bar
        for bar in (b for b in emitted if b.tf == "4h"):
            day = CALENDAR.trading_day_start(bar.open_time)
            assert (bar.open_time - day) % TF_MS["4h"] == 0
            assert local_hour(day) == (17, 0)


# -- synthetic bars and the clock -----------------------------------------------------------------

def test_a_quiet_minute_in_trading_hours_becomes_one_flat_synthetic_bar() -> None:
    agg = aggregator(grace=1500)
    t0 = utc_ms(2026, 11, 18, 12)
    agg.on_tick(tick(t0 - 30_000, 1.0))  # the partial first minute, skipped
    agg.on_tick(tick(t0 + 5_000, 1.1))
    agg.on_tick(tick(t0 + 20_000, 1.2))
    first = [b for b in agg.on_clock(t0 + MINUTE_MS + 1_500) if b.tf == "1m"]
    assert [(b.open_time, b.synthetic) for b in first] == [(t0, False)]
    quiet = [b for b in agg.on_clock(t0 + 2 * MINUTE_MS + 1_500) if b.tf == "1m"]
    assert len(quiet) == 1
    bar = quiet[0]
    assert (bar.open_time, bar.open, bar.high, bar.low, bar.close) == (
        t0 + MINUTE_MS, 1.2, 1.2, 1.2, 1.2)
    assert bar.synthetic and bar.volume == 0 and bar.tick_count == 0


def test_the_clock_closes_a_minute_only_after_the_grace() -> None:
    agg = aggregator(grace=1500, max_synth=0)
    t0 = utc_ms(2026, 11, 18, 12)
    agg.on_tick(tick(t0 - 30_000, 1.0))  # the partial first minute, skipped
    agg.on_tick(tick(t0 + 5_000, 1.1))
    assert agg.on_clock(t0 + MINUTE_MS + 1_499) == []
    assert [b.tf for b in agg.on_clock(t0 + MINUTE_MS + 1_500)] == ["1m"]
    assert agg.on_tick(tick(t0 + 59_000, 1.3)) == []  # late: its minute is final
    assert agg.counters["late_ticks"] == 1


def test_a_closed_market_yields_no_synthetic_bars() -> None:
    agg = aggregator(max_synth=10_000)
    friday = utc_ms(2026, 11, 20, 21, 58)  # 16:58 New York, two minutes before the close
    agg.on_tick(tick(friday + 1_000, 1.1))  # a partial first minute: skipped
    emitted = agg.on_clock(utc_ms(2026, 11, 22, 12))  # Sunday noon: closed all along
    one = [b for b in emitted if b.tf == "1m"]
    assert [(b.open_time, b.synthetic) for b in one] == [(friday + MINUTE_MS, True)]
    assert agg.counters["partial_minutes_skipped"] == 1


def test_a_gap_longer_than_the_cap_yields_no_more_synthetic_bars_than_the_cap() -> None:
    agg = aggregator(max_synth=5)
    t0 = utc_ms(2026, 11, 18, 12)
    agg.on_tick(tick(t0, 1.1))
    emitted = agg.on_clock(t0 + 60 * MINUTE_MS)
    synthetic = [b for b in emitted if b.tf == "1m" and b.synthetic]
    assert len(synthetic) == 5
    assert agg.counters["synthetic_capped"] > 0


def test_derived_bars_close_when_the_market_closes_inside_them() -> None:
    agg = aggregator(max_synth=0)
    friday = utc_ms(2026, 11, 20, 21, 30)  # 16:30 New York: the 1h and 4h bars run past 17:00
    agg.on_tick(tick(utc_ms(2026, 11, 19, 21), 1.0))  # Thursday: an earlier trading day
    for minute in range(30):
        agg.on_tick(tick(friday + minute * MINUTE_MS, 1.1))
    emitted = agg.on_clock(utc_ms(2026, 11, 20, 22, 5))
    closed = {b.tf: b for b in emitted if b.tf in ("1h", "4h", "1d")}
    assert set(closed) == {"1h", "4h", "1d"}
    assert closed["1d"].open_time == CALENDAR.trading_day_start(friday)


def test_checkpoint_restore_resumes_exactly() -> None:
    rng = random.Random(3)
    t0 = utc_ms(2026, 11, 18, 10)
    ticks = [tick(t0 + i * 1_700 + rng.randint(-900, 900), round(1.1 + rng.random() / 100, 5))
             for i in range(3_000)]
    whole = aggregator()
    expected = [bar for t in ticks for bar in whole.on_tick(t)]
    first = aggregator()
    got = [bar for t in ticks[:1234] for bar in first.on_tick(t)]
    second = aggregator()
    second.restore(first.snapshot())
    got += [bar for t in ticks[1234:] for bar in second.on_tick(t)]
    assert got == expected


# -- through a host, killed mid-stream ------------------------------------------------------------

def test_killed_aggregator_emits_the_same_final_bars_as_an_uninterrupted_run(
        tmp_path: Path, run_dir: str) -> None:
    """SIGKILL the aggregator (placed in a child process) three times during a replay: the
    final bars that reach subscribers, deduplicated by key, are exactly those of an
    uninterrupted aggregation of the same file, and no key has two different finals."""
    import os
    import signal

    from tests.helpers import Probe, bus_status, host_process, wait_for
    from tests.test_fxcm_session import collected, collector, write_ticks

    rng = random.Random(11)
    ts = utc_ms(2026, 11, 18, 9)
    ticks: list[Tick] = []
    for _ in range(40_000):
        ts += rng.choice([50, 120, 400, 900, 2_500])
        symbol = rng.choice(["EURUSD", "XAUUSD"])
        mid = round(1.08 + rng.random() / 100 if symbol == "EURUSD" else 2650 + rng.random(), 5)
        ticks.append(Tick(symbol, ts + rng.randint(-300, 300), mid, round(mid + 0.0002, 5)))
    file = write_ticks(tmp_path / "ticks.csv.gz",
                       [(t.ts_ms, t.symbol, t.bid, t.ask) for t in ticks])
    oracle = aggregator(("EURUSD", "XAUUSD"))
    emitted = [bar for t in ticks for bar in oracle.on_tick(t)]
    oracle.on_replay_finished()  # the end of the file: its last minutes are final too
    emitted += oracle.on_clock(max(t.ts_ms for t in ticks), synthesize=False)
    expected = finals(emitted)

    actors = [collector("bar."),
              {"name": "tick_aggregator", "class": "actors.tick_aggregator:TickAggregator",
               "placement": "process", "mailbox_bounds": {"tick.": 500}},
              {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"}]
    sections: dict[str, Any] = {
                "symbols": ["EURUSD", "XAUUSD"],
                # Paced (about 30 s for the file), so the kills land mid-stream however slow
                # the machine is; at speed 0 the whole file can pass between two polls.
                "broker": {"kind": "replay", "replay": {"file": str(file), "speed": 1000.0}},
                "tick_aggregator": {"max_synth_gap_minutes": MAX_SYNTH},
                "bus": {"checkpoint_every": 150},
                "supervisor": {"backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.2,
                               "max_restarts": 20, "restart_window_seconds": 60.0}}
    with host_process(tmp_path, run_dir, actors, **sections):
        probe = Probe("probe", "ipc://" + os.path.join(run_dir, "bus.sock"))

        def aggregator_view() -> dict[str, Any]:
            view: dict[str, Any] = bus_status(run_dir)["actors"]["tick_aggregator"]
            return view

        for kill in range(3):
            seen = collected(probe, "bar", 150 * (kill + 1), timeout=120)
            assert len(seen) < len(expected) // 2, "the replay ended before the kill"
            pid = aggregator_view()["pid"]
            os.kill(pid, signal.SIGKILL)

            def restarted(old: int = pid) -> bool:
                view = aggregator_view()
                return view["pid"] not in (0, old) and view["state"] == "running"

            wait_for(restarted, 60, "the restart")

        def complete() -> dict[tuple[str, str, int], Bar] | None:
            got: dict[tuple[str, str, int], Bar] = {}
            for bar in collected(probe, "bar", 1):
                if bar.complete:
                    previous = got.setdefault(bar.key, bar)
                    assert previous.same_values(bar), "two finals for {}".format(bar.key)
            return got if set(expected) <= set(got) else None

        got = wait_for(complete, 180, "every expected final bar", interval=0.5)
        assert aggregator_view()["restarts"] == 3
        probe.close()
    assert set(got) == set(expected)
    for key, bar in expected.items():
        assert got[key].same_values(bar), (key, got[key], bar)


def test_after_the_session_is_lost_quiet_minutes_are_not_faked_and_partial_bars_are_skipped(
        ) -> None:
    agg = aggregator(max_synth=100)
    t0 = utc_ms(2026, 11, 18, 12)
    warm(agg, t0)
    agg.on_tick(tick(t0 + 1_000, 1.1))
    agg.on_tick(tick(t0 + 61_000, 1.2))  # t0 final; t0+1m forming
    agg.on_session(False)  # disconnected: t0+1m is partial now
    emitted = agg.on_clock(t0 + 30 * MINUTE_MS)
    emitted += agg.on_tick(tick(t0 + 31 * MINUTE_MS + 5_000, 1.3))  # reconnected
    emitted += agg.on_tick(tick(t0 + 32 * MINUTE_MS + 5_000, 1.4))
    one = [b for b in emitted if b.tf == "1m"]
    assert one == []  # nothing for the blind half hour, nothing for the partial minutes
    assert agg.counters["partial_minutes_dropped"] == 1
    emitted = agg.on_tick(tick(t0 + 33 * MINUTE_MS, 1.5))
    assert [(b.open_time, b.synthetic) for b in emitted if b.tf == "1m"] == [
        (t0 + 32 * MINUTE_MS, False)]


# -- gaps, the end of a replay, precision (issue #14) ----------------------------------------------

def emitted_keys(bars: list[Bar]) -> list[tuple[str, int]]:
    return [(bar.tf, bar.open_time) for bar in bars]


def test_a_first_tick_that_opens_its_minute_makes_that_minute_and_buckets_starting_there_whole(
        ) -> None:
    agg = aggregator(max_synth=0)
    t0 = utc_ms(2026, 11, 18, 10)  # 10:00 UTC: 5m, 15m, 30m, 1h and (EST) 4h buckets open here
    agg.on_tick(tick(t0, 1.1))
    bars: list[Bar] = []
    for second in range(1, 15 * 60 + 1):
        bars += agg.on_tick(tick(t0 + second * 1000, 1.1 + second / 1e5))
    keys = emitted_keys(bars)
    assert ("1m", t0) in keys and ("5m", t0) in keys and ("15m", t0) in keys
    assert agg.counters["partial_minutes_skipped"] == 0
    (notice,) = agg.take_notices()
    # nothing before 10:00 was seen: the 1d bucket (from 17:00 New York) is history's
    assert (notice.symbol, notice.from_ms, notice.to_ms) == ("EURUSD", None, t0)


def test_a_tick_half_a_second_past_a_15m_end_closes_the_15m_bar() -> None:
    agg = aggregator(max_synth=0)
    t0 = utc_ms(2026, 11, 18, 10)
    for second in range(0, 15 * 60, 2):
        agg.on_tick(tick(t0 + second * 1000, 1.1))
    bars = agg.on_tick(tick(t0 + 15 * MINUTE_MS + 500, 1.2))
    assert ("15m", t0) in emitted_keys(bars)
    assert ("1m", t0 + 14 * MINUTE_MS) in emitted_keys(bars)


def test_gap_notices_name_the_minutes_and_buckets_left_to_history() -> None:
    agg = aggregator(max_synth=100)
    t0 = utc_ms(2026, 11, 18, 12)
    agg.on_tick(tick(t0 + 1_000, 1.1))  # a fresh start inside 12:00: the minute is partial
    assert [(n.from_ms, n.to_ms) for n in agg.take_notices()] == [(None, t0 + MINUTE_MS)]
    for second in range(61, 181, 5):
        agg.on_tick(tick(t0 + second * 1000, 1.1))  # 12:01 final, 12:02 forming
    agg.on_session(False)  # lost inside 12:02: 12:02 was not seen whole
    assert agg.take_notices() == []  # the end of the gap is not known yet
    bars = agg.on_tick(tick(t0 + 7 * MINUTE_MS + 30_000, 1.2))  # back inside 12:07
    assert bars == []
    (notice,) = agg.take_notices()
    assert (notice.from_ms, notice.to_ms) == (t0 + 2 * MINUTE_MS, t0 + 8 * MINUTE_MS)
    later = []
    for second in range(0, 9 * 60, 5):
        later += agg.on_tick(tick(t0 + 8 * MINUTE_MS + second * 1000, 1.3))
    keys = emitted_keys(later)
    # the 5m 12:05 bucket holds gap minutes: not from here; 12:10 is whole again
    assert ("5m", t0 + 5 * MINUTE_MS) not in keys and ("5m", t0 + 10 * MINUTE_MS) in keys
    assert ("1m", t0 + 7 * MINUTE_MS) not in keys and ("1m", t0 + 8 * MINUTE_MS) in keys


def test_the_end_of_a_replay_closes_the_last_minute_and_what_the_weekly_close_ends() -> None:
    agg = aggregator(max_synth=100)
    thursday = utc_ms(2026, 11, 19, 21)  # a trading day before the one that ends the week
    agg.on_tick(tick(thursday + 1_000, 1.0))
    friday = utc_ms(2026, 11, 20, 21, 57)  # 16:57 New York
    for second in range(0, 179):
        agg.on_tick(tick(friday + second * 1000, 1.1 + second / 1e5))
    agg.on_replay_finished()
    # a tick still on its way when the end was said: not yet
    agg.on_tick(tick(friday + 179 * 1000, 1.2))
    assert agg.on_clock(friday + 179 * 1000, synthesize=False) == []
    bars = agg.on_clock(friday + 179 * 1000, synthesize=False)  # no tick since the last clock
    keys = emitted_keys(bars)
    day = CALENDAR.trading_day_start(friday)
    assert ("1m", friday + 2 * MINUTE_MS) in keys
    assert ("1d", day) in keys and ("4h", day + 5 * TF_MS["4h"]) in keys
    assert ("1h", utc_ms(2026, 11, 20, 21)) in keys
    last = next(b for b in bars if b.tf == "1m" and b.open_time == friday + 2 * MINUTE_MS)
    assert last.close == 1.2 and last.tick_count == 60
    assert agg.on_clock(friday + 20 * MINUTE_MS, synthesize=False) == []


def test_a_replay_clock_closes_minutes_but_makes_no_synthetic_ones() -> None:
    agg = aggregator(max_synth=100)
    t0 = utc_ms(2026, 11, 18, 12)
    agg.on_tick(tick(t0 - 30_000, 1.0))
    agg.on_tick(tick(t0 + 5_000, 1.1))
    bars = agg.on_clock(t0 + 10 * MINUTE_MS, synthesize=False)
    assert emitted_keys(bars) == [("1m", t0)]
    # the data goes on: the quiet minutes in between become synthetic then
    bars = agg.on_tick(tick(t0 + 12 * MINUTE_MS + 1_000, 1.2))
    assert [b.open_time for b in bars if b.tf == "1m" and b.synthetic] == [
        t0 + minute * MINUTE_MS for minute in range(1, 12)]


def test_bars_carry_the_instruments_precision_and_keep_it_through_a_restore() -> None:
    from protocol.market import Instrument

    agg = aggregator(("EURUSD", "USDJPY"))
    t0 = utc_ms(2026, 11, 18, 12)
    for symbol in ("EURUSD", "USDJPY"):
        agg.on_tick(Tick(symbol, t0 - 1_000, 1.0, 1.0))
    agg.on_tick(Tick("EURUSD", t0 + 1_000, 1.10328, 1.1033))  # mid 1.1032899999999999
    agg.on_tick(Tick("USDJPY", t0 + 1_000, 151.2031, 151.2062))  # mid 151.20465
    agg.on_instrument(Instrument("USDJPY", 2, 0.01, "USD/JPY", True))  # the broker says 2
    restored = aggregator(("EURUSD", "USDJPY"))
    restored.restore(agg.snapshot())
    bars = restored.on_clock(t0 + MINUTE_MS + 1_500)
    one = {b.symbol: b for b in bars if b.tf == "1m"}
    assert repr(one["EURUSD"].close) == "1.10329"
    assert repr(one["USDJPY"].close) == "151.205"  # at 2 + 1 decimals, not the default 3 + 1
