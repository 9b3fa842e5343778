"""Each actor's typed, frozen settings class (``<Actor>Settings.from_mapping``): the one place
its settings are checked. A bad value is refused with one line naming the key; the classes are
frozen; their defaults are the shipped defaults (config/runtime_settings.json); what the loader
hands an actor comes back as the same values. And ``Backoff.from_settings``, the one home of the
backoff rule. Pure: no sockets."""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any

import pytest

from actors.command_handler import CommandHandlerSettings
from actors.fxcm_session import FxcmSessionSettings, QuotaSettings
from actors.heartbeat import HeartbeatSettings
from actors.history_poller import HistoryPollerSettings
from actors.redis_publisher import PublisherConfig
from actors.snapshotter import SnapshotterSettings
from actors.tick_aggregator import TickAggregatorSettings
from bus import Backoff, BackoffSettings
from config.settings import load, load_defaults
from protocol.errors import ConfigError

# settings class -> (its section, keys it does not hold as given: read elsewhere or resolved)
CLASSES: dict[Any, tuple[str, set[str]]] = {
    # tick_aggregator.timeframes is the older spelling of the shared timeframes (the loader
    # resolves it)
    TickAggregatorSettings: ("tick_aggregator", {"timeframes"}),
    SnapshotterSettings: ("snapshotter", set()),
    HeartbeatSettings: ("heartbeat", set()),
    HistoryPollerSettings: ("history_poller", set()),
    CommandHandlerSettings: ("command_handler", set()),
    # the quota is a class of its own (QuotaSettings, below)
    FxcmSessionSettings: ("fxcm_session", {"quota"}),
    # held resolved: journal_dir absolute, in a directory named after the actor; the shared
    # channels as the Redis name of each
    PublisherConfig: ("redis_publisher", {"journal_dir", "channels"}),
}

