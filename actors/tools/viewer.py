"""``fxcm viewer``: a live terminal dashboard of a running host (rich).

Three parts, so the picture can be tested without a terminal:

- ``Board`` (pure): the latest payloads seen, from the Redis late-joiner keys and channels:
  per symbol the last ``price_tik``, per (symbol, tf) the newest final bar, the public
  ``status``, ``heartbeat`` and ``market_status``. ``snapshot(...)`` turns it into a plain dict.
- ``render(snapshot) -> rich renderable`` (pure): the header (Redis, host), the public status,
  prices with tick age, the last bar per timeframe with its lag, and the actors table. Missing
  data is "-"; stale values are marked.
- ``RedisFeed`` / ``fetch_host`` / ``run``: the I/O. The feed subscribes to the channels first,
  then reads the keys (``<prefix>:price_tik:last:*``, ``<prefix>:ohlcv:last:*``,
  ``<prefix>:status:last``...), so nothing published in between is missed; it reconnects with
  ``bus.Backoff``. The host's actor table comes over ipc (``actors.cli.fetch_status``). A Redis
  or host that goes away is shown as "not reachable" and the viewer keeps running.

The snapshot dict (the contract of ``render``)::

    {"now": unix seconds,
     "redis": {"url": str | None, "connected": bool, "error": str},
     "host": {"reachable": bool, "error": str, "pid", "version", "run_dir",
              "actors": {name: {"state", "placement", "depth", "peak", "restarts",
                                "dead_letters", "connected"}}},
     "status": public status | None, "heartbeat": dict | None, "market_status": dict | None,
     "prices": {SYMBOL: price_tik payload},
     "bars": {SYMBOL: {tf: bar (Bar.to_contract() shape, plus "source" when known)}},
     "limits": {"tick_stale_seconds", "status_stale_seconds", "lag_warn_seconds",
                "lag_error_seconds"}}
"""

from __future__ import annotations

import datetime
import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from actors.tools._connect import load_channels, redact_url, resolve_redis_url
from bus import Backoff
from protocol.errors import ConfigError, ConnectorError
from protocol.market import TF_MS, TIMEFRAMES

MISSING = "-"
# Channels the viewer listens to (logical names of actors.redis_publisher.CHANNEL_SUFFIXES).
WATCHED = ("ohlcv", "price_tik", "status", "heartbeat", "market_status")
# Redis: connect/read timeout, and the reconnect backoff (bus.Backoff).
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_BACKOFF = Backoff(0.5, 5.0, 0.2)
# At most this many channel messages are taken per refresh (the rest wait for the next one).
MAX_MESSAGES_PER_REFRESH = 20000
# The host's status over ipc: the longest a refresh waits for it.
HOST_TIMEOUT_SECONDS = 1.0
# The public status is stale after this many of heartbeat.status_interval_seconds.
STATUS_STALE_INTERVALS = 3.0

_GOOD = {"ok", "stream", "open", "running", "connected"}
_BAD = {"error", "down", "closed", "failed", "stopped", "disconnected", "not reachable"}


# -- the board (pure) --------------------------------------------------------------------------

