"""snapshotter: the price book as pure logic with the clocks injected, then the actor in a real
host fed by the simulated broker: cadence, one snapshot per symbol per cycle, tick_ts <= snap_ts,
and its price_stream telemetry."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from actors.snapshotter import OK, STALE, STOPPED, WAITING, PriceBook, Snapshotter
from bus import ipc_endpoint
from protocol.errors import ConfigError
from protocol.market import PriceSnapshot, Tick, tick_topic
from protocol.messages import from_wire
from tests.helpers import Probe, host_in_thread, open_calendar, wait_for

T0 = 1_795_000_000.0  # a wall time in seconds


def book(stale_seconds: float = 30.0) -> PriceBook:
    return PriceBook(3.0, stale_seconds, started_mono=100.0)


def tick(symbol: str, ts: float, bid: float, ask: float) -> Tick:
    return Tick(symbol, int(ts * 1000), bid, ask)


# -- the price book -------------------------------------------------------------------------------

def test_a_cycle_publishes_the_newest_quote_of_each_symbol_once() -> None:
    prices = book()
    prices.update(tick("EURUSD", T0 - 2, 1.1000, 1.1002), 100.1)
    prices.update(tick("EURUSD", T0 - 1, 1.1001, 1.1003), 100.2)
    prices.update(tick("XAUUSD", T0 - 1.5, 4000.0, 4000.4), 100.3)
    snapshots = prices.cycle(T0)
    assert snapshots == [
        PriceSnapshot("EURUSD", 1.1001, 1.1003, (1.1001 + 1.1003) / 2, T0 - 1, T0),
        PriceSnapshot("XAUUSD", 4000.0, 4000.4, (4000.0 + 4000.4) / 2, T0 - 1.5, T0)]


def test_a_symbol_without_a_quote_gets_nothing() -> None:
    prices = book()
    assert prices.cycle(T0) == []
    prices.update(tick("EURUSD", T0 - 1, 1.1, 1.2), 100.0)
    assert [snapshot.symbol for snapshot in prices.cycle(T0)] == ["EURUSD"]


def test_an_unchanged_quote_is_published_again_with_its_own_tick_time() -> None:
    prices = book()
    prices.update(tick("EURUSD", T0 - 1, 1.1, 1.2), 100.0)
    first = prices.cycle(T0)[0]
    second = prices.cycle(T0 + 3)[0]
    assert (second.bid, second.ask, second.tick_ts) == (first.bid, first.ask, first.tick_ts)
    assert second.snap_ts == T0 + 3


def test_an_older_tick_does_not_replace_a_newer_quote() -> None:
    prices = book()
    prices.update(tick("EURUSD", T0 - 1, 1.2, 1.3), 100.0)
    assert prices.update(tick("EURUSD", T0 - 2, 1.0, 1.1), 100.1) is False
    assert prices.cycle(T0)[0].bid == 1.2
    assert prices.out_of_order == 1


def test_snap_ts_is_never_before_the_tick_when_the_broker_clock_runs_ahead() -> None:
    prices = book()
    prices.update(tick("EURUSD", T0 + 0.25, 1.1, 1.2), 100.0)
    prices.update(tick("GBPUSD", T0 - 1, 1.3, 1.4), 100.0)
    snapshots = prices.cycle(T0)
    assert {snapshot.snap_ts for snapshot in snapshots} == {T0 + 0.25}
    assert all(snapshot.tick_ts <= snapshot.snap_ts for snapshot in snapshots)
    assert (prices.clock_ahead, prices.max_clock_ahead_seconds) == (1, 0.25)


def test_state_goes_waiting_ok_stale_stopped() -> None:
    prices = book(stale_seconds=30.0)
    assert prices.state(150.0) == WAITING
    assert prices.tick_silence(150.0) == 50.0  # since the start, before any tick
    prices.update(tick("EURUSD", T0, 1.1, 1.2), 200.0)
    assert prices.state(229.0) == OK
    assert prices.state(231.0) == STALE
    assert prices.tick_silence(231.0) == 31.0
    prices.stopped = True
    assert prices.state(231.0) == STOPPED


def test_telemetry_has_the_seeds_price_stream_fields() -> None:
    prices = book()
    prices.update(tick("XAUUSD", T0 - 1, 4209.62, 4210.02), 100.0)
    prices.cycle(T0)
    stream = prices.telemetry(T0 + 2, 101.0)
    assert stream["state"] == OK
    assert stream["symbols"] == ["XAUUSD"]
    assert stream["tick_silence_seconds"] == 1.0
    assert stream["last_snap_ts"] == T0 * 1000.0  # milliseconds, as in seed 001 section 9.1
    assert stream["last_tick_ts"] == (T0 - 1) * 1000.0
    assert stream["symbols_state"]["XAUUSD"]["mid"] == pytest.approx(4209.82)
    assert stream["symbols_state"]["XAUUSD"]["tick_age"] == 3.0


def test_settings_with_stale_below_the_interval_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="snapshotter.stale_seconds"):
        Snapshotter.check_settings({"price_snap_interval_seconds": 3.0, "stale_seconds": 1.0})
    with pytest.raises(ConfigError, match="snapshotter.price_snap_interval_seconds"):
        Snapshotter.check_settings({"price_snap_interval_seconds": 0, "stale_seconds": 1.0})


# -- through a real host --------------------------------------------------------------------------

def collector(*topics: str) -> dict[str, Any]:
    return {"name": "collector", "class": "tests.sample_actors:Collector",
            "settings": {"topics": list(topics)}}


SNAPSHOTTER = {"name": "snapshotter", "class": "actors.snapshotter:Snapshotter"}
SESSION = {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"}


def kept(probe: Probe) -> list[tuple[str, Any]]:
    _, items = probe.client.request("collector", "collected", 0, timeout=30)
    return [(kind, from_wire(kind, body)) for kind, body, _ in items]


def test_snapshot_cadence_over_30_seconds_is_one_per_symbol_every_3_seconds(
        tmp_path: Path, run_dir: str) -> None:
    symbols = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"]
    sections = {"calendar_file": str(open_calendar(tmp_path)), "redis": {"port": 0},
                "symbols": symbols,
                "broker": {"sim": {"tick_rate_per_second": 4.0}},
                "snapshotter": {"price_snap_interval_seconds": 3.0}}
    # the collector first, then the snapshotter, then the producer of ticks
    with host_in_thread(tmp_path, run_dir, [collector("price.snapshot.", "tick."), SNAPSHOTTER,
                                            SESSION], **sections):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"))
        found: list[tuple[str, Any]] = []

        def thirty_seconds_of_snapshots() -> bool:
            nonlocal found
            found = kept(probe)
            times = sorted({body.snap_ts for kind, body in found if kind == "price.snapshot"})
            return len(times) >= 2 and times[-1] - times[0] >= 30.0
        wait_for(thirty_seconds_of_snapshots, 90, "30 s of snapshots", interval=0.5)
        snapshots = [body for kind, body in found if kind == "price.snapshot"]
        ticks = {(body.symbol, body.ts_ms, body.bid, body.ask)
                 for kind, body in found if kind == "tick"}
        first = min(snapshot.snap_ts for snapshot in snapshots)
        window = [s for s in snapshots if first <= s.snap_ts < first + 30.0]
        per_symbol: dict[str, list[float]] = defaultdict(list)
        for snapshot in window:
            per_symbol[snapshot.symbol].append(snapshot.snap_ts)
        counts = {symbol: len(times) for symbol, times in per_symbol.items()}
        print("snapshots per symbol in 30 s:", counts)
        assert set(counts) == set(symbols)
        assert all(9 <= count <= 11 for count in counts.values()), counts
        for symbol, times in per_symbol.items():
            assert len(set(times)) == len(times), "two snapshots of {} in one cycle".format(
                symbol)
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert min(gaps) >= 2.95, (symbol, gaps)
        cycles: dict[float, list[str]] = defaultdict(list)
        for snapshot in snapshots:
            cycles[snapshot.snap_ts].append(snapshot.symbol)
        assert all(len(names) == len(set(names)) for names in cycles.values())
        for snapshot in snapshots:
            assert snapshot.tick_ts <= snapshot.snap_ts
            assert snapshot.mid == pytest.approx((snapshot.bid + snapshot.ask) / 2)
            # the quote is one the broker really sent for that symbol
            assert (snapshot.symbol, round(snapshot.tick_ts * 1000), snapshot.bid,
                    snapshot.ask) in ticks
        probe.close()


def test_status_reports_waiting_then_ok_then_stale_with_per_symbol_state(
        tmp_path: Path, run_dir: str) -> None:
    sections = {"redis": {"port": 0}, "bus": {"status_interval_seconds": 0.2},
                "snapshotter": {"price_snap_interval_seconds": 0.5, "stale_seconds": 1.5}}
    with host_in_thread(tmp_path, run_dir, [SNAPSHOTTER], **sections):
        probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"),
                      ("actor.status.snapshotter", "price.snapshot."))

        def stream_in(state: str) -> Any:
            return lambda received: any(
                kind == "actor.status" and body.get("price_stream", {}).get("state") == state
                for kind, body in received[-3:])
        probe.collect(stream_in(WAITING), 30, "price_stream waiting")
        now = time.time()
        probe.publish(tick_topic("EURUSD"), Tick("EURUSD", int(now * 1000), 1.1, 1.1002), "tick")
        probe.collect(stream_in(OK), 30, "price_stream ok")
        status = [body for kind, body in probe.received if kind == "actor.status"][-1]
        symbol_state = status["price_stream"]["symbols_state"]["EURUSD"]
        assert (symbol_state["bid"], symbol_state["ask"]) == (1.1, 1.1002)
        assert symbol_state["tick_ts"] == int(now * 1000) / 1000.0
        probe.collect(stream_in(STALE), 30, "price_stream stale after 1.5 s without ticks")
        status = [body for kind, body in probe.received if kind == "actor.status"][-1]
        assert status["price_stream"]["tick_silence_seconds"] > 1.5
        samples = status["metrics"]["fxcm_price_snapshots_total"]["samples"]
        assert samples and samples[0][0] == {"symbol": "EURUSD"} and samples[0][1] >= 1
        probe.close()
