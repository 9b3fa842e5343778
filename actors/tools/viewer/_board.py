"""The viewer's memory (pure): the newest payload of each kind, what the viewer saw per channel,
and the timeline of state changes.

Fed from the Redis late-joiner keys and channels (``take``) and from each look at the host and
Redis (``observe``); ``snapshot(...)`` turns it into the plain dict that the panels render.
Payloads are kept as they came: the panels read them defensively.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

# payload kinds the viewer keeps (logical channel names of actors.redis_publisher)
WATCHED = ("ohlcv", "price_tik", "status", "heartbeat", "market_status")
# dead letters of the host shown in the supervisor mode
DEAD_LETTERS_SHOWN = 10


def as_dict(data: Any) -> dict[str, Any] | None:
    """A JSON object from a dict, str or bytes; None for anything else."""
    if isinstance(data, dict):
        return data
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def number(value: Any) -> float | None:
    """A real number, or None (bools, strings and the rest are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def dig(data: Any, *path: str) -> Any:
    """``data[path[0]][path[1]]...``, or None when a level is missing or not a map."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def host_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``actors.cli.fetch_status`` the viewer shows."""
    host = status.get("host") or {}
    actors: dict[str, Any] = {}
    for name, figures in (status.get("actors") or {}).items():
        if not isinstance(figures, Mapping):
            continue
        actors[name] = {key: figures.get(key) for key in (
            "state", "placement", "pid", "depth", "peak", "inflight", "restarts",
            "dead_letters", "backpressure_events", "connected", "last_exit", "mailboxes")}
    letters = status.get("dead_letters")
    return {"reachable": True, "error": "", "pid": host.get("pid"),
            "version": host.get("version"), "run_dir": host.get("run_dir"), "actors": actors,
            "router": dict(status.get("router") or {}),
            "dead_letters": list(letters[-DEAD_LETTERS_SHOWN:]) if isinstance(letters, list)
            else []}


class Board:
    """The newest payload of each kind, fed from keys and channel messages alike; safe to feed
    from one thread while another takes snapshots."""

    def __init__(self, timeline_max: int = 2400) -> None:
        self.prices: dict[str, dict[str, Any]] = {}
        self.bars: dict[str, dict[str, dict[str, Any]]] = {}
        self.status: dict[str, Any] | None = None
        self.heartbeat: dict[str, Any] | None = None
        self.market_status: dict[str, Any] | None = None
        # per logical channel: messages seen by the viewer, wall time of the last one
        self.channels: dict[str, dict[str, float]] = {}
        self.timeline: deque[dict[str, Any]] = deque(maxlen=max(1, timeline_max))
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- payloads --------------------------------------------------------------------------------

    def take(self, kind: str, data: Any, now: float | None = None) -> None:
        """One payload (JSON text or a dict) of logical channel ``kind``; bad ones are ignored.
        ``now`` (wall seconds) marks a live channel message; keys read at start pass None."""
        payload = as_dict(data)
        if payload is None:
            return
        with self._lock:
            if now is not None:
                seen = self.channels.setdefault(kind, {"count": 0.0, "last_at": now})
                seen["count"] += 1
                seen["last_at"] = now
            if kind == "price_tik":
                self._take_price(payload)
            elif kind == "ohlcv":
                symbol, tf, bars = (payload.get("symbol"), payload.get("tf"),
                                    payload.get("bars"))
                if isinstance(symbol, str) and isinstance(tf, str) and isinstance(bars, list):
                    for item in bars:
                        if isinstance(item, dict):
                            self._take_bar(symbol, tf, item, payload.get("source"))
            elif kind == "status":
                self.status = payload
                self._change("status", payload.get("process"), payload.get("note"), now)
            elif kind == "heartbeat":
                self.heartbeat = payload
                self._change("heartbeat", payload.get("state"), dig(payload, "context",
                                                                      "idle_reason"), now)
                diag = dig(payload, "context", "diag")
                self._change("diagnostic", dig(diag, "state"), dig(diag, "reason"), now)
                self._change("price stream", dig(payload, "context", "price_stream", "state"),
                             None, now)
                self._change("history quota", dig(payload, "context", "history",
                                                  "throttle_state"),
                             dig(payload, "context", "history", "last_denied_reason"), now)
            elif kind == "market_status":
                self.market_status = payload
                self._change("market", payload.get("state"), payload.get("next_open_utc"), now)

    def take_bar(self, symbol: str, tf: str, bar: dict[str, Any], source: Any = None) -> None:
        with self._lock:
            self._take_bar(symbol, tf, bar, source)

    def _take_price(self, payload: dict[str, Any]) -> None:
        symbol = payload.get("symbol")
        if not isinstance(symbol, str):
            return
        known = self.prices.get(symbol)
        if known is not None and (number(known.get("snap_ts")) or 0.0) > (
                number(payload.get("snap_ts")) or 0.0):
            return  # an older one (a key read after a newer message)
        self.prices[symbol] = payload

    def _take_bar(self, symbol: str, tf: str, bar: dict[str, Any], source: Any = None) -> None:
        """Keeps the final bar with the newest ``open_time`` (previews are not shown)."""
        open_time = number(bar.get("open_time"))
        if open_time is None or bar.get("complete") is False:
            return
        per_tf = self.bars.setdefault(symbol, {})
        known = per_tf.get(tf)
        if known is not None and (number(known.get("open_time")) or 0.0) > open_time:
            return
        shown = dict(bar)
        if isinstance(source, str):
            shown["source"] = source
        per_tf[tf] = shown

    # -- the timeline ----------------------------------------------------------------------------

    def observe(self, now: float, redis_view: Mapping[str, Any],
                host: Mapping[str, Any]) -> None:
        """What the viewer itself sees of Redis and the host: changes go on the timeline."""
        with self._lock:
            self._change("redis", "connected" if redis_view.get("connected")
                         else "not reachable", redis_view.get("error"), now)
            self._change("host", "reachable" if host.get("reachable") else "not reachable",
                         host.get("error"), now)
            actors = host.get("actors") if host.get("reachable") else None
            if isinstance(actors, Mapping):
                for name, figures in actors.items():
                    state = dig(figures, "state")
                    self._change("actor " + str(name), state, dig(figures, "last_exit"), now)

    def _change(self, source: str, value: Any, detail: Any, at: float | None) -> None:
        if value is None or value == "":
            return
        text = str(value)
        before = self._states.get(source)
        if before == text:
            return
        self._states[source] = text
        self.timeline.append({"at": at, "source": source, "from": before, "to": text,
                              "detail": str(detail) if detail not in (None, "") else ""})

    def clear(self) -> None:
        """The viewer's own history (timeline, channel counts); the latest payloads stay."""
        with self._lock:
            self.timeline.clear()
            self.channels.clear()

    # -- the snapshot ----------------------------------------------------------------------------

    def snapshot(self, now: float, redis_view: Mapping[str, Any], host: Mapping[str, Any],
                 limits: Mapping[str, float], mode: str = "1",
                 paused: bool = False) -> dict[str, Any]:
        with self._lock:
            return {"now": now, "mode": mode, "paused": paused, "redis": dict(redis_view),
                    "host": dict(host), "status": self.status, "heartbeat": self.heartbeat,
                    "market_status": self.market_status,
                    "prices": {symbol: dict(payload) for symbol, payload in self.prices.items()},
                    "bars": {symbol: dict(per_tf) for symbol, per_tf in self.bars.items()},
                    "channels": {kind: dict(seen) for kind, seen in self.channels.items()},
                    "timeline": list(self.timeline), "limits": dict(limits)}
