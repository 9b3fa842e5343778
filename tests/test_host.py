"""The host: supervision, placement, attach, tap, status and shutdown, as an operator sees them."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import actors.base
from bus import ipc_endpoint
from protocol.errors import BackpressureError
from tests.helpers import (
    REPO_ROOT,
    HostProcess,
    Probe,
    bus_status,
    control,
    host_in_thread,
    host_process,
    wait_for,
    write_config,
)
from tests.sample_actors import reference_fold

FAST_RESTARTS = {"backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.5,
                 "max_restarts": 20, "restart_window_seconds": 60.0}


def bus_endpoint(run_dir: str) -> str:
    return ipc_endpoint(run_dir, "bus.sock")


def assert_folded_like_reference(outputs: list[list[int]], values: list[int]) -> None:
    by_key: dict[int, tuple[int, int]] = {}
    for value, total, count in outputs:
        # A re-emitted output after a restart carries the same key and the same values.
        assert by_key.setdefault(value, (total, count)) == (total, count), value
    assert by_key == {value: (total, count) for value, total, count in reference_fold(values)}


def all_folded(count: int) -> Any:
    return lambda received: len({body[0] for _, body in received}) >= count


# -- test 3: checkpoint restart ----------------------------------------------------------------

CRASH_POINTS = [[0], [2999], sorted(random.Random(11).sample(range(3000), 1)),
                sorted(random.Random(12).sample(range(3000), 3))]


@pytest.mark.parametrize("crash_at", CRASH_POINTS, ids=lambda points: "crash-at-" + "-".join(
    map(str, points)))
def test_checkpointed_actor_crashing_mid_stream_emits_what_an_uninterrupted_run_does(
        tmp_path: Path, run_dir: str, crash_at: list[int]) -> None:
    values = list(range(3000))
    actors = [{"name": "folder", "class": "tests.sample_actors:Folder",
               "settings": {"crash_at": crash_at}}]
    with host_in_thread(tmp_path, run_dir, actors, supervisor=FAST_RESTARTS,
                        bus={"checkpoint_every": 50}):
        probe = Probe("probe", bus_endpoint(run_dir), ("folded",))
        for value in values:
            probe.publish("seq.x", value, "seq")
        probe.collect(all_folded(len(values)), 60, "every value folded")
        assert_folded_like_reference(probe.bodies("folded"), values)
        status = bus_status(run_dir)["actors"]["folder"]
        assert status["restarts"] == len(crash_at)
        assert status["redelivered"] >= len(crash_at)
        probe.close()


# -- test 6: poison message ----------------------------------------------------------------------

def test_poison_message_goes_to_dead_letters_and_the_actor_goes_on(
        tmp_path: Path, run_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    with host_in_thread(tmp_path, run_dir, actors, supervisor=FAST_RESTARTS,
                        bus={"max_redeliveries": 3}):
        probe = Probe("probe", bus_endpoint(run_dir), ("echoed.",))
        for body in ("before", "poison", "after"):
            probe.publish("echo.x", body, "echo")
        probe.collect(lambda received: len(received) >= 2, 60, "the two good messages")
        assert probe.bodies("echoed") == ["before", "after"]
        status = wait_for(lambda: (s := bus_status(run_dir))["actors"]["echo"]["state"] == "running"
                          and s, 30, "echo running again")
        echo = status["actors"]["echo"]
        assert echo["dead_letters"] == 1
        assert echo["restarts"] == 3
        assert "handler failed 3 times" in status["dead_letters"][-1]["reason"]
        assert status["dead_letters"][-1]["topic"] == "echo.x"
        probe.close()


# -- injected faults: the crash, stall and release control ops (make chaos, fxcm crash) ----------

def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path), timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def test_crash_op_crashes_the_actors_next_handler_which_is_restarted_and_loses_nothing(
        tmp_path: Path, run_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    with host_in_thread(tmp_path, run_dir, actors, supervisor=FAST_RESTARTS) as host:
        probe = Probe("probe", bus_endpoint(run_dir), ("echoed.",))
        answer = control(run_dir, {"op": "crash", "name": "echo"})
        assert answer["ok"] is True and answer["kind"] == "crash", answer
        for body in ("first", "second", "third"):
            probe.publish("echo.x", body, "echo")
        probe.collect(lambda received: len(received) >= 3, 60, "the three echoes")
        status = wait_for(lambda: (s := bus_status(run_dir))["actors"]["echo"]["state"]
                          == "running" and s["actors"]["echo"]["restarts"] == 1 and s, 30,
                          "echo restarted once")
        # The crash came before "first" was handled: each message is echoed once, in order.
        assert probe.bodies("echoed") == ["first", "second", "third"]
        echo = status["actors"]["echo"]
        assert echo["last_exit"].startswith("InjectedCrash: crash injected on request")
        assert echo["redelivered"] >= 1  # "first", which it was handling, came again
        assert echo["dead_letters"] == 0
        assert echo["injected_crashes"] == 1 and status["router"]["injected_crashes"] == 1
        assert host.http is not None
        port = host.http.port
        # /metrics reads the router's figures as of its last housekeeping (4 times a second).
        wait_for(lambda: 'fxcm_bus_injected_crashes_total{actor="echo"} 1.0'
                 in http_get(port, "/metrics"), 10, "the injected crash on /metrics")
        assert json.loads(http_get(port, "/status"))["actors"]["echo"]["injected_crashes"] == 1
        probe.close()
    assert "injected fault on request: crash echo" in caplog.text
    assert "echo: crashing on request (injected fault) while handling a 'echo' message on " \
        "'echo.x' (delivery 1, attempt 1)" in caplog.text


def test_stall_op_fills_the_mailbox_to_its_bound_holds_the_producer_back_and_loses_nothing(
        tmp_path: Path, run_dir: str) -> None:
    bound = 40
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo", "prefetch": 4,
               "mailbox_bounds": {"echo.": bound}}]
    with host_in_thread(tmp_path, run_dir, actors, bus={"credit_window": 8}):
        producer = Probe("producer", bus_endpoint(run_dir))
        consumer = Probe("consumer", bus_endpoint(run_dir), ("echoed.",))
        answer = control(run_dir, {"op": "stall", "name": "echo", "seconds": 120})
        assert answer["ok"] is True, answer
        sent = [0]

        def held_back() -> bool:
            while producer.client.publish("echo.x", sent[0], "echo", timeout=0):
                sent[0] += 1
            return bool(bus_status(run_dir)["actors"]["producer"]["blocked"])

        wait_for(held_back, 30, "the producer held back by echo's full mailbox")
        held_back()  # spend the credit it still held: none comes back while it is blocked
        status = bus_status(run_dir)
        mailbox = next(box for box in status["actors"]["echo"]["mailboxes"]
                       if box["topic"] == "echo.")
        assert mailbox["depth"] >= bound and mailbox["blocked_producers"] == 1, mailbox
        assert status["actors"]["producer"]["backpressure_events"] == 1
        assert status["actors"]["echo"]["injected_stalls"] == 1
        with pytest.raises(BackpressureError):
            producer.client.publish("echo.x", sent[0], "echo", timeout=0.3)
        consumer.pump(0.05)
        assert consumer.received == []  # stalled before its first handler
        assert control(run_dir, {"op": "release", "name": "echo"})["ok"] is True
        consumer.collect(lambda received: len(received) >= sent[0], 60, "every echo")
        assert consumer.bodies("echoed") == list(range(sent[0]))
        assert sent[0] >= bound
        # Drained, the producer gets its credit back.
        wait_for(lambda: producer.client.publish("echo.x", sent[0], "echo", timeout=0), 30,
                 "credit after the release")
        consumer.collect(lambda received: len(received) > sent[0], 60, "the last echo")
        assert consumer.bodies("echoed") == list(range(sent[0] + 1))
        producer.close()
        consumer.close()


def test_a_stall_ends_by_itself_and_an_idle_actor_takes_its_crash_in_its_loop(
        tmp_path: Path, run_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors.base, "FAULT_IDLE_SECONDS", 0.2)
    specs = [{"name": "echo", "class": "tests.sample_actors:Echo"},
             {"name": "ticker", "class": "tests.sample_actors:Ticker"}]
    with host_in_thread(tmp_path, run_dir, specs, supervisor=FAST_RESTARTS):
        probe = Probe("probe", bus_endpoint(run_dir), ("echoed.",))
        assert control(run_dir, {"op": "stall", "name": "echo", "seconds": 0.5})["ok"] is True
        started = time.monotonic()
        probe.publish("echo.x", "late", "echo")
        probe.collect(lambda received: len(received) >= 1, 30, "the stalled echo")
        assert time.monotonic() - started >= 0.4
        assert probe.bodies("echoed") == ["late"]
        # The ticker gets no messages: its crash comes from its loop, charging no message.
        assert control(run_dir, {"op": "crash", "name": "ticker"})["ok"] is True
        ticker = wait_for(lambda: (v := bus_status(run_dir)["actors"]["ticker"])["restarts"] == 1
                          and v["state"] == "running" and v, 30, "ticker restarted")
        assert "while idle" in ticker["last_exit"] and ticker["dead_letters"] == 0
        probe.close()


def test_fault_ops_refuse_unknown_actors_and_bad_stalls_and_the_cli_runs_them(
        tmp_path: Path, run_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    with host_in_thread(tmp_path, run_dir, actors, supervisor=FAST_RESTARTS):
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"op": "crash", "name": "nosuch"}, "no actor named 'nosuch'"),
            ({"op": "stall", "name": "nosuch", "seconds": 1}, "no actor named 'nosuch'"),
            ({"op": "crash"}, "no actor named None"),
            ({"op": "stall", "name": "echo"}, "stall seconds must be a number"),
            ({"op": "stall", "name": "echo", "seconds": 0}, "in (0, 300]"),
            ({"op": "stall", "name": "echo", "seconds": 301}, "in (0, 300]")]
        for request, error in refusals:
            answer = control(run_dir, request)
            assert answer["ok"] is False and error in answer["error"], (request, answer)
        status = bus_status(run_dir)
        assert status["router"]["injected_crashes"] == status["router"]["injected_stalls"] == 0

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "actors.cli", *args, "--run-dir",
                                   run_dir], cwd=str(REPO_ROOT), capture_output=True, text=True,
                                  timeout=30, check=False)

        refused = cli("crash", "nosuch")
        assert refused.returncode == 1 and "no actor named 'nosuch'" in refused.stderr
        done = cli("crash", "echo")
        assert done.returncode == 0 and "echo (pid {}) will crash at its next handler".format(
            os.getpid()) in done.stdout, done
        probe = Probe("probe", bus_endpoint(run_dir), ("echoed.",))
        probe.publish("echo.x", "once", "echo")
        probe.collect(lambda received: len(received) >= 1, 30, "the echo after the crash")
        assert probe.bodies("echoed") == ["once"]
        assert bus_status(run_dir)["actors"]["echo"]["restarts"] == 1
        assert "injected faults (drills): 1 crashes, 0 stalls" in cli("status").stdout
        probe.close()


# -- test 4: process placement, SIGKILL ----------------------------------------------------------

def run_folder_killed_mid_stream(tmp_path: Path, run_dir: str, python: str) -> None:
    values = list(range(2000))
    actors = [{"name": "folder", "class": "tests.sample_actors:Folder", "placement": "process",
               "python": python, "settings": {"delay_seconds": 0.002}}]
    with host_process(tmp_path, run_dir, actors, supervisor=FAST_RESTARTS,
                      bus={"checkpoint_every": 20}) as host:
        probe = Probe("probe", bus_endpoint(run_dir), ("folded",))
        for value in values:
            probe.publish("seq.x", value, "seq")
        probe.collect(all_folded(300), 60, "the child to be mid-stream")
        pid = bus_status(run_dir)["actors"]["folder"]["pid"]
        assert pid and pid != host.proc.pid
        os.kill(pid, signal.SIGKILL)
        probe.collect(all_folded(len(values)), 120, "every value folded after the kill")
        assert_folded_like_reference(probe.bodies("folded"), values)
        folder = bus_status(run_dir)["actors"]["folder"]
        assert folder["restarts"] == 1
        assert folder["pid"] != pid
        assert "killed by signal SIGKILL" in folder["last_exit"]
        probe.close()


def test_process_placed_actor_killed_with_sigkill_is_restarted_and_loses_nothing(
        tmp_path: Path, run_dir: str) -> None:
    run_folder_killed_mid_stream(tmp_path, run_dir, sys.executable)


def test_process_placed_actor_on_python37_killed_with_sigkill_loses_nothing(
        tmp_path: Path, run_dir: str, python37: str) -> None:
    run_folder_killed_mid_stream(tmp_path, run_dir, python37)


def test_a_killed_host_leaves_no_child_and_no_embedded_redis_behind(tmp_path: Path,
                                                                    run_dir: str) -> None:
    """A SIGKILLed host (OOM, kill -9) leaves no orphan: the process-placed actor sees its
    parent gone and stops; the embedded redis-server gets SIGTERM from the kernel."""
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo", "placement": "process"}]
    host = HostProcess(write_config(tmp_path, run_dir, actors), run_dir, tmp_path / "host.log")
    pids: list[int] = []
    try:
        host.wait_ready(("echo",))
        child = bus_status(run_dir)["actors"]["echo"]["pid"]
        assert child and child != host.proc.pid
        pids = [child] + [pid for pid in children_of(host.proc.pid)
                          if "redis-server" in command_line(pid)]
        assert len(pids) == 2, "expected the actor and the embedded redis-server"
        host.signal(signal.SIGKILL)
        host.wait(30)
        wait_for(lambda: not [pid for pid in pids if running(pid)], 60,
                 "the child and redis-server to stop after their host died")
    finally:
        host.stop()
        for pid in pids:  # only if the test failed: no orphan either way
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def children_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/{}/stat".format(entry)) as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry))
    return found


def command_line(pid: int) -> str:
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent to reap it."""
    try:
        with open("/proc/{}/stat".format(pid)) as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- test 5: attach ------------------------------------------------------------------------------

