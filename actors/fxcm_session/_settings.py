"""fxcm_session's settings: typed, frozen, checked once (``from_mapping``).

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

from actors.fxcm_session._quota import QuotaSettings
from bus import BackoffSettings
from config.fields import Fields
from protocol.bars import PRICE_BASES
from protocol.errors import ConfigError, ProtocolError
from protocol.market import normalize_symbol

SECTION = "fxcm_session"
BROKER_KINDS = ("sim", "replay", "forexconnect")


@dataclass(frozen=True)
class FxcmSessionSettings:
    """What fxcm_session reads: its own section and the shared ``symbols``, ``price_basis``,
    ``calendar_file``, ``instruments`` and ``broker`` (each broker reads its own sub-section,
    ``broker.sim`` and so on, which the loader checks)."""

    symbols: Tuple[str, ...]  # normalized
    broker: Dict[str, Any]
    quota: QuotaSettings
    price_basis: str = "mid"
    calendar_file: str = ""
    instruments: Dict[str, Any] = field(default_factory=dict)
    stale_seconds: float = 30.0
    reconnect_cooldown_seconds: float = 60.0
    tick_queue_size: int = 20000
    clock_interval_seconds: float = 0.05
    logout_timeout_seconds: float = 35.0
    login_wait_seconds: float = 30.0
    clock_skew_warn_seconds: float = 1.0
    login_backoff: BackoffSettings = field(default_factory=lambda: BackoffSettings(
        2.0, 60.0, multiplier=2.0, jitter=0.2))
    history_backoff: BackoffSettings = field(default_factory=lambda: BackoffSettings(
        6.0, 120.0, multiplier=2.0, jitter=0.3))

    @property
    def broker_kind(self) -> str:
        return str(self.broker["kind"])

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> FxcmSessionSettings:
        """Checked settings; a ConfigError names the key that is wrong."""
        shared = Fields(section, "", cls)
        own = Fields(section, SECTION, cls)
        try:
            symbols = tuple(normalize_symbol(symbol) for symbol in shared.strings("symbols"))
        except ProtocolError as exc:
            raise ConfigError("symbols: {}".format(exc)) from None
        broker = shared.mapping_of("broker")
        Fields(broker, "broker").string("kind", BROKER_KINDS)
        return cls(
            symbols=symbols, broker=dict(broker),
            quota=QuotaSettings.from_mapping(own.value("quota"), own.name("quota")),
            price_basis=shared.string("price_basis", PRICE_BASES),
            calendar_file=shared.string("calendar_file"),
            instruments=dict(shared.mapping_of("instruments")),
            stale_seconds=own.number("stale_seconds", above=0),
            reconnect_cooldown_seconds=own.number("reconnect_cooldown_seconds", minimum=0),
            tick_queue_size=own.integer("tick_queue_size", minimum=1),
            clock_interval_seconds=own.number("clock_interval_seconds", above=0),
            logout_timeout_seconds=own.number("logout_timeout_seconds", above=0),
            login_wait_seconds=own.number("login_wait_seconds", above=0),
            clock_skew_warn_seconds=own.number("clock_skew_warn_seconds", above=0),
            login_backoff=BackoffSettings.from_mapping(own.value("login_backoff"),
                                                       own.name("login_backoff")),
            history_backoff=BackoffSettings.from_mapping(own.value("history_backoff"),
                                                         own.name("history_backoff")))
