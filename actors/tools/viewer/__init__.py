"""``fxcm viewer``: a live terminal dashboard of a running host (rich), with the predecessor's
modes and keys (tools/debug_viewer.py): 0 timeline, 1 summary, 2 session, 3 alerts,
4 streams, 5 price, 6 supervisor, 7 history (quota and backoff), 8 stats, 9 volume calibration;
p pauses, c clears, q quits.

Four rooms, so that the picture can be tested without a terminal:

- ``_board``: ``Board`` (pure) keeps the newest payload of each kind from the Redis late-joiner
  keys and channels (``price_tik`` per symbol, the newest final bar per (symbol, tf), the public
  ``status``, ``heartbeat``, ``market_status``), counts what each channel brought, and keeps a
  timeline of state changes (heartbeat, diagnostic state, market, price stream, history quota,
  Redis, host, each actor). ``snapshot(...)`` turns it into a plain dict.
- ``_panels``: ``render(snapshot)`` (pure) draws the mode the snapshot names; every field is
  read defensively (``-`` missing, ``?`` of the wrong type) and it never raises.
- ``_feed``: ``RedisFeed`` subscribes to the channels first, then reads the keys, so nothing
  published in between is missed; it PINGs Redis (latency shown) and reconnects with
  ``bus.Backoff``. ``fetch_host`` reads the host's status over ipc (``actors.cli.fetch_status``).
- ``_run``: the I/O on a thread of its own, the keys and the screen on the main thread, so that
  ``q`` quits at once even while Redis or the host does not answer.

The snapshot dict (the contract of ``render``)::

    {"now": unix seconds, "mode": "0".."9", "paused": bool, "started": unix seconds,
     "redis": {"url", "connected", "error", "latency_ms", "channels": {name: kind}},
     "host": {"reachable", "error", "pid", "version", "run_dir", "router": {...},
              "dead_letters": [...], "actors": {name: {"state", "placement", "pid", "depth",
              "peak", "inflight", "restarts", "dead_letters", "backpressure_events",
              "connected", "last_exit", "mailboxes"}}},
     "status": public status | None, "heartbeat": dict | None, "market_status": dict | None,
     "prices": {SYMBOL: price_tik payload},
     "bars": {SYMBOL: {tf: bar (Bar.to_contract() shape, plus "source" when known)}},
     "channels": {kind: {"count", "last_at"}}, "timeline": [{"at", "source", "from", "to",
     "detail"}], "limits": {... load_limits ...}}
"""

from actors.tools.viewer._board import Board, host_view
from actors.tools.viewer._feed import RedisFeed, fetch_host, load_limits
from actors.tools.viewer._panels import MODES, alerts, format_number, mode_key, render, render_text
from actors.tools.viewer._run import run

__all__ = ["MODES", "Board", "RedisFeed", "alerts", "fetch_host", "format_number", "host_view",
           "load_limits", "mode_key", "render", "render_text", "run"]
