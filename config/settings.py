"""Settings: the shipped defaults, then a file given with ``--config``, then ``FXCM_*`` variables.

Validation happens once, at start: an unknown key, a wrong type or an impossible value raises
ConfigError with one line naming the key (``bus.credit_window: must be >= 1, got 0``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus._backoff import BackoffSettings
from config.legacy import ENV_ALIASES, ENV_IGNORED, env_targets, redis_url, translate
from protocol import wire
from protocol.bars import PRICE_BASES
from protocol.errors import ConfigError

DEFAULTS_PATH = Path(__file__).with_name("runtime_settings.json")

# One entry of the "actors" list: its keys and their defaults.
ACTOR_DEFAULTS: dict[str, Any] = {
    "name": "",
    "class": "",
    "placement": "thread",
    "python": "",
    "cwd": "",
    "required": True,
    "stop_timeout_seconds": 5.0,
    "prefetch": 0,
    "mailbox_bounds": {},
    "settings": {},
}

# Free-form maps: their keys belong to the actor or the user, not to this schema.
_FREE_FORM = {"mailbox_bounds", "settings", "min_interval_seconds", "instruments",
              "reserved_topics"}

# Keys every actor receives in its settings, next to its own section (named after the actor).
SHARED_KEYS = ("symbols", "price_basis", "timeframes", "instruments", "calendar_file", "broker",
               "cache", "redis", "channels")

SOURCE_ROOT = Path(__file__).resolve().parents[1]

# Environment variable -> (key path, type or converter). FXCM_REDIS_HOST/PORT/PASSWORD (an
# external Redis) and the predecessor's aliases and retired names are in config/legacy.py.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "FXCM_RUN_DIR": ("run_dir", str),
    "FXCM_BROKER": ("broker.kind", str),
    "FXCM_PYTHON37": ("broker.python", str),
    "FXCM_CALENDAR_PATH": ("calendar_file", str),
    "FXCM_CACHE_DIR": ("cache.dir", str),
    "FXCM_CACHE_ENABLED": ("cache.enabled", bool),
    "FXCM_REDIS_URL": ("redis.url", str),
    "FXCM_EMBEDDED_REDIS_PORT": ("redis.embedded_port", int),
    "FXCM_REDIS_REQUIRED": ("redis.required", bool),
    "FXCM_CHANNEL_PREFIX": ("channels.prefix", str),
    "FXCM_OHLCV_CHANNEL": ("channels.ohlcv", str),
    "FXCM_PRICE_SNAPSHOT_CHANNEL": ("channels.price_tik", str),
    "FXCM_HEARTBEAT_CHANNEL": ("channels.heartbeat", str),
    "FXCM_MARKET_STATUS_CHANNEL": ("channels.market_status", str),
    "FXCM_STATUS_CHANNEL": ("channels.status", str),
    "FXCM_COMMANDS_CHANNEL": ("channels.commands", str),
    "FXCM_HMAC_ALGO": ("redis_publisher.hmac_algo", str),
    "FXCM_BACKFILL_MIN_MINUTES": ("history_poller.backfill_min_minutes", int),
    "FXCM_BACKFILL_MAX_MINUTES": ("history_poller.backfill_max_minutes", int),
    "FXCM_DYNAMIC_UNIVERSE_ENABLED": ("history_poller.dynamic_universe_enabled", bool),
    "FXCM_DYNAMIC_UNIVERSE_DEFAULT_TARGETS": ("history_poller.dynamic_universe_default_targets",
                                              env_targets),
    "FXCM_DYNAMIC_UNIVERSE_MAX_TARGETS": ("history_poller.max_targets", int),
    "FXCM_STREAM_CONFIG": ("history_poller.targets", env_targets),
    "FXCM_SESSION_TAG": ("heartbeat.session_tag", lambda text: text.strip() or "AUTO"),
    "FXCM_LOG_LEVEL": ("log_level", str),
    "FXCM_HTTP_HOST": ("http.host", str),
    "FXCM_HTTP_PORT": ("http.port", int),
    "FXCM_METRICS_PORT": ("http.port", int),
    "FXCM_HTTP_ENABLED": ("http.enabled", bool),
    "FXCM_METRICS_ENABLED": ("http.enabled", bool),
    "FXCM_DRAIN_SECONDS": ("shutdown.drain_seconds", float),
}

# Our own keys that were renamed: old dotted key -> new one (warned about, then applied).
RENAMED = {"redis.port": "redis.embedded_port"}

# The connector's version: the installed package's, or FXCM_CONNECTOR_VERSION_OVERRIDE (as the
# predecessor's deploys set it); FXCM_CONNECTOR_REQUIRED_VERSION stops a host of another one.
VERSION_OVERRIDE = "FXCM_CONNECTOR_VERSION_OVERRIDE"
REQUIRED_VERSION = "FXCM_CONNECTOR_REQUIRED_VERSION"


def redact_url(url: str) -> str:
    """A URL fit for logs, status and the screen: the password, if any, shown as ``***``
    (``redis://user:***@host``). The one home of this rule."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme (a malformed URL, in a config error): all of it may be secret
        scheme, rest = "", url
    rest = _PASSWORD_PARAMETER.sub(r"\1***", rest)
    if "@" not in rest:
        return scheme + sep + rest
    credentials, _, where = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return "{}{}{}{}@{}".format(scheme, sep, user, ":***" if ":" in credentials else "", where)


# redis-py takes a password in the query too (``?password=...``)
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


@dataclass(frozen=True)
class BusConfig:
    credit_window: int
    prefetch: int
    mailbox_bound: int
    direct_bound: int
    send_timeout_seconds: float
    max_redeliveries: int
    dead_letter_capacity: int
    ping_interval_seconds: float
    liveness_misses: int
    tap_hwm: int
    checkpoint_every: int
    status_interval_seconds: float
    drills: bool
    detached_mailbox_seconds: float
    max_peers: int
    reserved_topics: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SupervisorConfig:
    backoff_base_seconds: float
    backoff_cap_seconds: float
    backoff_jitter: float
    max_restarts: int
    restart_window_seconds: float
    start_timeout_seconds: float

    @property
    def backoff(self) -> BackoffSettings:
        """Restart delays (checked by ``_build``, which allows a base of 0: restart at once)."""
        return BackoffSettings(self.backoff_base_seconds, self.backoff_cap_seconds,
                               jitter=self.backoff_jitter)


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool
    host: str
    port: int
    timeout_seconds: float
    workers: int


@dataclass(frozen=True)
class HealthConfig:
    feed_stall_seconds: float
    flow_topics: tuple[str, ...]


@dataclass(frozen=True)
class ActorSpec:
    name: str
    cls: str
    placement: str
    python: str
    cwd: str
    required: bool
    stop_timeout_seconds: float
    prefetch: int
    mailbox_bounds: dict[str, int]
    settings: dict[str, Any]


@dataclass(frozen=True)
class Settings:
    run_dir: str
    log_level: str
    bus: BusConfig
    supervisor: SupervisorConfig
    drain_seconds: float
    http: HttpConfig
    actors: tuple[ActorSpec, ...]
    health: HealthConfig
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    # the connector's version (FXCM_CONNECTOR_VERSION_OVERRIDE, else the package's)
    version: str = ""
    # predecessor keys and variables that were mapped (notes) or have no equivalent, renamed
    # keys, aliases that disagree (warnings): for the host to log at start, one line each
    notes: tuple[str, ...] = field(compare=False, default=())
    warnings: tuple[str, ...] = field(compare=False, default=())

    def actor_settings(self, spec: ActorSpec) -> dict[str, Any]:
        """What an actor receives: the shared keys, its own section (if the config has one
        named after it), then the ``settings`` of its entry in ``actors``."""
        result: dict[str, Any] = {key: copy.deepcopy(self.raw[key]) for key in SHARED_KEYS}
        section = self.raw.get(spec.name)
        if isinstance(section, dict):
            result.update(copy.deepcopy(section))
        result.update(copy.deepcopy(spec.settings))
        return result


def default_run_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, "fxcm-{}".format(os.getuid()) if base == "/tmp" else "fxcm")