# settings class -> [(key, bad value, the key the error names)]
BAD_VALUES: dict[Any, list[tuple[str, Any, str]]] = {
    TickAggregatorSettings: [
        ("close_grace_ms", -1, "tick_aggregator.close_grace_ms: must be >= 0, got -1"),
        ("max_synth_gap_minutes", 1.5, "tick_aggregator.max_synth_gap_minutes: must be an "
                                       "integer"),
        ("live_publish_interval_seconds", "1", "tick_aggregator.live_publish_interval_seconds"),
        ("timeframes", ["5m"], "timeframes: must be a list that includes 1m"),
        ("timeframes", ["1m", "2m"], "timeframes: unknown timeframe '2m'"),
        ("price_basis", "last", "price_basis: must be one of mid, bid, ask"),
    ],
    SnapshotterSettings: [
        ("price_snap_interval_seconds", 0, "snapshotter.price_snap_interval_seconds: must be "
                                           "> 0, got 0"),
        ("stale_seconds", 1.0, "snapshotter.stale_seconds: must be >= "
                               "price_snap_interval_seconds"),
        ("stale_seconds", True, "snapshotter.stale_seconds: must be a number"),
    ],
    HeartbeatSettings: [
        ("interval_seconds", 0, "heartbeat.interval_seconds: must be > 0, got 0"),
        ("lag_warn_seconds", 200.0, "heartbeat.lag_warn_seconds: must be < lag_error_seconds"),
        ("lag_timeframe", "2m", "heartbeat.lag_timeframe: must be one of 1m"),
        ("session_tag", "a-b", "heartbeat.session_tag: must be AUTO or a tag"),
        ("poller_actor", "", "heartbeat.poller_actor: must not be empty"),
        ("symbols", [], "symbols: heartbeat needs at least one symbol"),
        ("redis", {"url": "embedded", "required": "yes"}, "redis.required: must be true or "
                                                          "false"),
    ],
    HistoryPollerSettings: [
        ("chunk_bars", 0, "history_poller.chunk_bars: must be >= 1, got 0"),
        ("chunk_bars", 5001, "history_poller.chunk_bars: at most 5000 bars per request"),
        ("backfill_min_minutes", 400, "history_poller.backfill_min_minutes: must be <= "
                                      "backfill_max_minutes (360)"),
        ("poll_seconds", 0, "history_poller.poll_seconds: must be > 0, got 0"),
        ("warmup_retry_max_seconds", 1.0, "history_poller.warmup_retry_max_seconds: must be "
                                          ">= warmup_retry_base_seconds"),
        ("repair_delay_ms", -1, "history_poller.repair_delay_ms: must be >= 0, got -1"),
        ("republish_window_hours", 0.5, "history_poller.republish_window_hours: must be >= 1"),
        ("dynamic_universe_enabled", "yes", "history_poller.dynamic_universe_enabled: must be "
                                            "true or false"),
        ("targets", "XAUUSD", "history_poller.targets: target 'XAUUSD' must be SYMBOL:tf"),
        ("dynamic_universe_default_targets", "EURUSD:2m",
         "history_poller.dynamic_universe_default_targets"),
        ("timeframes", ["1m", "7m"], "timeframes: must be a list of 1m"),
        ("cache", {"dir": 3, "enabled": True}, "cache.dir: must be a string"),
    ],
    CommandHandlerSettings: [
        ("max_bytes", 63, "command_handler.max_bytes: must be >= 64, got 63"),
        ("rate_burst", 0, "command_handler.rate_burst: must be >= 1, got 0"),
        ("nonce_ttl_seconds", 10.0, "command_handler.nonce_ttl_seconds: must be >= 2 x "
                                    "skew_seconds"),
        ("allowlist", ["fxcm_warmup", "fxcm_reboot"], "command_handler.allowlist[1]: unknown "
                                                      "command 'fxcm_reboot'"),
        ("auth_mode", "sometimes", "command_handler.auth_mode: must be one of auto, off"),
        ("timeout_seconds", "soon", "command_handler.timeout_seconds: must be a number"),
        ("poller", "", "command_handler.poller: must name the actor"),
        ("redis_backoff", {"base_seconds": 2.0, "max_seconds": 1.0},
         "command_handler.redis_backoff.max_seconds: must be >= base_seconds"),
        ("channels", {"prefix": "", "commands": ""}, "channels.prefix: empty"),
    ],
    FxcmSessionSettings: [
        ("stale_seconds", 0, "fxcm_session.stale_seconds: must be > 0, got 0"),
        ("tick_queue_size", 2.5, "fxcm_session.tick_queue_size: must be an integer"),
        ("login_wait_seconds", -1, "fxcm_session.login_wait_seconds: must be > 0, got -1"),
        ("login_backoff", {"base_seconds": 2.0, "max_seconds": 60.0, "jitter": 2},
         "fxcm_session.login_backoff.jitter: must be within 0..1"),
        ("history_backoff", {"base_seconds": 0, "max_seconds": 60.0},
         "fxcm_session.history_backoff.base_seconds: must be > 0"),
        ("broker", {"kind": "paper"}, "broker.kind: must be one of sim, replay, forexconnect"),
        ("symbols", ["e$"], "symbols: not a symbol: 'e$'"),
    ],
    PublisherConfig: [
        ("last_bars", 0, "redis_publisher.last_bars: must be >= 1, got 0"),
        ("pipeline_max", "10", "redis_publisher.pipeline_max: must be an integer, got '10'"),
        ("socket_timeout_seconds", 0, "redis_publisher.socket_timeout_seconds: must be >= 0.01"),
        ("hmac_algo", "md42", "redis_publisher.hmac_algo: not a hash algorithm"),
        ("redis_backoff", {"base_seconds": 5.0, "max_seconds": 1.0},
         "redis_publisher.redis_backoff.max_seconds: must be >= base_seconds"),
        ("channels", {"prefix": "fxcm", "bars": "x"}, "channels.bars: unknown channel"),
        ("channels", {"prefix": "has space"}, "channels.prefix: must be 1..64 letters"),
    ],
}


def delivered(section: str) -> dict[str, Any]:
    """What the loader hands the actor named ``section`` (shipped defaults, no environment)."""
    settings = load(environ={})
    spec = next(spec for spec in settings.actors if spec.name == section)
    return settings.actor_settings(spec)


