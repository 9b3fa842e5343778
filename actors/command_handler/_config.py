"""The ``command_handler`` settings: typed, frozen, checked once (``from_mapping``), naming the
key that is wrong.

Pure: reads the environment only for the HMAC keys (through ``_auth.resolve_mode``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from actors.command_handler._auth import MODES, resolve_mode
from actors.command_handler._parse import COMMANDS
from bus import BackoffSettings
from config.fields import Fields
from protocol.contracts import channel_names
from protocol.errors import ConfigError

SECTION = "command_handler"


def _key(name: str) -> str:
    return "{}.{}".format(SECTION, name)


@dataclass(frozen=True)
class CommandHandlerSettings:
    """What command_handler reads: its own section and the shared ``symbols``, ``channels``
    and ``redis``. ``auth_mode`` is the setting; the effective mode needs the environment
    (``check``)."""

    symbols: Tuple[str, ...]
    commands_channel: str  # channels.commands, else <channels.prefix>:commands
    redis_url: str = "embedded"
    redis_required: bool = True
    max_bytes: int = 65536
    rate_limit_per_second: float = 20.0
    rate_burst: int = 40
    signed_rate_limit_per_second: float = 20.0
    signed_rate_burst: int = 40
    verify_per_second: float = 2000.0
    rate_limited_results_per_second: float = 200.0
    per_command_per_minute: int = 10
    allowlist: Tuple[str, ...] = (
        "fxcm_warmup", "fxcm_backfill", "fxcm_set_universe", "fxcm_republish_tail",
        "fxcm_tail_guard", "fxcm_bootstrap", "fxcm_cancel")
    auth_mode: str = "auto"
    skew_seconds: float = 30.0
    nonce_ttl_seconds: float = 300.0
    timeout_seconds: float = 120.0
    poller: str = "history_poller"
    max_queued: int = 100
    reject_report_interval_seconds: float = 1.0
    redis_timeout_seconds: float = 5.0
    redis_health_check_seconds: int = 10
    redis_backoff: BackoffSettings = field(default_factory=lambda: BackoffSettings(
        2.0, 45.0, multiplier=2.0, jitter=0.25))

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> CommandHandlerSettings:
        """Checked settings; a ConfigError names the key that is wrong."""
        shared = Fields(section, "", cls)
        own = Fields(section, SECTION, cls)
        skew = own.number("skew_seconds", minimum=1.0)
        nonce_ttl = own.number("nonce_ttl_seconds", minimum=1.0)
        if nonce_ttl < 2 * skew:
            raise ConfigError("{}: must be >= 2 x skew_seconds ({}), or a nonce could expire "
                              "while its ts is still accepted".format(_key("nonce_ttl_seconds"),
                                                                      2 * skew))
        allowlist = own.strings("allowlist")
        for index, name in enumerate(allowlist):
            if name not in COMMANDS:
                raise ConfigError("{}[{}]: unknown command {!r} (known: {})".format(
                    _key("allowlist"), index, name, ", ".join(COMMANDS)))
        channels = shared.mapping_of("channels")
        if not (channels.get("prefix") or channels.get("commands")):
            raise ConfigError("channels.prefix: empty, and channels.commands is empty too")
        poller = own.string("poller")
        if not poller:
            raise ConfigError("{}: must name the actor that runs the commands".format(
                _key("poller")))
        symbols = shared.strings("symbols")
        if not symbols:
            raise ConfigError("symbols: at least one symbol is needed")
        redis = shared.mapping_of("redis") if "redis" in section else {}
        url = redis.get("url", cls.redis_url)
        required = redis.get("required", cls.redis_required)
        if not isinstance(url, str):
            raise shared.fail("redis.url", "must be a string", url)
        if not isinstance(required, bool):
            raise shared.fail("redis.required", "must be true or false", required)
        auth_mode = own.string("auth_mode", MODES)  # its keys: ``check``
        return cls(
            symbols=symbols, commands_channel=channel_names(dict(channels))["commands"],
            redis_url=url, redis_required=required,
            max_bytes=own.integer("max_bytes", minimum=64),
            rate_limit_per_second=own.number("rate_limit_per_second", minimum=0.001),
            rate_burst=own.integer("rate_burst", minimum=1),
            signed_rate_limit_per_second=own.number("signed_rate_limit_per_second",
                                                    minimum=0.001),
            signed_rate_burst=own.integer("signed_rate_burst", minimum=1),
            verify_per_second=own.number("verify_per_second", minimum=1.0),
            rate_limited_results_per_second=own.number("rate_limited_results_per_second",
                                                       minimum=0.001),
            per_command_per_minute=own.integer("per_command_per_minute", minimum=1),
            allowlist=allowlist, auth_mode=auth_mode, skew_seconds=skew,
            nonce_ttl_seconds=nonce_ttl,
            timeout_seconds=own.number("timeout_seconds", minimum=0.1),
            poller=poller, max_queued=own.integer("max_queued", minimum=1),
            reject_report_interval_seconds=own.number("reject_report_interval_seconds",
                                                      minimum=0.0),
            redis_timeout_seconds=own.number("redis_timeout_seconds", minimum=0.1),
            redis_health_check_seconds=own.integer("redis_health_check_seconds", minimum=0),
            redis_backoff=BackoffSettings.from_mapping(own.value("redis_backoff"),
                                                       _key("redis_backoff")))


def commands_channel(settings: Mapping[str, Any]) -> str:
    """``channels.commands`` if set, else ``<channels.prefix>:commands``."""
    return channel_names(settings["channels"])["commands"]


def check(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
          ) -> Tuple[str, Dict[str, bytes]]:
    """Raise ConfigError naming the key if the settings cannot work; returns the effective
    auth mode and the keys (``{kid: secret}``: keep them out of logs and status)."""
    config = CommandHandlerSettings.from_mapping(settings)
    return resolve_mode(config.auth_mode, os.environ if environ is None else environ)
