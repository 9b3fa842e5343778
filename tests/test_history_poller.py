"""history_poller: the bar store, warmup after downtime, gap repair and the commands."""

from __future__ import annotations

import datetime
import json
import os
import random
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from actors.fxcm_session._sim import SimMarket
from actors.history_poller import BarStore
from bus import ipc_endpoint
from config.calendar import load_calendar
from protocol.market import MINUTE_MS, TF_MS, Bar, HistoryReply
from tests.helpers import Probe, bus_status, host_process, open_calendar, wait_for
from tests.test_fxcm_session import collected, collector, write_ticks


def utc_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    moment = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


def bar(open_time: int, price: float = 1.1, tf: str = "1m", source: str = "history") -> Bar:
    return Bar("EURUSD", tf, open_time, open_time + TF_MS[tf] - 1, price, price + 0.001,
               price - 0.001, price, 12.0, 12, True, False, source)


# -- the store, as pure code ------------------------------------------------------------------

def test_store_keeps_bars_across_a_reload(tmp_path: Path) -> None:
    store = BarStore(str(tmp_path), 100)
    t0 = utc_ms(2026, 11, 18, 10)
    assert [store.put(bar(t0 + i * MINUTE_MS)) for i in range(5)] == ["stored"] * 5
    again = BarStore(str(tmp_path), 100)
    assert again.load("EURUSD", "1m") == 5
    assert again.bars("EURUSD", "1m") == store.bars("EURUSD", "1m")


def test_store_has_one_final_per_key_and_counts_a_conflict(tmp_path: Path) -> None:
    store = BarStore(str(tmp_path), 100)
    t0 = utc_ms(2026, 11, 18, 10)
    assert store.put(bar(t0, 1.1)) == "stored"
    assert store.put(bar(t0, 1.1, source="tick")) == "duplicate"
    assert store.put(bar(t0, 1.2, source="tick")) == "conflict"
    assert store.get("EURUSD", "1m", t0) == bar(t0, 1.1)
    assert store.counters["conflicts"] == 1


def test_store_keeps_the_newest_max_bars_and_compacts_atomically(tmp_path: Path) -> None:
    store = BarStore(str(tmp_path), 10)
    t0 = utc_ms(2026, 11, 18, 10)
    for i in range(35):
        store.put(bar(t0 + i * MINUTE_MS))
    store.compact_all()
    assert [b.open_time for b in store.bars("EURUSD", "1m")] == [
        t0 + i * MINUTE_MS for i in range(25, 35)]
    assert not os.path.exists(store.path("EURUSD", "1m") + ".tmp")
    lines = Path(store.path("EURUSD", "1m")).read_text().splitlines()
    assert len(lines) == 11  # header + the newest 10


def test_a_truncated_store_file_is_quarantined(tmp_path: Path) -> None:
    store = BarStore(str(tmp_path), 100)
    t0 = utc_ms(2026, 11, 18, 10)
    for i in range(5):
        store.put(bar(t0 + i * MINUTE_MS))
    path = Path(store.path("EURUSD", "1m"))
    path.write_bytes(path.read_bytes()[:-20])  # a crash mid-write
    again = BarStore(str(tmp_path), 100)
    assert again.load("EURUSD", "1m") == 0
    assert again.counters["quarantined"] == 1
    assert not path.exists()
    assert len(list(path.parent.glob("1m.bars.corrupt-*"))) == 1


def test_a_garbled_store_file_is_quarantined(tmp_path: Path) -> None:
    store = BarStore(str(tmp_path), 100)
    t0 = utc_ms(2026, 11, 18, 10)
    for i in range(5):
        store.put(bar(t0 + i * MINUTE_MS))
    path = Path(store.path("EURUSD", "1m"))
    text = path.read_text().replace("1.101", "1.901", 1)
    path.write_text(text)
    again = BarStore(str(tmp_path), 100)
    assert again.load("EURUSD", "1m") == 0
    assert again.quarantined and "corrupt" in again.quarantined[0]


