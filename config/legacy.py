"""The predecessor's settings (seed 001 section 6), mapped onto ours: one home for the mapping.

An operator of the predecessor keeps their environment file and their ``runtime_settings.json``.
Each of the predecessor's variables and keys either takes effect through the setting that does
the same thing here, or is warned about by name (one line each: why, and what replaces it).
Start-up is never refused for a predecessor key; a key that is neither ours nor the
predecessor's still is (typo protection).

- ``translate(user)``: the predecessor's keys of a config file -> (our settings as dotted
  keys, remaining user keys, notes, warnings).
- ``ENV_ALIASES``: a predecessor variable that names the same setting as one of ours (ours wins
  when both are set; a difference is warned about).
- ``ENV_IGNORED``: predecessor variables with no role here (warned about when set).
- ``REDIS_VARIABLES``: ``FXCM_REDIS_HOST/PORT/PASSWORD`` name an external Redis (``redis_url``).
- ``migration_rows()``: the table of docs/operations.md "Migrating from the predecessor".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from protocol.errors import ConfigError, ProtocolError
from protocol.market import normalize_symbol, normalize_tf

# -- targets and timeframes in the predecessor's spelling ---------------------------------------

# The predecessor's own timeframe names that ours do not read (config.py _normalize_timeframe_raw
# writes 1h as m60, 4h as h4, 1d as d1; its files use h1 too).
_LEGACY_TF = {"m60": "1h", "h1": "1h", "h4": "4h", "d1": "1d"}


def legacy_tf(raw: str) -> str:
    """A timeframe as the predecessor wrote it (``m1``, ``m60``, ``h4``, ``d1``) or as we do."""
    text = raw.strip()
    if text.lower() in _LEGACY_TF:
        return _LEGACY_TF[text.lower()]
    return normalize_tf(text)


def legacy_targets(value: Any, name: str) -> list[tuple[str, str]]:
    """The predecessor's ``stream.config``: ``"XAU/USD:m1, EUR/USD"`` (tf defaults to m1) or a
    list of such strings or of ``{"symbol"|"pair", "tf"|"timeframe"}`` maps; in order, without
    duplicates. ConfigError naming ``name`` on anything else."""
    items: list[Any]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError("{}: must be a string or a list of targets, got {!r}".format(
            name, value))
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            for chunk in item.split(","):
                chunk = chunk.strip()
                if chunk:
                    symbol, sep, tf = chunk.partition(":")
                    pairs.append((symbol, tf if sep else "m1"))
        elif isinstance(item, dict):
            symbol = str(item.get("symbol") or item.get("pair") or "")
            pairs.append((symbol, str(item.get("tf") or item.get("timeframe") or "m1")))
        else:
            raise ConfigError("{}: a target must be SYMBOL:tf or {{symbol, tf}}, got {!r}".format(
                name, item))
    result: list[tuple[str, str]] = []
    for symbol, tf in pairs:
        try:
            target = (normalize_symbol(symbol.strip()), legacy_tf(tf))
        except ProtocolError as exc:
            raise ConfigError("{}: {}".format(name, exc)) from None
        if target not in result:
            result.append(target)
    return result


def targets_text(targets: list[tuple[str, str]]) -> str:
    return ",".join("{}:{}".format(symbol, tf) for symbol, tf in targets)


def env_targets(text: str) -> str:
    """``FXCM_STREAM_CONFIG`` in either spelling, as our ``history_poller.targets``."""
    return targets_text(legacy_targets(text, "FXCM_STREAM_CONFIG"))


# -- environment ---------------------------------------------------------------------------------

# predecessor variable -> our variable for the same setting (ours wins when both are set)
ENV_ALIASES = {
    "FXCM_METRICS_PORT": "FXCM_HTTP_PORT",
    "FXCM_METRICS_ENABLED": "FXCM_HTTP_ENABLED",
}

# predecessor variables with no role in the connector: warned about when set
ENV_IGNORED = {
    "FXCM_INGEST_ALLOWED_SYMBOLS": "read by the predecessor's fxcm_ingestor (a consumer), not "
                                   "by the connector; consumers check payloads against "
                                   "protocol/schemas (docs/contracts.md)",
    "FXCM_INGEST_ALLOWED_TIMEFRAMES": "read by the predecessor's fxcm_ingestor, not by the "
                                      "connector",
    "FXCM_INGEST_MAX_BATCH": "read by the predecessor's fxcm_ingestor, not by the connector "
                             "(the connector sends at most history_poller.chunk_bars bars "
                             "per payload)",
    "FXCM_INGEST_HMAC_SECRET": "read by the predecessor's fxcm_ingestor; the connector signs "
                               "with FXCM_HMAC_SECRET",
    "FXCM_INGEST_HMAC_ALGO": "read by the predecessor's fxcm_ingestor; the connector signs "
                             "with FXCM_HMAC_ALGO",
    "FXCM_RICH_FORCE_TERMINAL": "the predecessor's debug viewer; `fxcm viewer` needs a "
                                "terminal",
}

# The external Redis, as the seed names it (6.1): any of these set = an external Redis, the
# parts not set default to the seed's 127.0.0.1:6379, no password.
REDIS_VARIABLES = ("FXCM_REDIS_HOST", "FXCM_REDIS_PORT", "FXCM_REDIS_PASSWORD")
SEED_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(configured: str, environ: Mapping[str, str], url_from_env: bool,
              warnings: list[str]) -> str:
    """``redis.url`` after ``FXCM_REDIS_HOST/PORT/PASSWORD``. ``configured`` is the URL from the
    defaults, the config file and ``FXCM_REDIS_URL``; ``url_from_env`` says whether that last
    one set it (then it names the Redis and HOST/PORT are ignored, with a warning)."""
    named = {name: environ[name].strip() for name in REDIS_VARIABLES
             if environ.get(name, "").strip()}
    if not named:
        return configured
    host, port, password = (named.get(name) for name in REDIS_VARIABLES)
    if url_from_env and (host or port):
        warnings.append("{}: ignored, FXCM_REDIS_URL names the Redis".format(
            ", ".join(name for name in REDIS_VARIABLES[:2] if name in named)))
        host = port = None
    if port is not None:
        try:
            number = int(port)
        except ValueError:
            raise ConfigError("FXCM_REDIS_PORT: must be a port number, got {!r}".format(
                port)) from None
        if not 1 <= number <= 65535:
            raise ConfigError("FXCM_REDIS_PORT: must be within 1..65535, got {}".format(number))
    # the configured external URL, its parts replaced by those named; else the seed's default
    base = configured if configured.startswith(("redis://", "rediss://")) else SEED_REDIS_URL
    if configured.startswith("unix://") and not (host or port):
        base = configured  # a password for the configured socket
    parts = urlsplit(base)
    user = parts.username or ""
    secret = parts.password
    if password is not None:
        if secret is not None and secret != password:
            warnings.append("FXCM_REDIS_PASSWORD: ignored, the Redis URL carries its own "
                            "password")
        elif secret is None:
            secret = quote(password, safe="")
    where = parts.hostname or ""
    if host:
        where = host
    if ":" in where and not where.startswith("["):
        where = "[{}]".format(where)
    if parts.scheme != "unix":
        where += ":{}".format(port or parts.port or 6379)
    auth = ""
    if user or secret is not None:
        auth = "{}{}@".format(user, ":" + secret if secret is not None else "")
    return urlunsplit((parts.scheme, auth + where, parts.path or "/0", parts.query, ""))


# -- runtime_settings.json -------------------------------------------------------------------------

@dataclass(frozen=True)
class Moved:
    """A predecessor key whose value sets one or more of ours (through ``convert``)."""

    targets: tuple[str, ...]
    convert: Callable[[Any, str], Any] | None = None
    note: str = ""


@dataclass(frozen=True)
class Dropped:
    """A predecessor key with no equivalent: warned about with this reason."""

    reason: str


def _backoff(names: Mapping[str, str]) -> Callable[[Any, str], Any]:
    """A backoff object in the predecessor's field names -> ours (only the fields given)."""
    def convert(value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError("{}: must be an object".format(name))
        result = {}
        for key, item in value.items():
            if key not in names:
                raise ConfigError("{}.{}: unknown setting (expected {})".format(
                    name, key, ", ".join(sorted(names))))
            result[names[key]] = item
        return result
    return convert


_TUNING = {key: key for key in ("base_seconds", "max_seconds", "multiplier", "jitter")}
_POLICY = {"base_delay": "base_seconds", "factor": "multiplier", "max_delay": "max_seconds"}
_THRESHOLDS = {key: key for key in ("min_interval", "warn", "reserve", "critical")}


def _targets(value: Any, name: str) -> str:
    return targets_text(legacy_targets(value, name))


def _target_list(value: Any, name: str) -> list[str]:
    return ["{}:{}".format(symbol, tf) for symbol, tf in legacy_targets(value, name)]


_VIEWER_CHANNEL = Dropped("the viewer listens where the host publishes: channels.* "
                          "(FXCM_CHANNEL_PREFIX, FXCM_*_CHANNEL)")
_VIEWER_UNUSED = "the predecessor viewer's {}; `fxcm viewer` has no such panel"

# Every key the predecessor reads from runtime_settings.json (config.py load_config and
# tools/debug_viewer.py), the seed's 6.2 example included.
LEGACY_KEYS: dict[str, Moved | Dropped] = {
    "cache.max_bars": Moved(("history_poller.max_bars",)),
    "cache.warmup_bars": Moved(("history_poller.warmup_bars",)),
    "stream.mode": Dropped("the host always streams (the predecessor's mode 1); for one "
                           "warmup pass (mode 0) send fxcm_warmup (`fxcm command warmup`)"),
    "stream.async_supervisor": Dropped("every actor runs supervised by the host "
                                       "(supervisor.*)"),
    "stream.poll_seconds": Moved(("history_poller.poll_seconds",)),
    "stream.fetch_interval_seconds": Moved(("history_poller.poll_seconds",),
                                           note="wins over stream.poll_seconds, as before"),
    "stream.publish_interval_seconds": Dropped("each final bar is published as it closes; "
                                               "there is no publishing interval"),
    "stream.telemetry_min_publish_interval_seconds": Dropped(
        "heartbeat.interval_seconds and heartbeat.status_interval_seconds set how often "
        "heartbeat and status go out"),
    "stream.status_publish_min_interval_seconds": Dropped(
        "heartbeat.interval_seconds and heartbeat.status_interval_seconds set how often "
        "heartbeat and status go out"),
    "stream.lookback_minutes": Dropped("history_poller repairs every gap of its store instead "
                                       "of re-reading a fixed lookback (backfill depth: "
                                       "history_poller.backfill_*)"),
    "stream.config": Moved(("history_poller.targets", "symbols"), _targets,
                           note="its symbols become the streamed symbols"),
    "stream.price_snap_channel": Moved(("channels.price_tik",)),
    "stream.price_snap_interval_seconds": Moved(("snapshotter.price_snap_interval_seconds",)),
    "stream.status_channel": Moved(("channels.status",)),
    "stream.commands_channel": Moved(("channels.commands",)),
    "stream.ohlcv_channel": Moved(("channels.ohlcv",)),
    "stream.dynamic_universe_enabled": Moved(("history_poller.dynamic_universe_enabled",)),
    "stream.dynamic_universe_default_targets": Moved(
        ("history_poller.dynamic_universe_default_targets", "symbols"), _targets,
        note="its symbols are streamed too"),
    "stream.dynamic_universe_max_targets": Moved(("history_poller.max_targets",)),
    "stream.backfill_min_minutes": Moved(("history_poller.backfill_min_minutes",)),
    "stream.backfill_max_minutes": Moved(("history_poller.backfill_max_minutes",)),
    "stream.tick_aggregation_enabled": Dropped(
        "ticks are always aggregated into 1m..1d bars (tick_aggregator) and history never "
        "publishes live 1m/5m: the predecessor's behaviour with true"),
    "stream.tick_aggregation_max_synth_gap_minutes": Moved(
        ("tick_aggregator.max_synth_gap_minutes",)),
    "stream.tick_aggregation_live_publish_interval_seconds": Dropped(
        "the predecessor never published complete=false bars; previews here are "
        "tick_aggregator.live_publish_interval_seconds (0 = off, the default)"),
    "stream.tick_cadence": Dropped("history_poller.poll_seconds and "
                                   "history_poller.idle_poll_multiplier set the history "
                                   "cadence (shown in heartbeat context.tick_cadence)"),
    "stream.mtf_crosscheck": Dropped("derived bars are folded from final 1m bars with one "
                                     "final source per bar: nothing to cross-check"),
    "stream.history_max_calls_per_min": Moved(("fxcm_session.quota.max_calls_per_min",)),
    "stream.history_max_calls_per_hour": Moved(("fxcm_session.quota.max_calls_per_hour",)),
    "stream.history_priority_targets": Moved(("fxcm_session.quota.priority_targets",),
                                             _target_list),
    "stream.history_priority_reserve_per_min": Moved(
        ("fxcm_session.quota.priority_reserve_per_min",)),
    "stream.history_priority_reserve_per_hour": Moved(
        ("fxcm_session.quota.priority_reserve_per_hour",)),
    "stream.history_load_thresholds": Moved(("fxcm_session.quota.load_thresholds",),
                                            _backoff(_THRESHOLDS)),
    "stream.history_backoff": Moved(("fxcm_session.history_backoff",), _backoff(_TUNING)),
    "stream.redis_backoff": Moved(("redis_publisher.redis_backoff",
                                   "command_handler.redis_backoff"), _backoff(_TUNING)),
    "sample_request": Dropped("the predecessor's start-up sample history request; "
                              "`fxcm command warmup --symbol XAUUSD` asks for history"),
    "backoff.fxcm_login": Moved(("fxcm_session.login_backoff",), _backoff(_POLICY)),
    "backoff.fxcm_stream": Dropped("a lost stream reconnects through a new login: "
                                   "fxcm_session.login_backoff and "
                                   "fxcm_session.reconnect_cooldown_seconds"),
    "backoff.redis_stream": Moved(("redis_publisher.redis_backoff",
                                   "command_handler.redis_backoff"), _backoff(_POLICY),
                                  note="stream.redis_backoff wins when both are given"),
    "viewer.heartbeat_channel": _VIEWER_CHANNEL,
    "viewer.market_status_channel": _VIEWER_CHANNEL,
    "viewer.ohlcv_channel": _VIEWER_CHANNEL,
    "viewer.commands_channel": _VIEWER_CHANNEL,
    "viewer.lag_spike_threshold": Dropped("bars past viewer.ohlcv_lag_error_seconds are "
                                          "marked stale instead"),
    "viewer.sleep_model_gap_threshold_minutes": Dropped(_VIEWER_UNUSED.format(
        "gap model (quiet minutes are synthetic bars here: tick_aggregator."
        "max_synth_gap_minutes)")),
    "viewer.tf_1m_idle_warn_seconds": Dropped("viewer.ohlcv_lag_warn_seconds judges every "
                                              "timeframe (lag past the bar's due time)"),
    "viewer.tf_1m_idle_error_seconds": Dropped("viewer.ohlcv_lag_error_seconds judges every "
                                               "timeframe"),
    "viewer.tf_5m_idle_warn_seconds": Dropped("viewer.ohlcv_lag_warn_seconds judges every "
                                              "timeframe"),
    "viewer.tf_5m_idle_error_seconds": Dropped("viewer.ohlcv_lag_error_seconds judges every "
                                               "timeframe"),
    "viewer.timeline_matrix_rows": Dropped(_VIEWER_UNUSED.format("timeline matrix; the "
                                                                 "timeline here is a list "
                                                                 "(viewer.timeline_history_max)")),
    "viewer.timeline_max_columns": Dropped(_VIEWER_UNUSED.format("timeline matrix")),
    "viewer.timeline_focus_minutes": Dropped(_VIEWER_UNUSED.format("timeline matrix")),
    "viewer.supervisor_channels": Dropped(_VIEWER_UNUSED.format("supervisor channel list; "
                                                                "mode 6 shows every actor")),
    "viewer.supervisor_channel_hints": Dropped(_VIEWER_UNUSED.format("channel hints")),
}

# sections that are the predecessor's only (every key in them must be in LEGACY_KEYS)
LEGACY_SECTIONS = ("stream", "backoff")
# our sections that the predecessor also had: a key of theirs in it is looked up here
SHARED_SECTIONS = ("cache", "viewer")
# keys of stream.* matched by a pattern: history_min_interval_seconds_<tf>
MIN_INTERVAL_PREFIX = "stream.history_min_interval_seconds_"


@dataclass
class Translation:
    settings: dict[str, Any]   # dotted key -> value, to apply under the user's own keys
    user: dict[str, Any]       # the config file without the predecessor's keys
    notes: list[str]           # "stream.config -> history_poller.targets, symbols"
    warnings: list[str]        # one line per predecessor key without an equivalent


def translate(user: Mapping[str, Any], schema: Mapping[str, Any]) -> Translation:
    """Split a config file into our keys and the predecessor's, translating the latter.
    ``schema`` is our defaults (to tell a key of ours in a shared section from one of
    theirs). A key in neither raises ConfigError naming it."""
    rest = copy.deepcopy(dict(user))
    found: dict[str, Any] = {}
    for section in LEGACY_SECTIONS + ("sample_request",):
        if section not in rest:
            continue
        value = rest.pop(section)
        if section == "sample_request":
            found[section] = value
            continue
        if not isinstance(value, dict):
            raise ConfigError("{}: must be an object (the predecessor's section)".format(
                section))
        for key, item in value.items():
            found["{}.{}".format(section, key)] = item
    for section in SHARED_SECTIONS:
        ours = schema.get(section, {})
        theirs = rest.get(section)
        if not isinstance(theirs, dict):
            continue
        for key in list(theirs):
            path = "{}.{}".format(section, key)
            if key not in ours and path in LEGACY_KEYS:
                found[path] = theirs.pop(key)
    result = Translation({}, rest, [], [])
    if "stream.redis_backoff" in found and "backoff.redis_stream" in found:
        del found["backoff.redis_stream"]
        result.warnings.append("backoff.redis_stream: ignored, stream.redis_backoff (the newer "
                               "key) sets the Redis backoff")
    if "stream.fetch_interval_seconds" in found:
        found.pop("stream.poll_seconds", None)
    symbols: list[str] = []
    for path, value in found.items():
        if path.startswith(MIN_INTERVAL_PREFIX):
            tf_name = path[len(MIN_INTERVAL_PREFIX):]
            try:
                tf = legacy_tf(tf_name)
            except ProtocolError:
                raise ConfigError("{}: unknown setting (no such timeframe {!r})".format(
                    path, tf_name)) from None
            target = "fxcm_session.quota.min_interval_seconds." + tf
            result.settings[target] = value
            result.notes.append("{} -> {}".format(path, target))
            continue
        rule = LEGACY_KEYS.get(path)
        if rule is None:
            raise ConfigError("{}: unknown setting (neither ours nor the predecessor's)".format(
                path))
        if isinstance(rule, Dropped):
            result.warnings.append("{}: no equivalent, ignored: {}".format(path, rule.reason))
            continue
        converted = rule.convert(value, path) if rule.convert is not None else value
        for target in rule.targets:
            if target == "symbols":
                for symbol, _ in legacy_targets(value, path):
                    if symbol not in symbols:
                        symbols.append(symbol)
                continue
            if isinstance(converted, dict) and target.rpartition(".")[2] != "min_interval_seconds":
                for key, item in converted.items():
                    result.settings["{}.{}".format(target, key)] = item
            else:
                result.settings[target] = copy.deepcopy(converted)
        result.notes.append("{} -> {}{}".format(path, ", ".join(rule.targets),
                                                " ({})".format(rule.note) if rule.note else ""))
    if symbols:
        result.settings["symbols"] = symbols
    return result


# Every variable the predecessor read (seed 001 sections 6.1 and 6.1.1, and its code), in the
# seed's order, with what it does here (for a variable of ENVIRONMENT, after the key it sets).
PREDECESSOR_VARIABLES: dict[str, str] = {
    "AI_ONE_ENV_FILE": "the same: `fxcm` reads `.env` of the working directory, then the "
                       "profile file this names (relative to that directory); the real "
                       "environment wins over `.env`, `.env` over the profile; a profile that "
                       "does not exist stops `fxcm` (exit 2)",
    "FXCM_USERNAME": "the same (secret; read by fxcm_session)",
    "FXCM_PASSWORD": "the same (secret; read by fxcm_session)",
    "FXCM_CONNECTION": "the same, `Demo` or `Real` (else `broker.forexconnect.connection`)",
    "FXCM_HOST_URL": "the same (else `broker.forexconnect.url`, else the SDK's default)",
    "FXCM_REDIS_HOST": "the same: names an external Redis (replaces the host of `redis.url`, "
                       "of `redis://127.0.0.1:6379/0` when that is `embedded`); no embedded "
                       "server starts",
    "FXCM_REDIS_PORT": "the same: the external Redis's port (default 6379); the embedded "
                       "server's port is `FXCM_EMBEDDED_REDIS_PORT`",
    "FXCM_REDIS_REQUIRED": "the same: 0 = no Redis, final bars and command results go to the "
                           "on-disk journal (file-only)",
    "FXCM_REDIS_PASSWORD": "the same (secret): the external Redis's password",
    "FXCM_CACHE_ENABLED": "the same: the bar store on or off",
    "FXCM_METRICS_ENABLED": "the same port as `FXCM_HTTP_ENABLED` (which wins when both are "
                            "set): 0 turns off `/metrics` and `/livez`, `/readyz`, `/status`",
    "FXCM_METRICS_PORT": "the same port as `FXCM_HTTP_PORT` (which wins when both are set; a "
                         "difference is warned about)",
    "FXCM_CHANNEL_PREFIX": "the same",
    "FXCM_OHLCV_CHANNEL": "the same",
    "FXCM_PRICE_SNAPSHOT_CHANNEL": "the same",
    "FXCM_HEARTBEAT_CHANNEL": "the same",
    "FXCM_STATUS_CHANNEL": "the same",
    "FXCM_COMMANDS_CHANNEL": "the same",
    "FXCM_DYNAMIC_UNIVERSE_ENABLED": "the same",
    "FXCM_DYNAMIC_UNIVERSE_MAX_TARGETS": "the same",
    "FXCM_BACKFILL_MIN_MINUTES": "the same",
    "FXCM_BACKFILL_MAX_MINUTES": "the same",
    "FXCM_SESSION_TAG": "the same (`AUTO`, or a fixed tag)",
    "FXCM_HMAC_SECRET": "the same (secret): signs `ohlcv` (`sig`); with `FXCM_HMAC_KID` it "
                        "also authenticates commands",
    "FXCM_HMAC_ALGO": "the same",
    "FXCM_CONNECTOR_VERSION_OVERRIDE": "the same: the version in the banner, `host.json`, "
                                       "`fxcm status` and the heartbeat",
    "FXCM_CONNECTOR_REQUIRED_VERSION": "the same: another version refuses to start (exit 2)",
    "FXCM_STREAM_CONFIG": "the targets polled for history, in either spelling (the "
                          "predecessor's ingestor read it as its whitelist)",
}
PREDECESSOR_VARIABLES.update({name: "ignored, with a warning: " + reason
                              for name, reason in ENV_IGNORED.items()})


def migration_rows() -> list[tuple[str, str]]:
    """(predecessor key, what it does here) for docs/operations.md."""
    rows = []
    for path, rule in LEGACY_KEYS.items():
        if isinstance(rule, Moved):
            text = "`{}`".format("`, `".join(rule.targets))
            if rule.note:
                text += " ({})".format(rule.note)
        else:
            text = "ignored, with a warning: " + rule.reason
        rows.append((path, text))
    rows.append((MIN_INTERVAL_PREFIX + "<tf>", "`fxcm_session.quota.min_interval_seconds.<tf>`"))
    return rows
