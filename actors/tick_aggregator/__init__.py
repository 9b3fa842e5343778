"""tick_aggregator: 1m bars from ticks and the derived chain 5m .. 1d (DESIGN.md section 6)."""

from actors.tick_aggregator._actor import TickAggregator
from actors.tick_aggregator._logic import Aggregator
from actors.tick_aggregator._settings import TickAggregatorSettings

__all__ = ["Aggregator", "TickAggregator", "TickAggregatorSettings"]