def test_an_io_error_switches_the_store_to_read_only_and_it_keeps_serving(
        tmp_path: Path) -> None:
    (tmp_path / "EURUSD").write_text("a file where the store wants a directory")
    store = BarStore(str(tmp_path), 100)
    t0 = utc_ms(2026, 11, 18, 10)
    assert store.put(bar(t0)) == "stored"
    assert store.read_only and store.counters["io_errors"] >= 1
    assert store.put(bar(t0 + MINUTE_MS)) == "stored"  # in memory, no more IO attempts
    assert [b.open_time for b in store.bars("EURUSD", "1m")] == [t0, t0 + MINUTE_MS]


# -- warmup after downtime, through a host ------------------------------------------------------

def poller(**settings: Any) -> dict[str, Any]:
    return {"name": "history_poller", "class": "actors.history_poller:HistoryPoller",
            "settings": settings}


AGGREGATOR = {"name": "tick_aggregator", "class": "actors.tick_aggregator:TickAggregator"}
SESSION = {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"}


@pytest.mark.timeout(300)
def test_warmup_after_two_hours_of_downtime_fills_the_gap_and_no_key_has_two_finals(
        tmp_path: Path, run_dir: str) -> None:
    calendar_path = open_calendar(tmp_path)
    calendar = load_calendar(str(calendar_path))
    cache = tmp_path / "cache"
    market = SimMarket(5, 2.0, calendar)
    now = int(time.time() * 1000)
    downtime_start = now - now % MINUTE_MS - 120 * MINUTE_MS
    store = BarStore(str(cache), 3000)
    for row in market.bars("EURUSD", "1m", downtime_start - 240 * MINUTE_MS,
                           downtime_start - 1, now, "mid", calendar.trading_day_start):
        store.put(Bar("EURUSD", "1m", int(row[0]), int(row[0]) + MINUTE_MS - 1, row[1],
                      row[2], row[3], row[4], row[5], int(row[5]), True, False, "history"))
    store.compact_all()

    actors = [collector("bar.", "poller.ready"), poller(), AGGREGATOR, SESSION]
    sections: dict[str, Any] = {"symbols": ["EURUSD"], "calendar_file": str(calendar_path),
                "cache": {"dir": str(cache)},
                "broker": {"sim": {"seed": 5, "tick_rate_per_second": 2.0}},
                "history_poller": {"warmup_bars": 400, "poll_seconds": 0.5}}
    with host_process(tmp_path, run_dir, actors, **sections):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))
        ready = collected(probe, "poller.ready", 1, timeout=120)[0]
        live_start = bus_status(run_dir)["actors"]["history_poller"]["state"]
        assert live_start == "running"
        assert ready["published"] >= 110  # about 120 minutes of 1m bars, plus derived

        def edge_repaired() -> list[Bar] | None:
            """Tick aggregation skips its partial first minute; history repairs it."""
            bars = collected(probe, "bar", 1)
            ticks = sorted(b.open_time for b in bars if b.source == "tick" and b.tf == "1m")
            history = {b.open_time for b in bars if b.source == "history" and b.tf == "1m"}
            return bars if ticks and ticks[0] - MINUTE_MS in history else None

        # a live market: the first tick bar is final a minute or two after start
        bars = wait_for(edge_repaired, 240, "the first tick bar and the repaired edge",
                        interval=1.0)
        probe.close()

    finals: dict[tuple[str, str, int], Bar] = {}
    for item in bars:
        if item.complete:
            assert finals.setdefault(item.key, item).same_values(item), item.key
    reloaded = BarStore(str(cache), 3000)
    reloaded.load("EURUSD", "1m")
    stored = {bar.open_time for bar in reloaded.bars("EURUSD", "1m")}
    gap = range(downtime_start, downtime_start + 115 * MINUTE_MS, MINUTE_MS)
    assert [minute for minute in gap if minute not in stored] == []
    history = [b for b in bars if b.source == "history" and b.tf == "1m"]
    assert len(history) >= 115
    derived = {b.tf for b in bars if b.source == "rebuilt"}
    assert {"5m", "15m", "30m", "1h"} <= derived


# -- commands, against a replay (its clock stands still: "now" is exact) -------------------------

