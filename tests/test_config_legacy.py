"""The predecessor's settings keep their meaning (seed 001 section 6, config/legacy.py).

First the loading itself (config.load with a given environment, no sockets): the seed's own
``runtime_settings.json`` example and the predecessor's real files map onto our keys, keys
without an equivalent are warned about one line each, a key that is neither ours nor theirs is
still refused, and every variable of the seed's table is honoured or warned about. Then real
hosts: the seed's example and the predecessor's files start one on the sim broker and bars reach
Redis; an external password-protected Redis named only by FXCM_REDIS_HOST/PORT/PASSWORD
receives the stream and no embedded server starts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import config
from actors._parent import exit_with_parent
from actors._redis_server import find_redis_server
from config.envfile import load_env_files
from config.legacy import ENV_ALIASES, ENV_IGNORED, LEGACY_KEYS, REDIS_VARIABLES, Dropped
from config.settings import ENVIRONMENT, REQUIRED_VERSION, VERSION_OVERRIDE, redact_url
from protocol.errors import ConfigError
from tests.helpers import (
    REPO_ROOT,
    HostProcess,
    RedisSubscriber,
    embedded_redis_url,
    open_calendar,
    wait_for,
)

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "predecessor"
SEED_EXAMPLE = FIXTURES / "seed_001_runtime_settings.json"  # seed 001 section 6.2, verbatim
PREDECESSOR_FILES = [FIXTURES / "runtime_settings.json",
                     FIXTURES / "runtime_settings_20_assets.json"]
SEED = Path("/work/shared/reference/seeds/001_113a6731a439d375.txt")


def load(data: dict[str, Any] | Path | None = None, tmp_path: Path | None = None,
         **environ: Any) -> config.Settings:
    if isinstance(data, dict):
        assert tmp_path is not None
        path: Path | None = tmp_path / "settings.json"
        assert path is not None
        path.write_text(json.dumps(data))
    else:
        path = data
    return config.load(str(path) if path else None, environ=environ)


def warned(settings: config.Settings, key: str) -> list[str]:
    return [line for line in settings.warnings if line.startswith(key + ":")]


# -- runtime_settings.json ---------------------------------------------------------------------

def test_the_seeds_example_maps_onto_our_settings() -> None:
    settings = load(SEED_EXAMPLE)
    raw = settings.raw
    assert raw["symbols"] == ["XAUUSD", "EURUSD"]
    assert raw["history_poller"]["targets"] == "XAUUSD:1m,XAUUSD:5m,EURUSD:1m,EURUSD:5m"
    assert raw["history_poller"]["poll_seconds"] == 5
    assert raw["history_poller"]["max_bars"] == 3000
    assert raw["history_poller"]["warmup_bars"] == 1000
    assert raw["history_poller"]["dynamic_universe_default_targets"] == "XAUUSD:1m,XAUUSD:5m"
    assert raw["snapshotter"]["price_snap_interval_seconds"] == 3
    assert raw["channels"]["price_tik"] == "fxcm:price_tik"
    assert raw["channels"]["status"] == "fxcm:status"
    quota = raw["fxcm_session"]["quota"]
    assert quota["max_calls_per_min"] == 360 and quota["max_calls_per_hour"] == 7200
    assert quota["min_interval_seconds"] == {"1m": 2, "5m": 6}
    assert quota["priority_targets"] == ["XAUUSD:1m"]
    assert quota["load_thresholds"] == {"min_interval": 0.7, "warn": 0.9, "reserve": 0.9,
                                        "critical": 0.95}
    assert raw["fxcm_session"]["history_backoff"] == {"base_seconds": 6, "max_seconds": 120,
                                                      "multiplier": 2, "jitter": 0.3}
    assert raw["redis_publisher"]["redis_backoff"]["max_seconds"] == 45
    assert raw["command_handler"]["redis_backoff"]["max_seconds"] == 45
    assert raw["fxcm_session"]["login_backoff"] == {"base_seconds": 2.0, "max_seconds": 60.0,
                                                    "multiplier": 2.0, "jitter": 0.2}
    assert raw["tick_aggregator"]["max_synth_gap_minutes"] == 60
    # the viewer section is ours too: the seed's thresholds take effect as they are
    assert raw["viewer"]["ohlcv_lag_error_seconds"] == 120
    assert raw["viewer"]["timeline_history_max"] == 2400


def test_each_seed_key_without_an_equivalent_is_warned_about_once_by_name() -> None:
    settings = load(SEED_EXAMPLE)
    for key in ("stream.mode", "stream.async_supervisor", "stream.publish_interval_seconds",
                "stream.lookback_minutes", "stream.tick_aggregation_enabled", "sample_request",
                "backoff.fxcm_stream", "viewer.heartbeat_channel", "viewer.lag_spike_threshold",
                "viewer.timeline_matrix_rows"):
        lines = warned(settings, key)
        assert len(lines) == 1, (key, settings.warnings)
        rule = LEGACY_KEYS[key]
        assert isinstance(rule, Dropped) and rule.reason in lines[0]
    # the older Redis backoff key is superseded by the newer one given in the same file
    assert len(warned(settings, "backoff.redis_stream")) == 1
    # mapped keys are not warned about, and are named in one note
    assert not warned(settings, "stream.config") and not warned(settings, "stream.history_backoff")
    assert any("stream.config -> history_poller.targets, symbols" in note
               for note in settings.notes)


@pytest.mark.parametrize("path", PREDECESSOR_FILES, ids=lambda path: path.name)
def test_the_predecessors_real_files_load(path: Path) -> None:
    data = json.loads(path.read_text())
    settings = load(path)
    raw = settings.raw
    assert raw["history_poller"]["targets"].split(",")[:4] == [
        "XAUUSD:1m", "XAUUSD:5m", "XAUUSD:1h", "XAUUSD:4h"]  # h1/h4 in the predecessor's words
    assert raw["history_poller"]["max_bars"] == data["cache"]["max_bars"]
    assert raw["history_poller"]["max_targets"] == data["stream"]["dynamic_universe_max_targets"]
    assert raw["history_poller"]["dynamic_universe_enabled"] is True
    assert raw["fxcm_session"]["quota"]["load_thresholds"]["warn"] == 0.85
    for key in ("stream.tick_cadence", "stream.mtf_crosscheck",
                "stream.telemetry_min_publish_interval_seconds",
                "viewer.sleep_model_gap_threshold_minutes"):
        assert len(warned(settings, key)) == 1, key
    symbols = raw["symbols"]
    assert symbols[0] == "XAUUSD" and len(symbols) == len(set(symbols))


@pytest.mark.parametrize("data, key", [
    ({"stream": {"confg": "XAU/USD:m1"}}, "stream.confg"),
    ({"symbolz": ["EURUSD"]}, "symbolz"),
    ({"cache": {"max_barz": 10}}, "cache.max_barz"),
    ({"viewer": {"heartbeat_alert_secs": 10}}, "viewer.heartbeat_alert_secs"),
    ({"backoff": {"fxcm_logins": {}}}, "backoff.fxcm_logins"),
    ({"backoff": {"fxcm_login": {"base_dela": 1}}}, "backoff.fxcm_login.base_dela"),
    ({"stream": {"history_min_interval_seconds_m7": 2}},
     "stream.history_min_interval_seconds_m7"),
])
def test_a_key_that_is_neither_ours_nor_the_predecessors_is_refused(
        tmp_path: Path, data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match="^{}: unknown setting".format(re.escape(key))):
        load(data, tmp_path)


def test_a_predecessor_value_of_the_wrong_type_names_our_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="snapshotter.price_snap_interval_seconds: must be a "
                                          "number"):
        load({"stream": {"price_snap_interval_seconds": "3"}}, tmp_path)
    with pytest.raises(ConfigError, match="^stream.config: unknown timeframe"):
        load({"stream": {"config": "XAU/USD:m7"}}, tmp_path)


def test_the_predecessors_target_spellings(tmp_path: Path) -> None:
    settings = load({"stream": {"config": [
        "XAU/USD:h1, EUR/USD", {"pair": "GBP/USD", "timeframe": "d1"},
        {"symbol": "USDJPY", "tf": "m60"}, "XAU/USD:h1"]}}, tmp_path)
    assert settings.raw["history_poller"]["targets"] == \
        "XAUUSD:1h,EURUSD:1m,GBPUSD:1d,USDJPY:1h"
    assert settings.raw["symbols"] == ["XAUUSD", "EURUSD", "GBPUSD", "USDJPY"]


def test_our_own_key_wins_over_the_predecessors_in_the_same_file(tmp_path: Path) -> None:
    settings = load({"stream": {"price_snap_interval_seconds": 3, "config": "XAU/USD:m1"},
                     "snapshotter": {"price_snap_interval_seconds": 1.0},
                     "symbols": ["EURUSD"]}, tmp_path)
    assert settings.raw["snapshotter"]["price_snap_interval_seconds"] == 1.0
    assert settings.raw["symbols"] == ["EURUSD"]
    assert settings.raw["history_poller"]["targets"] == "XAUUSD:1m"


def test_fetch_interval_wins_over_poll_seconds_as_in_the_predecessor(tmp_path: Path) -> None:
    settings = load({"stream": {"poll_seconds": 9, "fetch_interval_seconds": 4}}, tmp_path)
    assert settings.raw["history_poller"]["poll_seconds"] == 4


def test_the_environment_wins_over_the_predecessors_file(tmp_path: Path) -> None:
    settings = load({"stream": {"backfill_max_minutes": 360, "status_channel": "a:status"}},
                    tmp_path, FXCM_BACKFILL_MAX_MINUTES="120", FXCM_STATUS_CHANNEL="b:status")
    assert settings.raw["history_poller"]["backfill_max_minutes"] == 120
    assert settings.raw["channels"]["status"] == "b:status"


def test_our_renamed_redis_port_key_still_loads_with_a_warning(tmp_path: Path) -> None:
    settings = load({"redis": {"port": 6390}}, tmp_path)
    assert settings.raw["redis"]["embedded_port"] == 6390 and "port" not in settings.raw["redis"]
    assert warned(settings, "redis.port")


# -- environment -------------------------------------------------------------------------------

def seed_variables() -> set[str]:
    """Every variable in the seed's tables 6.1 and 6.1.1."""
    text = SEED.read_text()
    section = text[text.index("### 6.1 Змінні середовища"):text.index("### 6.2 Runtime JSON")]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`((?:FXCM|AI_ONE)_[A-Z0-9_]+)`", line.split("|")[1]))
    return names


