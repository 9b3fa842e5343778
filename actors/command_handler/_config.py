"""The ``command_handler`` settings: checked once at start, naming the key that is wrong.

Pure: reads the environment only for the HMAC keys (through ``_auth.resolve_mode``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Dict, Tuple

from actors.command_handler._auth import resolve_mode
from actors.command_handler._parse import COMMANDS
from protocol.contracts import channel_names
from protocol.errors import ConfigError

SECTION = "command_handler"

# key -> (type, minimum or None); a float key also takes an integer.
_NUMBERS: Dict[str, Any] = {
    "max_bytes": (int, 64),
    "rate_limit_per_second": (float, 0.001),
    "rate_burst": (int, 1),
    "signed_rate_limit_per_second": (float, 0.001),
    "signed_rate_burst": (int, 1),
    "verify_per_second": (float, 1.0),
    "rate_limited_results_per_second": (float, 0.001),
    "per_command_per_minute": (int, 1),
    "skew_seconds": (float, 1.0),
    "nonce_ttl_seconds": (float, 1.0),
    "timeout_seconds": (float, 0.1),
    "max_queued": (int, 1),
    "reject_report_interval_seconds": (float, 0.0),
    "redis_timeout_seconds": (float, 0.1),
    "redis_health_check_seconds": (int, 0),
}
_BACKOFF = ("base_seconds", "max_seconds", "multiplier", "jitter")


def _key(name: str) -> str:
    return "{}.{}".format(SECTION, name)


def _get(settings: Mapping[str, Any], name: str) -> Any:
    if name not in settings:
        raise ConfigError("{}: missing".format(_key(name)))
    return settings[name]


def _number(settings: Mapping[str, Any], name: str, kind: type, minimum: float) -> float:
    value = _get(settings, name)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError("{}: must be {}, got {!r}".format(
            _key(name), "a number" if kind is float else "an integer", value))
    if value < minimum:
        raise ConfigError("{}: must be >= {}, got {}".format(_key(name), minimum, value))
    return float(value)


def _string(settings: Mapping[str, Any], name: str) -> str:
    value = _get(settings, name)
    if not isinstance(value, str):
        raise ConfigError("{}: must be a string, got {!r}".format(_key(name), value))
    return value


def commands_channel(settings: Mapping[str, Any]) -> str:
    """``channels.commands`` if set, else ``<channels.prefix>:commands``."""
    return channel_names(settings["channels"])["commands"]


def check(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
          ) -> Tuple[str, Dict[str, bytes]]:
    """Raise ConfigError naming the key if the settings cannot work; returns the effective
    auth mode and the keys (``{kid: secret}``: keep them out of logs and status)."""
    for name, (kind, minimum) in _NUMBERS.items():
        _number(settings, name, kind, minimum)
    if settings["nonce_ttl_seconds"] < 2 * settings["skew_seconds"]:
        raise ConfigError("{}: must be >= 2 x skew_seconds ({}), or a nonce could expire while "
                          "its ts is still accepted".format(_key("nonce_ttl_seconds"),
                                                            2 * settings["skew_seconds"]))
    allowlist = _get(settings, "allowlist")
    if not isinstance(allowlist, list):
        raise ConfigError("{}: must be a list".format(_key("allowlist")))
    for index, name in enumerate(allowlist):
        if name not in COMMANDS:
            raise ConfigError("{}[{}]: unknown command {!r} (known: {})".format(
                _key("allowlist"), index, name, ", ".join(COMMANDS)))
    channels = settings.get("channels")
    if not isinstance(channels, dict) or not (channels.get("prefix") or channels.get("commands")):
        raise ConfigError("channels.prefix: empty, and channels.commands is empty too")
    if not _string(settings, "poller"):
        raise ConfigError("{}: must name the actor that runs the commands".format(
            _key("poller")))
    backoff = _get(settings, "redis_backoff")
    if not isinstance(backoff, dict):
        raise ConfigError("{}: must be an object".format(_key("redis_backoff")))
    for name in _BACKOFF:
        value = backoff.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("{}.{}: must be a number, got {!r}".format(
                _key("redis_backoff"), name, value))
    if not 0 < backoff["base_seconds"] <= backoff["max_seconds"]:
        raise ConfigError("{}.max_seconds: must be >= base_seconds > 0".format(
            _key("redis_backoff")))
    if backoff["multiplier"] < 1:
        raise ConfigError("{}.multiplier: must be >= 1".format(_key("redis_backoff")))
    if not 0 <= backoff["jitter"] <= 1:
        raise ConfigError("{}.jitter: must be within 0..1".format(_key("redis_backoff")))
    symbols = settings.get("symbols")
    if not isinstance(symbols, list) or not symbols:
        raise ConfigError("symbols: at least one symbol is needed")
    return resolve_mode(_string(settings, "auth_mode"),
                        os.environ if environ is None else environ)