def attach(run_dir: str, command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=str(REPO_ROOT), env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def relay_once(run_dir: str, text: str) -> dict[str, Any]:
    probe = Probe("probe", bus_endpoint(run_dir), ("relayed",))
    try:
        probe.publish("relay.x", text, "relay")
        probe.collect(lambda received: len(received) >= 1, 60, "the relayed answer")
        answer: dict[str, Any] = probe.bodies("relayed")[0]
        return answer
    finally:
        probe.close()


def wait_attached(run_dir: str, name: str) -> None:
    wait_for(lambda: bus_status(run_dir)["actors"].get(name, {}).get("connected"), 60,
             name + " to attach", interval=0.05)


def test_attached_actor_talks_to_host_actors_and_survives_a_host_restart(
        tmp_path: Path, run_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    child = attach(run_dir, [sys.executable, "-m", "actors.cli", "attach", "--run-dir", run_dir,
                             "--name", "relay", "--settings", '{"target": "echo"}',
                             "tests.sample_actors:Relay"], tmp_path / "attach.log")
    try:
        with host_process(tmp_path, run_dir, actors):
            wait_attached(run_dir, "relay")
            assert relay_once(run_dir, "first")["answer"] == "first"
            assert bus_status(run_dir)["actors"]["relay"]["placement"] == "attached"
        # The host is gone; a new one starts on the same run dir and the relay comes back.
        with host_process(tmp_path, run_dir, actors):
            wait_attached(run_dir, "relay")
            assert relay_once(run_dir, "second")["answer"] == "second"
        assert child.poll() is None
    finally:
        child.terminate()
        assert child.wait(30) == 0


def test_actor_attached_from_python37_exchanges_messages_with_the_host(
        tmp_path: Path, run_dir: str, python37: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    with host_process(tmp_path, run_dir, actors):
        child = attach(run_dir, [python37, "-m", "actors.child", "--run-dir", run_dir,
                                 "--restart", "--name", "relay37", "tests.sample_actors:Relay"],
                       tmp_path / "attach37.log")
        try:
            wait_attached(run_dir, "relay37")
            answer = relay_once(run_dir, "from 3.11 via 3.7")
            assert answer == {"answer": "from 3.11 via 3.7", "python": [3, 7]}
        finally:
            child.terminate()
            assert child.wait(30) == 0, (tmp_path / "attach37.log").read_text()


# -- test 7: restart intensity -------------------------------------------------------------------

def test_restart_intensity_exceeded_stops_the_host_with_a_non_zero_exit(
        tmp_path: Path, run_dir: str) -> None:
    actors = [{"name": "steady", "class": "tests.sample_actors:Echo"},
              {"name": "doomed", "class": "tests.sample_actors:CrashOnStart"}]
    config_path = write_config(tmp_path, run_dir, actors, supervisor={
        "backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.2, "max_restarts": 3,
        "restart_window_seconds": 60.0})
    host = HostProcess(config_path, run_dir, tmp_path / "host.log")
    try:
        assert host.wait(60) == 1
    finally:
        host.stop()
    output = host.output()
    assert "restart intensity exceeded" in output
    assert output.index("restart intensity exceeded") < output.rindex("stopping")
    assert "Traceback" not in output
    assert not os.path.exists(os.path.join(run_dir, "bus.json"))


# -- test 9: tap ---------------------------------------------------------------------------------

def test_tap_prints_decoded_messages_of_a_topic_and_costs_nothing_untapped(
        tmp_path: Path, run_dir: str) -> None:
    actors = [{"name": "ticker", "class": "tests.sample_actors:Ticker",
               "settings": {"interval_seconds": 0.01}}]
    with host_process(tmp_path, run_dir, actors) as host:
        wait_for(lambda: host.status()["router"]["unrouted"] > 20, 30, "ticks on the bus")
        assert host.status()["router"]["tap_copies"] == 0
        tap = subprocess.run(
            [sys.executable, "-m", "actors.cli", "tap", "--run-dir", run_dir, "--json",
             "--count", "5", "--topic", "demo.tick.1"],
            cwd=str(REPO_ROOT), capture_output=True, timeout=60, check=True)
        lines = [json.loads(line) for line in tap.stdout.decode().splitlines()]
        assert len(lines) == 5
        for line in lines:
            assert line["topic"] == "demo.tick.1"
            assert line["type"] == "demo.tick"
            assert line["sender"] == "ticker"
            assert line["body"]["n"] % 3 == 1
            assert set(line) >= {"topic", "type", "sender", "seq", "ts", "body"}
        seqs = [line["seq"] for line in lines]
        assert seqs == sorted(seqs)
        assert host.status()["router"]["tap_copies"] >= 5


# -- test 10: SIGTERM drains ---------------------------------------------------------------------

def test_sigterm_delivers_every_queued_message_then_exits_zero_without_traceback(
        tmp_path: Path, run_dir: str) -> None:
    record = tmp_path / "record.txt"
    actors = [{"name": "recorder", "class": "tests.sample_actors:Recorder",
               "settings": {"path": str(record), "delay_seconds": 0.002}}]
    total = 2000
    with host_process(tmp_path, run_dir, actors, shutdown={"drain_seconds": 120.0}) as host:
        probe = Probe("probe", bus_endpoint(run_dir))
        for value in range(total):
            probe.publish("record.x", value, "record")
        probe.close()
        wait_for(lambda: record.exists() and len(record.read_text().splitlines()) > 50, 30,
                 "the recorder to be mid-stream")
        depth = host.status()["actors"]["recorder"]["depth"]
        assert depth > 0  # messages are in flight when the signal arrives
        host.signal(signal.SIGTERM)
        assert host.wait(120) == 0
        output = host.output()
    assert [int(line) for line in record.read_text().splitlines()] == list(range(total))
    assert "Traceback" not in output
    assert "still has" not in output and "is gone with" not in output


# -- operator surface ----------------------------------------------------------------------------

def test_status_command_shows_actors_and_http_endpoints_answer(
        tmp_path: Path, run_dir: str) -> None:
    actors = [{"name": "echo", "class": "tests.sample_actors:Echo"}]
    with host_process(tmp_path, run_dir, actors):
        text = subprocess.run([sys.executable, "-m", "actors.cli", "status", "--run-dir",
                               run_dir], cwd=str(REPO_ROOT), capture_output=True, timeout=30,
                              check=True).stdout.decode()
        assert "echo" in text and "running" in text and "thread" in text
        data = json.loads(subprocess.run(
            [sys.executable, "-m", "actors.cli", "status", "--run-dir", run_dir, "--json"],
            cwd=str(REPO_ROOT), capture_output=True, timeout=30, check=True).stdout)
        assert data["actors"]["echo"]["state"] == "running"
        assert {"depth", "peak", "restarts", "dead_letters", "backpressure_events",
                "pid", "placement"} <= set(data["actors"]["echo"])

        with open(os.path.join(run_dir, "host.json")) as handle:
            port = json.load(handle)["http_port"]
        base = "http://127.0.0.1:{}".format(port)
        with urllib.request.urlopen(base + "/livez", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(base + "/readyz", timeout=10) as response:
            assert json.load(response) == {"ready": True, "not_running": [], "reasons": []}
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'fxcm_bus_mailbox_messages{actor="echo"}' in metrics
        assert 'fxcm_actor_restarts_total{actor="echo"} 0.0' in metrics
        assert "fxcm_bus_malformed_frames_total 0.0" in metrics


def test_metrics_that_actors_report_in_their_status_are_exported(
        tmp_path: Path, run_dir: str) -> None:
    actors = [{"name": "metered", "class": "tests.sample_actors:Metered"}]
    with host_process(tmp_path, run_dir, actors, bus={"status_interval_seconds": 0.2}):
        with open(os.path.join(run_dir, "host.json")) as handle:
            port = json.load(handle)["http_port"]

        def metrics() -> str:
            url = "http://127.0.0.1:{}/metrics".format(port)
            with urllib.request.urlopen(url, timeout=10) as response:
                text: str = response.read().decode()
                return text

        text = wait_for(lambda: next((m for m in [metrics()] if "fxcm_test_widgets" in m), ""),
                        30, "the actor's metrics on /metrics")
        assert 'fxcm_test_widgets_total{kind="blue"} 3.0' in text
        assert 'fxcm_test_widgets_total{kind="red"} 4.0' in text
        assert "fxcm_test_temperature 21.5" in text
        assert "$host" not in bus_status(run_dir)["actors"]


def test_second_host_on_the_same_run_dir_is_refused(tmp_path: Path, run_dir: str) -> None:
    with host_process(tmp_path, run_dir, []) as first:
        (tmp_path / "second").mkdir()
        second = HostProcess(write_config(tmp_path / "second", run_dir, []), run_dir,
                             tmp_path / "second.log")
        assert second.wait(60) == 2
        second.stop()
        assert "in use by another host (pid {})".format(first.proc.pid) in second.output()
        assert first.proc.poll() is None
        assert bus_status(run_dir)["host"]["pid"] == first.proc.pid


def test_bad_setting_stops_the_host_with_one_line_naming_the_key(
        tmp_path: Path, run_dir: str) -> None:
    path = write_config(tmp_path, run_dir, [], bus={"credit_window": 0})
    host = HostProcess(path, run_dir, tmp_path / "host.log")
    assert host.wait(60) == 2
    host.stop()
    output = host.output()
    assert "bus.credit_window: must be >= 1, got 0" in output
    assert "Traceback" not in output