# read directly where they are used: the SDK's login (fxcm_session), signing (redis_publisher,
# command_handler), the env-file dispatcher (config/envfile.py)
READ_WHERE_USED = {"FXCM_USERNAME", "FXCM_PASSWORD", "FXCM_CONNECTION", "FXCM_HOST_URL",
                   "FXCM_HMAC_SECRET", "AI_ONE_ENV_FILE"}


@pytest.mark.skipif(not SEED.exists(), reason="the seeds are not on this machine")
def test_every_variable_of_the_seeds_table_is_honoured_or_warned_about() -> None:
    from tests.test_deploy import variables_the_code_reads

    handled = (set(ENVIRONMENT) | set(REDIS_VARIABLES) | set(ENV_IGNORED) | READ_WHERE_USED)
    names = seed_variables()
    assert len(names) >= 25, names
    assert names - handled == set()
    assert names - {"AI_ONE_ENV_FILE"} <= variables_the_code_reads()


def test_seed_variables_set_their_settings() -> None:
    settings = load(None, FXCM_CACHE_ENABLED="0", FXCM_SESSION_TAG="LDN_METALS",
                    FXCM_DYNAMIC_UNIVERSE_ENABLED="true",
                    FXCM_DYNAMIC_UNIVERSE_DEFAULT_TARGETS="XAU/USD:m1,XAU/USD:h4",
                    FXCM_DYNAMIC_UNIVERSE_MAX_TARGETS="7", FXCM_BACKFILL_MIN_MINUTES="5",
                    FXCM_STREAM_CONFIG="EUR/USD:m5", FXCM_METRICS_ENABLED="0",
                    FXCM_REDIS_REQUIRED="0", FXCM_CHANNEL_PREFIX="fxcm_local")
    raw = settings.raw
    assert raw["cache"]["enabled"] is False
    assert raw["heartbeat"]["session_tag"] == "LDN_METALS"
    assert raw["history_poller"]["dynamic_universe_enabled"] is True
    assert raw["history_poller"]["dynamic_universe_default_targets"] == "XAUUSD:1m,XAUUSD:4h"
    assert raw["history_poller"]["max_targets"] == 7
    assert raw["history_poller"]["backfill_min_minutes"] == 5
    assert raw["history_poller"]["targets"] == "EURUSD:5m"
    assert settings.http.enabled is False
    assert raw["redis"]["required"] is False
    assert raw["channels"]["prefix"] == "fxcm_local"
    assert load(None, FXCM_SESSION_TAG=" ").raw["heartbeat"]["session_tag"] == "AUTO"


