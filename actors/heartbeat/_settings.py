"""heartbeat's settings: typed, frozen, checked once (``from_mapping``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

from config.fields import Fields
from protocol.errors import ConfigError
from protocol.market import TF_MS

SECTION = "heartbeat"


@dataclass(frozen=True)
class HeartbeatSettings:
    """What heartbeat reads: its own section (intervals, thresholds, ``lag_timeframe`` and the
    names of the actors whose status it reads) and the shared ``symbols``, ``timeframes``,
    ``calendar_file``, ``channels`` and ``redis.required``."""

    symbols: Tuple[str, ...]
    timeframes: Tuple[str, ...] = ()
    calendar_file: str = ""
    channels: Dict[str, Any] = field(default_factory=dict)
    redis_required: bool = True
    interval_seconds: float = 5.0
    market_status_interval_seconds: float = 30.0
    status_interval_seconds: float = 5.0
    stale_tick_seconds: float = 60.0
    lag_warn_seconds: float = 60.0
    lag_error_seconds: float = 180.0
    lag_timeframe: str = "1m"
    session_tag: str = "AUTO"
    evaluate_interval_seconds: float = 1.0
    status_stale_seconds: float = 10.0
    stats_window_seconds: float = 86400.0
    runtime_timeout_seconds: float = 2.0
    session_actor: str = "fxcm_session"
    snapshotter_actor: str = "snapshotter"
    publisher_actor: str = "redis_publisher"
    poller_actor: str = "history_poller"
    aggregator_actor: str = "tick_aggregator"

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> HeartbeatSettings:
        """Checked settings; a ConfigError names the key that is wrong."""
        shared = Fields(section, "", cls)
        own = Fields(section, SECTION, cls)
        lag_warn = own.number("lag_warn_seconds", above=0)
        lag_error = own.number("lag_error_seconds", above=0)
        lag_timeframe = own.string("lag_timeframe", tuple(TF_MS))
        tag = own.string("session_tag", required=True)
        if tag != "AUTO" and not all(c.isalnum() or c == "_" for c in tag):
            raise own.fail("session_tag", "must be AUTO or a tag of letters, digits and _", tag)
        if lag_warn >= lag_error:
            raise ConfigError("heartbeat.lag_warn_seconds: must be < lag_error_seconds ({}), "
                              "got {}".format(lag_error, lag_warn))
        symbols = shared.strings("symbols")
        if not symbols:
            raise ConfigError("symbols: heartbeat needs at least one symbol")
        redis = shared.mapping_of("redis") if "redis" in section else {}
        required = redis.get("required", True)
        if not isinstance(required, bool):
            raise shared.fail("redis.required", "must be true or false", required)
        return cls(
            symbols=symbols, timeframes=shared.strings("timeframes"),
            calendar_file=shared.string("calendar_file"),
            channels=dict(shared.mapping_of("channels")), redis_required=required,
            interval_seconds=own.number("interval_seconds", above=0),
            market_status_interval_seconds=own.number("market_status_interval_seconds",
                                                      above=0),
            status_interval_seconds=own.number("status_interval_seconds", above=0),
            stale_tick_seconds=own.number("stale_tick_seconds", above=0),
            lag_warn_seconds=lag_warn, lag_error_seconds=lag_error,
            lag_timeframe=lag_timeframe, session_tag=tag,
            evaluate_interval_seconds=own.number("evaluate_interval_seconds", above=0),
            status_stale_seconds=own.number("status_stale_seconds", above=0),
            stats_window_seconds=own.number("stats_window_seconds", above=0),
            runtime_timeout_seconds=own.number("runtime_timeout_seconds", above=0),
            session_actor=own.string("session_actor", required=True),
            snapshotter_actor=own.string("snapshotter_actor", required=True),
            publisher_actor=own.string("publisher_actor", required=True),
            poller_actor=own.string("poller_actor", required=True),
            aggregator_actor=own.string("aggregator_actor", required=True))