def _as_dict(data: Any) -> dict[str, Any] | None:
    if isinstance(data, dict):
        return data
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Board:
    """The newest payload of each kind, fed from keys and channel messages alike."""

    def __init__(self) -> None:
        self.prices: dict[str, dict[str, Any]] = {}
        self.bars: dict[str, dict[str, dict[str, Any]]] = {}
        self.status: dict[str, Any] | None = None
        self.heartbeat: dict[str, Any] | None = None
        self.market_status: dict[str, Any] | None = None

    def take(self, kind: str, data: Any) -> None:
        """One payload (JSON text or a dict) of logical channel ``kind``; bad ones are
        ignored."""
        payload = _as_dict(data)
        if payload is None:
            return
        if kind == "price_tik":
            self.take_price(payload)
        elif kind == "ohlcv":
            symbol, tf, bars = payload.get("symbol"), payload.get("tf"), payload.get("bars")
            if isinstance(symbol, str) and isinstance(tf, str) and isinstance(bars, list):
                for item in bars:
                    if isinstance(item, dict):
                        self.take_bar(symbol, tf, item, payload.get("source"))
        elif kind == "status":
            self.status = payload
        elif kind == "heartbeat":
            self.heartbeat = payload
        elif kind == "market_status":
            self.market_status = payload

    def take_price(self, payload: dict[str, Any]) -> None:
        symbol = payload.get("symbol")
        if not isinstance(symbol, str):
            return
        known = self.prices.get(symbol)
        if known is not None and (_number(known.get("snap_ts")) or 0.0) > (
                _number(payload.get("snap_ts")) or 0.0):
            return  # an older one (a key read after a newer message)
        self.prices[symbol] = payload

    def take_bar(self, symbol: str, tf: str, bar: dict[str, Any], source: Any = None) -> None:
        """Keeps the final bar with the newest ``open_time`` (previews are not shown)."""
        open_time = _number(bar.get("open_time"))
        if open_time is None or bar.get("complete") is False:
            return
        per_tf = self.bars.setdefault(symbol, {})
        known = per_tf.get(tf)
        if known is not None and (_number(known.get("open_time")) or 0.0) > open_time:
            return
        shown = dict(bar)
        if isinstance(source, str):
            shown["source"] = source
        per_tf[tf] = shown

    def snapshot(self, now: float, redis_view: dict[str, Any], host: dict[str, Any],
                 limits: dict[str, float]) -> dict[str, Any]:
        return {"now": now, "redis": dict(redis_view), "host": dict(host),
                "status": self.status, "heartbeat": self.heartbeat,
                "market_status": self.market_status,
                "prices": {symbol: dict(payload) for symbol, payload in self.prices.items()},
                "bars": {symbol: dict(per_tf) for symbol, per_tf in self.bars.items()},
                "limits": dict(limits)}