def test_metrics_port_is_an_alias_of_http_port_and_http_port_wins() -> None:
    assert load(None, FXCM_METRICS_PORT="9300").http.port == 9300
    same = load(None, FXCM_METRICS_PORT="9300", FXCM_HTTP_PORT="9300")
    assert same.http.port == 9300 and same.warnings == ()
    both = load(None, FXCM_METRICS_PORT="9300", FXCM_HTTP_PORT="9400")
    assert both.http.port == 9400
    (line,) = both.warnings
    assert line.startswith("FXCM_METRICS_PORT=9300: ignored, FXCM_HTTP_PORT=9400")
    assert ENV_ALIASES["FXCM_METRICS_ENABLED"] == "FXCM_HTTP_ENABLED"
    assert load(None, FXCM_METRICS_ENABLED="0", FXCM_HTTP_ENABLED="1").http.enabled is True


def test_ingestor_variables_are_warned_about() -> None:
    settings = load(None, FXCM_INGEST_ALLOWED_SYMBOLS="XAU/USD", FXCM_INGEST_MAX_BATCH="10")
    assert len(warned(settings, "FXCM_INGEST_ALLOWED_SYMBOLS")) == 1
    assert len(warned(settings, "FXCM_INGEST_MAX_BATCH")) == 1


@pytest.mark.parametrize("environ, url", [
    ({"FXCM_REDIS_HOST": "10.1.2.3"}, "redis://10.1.2.3:6379/0"),
    ({"FXCM_REDIS_PORT": "6390"}, "redis://127.0.0.1:6390/0"),
    ({"FXCM_REDIS_PASSWORD": "p@ss:w/rd"}, "redis://:p%40ss%3Aw%2Frd@127.0.0.1:6379/0"),
    ({"FXCM_REDIS_HOST": "redis", "FXCM_REDIS_PORT": "6380", "FXCM_REDIS_PASSWORD": "x"},
     "redis://:x@redis:6380/0"),
    ({"FXCM_REDIS_HOST": "::1"}, "redis://[::1]:6379/0"),
    ({"FXCM_REDIS_URL": "redis://db:6000/2", "FXCM_REDIS_PASSWORD": "x"},
     "redis://:x@db:6000/2"),
    ({}, "embedded"),
])
def test_redis_host_port_password_name_an_external_redis(environ: dict[str, str],
                                                         url: str) -> None:
    settings = load(None, None, **environ)
    assert settings.raw["redis"]["url"] == url
    assert settings.warnings == ()
    if url != "embedded":
        client = redis.Redis.from_url(url)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs.get("password") == environ.get("FXCM_REDIS_PASSWORD")
        client.close()


