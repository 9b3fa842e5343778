"""redis_publisher's settings, checked once: every bad value is a ConfigError naming its key."""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass
from typing import Any

from bus import Backoff, BackoffSettings
from protocol.contracts import CHANNEL_SUFFIXES, channel_names
from protocol.errors import ConfigError

SECTION = "redis_publisher"

# Logical channel name -> the suffix after "<prefix>:" when no override is configured.
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _key(name: str) -> str:
    return "{}.{}".format(SECTION, name)


def _number(settings: dict[str, Any], name: str, kind: type, minimum: float,
            where: str = "") -> Any:
    path = where or _key(name)
    value = settings.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError("{}: must be {}, got {!r}".format(
            path, "a number" if kind is float else "an integer", value))
    if value < minimum:
        raise ConfigError("{}: must be >= {}, got {}".format(path, minimum, value))
    return kind(value)


@dataclass(frozen=True)
class PublisherConfig:
    """Everything the publisher reads from its settings."""

    prefix: str
    channels: dict[str, str]  # logical name -> Redis channel
    last_bars: int
    hmac_algo: str
    journal_dir: str
    journal_max_bytes: int
    journal_segment_bytes: int
    pipeline_max: int
    dedup_capacity: int
    socket_timeout: float
    health_check: float
    resume_wait: float
    redis_backoff: BackoffSettings
    redis_url: str
    redis_required: bool

    @classmethod
    def from_settings(cls, settings: dict[str, Any], actor_name: str = SECTION
                      ) -> PublisherConfig:
        # channel naming is shared (the command handler reads the same section)
        section = settings.get("channels")
        if not isinstance(section, dict):
            raise ConfigError("channels: must be an object")
        prefix = section.get("prefix")
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise ConfigError("channels.prefix: must be 1..64 letters, digits or _.:- "
                              "(FXCM_CHANNEL_PREFIX), got {!r}".format(prefix))
        overrides = {name: value for name, value in section.items() if name != "prefix"}
        for name, suffix in CHANNEL_SUFFIXES.items():
            override = overrides.get(name, "")
            if not isinstance(override, str) or any(c.isspace() for c in override):
                raise ConfigError("channels.{}: must be a channel name without spaces (\"\" = "
                                  "{}:{}), got {!r}".format(name, prefix, suffix, override))
        channels = channel_names(section)
        for name in overrides:
            if name not in CHANNEL_SUFFIXES:
                raise ConfigError("channels.{}: unknown channel (known: prefix, {})".format(
                    name, ", ".join(CHANNEL_SUFFIXES)))
        algo = settings.get("hmac_algo")
        try:
            if not isinstance(algo, str):
                raise TypeError
            hmac.new(b"check", b"", algo)
        except (TypeError, ValueError):
            raise ConfigError("{}: not a hash algorithm this Python has for HMAC "
                              "(FXCM_HMAC_ALGO): {!r}".format(_key("hmac_algo"), algo)) from None
        journal_dir = settings.get("journal_dir")
        if not isinstance(journal_dir, str):
            raise ConfigError("{}: must be a string".format(_key("journal_dir")))
        if not journal_dir:
            cache = settings.get("cache") or {}
            cache_dir = cache.get("dir", "") if isinstance(cache, dict) else ""
            if not isinstance(cache_dir, str) or not cache_dir:
                raise ConfigError("{}: empty, and there is no cache.dir to put the journal in; "
                                  "set one of them".format(_key("journal_dir")))
            journal_dir = os.path.join(cache_dir, "journal")
        journal_dir = os.path.abspath(os.path.join(journal_dir, actor_name))
        max_bytes = _number(settings, "journal_max_bytes", int, 1)
        segment_bytes = _number(settings, "journal_segment_bytes", int, 1)
        backoff = BackoffSettings.from_mapping(settings.get("redis_backoff"),
                                               _key("redis_backoff"))
        redis_section = settings.get("redis")
        if not isinstance(redis_section, dict):
            raise ConfigError("redis: must be an object")
        url = redis_section.get("url")
        required = redis_section.get("required")
        if not isinstance(url, str) or not isinstance(required, bool):
            raise ConfigError("redis.url / redis.required: must be a string and true/false")
        return cls(
            prefix=prefix, channels=channels,
            last_bars=_number(settings, "last_bars", int, 1),
            hmac_algo=algo, journal_dir=journal_dir, journal_max_bytes=max_bytes,
            journal_segment_bytes=segment_bytes,
            pipeline_max=_number(settings, "pipeline_max", int, 1),
            dedup_capacity=_number(settings, "dedup_capacity", int, 1),
            socket_timeout=_number(settings, "socket_timeout_seconds", float, 0.01),
            health_check=_number(settings, "health_check_seconds", float, 0.01),
            resume_wait=_number(settings, "resume_wait_seconds", float, 0.0),
            redis_backoff=backoff, redis_url=url, redis_required=required)

    def backoff(self) -> Backoff:
        return Backoff.from_settings(self.redis_backoff)

    def key(self, name: str) -> str:
        """A late-joiner key: ``<prefix>:<name>``."""
        return "{}:{}".format(self.prefix, name)
