"""Drop-in for the predecessor's consumers: a real host's payloads on a real Redis against the
seed's own JSON examples (key by key, type by type) and against the rules its consumers' code
applies (smc_v1's ingestor, status listener and price stream; the predecessor's ingestor and
debug viewer).

The rules are written out here from reading that code (their code is not used): what each
consumer refuses, and what makes it crash. The fixtures are the seed's examples, verbatim, in
``tests/fixtures/seed``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.host import Host
from config.settings import load_defaults
from tests.helpers import host_in_thread, open_calendar, wait_for

FIXTURES = Path(__file__).with_name("fixtures") / "seed"
SECRET = "compat-secret"
SYMBOLS = ["EURUSD", "XAUUSD"]
# the ohlcv ``source`` words of seed 001 section 1.1
WIRE_SOURCES = ("stream", "tick_agg", "history_s3")

# Keys whose value the seed gives as an int where the predecessor's own types say float
# (a number either way to every consumer): compared as numbers.
NUMBER_KEYS_ENDING = ("_seconds", "range", "avg", "high", "low", "open", "close", "volume",
                      "bid", "ask", "mid", "_ts")
# Keys the predecessor's producer made optional (absent or null when not known): null is a
# fine value for them here.
NULLABLE = {"staleness_seconds", "lag_seconds", "last_bar_close_ms", "tick_silence_seconds",
            "last_snap_ts", "last_tick_ts", "session_open_utc", "session_close_utc",
            "current_open_utc", "current_close_utc", "seconds_to_close", "timezone", "tag",
            "name", "channel", "next_open_utc", "seconds_to_next_open"}
# Maps keyed by a name of the data (session tags): each value follows the first one's shape.
KEYED_MAPS = {"stats"}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))["payload"]


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "dict"


def mismatches(seed: Any, ours: Any, path: str = "") -> list[str]:
    """Where ``ours`` lacks a key of ``seed`` or has another type there (see the rules above).
    Lists: every element of ours against the seed's first."""
    key = path.rsplit(".", 1)[-1].split("[")[0]
    expected, got = kind(seed), kind(ours)
    if got == "null" and (expected == "null" or key in NULLABLE):
        return []
    if expected == "null":
        return []  # the seed shows no value: any type
    if expected in ("int", "float") and got in ("int", "float"):
        if expected == "int" and got == "float" and not key.endswith(NUMBER_KEYS_ENDING):
            return ["{}: the seed has an integer, ours is {!r}".format(path, ours)]
        return []
    if expected != got:
        return ["{}: the seed has {} ({!r}), ours is {} ({!r})".format(
            path, expected, seed, got, ours)]
    problems: list[str] = []
    if expected == "dict":
        if key in KEYED_MAPS:
            shape = next(iter(seed.values()), None)
            for name, value in ours.items():
                problems += mismatches(shape, value, "{}.{}".format(path, name))
            return problems
        for name, value in seed.items():
            where = "{}.{}".format(path, name) if path else name
            if name not in ours:
                problems.append("{}: missing".format(where))
            else:
                problems += mismatches(value, ours[name], where)
    elif expected == "list" and seed:
        for index, value in enumerate(ours):
            problems += mismatches(seed[0], value, "{}[{}]".format(path, index))
    return problems


# -- the consumers' rules, written out -----------------------------------------------------