def host_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``actors.cli.fetch_status`` the viewer shows."""
    host = status.get("host") or {}
    actors: dict[str, Any] = {}
    for name, figures in (status.get("actors") or {}).items():
        actors[name] = {key: figures.get(key) for key in (
            "state", "placement", "depth", "peak", "restarts", "dead_letters", "connected")}
    return {"reachable": True, "error": "", "pid": host.get("pid"),
            "version": host.get("version"), "run_dir": host.get("run_dir"), "actors": actors}


# -- rendering (pure) --------------------------------------------------------------------------

def _style(word: str) -> str:
    lowered = word.lower()
    if lowered in _GOOD:
        return "green"
    if lowered in _BAD:
        return "bold red"
    return "yellow"


def _word(value: Any) -> Text:
    if value is None or value == "":
        return Text(MISSING, style="dim")
    text = str(value)
    return Text(text, style=_style(text))


def format_number(value: float) -> str:
    """A price as shown: up to 10 significant digits (no float noise like 1.0920800000000002)."""
    return format(value, ".10g")


def _plain(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 0:
        seconds = 0.0
    if seconds < 120:
        return "{:.1f}s".format(seconds)
    if seconds < 7200:
        return "{:.0f}m{:02.0f}s".format(seconds // 60, seconds % 60)
    if seconds < 172800:
        return "{:.0f}h{:02.0f}m".format(seconds // 3600, (seconds % 3600) // 60)
    return "{:.0f}d".format(seconds // 86400)


def _utc(ms: float, tf: str) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000.0, datetime.timezone.utc)
    return moment.strftime("%m-%d %H:%M" if TF_MS.get(tf, 0) >= TF_MS["4h"] else "%H:%M")


def _header(snapshot: Mapping[str, Any]) -> Text:
    now = _number(snapshot.get("now"))
    line = Text("fxcm viewer", style="bold")
    if now is not None:
        line.append("  " + datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"))
    redis_view = snapshot.get("redis") or {}
    line.append("\nredis: ")
    url = redis_view.get("url")
    if redis_view.get("connected"):
        line.append("connected", style="green")
        line.append(" {}".format(url or ""))
    else:
        line.append("not reachable", style="bold red")
        detail = " ".join(part for part in (url or "", redis_view.get("error") or "") if part)
        if detail:
            line.append(" ({})".format(detail))
    host = snapshot.get("host") or {}
    line.append("\nhost: ")
    if host.get("reachable"):
        line.append("pid {} version {} run dir {}".format(
            _plain(host.get("pid")), _plain(host.get("version")), _plain(host.get("run_dir"))))
    else:
        line.append("not reachable", style="bold red")
        if host.get("error"):
            line.append(" ({})".format(host["error"]))
    return line


def _status_table(snapshot: Mapping[str, Any]) -> Table:
    status = snapshot.get("status") or {}
    heartbeat = snapshot.get("heartbeat") or {}
    market = snapshot.get("market_status") or {}
    now = _number(snapshot.get("now"))
    table = Table(title="status", title_justify="left", expand=False)
    for column in ("process", "market", "price", "ohlcv", "session", "heartbeat", "note",
                   "age"):
        table.add_column(column)
    session = status.get("session") if isinstance(status.get("session"), dict) else {}
    session_text = MISSING
    if session:
        parts = [str(session.get(key)) for key in ("state", "state_detail", "name", "tag")
                 if session.get(key) not in (None, "")]
        session_text = " ".join(parts) or MISSING
    status_ts = _number(status.get("ts"))
    status_age = now - status_ts if now is not None and status_ts is not None else None
    age = Text(_age(status_age))
    stale_after = _number((snapshot.get("limits") or {}).get("status_stale_seconds"))
    if status_age is not None and stale_after is not None and status_age > stale_after:
        age = Text(_age(status_age) + " stale", style="bold red")
    market_word = status.get("market") or market.get("state")
    table.add_row(_word(status.get("process")), _word(market_word), _word(status.get("price")),
                  _word(status.get("ohlcv")), Text(session_text), _word(heartbeat.get("state")),
                  Text(_plain(status.get("note"))), age)
    last = status.get("last_command")
    if isinstance(last, dict):
        error = last.get("error") if isinstance(last.get("error"), dict) else {}
        table.caption = "last command: {} {} {}{}".format(
            _plain(last.get("cmd")), _plain(last.get("state")), _plain(last.get("req_id")),
            " ({})".format(error.get("code")) if error else "")
        table.caption_justify = "left"
    return table


def _prices_table(snapshot: Mapping[str, Any]) -> Table:
    prices: Mapping[str, Any] = snapshot.get("prices") or {}
    limits = snapshot.get("limits") or {}
    stale_after = _number(limits.get("tick_stale_seconds"))
    now = _number(snapshot.get("now"))
    table = Table(title="prices", title_justify="left")
    table.add_column("symbol", style="bold")
    for column in ("bid", "ask", "mid", "tick age", "snap age"):
        table.add_column(column, justify="right")
    if not prices:
        table.add_row(MISSING, MISSING, MISSING, MISSING, MISSING, MISSING)
    for symbol in sorted(prices):
        price = prices[symbol] or {}
        tick_ts, snap_ts = _number(price.get("tick_ts")), _number(price.get("snap_ts"))
        tick_age = now - tick_ts if now is not None and tick_ts is not None else None
        tick_cell = Text(_age(tick_age))
        if tick_age is not None and stale_after is not None and tick_age > stale_after:
            tick_cell = Text(_age(tick_age) + " stale", style="bold red")
        snap_age = now - snap_ts if now is not None and snap_ts is not None else None
        table.add_row(symbol, _plain(price.get("bid")), _plain(price.get("ask")),
                      _plain(price.get("mid")), tick_cell, _age(snap_age))
    return table


def _ordered_timeframes(bars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen = {tf for per_tf in bars.values() for tf in per_tf}
    known = [tf for tf in TIMEFRAMES if tf in seen]
    return known + sorted(seen - set(known))


def _bar_cell(bar: Mapping[str, Any], tf: str, now: float | None, judge: bool,
              limits: Mapping[str, Any]) -> Text:
    open_time, close_time = _number(bar.get("open_time")), _number(bar.get("close_time"))
    if open_time is None:
        return Text(MISSING, style="dim")
    end_ms = close_time + 1 if close_time is not None else open_time + TF_MS.get(tf, 0)
    lag = now - end_ms / 1000.0 if now is not None else None
    cell = Text("{} {}".format(_utc(open_time, tf), _plain(bar.get("close"))))
    cell.append("\nlag {}".format(_age(lag)))
    warn, error = _number(limits.get("lag_warn_seconds")), _number(limits.get("lag_error_seconds"))
    if judge and lag is not None and tf in TF_MS:
        # the next bar of this timeframe is due tf after this one's end
        overdue = lag - TF_MS[tf] / 1000.0
        if error is not None and overdue > error:
            cell.append(" stale", style="bold red")
        elif warn is not None and overdue > warn:
            cell.append(" late", style="yellow")
    if bar.get("synthetic"):
        cell.append(" syn", style="dim")
    return cell


def _bars_table(snapshot: Mapping[str, Any]) -> Table:
    bars: Mapping[str, Mapping[str, Any]] = snapshot.get("bars") or {}
    limits = snapshot.get("limits") or {}
    now = _number(snapshot.get("now"))
    status = snapshot.get("status") or {}
    market = status.get("market") or (snapshot.get("market_status") or {}).get("state")
    judge = market != "closed"  # with the market closed, no bar is late
    table = Table(title="last final bars", title_justify="left",
                  caption="open (UTC) close / lag since the bar's end", caption_justify="left")
    table.add_column("symbol", style="bold")
    timeframes = _ordered_timeframes(bars)
    for tf in timeframes or ["bars"]:
        table.add_column(tf)
    if not bars:
        table.add_row(MISSING, MISSING)
    for symbol in sorted(bars):
        per_tf = bars[symbol]
        table.add_row(symbol, *[
            _bar_cell(per_tf[tf], tf, now, judge, limits) if tf in per_tf
            else Text(MISSING, style="dim") for tf in timeframes])
    return table


def _actors_table(snapshot: Mapping[str, Any]) -> Table:
    host = snapshot.get("host") or {}
    actors: Mapping[str, Any] = host.get("actors") or {}
    table = Table(title="actors", title_justify="left")
    table.add_column("actor", style="bold")
    table.add_column("state")
    table.add_column("placement")
    for column in ("mailbox", "peak", "restarts", "dead letters"):
        table.add_column(column, justify="right")
    if not host.get("reachable"):
        table.add_row("host: not reachable", MISSING, MISSING, MISSING, MISSING, MISSING,
                      MISSING)
        return table
    if not actors:
        table.add_row(MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING)
    for name in sorted(actors):
        actor = actors[name] or {}
        restarts = actor.get("restarts")
        dead = actor.get("dead_letters")
        table.add_row(name, _word(actor.get("state")), _plain(actor.get("placement")),
                      _plain(actor.get("depth")), _plain(actor.get("peak")),
                      Text(_plain(restarts), style="yellow" if restarts else ""),
                      Text(_plain(dead), style="bold red" if dead else ""))
    return table


def render(snapshot: Mapping[str, Any]) -> RenderableType:
    """The whole dashboard for one snapshot dict (see the module docstring); never raises on
    missing or partial data."""
    return Group(_header(snapshot), _status_table(snapshot), _prices_table(snapshot),
                 _bars_table(snapshot), _actors_table(snapshot),
                 Text("q quits", style="dim"))


def render_text(snapshot: Mapping[str, Any], width: int = 160) -> str:
    """``render`` as plain text (no colours): for tests and logs."""
    with open(os.devnull, "w", encoding="utf-8") as sink:
        console = Console(width=width, record=True, color_system=None, file=sink)
        console.print(render(snapshot))
        return console.export_text()


# -- I/O ---------------------------------------------------------------------------------------

class RedisFeed:
    """Subscribes to the watched channels, then reads the late-joiner keys into ``board``;
    afterwards each ``poll`` takes what the channels delivered. Reconnects with backoff."""

    def __init__(self, url_source: Callable[[], str], prefix: str, channels: Mapping[str, str],
                 board: Board, clock: Callable[[], float] = time.monotonic) -> None:
        self.url_source = url_source
        self.prefix = prefix
        self.kinds = {channels[kind]: kind for kind in WATCHED}
        self.board = board
        self.clock = clock
        self.url: str | None = None
        self.error = ""
        self.failures = 0
        self.retry_at = 0.0
        self._client: redis.Redis | None = None
        self._pubsub: Any = None

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    def view(self) -> dict[str, Any]:
        return {"url": redact_url(self.url) if self.url else None, "connected": self.connected,
                "error": self.error}

    def poll(self) -> None:
        if self._pubsub is None:
            if self.clock() < self.retry_at:
                return
            try:
                self._connect()
            except (ConfigError, redis.RedisError, OSError) as exc:
                self._down(exc)
                return
        try:
            for _ in range(MAX_MESSAGES_PER_REFRESH):
                message = self._pubsub.get_message(timeout=0)
                if message is None:
                    break
                if message.get("type") == "message":
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode("utf-8", "replace")
                    kind = self.kinds.get(channel)
                    if kind is not None:
                        self.board.take(kind, message["data"])
        except (redis.RedisError, OSError) as exc:
            self._down(exc)

    def _connect(self) -> None:
        self.url = self.url_source()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                      socket_timeout=REDIS_TIMEOUT_SECONDS,
                                      retry=Retry(NoBackoff(), 0))
        self._client = client
        pubsub = client.pubsub()
        pubsub.subscribe(*self.kinds)
        confirmed = 0
        deadline = self.clock() + REDIS_TIMEOUT_SECONDS
        while confirmed < len(self.kinds):
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "subscribe":
                confirmed += 1
            elif self.clock() > deadline:
                raise redis.TimeoutError("no confirmation of SUBSCRIBE within {} s".format(
                    REDIS_TIMEOUT_SECONDS))
        self._pubsub = pubsub
        self._read_keys(client)
        self.failures = 0
        self.error = ""

    def _read_keys(self, client: redis.Redis) -> None:
        prefix = self.prefix
        for name in ("status", "heartbeat", "market_status"):
            value = client.get("{}:{}:last".format(prefix, name))
            if value is not None:
                self.board.take(name, value)
        for key in client.scan_iter(match="{}:price_tik:last:*".format(prefix), count=500):
            value = client.get(key)
            if value is not None:
                self.board.take("price_tik", value)
        for key in client.scan_iter(match="{}:ohlcv:last:*".format(prefix), count=500):
            text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            symbol, _, tf = text[len(prefix) + len(":ohlcv:last:"):].rpartition(":")
            if not symbol or not tf:
                continue
            for member in client.zrange(key, -1, -1):
                bar = _as_dict(member)
                if bar is not None:
                    self.board.take_bar(symbol, tf, bar)

    def _down(self, exc: BaseException) -> None:
        self.close()
        self.failures += 1
        self.error = "{}: {}".format(type(exc).__name__, exc) if not isinstance(
            exc, ConfigError) else str(exc)
        self.retry_at = self.clock() + REDIS_BACKOFF.compute(self.failures)

    def close(self) -> None:
        for closable in (self._pubsub, self._client):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a broken connection: nothing more to do
                    pass
        self._pubsub = None
        self._client = None


def fetch_host(run_dir: str, timeout: float = HOST_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The host's actor table over ipc, or ``{"reachable": False, "error": ...}``."""
    if not os.path.exists(os.path.join(run_dir, "bus.json")):
        return {"reachable": False, "error": "no host in {}".format(run_dir), "actors": {}}
    from actors.cli import fetch_status

    try:
        return host_view(fetch_status(run_dir, timeout))
    except ConnectorError as exc:
        return {"reachable": False, "error": str(exc), "actors": {}}


