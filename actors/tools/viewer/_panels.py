"""The viewer's screens (pure): ``render(snapshot)`` draws the mode the snapshot names.

The modes and their keys are the predecessor's (tools/debug_viewer.py): 0 timeline, 1 summary,
2 session, 3 alerts, 4 streams, 5 price, 6 supervisor, 7 history (quota and backoff), 8 stats,
9 volume calibration. Every field is read defensively: a missing one shows as ``-``, one of the
wrong type as ``?``; a panel that still fails is replaced by one line saying so. Nothing here
raises on any snapshot.

The heartbeat is read in the seed's shapes (seed 001 sections 6.2.2, 6.2.3 and 9.1):
``context.diag.backoff`` ``{subsystem: {active, sleep_seconds, remaining_seconds, fail_count,
last_error_type, last_error_ts}}``, ``context.history`` ``{calls_60s, limit_60s, calls_3600s,
limit_3600s, throttle_state, next_slot_seconds, last_denied_reason, priority, skipped_polls}``,
``context.tick_cadence`` ``{state, history_state, reason, multiplier, cadence_seconds,
next_poll_in_seconds}``, ``context.price_stream`` ``{state, channel, interval_seconds,
last_snap_ts, last_tick_ts, tick_silence_seconds, symbols_state: [{symbol, bid, ask, mid,
tick_age_seconds}]}``, ``context.session`` and ``context.stream_targets``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from actors.tools.viewer._board import dig, number
from protocol.market import TF_MS, TIMEFRAMES

MISSING = "-"
WRONG = "?"
# rows of the timeline shown (newest first)
TIMELINE_ROWS = 40

_GOOD = {"ok", "stream", "open", "running", "connected", "reachable", "idle", "live"}
_BAD = {"error", "down", "closed", "failed", "stopped", "disconnected", "not reachable",
        "stale", "critical"}


# -- cells ---------------------------------------------------------------------------------------

def format_number(value: float) -> str:
    """A price as shown: up to 10 significant digits (no float noise like 1.0920800000000002)."""
    return format(value, ".10g")


def show(value: Any) -> str:
    """A scalar as text: ``-`` when missing, ``?`` when it is a map or a list."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (int, str)):
        return str(value)
    return WRONG


def _style(word: str) -> str:
    lowered = word.lower()
    if lowered in _GOOD:
        return "green"
    if lowered in _BAD:
        return "bold red"
    return "yellow"


def word(value: Any) -> Text:
    """A state word, coloured (green good, red bad, yellow the rest)."""
    text = show(value)
    if text == MISSING:
        return Text(MISSING, style="dim")
    if text == WRONG:
        return Text(WRONG, style="bold red")
    return Text(text, style=_style(text))