def replay_host(tmp_path: Path, run_dir: str, holes: list[int], **poller_settings: Any) -> Any:
    start = utc_ms(2026, 11, 18, 10)
    end = start + 120 * MINUTE_MS
    rng = random.Random(2)
    rows = [(ts, "EURUSD", round(1.1 + rng.random() / 1000, 5), 0.0)
            for ts in range(start, end, 2_000)]
    rows = [(ts, symbol, bid, round(bid + 0.0002, 5)) for ts, symbol, bid, _ in rows]
    file = write_ticks(tmp_path / "ticks.csv", rows)
    cache = tmp_path / "cache"
    store = BarStore(str(cache), 3000)
    for minute in range(start, end - 30 * MINUTE_MS, MINUTE_MS):
        if minute not in holes:
            store.put(bar(minute, source="history"))
    store.compact_all()
    actors = [poller(**poller_settings), SESSION]
    sections: dict[str, Any] = {"symbols": ["EURUSD"], "cache": {"dir": str(cache)},
                "broker": {"kind": "replay", "replay": {"file": str(file), "speed": 0.0}},
                "history_poller": {"warmup_bars": 10, "poll_seconds": 3600.0,
                                   "backfill_min_minutes": 10, "backfill_max_minutes": 60,
                                   "tail_guard_repair_only_when_market_closed": False}}
    return host_process(tmp_path, run_dir, actors, **sections), start, end


def command(probe: Probe, op: str, args: dict[str, Any], timeout: float = 120.0
            ) -> dict[str, Any]:
    """A command as command_handler runs it: answered ``started``, then ``poller.done``."""
    kind, body = probe.client.request("history_poller", "poller." + op, args, timeout=60)
    assert kind == "poller.result", (kind, body)
    if not body.get("started"):
        return dict(body)
    job = body["started"]
    probe.collect(lambda got: any(k == "poller.done" and b.get("job") == job for k, b in got),
                  timeout, "the end of " + job)
    done = next(b for k, b in probe.received if k == "poller.done" and b.get("job") == job)
    return dict(done)


def test_backfill_clamps_its_lookback(tmp_path: Path, run_dir: str) -> None:
    host, start, end = replay_host(tmp_path, run_dir, [])
    with host:
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))
        wide = command(probe, "backfill", {"symbol": "EURUSD", "lookback_minutes": 100_000})
        assert wide["ok"] and wide["result"]["lookback_minutes"] == 60
        assert wide["result"]["clamped"] is True
        narrow = command(probe, "backfill", {"symbol": "EURUSD", "lookback_minutes": 1})
        assert narrow["result"]["lookback_minutes"] == 10 and narrow["result"]["clamped"]
        exact = command(probe, "backfill", {"symbol": "EURUSD", "lookback_minutes": 20})
        assert exact["result"]["lookback_minutes"] == 20
        assert exact["result"]["clamped"] is False
        probe.close()


def test_tail_guard_reports_the_exact_missing_minutes_and_repairs_them(
        tmp_path: Path, run_dir: str) -> None:
    base = utc_ms(2026, 11, 18, 10)
    holes = [base + 17 * MINUTE_MS, base + 18 * MINUTE_MS, base + 55 * MINUTE_MS]
    host, start, end = replay_host(tmp_path, run_dir, holes)
    with host:
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))
        wait_for(lambda: bus_status(run_dir)["actors"]["fxcm_session"]["state"] == "running",
                 30, "the session")

        def audit(repair: bool) -> dict[str, Any]:
            report = command(probe, "tail_guard", {"symbols": ["EURUSD"],
                                                   "window_hours": 2, "repair": repair})
            assert report["ok"], report
            result: dict[str, Any] = report["result"]
            return result

        # the replay clock stops at the file's last tick: wait until it got there
        def at_the_end() -> dict[str, Any] | None:
            result = audit(False)
            return result if result["end_ms"] >= end - 2 * MINUTE_MS else None

        first = wait_for(at_the_end, 60, "the replay to reach its end")
        entry = first["symbols"]["EURUSD"]
        window = range(first["start_ms"], first["end_ms"], MINUTE_MS)
        disk = BarStore(str(tmp_path / "cache"), 3000)  # appends are flushed: what it holds
        disk.load("EURUSD", "1m")
        stored = {bar.open_time for bar in disk.bars("EURUSD", "1m")}
        expected = [m for m in window if m not in stored]
        # the poller repairs what is missing in the 10 minutes before its start (a replay at
        # speed 0 may be anywhere by then): holes 17-18 and 55 cannot both be in that window
        assert set(holes) & set(expected)
        assert [m for start_ms, end_ms in entry["missing_ranges"]
                for m in range(start_ms, end_ms, MINUTE_MS)] == expected
        assert entry["missing_bars"] == len(expected)
        assert entry["far"]["tf_states"]["1m"]["missing_bars"] == len(expected)
        repaired = audit(True)["symbols"]["EURUSD"]
        assert repaired["still_missing"] == 0
        assert repaired["repaired"] == len(expected)
        again = audit(False)["symbols"]["EURUSD"]
        assert again["missing_ranges"] == []
        assert again["far"]["tf_states"]["1m"]["state"] == "ok"
        probe.close()


