"""A scripted stand-in for fxcm_session's history side, for history_poller tests.

``ScriptedHistory`` (run it under the name ``fxcm_session``) publishes the pipeline clock (the
wall clock) and answers ``history.get`` from a ``SimMarket``: ``not_ready`` to the first
``not_ready_requests`` 1m requests that overlap ``not_ready_range`` (``[from, to)`` in ms; any
request when it is not set), with ``retry_after`` 0.05 s; ``ok`` otherwise, each row complete
once its bucket has ended, as fxcm_session marks them.
"""

from __future__ import annotations

import time
from typing import Any

from actors.base import Actor, handles
from actors.fxcm_session._sim import SimMarket
from bus import Delivery
from config.calendar import load_calendar
from protocol.market import CLOCK_TOPIC, TF_MS, Clock, HistoryReply, HistoryRequest


class ScriptedHistory(Actor):
    def on_start(self) -> None:
        calendar = load_calendar(self.settings.get("calendar_file") or None)
        self.market = SimMarket(int(self.settings.get("seed", 1)), 2.0, calendar)
        self.day_start = calendar.trading_day_start
        self.not_ready_left = int(self.settings.get("not_ready_requests", 0))
        self.not_ready_range = self.settings.get("not_ready_range")
        self.answered: dict[str, int] = {}
        self.every(0.05, self._clock)

    def _clock(self) -> None:
        self.try_publish(CLOCK_TOPIC, Clock(int(time.time() * 1000), "sim"))

    @handles("history.get")
    def on_history(self, request: Any, delivery: Delivery) -> None:
        assert isinstance(request, HistoryRequest)
        scope = self.not_ready_range
        touched = scope is None or (request.tf == "1m" and int(request.from_ms or 0) < scope[1]
                                    and int(request.to_ms or 0) >= scope[0])
        if self.not_ready_left > 0 and touched:
            self.not_ready_left -= 1
            self._answer(delivery, request, "not_ready", [])
            return
        now = int(time.time() * 1000)
        step = TF_MS[request.tf]
        rows = self.market.bars(request.symbol, request.tf, int(request.from_ms or 0),
                                int(request.to_ms if request.to_ms is not None else now), now,
                                "mid", self.day_start)
        self._answer(delivery, request, "ok", [row + [int(row[0]) + step - 1 < now]
                                              for row in rows])

    def _answer(self, delivery: Delivery, request: HistoryRequest, status: str,
                rows: list[list[Any]]) -> None:
        self.answered[status] = self.answered.get(status, 0) + 1
        self.reply(delivery, "history.bars", HistoryReply(
            request.symbol, request.tf, status, 0.05 if status == "not_ready" else 0.0,
            "not ready (scripted)" if status == "not_ready" else "", rows))

    def status(self) -> dict[str, Any]:
        result = super().status()
        result["answered"] = dict(getattr(self, "answered", {}))
        return result