def test_the_configured_external_url_takes_the_parts_that_are_named(tmp_path: Path) -> None:
    settings = load({"redis": {"url": "rediss://cache.example:6400/3"}}, tmp_path,
                    FXCM_REDIS_PORT="6401")
    assert settings.raw["redis"]["url"] == "rediss://cache.example:6401/3"


def test_redis_url_variable_wins_over_host_and_port_with_a_warning() -> None:
    settings = load(None, FXCM_REDIS_URL="redis://db:6000/0", FXCM_REDIS_HOST="other",
                    FXCM_REDIS_PORT="7000")
    assert settings.raw["redis"]["url"] == "redis://db:6000/0"
    (line,) = settings.warnings
    assert line.startswith("FXCM_REDIS_HOST, FXCM_REDIS_PORT: ignored, FXCM_REDIS_URL")


def test_a_bad_redis_port_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="^FXCM_REDIS_PORT: must be a port number"):
        load(None, FXCM_REDIS_PORT="six")
    with pytest.raises(ConfigError, match="^FXCM_REDIS_PORT: must be within 1..65535"):
        load(None, FXCM_REDIS_PORT="0")


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
    ("rediss://feed:s3:cr@t@db:6380/1", "rediss://feed:***@db:6380/1"),
    ("redis://feed@db:6379/0", "redis://feed@db:6379/0"),
    ("redis://db:6379/0", "redis://db:6379/0"),
    ("unix:///run/fxcm/redis.sock", "unix:///run/fxcm/redis.sock"),
    ("default:s3cret@db:6379", "default:***@db:6379"),  # no scheme: a config error shows it
    ("redis://db:6379/0?password=s3cret&db=1", "redis://db:6379/0?password=***&db=1"),
])
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_malformed_redis_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigError, match="^redis.url: must be") as refused:
        load(None, FXCM_REDIS_URL="http://feed:s3cret@db:6379/0")
    assert "s3cret" not in str(refused.value) and "feed:***@db" in str(refused.value)


