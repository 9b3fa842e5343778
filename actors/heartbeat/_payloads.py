"""The public summary (seed 001 section 1.2) and the runtime's view, from what heartbeat knows.

Pure functions: the actor gathers its inputs and these turn them into the contract's words.

Public status fields:

- ``process``: ``stream`` (STREAM), ``sleep`` (IDLE with the market closed), ``idle`` (IDLE
  otherwise, and RECOVERING: connected, nothing flowing yet), ``error`` (DISCONNECTED).
- ``market``: ``open``/``closed`` from the calendar, ``unknown`` until fxcm_session said
  anything (no session state and no clock yet).
- ``price``: ``ok``, ``stale`` (no tick for the snapshotter's ``stale_seconds``), ``down`` (no
  snapshotter status lately, no tick yet, or the snapshotter stopped).
- ``ohlcv``: ``ok``, ``delayed`` (the lag, pipeline now minus the newest final bar's close,
  is over ``lag_warn_seconds``, 60 s as in the seed, and over what a bar on time needs: its
  length plus the close grace and 2 s of delivery), ``down`` (no bar at all, or a lag over
  ``lag_error_seconds``). With the market closed bars are not expected: ``ok`` once any bar
  was seen, else ``down``.
- ``note``: short and human: ``ok``, ``idle: calendar_closed``, ``backoff FXCM 30s``,
  ``price stale``...
"""

from __future__ import annotations

from typing import Any

from actors.heartbeat._diagnostic import DISCONNECTED, IDLE, RECOVERING, STREAM

NOTE_MAX = 160


def process_state(diag_state: str | None, market_open: bool) -> str:
    if diag_state == STREAM:
        return "stream"
    if diag_state == DISCONNECTED:
        return "error"
    if diag_state == IDLE and not market_open:
        return "sleep"
    return "idle"


def price_state(price_stream: dict[str, Any] | None, status_age: float | None,
                stale_after: float) -> str:
    """From the snapshotter's ``price_stream`` telemetry and the age of that status."""
    if price_stream is None or status_age is None or status_age > stale_after:
        return "down"
    state = price_stream.get("state")
    if state == "ok":
        return "ok"
    if state == "stale":
        return "stale"
    return "down"  # waiting (no tick yet) or stopped


def ohlcv_state(market_open: bool, any_bars: bool, lag: float | None, on_time_lag: float,
                warn_seconds: float, error_seconds: float) -> str:
    """``lag``: seconds from the newest final bar's close to now, for the latest-running open
    target (None: nothing to judge); ``on_time_lag``: the most a feed on time shows (the bar
    length, the close grace and 2 s of delivery)."""
    if not any_bars:
        return "down"
    if not market_open or lag is None:
        return "ok"
    if lag > error_seconds:
        return "down"
    if lag > max(warn_seconds, on_time_lag):
        return "delayed"
    return "ok"


def note(diag_state: str | None, diag_reason: str, market_open: bool, price: str, ohlcv: str,
         login_retry_in: float | None) -> str:
    if diag_state == DISCONNECTED:
        text = ("backoff FXCM {:.0f}s".format(login_retry_in) if login_retry_in
                else "disconnected: " + diag_reason)
    elif diag_state == IDLE:
        text = "idle: calendar_closed" if not market_open else "idle: " + diag_reason
    elif diag_state == RECOVERING:
        text = "recovering: " + diag_reason
    elif diag_state is None:
        text = "starting"
    elif price != "ok":
        text = "price " + price
    elif ohlcv != "ok":
        text = "ohlcv " + ohlcv
    else:
        text = "ok"
    return text if len(text) <= NOTE_MAX else text[:NOTE_MAX - 3] + "..."


def public_command(result: dict[str, Any], received_ts: float) -> dict[str, Any]:
    """The last ``command.result`` as the public status shows it: who, what, how it ended;
    never its ``result`` body (not public) nor anything else it may carry."""
    req_id, cmd = result.get("req_id"), result.get("cmd")
    shown: dict[str, Any] = {"req_id": str(req_id) if req_id is not None else None,
                             "cmd": str(cmd) if cmd is not None else None,
                             "state": str(result.get("state", "")),
                             "ts": received_ts}
    error = result.get("error")
    if isinstance(error, dict):
        shown["error"] = {"code": str(error.get("code", "")),
                          "message": str(error.get("message", ""))}
    return shown


def public_status(ts: float, process: str, market: str, price: str, ohlcv: str,
                  session: dict[str, Any], note_text: str) -> dict[str, Any]:
    """``status`` as the seed's consumers read it (type ``status.public`` on the bus): exactly
    the predecessor's keys; anything else (the last command) has its own key."""
    return {"ts": ts, "process": process, "market": market, "price": price, "ohlcv": ohlcv,
            "session": session, "note": note_text}


def runtime_view(merged: dict[str, Any]) -> dict[str, Any]:
    """The runtime's own view (``actors.host.merge_status`` of the router's status) cut down
    for the heartbeat: per actor its state, restarts, mailbox depth and dead letters."""
    actors: dict[str, Any] = {}
    for name, figures in sorted(merged.get("actors", {}).items()):
        if name.startswith("$"):  # the host's own connections
            continue
        actors[name] = {
            "state": figures.get("state"),
            "placement": figures.get("placement"),
            "connected": bool(figures.get("connected", False)),
            "restarts": int(figures.get("restarts", 0) or 0),
            "crashes": int(figures.get("crashes", 0) or 0),
            "mailbox_depth": int(figures.get("depth", 0) or 0),
            "mailbox_peak": int(figures.get("peak", 0) or 0),
            "inflight": int(figures.get("inflight", 0) or 0),
            "dead_letters": int(figures.get("dead_letters", 0) or 0),
            "blocked": bool(figures.get("blocked", False)),
            "backpressure_events": int(figures.get("backpressure_events", 0) or 0),
        }
    router = merged.get("router", {})
    host = merged.get("host") or {}
    return {
        "actors": actors,
        "restarts_total": sum(view["restarts"] for view in actors.values()),
        "mailbox_depth_total": sum(view["mailbox_depth"] for view in actors.values()),
        "dead_letters_total": int(router.get("dead_letters", 0) or 0),
        "recent_dead_letters": list(merged.get("dead_letters", []))[-5:],
        "router": {key: router.get(key, 0) for key in (
            "published", "sent", "malformed", "unroutable", "backpressure_events",
            "uptime_seconds")},
        "host": {key: host.get(key) for key in ("pid", "version", "escalated",
                                                "restarts_in_window") if key in host},
    }
