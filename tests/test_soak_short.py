"""The soak (tests/soak): its verdict rules on made-up series, and a short real run through a
Redis outage. The long runs are ``make soak``; this keeps the runner itself working."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.soak._analysis import RunInfo, analyse, summary
from tests.soak._runner import seconds
from tests.soak._sample import BarArrival, Row, descendants, proc_figures

REPO_ROOT = Path(__file__).resolve().parents[1]


def info(**changes: Any) -> RunInfo:
    base = RunInfo(duration=600.0, warmup=60.0, rate=1000.0, symbols=2, judged=["host"],
                   reported=["redis-server"], actors=["tick_aggregator"], host_exit=0,
                   final_status={"actors": {"tick_aggregator": {"restarts": 0}},
                                 "router": {"dead_letters": 0}})
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def rows(count: int = 600, rss: Any = None, fds: Any = None, tick_age: Any = None
         ) -> list[Row]:
    """One sample a second; each figure a function of t (flat by default, with a wobble)."""
    result = []
    for t in range(count):
        result.append({
            "t": float(t), "phase": "warmup" if t < 60 else "run",
            "rss_mb.host": rss(t) if rss else 100.0 + (t % 7) * 0.3,
            "fds.host": fds(t) if fds else 40 + (t % 3 == 0),
            "threads.host": 16,
            "depth.tick_aggregator": t % 5,
            "tick_age_ms": tick_age(t) if tick_age else 40.0 + t % 11,
            "bar_lag_s": float(t % 60),
        })
    return result


def bars(latency: float = 30.0) -> list[BarArrival]:
    return [BarArrival(symbol, minute * 60_000, float(minute * 60), latency)
            for minute in range(1, 10) for symbol in ("EURUSD", "XAUUSD")]


def failed(samples: list[Row], arrivals: list[BarArrival], run: RunInfo) -> set[str]:
    windows, checks = analyse(samples, arrivals, run)
    assert "VERDICT" in summary(samples, arrivals, run, windows, checks)
    return {check.name for check in checks if not check.ok}


def test_a_flat_run_passes() -> None:
    assert failed(rows(), bars(), info()) == set()


def test_memory_growing_past_ten_percent_fails_and_noise_does_not() -> None:
    # 100 MiB growing 20 MiB over the judged part: past 10% + 5 MiB
    assert failed(rows(rss=lambda t: 100.0 + t / 20.0), bars(), info()) == {"memory host"}
    # a start-up step inside the warm-up is not growth
    assert failed(rows(rss=lambda t: 60.0 if t < 30 else 100.0), bars(), info()) == set()


def test_a_leaked_descriptor_per_minute_fails() -> None:
    assert failed(rows(fds=lambda t: 40 + t // 60), bars(), info()) == {"fds host"}


def test_drifting_lag_and_missing_or_repeated_bars_fail() -> None:
    assert failed(rows(tick_age=lambda t: 40.0 + t), bars(), info()) == {"lag tick_age_ms"}
    gappy = [bar for bar in bars() if not (bar.symbol == "EURUSD" and bar.open_time == 300_000)]
    assert failed(rows(), gappy, info()) == {"bars on Redis"}
    assert failed(rows(), bars(), info(duplicate_bars=[("EURUSD", 60_000)])) == {"bars on Redis"}


def test_restarts_and_an_undrained_outage_fail() -> None:
    restarted = {"actors": {"tick_aggregator": {"restarts": 1}}, "router": {"dead_letters": 0}}
    assert failed(rows(), bars(), info(final_status=restarted)) == {"restarts"}
    assert "outage drained" in failed(rows(), bars(), info(outage_start=200.0,
                                                           outage_end=300.0))


def test_durations_and_proc_readers() -> None:
    assert [seconds(text) for text in ("600", "90s", "30m", "1.5h")] == [600, 90, 1800, 5400]
    import os

    figures = proc_figures(os.getpid())
    assert figures is not None and figures.rss_mb > 1 and figures.fds > 0
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert child.pid in descendants(os.getpid())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


@pytest.mark.timeout(120)
def test_a_short_soak_through_a_redis_outage_passes(tmp_path: Path) -> None:
    work = tmp_path / "soak"
    # 16 s of warm-up: the host's heap still grows while it publishes its warmup history
    result = subprocess.run(
        [sys.executable, "-m", "tests.soak", "--duration", "40", "--warmup", "16",
         "--redis-outage", "10", "--work-dir", str(work)],
        cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=110,
        check=False)
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output
    assert "VERDICT: PASS" in output
    with open(work / "samples.csv", newline="", encoding="utf-8") as handle:
        samples = list(csv.DictReader(handle))
    assert len(samples) >= 35
    phases = {row["phase"] for row in samples}
    assert {"warmup", "run", "outage", "after"} <= phases
    during = [row for row in samples if row["phase"] == "outage"]
    assert all(row["rss_mb.host"] and row["rss_mb.tick_aggregator"] for row in samples)
    assert not any(row["rss_mb.redis-server"] for row in during[1:-1])  # Redis was away
    assert int(samples[-1]["ticks"]) > 10_000
