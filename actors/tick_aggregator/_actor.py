"""tick_aggregator: the actor around ``Aggregator``.

One subscription, ``tick.`` lossless in checkpoint ack mode: it carries the ticks, the pipeline
clock (``tick.$clock``), the session state (``tick.$session``) and each instrument's precision
(``tick.$instrument.<SYMBOL>``) from fxcm_session in one order. The aggregator's whole state
goes to the router with each checkpoint, so a restarted instance replays exactly the messages
after it and emits exactly the final bars an uninterrupted run would (re-emitted bars carry the
same key and values; downstream deduplicates them). No wall clock, no timers of its own.

Out: final bars on ``bar.<SYMBOL>.<tf>``, and on ``gap.<SYMBOL>`` a ``BarGap`` whenever it knows
it will not emit some minutes (see ``_logic``): history_poller fills them at once.
"""

from __future__ import annotations

from typing import Any

from actors.base import LOSSLESS, Actor, Subscribe, handles
from actors.tick_aggregator._logic import Aggregator
from actors.tick_aggregator._settings import TickAggregatorSettings
from bus import Delivery
from protocol.errors import ProtocolError
from protocol.market import (
    GAP_PREFIX,
    Bar,
    Clock,
    Instrument,
    Precision,
    SessionState,
    Tick,
    bar_topic,
)

# What fxcm_session says, in the tick stream, once a replay's file is exhausted.
REPLAY_BROKER = "replay"
REPLAY_FINISHED = "replay finished"


class TickAggregator(Actor):
    ack_mode = "checkpoint"
    subscriptions = (Subscribe("tick.", LOSSLESS),)

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        TickAggregatorSettings.from_mapping(settings)

    def __init__(self, name: str, settings: dict[str, Any] | None = None) -> None:
        super().__init__(name, settings)
        self.config = TickAggregatorSettings.from_mapping(self.settings)
        self._aggregator: Aggregator | None = None
        self._last_preview_ms = 0
        self.published: dict[str, int] = {}
        self.gaps_published = 0

    @property
    def aggregator(self) -> Aggregator:
        # Built on first use: restore() (from WELCOME) runs before on_start.
        if self._aggregator is None:
            from config.calendar import load_calendar

            config = self.config
            self._aggregator = Aggregator(
                list(config.symbols), list(config.timeframes), config.price_basis,
                config.close_grace_ms, config.max_synth_gap_minutes,
                load_calendar(config.calendar_file or None), Precision(config.instruments))
        return self._aggregator

    def snapshot(self) -> Any:
        return self.aggregator.snapshot()

    def restore(self, state: Any) -> None:
        self.aggregator.restore(state)

    def on_start(self) -> None:
        self.preview_ms = int(self.config.live_publish_interval_seconds * 1000)
        _ = self.aggregator

    @handles("tick")
    def on_tick(self, tick: Any, delivery: Delivery) -> None:
        if not isinstance(tick, Tick):
            raise ProtocolError("a tick message must carry a Tick")
        self._emit(self.aggregator.on_tick(tick))

    @handles("session.state")
    def on_session(self, state: Any, delivery: Delivery) -> None:
        if not isinstance(state, SessionState):
            raise ProtocolError("a session.state message must carry a SessionState")
        # Only a lost session means ticks may have been missed; connecting and recovering
        # follow a loss (already marked) or the start (fresh anyway).
        self.aggregator.on_session(state.state != "DISCONNECTED")
        if state.state == "IDLE" and state.broker == REPLAY_BROKER \
                and state.reason == REPLAY_FINISHED:
            self.aggregator.on_replay_finished()

    @handles("instrument")
    def on_instrument(self, instrument: Any, delivery: Delivery) -> None:
        if not isinstance(instrument, Instrument):
            raise ProtocolError("an instrument message must carry an Instrument")
        self.aggregator.on_instrument(instrument)

    @handles("clock")
    def on_clock(self, clock: Any, delivery: Delivery) -> None:
        if not isinstance(clock, Clock):
            raise ProtocolError("a clock message must carry a Clock")
        self._emit(self.aggregator.on_clock(clock.now_ms,
                                            synthesize=clock.broker != REPLAY_BROKER))
        if self.preview_ms and clock.now_ms - self._last_preview_ms >= self.preview_ms:
            self._last_preview_ms = clock.now_ms
            for bar in self.aggregator.previews():
                # a preview is never worth blocking for: the next one supersedes it
                self.try_publish(bar_topic(bar.symbol, bar.tf), bar)

    def _emit(self, bars: list[Bar]) -> None:
        for notice in self.aggregator.take_notices():
            self.publish(GAP_PREFIX + notice.symbol, notice)
            self.gaps_published += 1
        for bar in bars:
            self.publish(bar_topic(bar.symbol, bar.tf), bar)
            self.published[bar.tf] = self.published.get(bar.tf, 0) + 1

    def status(self) -> dict[str, Any]:
        result = super().status()
        counters = dict(self.aggregator.counters)
        result["aggregation"] = counters
        result["published"] = dict(self.published)
        result["gap_notices"] = self.gaps_published
        result["close_grace_ms"] = self.config.close_grace_ms  # heartbeat's on-time lag
        result["digits"] = {symbol: self.aggregator.precision.for_basis(
            symbol, self.aggregator.basis) for symbol in self.aggregator.symbols}
        result["metrics"] = {
            "fxcm_tick_agg_bars_total": {
                "type": "counter", "help": "Final bars emitted by tick aggregation",
                "samples": [[{"tf": tf}, count] for tf, count in self.published.items()]},
            "fxcm_tick_agg_late_ticks_total": {
                "type": "counter", "help": "Ticks for a minute already final (not applied)",
                "samples": [[{}, counters.get("late_ticks", 0)]]},
            "fxcm_tick_agg_synthetic_bars_total": {
                "type": "counter", "help": "Flat bars for quiet minutes in trading hours",
                "samples": [[{}, counters.get("synthetic_bars", 0)]]},
            "fxcm_tick_agg_gap_notices_total": {
                "type": "counter",
                "help": "Gaps left to history (minutes not seen whole: a start, a lost session)",
                "samples": [[{}, self.gaps_published]]},
            "fxcm_tick_agg_synthetic_capped_total": {
                "type": "counter", "help": "Quiet minutes beyond max_synth_gap_minutes",
                "samples": [[{}, counters.get("synthetic_capped", 0)]]},
        }
        return result
