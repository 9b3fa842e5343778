"""The replay file as input: bad rows are rejected by line and reason and never crash the session;
a wrong header stops the host at start in one line; the file is read as a stream."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from actors.fxcm_session._replay_input import (
    BLOCK_BYTES,
    LINES_KEPT,
    MAX_LINE_BYTES,
    ReplayIndex,
    RowParser,
    check_header,
    iter_lines,
    read_rows,
)
from config.settings import load_defaults
from protocol.errors import ConfigError
from tests.helpers import (
    REPO_ROOT,
    HostProcess,
    Probe,
    RedisSubscriber,
    bus_status,
    embedded_redis_url,
    host_process,
    wait_for,
    write_config,
)

T = 1795521600000  # 2026-11-24 12:00 UTC, a Tuesday
GOOD = b"%d,EUR/USD,1.1,1.1002\n"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# -- rows, as pure code -----------------------------------------------------------------------

@pytest.mark.parametrize(("line", "reason"), [
    (b"inf,EURUSD,1.1,1.2\n", "time_not_finite"),
    (b"nan,EURUSD,1.1,1.2\n", "time_not_finite"),
    (b"-inf,EURUSD,1.1,1.2\n", "time_not_finite"),
    (b"1e30,EURUSD,1.1,1.2\n", "time_out_of_range"),
    (b"-5,EURUSD,1.1,1.2\n", "time_out_of_range"),
    (b"0,EURUSD,1.1,1.2\n", "time_out_of_range"),
    (b"1795521600,EURUSD,1.1,1.2\n", "time_out_of_range"),  # seconds, not ms
    (b"12ab,EURUSD,1.1,1.2\n", "bad_time"),
    (b"1795521600000.5,EURUSD,1.1,1.2\n", "bad_time"),
    (b",EURUSD,1.1,1.2\n", "bad_time"),
    (b"1795521600000,EUR\xffUSD,1.1,1.2\n", "not_utf8"),
    (b"1795521600000,EURUSD,1.1\n", "column_count"),
    (b"1795521600000,EURUSD,1.1,1.2,9\n", "column_count"),
    (b"1795521600000,,1.1,1.2\n", "bad_symbol"),
    (b"1795521600000,EUR-USD,1.1,1.2\n", "bad_symbol"),
    (b"1795521600000,EURUSD,abc,1.2\n", "bad_price"),
    (b"1795521600000,EURUSD,nan,1.2\n", "bad_price"),
    (b"1795521600000,EURUSD,1.1,inf\n", "bad_price"),
    (b"1795521600000,EURUSD,0,1.2\n", "bad_price"),
    (b"1795521600000,EURUSD,-1.1,1.2\n", "bad_price"),
    (b"1795521600000,EURUSD,1.3,1.2\n", "ask_below_bid"),
])
def test_each_kind_of_bad_row_is_rejected_with_its_reason(line: bytes, reason: str) -> None:
    assert RowParser().parse(line) == reason


def test_good_rows_parse_in_every_accepted_spelling() -> None:
    parser = RowParser()
    assert parser.parse(b"1795521600000,EUR/USD,1.1,1.1002\n") == (T, "EURUSD", 1.1, 1.1002)
    assert parser.parse(b"1795521600000.0,eurusd,1.1,1.1\r\n") == (T, "EURUSD", 1.1, 1.1)
    assert parser.parse(b'1795521600000,"XAU/USD",2400.5,2400.9\n') == (
        T, "XAUUSD", 2400.5, 2400.9)
    assert parser.parse(b"\n") is None
    assert parser.parse(b"   \r\n") is None


def test_a_line_with_a_200_kb_field_is_skipped_in_bounded_pieces(tmp_path: Path) -> None:
    huge = b"%d,EURUSD,1.1," % T + b"9" * 200_000 + b"\n"
    file = write(tmp_path / "t.csv", b"ts_ms,symbol,bid,ask\n" + GOOD % T + huge + GOOD % (T + 1))
    with open(file, "rb") as handle:
        handle.readline()
        lines = list(iter_lines(handle))
    assert [(number, raw is None) for number, raw in lines] == [(2, False), (3, True), (4, False)]
    assert all(raw is None or len(raw) <= MAX_LINE_BYTES for _, raw in lines)


def test_the_index_counts_every_rejection_and_keeps_the_first_line_numbers(
        tmp_path: Path) -> None:
    body = [GOOD % T]
    body += [b"nan,EURUSD,1.1,1.2\n"] * 12  # lines 3..14
    body += [b"\xff\xfe,EURUSD\n", b"\n", GOOD % (T + 5), b"1e30,EURUSD,1.1,1.2\n"]
    file = write(tmp_path / "t.csv.gz", b"ts_ms,symbol,bid,ask\n" + b"".join(body))
    index = ReplayIndex(str(file))
    assert index.rows == 2 and index.lines == len(body)
    assert index.first_ts == T and index.last_ts == T + 5
    assert index.rejections.counts == {"time_not_finite": 12, "not_utf8": 1,
                                       "time_out_of_range": 1}
    assert index.rejections.lines["time_not_finite"] == list(range(3, 3 + LINES_KEPT))
    assert index.rejections.lines["not_utf8"] == [15]
    assert index.rejections.lines["time_out_of_range"] == [18]
    assert list(index.symbols["EURUSD"].times) == [T, T + 5]
    # The stream hands over exactly the valid rows, at their positions (data lines from 0).
    assert [(position, row) for position, row in read_rows(str(file)) if row is not None] == [
        (0, (T, "EURUSD", 1.1, 1.1002)), (15, (T + 5, "EURUSD", 1.1, 1.1002))]


def test_the_stream_after_the_index_hands_over_what_the_checked_reader_finds(
        tmp_path: Path) -> None:
    """The stream skips the lines the index rejected and parses the rest without checking
    again: the same rows at the same positions, across block edges and overlong lines."""
    lines = []
    for i in range(5000):
        if i % 997 == 5:
            lines.append(b"%d,EURUSD,1.1," % (T + i) + b"8" * (BLOCK_BYTES + 100) + b"\n")
        elif i % 101 == 7:
            lines.append(b"nan,EURUSD,1.1,1.2\n")
        elif i % 89 == 3:
            lines.append(b"\n")
        else:
            lines.append(b"%d,%s,1.1,1.1002\n" % (T + i, [b"EUR/USD", b"XAUUSD"][i % 2]))
    lines.append(b"%d,EURUSD,1.1,1.1002" % (T + 9999))  # no newline at the end
    file = write(tmp_path / "t.csv.gz", b"ts_ms,symbol,bid,ask\n" + b"".join(lines))
    index = ReplayIndex(str(file))
    checked = list(read_rows(str(file)))
    assert list(index.read_rows()) == checked
    assert len(checked) == len(lines) == index.lines
    assert [row for _, row in checked if row is not None][-1] == (T + 9999, "EURUSD", 1.1,
                                                                  1.1002)
    assert list(index.read_rows(4000)) == checked[4000:]


def test_rows_out_of_time_order_are_indexed_in_time_order(tmp_path: Path) -> None:
    rows = b"".join(GOOD % (T + offset) for offset in (5, 1, 3, 1))
    index = ReplayIndex(str(write(tmp_path / "t.csv", b"ts_ms,symbol,bid,ask\n" + rows)))
    assert list(index.symbols["EURUSD"].times) == [T + 1, T + 1, T + 3, T + 5]


@pytest.mark.parametrize(("data", "shown"), [
    (b"", "empty or no header"),
    (b"\n" + GOOD % T, "empty or no header"),
    (b"time,sym,b,a\n" + GOOD % T, "got 'time,sym,b,a'"),
    (b"ts_ms,symbol,bid\n", "got 'ts_ms,symbol,bid'"),
    (GOOD % T, "got '1795521600000,EUR/USD,1.1,1.1002'"),
    (b"ts_ms,symbol,\xffbid,ask\n", "not UTF-8"),
])
@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_a_wrong_or_empty_header_is_refused_in_one_line(
        tmp_path: Path, data: bytes, shown: str, name: str) -> None:
    file = write(tmp_path / name, data)
    with pytest.raises(ConfigError) as caught:
        check_header(str(file))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("broker.replay.file: ")
    assert str(file) in message and shown in message and "ts_ms,symbol,bid,ask" in message


def test_a_header_with_a_bom_spaces_or_quotes_is_accepted(tmp_path: Path) -> None:
    file = write(tmp_path / "t.csv", '\ufeff"ts_ms", symbol ,bid,ASK\r\n'.encode() + GOOD % T)
    check_header(str(file))
    assert ReplayIndex(str(file)).rows == 1


def test_a_file_that_is_not_gzip_behind_a_gz_name_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "t.csv.gz"
    file.write_bytes(b"ts_ms,symbol,bid,ask\n" + GOOD % T)
    with pytest.raises(ConfigError, match="broker.replay.file: .*cannot read it"):
        check_header(str(file))


def test_indexing_and_streaming_a_file_take_memory_proportionate_to_its_rows(
        tmp_path: Path) -> None:
    count = 200_000
    symbols = [b"EUR/USD", b"GBP/USD", b"XAU/USD", b"USD/JPY"]
    data = b"ts_ms,symbol,bid,ask\n" + b"".join(
        b"%d,%s,1.%05d,1.%05d\n" % (T + i, symbols[i % 4], i % 90000, i % 90000 + 2)
        for i in range(count))
    file = write(tmp_path / "big.csv", data)
    # Measured in a process of its own: tracemalloc counts every thread's allocations, and
    # threads left by earlier tests in this process would be counted too.
    script = """
