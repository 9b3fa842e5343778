"""deploy/: the systemd unit, the env file, docker compose, Prometheus config and alert rules.

Docker and systemd do not run here; these tests check what can be checked without them: every
file parses, every FXCM_* variable is one the code reads, the config file loads, and the stop
timeouts outlast the host's orderly stop. That every series an alert uses exists is checked
against a running host's /metrics in tests/test_metrics_live.py.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import config
from config.settings import ENVIRONMENT, Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
UNIT = DEPLOY / "fxcm-connector.service"
ENV_EXAMPLE = DEPLOY / "fxcm.env.example"
CONFIG = DEPLOY / "config.json"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "alerts.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

VARIABLE = re.compile(r"\bFXCM_[A-Z0-9_]+\b")
ASSIGNMENT = re.compile(r"^(#\s*)?(FXCM_[A-Z0-9_]+)=(.*)$")


def read_unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser.read_string(UNIT.read_text())
    return parser


def env_example() -> dict[str, str]:
    """The active KEY=VALUE lines of the example env file."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match and not match.group(1):
            values[match.group(2)] = match.group(3)
    return values


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_host_environment() -> dict[str, str]:
    """What the host container sees: the env file, then compose's ``environment`` over it."""
    environment = dict(env_example())
    environment.update({k: str(v) for k, v in compose()["services"]["host"]["environment"]
                        .items()})
    return environment


def seconds(span: str) -> float:
    """A systemd/compose time span (``120``, ``120s``, ``2min 30s``, ``1m30s``) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span.strip())
    assert parts, "not a time span: {!r}".format(span)
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def worst_orderly_stop(settings: Settings) -> float:
    """The longest an orderly stop can take (actors/host.py ``_shutdown``): the drain time,
    then every actor's stop timeout in turn, plus the one-second join after each kill."""
    return settings.drain_seconds + sum(spec.stop_timeout_seconds + 1.0
                                        for spec in settings.actors)