def load_defaults() -> dict[str, Any]:
    with DEFAULTS_PATH.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def package_version() -> str:
    """The installed distribution's version (setup.cfg), or "unknown" in a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fxcm-connector")
    except PackageNotFoundError:
        return "unknown"


def connector_version(environ: Mapping[str, str]) -> str:
    return environ.get(VERSION_OVERRIDE, "").strip() or package_version()


def load(path: str | None = None, environ: Mapping[str, str] | None = None,
         overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the file at ``path`` (the predecessor's keys translated, config/legacy.py),
    then the environment, then ``overrides`` (a map of dotted keys, from the command line).
    Raises ConfigError naming the offending key."""
    defaults = load_defaults()
    merged = copy.deepcopy(defaults)
    notes: list[str] = []
    warnings: list[str] = []
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                user = json.load(handle)
        except OSError as exc:
            raise ConfigError("config file {}: {}".format(path, exc.strerror)) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError("config file {}: not JSON ({})".format(path, exc)) from exc
        if not isinstance(user, dict):
            raise ConfigError("config file {}: must hold a JSON object".format(path))
        user = _renamed(user, warnings)
        legacy = translate(user, defaults)
        for key, value in legacy.settings.items():
            _set_legacy(merged, defaults, key, value)
        if legacy.notes:
            notes.append("config file {}: the predecessor's keys mapped: {}".format(
                path, "; ".join(legacy.notes)))
        warnings.extend(legacy.warnings)
        _merge(merged, legacy.user, defaults, "")
    env = os.environ if environ is None else environ
    for variable, (key, kind) in ENVIRONMENT.items():
        if variable not in env:
            continue
        value = _parse_env(variable, env[variable], kind)
        canonical = ENV_ALIASES.get(variable)
        if canonical is not None and canonical in env:
            if _parse_env(canonical, env[canonical], kind) != value:
                warnings.append("{}={}: ignored, {}={} is set and wins (both set {})".format(
                    variable, env[variable], canonical, env[canonical], key))
            continue
        _set_dotted(merged, key, value)
    merged["redis"]["url"] = redis_url(merged["redis"]["url"], env, "FXCM_REDIS_URL" in env,
                                       warnings)
    for variable, reason in ENV_IGNORED.items():
        if variable in env:
            warnings.append("{}: ignored: {}".format(variable, reason))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(merged, key, value)
    version = connector_version(env)
    required = env.get(REQUIRED_VERSION, "").strip()
    if required and required != version:
        raise ConfigError("{}: this connector is version {}, {} is required".format(
            REQUIRED_VERSION, version, required))
    merged["cache"]["dir"] = resolve_path(merged["cache"]["dir"], env)
    journal = merged["redis_publisher"].get("journal_dir")
    if isinstance(journal, str) and journal:
        merged["redis_publisher"]["journal_dir"] = resolve_path(journal, env)
    settings = _build(merged)
    return dataclasses.replace(settings, version=version, notes=tuple(notes),
                               warnings=tuple(warnings))


