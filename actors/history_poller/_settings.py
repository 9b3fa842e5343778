"""history_poller's settings: typed, frozen, checked once (``from_mapping``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

from bus import BackoffSettings
from config.fields import Fields
from protocol.bars import PRICE_BASES
from protocol.errors import ConfigError, ProtocolError
from protocol.market import TIMEFRAMES, normalize_symbol, parse_targets

SECTION = "history_poller"
# The most bars one history request may ask for.
MAX_CHUNK_BARS = 5000


@dataclass(frozen=True)
class HistoryPollerSettings:
    """What history_poller reads: its own section and the shared ``symbols``, ``timeframes``,
    ``price_basis``, ``calendar_file``, ``instruments`` and ``cache``."""

    symbols: Tuple[str, ...]  # normalized
    timeframes: Tuple[str, ...]  # in TIMEFRAMES order
    # the static stream targets: ``targets`` parsed, else every symbol at 1m
    stream_targets: Tuple[Tuple[str, str], ...]
    price_basis: str = "mid"
    calendar_file: str = ""
    instruments: Dict[str, Any] = field(default_factory=dict)
    cache_dir: str = "cache"
    cache_enabled: bool = True
    targets: str = ""  # as given (``history_poller.targets``, the seed's stream.config)
    max_targets: int = 20
    dynamic_universe_enabled: bool = False
    dynamic_universe_default_targets: str = ""
    warmup_bars: int = 1000
    max_bars: int = 3000
    chunk_bars: int = 300
    poll_seconds: float = 5.0
    idle_poll_multiplier: float = 6.0
    backfill_min_minutes: int = 10
    backfill_max_minutes: int = 360
    republish_batch: int = 500
    tail_guard_window_minutes: int = 1440
    request_timeout_seconds: float = 10.0
    repair_delay_ms: int = 250
    not_ready_retries: int = 8
    republish_window_hours: int = 24
    republish_watermark_ttl_seconds: float = 3600.0
    tail_guard_near_window_minutes: int = 60
    tail_guard_repair_only_when_market_closed: bool = True
    command_publish_rate: float = 2000.0
    command_publish_chunk: int = 200
    progress_interval_seconds: float = 2.0
    warmup_retry_base_seconds: float = 5.0
    warmup_retry_max_seconds: float = 300.0

    @property
    def warmup_backoff(self) -> BackoffSettings:
        """How a failed warmup is retried."""
        return BackoffSettings(self.warmup_retry_base_seconds, self.warmup_retry_max_seconds,
                               jitter=0.2)

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> HistoryPollerSettings:
        """Checked settings; a ConfigError names the key that is wrong."""
        shared = Fields(section, "", cls)
        own = Fields(section, SECTION, cls)
        counts = {key: own.integer(key, minimum=1) for key in (
            "max_targets", "warmup_bars", "max_bars", "chunk_bars", "republish_batch",
            "backfill_min_minutes", "backfill_max_minutes", "tail_guard_window_minutes",
            "not_ready_retries")}
        if counts["backfill_min_minutes"] > counts["backfill_max_minutes"]:
            raise ConfigError("history_poller.backfill_min_minutes: must be <= "
                              "backfill_max_minutes ({}), got {}".format(
                                  counts["backfill_max_minutes"],
                                  counts["backfill_min_minutes"]))
        if counts["chunk_bars"] > MAX_CHUNK_BARS:
            raise own.fail("chunk_bars", "at most {} bars per request".format(MAX_CHUNK_BARS),
                           counts["chunk_bars"])
        at_least_one = {key: own.number(key, minimum=1) for key in (
            "republish_window_hours", "republish_watermark_ttl_seconds",
            "tail_guard_near_window_minutes", "command_publish_chunk")}
        positive = {key: own.number(key, above=0) for key in (
            "poll_seconds", "request_timeout_seconds", "idle_poll_multiplier",
            "command_publish_rate", "progress_interval_seconds", "warmup_retry_base_seconds",
            "warmup_retry_max_seconds")}
        if positive["warmup_retry_max_seconds"] < positive["warmup_retry_base_seconds"]:
            raise ConfigError("history_poller.warmup_retry_max_seconds: must be >= "
                              "warmup_retry_base_seconds ({}), got {}".format(
                                  positive["warmup_retry_base_seconds"],
                                  positive["warmup_retry_max_seconds"]))
        timeframes = shared.strings("timeframes")
        for tf in timeframes:
            if tf not in TIMEFRAMES:
                raise shared.fail("timeframes", "must be a list of {}".format(
                    ", ".join(TIMEFRAMES)), list(timeframes))
        try:
            symbols = tuple(normalize_symbol(symbol) for symbol in shared.strings("symbols"))
        except ProtocolError as exc:
            raise ConfigError("symbols: {}".format(exc)) from None
        targets = own.value("targets")
        try:
            stream_targets = tuple(parse_targets(targets)) if targets else tuple(
                (symbol, "1m") for symbol in symbols)
        except ProtocolError as exc:
            raise ConfigError("history_poller.targets: {}".format(exc)) from None
        defaults = own.string("dynamic_universe_default_targets")
        try:
            parse_targets(defaults)
        except ProtocolError as exc:
            raise ConfigError("history_poller.dynamic_universe_default_targets: {}".format(
                exc)) from None
        cache = shared.mapping_of("cache")
        cache_dir = cache.get("dir", cls.cache_dir)
        cache_enabled = cache.get("enabled", cls.cache_enabled)
        if not isinstance(cache_dir, str):
            raise shared.fail("cache.dir", "must be a string", cache_dir)
        if not isinstance(cache_enabled, bool):
            raise shared.fail("cache.enabled", "must be true or false", cache_enabled)
        return cls(
            symbols=symbols, timeframes=tuple(tf for tf in TIMEFRAMES if tf in timeframes),
            stream_targets=stream_targets,
            price_basis=shared.string("price_basis", PRICE_BASES),
            calendar_file=shared.string("calendar_file"),
            instruments=dict(shared.mapping_of("instruments")),
            cache_dir=cache_dir, cache_enabled=cache_enabled,
            # none given ("" or []): every symbol at every timeframe (_base_targets)
            targets=targets if isinstance(targets, str) else ",".join(
                "{}:{}".format(*target) for target in stream_targets) if targets else "",
            max_targets=counts["max_targets"],
            dynamic_universe_enabled=own.flag("dynamic_universe_enabled"),
            dynamic_universe_default_targets=defaults,
            warmup_bars=counts["warmup_bars"], max_bars=counts["max_bars"],
            chunk_bars=counts["chunk_bars"],
            poll_seconds=positive["poll_seconds"],
            idle_poll_multiplier=positive["idle_poll_multiplier"],
            backfill_min_minutes=counts["backfill_min_minutes"],
            backfill_max_minutes=counts["backfill_max_minutes"],
            republish_batch=counts["republish_batch"],
            tail_guard_window_minutes=counts["tail_guard_window_minutes"],
            request_timeout_seconds=positive["request_timeout_seconds"],
            repair_delay_ms=own.integer("repair_delay_ms", minimum=0),
            not_ready_retries=counts["not_ready_retries"],
            republish_window_hours=int(at_least_one["republish_window_hours"]),
            republish_watermark_ttl_seconds=at_least_one["republish_watermark_ttl_seconds"],
            tail_guard_near_window_minutes=int(at_least_one["tail_guard_near_window_minutes"]),
            tail_guard_repair_only_when_market_closed=own.flag(
                "tail_guard_repair_only_when_market_closed"),
            command_publish_rate=positive["command_publish_rate"],
            command_publish_chunk=int(at_least_one["command_publish_chunk"]),
            progress_interval_seconds=positive["progress_interval_seconds"],
            warmup_retry_base_seconds=positive["warmup_retry_base_seconds"],
            warmup_retry_max_seconds=positive["warmup_retry_max_seconds"])
