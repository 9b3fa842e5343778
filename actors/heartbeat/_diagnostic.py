"""The diagnostic state machine (seed 000 section 2.3; DESIGN.md section 6).

States, and when each holds (the first rule that matches wins):

1. ``DISCONNECTED``: the runtime says fxcm_session is neither running nor starting; or
   fxcm_session reports DISCONNECTED (its last login failed or the connection was lost); or
   its last history call failed and history is backing off.
2. ``IDLE``: the market is closed (the calendar, at the pipeline clock); or fxcm_session reports
   IDLE itself (a finished replay, a market its own calendar calls closed).
3. ``RECOVERING``: connected, but nothing new flows yet: fxcm_session is CONNECTING or
   RECOVERING (or has not said anything yet); or, with the market open, no tick arrived for
   ``stale_tick_seconds`` (seed 000 section 4.5: quotes gone > 60 s -> RECOVERING) or the
   the newest final bar's close is more than ``lag_error_seconds`` ago.
4. ``STREAM``: bars and ticks flowing.

Pure: ``evaluate(inputs, now_ms)`` returns the change, if any; the caller logs it. The machine
keeps the time of every change (``since_ms``) and the last ``HISTORY`` changes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from protocol.states import DISCONNECTED, IDLE, RECOVERING, STREAM

# heartbeat's diagnostic state: fxcm_session's session states but CONNECTING (shown as
# RECOVERING), judged again at every beat from what it hears, so any move is possible
STATES = (STREAM, IDLE, DISCONNECTED, RECOVERING)

HISTORY = 20  # changes kept for the heartbeat's context
# The runtime's states of fxcm_session that leave the judgement to its own session state.
ACTOR_UP = ("running", "starting")


def iso_utc(ms: int) -> str:
    """``1764541739999`` -> ``2025-11-30T22:28:59+00:00`` (the seed's ``ts`` shape)."""
    moment = datetime.fromtimestamp(ms / 1000.0, timezone.utc).replace(microsecond=0)
    return moment.isoformat()


@dataclass(frozen=True)
class DiagInputs:
    """What the machine judges. ``None`` means unknown: a rule on an unknown input does not
    fire (no snapshotter: ticks are not judged; no bar tracking: lag is not judged)."""

    market_open: bool
    next_open_ms: int | None = None
    session_state: str | None = None  # fxcm_session's SessionState.state
    session_reason: str = ""
    session_actor: str | None = None  # the runtime's state of fxcm_session, if configured
    history_error: str | None = None  # set while history backs off after a failure
    tick_silence_seconds: float | None = None
    bars_lag_seconds: float | None = None  # now - the newest final bar's close, worst target
    lag_target: str = ""


@dataclass(frozen=True)
class Change:
    state: str
    previous: str | None
    reason: str
    at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "previous": self.previous, "reason": self.reason,
                "at_ms": self.at_ms, "at_utc": iso_utc(self.at_ms)}


class DiagnosticMachine:
    def __init__(self, stale_tick_seconds: float, lag_error_seconds: float) -> None:
        self.stale_tick_seconds = stale_tick_seconds
        self.lag_error_seconds = lag_error_seconds
        self.state: str | None = None
        self.reason = ""
        self.since_ms = 0
        self.changes: deque[Change] = deque(maxlen=HISTORY)
        self.counts: dict[str, int] = {state: 0 for state in STATES}

    def judge(self, inputs: DiagInputs) -> tuple[str, str]:
        """The state the inputs call for, and why (see the module docstring)."""
        if inputs.session_actor is not None and inputs.session_actor not in ACTOR_UP:
            return DISCONNECTED, "fxcm_session is {}".format(inputs.session_actor)
        if inputs.session_state == DISCONNECTED:
            return DISCONNECTED, inputs.session_reason or "fxcm_session disconnected"
        if inputs.history_error is not None:
            return DISCONNECTED, "history failed: {}".format(inputs.history_error)
        if not inputs.market_open:
            if inputs.next_open_ms is not None:
                return IDLE, "market closed until {}".format(iso_utc(inputs.next_open_ms))
            return IDLE, "market closed"
        if inputs.session_state == IDLE:
            return IDLE, inputs.session_reason or "fxcm_session idle"
        if inputs.session_state is None:
            return RECOVERING, "waiting for fxcm_session"
        if inputs.session_state != STREAM:  # CONNECTING, RECOVERING
            return RECOVERING, "fxcm_session {}{}".format(
                inputs.session_state, ": " + inputs.session_reason if inputs.session_reason
                else "")
        silence = inputs.tick_silence_seconds
        if silence is not None and silence > self.stale_tick_seconds:
            return RECOVERING, "no tick for {:.0f} s with the market open".format(silence)
        lag = inputs.bars_lag_seconds
        if lag is not None and lag > self.lag_error_seconds:
            return RECOVERING, "bars behind by {:.0f} s{}".format(
                lag, " ({})".format(inputs.lag_target) if inputs.lag_target else "")
        return STREAM, "bars and ticks flowing"

    def evaluate(self, inputs: DiagInputs, now_ms: int) -> Change | None:
        """Judge ``inputs`` at ``now_ms``; returns the Change when the state changed. A new
        reason within the same state is kept without counting as a change."""
        state, reason = self.judge(inputs)
        if state == self.state:
            self.reason = reason
            return None
        change = Change(state, self.state, reason, now_ms)
        self.state, self.reason, self.since_ms = state, reason, now_ms
        self.changes.append(change)
        self.counts[state] += 1
        return change

    def view(self, now_ms: int) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "since_ms": self.since_ms,
            "since_utc": iso_utc(self.since_ms) if self.state is not None else None,
            "seconds_in_state": round(max(0, now_ms - self.since_ms) / 1000.0, 3)
            if self.state is not None else 0.0,
            "changes": [change.to_dict() for change in self.changes],
        }
