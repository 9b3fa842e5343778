"""The snapshotter actor: ``tick.<SYMBOL>`` in (latest policy), ``price.snapshot.<SYMBOL>`` out.

Every ``price_snap_interval_seconds`` it publishes one PriceSnapshot per quoted symbol (see
``_book`` for what a cycle holds). Ticks come through a ``latest`` mailbox: the router keeps
only the newest pending tick per symbol for it, so a slow snapshotter never slows the tick path.
Snapshots go out with ``try_publish``: a snapshot is conflatable, so a full lossless subscriber
costs a counted refusal, never a blocked actor.

Its ``status()`` carries the ``price_stream`` telemetry heartbeat reads from
``actor.status.snapshotter``, and its metrics (``status()["metrics"]``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from actors.base import LATEST, Actor, Subscribe, handles
from actors.snapshotter._book import STATES, PriceBook
from actors.snapshotter._settings import SnapshotterSettings
from bus import Delivery
from protocol.market import Instrument, Precision, Tick

log = logging.getLogger("fxcm.snapshotter")

SNAPSHOT_TOPIC = "price.snapshot."


class Snapshotter(Actor):
    """See the module docstring. Settings (section ``snapshotter``):
    ``price_snap_interval_seconds``, ``stale_seconds``."""

    subscriptions = (Subscribe("tick.", LATEST),)
    # Only the newest tick per symbol matters, every few seconds: pull a few at a time, at
    # most 20 times a second, and let the router conflate the rest (it never slows the
    # tick path, and costs the host a few hundred deliveries a second, not every tick).
    prefetch_limit = 32
    ack_interval = 0.05

    def __init__(self, name: str, settings: dict[str, Any] | None = None) -> None:
        super().__init__(name, settings)
        self.book: PriceBook | None = None
        self.published: Counter[str] = Counter()
        self.refused = 0
        self.not_a_tick = 0

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        SnapshotterSettings.from_mapping(settings)

    def on_start(self) -> None:
        config = SnapshotterSettings.from_mapping(self.settings)
        # The broker's word on each symbol's precision reaches here in the tick stream
        # (``tick.$instrument.<SYMBOL>``); until then, the ``instruments`` setting.
        self.book = PriceBook(config.price_snap_interval_seconds, config.stale_seconds,
                              time.monotonic(), Precision(config.instruments))
        self.every(config.price_snap_interval_seconds, self._cycle)

    def on_stop(self) -> None:
        if self.book is not None:
            self.book.stopped = True
            # the last word for heartbeat: the price stream stopped on purpose
            self.try_publish("actor.status." + self.name, self.status(), "actor.status")

    @handles("tick")
    def on_tick(self, tick: Any, delivery: Delivery) -> None:
        if not isinstance(tick, Tick) or self.book is None:
            self.not_a_tick += 1
            return
        self.book.update(tick, time.monotonic())

    @handles("instrument")
    def on_instrument(self, instrument: Any, delivery: Delivery) -> None:
        if isinstance(instrument, Instrument) and self.book is not None:
            self.book.precision.learn(instrument)

    def _cycle(self) -> None:
        assert self.book is not None
        for snapshot in self.book.cycle(time.time()):
            if self.try_publish(SNAPSHOT_TOPIC + snapshot.symbol, snapshot):
                self.published[snapshot.symbol] += 1
            else:
                self.refused += 1

    def status(self) -> dict[str, Any]:
        result = super().status()
        if self.book is None:
            return result
        mono = time.monotonic()
        stream = self.book.telemetry(time.time(), mono)
        stream["published"] = dict(self.published)
        stream["refused"] = self.refused
        stream["not_a_tick"] = self.not_a_tick
        result["price_stream"] = stream
        result["metrics"] = self._metrics(stream)
        return result

    def _metrics(self, stream: dict[str, Any]) -> dict[str, Any]:
        symbols = stream["symbols_state"]
        return {
            "fxcm_price_snapshots_total": {
                "type": "counter", "help": "Price snapshots published, per symbol.",
                "samples": [[{"symbol": s}, float(n)] for s, n in sorted(self.published.items())],
            },
            "fxcm_price_snapshots_refused_total": {
                "type": "counter",
                "help": "Price snapshots not published because the bus gave no credit.",
                "samples": [[{}, float(self.refused)]],
            },
            "fxcm_price_ticks_total": {
                "type": "counter",
                "help": "Ticks the snapshotter took (after conflation to the newest), per symbol.",
                "samples": [[{"symbol": s}, float(v["ticks"])] for s, v in symbols.items()],
            },
            "fxcm_price_tick_silence_seconds": {
                "type": "gauge", "help": "Seconds since the last tick of any symbol arrived.",
                "samples": [[{}, float(stream["tick_silence_seconds"])]],
            },
            "fxcm_price_tick_age_seconds": {
                "type": "gauge", "help": "Age of the newest quote (snapshot time - tick time).",
                "samples": [[{"symbol": s}, float(v["tick_age"])] for s, v in symbols.items()],
            },
            "fxcm_price_stream_state": {
                "type": "gauge", "help": "1 for the price stream's current state.",
                "samples": [[{"state": state}, 1.0 if state == stream["state"] else 0.0]
                            for state in STATES],
            },
        }