def test_the_embedded_servers_port_has_a_name_of_its_own() -> None:
    settings = load(None, FXCM_EMBEDDED_REDIS_PORT="6399")
    assert settings.raw["redis"] == {"url": "embedded", "embedded_port": 6399, "required": True}


def test_the_version_override_and_the_required_version() -> None:
    assert load(None).version == config.settings.package_version()
    assert load(None, None, **{VERSION_OVERRIDE: "3.3"}).version == "3.3"
    load(None, None, **{VERSION_OVERRIDE: "3.3", REQUIRED_VERSION: "3.3"})
    with pytest.raises(ConfigError, match="^FXCM_CONNECTOR_REQUIRED_VERSION: this connector "
                                          "is version 3.3, 3.4 is required"):
        load(None, None, **{VERSION_OVERRIDE: "3.3", REQUIRED_VERSION: "3.4"})


def test_a_relative_cache_dir_is_taken_from_the_state_directory_else_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(None).raw["cache"]["dir"] == str(tmp_path / "cache")
    state = load(None, STATE_DIRECTORY="/var/lib/fxcm:/var/lib/other", FXCM_CACHE_DIR="c1")
    assert state.raw["cache"]["dir"] == "/var/lib/fxcm/c1"
    assert load(None, FXCM_CACHE_DIR="/srv/cache").raw["cache"]["dir"] == "/srv/cache"


# -- the env-file dispatcher (AI_ONE_ENV_FILE) -------------------------------------------------

def test_dot_env_then_the_profile_it_names_and_the_real_environment_wins(
        tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AI_ONE_ENV_FILE=.env.local\n"
                                   "FXCM_CONNECTOR_VERSION_OVERRIDE=3.3\nFXCM_A=from-dispatcher\n")
    (tmp_path / ".env.local").write_text(
        "# the local profile\nexport FXCM_CHANNEL_PREFIX=fxcm_local\nFXCM_A=from-profile\n"
        "FXCM_B=from-profile\nFXCM_USERNAME='u $x'  # a comment\n"
        'FXCM_C="${FXCM_CHANNEL_PREFIX}:ohlcv\\tx"\nFXCM_D=${MISSING:-fallback} # c\n'
        "FXCM_E=a#b\n")
    environ = {"FXCM_B": "from-environment"}
    read = load_env_files(environ, str(tmp_path))
    assert read == [str(tmp_path / ".env"), str(tmp_path / ".env.local")]
    assert environ == {"AI_ONE_ENV_FILE": ".env.local", "FXCM_CONNECTOR_VERSION_OVERRIDE": "3.3",
                       "FXCM_A": "from-dispatcher", "FXCM_B": "from-environment",
                       "FXCM_CHANNEL_PREFIX": "fxcm_local", "FXCM_USERNAME": "u $x",
                       "FXCM_C": "fxcm_local:ohlcv\tx", "FXCM_D": "fallback", "FXCM_E": "a#b"}


def test_a_profile_named_in_the_real_environment_is_read_without_a_dot_env(
        tmp_path: Path) -> None:
    profile = tmp_path / "prod.env"
    profile.write_text("FXCM_CHANNEL_PREFIX=fxcm\n")
    environ = {"AI_ONE_ENV_FILE": str(profile)}
    assert load_env_files(environ, str(tmp_path / "elsewhere")) == [str(profile)]
    assert environ["FXCM_CHANNEL_PREFIX"] == "fxcm"
    assert load_env_files({}, str(tmp_path / "elsewhere")) == []


def test_a_missing_profile_or_a_bad_line_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AI_ONE_ENV_FILE=.env.prod\n")
    with pytest.raises(ConfigError, match="^AI_ONE_ENV_FILE: names .*/.env.prod, which does "
                                          "not exist"):
        load_env_files({}, str(tmp_path))
    (tmp_path / ".env").write_text("FXCM_A=1\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:2: not a KEY=VALUE line"):
        load_env_files({}, str(tmp_path))


