"""An example actor: watch the spread of every symbol, alert when it is too wide.

Subscribes to ``price.snapshot.`` with the ``latest`` policy (the router keeps only the newest
snapshot per symbol for it, so a slow monitor never holds the snapshotter back) and publishes
``alert.spread.<SYMBOL>`` (type ``alert.spread``) when a symbol's spread crosses its threshold,
and again when it is back to normal::

    {"symbol": "XAUUSD", "state": "wide" | "normal", "spread": 0.3, "max_spread": 0.1,
     "bid": 2634.69, "ask": 2634.99, "tick_ts": 1795354001.321}

While a spread stays wide it is repeated every ``realert_seconds`` (0: never). Run it attached
to a running host (from the checkout, so that ``examples`` imports)::

    PYTHONPATH=. fxcm attach --run-dir /tmp/fxcm-$(id -u) --name spread_monitor \\
        --settings '{"max_spread": {"XAUUSD": 0.5, "USDJPY": 0.02, "*": 0.0003},
                     "realert_seconds": 60}' \\
        examples.spread_monitor:SpreadMonitor

Settings: ``max_spread`` maps a symbol (or ``"*"`` for every other one) to the widest spread
that is still normal, in price units; ``realert_seconds``. A bad value stops it at once with
one line naming the key (exit code 2).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from actors import LATEST, Actor, Subscribe, handles
from bus import Delivery
from protocol.errors import ConfigError
from protocol.market import PriceSnapshot

ALERT_TOPIC = "alert.spread."
ALERT_TYPE = "alert.spread"


class SpreadWatch:
    """The pure part: which snapshot makes an alert. No sockets, no clock of its own."""

    def __init__(self, max_spread: dict[str, float], realert_seconds: float) -> None:
        self.max_spread = max_spread
        self.realert_seconds = realert_seconds
        self.wide_since: dict[str, float] = {}   # symbol -> when its last alert went out

    def threshold(self, symbol: str) -> float | None:
        return self.max_spread.get(symbol, self.max_spread.get("*"))

    def update(self, snapshot: PriceSnapshot, now: float) -> dict[str, Any] | None:
        """The alert this snapshot makes, or None."""
        limit = self.threshold(snapshot.symbol)
        if limit is None:
            return None
        spread = round(snapshot.ask - snapshot.bid, 10)
        last = self.wide_since.get(snapshot.symbol)
        if spread > limit:
            if last is not None and (self.realert_seconds <= 0
                                     or now - last < self.realert_seconds):
                return None
            self.wide_since[snapshot.symbol] = now
            state = "wide"
        elif last is not None:
            del self.wide_since[snapshot.symbol]
            state = "normal"
        else:
            return None
        return {"symbol": snapshot.symbol, "state": state, "spread": spread, "max_spread": limit,
                "bid": snapshot.bid, "ask": snapshot.ask, "tick_ts": snapshot.tick_ts}


class SpreadMonitor(Actor):
    """See the module docstring."""

    subscriptions = (Subscribe("price.snapshot.", LATEST),)

    def __init__(self, name: str, settings: dict[str, Any] | None = None) -> None:
        super().__init__(name, settings)
        # Checked here too, not only by a host: an attached actor has no host to check it.
        self.check_settings(self.settings)
        self.watch = SpreadWatch({symbol: float(value) for symbol, value
                                  in self.settings["max_spread"].items()},
                                 float(self.settings["realert_seconds"]))
        self.alerts: Counter[str] = Counter()

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        limits = settings.get("max_spread")
        if not isinstance(limits, dict) or not limits:
            raise ConfigError("max_spread: must be an object {{SYMBOL or \"*\": spread}}, got "
                              "{!r}".format(limits))
        for symbol, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError("max_spread.{}: must be a number > 0, got {!r}".format(
                    symbol, value))
        realert = settings.get("realert_seconds")
        if isinstance(realert, bool) or not isinstance(realert, (int, float)) or realert < 0:
            raise ConfigError("realert_seconds: must be a number >= 0, got {!r}".format(realert))

    @handles("price.snapshot")
    def on_snapshot(self, snapshot: Any, delivery: Delivery) -> None:
        if not isinstance(snapshot, PriceSnapshot):
            return
        alert = self.watch.update(snapshot, time.monotonic())
        if alert is not None:
            self.alerts[alert["symbol"]] += 1
            self.publish(ALERT_TOPIC + alert["symbol"], alert, ALERT_TYPE)

    def status(self) -> dict[str, Any]:
        result = super().status()
        result["wide"] = sorted(self.watch.wide_since)
        result["metrics"] = {
            "fxcm_example_spread_alerts_total": {
                "type": "counter", "help": "Spread alerts published, per symbol.",
                "samples": [[{"symbol": s}, float(n)] for s, n in sorted(self.alerts.items())],
            },
        }
        return result
