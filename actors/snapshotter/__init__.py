"""snapshotter: the newest bid/ask per symbol, published as ``price.snapshot.<SYMBOL>`` every
``price_snap_interval_seconds``, with the ``price_stream`` telemetry heartbeat reads."""

from actors.snapshotter._actor import Snapshotter
from actors.snapshotter._book import OK, STALE, STATES, STOPPED, WAITING, PriceBook, Quote
from actors.snapshotter._settings import SnapshotterSettings

__all__ = ["OK", "STALE", "STATES", "STOPPED", "WAITING", "PriceBook", "Quote", "Snapshotter",
           "SnapshotterSettings"]