def test_fxcm_reads_the_dispatcher_before_any_command(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AI_ONE_ENV_FILE=profile.env\n")
    (tmp_path / "profile.env").write_text("FXCM_RUN_DIR={}\n".format(tmp_path / "nohost"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("FXCM_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run([sys.executable, "-m", "actors.cli", "status"], cwd=str(tmp_path),
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "no host runs in {}".format(tmp_path / "nohost")
    (tmp_path / "profile.env").write_text("garbage\n")
    result = subprocess.run([sys.executable, "-m", "actors.cli", "status"], cwd=str(tmp_path),
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "fxcm status: {}:1: not a KEY=VALUE line".format(
        tmp_path / "profile.env")


# -- real hosts --------------------------------------------------------------------------------

@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fxcm-l-")
    yield path
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def start_host(config_path: Path, run_dir: str, tmp_path: Path, **environ: str) -> HostProcess:
    """``fxcm host --config FILE`` with the test's places given by variables, so that the file
    itself is the operator's, unchanged."""
    env = dict(FXCM_RUN_DIR=run_dir, FXCM_HTTP_PORT="0", FXCM_EMBEDDED_REDIS_PORT="0",
               FXCM_CACHE_DIR=str(tmp_path / "cache"),
               FXCM_CALENDAR_PATH=str(open_calendar(tmp_path)), **environ)
    return HostProcess(config_path, run_dir, tmp_path / "host.log", env)


def bars_and_prices_flow(url: str, symbols: list[str], host: HostProcess) -> None:
    subscriber = RedisSubscriber(url, ["fxcm:ohlcv", "fxcm:price_tik"])
    try:
        def seen(channel: str) -> set[str]:
            if host.proc.poll() is not None:
                raise AssertionError("host exited:\n" + host.output())
            return {payload["symbol"] for payload in subscriber.payloads(channel)}
        wait_for(lambda: set(symbols) <= seen("fxcm:ohlcv"), 90, "bars of {}".format(symbols),
                 interval=0.2)
        wait_for(lambda: set(symbols) <= seen("fxcm:price_tik"), 60,
                 "prices of {}".format(symbols), interval=0.2)
    finally:
        subscriber.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", [SEED_EXAMPLE] + PREDECESSOR_FILES, ids=lambda path: path.name)
def test_a_predecessor_settings_file_starts_a_host_and_bars_flow(
        path: Path, tmp_path: Path, short_dir: str) -> None:
    host = start_host(path, short_dir, tmp_path)
    try:
        host.wait_ready(("redis_publisher", "history_poller", "fxcm_session"), timeout=90)
        settings = load(path)
        bars_and_prices_flow(embedded_redis_url(short_dir),
                             settings.raw["symbols"][:2], host)
        log = host.output()
        for line in settings.warnings:
            assert log.count(line) == 1, line
        assert "the predecessor's keys mapped: " in log
    finally:
        host.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def protected_redis(short_dir: str) -> Iterator[tuple[int, str]]:
    """An operator's own Redis on TCP, with a password (not the embedded one)."""
    port, password = free_port(), "s3cret-pass"
    data = os.path.join(short_dir, "ext")
    os.makedirs(data)
    process = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass",
         password, "--save", "", "--appendonly", "no", "--dir", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=exit_with_parent)

    def answers() -> bool:
        try:
            return bool(redis.Redis(port=port, password=password, socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    try:
        wait_for(answers, 30, "the external redis-server")
        yield port, password
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.timeout(180)
def test_an_external_redis_named_by_host_port_password_gets_the_stream(
        tmp_path: Path, short_dir: str, protected_redis: tuple[int, str]) -> None:
    port, password = protected_redis
    config_path = tmp_path / "empty.json"
    config_path.write_text(json.dumps({"symbols": ["EURUSD", "XAUUSD"]}))
    host = start_host(config_path, short_dir, tmp_path, FXCM_REDIS_HOST="127.0.0.1",
                      FXCM_REDIS_PORT=str(port), FXCM_REDIS_PASSWORD=password)
    try:
        host.wait_ready(("redis_publisher", "fxcm_session"), timeout=90)
        bars_and_prices_flow("redis://:{}@127.0.0.1:{}/0".format(password, port),
                             ["EURUSD", "XAUUSD"], host)
        assert not os.path.exists(os.path.join(short_dir, "redis.sock"))
        children = subprocess.run(["ps", "-o", "comm=", "--ppid", str(host.proc.pid)],
                                  capture_output=True, text=True).stdout
        assert "redis-server" not in children
        assert password not in host.output()
    finally:
        host.stop()