def load_limits(config_path: str | None) -> dict[str, float]:
    """Staleness thresholds, from the settings the host reads (no second set of defaults)."""
    import config

    raw = config.load(config_path).raw
    return {"tick_stale_seconds": float(raw["snapshotter"]["stale_seconds"]),
            "status_stale_seconds": STATUS_STALE_INTERVALS * float(
                raw["heartbeat"]["status_interval_seconds"]),
            "lag_warn_seconds": float(raw["heartbeat"]["lag_warn_seconds"]),
            "lag_error_seconds": float(raw["heartbeat"]["lag_error_seconds"])}


@contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """``wait(seconds) -> the keys pressed`` (cbreak mode on a terminal; else just waits)."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        def pause(seconds: float) -> str:
            time.sleep(seconds)
            return ""

        yield pause
        return
    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(seconds: float) -> str:
        ready, _, _ = select.select([fd], [], [], seconds)
        return os.read(fd, 64).decode("utf-8", "replace") if ready else ""

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(run_dir: str, redis_url: str | None, refresh: float, config_path: str | None) -> int:
    """The dashboard loop until q or Ctrl-C; returns 0 (2 on a bad configuration)."""
    if refresh <= 0:
        print("fxcm viewer: --refresh: must be > 0, got {}".format(refresh), file=sys.stderr)
        return 2
    try:
        prefix, channels = load_channels(config_path)
        limits = load_limits(config_path)
    except ConfigError as exc:
        print("fxcm viewer: {}".format(exc), file=sys.stderr)
        return 2
    board = Board()
    feed = RedisFeed(lambda: resolve_redis_url(redis_url, run_dir), prefix, channels, board)

    def frame() -> RenderableType:
        feed.poll()
        return render(board.snapshot(time.time(), feed.view(), fetch_host(run_dir), limits))

    console = Console()
    try:
        with _keys() as wait, Live(frame(), console=console, screen=True,
                                   auto_refresh=False) as live:
            while True:
                pressed = wait(refresh)
                if "q" in pressed.lower():
                    break
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        feed.close()
    return 0
