"""The real SDK's success path, against an SDK-shaped double (tests/sdk_double): our
ForexConnectBroker inside fxcm_session, in a Python 3.7 child of a real host, through login,
streaming, history, lost sessions and the SDK's own reconnects, slow and refused logins, history
not ready, an unsubscribed instrument, and a server clock ahead of and behind ours. Effects are
read where a user reads them: Redis, /metrics, ``fxcm status``, the log; the double's own record
(``state_file``) says what the "server" saw (sessions open at once, subscriptions, history calls).

The double cannot drift from the wheel: the first test compares their surfaces whenever the
Python 3.7 venv has the real forexconnect wheel.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_defaults
from protocol.market import HistoryReply, HistoryRequest, SessionState
from tests.helpers import (
    REPO_ROOT,
    HostProcess,
    Probe,
    RedisSubscriber,
    bus_status,
    host_process,
    open_calendar,
    wait_for,
)

DOUBLE = REPO_ROOT / "tests" / "sdk_double"
SURFACE = REPO_ROOT / "tests" / "forexconnect_surface.py"
USER = "double-user-4711"
PASSWORD = "double-password-0815"
SESSION = {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession",
           "stop_timeout_seconds": 20.0}
EURUSD = {"instrument": "EUR/USD", "digits": 5, "point_size": 0.0001, "bid": 1.1,
          "spread": 0.0002}
XAUUSD = {"instrument": "XAU/USD", "digits": 2, "point_size": 0.01, "bid": 2400.0,
          "spread": 0.3}


@pytest.fixture(scope="session")
def double_python(python37: str) -> str:
    """The 3.7 interpreter, with numpy (the double builds the wheel's numpy arrays)."""
    done = subprocess.run([python37, "-c", "import numpy"], capture_output=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        pytest.skip("the Python 3.7 interpreter has no numpy: the SDK double tests were NOT "
                    "run (make venv37 installs it)")
    return python37


class Double:
    """One scenario for the double, and what the double recorded."""

    def __init__(self, directory: Path, **scenario: Any) -> None:
        self.state_path = directory / "sdk-state.json"
        self.scenario = dict({"sdk_wait_seconds": 2.0, "offers": [EURUSD, XAUUSD]}, **scenario)
        self.scenario["state_file"] = str(self.state_path)
        self.path = directory / "scenario.json"
        self.path.write_text(json.dumps(self.scenario))

    def env(self) -> dict[str, str]:
        return {"FXCM_SDK_DOUBLE_SCENARIO": str(self.path), "FXCM_USERNAME": USER,
                "FXCM_PASSWORD": PASSWORD, "FXCM_HOST_URL": "http://127.0.0.1:9/Hosts.jsp",
                "PYTHONPATH": os.pathsep.join([str(DOUBLE), str(REPO_ROOT)])}

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def wait(self, condition: Any, timeout: float, what: str) -> dict[str, Any]:
        wait_for(lambda: condition(self.state()), timeout, what, interval=0.05)
        return self.state()


def sections(python: str, directory: Path, symbols: list[str], **session: Any) -> dict[str, Any]:
    fxcm_session: dict[str, Any] = {
        "login_backoff": {"base_seconds": 0.3, "max_seconds": 2.0, "multiplier": 2.0,
                          "jitter": 0.1},
        "login_wait_seconds": 1.0}
    fxcm_session.update(session)
    return {"symbols": symbols, "broker": {"kind": "forexconnect", "python": python},
            "calendar_file": str(open_calendar(directory)), "fxcm_session": fxcm_session,
            "cache": {"dir": str(directory / "cache")},
            "bus": {"status_interval_seconds": 0.2}}


@contextmanager
def double_host(tmp_path: Path, run_dir: str, double: Double, actors: list[dict[str, Any]],
                **more: Any) -> Iterator[tuple[HostProcess, Probe]]:
    """A host with ``actors``, fxcm_session on the double, and a probe on its state and
    status (and whatever else ``more["probe_topics"]`` names)."""
    topics = ("session.state", "actor.status.fxcm_session") + tuple(
        more.pop("probe_topics", ()))
    with host_process(tmp_path, run_dir, actors, env=double.env(), **more) as host:
        probe = Probe("probe", "ipc://" + os.path.join(run_dir, "bus.sock"), topics)
        try:
            yield host, probe
        finally:
            probe.close()


def status_of(probe: Probe) -> dict[str, Any]:
    bodies = [body for kind, body in probe.received if kind == "actor.status"]
    return bodies[-1] if bodies else {}


def wait_status(probe: Probe, condition: Any, timeout: float, what: str) -> dict[str, Any]:
    probe.collect(lambda _: bool(condition(status_of(probe))), timeout, what)
    return status_of(probe)


def states(probe: Probe) -> list[str]:
    return [body.state for kind, body in probe.received if isinstance(body, SessionState)]


def metrics_text(run_dir: str) -> str:
    with open(os.path.join(run_dir, "host.json")) as handle:
        port = json.load(handle)["http_port"]
    with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(port), timeout=10) as page:
        text: str = page.read().decode()
        return text


def metric(run_dir: str, line_start: str) -> float | None:
    """The value of the first /metrics sample whose line starts with ``line_start``."""
    for line in metrics_text(run_dir).splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def history(probe: Probe, symbol: str, tf: str, count: int) -> HistoryReply:
    _, reply = probe.client.request("fxcm_session", "history.get",
                                    HistoryRequest(symbol, tf, None, None, count, False),
                                    timeout=60)
    assert isinstance(reply, HistoryReply)
    return reply


# -- the double is the wheel's shape ------------------------------------------------------------

def surface(python: str, double: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if double:
        env["PYTHONPATH"] = str(DOUBLE)
    done = subprocess.run([python, str(SURFACE)], cwd=tempfile.gettempdir(), env=env,
                          capture_output=True, timeout=120, check=True)
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def differences(real: Any, double: Any, path: str = "") -> list[str]:
    if isinstance(real, dict) and isinstance(double, dict):
        return [item for key in sorted(set(real) | set(double))
                for item in differences(real.get(key), double.get(key), path + "." + key)]
    return [] if real == double else ["{}: wheel {!r}, double {!r}".format(path, real, double)]


def test_the_double_has_the_real_wheels_surface(sdk_python: str, double_python: str) -> None:
    real = surface(sdk_python, double=False)
    double = surface(double_python, double=True)
    assert real["history"]["mode_after_a_first_tick_call"] == "FIRST_TICK"
    assert real["enums"]["O2GSessionStatus"][6] == ["SESSION_LOST", 6]
    assert differences(real, double) == []


# -- login, stream, history, a lost session and a new one ----------------------------------------

def full_pipeline() -> list[dict[str, Any]]:
    actors: list[dict[str, Any]] = [dict(actor) for actor in load_defaults()["actors"]]
    for actor in actors:
        if actor["name"] == "fxcm_session":
            actor.update(SESSION)
    return actors


def served_bar(double: Double, instrument: str, tf: str, open_time: int) -> list[float] | None:
    bar: list[float] | None = double.state().get("bars_served", {}).get(
        "{} {}".format(instrument, tf), {}).get(str(open_time))
    return bar


@pytest.mark.timeout(240)
def test_login_stream_history_then_a_lost_session_logs_in_again_and_subscribes_again(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    double = Double(tmp_path, sessions=[
        {"connect_after": 0.2, "events": [{"after": 8.0, "do": "session_lost"}]},
        {"connect_after": 0.2}])
    more = sections(double_python, tmp_path, ["EURUSD", "XAUUSD"])
    more.update(heartbeat={"interval_seconds": 0.5, "status_interval_seconds": 0.5},
                snapshotter={"price_snap_interval_seconds": 0.5},
                history_poller={"warmup_bars": 30, "poll_seconds": 1.0})
    redis_url = "unix://" + os.path.join(run_dir, "redis.sock")
    with double_host(tmp_path, run_dir, double, full_pipeline(), **more) as (host, probe):
        redis = RedisSubscriber(redis_url, ["fxcm:price_tik", "fxcm:heartbeat", "fxcm:ohlcv"])
        try:
            # 1. streaming: the double's offers reach Redis as price snapshots
            redis.wait("fxcm:price_tik", lambda got: any(
                p["symbol"] == "EURUSD" and 1.0 < p["bid"] < p["ask"] < 1.2 for p in got), 60,
                "EURUSD prices from the double in Redis")
            # 2. history: warmup bars in Redis are the double's bars on the mid basis
            def history_bars() -> list[dict[str, Any]]:
                return [bar for payload in redis.payloads("fxcm:ohlcv")
                        if payload["symbol"] == "EURUSD" and payload["tf"] == "1m"
                        and str(payload.get("source", "")).startswith("history")
                        for bar in payload["bars"]]
            wait_for(lambda: len(history_bars()) >= 10, 90, "warmup history bars in Redis")
            checked = 0
            for bar in history_bars():
                served = served_bar(double, "EUR/USD", "m1", bar["open_time"])
                if served is None:
                    continue
                bid, ask = served[0:4], served[4:8]
                for index, key in enumerate(("open", "high", "low", "close")):
                    assert math.isclose(bar[key], (bid[index] + ask[index]) / 2, abs_tol=1e-9)
                assert bar["volume"] == served[8]
                checked += 1
            assert checked >= 10
            calls = double.state()["history_calls"]
            assert calls and {call["mode"] for call in calls} == {"FIRST_TICK"}
            # 3. the session is lost: a new one, subscribed again, streams on
            probe.collect(lambda _: "STREAM" in states(probe)[
                states(probe).index("DISCONNECTED"):] if "DISCONNECTED" in states(probe)
                else False, 90, "DISCONNECTED, then STREAM again")
            after = states(probe)[states(probe).index("DISCONNECTED"):]
            assert after.index("RECOVERING") < after.index("STREAM")
            seen = double.wait(lambda got: len(got.get("subscriptions", [])) >= 2, 10,
                               "the double's record of the new subscription")
            assert seen["sessions_created"] == 2 and seen["max_open_sessions"] == 1
            assert [index for index, _, _ in seen["subscriptions"]] == [0, 1]
            assert [index for index, status in seen["statuses"]
                    if status == "SESSION_LOST"] == [0]
            lost_at = time.time()
            redis.wait("fxcm:price_tik", lambda got: any(
                p["symbol"] == "EURUSD" and p["tick_ts"] > lost_at for p in got), 60,
                "prices from the new session")
            beat = redis.wait("fxcm:heartbeat", lambda got: any(
                (h.get("context", {}).get("fxcm", {}).get("broker") or {}).get(
                    "sessions_created") == 2 for h in got), 60,
                "the heartbeat telling of the second session")[-1]
            broker = beat["context"]["fxcm"]["broker"]
            assert broker["kind"] == "forexconnect" and broker["subscriptions"] == 2
            status = status_of(probe)
            assert status["reconnects"] == 1 and status["errors"]["fxcm"] >= 1
        finally:
            redis.close()
        assert USER not in host.output() and PASSWORD not in host.output()
        assert bus_status(run_dir)["actors"]["fxcm_session"]["restarts"] == 0


def test_history_replies_are_the_doubles_bars_on_the_configured_basis(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    double = Double(tmp_path)
    more = sections(double_python, tmp_path, ["EURUSD", "XAUUSD"])
    more["price_basis"] = "bid"
    with double_host(tmp_path, run_dir, double, [SESSION], **more) as (_, probe):
        wait_status(probe, lambda s: s.get("session_state") == "STREAM", 60, "the stream")
        reply = history(probe, "XAUUSD", "5m", 6)
        assert reply.status == "ok" and len(reply.bars) == 6
        for row in reply.bars:
            served = served_bar(double, "XAU/USD", "m5", row[0])
            assert served is not None
            assert row[1:6] == served[0:4] + [served[8]]  # the bid columns, the volume
        assert double.state()["history_calls"][-1]["mode"] == "FIRST_TICK"
        status = wait_status(probe, lambda s: s.get("broker", {}).get(
            "history_open_price_mode"), 30, "the open price mode read back")
        assert status["broker"]["history_open_price_mode"] == "FIRST_TICK"
