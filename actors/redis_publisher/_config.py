"""redis_publisher's settings: typed, frozen, checked once (``PublisherConfig.from_mapping``):
every bad value is a ConfigError naming its key."""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping

from bus import Backoff, BackoffSettings
from config.fields import Fields
from protocol.contracts import CHANNEL_SUFFIXES, channel_names
from protocol.errors import ConfigError

SECTION = "redis_publisher"

# Logical channel name -> the suffix after "<prefix>:" when no override is configured.
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _key(name: str) -> str:
    return "{}.{}".format(SECTION, name)


@dataclass(frozen=True)
class PublisherConfig:
    """Everything the publisher reads from its settings: its own section and the shared
    ``channels``, ``redis`` and ``cache.dir`` (the journal's default home)."""

    prefix: str
    channels: Dict[str, str]  # logical name -> Redis channel
    journal_dir: str  # absolute, the actor's own directory under the configured one
    redis_url: str
    redis_required: bool
    last_bars: int = 500
    hmac_algo: str = "sha256"
    journal_max_bytes: int = 268435456
    journal_segment_bytes: int = 4194304
    pipeline_max: int = 100
    dedup_capacity: int = 50000
    socket_timeout_seconds: float = 5.0
    health_check_seconds: float = 5.0
    resume_wait_seconds: float = 10.0
    redis_backoff: BackoffSettings = field(default_factory=lambda: BackoffSettings(
        2.0, 45.0, multiplier=2.0, jitter=0.25))

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any], actor_name: str = SECTION
                     ) -> PublisherConfig:
        """Checked settings of the publisher named ``actor_name`` (its journal directory is
        named after it); a ConfigError names the key that is wrong."""
        shared = Fields(settings, "", cls)
        own = Fields(settings, SECTION, cls)
        # channel naming is shared (the command handler reads the same section)
        section = shared.mapping_of("channels")
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
        algo = own.value("hmac_algo")
        try:
            if not isinstance(algo, str):
                raise TypeError
            hmac.new(b"check", b"", algo)
        except (TypeError, ValueError):
            raise ConfigError("{}: not a hash algorithm this Python has for HMAC "
                              "(FXCM_HMAC_ALGO): {!r}".format(_key("hmac_algo"), algo)) from None
        journal_dir = own.string("journal_dir")
        if not journal_dir:
            cache = settings.get("cache") or {}
            cache_dir = cache.get("dir", "") if isinstance(cache, Mapping) else ""
            if not isinstance(cache_dir, str) or not cache_dir:
                raise ConfigError("{}: empty, and there is no cache.dir to put the journal in; "
                                  "set one of them".format(_key("journal_dir")))
            journal_dir = os.path.join(cache_dir, "journal")
        journal_dir = os.path.abspath(os.path.join(journal_dir, actor_name))
        redis_section = shared.mapping_of("redis")
        url = redis_section.get("url")
        required = redis_section.get("required")
        if not isinstance(url, str) or not isinstance(required, bool):
            raise ConfigError("redis.url / redis.required: must be a string and true/false")
        return cls(
            prefix=prefix, channels=channels, journal_dir=journal_dir, redis_url=url,
            redis_required=required,
            last_bars=own.integer("last_bars", minimum=1), hmac_algo=algo,
            journal_max_bytes=own.integer("journal_max_bytes", minimum=1),
            journal_segment_bytes=own.integer("journal_segment_bytes", minimum=1),
            pipeline_max=own.integer("pipeline_max", minimum=1),
            dedup_capacity=own.integer("dedup_capacity", minimum=1),
            socket_timeout_seconds=own.number("socket_timeout_seconds", minimum=0.01),
            health_check_seconds=own.number("health_check_seconds", minimum=0.01),
            resume_wait_seconds=own.number("resume_wait_seconds", minimum=0.0),
            redis_backoff=BackoffSettings.from_mapping(own.value("redis_backoff"),
                                                       _key("redis_backoff")))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], actor_name: str = SECTION
                      ) -> PublisherConfig:
        """The same as ``from_mapping`` (the older name)."""
        return cls.from_mapping(settings, actor_name)

    def backoff(self) -> Backoff:
        return Backoff.from_settings(self.redis_backoff)

    def key(self, name: str) -> str:
        """A late-joiner key: ``<prefix>:<name>``."""
        return "{}:{}".format(self.prefix, name)
