"""tick_aggregator's settings: typed, frozen, checked once (``from_mapping``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

from config.fields import Fields
from protocol.bars import PRICE_BASES
from protocol.errors import ConfigError
from protocol.market import TIMEFRAMES

SECTION = "tick_aggregator"


@dataclass(frozen=True)
class TickAggregatorSettings:
    """What tick_aggregator reads: the shared ``symbols``, ``timeframes``, ``price_basis``,
    ``calendar_file`` and ``instruments``, and its own section."""

    symbols: Tuple[str, ...]
    timeframes: Tuple[str, ...]  # in TIMEFRAMES order, 1m first
    price_basis: str = "mid"
    calendar_file: str = ""
    instruments: Dict[str, Any] = field(default_factory=dict)
    close_grace_ms: int = 1500
    max_synth_gap_minutes: int = 60
    live_publish_interval_seconds: float = 0.0

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> TickAggregatorSettings:
        """Checked settings; a ConfigError names the key that is wrong."""
        shared = Fields(section, "", cls)
        own = Fields(section, SECTION, cls)
        # The shared list (config/settings.py resolves the older tick_aggregator.timeframes).
        timeframes = shared.strings("timeframes")
        if "1m" not in timeframes:
            raise shared.fail("timeframes", "must be a list that includes 1m", list(timeframes))
        for tf in timeframes:
            if tf not in TIMEFRAMES:
                raise ConfigError("timeframes: unknown timeframe {!r} (known: {})".format(
                    tf, ", ".join(TIMEFRAMES)))
        return cls(
            symbols=shared.strings("symbols"),
            timeframes=tuple(tf for tf in TIMEFRAMES if tf in timeframes),
            price_basis=shared.string("price_basis", PRICE_BASES),
            calendar_file=shared.string("calendar_file"),
            instruments=dict(shared.mapping_of("instruments")),
            close_grace_ms=own.integer("close_grace_ms", minimum=0),
            max_synth_gap_minutes=own.integer("max_synth_gap_minutes", minimum=0),
            live_publish_interval_seconds=own.number("live_publish_interval_seconds",
                                                     minimum=0))