import json, sys, tracemalloc
from actors.fxcm_session._replay_input import ReplayIndex, read_rows
tracemalloc.start()
index = ReplayIndex(sys.argv[1])
_, index_peak = tracemalloc.get_traced_memory()
tracemalloc.reset_peak()
start, _ = tracemalloc.get_traced_memory()
streamed = sum(1 for _, row in read_rows(sys.argv[1]) if row is not None)
_, stream_peak = tracemalloc.get_traced_memory()
print(json.dumps([index.rows, streamed, index_peak, start, stream_peak]))
"""
    result = subprocess.run([sys.executable, "-c", script, str(file)], cwd=str(REPO_ROOT),
                            stdout=subprocess.PIPE, text=True, timeout=100, check=True)
    rows, streamed, index_peak, start, stream_peak = json.loads(result.stdout)
    assert rows == streamed == count
    # The index is three typed arrays: 24 bytes a row (arrays grow by up to an eighth), far
    # below the file's own ~38 bytes a row; the old list-of-tuples reader held ~300.
    assert index_peak < count * 24 * 1.5 + 2_000_000, index_peak
    # Streaming holds a line at a time, whatever the file's size.
    assert stream_peak - start < 2_000_000, stream_peak - start


# -- through a host ---------------------------------------------------------------------------

def session_only(file: Path, speed: float = 0.0) -> dict[str, Any]:
    return {"symbols": ["EURUSD"],
            "broker": {"kind": "replay", "replay": {"file": str(file), "speed": speed}},
            "bus": {"status_interval_seconds": 0.2}}


def test_the_host_refuses_a_replay_file_with_a_wrong_header_at_start_in_one_line(
        tmp_path: Path, run_dir: str) -> None:
    file = write(tmp_path / "ticks.csv", b"time,pair,b,a\n" + GOOD % T)
    actors = [{"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"}]
    host = HostProcess(write_config(tmp_path, run_dir, actors, **session_only(file)), run_dir,
                       tmp_path / "host.log")
    try:
        assert host.wait(60) == 2
    finally:
        host.stop()
    errors = [line for line in host.output().splitlines() if "broker.replay.file" in line]
    assert len(errors) == 1, host.output()
    assert "the header must be ts_ms,symbol,bid,ask, got 'time,pair,b,a'" in errors[0]
    assert "Traceback" not in host.output()


def metrics_text(run_dir: str) -> str:
    with open(os.path.join(run_dir, "host.json")) as handle:
        port = json.load(handle)["http_port"]
    with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(port), timeout=10) as page:
        text: str = page.read().decode()
        return text


@pytest.mark.parametrize("placement", ["thread", "process"])
def test_bad_rows_never_crash_the_session_and_are_counted_on_metrics(
        tmp_path: Path, run_dir: str, placement: str) -> None:
    bad = [b"inf,EURUSD,1.1,1.2\n", b"nan,EURUSD,1.1,1.2\n", b"1e30,EURUSD,1.1,1.2\n",
           b"-5,EURUSD,1.1,1.2\n", b"12ab,EURUSD,1.1,1.2\n", b"%d,EUR\xffUSD,1.1,1.2\n" % T,
           b"%d,EURUSD,1.1," % T + b"7" * 200_000 + b"\n", b"%d,EURUSD,1.1\n" % T,
           b"%d,EURUSD,abc,1.2\n" % T, b"%d,EURUSD,1.3,1.2\n" % T]
    good = [GOOD % (T + i) for i in range(3)]
    data = good[0] + b"".join(bad) + good[1] + good[2]
    file = write(tmp_path / "ticks.csv.gz", b"ts_ms,symbol,bid,ask\n" + data)
    actors: list[dict[str, Any]] = [{"name": "collector", "class": "tests.sample_actors:Collector",
               "settings": {"topics": ["tick."]}},
              {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession",
               "placement": placement}]
    with host_process(tmp_path, run_dir, actors, **session_only(file)) as host:
        probe = Probe("probe", "ipc://" + os.path.join(run_dir, "bus.sock"),
                      ("actor.status.fxcm_session",))

        def status() -> dict[str, Any]:
            bodies = probe.bodies("actor.status")
            return bodies[-1] if bodies else {}

        probe.collect(lambda _: status().get("broker", {}).get("finished"), 60,
                      "the replay to finish")
        rejected = status()["broker"]["input"]["rejected"]
        assert rejected["counts"] == {
            "time_not_finite": 2, "time_out_of_range": 2, "bad_time": 1, "not_utf8": 1,
            "line_too_long": 1, "column_count": 1, "bad_price": 1, "ask_below_bid": 1}
        assert rejected["lines"]["time_not_finite"] == [3, 4]
        assert rejected["lines"]["line_too_long"] == [9]
        _, kept = probe.client.request("collector", "collected", 0, timeout=30)
        assert [body[1] for kind, body, _ in kept if kind == "tick"] == [T, T + 1, T + 2]
        text = wait_for(lambda: next((m for m in [metrics_text(run_dir)]
                                      if "fxcm_replay_rejected_rows_total" in m), ""),
                        30, "the rejections on /metrics")
        assert 'fxcm_replay_rejected_rows_total{reason="time_not_finite"} 2.0' in text
        assert 'fxcm_replay_rejected_rows_total{reason="line_too_long"} 1.0' in text
        assert bus_status(run_dir)["actors"]["fxcm_session"]["restarts"] == 0
        probe.close()
        assert "Traceback" not in host.output()


def test_a_file_without_a_valid_row_streams_nothing_and_never_shows_1970(
        tmp_path: Path, run_dir: str) -> None:
    file = write(tmp_path / "ticks.csv", b"ts_ms,symbol,bid,ask\nnan,EURUSD,1,2\n0,EURUSD,1,2\n")
    actors: list[dict[str, Any]] = load_defaults()["actors"]
    sections = dict(session_only(file), cache={"dir": str(tmp_path / "cache")},
                    heartbeat={"interval_seconds": 0.5,
                                                   "market_status_interval_seconds": 0.5,
                                                   "status_interval_seconds": 0.5})
    with host_process(tmp_path, run_dir, actors, **sections) as host:
        redis = RedisSubscriber(embedded_redis_url(run_dir),
                                ["fxcm:heartbeat", "fxcm:market_status", "fxcm:status"])
        try:
            probe = Probe("probe", "ipc://" + os.path.join(run_dir, "bus.sock"),
                          ("actor.status.fxcm_session",))
            probe.collect(lambda _: any(
                body.get("session_reason") == "replay file has no valid row"
                for body in probe.bodies("actor.status")), 60, "the session idle, saying why")
            status = probe.bodies("actor.status")[-1]
            assert status["session_state"] == "IDLE"
            assert status["clock_skew"]["clock_published_ms"] is None  # no clock at all
            assert status["broker"]["input"]["rejected"]["counts"] == {
                "time_not_finite": 1, "time_out_of_range": 1}
            probe.close()
            redis.wait("fxcm:market_status", lambda got: len(got) >= 1, 60, "market status")
            redis.wait("fxcm:heartbeat", lambda got: len(got) >= 2, 60, "heartbeats")
            seen = [data for _, _, data in redis.snapshot()]
        finally:
            redis.close()
        assert not any(b"1970" in data for data in seen), [d for d in seen if b"1970" in d]
        assert "1970" not in host.output()


def test_the_replay_broker_module_runs_on_python37(python37: str, tmp_path: Path) -> None:
    file = write(tmp_path / "t.csv.gz", b"ts_ms,symbol,bid,ask\n" + GOOD % T
                 + b"inf,EURUSD,1,2\n" + GOOD % (T + 1))
    code = ("import json, sys; from actors.fxcm_session._replay_input import ReplayIndex, "
            "read_rows; i = ReplayIndex(sys.argv[1]); "
            "print(json.dumps([i.rows, i.rejections.status(), "
            "[r for _, r in read_rows(sys.argv[1]) if r]]))")
    done = subprocess.run([python37, "-c", code, str(file)], cwd=str(REPO_ROOT),
                          capture_output=True, timeout=60, check=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    rows, rejected, streamed = json.loads(done.stdout)
    assert rows == 2 and rejected == {"counts": {"time_not_finite": 1},
                                      "lines": {"time_not_finite": [3]}}
    assert streamed == [[T, "EURUSD", 1.1, 1.1002], [T + 1, "EURUSD", 1.1, 1.1002]]
    assert sys.version_info >= (3, 10)  # this side is the host's interpreter