def test_history_reply_rows_become_bars_on_the_basis() -> None:
    reply = HistoryReply("EURUSD", "5m", "ok", 0.0, "",
                         [[utc_ms(2026, 11, 18, 10), 1.1, 1.2, 1.0, 1.15, 42.0, True]])
    (result,) = reply.to_bars()
    assert result.close_time == result.open_time + 5 * MINUTE_MS - 1
    assert (result.open, result.high, result.low, result.close) == (1.1, 1.2, 1.0, 1.15)
    assert result.volume == 42.0 and result.tick_count == 42 and result.source == "history"


def test_history_rows_are_rounded_to_the_given_precision() -> None:
    """The broker's rows carry float noise; the poller takes them at the instrument's
    precision on the basis (here a mid: 5 + 1 decimals)."""
    reply = HistoryReply("EURUSD", "1m", "ok", 0.0, "", [[utc_ms(2026, 11, 18, 10),
                         1.0999500000000002, 1.1032899999999999, 1.0999, 1.10001, 5.0, True]])
    (result,) = reply.to_bars(digits=6)
    assert [repr(p) for p in (result.open, result.high, result.low, result.close)] == [
        "1.09995", "1.10329", "1.0999", "1.10001"]
    assert reply.to_bars()[0].open == 1.0999500000000002  # no digits: as received


def test_targets_without_tick_aggregation_are_polled_from_history(
        tmp_path: Path, run_dir: str) -> None:
    calendar_path = open_calendar(tmp_path)
    actors = [collector("bar."), poller(), SESSION]
    sections: dict[str, Any] = {
        "symbols": ["EURUSD"], "calendar_file": str(calendar_path),
        "cache": {"dir": str(tmp_path / "cache")},
        "history_poller": {"targets": "EUR/USD:m1,AUD/USD:m5", "poll_seconds": 0.3,
                           "warmup_bars": 120}}
    with host_process(tmp_path, run_dir, actors, **sections):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))

        def polled() -> list[Bar] | None:
            bars = [b for b in collected(probe, "bar", 1) if b.symbol == "AUDUSD"]
            return bars or None

        bars = wait_for(polled, 60, "AUDUSD 5m bars polled from history", interval=0.5)
        probe.close()
    assert {(b.tf, b.source) for b in bars} == {("5m", "history")}
    assert all(b.complete for b in bars)
    assert len(bars) >= 20  # its lookback: 120 open minutes of 5m bars


# -- gap bookkeeping and the scheduler, as pure code (issue #14) ---------------------------------

