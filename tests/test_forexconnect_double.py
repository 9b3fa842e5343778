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
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_defaults
from protocol.market import MINUTE_MS, HistoryReply, HistoryRequest, Instrument, SessionState
from tests.helpers import (
    REPO_ROOT,
    HostProcess,
    Probe,
    RedisSubscriber,
    bus_status,
    embedded_redis_url,
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
    with double_host(tmp_path, run_dir, double, full_pipeline(), **more) as (host, probe):
        redis = RedisSubscriber(embedded_redis_url(run_dir),
                                ["fxcm:price_tik", "fxcm:heartbeat", "fxcm:ohlcv"])
        try:
            # 1. streaming: the double's offers reach Redis as price snapshots
            redis.wait("fxcm:price_tik", lambda got: any(
                p["symbol"] == "EURUSD" and 1.0 < p["bid"] < p["ask"] < 1.2 for p in got), 60,
                "EURUSD prices from the double in Redis")
            # 2. history: warmup bars in Redis are the double's bars on the mid basis
            def history_bars() -> list[dict[str, Any]]:
                return [bar for payload in redis.payloads("fxcm:ohlcv")
                        if payload["symbol"] == "EURUSD" and payload["tf"] == "1m"
                        and payload.get("source") == "stream"  # the feed's own history
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
            assert "RECOVERING" in after and after.index("RECOVERING") < after.index(
                "STREAM"), after
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
            # the session is created before it subscribes: a heartbeat can fall in between
            beat = redis.wait("fxcm:heartbeat", lambda got: any(
                (h.get("context", {}).get("fxcm", {}).get("broker") or {}).get(
                    "subscriptions") == 2 for h in got), 60,
                "the heartbeat telling of the second session's subscription")[-1]
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
        double.wait(lambda got: all(str(row[0]) in got.get("bars_served", {}).get(
            "XAU/USD m5", {}) for row in reply.bars), 10, "the double's record of the bars")
        for row in reply.bars:
            served = served_bar(double, "XAU/USD", "m5", row[0])
            assert served is not None
            assert row[1:6] == served[0:4] + [served[8]]  # the bid columns, the volume
        assert double.state()["history_calls"][-1]["mode"] == "FIRST_TICK"
        status = wait_status(probe, lambda s: s.get("broker", {}).get(
            "history_open_price_mode"), 30, "the open price mode read back")
        assert status["broker"]["history_open_price_mode"] == "FIRST_TICK"


# -- the SDK's own reconnect -------------------------------------------------------------------

def test_the_sdks_own_reconnect_is_followed_by_a_new_subscription_at_once(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    """RECONNECTING -> CONNECTED under the SDK drops the offers subscription (in the double):
    fxcm_session subscribes again at once, not after stale_seconds (30 s), and does not log
    in again."""
    double = Double(tmp_path, sessions=[{"connect_after": 0.2, "events": [
        {"after": 3.0, "do": "reconnect", "for": 1.0}]}])
    more = sections(double_python, tmp_path, ["EURUSD"], stale_seconds=30.0)
    with double_host(tmp_path, run_dir, double, [SESSION], **more) as (_, probe):
        seen = double.wait(lambda got: len(got.get("subscriptions", [])) >= 2, 60,
                           "a subscription after the SDK's reconnect")
        connected = [index for index, (_, status) in enumerate(seen["statuses"])
                     if status == "CONNECTED"]
        assert len(connected) == 2 and "RECONNECTING" in [s for _, s in seen["statuses"]]
        ticks_before = seen["ticks_sent"]
        resubscribed = seen["subscriptions"][1]
        assert resubscribed[1] == "CONNECTED"
        status = wait_status(probe, lambda s: s.get("sdk_reconnects") == 1
                             and s.get("session_state") == "STREAM", 30,
                             "the stream back after the SDK's reconnect")
        assert status["reconnects"] == 0 and status["resubscribes"] == 0
        assert status["broker"]["sessions_created"] == 1
        assert status["broker"]["sdk_reconnects"] == 1
        after = states(probe)[states(probe).index("DISCONNECTED"):]
        assert after[:3] == ["DISCONNECTED", "RECOVERING", "STREAM"]
        assert "RECONNECTING" in status_of(probe)["broker"]["last_statuses"]
        double.wait(lambda got: got["ticks_sent"] > ticks_before + 10, 30,
                    "ticks to the new subscription")
        first = [body for kind, body in probe.received if isinstance(body, SessionState)
                 and body.state == "DISCONNECTED"][0]
        stream = [body for kind, body in probe.received if isinstance(body, SessionState)
                  and body.state == "STREAM"][-1]
        assert stream.since_ms - first.since_ms < 10_000  # seconds, not the 30 s detector


# -- slow logins, refused logins, a stale callback ----------------------------------------------

def test_slow_and_refused_logins_never_hold_two_sessions_and_stale_callbacks_are_ignored(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    """Session 0 is refused; session 1 connects only after 4 s while the SDK waits 1 s per
    login: the retries wait on it instead of opening more. Once it streams, session 0's
    listener fires a late DISCONNECTED: ignored, the stream goes on."""
    double = Double(tmp_path, sdk_wait_seconds=1.0, sessions=[
        {"result": "refused", "error": "ORA-1: bad credentials for " + USER},
        {"connect_after": 4.0, "events": [{"after": 2.0, "do": "ghost",
                                           "status": "DISCONNECTED"}]}])
    more = sections(double_python, tmp_path, ["EURUSD"])
    with double_host(tmp_path, run_dir, double, [SESSION], **more) as (host, probe):
        seen = double.wait(lambda got: got.get("ghosts_delivered", 0) >= 1, 60,
                           "the stale callback delivered")
        assert seen["sessions_created"] == 2 and seen["max_open_sessions"] == 1
        assert seen["logouts_while_connecting"] == 0
        status = wait_status(probe, lambda s: s.get("broker", {}).get(
            "ignored_callbacks", 0) >= 1, 30, "the stale callback ignored")
        assert status["broker"]["waits_on_connecting_session"] >= 2
        assert status["broker"]["sessions_created"] == 2
        # Had the stale DISCONNECTED been taken, the session would be reconnecting by now.
        published = status["ticks_published"]
        status = wait_status(probe, lambda s: s.get("ticks_published", 0) > published + 20, 30,
                             "ticks flowing on after the stale callback")
        assert status["session_state"] == "STREAM" and status["reconnects"] == 0
        failures = metric(run_dir, "fxcm_login_failures_total ")
        assert failures is not None and failures >= 3  # refused, then two timed-out waits
        assert metric(run_dir, 'fxcm_connector_errors_total{type="fxcm"}') == failures
        output = host.output()
        assert "ORA-1: bad credentials for ***" in output and USER not in output


# -- history not ready, then ready ---------------------------------------------------------------

def test_history_not_ready_is_answered_not_ready_counted_and_then_ok(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    double = Double(tmp_path, history={"not_ready_seconds": 6.0})
    more = sections(double_python, tmp_path, ["EURUSD"])
    with double_host(tmp_path, run_dir, double, [SESSION], **more) as (_, probe):
        wait_status(probe, lambda s: s.get("session_state") == "STREAM", 60, "the stream")
        first = history(probe, "EURUSD", "1m", 5)
        assert first.status == "not_ready" and first.bars == []
        assert first.retry_after > 0 and "not ready" in first.error
        replies = [first]
        deadline = time.monotonic() + 60
        while replies[-1].status != "ok":
            assert time.monotonic() < deadline, [reply.status for reply in replies]
            probe.pump(min(replies[-1].retry_after, 1.0))  # the retry_after the reply asks
            replies.append(history(probe, "EURUSD", "1m", 5))
        assert {reply.status for reply in replies[:-1]} == {"not_ready"}
        assert len(replies[-1].bars) == 5
        not_ready = len(replies) - 1
        status = wait_status(probe, lambda s: s.get("errors", {}).get(
            "pricehistory_not_ready") == not_ready and s.get("history", {}).get("ok") == 1,
            30, "the not-ready replies counted")
        assert status["backoff"]["history_failures"] == 0  # not a failure: no history pause
        assert status["history"]["not_ready"] == not_ready and status["history"]["ok"] == 1
        wait_for(lambda: metric(run_dir, "fxcm_pricehistory_not_ready_total ") == not_ready,
                 30, "fxcm_pricehistory_not_ready_total on /metrics")
        assert metric(run_dir, 'fxcm_connector_errors_total{type="pricehistory_not_ready"}') \
            == not_ready


def test_an_open_price_mode_that_does_not_stick_is_warned_about(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    double = Double(tmp_path, history={"open_price_mode_sticks": True})
    more = sections(double_python, tmp_path, ["EURUSD"])
    with double_host(tmp_path, run_dir, double, [SESSION], **more) as (host, probe):
        wait_status(probe, lambda s: s.get("session_state") == "STREAM", 60, "the stream")
        assert history(probe, "EURUSD", "1m", 3).status == "ok"
        status = wait_status(probe, lambda s: s.get("broker", {}).get(
            "history_open_price_mode"), 30, "the mode read back")
        assert status["broker"]["history_open_price_mode"] == "PREVIOUS_CLOSE"
        wait_for(lambda: "reads back as PREVIOUS_CLOSE, not FIRST_TICK" in host.output(), 10,
                 "the warning in the log")


# -- an instrument the account has not subscribed ------------------------------------------------

def test_an_unsubscribed_instrument_is_reported_with_what_to_do_and_never_asked_for_history(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    oil = {"instrument": "USOil", "digits": 2, "point_size": 0.01, "bid": 70.0, "spread": 0.05,
           "subscription_status": "D"}
    double = Double(tmp_path, offers=[EURUSD, oil])
    more = sections(double_python, tmp_path, ["EURUSD", "USOIL", "GBPUSD"])
    with double_host(tmp_path, run_dir, double, [SESSION], probe_topics=("instrument.",),
                     **more) as (host, probe):
        status = wait_status(probe, lambda s: s.get("session_state") == "STREAM"
                             and s.get("instruments"), 60, "the stream and the instruments")
        assert status["unsubscribed_symbols"] == ["GBPUSD", "USOIL"]
        assert status["instruments"]["USOIL"] == {"digits": 2, "broker_name": "USOil",
                                                  "subscribed": False}
        assert status["instruments"]["EURUSD"]["subscribed"] is True
        assert status["broker"]["offers"]["USOIL"]["subscription_status"] == "D"
        assert status["broker"]["offers"]["GBPUSD"] is None
        instruments = {body.symbol: body for kind, body in probe.received
                       if isinstance(body, Instrument)}
        assert instruments["USOIL"].subscribed is False
        assert instruments["USOIL"].broker_name == "USOil"  # not "USO/IL"
        output = host.output()
        assert "USOIL: the instrument 'USOil' is not subscribed in this FXCM account" in output
        assert "Subscribe it in the FXCM account" in output
        assert "GBPUSD: FXCM offers no instrument 'GBP/USD' to this account" in output
        reply = history(probe, "USOIL", "1m", 5)
        assert reply.status == "error" and "not subscribed" in reply.error
        assert history(probe, "EURUSD", "1m", 5).status == "ok"
        calls = double.wait(lambda got: got.get("history_calls"), 10, "the EURUSD call")
        assert {call["instrument"] for call in calls["history_calls"]} == {"EUR/USD"}
        assert metric(run_dir, 'fxcm_instrument_subscribed{symbol="USOIL"}') == 0.0
        assert metric(run_dir, 'fxcm_instrument_subscribed{symbol="EURUSD"}') == 1.0


# -- malformed offers ----------------------------------------------------------------------------

def test_malformed_offers_are_counted_by_reason_and_never_stop_the_stream(
        tmp_path: Path, run_dir: str, double_python: str) -> None:
    double = Double(tmp_path, offers=[EURUSD],
                    sessions=[{"events": [{"after": 1.0, "do": "bad_ticks"}]}])
    more = sections(double_python, tmp_path, ["EURUSD"])
    with double_host(tmp_path, run_dir, double, [SESSION], **more) as (_, probe):
        status = wait_status(probe, lambda s: sum(s.get("rejected_ticks", {}).values()) >= 4,
                             60, "the malformed offers counted")
        assert status["rejected_ticks"] == {"missing_time": 1, "nan": 1, "ask_below_bid": 1,
                                            "unknown_symbol": 1}
        assert status["broker"]["callback_errors"] == 0
        published = status["ticks_published"]
        wait_status(probe, lambda s: s.get("ticks_published", 0) > published + 10, 30,
                    "ticks flowing on")


# -- no SDK at all -------------------------------------------------------------------------------

def test_without_the_sdk_the_session_says_why_and_backs_off_without_restarting(
        tmp_path: Path, run_dir: str, python37: str) -> None:
    absent = tmp_path / "no-sdk"
    (absent / "forexconnect").mkdir(parents=True)
    (absent / "forexconnect" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'forexconnect'\")\n")
    env = {"FXCM_USERNAME": USER, "FXCM_PASSWORD": PASSWORD,
           "PYTHONPATH": os.pathsep.join([str(absent), str(REPO_ROOT)])}
    more = sections(python37, tmp_path, ["EURUSD"])
    with host_process(tmp_path, run_dir, [SESSION], env=env, **more) as host:
        probe = Probe("probe", "ipc://" + os.path.join(run_dir, "bus.sock"),
                      ("actor.status.fxcm_session",))
        status = wait_status(probe, lambda s: s.get("backoff", {}).get("login_failures", 0)
                             >= 3, 60, "three failed logins")
        probe.close()
        assert status["session_state"] == "DISCONNECTED"
        assert "the forexconnect SDK does not import" in status["session_reason"]
        assert "No module named 'forexconnect'" in status["session_reason"]
        assert status["broker"]["sdk"].startswith("unavailable: ")
        done = subprocess.run([sys.executable, "-m", "actors.cli", "status", "--run-dir",
                               run_dir], cwd=str(REPO_ROOT), capture_output=True, text=True,
                              timeout=30, check=True)
        row = next(line for line in done.stdout.splitlines()
                   if line.startswith("fxcm_session"))
        assert row.split()[1] == "running" and row.split()[6] == "0"  # state, restarts
        assert "Traceback" not in host.output()


# -- the server's clock, ahead of ours and behind it ---------------------------------------------

def pipeline(*names: str) -> list[dict[str, Any]]:
    actors = {actor["name"]: dict(actor) for actor in load_defaults()["actors"]}
    actors["fxcm_session"].update(SESSION)
    return [actors[name] for name in names]


@pytest.mark.timeout(360)
@pytest.mark.parametrize(("offset_ms", "tick_window"), [(5000, [10, 40]), (-5000, [0, 60])])
def test_bars_close_on_the_servers_clock_ahead_or_behind_ours_and_no_tick_is_late(
        tmp_path: Path, run_dir: str, double_python: str, offset_ms: int,
        tick_window: list[int]) -> None:
    """Ahead by 5 s (ticks only from second 10 to 40 of each minute, so that the clock, not a
    tick, closes the bars): the 1m bar is final 3.5 s before our own clock reaches its end
    (our clock alone would close it 1.5 s after). Behind by 5 s
    (ticks to the last moment): its last ticks arrive 5 s after our clock's minute ended, and
    none is late; every tick the double sent for the minute is in the bar."""
    double = Double(tmp_path, offers=[EURUSD], server_offset_ms=offset_ms,
                    tick_interval_seconds=0.1, latency_ms=[5, 60],
                    tick_seconds_of_minute=tick_window)
    more = sections(double_python, tmp_path, ["EURUSD"], clock_skew_warn_seconds=1.0)
    actors = pipeline("redis_publisher", "tick_aggregator", "fxcm_session")
    with double_host(tmp_path, run_dir, double, actors, **more) as (host, probe):
        redis = RedisSubscriber(embedded_redis_url(run_dir), ["fxcm:ohlcv"])
        wall_minus_monotonic = time.time() - time.monotonic()
        try:
            def tick_bars() -> list[tuple[float, dict[str, Any]]]:
                return [(arrived, bar) for arrived, channel, data in redis.snapshot()
                        for payload in [json.loads(data)]
                        if payload["symbol"] == "EURUSD" and payload["tf"] == "1m"
                        and payload.get("source") == "tick_agg"
                        for bar in payload["bars"] if bar["complete"]]

            arrived, bar = wait_for(lambda: next(iter(tick_bars()), None), 200,
                                    "a whole minute's bar from the ticks")
        finally:
            redis.close()
        arrived_ms = (arrived + wall_minus_monotonic) * 1000.0
        if offset_ms > 0:
            assert arrived_ms < bar["close_time"], arrived_ms - bar["close_time"]
        else:
            assert arrived_ms > bar["close_time"] + 4000, arrived_ms - bar["close_time"]
        sent = double.wait(lambda got: str(bar["open_time"] + MINUTE_MS) in got.get(
            "ticks_per_minute", {}).get("EUR/USD", {}) or offset_ms > 0, 30,
            "the double's count of the next minute")
        assert bar["tick_count"] == sent["ticks_per_minute"]["EUR/USD"][str(bar["open_time"])]
        assert metric(run_dir, "fxcm_tick_agg_late_ticks_total ") == 0.0
        status = wait_status(probe, lambda s: s.get("clock_skew", {}).get("warning"), 30,
                             "the skew in status")
        skew = status["clock_skew"]["skew_seconds"]
        assert offset_ms / 1000.0 - 0.1 <= skew <= offset_ms / 1000.0, skew
        assert status["clock_skew"]["warning"] is True
        published = metric(run_dir, "fxcm_clock_skew_seconds ")
        assert published is not None and abs(published - offset_ms / 1000.0) < 0.1
        assert "the FXCM server clock is {}".format("+4.9" if offset_ms > 0 else "-5.0") \
            in host.output()