def resolve_path(path: Any, environ: Mapping[str, str]) -> Any:
    """A state path (``cache.dir``, a journal dir) made absolute: a relative one is taken from
    systemd's ``$STATE_DIRECTORY`` (``StateDirectory=`` in the unit) when set, else from the
    working directory, where the predecessor took its ``cache.dir`` from."""
    if not isinstance(path, str) or not path or os.path.isabs(path):
        return path
    base = environ.get("STATE_DIRECTORY", "").split(":")[0] or os.getcwd()
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _renamed(user: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Our own renamed keys, moved to their new names (with a warning)."""
    for old, new in RENAMED.items():
        section, _, key = old.partition(".")
        node = user.get(section)
        if isinstance(node, dict) and key in node:
            node = dict(node)
            new_key = new.partition(".")[2]
            if new_key not in node:
                node[new_key] = node[key]
            del node[key]
            user = dict(user, **{section: node})
            warnings.append("{}: renamed {}; FXCM_REDIS_PORT now names an external Redis "
                            "(seed 001 section 6.1)".format(old, new))
    return user


def _set_legacy(target: dict[str, Any], schema: dict[str, Any], key: str, value: Any) -> None:
    """A translated predecessor value, type-checked against our default (naming our key)."""
    node: Any = schema
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None:
        _check_types(value, node, key)
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _merge(target: dict[str, Any], user: dict[str, Any], schema: dict[str, Any],
           prefix: str) -> None:
    for key, value in user.items():
        path = prefix + key
        if key not in schema:
            raise ConfigError("{}: unknown setting".format(path))
        expected = schema[key]
        if isinstance(expected, dict) and key not in _FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError("{}: must be an object".format(path))
            _merge(target[key], value, expected, path + ".")
        else:
            target[key] = value


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = target
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _parse_env(variable: str, text: str, kind: Callable[[str], Any]) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError("{}: must be 0/1/true/false, got {!r}".format(variable, text))
    try:
        return kind(text)
    except ValueError as exc:
        raise ConfigError("{}: must be {}, got {!r}".format(
            variable, getattr(kind, "__name__", "valid"), text)) from exc
    except ConfigError as exc:  # a converter (targets) names the variable itself
        raise ConfigError(str(exc)) from None


def _typed(data: dict[str, Any], key: str, kind: type, prefix: str) -> Any:
    value = data[key]
    name = prefix + key
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        raise ConfigError("{}: must be an integer, got {!r}".format(name, value))
    if not isinstance(value, kind):
        raise ConfigError("{}: must be {}, got {!r}".format(name, _kind_name(kind), value))
    return value


def _kind_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "an object", list: "a list"}.get(kind, kind.__name__)


def _at_least(name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError("{}: must be >= {}, got {}".format(name, minimum, value))


def _section(data: dict[str, Any], cls: Any, prefix: str) -> Any:
    kinds = {f.name: f.type for f in cls.__dataclass_fields__.values()}
    resolved = {"int": int, "float": float, "str": str, "bool": bool}
    values = {key: _typed(data, key, resolved[str(kind)], prefix) for key, kind in kinds.items()
              if str(kind) in resolved}  # the others are the caller's to check
    return cls(**values)


def _check_types(value: Any, default: Any, path: str) -> None:
    """Every value must have the type of its shipped default (an integer may stand for a
    number); maps are checked key by key, lists element by element against the default's
    first element."""
    if isinstance(default, bool) or isinstance(value, bool):
        if not (isinstance(default, bool) and isinstance(value, bool)):
            raise ConfigError("{}: must be {}, got {!r}".format(
                path, _kind_name(type(default)), value))
        return
    if isinstance(default, float):
        if not isinstance(value, (int, float)):
            raise ConfigError("{}: must be a number, got {!r}".format(path, value))
        return
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError("{}: must be an object".format(path))
        if path.rpartition(".")[2] in _FREE_FORM:
            return
        for key, item in value.items():
            if key in default:
                _check_types(item, default[key], "{}.{}".format(path, key))
        return
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError("{}: must be a list, got {!r}".format(path, value))
        if default:
            for index, item in enumerate(value):
                _check_types(item, default[0], "{}[{}]".format(path, index))
        return
    if not isinstance(value, type(default)):
        raise ConfigError("{}: must be {}, got {!r}".format(path, _kind_name(type(default)),
                                                           value))


def _check_pipeline(data: dict[str, Any]) -> None:
    """Value checks of the market-data sections (types were checked against the defaults)."""
    from protocol.errors import ProtocolError
    from protocol.market import normalize_symbol

    if not data["symbols"]:
        raise ConfigError("symbols: at least one symbol is needed")
    for index, symbol in enumerate(data["symbols"]):
        try:
            data["symbols"][index] = normalize_symbol(symbol)
        except ProtocolError as exc:
            raise ConfigError("symbols[{}]: {}".format(index, exc)) from None
    instruments = {}
    for name, entry in data["instruments"].items():
        try:
            symbol = normalize_symbol(name)
        except ProtocolError as exc:
            raise ConfigError("instruments.{}: {}".format(name, exc)) from None
        if not isinstance(entry, dict) or set(entry) - {"digits"}:
            raise ConfigError("instruments.{}: must be an object with digits".format(name))
        digits = entry.get("digits")
        if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 10:
            raise ConfigError("instruments.{}.digits: must be an integer within 0..10, got "
                              "{!r}".format(name, digits))
        instruments[symbol] = {"digits": digits}
    data["instruments"] = instruments
    _check_timeframes(data)
    if data["price_basis"] not in PRICE_BASES:
        raise ConfigError("price_basis: must be mid, bid or ask, got {!r}".format(
            data["price_basis"]))
    broker = data["broker"]
    if broker["kind"] not in ("sim", "replay", "forexconnect"):
        raise ConfigError("broker.kind: must be sim, replay or forexconnect, got {!r}".format(
            broker["kind"]))
    if broker["sim"]["tick_rate_per_second"] <= 0:
        raise ConfigError("broker.sim.tick_rate_per_second: must be > 0")
    if broker["kind"] == "replay":
        replay = broker["replay"]
        if not replay["file"]:
            raise ConfigError("broker.replay.file: required with broker.kind replay "
                              "(--replay-file)")
        if not os.path.isfile(replay["file"]):
            raise ConfigError("broker.replay.file: no such file: {}".format(replay["file"]))
        if replay["speed"] < 0:
            raise ConfigError("broker.replay.speed: must be >= 0, got {}".format(
                replay["speed"]))
    # fxcm_session's section is checked by its settings class, the one home of its rules
    from actors.fxcm_session._settings import FxcmSessionSettings

    shared = {key: data[key] for key in SHARED_KEYS}
    session = FxcmSessionSettings.from_mapping(dict(shared, **data["fxcm_session"]))
    data["fxcm_session"]["quota"]["priority_targets"] = list(session.quota.priority_targets)
    redis_url = data["redis"]["url"]
    if redis_url != "embedded" and not redis_url.startswith(("redis://", "rediss://",
                                                              "unix://")):
        raise ConfigError("redis.url: must be 'embedded' or a redis://, rediss:// or unix:// URL, "
                          "got {!r}".format(redact_url(redis_url)))
    if not 0 <= data["redis"]["embedded_port"] <= 65535:
        raise ConfigError("redis.embedded_port: must be within 0..65535, got {}".format(
            data["redis"]["embedded_port"]))
    viewer = data["viewer"]
    for key, value in viewer.items():
        if value <= 0:
            raise ConfigError("viewer.{}: must be > 0, got {}".format(key, value))
    for kind in ("ohlcv_lag", "ohlcv_msg_idle"):
        if viewer[kind + "_warn_seconds"] > viewer[kind + "_error_seconds"]:
            raise ConfigError("viewer.{0}_warn_seconds: must be <= {0}_error_seconds".format(
                kind))
    if data["calendar_file"]:
        from config.calendar import load_calendar
        load_calendar(data["calendar_file"])  # fails here, at start, naming the entry


def _check_timeframes(data: dict[str, Any]) -> None:
    """``timeframes`` is the one list that tick aggregation and history both follow. The older
    spelling ``tick_aggregator.timeframes`` still works (an operator's config may have it):
    non-empty, it stands for ``timeframes``; both given and different is an error."""
    from protocol.market import TIMEFRAMES

    legacy = data["tick_aggregator"]["timeframes"]
    chosen = data["timeframes"]
    key = "timeframes"
    if legacy:
        if chosen != load_defaults()["timeframes"] and chosen != legacy:
            raise ConfigError("tick_aggregator.timeframes: {} differs from timeframes {}; set "
                              "only timeframes".format(legacy, chosen))
        chosen, key = legacy, "tick_aggregator.timeframes"
    if "1m" not in chosen:
        raise ConfigError("{}: must include 1m (the layer of truth), got {}".format(key, chosen))
    for tf in chosen:
        if tf not in TIMEFRAMES:
            raise ConfigError("{}: unknown timeframe {!r} (known: {})".format(
                key, tf, ", ".join(TIMEFRAMES)))
    ordered = [tf for tf in TIMEFRAMES if tf in chosen]
    data["timeframes"] = ordered
    data["tick_aggregator"]["timeframes"] = list(ordered)


def python37() -> str:
    """The interpreter for the SDK: ``broker.python``, else the checkout's ``.venv37``."""
    candidate = SOURCE_ROOT / ".venv37" / "bin" / "python"
    return str(candidate) if candidate.exists() else ""


def _place_session(data: dict[str, Any], actors: tuple[ActorSpec, ...]) -> tuple[ActorSpec, ...]:
    """With the real SDK, fxcm_session runs in a Python 3.7 child in its own directory."""
    if data["broker"]["kind"] != "forexconnect":
        return actors
    python = data["broker"]["python"] or python37()
    if not python:
        raise ConfigError("broker.python: broker forexconnect needs a Python 3.7 interpreter with "
                          "the forexconnect wheel (make venv37, or set broker.python / "
                          "FXCM_PYTHON37)")
    placed = []
    for spec in actors:
        if spec.cls.startswith("actors.fxcm_session:"):
            spec = dataclasses.replace(spec, placement="process", python=python)
        placed.append(spec)
    return tuple(placed)


def _build(data: dict[str, Any]) -> Settings:
    defaults = load_defaults()
    for key in defaults:
        if key not in ("bus", "supervisor", "http", "shutdown", "actors", "run_dir",
                       "log_level"):
            _check_types(data[key], defaults[key], key)
    _check_pipeline(data)
    bus: BusConfig = _section(data["bus"], BusConfig, "bus.")
    for key in ("credit_window", "prefetch", "mailbox_bound", "direct_bound", "max_redeliveries",
                "dead_letter_capacity", "liveness_misses", "tap_hwm", "checkpoint_every"):
        _at_least("bus." + key, getattr(bus, key), 1)
    for key in ("send_timeout_seconds", "ping_interval_seconds"):
        if getattr(bus, key) <= 0:
            raise ConfigError("bus.{}: must be > 0, got {}".format(key, getattr(bus, key)))
    _at_least("bus.status_interval_seconds", bus.status_interval_seconds, 0)
    _at_least("bus.detached_mailbox_seconds", bus.detached_mailbox_seconds, 0)
    _at_least("bus.max_peers", bus.max_peers, 1)
    bus = dataclasses.replace(bus, reserved_topics=_reserved_topics(data["bus"]))

    supervisor: SupervisorConfig = _section(data["supervisor"], SupervisorConfig, "supervisor.")
    _at_least("supervisor.backoff_base_seconds", supervisor.backoff_base_seconds, 0)
    if supervisor.backoff_cap_seconds < supervisor.backoff_base_seconds:
        raise ConfigError("supervisor.backoff_cap_seconds: must be >= backoff_base_seconds "
                          "({}), got {}".format(supervisor.backoff_base_seconds,
                                                supervisor.backoff_cap_seconds))
    if not 0 <= supervisor.backoff_jitter <= 1:
        raise ConfigError("supervisor.backoff_jitter: must be within 0..1, got {}".format(
            supervisor.backoff_jitter))
    _at_least("supervisor.max_restarts", supervisor.max_restarts, 0)
    _at_least("supervisor.restart_window_seconds", supervisor.restart_window_seconds, 0.001)
    _at_least("supervisor.start_timeout_seconds", supervisor.start_timeout_seconds, 0.1)

    http: HttpConfig = _section(data["http"], HttpConfig, "http.")
    if not 0 <= http.port <= 65535:
        raise ConfigError("http.port: must be within 0..65535, got {}".format(http.port))
    if http.timeout_seconds <= 0:
        raise ConfigError("http.timeout_seconds: must be > 0, got {}".format(
            http.timeout_seconds))
    _at_least("http.workers", http.workers, 1)
    health = data["health"]
    _at_least("health.feed_stall_seconds", health["feed_stall_seconds"], 0)

    drain = _typed(data["shutdown"], "drain_seconds", float, "shutdown.")
    _at_least("shutdown.drain_seconds", drain, 0)

    log_level = _typed(data, "log_level", str, "")
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level: must be DEBUG, INFO, WARNING or ERROR, got {!r}".format(
            log_level))
    run_dir = _typed(data, "run_dir", str, "") or default_run_dir()
    for socket_name in ("bus.sock", "tap.sock"):
        path = os.path.join(os.path.abspath(run_dir), socket_name)
        if len(path.encode("utf-8")) > wire.IPC_PATH_MAX:
            raise ConfigError("run_dir: the ipc path {} is {} bytes, unix sockets allow {}; "
                              "choose a shorter run dir".format(
                                  path, len(path.encode("utf-8")), wire.IPC_PATH_MAX))

    actors_raw = data["actors"]
    if not isinstance(actors_raw, list):
        raise ConfigError("actors: must be a list")
    actors = tuple(_actor(entry, index) for index, entry in enumerate(actors_raw))
    names = [spec.name for spec in actors]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("actors: the name {!r} is used twice".format(name))
    actors = _place_session(data, actors)
    return Settings(run_dir=run_dir, log_level=log_level.upper(), bus=bus,
                    supervisor=supervisor, drain_seconds=drain, http=http, actors=actors,
                    health=HealthConfig(float(health["feed_stall_seconds"]),
                                        tuple(health["flow_topics"])),
                    raw=data)