def plain(value: Any) -> Any:
    """A settings value as JSON holds it (tuples as lists, nested classes as objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: plain(item) for key, item in dataclasses.asdict(value).items()}
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    return value


def field_defaults(cls: Any) -> dict[str, Any]:
    result = {}
    for spec in dataclasses.fields(cls):
        if spec.default is not dataclasses.MISSING:
            result[spec.name] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            result[spec.name] = spec.default_factory()
    return result


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda cls: cls.__name__)
def test_class_defaults_are_the_shipped_defaults(cls: Any) -> None:
    section, elsewhere = CLASSES[cls]
    shipped = load_defaults()[section]
    defaults = field_defaults(cls)
    for key, value in shipped.items():
        if key in elsewhere:
            continue
        assert key in defaults, "{}.{} has no default in {}".format(section, key, cls.__name__)
        assert plain(defaults[key]) == value, "{}.{}".format(section, key)


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda cls: cls.__name__)
def test_what_the_loader_delivers_is_read_as_the_same_values(cls: Any) -> None:
    section, elsewhere = CLASSES[cls]
    given = delivered(section)
    settings = cls.from_mapping(given)
    for spec in dataclasses.fields(cls):
        if spec.name in given and spec.name not in elsewhere:
            assert plain(getattr(settings, spec.name)) == plain(given[spec.name]), spec.name


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda cls: cls.__name__)
def test_settings_are_frozen(cls: Any) -> None:
    settings = cls.from_mapping(delivered(CLASSES[cls][0]))
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(settings, name, getattr(settings, name))


@pytest.mark.parametrize(("cls", "key", "value", "message"), [
    (cls, key, value, message) for cls, cases in BAD_VALUES.items()
    for key, value, message in cases], ids=lambda item: getattr(item, "__name__", None))
def test_a_bad_value_is_refused_naming_the_key(cls: Any, key: str, value: Any,
                                               message: str) -> None:
    given = dict(delivered(CLASSES[cls][0]), **{key: value})
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        cls.from_mapping(given)


# -- Backoff.from_settings ---------------------------------------------------------------------

def test_backoff_from_a_section_follows_its_values() -> None:
    backoff = Backoff.from_settings({"base_seconds": 2, "max_seconds": 10.0, "multiplier": 3.0,
                                     "jitter": 0.0}, "x.backoff", rng=random.Random(1))
    assert [backoff.compute(n) for n in range(5)] == [0.0, 2.0, 6.0, 10.0, 10.0]


def test_backoff_from_checked_settings_is_the_same_backoff() -> None:
    settings = BackoffSettings(1.0, 4.0, multiplier=2.0, jitter=0.0)
    backoff = Backoff.from_settings(settings)
    assert [backoff.compute(n) for n in range(1, 5)] == [1.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize(("section", "message"), [
    ({"base_seconds": 0, "max_seconds": 1}, "a.backoff.base_seconds: must be > 0"),
    ({"base_seconds": 5, "max_seconds": 1}, "a.backoff.max_seconds: must be >= base_seconds"),
    ({"base_seconds": 1, "max_seconds": 2, "multiplier": 0.5}, "a.backoff.multiplier: must "
                                                                "be >= 1"),
    ({"base_seconds": 1, "max_seconds": 2, "jitter": 1.5}, "a.backoff.jitter: must be within"),
    ({"base_seconds": "1", "max_seconds": 2}, "a.backoff.base_seconds: must be a number"),
    ({"max_seconds": 2}, "a.backoff.base_seconds: missing"),
    ([1, 2], "a.backoff: must be an object"),
])
def test_a_bad_backoff_section_is_refused_naming_the_key(section: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        Backoff.from_settings(section, "a.backoff")


@pytest.mark.parametrize("key", ["fxcm_session.login_backoff", "fxcm_session.history_backoff",
                                 "redis_publisher.redis_backoff",
                                 "command_handler.redis_backoff"])
def test_shipped_backoff_sections_are_read_as_they_are(key: str) -> None:
    section, _, name = key.partition(".")
    shipped = load_defaults()[section][name]
    assert dataclasses.asdict(BackoffSettings.from_mapping(shipped, key)) == shipped


# -- the pieces: fxcm_session's quota, history_poller's targets --------------------------------

def shipped_quota(**changes: Any) -> dict[str, Any]:
    return dict(load_defaults()["fxcm_session"]["quota"], **changes)


def test_the_shipped_quota_is_read_as_it_is() -> None:
    quota = QuotaSettings.from_mapping(shipped_quota())
    shipped = shipped_quota()
    assert (quota.max_calls_per_min, quota.max_calls_per_hour) == (360, 7200)
    assert quota.min_interval_seconds == shipped["min_interval_seconds"]
    assert quota.priority_targets == ("XAUUSD:1m",)
    assert [quota.load_min_interval, quota.load_warn, quota.load_reserve,
            quota.load_critical] == [shipped["load_thresholds"][name] for name in (
                "min_interval", "warn", "reserve", "critical")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        quota.max_calls_per_min = 1  # type: ignore[misc]


def test_quota_priority_targets_are_normalized() -> None:
    quota = QuotaSettings.from_mapping(shipped_quota(priority_targets=["xau/usd:m5"]))
    assert quota.priority_targets == ("XAUUSD:5m",)


@pytest.mark.parametrize(("changes", "message"), [
    ({"priority_reserve_per_min": 360}, "fxcm_session.quota.priority_reserve_per_min: must be "
                                        "within 0..max_calls_per_min-1"),
    ({"max_calls_per_hour": 0}, "fxcm_session.quota.max_calls_per_hour: must be >= 1, got 0"),
    ({"load_thresholds": {"min_interval": 0.9, "warn": 0.5, "reserve": 0.9, "critical": 1}},
     "fxcm_session.quota.load_thresholds: must satisfy 0 <= min_interval <= warn"),
    ({"min_interval_seconds": {"2m": 1.0}}, "fxcm_session.quota.min_interval_seconds.2m: "),
    ({"priority_targets": ["XAUUSD"]}, "fxcm_session.quota.priority_targets[0]: must be "
                                       "SYMBOL:tf"),
])
def test_a_bad_quota_is_refused_naming_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        QuotaSettings.from_mapping(shipped_quota(**changes))


def test_a_bad_quota_stops_the_loader_naming_the_key(tmp_path: Any) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"fxcm_session": {"quota": {"priority_reserve_per_hour": 7200}}}')
    with pytest.raises(ConfigError, match=re.escape(
            "fxcm_session.quota.priority_reserve_per_hour: must be within")):
        load(str(path), environ={})


def test_history_targets_are_the_given_ones_else_every_symbol_at_1m() -> None:
    given = delivered("history_poller")
    every_symbol = HistoryPollerSettings.from_mapping(dict(given, targets=""))
    assert every_symbol.stream_targets == tuple((symbol, "1m") for symbol in given["symbols"])
    chosen = HistoryPollerSettings.from_mapping(dict(given, targets="XAU/USD:m1,EURUSD:5m"))
    assert chosen.stream_targets == (("XAUUSD", "1m"), ("EURUSD", "5m"))
    # no targets, whichever way (an actor's own settings may give a list): no static base
    nothing: tuple[Any, ...] = ("", [])
    for none in nothing:
        assert HistoryPollerSettings.from_mapping(dict(given, targets=none)).targets == ""


def test_the_publisher_journal_is_under_cache_dir_named_after_the_actor() -> None:
    given = dict(delivered("redis_publisher"), journal_dir="")
    config = PublisherConfig.from_mapping(given, "publisher_2")
    assert config.journal_dir == "{}/journal/publisher_2".format(given["cache"]["dir"])


def test_the_publisher_channels_are_resolved_to_redis_names() -> None:
    given = dict(delivered("redis_publisher"), channels={"prefix": "desk", "ohlcv": "bars"})
    channels = PublisherConfig.from_mapping(given).channels
    assert (channels["ohlcv"], channels["heartbeat"]) == ("bars", "desk:heartbeat")


def test_a_quota_interval_named_the_seeds_way_applies_to_its_timeframe() -> None:
    quota = QuotaSettings.from_mapping(shipped_quota(min_interval_seconds={"m1": 3, "H1": 9}))
    assert quota.min_interval_seconds == {"1m": 3.0, "1h": 9.0}