def test_a_session_gap_names_its_minutes_and_the_derived_buckets_holding_them() -> None:
    from actors.history_poller._gaps import GapBook
    from protocol.market import BarGap

    book = GapBook(["5m", "15m", "1h"], load_calendar(), delay_ms=250)
    t0 = utc_ms(2026, 11, 18, 12)
    due, owned = book.add(BarGap("EURUSD", t0 + 4 * MINUTE_MS, t0 + 6 * MINUTE_MS), 0)
    assert due == 2
    assert set(book.owned["EURUSD"]) == {("5m", t0), ("5m", t0 + 5 * MINUTE_MS),
                                         ("15m", t0), ("1h", t0)}
    assert owned == 4
    # each minute is due once it has ended, plus the delay, on the pipeline clock
    assert book.status(t0 + 5 * MINUTE_MS + 249)["waiting"] == {"EURUSD": 2}
    assert book.status(t0 + 5 * MINUTE_MS + 250)["due"] == {"EURUSD": 1}
    assert book.pop_due("EURUSD", t0 + 5 * MINUTE_MS + 249) == []
    assert book.pop_due("EURUSD", t0 + 5 * MINUTE_MS + 250) == [t0 + 4 * MINUTE_MS]
    assert book.pop_due("EURUSD", t0 + 7 * MINUTE_MS) == [t0 + 5 * MINUTE_MS]
    assert [b[:2] for b in book.owned_holding("EURUSD", t0 + 9 * MINUTE_MS)] == [
        ("5m", t0 + 5 * MINUTE_MS), ("15m", t0), ("1h", t0)]


def test_a_fresh_start_gap_reaches_back_to_the_longest_bucket_and_leaves_the_warmup_its_part(
        ) -> None:
    from actors.history_poller._gaps import GapBook
    from protocol.market import BarGap

    calendar = load_calendar()
    book = GapBook(["5m", "1d"], calendar, delay_ms=0)
    t0 = utc_ms(2026, 11, 18, 12, 3)
    day = calendar.trading_day_start(t0)
    due, _ = book.add(BarGap("EURUSD", None, t0 + MINUTE_MS), floor_ms=t0 - 2 * MINUTE_MS)
    assert due == 3  # from the warmup's end (the floor) to the partial minute
    assert ("1d", day) in book.owned["EURUSD"] and ("5m", t0 - 3 * MINUTE_MS) in \
        book.owned["EURUSD"]
    assert book.reach_back(t0 + MINUTE_MS) == day


def test_the_scheduler_steps_live_repairs_before_the_warmup_before_commands() -> None:
    from actors.history_poller._jobs import COMMAND, LIVE, POLL, WARMUP, Scheduler

    def job() -> Any:
        yield None

    scheduler = Scheduler()
    poll = scheduler.add("poll", POLL, job())
    command = scheduler.add("backfill", COMMAND, job())
    warmup = scheduler.add("warmup", WARMUP, job())
    assert scheduler.runnable(0.0) is warmup
    live = scheduler.add("repair", LIVE, job())
    assert scheduler.runnable(0.0) is live
    live.not_before = 5.0  # waiting to retry: the next runnable goes meanwhile
    assert scheduler.runnable(1.0) is warmup
    scheduler.remove(warmup)
    assert scheduler.runnable(1.0) is command and scheduler.runnable(6.0) is live
    scheduler.remove(live)
    scheduler.remove(command)
    assert scheduler.runnable(1.0) is poll


def test_not_ready_is_retried_with_backoff_and_then_handed_over_never_as_an_answer() -> None:
    import random as rnd

    from actors.history_poller._jobs import LIVE, RetryPolicy, Scheduler
    from bus import Backoff

    policy = RetryPolicy(3, Backoff(1.0, 30.0, 0.0, rng=rnd.Random(1)))
    item = Scheduler().add("repair", LIVE, iter(()))  # type: ignore[arg-type]
    assert [policy.retry_in(item, "not_ready", 0.5) for _ in range(4)] == [1.0, 2.0, 4.0, None]
    assert policy.retry_in(item, "throttled", 0.7) == 0.7  # the quota's wait, any number of times
    assert policy.retry_in(item, "ok", 0.0) is None and policy.retry_in(item, "error", 3) is None


# -- history that is not ready loses no minute (issue #13, item 2) -------------------------------

