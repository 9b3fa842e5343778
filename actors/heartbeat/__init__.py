"""heartbeat: the diagnostic state machine, market status from the calendar, session statistics
and the public summary, published as ``heartbeat``, ``market_status`` and ``status.public``.

The logic lives in pure modules that tests drive without sockets: ``DiagnosticMachine``
(STREAM / IDLE / DISCONNECTED / RECOVERING), ``MarketView`` (market status and session blocks
from the calendar), ``BarTracker`` (lag and session statistics from final bars) and the public
status words (``_payloads``). ``Heartbeat`` is the thin actor around them.
"""

from actors.heartbeat._actor import Heartbeat
from actors.heartbeat._diagnostic import (
    DISCONNECTED,
    IDLE,
    RECOVERING,
    STATES,
    STREAM,
    Change,
    DiagInputs,
    DiagnosticMachine,
    iso_utc,
)
from actors.heartbeat._market import MarketView, display_name
from actors.heartbeat._payloads import (
    note,
    ohlcv_state,
    price_state,
    process_state,
    public_command,
    public_status,
    runtime_view,
)
from actors.heartbeat._settings import HeartbeatSettings
from actors.heartbeat._stats import BarTracker

__all__ = [
    "DISCONNECTED", "IDLE", "RECOVERING", "STATES", "STREAM", "BarTracker", "Change",
    "DiagInputs", "DiagnosticMachine", "Heartbeat", "HeartbeatSettings", "MarketView",
    "display_name", "iso_utc", "note", "ohlcv_state", "price_state", "process_state",
    "public_command", "public_status", "runtime_view",
]