def smc_status_listener_takes(payload: Any) -> list[str]:
    """smc_v1 data/fxcm_status_listener.py + FxcmAggregatedStatus (pydantic, extra ignored):
    a message it would drop whole."""
    problems = []
    if not isinstance(payload, dict):
        return ["not an object"]
    ts = payload.get("ts")
    if not (isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts < 1e11):
        problems.append("ts must be Unix seconds, got {!r}".format(ts))
    for name in ("process", "market", "price", "ohlcv", "note"):
        if not isinstance(payload.get(name), str):
            problems.append("{} must be a string".format(name))
    session = payload.get("session")
    if session is not None:
        if not isinstance(session, dict):
            return problems + ["session must be an object"]
        for name in ("tag", "name", "state", "timezone", "weekly_open", "weekly_close",
                     "next_open_utc", "current_open_utc", "current_close_utc"):
            if session.get(name) is not None and not isinstance(session[name], str):
                problems.append("session.{} must be a string".format(name))
        for name in ("seconds_to_close", "next_open_seconds", "seconds_to_next_open"):
            value = session.get(name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                problems.append("session.{} must be a number".format(name))
    return problems


def viewer_survives_heartbeat(beat: dict[str, Any]) -> list[str]:
    """The predecessor's tools/debug_viewer.py: what would raise in note_heartbeat or in the
    panels of its ten modes (research notes, section 14)."""
    problems = []
    if not isinstance(beat.get("ts"), str):
        problems.append("ts must be ISO text (a number in ms kills the SUMMARY mode)")
    context = beat.get("context")
    if not isinstance(context, dict):
        return problems + ["context must be an object"]
    for target in context.get("stream_targets") or []:
        if not isinstance(target, dict) or not isinstance(target.get("symbol"), str) \
                or not isinstance(target.get("tf"), str):
            problems.append("stream_targets[] must be objects with string symbol and tf")
    stream = context.get("price_stream")
    if isinstance(stream, dict):
        for name in ("last_snap_ts", "last_tick_ts"):
            value = stream.get(name)
            if value is not None and value > 1e11:
                problems.append("price_stream.{} must be seconds".format(name))
        if stream.get("channel") is not None and not isinstance(stream["channel"], str):
            problems.append("price_stream.channel must be a string")
        if len({type(row.get("symbol")) for row in stream.get("symbols_state") or []}) > 1:
            problems.append("price_stream.symbols_state symbols of mixed types")
    session = context.get("session")
    if session:
        if not isinstance(session, dict):
            return problems + ["session must be an object"]
        for name in ("tag", "timezone", "session_open_utc", "session_close_utc",
                     "weekly_open", "weekly_close"):
            if session.get(name) is not None and not isinstance(session[name], str):
                problems.append("session.{} must be a string".format(name))
        stats = session.get("stats")
        if stats:
            if not isinstance(stats, dict) or not all(isinstance(v, dict)
                                                      for v in stats.values()):
                problems.append("session.stats must be an object of objects")
            else:
                for entry in stats.values():
                    for row in entry.get("symbols") or []:
                        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str) \
                                or not isinstance(row.get("tf"), str):
                            problems.append("session.stats symbols[] need string symbol/tf")
    history = context.get("history")
    if isinstance(history, dict):
        if history.get("priority") and not isinstance(history["priority"], dict):
            problems.append("history.priority must be an object")
        reason = history.get("last_denied_reason")
        if reason and not isinstance(reason, str):
            problems.append("history.last_denied_reason must be a string")
    diag = context.get("diag")
    if isinstance(diag, dict) and isinstance(diag.get("backoff"), dict):
        for name, block in diag["backoff"].items():
            if not isinstance(block, dict):
                problems.append("diag.backoff.{} must be an object".format(name))
    supervisor = context.get("supervisor")
    if isinstance(supervisor, dict):
        counts = supervisor.get("publish_counts") or {}
        if not all(isinstance(v, int) for v in counts.values()):
            problems.append("supervisor.publish_counts must be integers")
        for value in _numbers(supervisor):
            if not math.isfinite(value):
                problems.append("supervisor holds a non-finite number")
    return problems


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


OHLCV_ROOT = {"symbol", "tf", "bars", "source", "sig"}
OHLCV_BAR = {"open_time", "close_time", "open", "high", "low", "close", "volume", "complete",
             "synthetic", "source", "tf", "tick_count", "bar_range", "body_size", "upper_wick",
             "lower_wick", "avg_spread", "max_spread"}