@pytest.mark.timeout(180)
def test_history_not_ready_for_a_while_loses_no_minute(tmp_path: Path, run_dir: str) -> None:
    """A hole of five minutes in the store, and history that answers "not ready" to the first
    five requests for it: the poller retries with backoff (counted) and fills every minute;
    none is taken for a quiet minute."""
    calendar_path = open_calendar(tmp_path)
    calendar = load_calendar(str(calendar_path))
    cache = tmp_path / "cache"
    market = SimMarket(5, 2.0, calendar)
    now = int(time.time() * 1000)
    newest = now - now % MINUTE_MS - MINUTE_MS
    hole = [newest - minute * MINUTE_MS for minute in range(20, 25)]
    store = BarStore(str(cache), 3000)
    for row in market.bars("EURUSD", "1m", newest - 50 * MINUTE_MS, newest, now, "mid",
                           calendar.trading_day_start):
        if int(row[0]) not in hole:
            store.put(Bar("EURUSD", "1m", int(row[0]), int(row[0]) + MINUTE_MS - 1, row[1],
                          row[2], row[3], row[4], row[5], int(row[5]), True, False, "history"))
    store.compact_all()
    actors = [collector("bar."), poller(),
              {"name": "fxcm_session", "class": "tests.history_double:ScriptedHistory",
               "settings": {"seed": 5, "calendar_file": str(calendar_path),
                            "not_ready_requests": 5,
                            "not_ready_range": [hole[-1], hole[0] + MINUTE_MS]}}]
    sections: dict[str, Any] = {"symbols": ["EURUSD"], "calendar_file": str(calendar_path),
                                "cache": {"dir": str(cache)},
                                "history_poller": {"warmup_bars": 45, "poll_seconds": 0.5},
                                "bus": {"status_interval_seconds": 0.2}}
    with host_process(tmp_path, run_dir, actors, **sections):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"), ("actor.status.",))

        def filled() -> list[Bar] | None:
            bars = [b for b in collected(probe, "bar", 1) if b.tf == "1m"
                    and b.open_time in hole]
            return bars if len(bars) == len(hole) else None

        bars = wait_for(filled, 120, "the five minutes of the hole from history", interval=0.5)

        def poller_status() -> dict[str, Any] | None:
            probe.pump()
            views = [body for kind, body in probe.received if kind == "actor.status"
                     and body.get("counts", {}).get("history_not_ready")]
            return views[-1] if views else None

        status = wait_for(poller_status, 30, "the poller's counts")
        probe.close()
    assert sorted(b.open_time for b in bars) == sorted(hole)
    assert all(b.source == "history" and b.tick_count > 0 for b in bars)
    counts = status["counts"]
    assert counts["history_not_ready"] >= 5 and counts.get("history_retries", 0) >= 5
    assert counts.get("empty_in_history", 0) == 0


def ready_answer(run_dir: str) -> tuple[int, dict[str, Any]]:
    """What an orchestrator's readiness probe reads: ``/readyz``'s code and reasons."""
    with open(os.path.join(run_dir, "host.json")) as handle:
        port = json.load(handle)["http_port"]
    try:
        with urllib.request.urlopen("http://127.0.0.1:{}/readyz".format(port),
                                    timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.timeout(180)
def test_the_host_is_not_ready_until_the_poller_has_warmed_the_feed_up(
        tmp_path: Path, run_dir: str) -> None:
    # Every actor runs, but without fxcm_session's clock the poller cannot warm the feed up,
    # and an orchestrator must not route consumers to this host.
    with host_process(tmp_path, run_dir, [poller()], cache={"dir": str(tmp_path / "cache")}):
        # still starting, or running before its first status: not ready either way
        code, body = ready_answer(run_dir)
        assert code == 503 and body["ready"] is False, body

        def phase_reported() -> tuple[int, dict[str, Any]] | None:
            answer = ready_answer(run_dir)
            reasons = answer[1]["reasons"]
            return answer if answer[1]["not_running"] == [] and reasons and reasons != [
                "history_poller: no feed phase reported yet"] else None

        code, body = wait_for(phase_reported, 60, "the poller's status")
        assert code == 503 and body["reasons"] == [
            "history_poller: feed phase warmup_cache (waiting for the pipeline clock "
            "(fxcm_session's clock))"], body