def age(seconds: Any) -> str:
    """A duration: ``12.3s``, ``4m05s``, ``2h10m``, ``3d``."""
    if seconds is None:
        return MISSING
    value = number(seconds)
    if value is None:
        return WRONG
    value = max(0.0, value)
    if value < 120:
        return "{:.1f}s".format(value)
    if value < 7200:
        return "{:.0f}m{:02.0f}s".format(value // 60, value % 60)
    if value < 172800:
        return "{:.0f}h{:02.0f}m".format(value // 3600, (value % 3600) // 60)
    return "{:.0f}d".format(value // 86400)


def to_seconds(value: Any) -> float | None:
    """A time as unix seconds: seconds, milliseconds (the seed mixes both) or ISO 8601."""
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()
    seconds = number(value)
    if seconds is None:
        return None
    return seconds / 1000.0 if seconds > 1e11 else seconds


def utc_moment(seconds: float) -> datetime.datetime | None:
    """``seconds`` as a UTC datetime; None for a number no calendar holds (year 0, 1e300)."""
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def clock(value: Any, with_date: bool = False) -> str:
    """A time as ``HH:MM:SS`` UTC (``-`` missing, ``?`` not a time)."""
    if value is None or value == "":
        return MISSING
    seconds = to_seconds(value)
    moment = utc_moment(seconds) if seconds is not None else None
    if moment is None:
        return WRONG
    return moment.strftime("%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def since(snapshot: Mapping[str, Any], value: Any) -> str:
    """The age of a time (seconds, milliseconds or ISO) at the snapshot's ``now``."""
    now = number(snapshot.get("now"))
    if value is None or now is None:
        return MISSING
    seconds = to_seconds(value)
    return age(now - seconds) if seconds is not None else WRONG


def _utc(ms: float, tf: str) -> str:
    moment = utc_moment(ms / 1000.0)
    if moment is None:
        return WRONG
    return moment.strftime("%m-%d %H:%M" if TF_MS.get(tf, 0) >= TF_MS["4h"] else "%H:%M")


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _grid(rows: list[tuple[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None,
                  padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value if isinstance(value, Text) else Text(show(value)
                      if not isinstance(value, str) else value))
    return table


def _hint(text: str, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column()
    table.add_row(Text(text, style="yellow"))
    return table


# -- shared pieces -------------------------------------------------------------------------------

def context(snapshot: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(dig(snapshot, "heartbeat", "context"))


def market_is_open(snapshot: Mapping[str, Any]) -> bool:
    state = dig(snapshot, "status", "market") or dig(snapshot, "market_status", "state")
    return state != "closed"


def _header(snapshot: Mapping[str, Any]) -> Text:
    now = number(snapshot.get("now"))
    line = Text("fxcm viewer", style="bold")
    moment = utc_moment(now) if now is not None else None
    if moment is not None:
        line.append("  " + moment.strftime("%Y-%m-%d %H:%M:%S UTC"))
    mode = str(snapshot.get("mode") or "1")
    name = MODES.get(mode, MODES["1"])[0]
    line.append("   mode {} {}".format(mode if mode in MODES else "1", name), style="bold cyan")
    if snapshot.get("paused"):
        line.append("   PAUSED (p resumes)", style="bold yellow")
    redis_view = _map(snapshot.get("redis"))
    line.append("\nredis: ")
    url = redis_view.get("url")
    if redis_view.get("pending"):
        line.append("connecting ...", style="yellow")
    elif redis_view.get("connected"):
        line.append("connected", style="green")
        line.append(" {}".format(show(url) if url else ""))
        latency = number(redis_view.get("latency_ms"))
        if latency is not None:
            line.append("  ping {:.1f} ms".format(latency))
    else:
        line.append("not reachable", style="bold red")
        detail = " ".join(show(part) for part in (url, redis_view.get("error")) if part)
        if detail:
            line.append(" ({})".format(detail))
    host = _map(snapshot.get("host"))
    line.append("\nhost: ")
    if host.get("pending"):
        line.append("looking for the host ...", style="yellow")
    elif host.get("reachable"):
        line.append("pid {} version {} run dir {}".format(
            show(host.get("pid")), show(host.get("version")), show(host.get("run_dir"))))
    else:
        line.append("not reachable", style="bold red")
        if host.get("error"):
            line.append(" ({})".format(show(host["error"])))
    return line


def _menu(snapshot: Mapping[str, Any]) -> Text:
    current = str(snapshot.get("mode") or "1")
    line = Text()
    for key, (name, _, _) in MODES.items():
        line.append("[{}] {}".format(key, name), style="bold reverse" if key == current
                    else "dim")
        line.append("  ")
    line.append("[p] pause  [c] clear  [q] quits", style="dim")
    return line


# -- 1: summary ----------------------------------------------------------------------------------

def _status_table(snapshot: Mapping[str, Any]) -> Table:
    status = _map(snapshot.get("status"))
    heartbeat = _map(snapshot.get("heartbeat"))
    market = _map(snapshot.get("market_status"))
    table = Table(title="status", title_justify="left", expand=False)
    for column in ("process", "market", "price", "ohlcv", "session", "heartbeat", "diagnostic",
                   "note", "age"):
        table.add_column(column)
    session = status.get("session")
    session_text = MISSING
    if isinstance(session, Mapping):
        parts = [show(session.get(key)) for key in ("state", "state_detail", "name", "tag")
                 if session.get(key) not in (None, "")]
        session_text = " ".join(parts) or MISSING
    elif session is not None:
        session_text = show(session)
    status_age = since(snapshot, status.get("ts")) if "ts" in status else MISSING
    age_cell = Text(status_age)
    stale_after = number(_map(snapshot.get("limits")).get("status_stale_seconds"))
    seconds = to_seconds(status.get("ts"))
    now = number(snapshot.get("now"))
    if seconds is not None and now is not None and stale_after is not None \
            and now - seconds > stale_after:
        age_cell = Text(status_age + " stale", style="bold red")
    market_word = status.get("market") or market.get("state")
    table.add_row(word(status.get("process")), word(market_word), word(status.get("price")),
                  word(status.get("ohlcv")), Text(session_text), word(heartbeat.get("state")),
                  word(dig(heartbeat, "context", "diag", "state")), Text(show(status.get("note"))),
                  age_cell)
    last = status.get("last_command")
    if isinstance(last, Mapping):
        error = _map(last.get("error"))
        table.caption = "last command: {} {} {}{}".format(
            show(last.get("cmd")), show(last.get("state")), show(last.get("req_id")),
            " ({})".format(show(error.get("code"))) if error else "")
        table.caption_justify = "left"
    return table


def _prices_table(snapshot: Mapping[str, Any]) -> Table:
    prices = _map(snapshot.get("prices"))
    stale_after = number(_map(snapshot.get("limits")).get("tick_stale_seconds"))
    now = number(snapshot.get("now"))
    table = Table(title="prices (price_tik)", title_justify="left")
    table.add_column("symbol", style="bold")
    for column in ("bid", "ask", "mid", "tick age", "snap age"):
        table.add_column(column, justify="right")
    if not prices:
        table.add_row(MISSING, MISSING, MISSING, MISSING, MISSING, MISSING)
    for symbol in sorted(prices):
        price = _map(prices[symbol])
        tick_ts, snap_ts = number(price.get("tick_ts")), number(price.get("snap_ts"))
        tick_age = now - tick_ts if now is not None and tick_ts is not None else None
        tick_cell = Text(age(tick_age) if "tick_ts" not in price or tick_ts is not None
                         else WRONG)
        if tick_age is not None and stale_after is not None and tick_age > stale_after:
            tick_cell = Text(age(tick_age) + " stale", style="bold red")
        snap_age = now - snap_ts if now is not None and snap_ts is not None else None
        table.add_row(str(symbol), show(price.get("bid")), show(price.get("ask")),
                      show(price.get("mid")), tick_cell, age(snap_age))
    return table


def _ordered_timeframes(bars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen = {tf for per_tf in bars.values() for tf in _map(per_tf)}
    known = [tf for tf in TIMEFRAMES if tf in seen]
    return known + sorted(seen - set(known))


def _bar_cell(bar: Mapping[str, Any], tf: str, now: float | None, judge: bool,
              limits: Mapping[str, Any]) -> Text:
    open_time, close_time = number(bar.get("open_time")), number(bar.get("close_time"))
    if open_time is None:
        return Text(WRONG if "open_time" in bar else MISSING, style="dim")
    end_ms = close_time + 1 if close_time is not None else open_time + TF_MS.get(tf, 0)
    lag = now - end_ms / 1000.0 if now is not None else None
    cell = Text("{} {}".format(_utc(open_time, tf), show(bar.get("close"))))
    cell.append("\nlag {}".format(age(lag)))
    warn, error = number(limits.get("lag_warn_seconds")), number(limits.get("lag_error_seconds"))
    if judge and lag is not None and tf in TF_MS:
        # the next bar of this timeframe is due tf after this one's end
        overdue = lag - TF_MS[tf] / 1000.0
        if error is not None and overdue > error:
            cell.append(" stale", style="bold red")
        elif warn is not None and overdue > warn:
            cell.append(" late", style="yellow")
    if bar.get("synthetic") is True:
        cell.append(" syn", style="dim")
    return cell


def _bars_table(snapshot: Mapping[str, Any]) -> Table:
    bars = _map(snapshot.get("bars"))
    limits = _map(snapshot.get("limits"))
    now = number(snapshot.get("now"))
    judge = market_is_open(snapshot)  # with the market closed, no bar is late
    table = Table(title="last final bars", title_justify="left",
                  caption="open (UTC) close / lag since the bar's end", caption_justify="left")
    table.add_column("symbol", style="bold")
    timeframes = _ordered_timeframes(bars)
    for tf in timeframes or ["bars"]:
        table.add_column(tf)
    if not bars:
        table.add_row(MISSING, MISSING)
    for symbol in sorted(bars):
        per_tf = _map(bars[symbol])
        table.add_row(str(symbol), *[
            _bar_cell(_map(per_tf[tf]), tf, now, judge, limits) if tf in per_tf
            else Text(MISSING, style="dim") for tf in timeframes])
    return table


def _actors_table(snapshot: Mapping[str, Any], detailed: bool = False) -> Table:
    host = _map(snapshot.get("host"))
    actors = _map(host.get("actors"))
    table = Table(title="actors", title_justify="left")
    columns = ["actor", "state", "placement", "mailbox", "peak", "restarts", "dead letters"]
    if detailed:
        columns = ["actor", "state", "placement", "pid", "mailbox", "peak", "inflight",
                   "restarts", "dead letters", "backpressure", "last exit"]
    for column in columns:
        table.add_column(column, style="bold" if column == "actor" else None,
                         justify="left" if column in ("actor", "state", "placement",
                                                      "last exit") else "right")
    if not host.get("reachable"):
        table.add_row("looking for the host ..." if host.get("pending")
                      else "host: not reachable", *([MISSING] * (len(columns) - 1)))
        return table
    if not actors:
        table.add_row(*([MISSING] * len(columns)))
    for name in sorted(actors):
        actor = _map(actors[name])
        restarts, dead = actor.get("restarts"), actor.get("dead_letters")
        cells: dict[str, Any] = {
            "actor": str(name), "state": word(actor.get("state")),
            "placement": show(actor.get("placement")), "pid": show(actor.get("pid")),
            "mailbox": show(actor.get("depth")), "peak": show(actor.get("peak")),
            "inflight": show(actor.get("inflight")),
            "restarts": Text(show(restarts), style="yellow" if number(restarts) else ""),
            "dead letters": Text(show(dead), style="bold red" if number(dead) else ""),
            "backpressure": show(actor.get("backpressure_events")),
            "last exit": show(actor.get("last_exit"))}
        table.add_row(*[cells[column] for column in columns])
    return table


def _summary(snapshot: Mapping[str, Any]) -> RenderableType:
    return Group(_status_table(snapshot), _prices_table(snapshot), _bars_table(snapshot),
                 _actors_table(snapshot))


# -- 0: timeline ---------------------------------------------------------------------------------

def _timeline(snapshot: Mapping[str, Any]) -> RenderableType:
    events = snapshot.get("timeline")
    table = Table(title="timeline of state changes (newest first; c clears)",
                  title_justify="left")
    for column in ("time (UTC)", "source", "change", "detail"):
        table.add_column(column)
    if not isinstance(events, list) or not events:
        table.add_row(MISSING, "waiting for events", MISSING, MISSING)
        return table
    for event in list(reversed(events))[:TIMELINE_ROWS]:
        event = _map(event)
        change = Text()
        if event.get("from"):
            change.append(show(event.get("from")), style=_style(show(event.get("from"))))
            change.append(" -> ")
        change.append(word(event.get("to")))
        at = event.get("at")
        table.add_row(clock(at) if at is not None else "start", show(event.get("source")),
                      change, show(event.get("detail")))
    return table


# -- 2: session ----------------------------------------------------------------------------------

def _breaks(value: Any) -> str:
    if value is None:
        return MISSING
    if not isinstance(value, list):
        return WRONG
    parts = []
    for item in value:
        if isinstance(item, Mapping):
            parts.append("{}-{} {}".format(show(item.get("start")), show(item.get("end")),
                                           show(item.get("tz"))))
        elif isinstance(item, (str, list)):
            parts.append(item if isinstance(item, str) else "-".join(map(show, item)))
        else:
            parts.append(WRONG)
    return ", ".join(parts) or MISSING


def _session_block(snapshot: Mapping[str, Any]) -> Mapping[str, Any]:
    block = context(snapshot).get("session")
    if not isinstance(block, Mapping):
        block = dig(snapshot, "market_status", "session")
    return _map(block)


def _stats_table(session: Mapping[str, Any]) -> Table:
    table = Table(title="sessions over the last 24 h", title_justify="left")
    for column in ("session", "open (UTC)", "close (UTC)", "symbol", "tf", "bars", "range",
                   "avg"):
        table.add_column(column, justify="right" if column in ("bars", "range", "avg")
                         else "left")
    stats = session.get("stats")
    if not isinstance(stats, Mapping) or not stats:
        table.add_row(WRONG if stats is not None and not isinstance(stats, Mapping)
                      else MISSING, *([MISSING] * 7))
        return table
    for tag in sorted(stats):
        block = _map(stats[tag])
        symbols = block.get("symbols")
        rows = symbols if isinstance(symbols, list) and symbols else [None]
        for item in rows:
            item = _map(item)
            table.add_row(str(tag), clock(block.get("session_open_utc"), True),
                          clock(block.get("session_close_utc"), True), show(item.get("symbol")),
                          show(item.get("tf")), show(item.get("bars")), show(item.get("range")),
                          show(item.get("avg")))
    return table


def _session(snapshot: Mapping[str, Any]) -> RenderableType:
    session = _session_block(snapshot)
    market = _map(snapshot.get("market_status"))
    if not session and not market:
        return _hint("waiting for context.session in the heartbeat (or market_status)",
                     "session")
    rows: list[tuple[str, Any]] = [
        ("market", word(market.get("state"))),
        ("tag", show(session.get("tag"))),
        ("timezone", show(session.get("timezone"))),
        ("session open", clock(session.get("session_open_utc"), True)),
        ("session close", clock(session.get("session_close_utc"), True)),
        ("weekly open", show(session.get("weekly_open"))),
        ("weekly close", show(session.get("weekly_close"))),
        ("daily breaks", _breaks(session.get("daily_breaks"))),
        ("next open", clock(session.get("next_open_utc") or market.get("next_open_utc"), True)),
        ("next open in", age(session.get("next_open_seconds")
                             if session.get("next_open_seconds") is not None
                             else market.get("next_open_in_seconds")))]
    return Group(_grid(rows, "session"), _stats_table(session))


# -- 3: alerts -----------------------------------------------------------------------------------

def alerts(snapshot: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(severity ``error``|``warn``, subject, message) of what needs an operator, from the
    snapshot alone (the viewer's thresholds are ``viewer.*`` of the settings)."""
    found: list[tuple[str, str, str]] = []
    limits = _map(snapshot.get("limits"))
    now = number(snapshot.get("now"))
    redis_view = _map(snapshot.get("redis"))
    if not redis_view.get("connected") and not redis_view.get("pending"):
        found.append(("error", "redis", "not reachable: {}".format(
            show(redis_view.get("error")))))
    host = _map(snapshot.get("host"))
    if not host.get("reachable") and not host.get("pending"):
        found.append(("error", "host", "not reachable: {}".format(show(host.get("error")))))
    heartbeat = snapshot.get("heartbeat")
    if not isinstance(heartbeat, Mapping):
        found.append(("warn", "heartbeat", "none seen yet"))
    else:
        seconds = to_seconds(heartbeat.get("ts"))
        limit = number(limits.get("heartbeat_alert_seconds"))
        if seconds is not None and now is not None and limit is not None \
                and now - seconds > limit:
            found.append(("error", "heartbeat", "the last one is {} old".format(
                age(now - seconds))))
        diagnostic = dig(heartbeat, "context", "diag", "state")
        if diagnostic in ("DISCONNECTED", "RECOVERING"):
            found.append(("error" if diagnostic == "DISCONNECTED" else "warn", "diagnostic",
                          "{}: {}".format(diagnostic, show(dig(heartbeat, "context", "diag",
                                                                "reason")))))
    open_market = market_is_open(snapshot)
    seen = _map(dig(snapshot, "channels", "ohlcv"))
    last = number(seen.get("last_at")) or number(snapshot.get("started"))
    warn, error = (number(limits.get("ohlcv_idle_warn_seconds")),
                   number(limits.get("ohlcv_idle_error_seconds")))
    if open_market and last is not None and now is not None:
        silent = now - last
        if error is not None and silent > error:
            found.append(("error", "ohlcv", "no bar on the channel for {}".format(age(silent))))
        elif warn is not None and silent > warn:
            found.append(("warn", "ohlcv", "no bar on the channel for {}".format(age(silent))))
    stream = _map(context(snapshot).get("price_stream"))
    state = stream.get("state")
    if state in ("stale", "stopped", "down"):
        found.append(("error", "price stream", "{} (tick silence {})".format(
            state, age(stream.get("tick_silence_seconds")))))
    elif state == "waiting":
        found.append(("warn", "price stream", "waiting for the first tick"))
    for name, actor in sorted(_map(host.get("actors")).items()):
        actor = _map(actor)
        if actor.get("state") not in (None, "running"):
            found.append(("warn" if actor.get("state") == "restarting" else "error",
                          "actor " + str(name), "{} {}".format(
                              show(actor.get("state")), show(actor.get("last_exit")))))
        if number(actor.get("dead_letters")):
            found.append(("warn", "actor " + str(name), "{} dead letters".format(
                show(actor.get("dead_letters")))))
    for key, entry in sorted(_map(dig(context(snapshot), "diag", "backoff")).items()):
        if isinstance(entry, Mapping) and entry.get("active") is True:
            found.append(("warn", "backoff " + str(key), "sleeping {} more ({} failures; {})"
                          .format(age(entry.get("remaining_seconds")),
                                  show(entry.get("fail_count")),
                                  show(entry.get("last_error_type") or entry.get("last_error")))))
    throttle = dig(context(snapshot), "history", "throttle_state")
    if throttle in ("critical", "warn"):
        found.append(("warn", "history quota", "{}: {}".format(throttle, show(dig(
            context(snapshot), "history", "last_denied_reason")))))
    return found


def _alerts(snapshot: Mapping[str, Any]) -> RenderableType:
    table = Table(title="alerts", title_justify="left")
    for column in ("severity", "subject", "what"):
        table.add_column(column)
    found = alerts(snapshot)
    if not found:
        table.add_row(Text("ok", style="green"), "-", "no active alerts")
    for severity, subject, message in found:
        table.add_row(Text(severity, style="bold red" if severity == "error" else "yellow"),
                      subject, message)
    return table


# -- 4: streams ----------------------------------------------------------------------------------

def _targets_table(snapshot: Mapping[str, Any]) -> Table:
    table = Table(title="stream targets (heartbeat context.stream_targets)",
                  title_justify="left")
    for column in ("symbol", "tf", "last close (UTC)", "lag", "staleness", "bars"):
        table.add_column(column, justify="left" if column in ("symbol", "tf") else "right")
    targets = context(snapshot).get("stream_targets")
    if not isinstance(targets, list) or not targets:
        table.add_row(WRONG if targets is not None and not isinstance(targets, list)
                      else MISSING, *([MISSING] * 5))
        return table
    for target in targets:
        target = _map(target)
        table.add_row(show(target.get("symbol_code") or target.get("symbol")),
                      show(target.get("timeframe") or target.get("tf")),
                      clock(target.get("last_close_ms"), True), age(target.get("lag_seconds")),
                      age(target.get("staleness_seconds")), show(target.get("bars")))
    return table


def _channels_table(snapshot: Mapping[str, Any]) -> Table:
    table = Table(title="Redis channels as the viewer sees them", title_justify="left")
    for column in ("channel", "messages", "last one"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    names = _map(_map(snapshot.get("redis")).get("channels"))
    seen = _map(snapshot.get("channels"))
    kinds = {kind: name for name, kind in names.items()} if names else {k: k for k in seen}
    for kind in sorted(set(kinds) | set(seen)):
        stats = _map(seen.get(kind))
        count = number(stats.get("count"))
        table.add_row(show(kinds.get(kind, kind)), show(int(count)) if count is not None
                      else "0", since(snapshot, stats.get("last_at")))
    return table


def _streams(snapshot: Mapping[str, Any]) -> RenderableType:
    redis_view = _map(snapshot.get("redis"))
    latency = number(redis_view.get("latency_ms"))
    rows: list[tuple[str, Any]] = [
        ("redis", word("connected" if redis_view.get("connected") else "not reachable")),
        ("url", show(redis_view.get("url"))),
        ("ping", "{:.2f} ms".format(latency) if latency is not None else MISSING),
        ("publisher sees redis", word(show(context(snapshot).get("redis_connected")))),
        ("lag (1m)", age(context(snapshot).get("lag_seconds"))),
        ("published bars (last heartbeat)", show(context(snapshot).get("published_bars")))]
    return Group(_grid(rows, "Redis health"), _channels_table(snapshot),
                 _targets_table(snapshot), _bars_table(snapshot))


# -- 5: price ------------------------------------------------------------------------------------

def _symbol_states(value: Any) -> list[tuple[str, Mapping[str, Any]]] | None:
    """``symbols_state`` as the seed writes it (a list of maps with ``symbol``) or keyed by
    symbol; None when it is neither."""
    if isinstance(value, list):
        return [(show(_map(item).get("symbol")), _map(item)) for item in value]
    if isinstance(value, Mapping):
        return [(str(symbol), _map(item)) for symbol, item in value.items()]
    return None


def _price_stream_table(snapshot: Mapping[str, Any]) -> Table:
    stream = _map(context(snapshot).get("price_stream"))
    limits = _map(snapshot.get("limits"))
    stale_after = number(limits.get("tick_stale_seconds"))
    states = _symbol_states(stream.get("symbols_state"))
    table = Table(title="live prices per symbol (heartbeat context.price_stream)",
                  title_justify="left")
    table.add_column("symbol", style="bold")
    for column in ("bid", "ask", "mid", "tick age", "state"):
        table.add_column(column, justify="right" if column != "state" else "left")
    if states is None:
        # no symbols_state in the heartbeat: the price_tik payloads, as on the summary
        prices = _map(snapshot.get("prices"))
        now = number(snapshot.get("now"))
        states = []
        for symbol in sorted(prices):
            price = _map(prices[symbol])
            tick = number(price.get("tick_ts"))
            states.append((str(symbol), dict(price, tick_age_seconds=now - tick
                                             if now is not None and tick is not None else None)))
        table.title = "live prices per symbol (from price_tik: no symbols_state in the heartbeat)"
    if not states:
        table.add_row(MISSING, MISSING, MISSING, MISSING, MISSING, Text("waiting",
                                                                        style="yellow"))
    for symbol, entry in sorted(states, key=lambda item: item[0]):
        tick_age = entry.get("tick_age_seconds", entry.get("tick_age"))
        seconds = number(tick_age)
        if tick_age is None:
            state = Text("waiting", style="yellow")
        elif seconds is None:
            state = Text(WRONG, style="bold red")
        elif stale_after is not None and seconds > stale_after:
            state = Text("stale", style="bold red")
        else:
            state = Text("ok", style="green")
        table.add_row(symbol, show(entry.get("bid")), show(entry.get("ask")),
                      show(entry.get("mid")), age(tick_age), state)
    return table


def _cadence(snapshot: Mapping[str, Any]) -> RenderableType:
    cadence = context(snapshot).get("tick_cadence")
    if cadence is None:  # the predecessor also copied it into price_stream.adaptive_cadence
        cadence = dig(context(snapshot), "price_stream", "adaptive_cadence")
    if cadence is None:
        return _hint("waiting for context.tick_cadence in the heartbeat", "adaptive cadence")
    if not isinstance(cadence, Mapping):
        return _hint("context.tick_cadence: ? (not an object)", "adaptive cadence")
    rows: list[tuple[str, Any]] = [
        ("prices", word(cadence.get("state"))), ("history", word(cadence.get("history_state"))),
        ("reason", show(cadence.get("reason"))), ("multiplier", show(cadence.get("multiplier"))),
        ("tick silence", age(cadence.get("tick_silence_seconds")))]
    table = Table(title=None, box=None)
    for column in ("tf", "cadence", "next poll in"):
        table.add_column(column, justify="left" if column == "tf" else "right")
    every = cadence.get("cadence_seconds")
    upcoming = cadence.get("next_poll_in_seconds")
    every_map, upcoming_map = _map(every), _map(upcoming)
    for name, value in (("cadence_seconds", every), ("next_poll_in_seconds", upcoming)):
        if value is not None and not isinstance(value, Mapping):
            rows.append((name, WRONG))
    tfs = sorted(set(every_map) | set(upcoming_map),
                 key=lambda tf: TF_MS.get(str(tf), 0))
    for tf in tfs:
        table.add_row(str(tf), age(every_map.get(tf)), age(upcoming_map.get(tf)))
    if not tfs:
        table.add_row(MISSING, MISSING, MISSING)
    return Group(_grid(rows, "adaptive cadence"), table)


def _price(snapshot: Mapping[str, Any]) -> RenderableType:
    stream = context(snapshot).get("price_stream")
    if not isinstance(stream, Mapping):
        summary: RenderableType = _hint(
            "waiting for context.price_stream in the heartbeat" if stream is None
            else "context.price_stream: ? (not an object)", "price stream")
    else:
        seen = _map(dig(snapshot, "channels", "price_tik"))
        count = number(seen.get("count"))
        summary = _grid([
            ("state", word(stream.get("state"))),
            ("tick silence", age(stream.get("tick_silence_seconds"))),
            ("channel", show(stream.get("channel"))),
            ("interval", age(stream.get("interval_seconds"))),
            ("last snapshot", clock(stream.get("last_snap_ts"))),
            ("last tick", clock(stream.get("last_tick_ts"))),
            ("snapshots seen by the viewer", show(int(count)) if count is not None else "0")],
            "price stream")
    return Group(summary, _price_stream_table(snapshot), _cadence(snapshot))


# -- 6: supervisor -------------------------------------------------------------------------------

def _mailboxes_table(snapshot: Mapping[str, Any]) -> Table:
    table = Table(title="mailboxes", title_justify="left")
    for column in ("actor", "topic", "policy", "depth", "bound", "peak", "blocked producers"):
        table.add_column(column, justify="left" if column in ("actor", "topic", "policy")
                         else "right")
    actors = _map(_map(snapshot.get("host")).get("actors"))
    for name in sorted(actors):
        boxes = _map(actors[name]).get("mailboxes")
        if not isinstance(boxes, list):
            continue
        for box in boxes:
            box = _map(box)
            blocked = box.get("blocked_producers")
            table.add_row(str(name), show(box.get("topic")), show(box.get("policy")),
                          show(box.get("depth")), show(box.get("bound")), show(box.get("peak")),
                          Text(show(blocked), style="bold red" if number(blocked) else ""))
    if not table.rows:
        table.add_row(*([MISSING] * 7))
    return table


def _supervisor(snapshot: Mapping[str, Any]) -> RenderableType:
    host = _map(snapshot.get("host"))
    router = _map(host.get("router"))
    line = Text("router: " + ", ".join("{} {}".format(label, show(router.get(key))) for label, key
                                       in (("published", "published"), ("sent", "sent"),
                                           ("malformed", "malformed"),
                                           ("dead letters", "dead_letters"),
                                           ("unrouted", "unrouted"),
                                           ("tap copies", "tap_copies"),
                                           ("tap dropped", "tap_dropped"))))
    letters = Table(title="dead letters (newest last)", title_justify="left")
    for column in ("actor", "topic", "reason"):
        letters.add_column(column)
    found = host.get("dead_letters")
    for letter in found if isinstance(found, list) else []:
        letter = _map(letter)
        letters.add_row(show(letter.get("actor")), show(letter.get("topic")),
                        show(letter.get("reason")))
    if not letters.rows:
        letters.add_row(MISSING, MISSING, "none")
    return Group(_actors_table(snapshot, detailed=True), _mailboxes_table(snapshot), line,
                 letters, _cadence(snapshot))


# -- 7: history ----------------------------------------------------------------------------------

def _backoff(snapshot: Mapping[str, Any]) -> RenderableType:
    data = dig(context(snapshot), "diag", "backoff")
    if data is None:
        return _hint("waiting for context.diag.backoff in the heartbeat", "backoff")
    if not isinstance(data, Mapping):
        return _hint("context.diag.backoff: ? (not an object)", "backoff")
    table = Table(title="backoff (heartbeat context.diag.backoff)", title_justify="left")
    for column in ("subsystem", "state", "remaining", "sleep", "failures", "last error",
                   "at (UTC)"):
        table.add_column(column, justify="right" if column in ("remaining", "sleep", "failures")
                         else "left")
    for key in sorted(data):
        entry = data[key]
        if not isinstance(entry, Mapping):
            table.add_row(str(key), Text(WRONG, style="bold red"), WRONG, WRONG, WRONG, WRONG,
                          WRONG)
            continue
        remaining = number(entry.get("remaining_seconds"))
        active = entry.get("active") is True and (remaining is None or remaining > 0)
        state = Text("active", style="bold red") if active else Text("idle", style="green")
        if entry.get("active") is not None and not isinstance(entry.get("active"), bool):
            state = Text(WRONG, style="bold red")
        table.add_row(str(key), state, age(entry.get("remaining_seconds")),
                      age(entry.get("sleep_seconds")), show(entry.get("fail_count")),
                      show(entry.get("last_error_type") or entry.get("last_error")),
                      clock(entry.get("last_error_ts")))
    if not data:
        table.add_row(MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING)
    return table


def _ratio(calls: Any, limit: Any) -> str:
    shown_limit = show(limit)
    if number(limit) == 0:
        shown_limit = "inf"
    return "{}/{}".format(show(calls), shown_limit)


def _quota(snapshot: Mapping[str, Any]) -> RenderableType:
    data = context(snapshot).get("history")
    if data is None:
        return _hint("waiting for context.history in the heartbeat", "history quota")
    if not isinstance(data, Mapping):
        return _hint("context.history: ? (not an object)", "history quota")
    priority = data.get("priority")
    priority_map = _map(priority)
    targets = priority_map.get("targets")
    rows: list[tuple[str, Any]] = [
        ("calls 60 s", _ratio(data.get("calls_60s"), data.get("limit_60s"))),
        ("calls 3600 s", _ratio(data.get("calls_3600s"), data.get("limit_3600s"))),
        ("throttle state", word(data.get("throttle_state"))),
        ("next slot in", age(data.get("next_slot_seconds"))),
        ("last deny", show(data.get("last_denied_reason"))),
        ("priority targets", ", ".join(show(t) for t in targets) if isinstance(targets, list)
         else show(targets)),
        ("priority reserve /min /hour", "{} / {}".format(
            show(priority_map.get("reserve_per_min")), show(priority_map.get("reserve_per_hour")))),
        ("priority calls 60 s", show(priority_map.get("calls_60s")))]
    if priority is not None and not isinstance(priority, Mapping):
        rows.append(("priority", WRONG))
    skipped = Table(title="skipped polls", title_justify="left")
    for column in ("symbol", "tf", "skipped"):
        skipped.add_column(column, justify="right" if column == "skipped" else "left")
    entries = data.get("skipped_polls")
    if entries is not None and not isinstance(entries, list):
        skipped.add_row(WRONG, WRONG, WRONG)
    for entry in entries[:12] if isinstance(entries, list) else []:
        entry = _map(entry)
        skipped.add_row(show(entry.get("symbol")), show(entry.get("tf")),
                        show(entry.get("count")))
    if not skipped.rows:
        skipped.add_row(MISSING, MISSING, "0")
    return Group(_grid(rows, "history quota (heartbeat context.history)"), skipped)


def _history(snapshot: Mapping[str, Any]) -> RenderableType:
    return Group(_backoff(snapshot), _quota(snapshot))


# -- 8: stats, 9: volume calibration -------------------------------------------------------------

def _stats(snapshot: Mapping[str, Any]) -> RenderableType:
    ctx = context(snapshot)
    status = _map(snapshot.get("status"))
    last = _map(status.get("last_command"))
    rows: list[tuple[str, Any]] = [
        ("heartbeat state", word(dig(snapshot, "heartbeat", "state"))),
        ("heartbeat cycle", age(ctx.get("cycle_seconds"))),
        ("bars in the last heartbeat", show(ctx.get("published_bars"))),
        ("lag (1m)", age(ctx.get("lag_seconds"))),
        ("tick silence", age(ctx.get("tick_silence_seconds"))),
        ("last command", "{} {} {}".format(show(last.get("cmd")), show(last.get("state")),
                                           show(last.get("req_id"))) if last else MISSING)]
    return Group(_grid(rows, "stats"), _channels_table(snapshot),
                 _stats_table(_session_block(snapshot)))


def _volume(snapshot: Mapping[str, Any]) -> RenderableType:
    return _hint("no volume calibration here: volume is the tick count (tick_count) for tick "
                 "bars and history bars alike, so there is no ratio to calibrate "
                 "(docs/contracts.md)", "volume calibration")


# key -> (short name, title, screen); the predecessor's keys and names
MODES: dict[str, tuple[str, str, Callable[[Mapping[str, Any]], RenderableType]]] = {
    "0": ("TL", "timeline", _timeline),
    "1": ("SUM", "summary", _summary),
    "2": ("SES", "session", _session),
    "3": ("ALERT", "alerts", _alerts),
    "4": ("STREAM", "streams", _streams),
    "5": ("PRICE", "price", _price),
    "6": ("SUPR", "supervisor", _supervisor),
    "7": ("HIST", "history", _history),
    "8": ("STAT", "stats", _stats),
    "9": ("VCAL", "volume calibration", _volume),
}


def mode_key(name: str) -> str | None:
    """A mode by key (``7``), short name (``HIST``) or title (``history``)."""
    lowered = name.strip().lower()
    for key, (short, title, _) in MODES.items():
        if lowered in (key, short.lower(), title):
            return key
    return None


def _safe(screen: Callable[[Mapping[str, Any]], RenderableType],
          snapshot: Mapping[str, Any]) -> RenderableType:
    try:
        return screen(snapshot)
    except Exception as exc:  # a bug must not end the dashboard: say so and go on
        return Text("? this panel could not be drawn ({}: {})".format(type(exc).__name__, exc),
                    style="bold red")


def render(snapshot: Mapping[str, Any]) -> RenderableType:
    """The whole screen for one snapshot dict: header, the mode's panels, the key menu."""
    mode = str(snapshot.get("mode") or "1")
    screen = MODES.get(mode, MODES["1"])[2]
    return Group(_safe(_header, snapshot), _safe(screen, snapshot), _safe(_menu, snapshot))


def render_text(snapshot: Mapping[str, Any], width: int = 160) -> str:
    """``render`` as plain text (no colours): for tests and logs."""
    with open(os.devnull, "w", encoding="utf-8") as sink:
        console = Console(width=width, record=True, color_system=None, file=sink)
        console.print(render(snapshot))
        return console.export_text()