def ingestors_take(text: bytes, secret: str) -> list[str]:
    """smc_v1 data/fxcm_ingestor.py (strict UTF-8, HMAC over the re-serialised parse, an ASCII
    lowercase sig) and the predecessor's fxcm_ingestor.py checklist (seed 001 section 10),
    plus the predecessor's closed key lists (fxcm_schema.py)."""
    payload = json.loads(text.decode("utf-8"))  # smc_v1 decodes strictly
    problems = []
    if set(payload) - OHLCV_ROOT:
        problems.append("root keys beyond the seed's: {}".format(set(payload) - OHLCV_ROOT))
    if not re.fullmatch(r"[A-Z0-9]+", payload["symbol"]) or payload["tf"] not in (
            "1m", "5m", "15m", "30m", "1h", "4h", "1d"):
        problems.append("symbol/tf not in the consumers' spelling")
    if payload.get("source") not in WIRE_SOURCES:
        problems.append("source {!r} is not a seed word".format(payload.get("source")))
    sig = payload.get("sig")
    base = json.dumps({"symbol": payload["symbol"], "tf": payload["tf"],
                       "bars": payload["bars"]}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    expected = hmac.new(secret.encode(), base.encode("utf-8"), hashlib.sha256).hexdigest()
    if not isinstance(sig, str) or not sig.isascii() or sig != expected:
        problems.append("sig is not the HMAC the consumers compute")
    previous = None
    now_ms = time.time() * 1000
    for bar in payload["bars"]:
        if set(bar) - OHLCV_BAR:
            problems.append("bar keys beyond the seed's: {}".format(set(bar) - OHLCV_BAR))
        if not (isinstance(bar["open_time"], int) and isinstance(bar["close_time"], int)):
            problems.append("bar times must be integers")
        if bar["close_time"] < bar["open_time"] or bar["low"] > bar["high"]:
            problems.append("a bar the ingestor calls damaged")
        if not 946684800000 <= bar["open_time"] <= now_ms + 86_400_000:
            problems.append("open_time out of the ingestor's range")
        if previous is not None and bar["open_time"] <= previous:
            problems.append("open_time must increase strictly")
        previous = bar["open_time"]
    return problems


# -- the host ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A whole default host (sim, open calendar) signing ohlcv with FXCM_HMAC_SECRET alone,
    and everything its subscribers received within the first minutes."""
    tmp = tmp_path_factory.mktemp("compat")
    run_dir = tempfile.mkdtemp(prefix="fxcm-c-")
    actors = load_defaults()["actors"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FXCM_HMAC_SECRET", SECRET)
        for name in ("FXCM_HMAC_KID", "FXCM_HMAC_SECRETS_FILE"):
            patch.delenv(name, raising=False)
        with host_in_thread(tmp, run_dir, actors, symbols=SYMBOLS,
                            calendar_file=str(open_calendar(tmp)),
                            cache={"dir": str(tmp / "cache")},
                            broker={"sim": {"tick_rate_per_second": 5.0}},
                            snapshotter={"price_snap_interval_seconds": 0.5},
                            heartbeat={"interval_seconds": 1.0, "status_interval_seconds": 1.0},
                            history_poller={"warmup_bars": 120}) as host:
            yield _collect(host)


def _collect(host: Host) -> dict[str, Any]:
    assert host.redis is not None
    client = redis.Redis.from_url(host.redis.url)
    pubsub = client.pubsub()
    channels = ["fxcm:ohlcv", "fxcm:price_tik", "fxcm:heartbeat", "fxcm:market_status",
                "fxcm:status"]
    pubsub.subscribe(*channels)
    got: dict[str, list[bytes]] = {name: [] for name in channels}

    def listen() -> bool:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            got[message["channel"].decode()].append(message["data"])
        beats = [json.loads(b) for b in got["fxcm:heartbeat"]]
        return (any(b["state"] == "stream" and b["context"].get("history") for b in beats)
                and len(got["fxcm:status"]) >= 2 and bool(got["fxcm:market_status"])
                and len(got["fxcm:price_tik"]) >= 2 and len(got["fxcm:ohlcv"]) >= 3)
    wait_for(listen, 120, "a streaming heartbeat and every channel on Redis", interval=0)
    keys = {name: client.get(name + ":last") for name in (
        "fxcm:heartbeat", "fxcm:status", "fxcm:market_status")}
    pubsub.close()
    client.close()
    return {"channels": got, "keys": keys}


def payloads(feed: dict[str, Any], channel: str) -> list[Any]:
    return [json.loads(data) for data in feed["channels"][channel]]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name,channel", [
    ("status.json", "fxcm:status"), ("heartbeat.json", "fxcm:heartbeat"),
    ("heartbeat_idle.json", "fxcm:heartbeat"), ("market_status.json", "fxcm:market_status"),
    ("price_tik.json", "fxcm:price_tik"), ("ohlcv.json", "fxcm:ohlcv")])
def test_every_payload_has_every_key_of_the_seeds_example_with_its_type(
        feed: dict[str, Any], name: str, channel: str) -> None:
    seed = fixture(name)
    for payload in payloads(feed, channel):
        assert mismatches(seed, payload) == [], (name, payload)


@pytest.mark.timeout(240)
def test_status_has_exactly_the_seeds_keys_and_smc_v1s_listener_takes_every_one(
        feed: dict[str, Any]) -> None:
    for payload in payloads(feed, "fxcm:status"):
        assert set(payload) == {"ts", "process", "market", "price", "ohlcv", "session", "note"}
        assert set(payload["session"]) <= {
            "name", "tag", "state", "current_open_utc", "current_close_utc", "next_open_utc",
            "seconds_to_close", "seconds_to_next_open", "state_detail", "symbols"}
        for row in payload["session"]["symbols"]:
            assert set(row) == {"symbol", "tf", "high", "low", "avg"}
        assert smc_status_listener_takes(payload) == []


@pytest.mark.timeout(240)
def test_heartbeat_is_in_the_seeds_words_and_the_predecessors_viewer_survives_it(
        feed: dict[str, Any]) -> None:
    beats = payloads(feed, "fxcm:heartbeat")
    assert {beat["state"] for beat in beats} <= {"warmup", "warmup_cache", "stream", "idle"}
    for beat in beats:
        assert viewer_survives_heartbeat(beat) == []
        backoff = beat["context"]["diag"]["backoff"]
        assert {"fxcm_history", "redis"} <= set(backoff)
        assert beat["context"]["diag"]["state"] in ("STREAM", "IDLE", "DISCONNECTED",
                                                    "RECOVERING")
        assert beat["context"]["diag"]["since_utc"]
    stream = [beat for beat in beats if beat["state"] == "stream"][-1]
    assert stream["context"]["history"]["limit_60s"] > 0
    assert re.fullmatch(r"\d\d:\d\d@[\w/]+", stream["context"]["session"]["weekly_open"])


@pytest.mark.timeout(240)
def test_ohlcv_passes_both_ingestors_with_the_secret_alone(feed: dict[str, Any]) -> None:
    sources = set()
    for data in feed["channels"]["fxcm:ohlcv"]:
        assert ingestors_take(data, SECRET) == [], data[:300]
        sources.add(json.loads(data)["source"])
    assert sources <= set(WIRE_SOURCES) and sources


@pytest.mark.timeout(240)
def test_price_tik_has_exactly_the_seeds_six_keys_in_seconds(feed: dict[str, Any]) -> None:
    for payload in payloads(feed, "fxcm:price_tik"):
        assert set(payload) == {"symbol", "bid", "ask", "mid", "tick_ts", "snap_ts"}
        assert payload["symbol"] in SYMBOLS
        assert payload["tick_ts"] < 1e11 and payload["snap_ts"] < 1e11
        assert payload["snap_ts"] >= payload["tick_ts"]


@pytest.mark.timeout(240)
def test_late_joiners_find_the_last_of_each_in_its_key(feed: dict[str, Any]) -> None:
    for name, data in feed["keys"].items():
        assert data is not None, name
        assert isinstance(json.loads(data), dict)