def _reserved_topics(bus: dict[str, Any]) -> dict[str, list[str]]:
    """``bus.reserved_topics``: {topic prefix: [actor names that may publish it]}."""
    raw = bus["reserved_topics"]
    if not isinstance(raw, dict):
        raise ConfigError("bus.reserved_topics: must be an object {prefix: [actor names]}")
    for prefix, owners in raw.items():
        if not prefix or not isinstance(owners, list) or not owners \
                or not all(wire.valid_actor_name(owner) for owner in owners):
            raise ConfigError("bus.reserved_topics.{}: must be a non-empty list of actor names, "
                              "got {!r}".format(prefix, owners))
    return {prefix: list(owners) for prefix, owners in raw.items()}


def _actor(entry: Any, index: int) -> ActorSpec:
    prefix = "actors[{}].".format(index)
    if not isinstance(entry, dict):
        raise ConfigError("actors[{}]: must be an object".format(index))
    for key in entry:
        if key not in ACTOR_DEFAULTS:
            raise ConfigError("{}{}: unknown setting".format(prefix, key))
    data = dict(copy.deepcopy(ACTOR_DEFAULTS), **entry)
    values = {key: _typed(data, key, type(default), prefix)
              for key, default in ACTOR_DEFAULTS.items()}
    name = values["name"]
    if not wire.valid_actor_name(name):
        raise ConfigError("{}name: must be {}, got {!r}".format(prefix, wire.ACTOR_NAME_RULE,
                                                                name))
    prefix = "actors[{}].".format(name)
    if values["class"].count(":") != 1:
        raise ConfigError("{}class: must be 'module:Class', got {!r}".format(
            prefix, values["class"]))
    if values["placement"] not in ("thread", "process"):
        raise ConfigError("{}placement: must be 'thread' or 'process', got {!r}".format(
            prefix, values["placement"]))
    if values["python"] and values["placement"] != "process":
        raise ConfigError("{}python: only applies to placement 'process'".format(prefix))
    _at_least(prefix + "stop_timeout_seconds", values["stop_timeout_seconds"], 0.1)
    _at_least(prefix + "prefetch", values["prefetch"], 0)
    for topic, bound in values["mailbox_bounds"].items():
        if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
            raise ConfigError("{}mailbox_bounds.{}: must be a positive integer, got {!r}".format(
                prefix, topic, bound))
    return ActorSpec(name=name, cls=values["class"], placement=values["placement"],
                     python=values["python"], cwd=values["cwd"], required=values["required"],
                     stop_timeout_seconds=values["stop_timeout_seconds"],
                     prefetch=values["prefetch"], mailbox_bounds=values["mailbox_bounds"],
                     settings=values["settings"])