def variables_the_code_reads() -> set[str]:
    """ENVIRONMENT (config overrides) and every FXCM_* name the code quotes (os.environ reads:
    credentials, HMAC keys, the log level of a child)."""
    names = set(ENVIRONMENT)
    for package in ("actors", "bus", "protocol", "config"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            names.update(re.findall(r"[\"'](FXCM_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


# -- systemd --------------------------------------------------------------------------------

def test_systemd_unit_runs_fxcm_host_with_an_environment_file_and_restarts_on_failure() -> None:
    unit = read_unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    command = service["ExecStart"].split()
    assert command[0].endswith("/bin/fxcm") and command[1:3] == ["host", "--config"]
    assert Path(command[3]).name == CONFIG.name
    assert service["EnvironmentFile"].startswith("/")
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_has_no_comment_at_the_end_of_a_line() -> None:
    # systemd would take "#..." as part of the value
    unit = read_unit()
    for section in unit.sections():
        for key, value in unit[section].items():
            assert "#" not in value, "{}.{} = {!r}".format(section, key, value)


def test_systemd_stop_timeout_exceeds_the_drain_and_every_actor_stop_timeout() -> None:
    settings = config.load(str(CONFIG), environ=env_example())
    longest_actor = max(spec.stop_timeout_seconds for spec in settings.actors)
    stop_timeout = seconds(read_unit()["Service"]["TimeoutStopSec"])
    assert stop_timeout > settings.drain_seconds + longest_actor
    assert stop_timeout > worst_orderly_stop(settings)


# -- env file and variables -----------------------------------------------------------------

def test_env_file_holds_only_comments_and_key_value_lines() -> None:
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), "line {}: {!r}".format(
            number, line)
        assert value == value.strip() and not value.startswith(("'", '"')), \
            "line {}: value must be bare: {!r}".format(number, line)


def test_env_file_leaves_every_secret_empty_or_commented() -> None:
    secrets = {"FXCM_USERNAME", "FXCM_PASSWORD", "FXCM_HMAC_SECRET"}
    active = env_example()
    for name in secrets:
        assert active.get(name, "") == "", "{} must not ship a value".format(name)
    documented = set(VARIABLE.findall(ENV_EXAMPLE.read_text()))
    assert secrets <= documented


def test_every_fxcm_variable_in_deploy_is_one_the_code_reads() -> None:
    known = variables_the_code_reads()
    for path in sorted(DEPLOY.iterdir()):
        used = set(VARIABLE.findall(path.read_text()))
        assert used <= known, "{} uses unknown variables {}".format(
            path.name, sorted(used - known))


def test_env_file_documents_every_variable_the_config_knows() -> None:
    documented = set(VARIABLE.findall(ENV_EXAMPLE.read_text()))
    missing = set(ENVIRONMENT) - documented
    assert not missing, "not in {}: {}".format(ENV_EXAMPLE.name, sorted(missing))


def test_config_file_loads_with_the_example_environment() -> None:
    settings = config.load(str(CONFIG), environ=env_example())
    assert settings.raw["broker"]["kind"] == "forexconnect"
    session = next(spec for spec in settings.actors if spec.name == "fxcm_session")
    assert session.placement == "process"
    assert session.python == env_example()["FXCM_PYTHON37"]
    # the predecessor's FXCM_REDIS_HOST/PORT name the external Redis
    example = env_example()
    assert settings.raw["redis"]["url"] == "redis://{}:{}/0".format(
        example["FXCM_REDIS_HOST"], example["FXCM_REDIS_PORT"])
    assert settings.warnings == ()


def test_every_commented_variable_of_the_env_file_loads_when_uncommented() -> None:
    environ = dict(env_example())
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match and match.group(1) and match.group(2) in ENVIRONMENT:
            environ[match.group(2)] = match.group(3)
    # the paths it names do not exist on this machine
    environ.pop("FXCM_CALENDAR_PATH", None)
    settings = config.load(str(CONFIG), environ=environ)
    assert settings.http.port == int(environ["FXCM_HTTP_PORT"])


# -- docker compose ---------------------------------------------------------------------------

def test_compose_runs_redis_the_host_and_prometheus() -> None:
    services = compose()["services"]
    assert {"redis", "host", "prometheus"} <= set(services)
    host = services["host"]
    assert (DEPLOY / host["build"]["context"] / host["build"]["dockerfile"]).resolve() \
        == DOCKERFILE.resolve()
    assert host["env_file"] == ["fxcm.env"] and ENV_EXAMPLE.name == "fxcm.env.example"
    assert "redis" in host["depends_on"]


def test_compose_host_config_points_redis_at_the_redis_service() -> None:
    settings = config.load(str(CONFIG), environ=compose_host_environment())
    assert settings.raw["redis"]["url"].startswith("redis://redis:")
    assert settings.http.host == "0.0.0.0"
    assert settings.raw["broker"]["kind"] == "sim"


def test_compose_stop_grace_period_exceeds_the_hosts_orderly_stop() -> None:
    settings = config.load(str(CONFIG), environ=compose_host_environment())
    grace = seconds(compose()["services"]["host"]["stop_grace_period"])
    assert grace > worst_orderly_stop(settings)


def test_prometheus_scrapes_the_host_metrics_port_and_loads_the_alert_rules() -> None:
    settings = config.load(str(CONFIG), environ=compose_host_environment())
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    job = jobs["fxcm"]
    assert job["metrics_path"] == "/metrics"
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets == ["host:{}".format(settings.http.port)]
    mounts = {volume.split(":")[1]: volume.split(":")[0]
              for volume in compose()["services"]["prometheus"]["volumes"]
              if volume.startswith("./")}
    for rule_file in prometheus["rule_files"]:
        assert (DEPLOY / mounts[rule_file]).resolve() == ALERTS.resolve()


def test_dockerfile_copies_what_exists_and_starts_fxcm_host() -> None:
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), source
    assert 'ENTRYPOINT ["fxcm", "host", "--config", "/etc/fxcm/config.json"]' in text


# -- alerts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", [
    "fxcm_stream_lag_seconds",                      # seed 001 section 9: lag
    'fxcm_connector_errors_total{type="cache_io"}',  # cache IO errors
    "fxcm_connector_heartbeat_timestamp",           # missing heartbeat
    "fxcm_redis_up",                                # Redis down
    "fxcm_redis_journal_bytes",                     # journal growing
    "fxcm_actor_restarts_total",                    # actor restarts
    "fxcm_invalid_state_transitions_total",         # a state machine bug (protocol/states.py)
])
def test_alert_rules_cover_seed_001_section_9_and_the_runtime(metric: str) -> None:
    assert any(metric in rule["expr"] for rule in alert_rules())


def test_every_alert_has_a_severity_and_a_summary() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            seconds(rule["for"])
