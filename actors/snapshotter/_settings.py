"""snapshotter's settings: typed, frozen, checked once (``from_mapping``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping

from config.fields import Fields
from protocol.errors import ConfigError

SECTION = "snapshotter"


@dataclass(frozen=True)
class SnapshotterSettings:
    """What snapshotter reads: its own section and the shared ``instruments``."""

    price_snap_interval_seconds: float = 3.0
    stale_seconds: float = 30.0
    instruments: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> SnapshotterSettings:
        """Checked settings; a ConfigError names the key that is wrong."""
        own = Fields(section, SECTION, cls)
        interval = own.number("price_snap_interval_seconds", above=0)
        stale = own.number("stale_seconds", above=0)
        if stale < interval:
            raise ConfigError("snapshotter.stale_seconds: must be >= price_snap_interval_seconds "
                              "({}), got {}".format(interval, stale))
        return cls(price_snap_interval_seconds=interval, stale_seconds=stale,
                   instruments=dict(Fields(section, "", cls).mapping_of("instruments")))
