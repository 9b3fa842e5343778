"""``fxcm command``: a real host (the whole pipeline on the sim broker, embedded Redis), the CLI
in its own process as an operator runs it, and a few pure checks of what it builds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import config
from actors.command_handler import Verifier
from actors.tools.command import add_arguments, build_command, command_args
from protocol.errors import ConfigError
from tests.helpers import REPO_ROOT, HostProcess, embedded_redis_url, host_process, open_calendar

KID = "ops-cli"
SECRET = "the right secret for the cli"
SYMBOLS = ["EURUSD", "XAUUSD"]



def collapsed(states: list[str]) -> list[str]:
    """The states in order, repeats folded: a long step reports its progress in several
    ``running`` results."""
    return [state for index, state in enumerate(states) if index == 0 or states[index - 1] != state]

def clean_env(**extra: str) -> dict[str, str]:
    """The runner's environment without any FXCM_* that could point the CLI elsewhere."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FXCM_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def fxcm_command(*argv: str, env: dict[str, str] | None = None,
                 timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actors.cli", "command", *argv],
                          cwd=str(REPO_ROOT), env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fxcm-c-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pipeline_host(base: Path, env: dict[str, str] | None = None) -> Any:
    """The shipped actors (the real pipeline) on the sim broker, a calendar open around now."""
    base.mkdir(parents=True, exist_ok=True)
    run_dir = tempfile.mkdtemp(prefix="fxcm-c-")
    actors = config.settings.load_defaults()["actors"]
    return run_dir, host_process(base, run_dir, actors, env=env, symbols=SYMBOLS,
                                 calendar_file=str(open_calendar(base)),
                                 cache={"dir": str(base / "cache")})


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    run_dir, context = pipeline_host(tmp_path_factory.mktemp("plain"))
    try:
        with context as running:
            yield running
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def signed_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    run_dir, context = pipeline_host(tmp_path_factory.mktemp("signed"),
                                     env={"FXCM_HMAC_KID": KID, "FXCM_HMAC_SECRET": SECRET})
    try:
        with context as running:
            yield running
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def results(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# -- against a running host -------------------------------------------------------------------

def test_backfill_returns_ok_with_its_counts_and_exits_0(host: HostProcess) -> None:
    done = fxcm_command("backfill", "--run-dir", host.run_dir, "--symbol", "XAUUSD",
                        "--lookback-minutes", "60", "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    states = results(done.stdout)
    assert collapsed([item["state"] for item in states]) == ["accepted", "running", "ok"]
    assert len({item["req_id"] for item in states}) == 1
    final = states[-1]
    assert final["cmd"] == "fxcm_backfill"
    assert final["result"]["symbol"] == "XAUUSD"
    assert final["result"]["lookback_minutes"] == 60
    # the host's warmup may have stored the range already: then nothing is fetched
    fetched = final["result"]["missing_fetched"]
    assert 0 <= fetched <= 60
    assert final["result"]["requests"] >= (1 if fetched else 0)
    assert final["result"]["end_ms"] - final["result"]["start_ms"] == 60 * 60_000
    # every fetched minute was stored or already there (a Counter: zero counts are left out)
    if fetched:
        assert final["result"].get("stored", 0) + final["result"].get("duplicate", 0) >= 1
    # the range and the tail were published again (seed 004), whatever was fetched
    assert sum(final["result"]["published"].values()) >= 60, final["result"]


def test_human_output_is_a_line_per_state(host: HostProcess) -> None:
    done = fxcm_command("republish-tail", "--run-dir", host.run_dir, "--symbol", "EURUSD",
                        "--timeframes", "1m,5m", "--window-hours", "1")
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert collapsed([line.split()[0] for line in lines]) == ["accepted", "running", "ok"]
    assert all("fxcm_republish_tail" in line for line in lines)


def test_unknown_symbol_exits_1_with_the_handlers_error_code(host: HostProcess) -> None:
    done = fxcm_command("backfill", "--run-dir", host.run_dir, "--symbol", "NOPEUSD",
                        "--lookback-minutes", "60")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout.startswith("error")
    assert "contract_error" in done.stdout and "NOPEUSD" in done.stdout


def test_a_redis_url_from_the_environment_is_used(host: HostProcess) -> None:
    url = embedded_redis_url(host.run_dir)
    done = fxcm_command("tail-guard", "--symbols", "EURUSD", "--window-hours", "1",
                        "--run-dir", tempfile.gettempdir(), "--json",
                        env=clean_env(FXCM_REDIS_URL=url))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert results(done.stdout)[-1]["state"] == "ok"


def test_a_signed_command_is_accepted_by_a_host_that_requires_signatures(
        signed_host: HostProcess) -> None:
    done = fxcm_command("backfill", "--run-dir", signed_host.run_dir, "--symbol", "EURUSD",
                        "--lookback-minutes", "30", "--json",
                        env=clean_env(FXCM_HMAC_KID=KID, FXCM_HMAC_SECRET=SECRET))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "signed, kid {}".format(KID) in done.stderr
    assert collapsed([item["state"] for item in results(done.stdout)]) == [
        "accepted", "running", "ok"]


def test_a_wrong_secret_is_refused_with_auth_failed_and_exit_1(
        signed_host: HostProcess) -> None:
    done = fxcm_command("backfill", "--run-dir", signed_host.run_dir, "--symbol", "EURUSD",
                        "--lookback-minutes", "30",
                        env=clean_env(FXCM_HMAC_KID=KID, FXCM_HMAC_SECRET="not the secret"))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "auth_failed" in done.stdout


def test_an_unsigned_command_is_refused_by_a_host_that_requires_signatures(
        signed_host: HostProcess) -> None:
    done = fxcm_command("backfill", "--run-dir", signed_host.run_dir, "--symbol", "EURUSD",
                        "--lookback-minutes", "30")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "auth_failed" in done.stdout


# -- no host ----------------------------------------------------------------------------------

def test_no_host_and_no_redis_exits_2_with_a_clear_line(short_dir: str) -> None:
    done = fxcm_command("backfill", "--run-dir", short_dir, "--symbol", "EURUSD", timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "no Redis" in done.stderr and short_dir in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_redis_url_exits_2_with_a_clear_line(short_dir: str) -> None:
    url = "unix://" + os.path.join(short_dir, "nobody.sock")
    done = fxcm_command("warmup", "--symbols", "EURUSD", "--redis-url", url, timeout=60)
    assert done.returncode == 2
    assert "cannot reach Redis at {}".format(url) in done.stderr
    assert "Traceback" not in done.stderr


# -- pure -------------------------------------------------------------------------------------

def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_options_become_the_args_the_handler_reads() -> None:
    assert command_args("warmup", parse("warmup", "--symbols", "EURUSD,XAUUSD",
                                        "--lookback-hours", "12", "--no-publish")) == {
        "symbols": ["EURUSD", "XAUUSD"], "lookback_hours": 12, "publish": False}
    assert command_args("tail-guard", parse("tail-guard", "--symbols", "EURUSD",
                                            "--window-hours", "6", "--repair")) == {
        "symbols": ["EURUSD"], "window_hours": 6, "repair": True}
    assert command_args("set-universe", parse("set-universe", "--targets",
                                              "EURUSD:1m,XAUUSD:5m")) == {
        "targets": ["EURUSD:1m", "XAUUSD:5m"]}
    assert command_args("bootstrap", parse(
        "bootstrap", "--warmup", '{"symbols": ["EURUSD"]}',
        "--tail-guard", '{"symbols": "EURUSD"}')) == {
        "warmup": {"symbols": ["EURUSD"]}, "tail_guard": {"symbols": "EURUSD"}}


def test_a_signed_command_verifies_with_the_handlers_verifier() -> None:
    message = build_command("fxcm_warmup", {"symbols": ["EURUSD"], "provider": "ünï"},
                            {"FXCM_HMAC_KID": KID, "FXCM_HMAC_SECRET": SECRET}, now=1_800_000_000)
    verifier = Verifier("required", {KID: SECRET.encode()}, 30.0)
    wire = json.loads(json.dumps(message))
    assert verifier.verify(wire["cmd"], wire["req_id"], wire["ts"], wire["args"],
                           wire["auth"], 1_800_000_001) == (KID, message["auth"]["nonce"])


def test_an_unsigned_command_has_no_auth_and_a_fresh_req_id() -> None:
    first = build_command("fxcm_backfill", {"symbol": "EURUSD"}, {})
    second = build_command("fxcm_backfill", {"symbol": "EURUSD"}, {})
    assert "auth" not in first and set(first) == {"cmd", "req_id", "ts", "args"}
    assert first["req_id"] != second["req_id"]


def test_a_secret_without_a_kid_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="FXCM_HMAC_KID"):
        build_command("fxcm_backfill", {"symbol": "EURUSD"}, {"FXCM_HMAC_SECRET": SECRET})
