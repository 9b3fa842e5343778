"""The scripted FXCM behind the double: sessions, offers, ticks, history, and a state file.

The scenario is a JSON file named by ``FXCM_SDK_DOUBLE_SCENARIO`` (every key optional)::

    {
      "state_file": "/tmp/.../sdk-state.json",  # what happened, rewritten as it changes
      "sdk_wait_seconds": 30.0,      # the SDK's own waits (login, tables, logout): 30 s real
      "server_offset_ms": 0,         # the server clock minus ours (tick times are the server's)
      "latency_ms": [5, 40],         # ticks arrive this much after their server time
      "tick_interval_seconds": 0.05, # each subscribed offer changes this often
      "tick_seconds_of_minute": [0, 60],  # ...while the server's second of the minute is in
      "offers": [{"instrument": "EUR/USD", "subscription_status": "T", "digits": 5,
                  "point_size": 0.0001, "bid": 1.1, "spread": 0.0002}],
      "sessions": [                  # the plan of each session created, in order; the last
        {"connect_after": 0.1,       # one repeats. result: connected, refused or never
         "result": "connected", "error": "ORA-1: bad password",
         "events": [{"after": 3.0, "do": "session_lost"},       # after its CONNECTED:
                    {"after": 3.0, "do": "reconnect", "for": 1.0},  # the SDK's own reconnect
                    {"after": 1.0, "do": "ghost", "status": "DISCONNECTED"},  # a stale
                    {"after": 1.0, "do": "bad_ticks"}]}         # callback of the previous
      ],                                                        # session; malformed offers
      "history": {"not_ready_seconds": 0,   # "not ready" this long after each CONNECTED
                  "open_price_mode_sticks": false}  # the communicator ignores the mode set
    }

Sessions count as open from ``login`` until their DISCONNECTED; the state file records the
most ever open at once, every status delivered, subscriptions, ticks per server minute, the
history calls (with the candle open price mode in force) and the bars served (bid and ask), for
the tests to read. History bars are a function of instrument and time (the offer's first bid
plus a wave of points), up to the server's now.

During the SDK's own reconnect the OFFERS table's listeners are dropped: only a subscription
made after the CONNECTED that ends it gets ticks again (the pessimistic reading of the wheel,
whose samples subscribe again on CONNECTED).
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import json
import os
import random
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from forexconnect.lib.fxcorepy import (
    O2GOfferTableRow,
    O2GSession,
    O2GSessionStatus,
    O2GTable,
    O2GTableManager,
    O2GTableManagerStatus,
    O2GTableType,
    O2GTableUpdateType,
    O2GTimeFrame,
    O2GTimeFrameUnit,
)

SCENARIO_ENV = "FXCM_SDK_DOUBLE_SCENARIO"
EPOCH = datetime.datetime(1970, 1, 1)
UNIT_MS = {O2GTimeFrameUnit.MIN: 60000, O2GTimeFrameUnit.HOUR: 3600000,
           O2GTimeFrameUnit.DAY: 86400000}
DEFAULT_OFFERS = [{"instrument": "EUR/USD", "bid": 1.1, "spread": 0.0002},
                  {"instrument": "USD/JPY", "digits": 3, "point_size": 0.01, "bid": 155.0,
                   "spread": 0.02}]

_SERVER: Optional[Server] = None
_SERVER_LOCK = threading.Lock()


def server() -> Server:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None:
            path = os.environ.get(SCENARIO_ENV)
            scenario: Dict[str, Any] = {}
            if path:
                with open(path, encoding="utf-8") as handle:
                    scenario = json.load(handle)
            _SERVER = Server(scenario)
        return _SERVER


def sdk_wait_seconds() -> float:
    return float(server().scenario.get("sdk_wait_seconds", 30.0))


def to_ms(moment: datetime.datetime) -> int:
    return int((moment - EPOCH).total_seconds() * 1000)


class Session(object):
    """The native side of one O2GSession."""

    def __init__(self, server: Server, index: int, plan: Dict[str, Any]) -> None:
        self.server = server
        self.index = index
        self.plan = plan
        self.status = O2GSessionStatus.DISCONNECTED
        self.status_listeners: List[Any] = []
        self.table_listener: Any = None
        self.table_status = O2GTableManagerStatus.TABLES_LOADING
        self.table_manager: Optional[O2GTableManager] = None
        self.listeners: Dict[int, List[Any]] = {}  # update type -> TableListeners
        self.open = False
        self.connected_at = 0.0
        self.streaming = False
        self.offers_table = O2GTable(self, O2GTableType.OFFERS, server.rows)

    # -- status ----------------------------------------------------------------------------

    def set_status(self, status: O2GSessionStatus, error: Optional[str] = None) -> None:
        """Change the status and tell the listeners (on the calling thread)."""
        server = self.server
        with server.lock:
            self.status = status
            if status == O2GSessionStatus.DISCONNECTED and self.open:
                self.open = False
                server.state["open_sessions"] -= 1
            if status != O2GSessionStatus.CONNECTED:
                self.streaming = False
            server.state["statuses"].append([self.index, str(status)])
            server.dirty = True
            listeners = list(self.status_listeners)
        for listener in listeners:
            if error is not None:
                listener.on_login_failed(error)
            listener.on_session_status_changed(status)

    def login(self, user: str, password: str, url: str, connection: str) -> bool:
        server = self.server
        with server.lock:
            if self.open:
                return False
            self.open = True
            server.state["logins"] += 1
            server.state["open_sessions"] += 1
            server.state["max_open_sessions"] = max(server.state["max_open_sessions"],
                                                    server.state["open_sessions"])
        self.set_status(O2GSessionStatus.CONNECTING)  # synchronously, as on the wheel
        plan = self.plan
        result = plan.get("result", "connected")
        after = float(plan.get("connect_after", 0.1))
        if result == "connected":
            server.at(after, self._connected)
        elif result == "refused":
            error = str(plan.get("error", "ORA-1: refused"))
            server.at(after, lambda: self.set_status(O2GSessionStatus.DISCONNECTED, error))
        return True

    def _connected(self) -> None:
        if self.status != O2GSessionStatus.CONNECTING:
            return
        self.table_manager = O2GTableManager(self)
        self.connected_at = time.monotonic()
        self.set_status(O2GSessionStatus.CONNECTED)
        self.streaming = True
        self.table_status = O2GTableManagerStatus.TABLES_LOADED
        if self.table_listener is not None:
            self.table_listener.on_status_changed(self.table_status, self.table_manager)
        for event in self.plan.get("events", []):
            self.server.at(float(event.get("after", 0.0)), self._event_runner(event))

    def _event_runner(self, event: Dict[str, Any]) -> Callable[[], None]:
        def run() -> None:
            kind = event.get("do")
            if kind == "session_lost" and self.status == O2GSessionStatus.CONNECTED:
                self.set_status(O2GSessionStatus.SESSION_LOST)
            elif kind == "reconnect" and self.status == O2GSessionStatus.CONNECTED:
                with self.server.lock:
                    self.listeners.clear()  # the old subscription does not survive it
                self.set_status(O2GSessionStatus.RECONNECTING)
                self.server.at(float(event.get("for", 1.0)), self._reconnected)
            elif kind == "ghost":
                self.server.ghost(self.index - 1, str(event.get("status", "DISCONNECTED")))
            elif kind == "bad_ticks":
                self.server.bad_ticks(self)
        return run

    def _reconnected(self) -> None:
        if self.status == O2GSessionStatus.RECONNECTING:
            self.set_status(O2GSessionStatus.CONNECTED)
            self.streaming = True

    def logout(self) -> None:
        server = self.server
        with server.lock:
            server.state["logouts"] += 1
            connecting = self.status == O2GSessionStatus.CONNECTING
            if connecting:
                # On the wheel: 30 s of blocking, the socket kept, DISCONNECTED never comes.
                server.state["logouts_while_connecting"] += 1
        if self.status == O2GSessionStatus.DISCONNECTED:
            return
        server.at(0.0, lambda: self.set_status(O2GSessionStatus.DISCONNECTING))
        if not connecting:
            server.at(float(server.scenario.get("logout_seconds", 0.05)),
                      lambda: self.set_status(O2GSessionStatus.DISCONNECTED))

    # -- the OFFERS table ------------------------------------------------------------------

    def subscribe(self, table: O2GTable, update_type: Any, listener: Any) -> None:
        with self.server.lock:
            self.listeners.setdefault(int(update_type), []).append(listener)
            if int(update_type) == int(O2GTableUpdateType.UPDATE):
                self.server.state["subscriptions"].append(
                    [self.index, str(self.status), round(time.time(), 3)])
            self.server.dirty = True

    def unsubscribe(self, table: O2GTable, update_type: Any, listener: Any) -> None:
        with self.server.lock:
            listeners = self.listeners.get(int(update_type), [])
            if listener in listeners:
                listeners.remove(listener)
                self.server.state["unsubscriptions"] += 1
                self.server.dirty = True

    def update_listeners(self) -> List[Any]:
        return list(self.listeners.get(int(O2GTableUpdateType.UPDATE), []))

    # -- history ---------------------------------------------------------------------------

    def history_ready(self) -> bool:
        wait = float(self.server.scenario.get("history", {}).get("not_ready_seconds", 0.0))
        return self.status == O2GSessionStatus.CONNECTED and \
            time.monotonic() - self.connected_at >= wait

    def history(self, instrument: str, timeframe: O2GTimeFrame,
                date_from: Optional[datetime.datetime], date_to: Optional[datetime.datetime],
                count: int, mode: str) -> List[Any]:
        server = self.server
        with server.lock:
            server.state["history_calls"].append({
                "instrument": instrument, "timeframe": timeframe.id, "mode": mode,
                "from": None if date_from is None else to_ms(date_from),
                "to": None if date_to is None else to_ms(date_to), "count": count,
                "ready": self.history_ready()})
            del server.state["history_calls"][:-200]
            server.dirty = True
        if not self.history_ready():
            server.state["history_not_ready"] += 1
            raise Exception("PriceHistoryManager error: PriceHistoryCommunicator is not ready. "
                            "code: OtherError")
        offer = server.offer(instrument)
        if offer is None or offer.subscription_status != "T":
            raise Exception("PriceHistoryManager error: Instrument {} is not subscribed. code: "
                            "OtherError".format(instrument))
        return server.bars(offer, timeframe, date_from, date_to, count)


class HistoryRow(object):
    """A row of the history reader, as the wheel's reader yields them."""

    def __init__(self, date: datetime.datetime, bid: Tuple[float, float, float, float],
                 ask: Tuple[float, float, float, float], volume: int) -> None:
        self.date = date
        self.bid_open, self.bid_high, self.bid_low, self.bid_close = bid
        self.ask_open, self.ask_high, self.ask_low, self.ask_close = ask
        self.volume = volume


class Server(object):
    def __init__(self, scenario: Dict[str, Any]) -> None:
        self.scenario = scenario
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._heap: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._random = random.Random(7)
        self.sessions: List[Session] = []
        self.rows: List[O2GOfferTableRow] = []
        self.spreads: Dict[str, float] = {}
        self.bases: Dict[str, float] = {}
        now = self.server_now()
        for index, spec in enumerate(scenario.get("offers") or DEFAULT_OFFERS):
            digits = int(spec.get("digits", 5))
            bid = round(float(spec.get("bid", 1.1)), digits)
            spread = float(spec.get("spread", 10.0 ** -digits * 2))
            self.spreads[spec["instrument"]] = spread
            self.bases[spec["instrument"]] = bid
            self.rows.append(O2GOfferTableRow(
                str(index + 1), spec["instrument"], bid, round(bid + spread, digits), now,
                spec.get("subscription_status", "T"), digits,
                float(spec.get("point_size", 10.0 ** -(digits - 1)))))
        self.state: Dict[str, Any] = {
            "pid": os.getpid(), "sessions_created": 0, "logins": 0, "logouts": 0,
            "logouts_while_connecting": 0, "open_sessions": 0, "max_open_sessions": 0,
            "statuses": [], "subscriptions": [], "unsubscriptions": 0, "ticks_sent": 0,
            "bad_ticks_sent": 0, "ticks_per_minute": {}, "history_calls": [],
            "history_not_ready": 0, "ghosts_delivered": 0, "callback_thread": None,
            "bars_served": {}}
        self.dirty = True
        self._written = 0.0
        self._thread = threading.Thread(target=self._run, name="sdk-native", daemon=True)
        self._thread.start()
        self.at(self.tick_interval(), self._tick)

    # -- time and scheduling ---------------------------------------------------------------

    def server_now(self) -> datetime.datetime:
        offset = float(self.scenario.get("server_offset_ms", 0))
        return datetime.datetime.utcnow() + datetime.timedelta(milliseconds=offset)

    def tick_interval(self) -> float:
        return float(self.scenario.get("tick_interval_seconds", 0.05))

    def at(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the native thread ``delay`` seconds from now."""
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), action))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, action = heapq.heappop(self._heap)
                        break
                    timeout = self._heap[0][0] - now if self._heap else 0.1
                    self._wake.wait(min(timeout, 0.1))
                    self._write_state()
            try:
                action()
            except Exception as exc:  # the double must not die of its caller
                self.state.setdefault("native_errors", []).append(repr(exc))
            self._write_state()

    def _write_state(self) -> None:
        path = self.scenario.get("state_file")
        if not path or not self.dirty or time.monotonic() - self._written < 0.05:
            return
        with self.lock:
            text = json.dumps(self.state)
            self.dirty = False
        self._written = time.monotonic()
        temporary = "{}.{}.tmp".format(path, os.getpid())
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)

    # -- sessions --------------------------------------------------------------------------

    def create_session(self) -> O2GSession:
        with self.lock:
            plans = self.scenario.get("sessions") or [{}]
            index = len(self.sessions)
            session = Session(self, index, plans[min(index, len(plans) - 1)])
            self.sessions.append(session)
            self.state["sessions_created"] += 1
            self.dirty = True
        return O2GSession(session)

    def ghost(self, index: int, status_name: str) -> None:
        """A status callback from the session before: the wheel's listener of an earlier,
        abandoned session can still fire."""
        if index < 0 or index >= len(self.sessions):
            return
        old = self.sessions[index]
        status = O2GSessionStatus.names[status_name]
        with self.lock:
            self.state["ghosts_delivered"] += 1
            self.dirty = True
            listeners = list(old.status_listeners)
        for listener in listeners:
            listener.on_session_status_changed(status)

    # -- offers and ticks ------------------------------------------------------------------

    def offer(self, instrument: str) -> Optional[O2GOfferTableRow]:
        for row in self.rows:
            if row.instrument == instrument:
                return row
        return None

    def _tick(self) -> None:
        self.at(self.tick_interval(), self._tick)
        deliveries: List[Tuple[Any, O2GOfferTableRow]] = []
        with self.lock:
            live = [s for s in self.sessions if s.streaming and
                    s.status == O2GSessionStatus.CONNECTED]
            listeners = [listener for s in live for listener in s.update_listeners()]
            if not listeners:
                return
            first, last = self.scenario.get("tick_seconds_of_minute", [0, 60])
            second = self.server_now().second
            if not first <= second < last:
                return
            low, high = self.scenario.get("latency_ms", [5, 40])
            for row in self.rows:
                if row.subscription_status != "T":
                    continue
                step = row.point_size * self._random.choice((-1, 0, 1))
                row.bid = round(max(row.point_size, row.bid + step), row.digits)
                row.ask = round(row.bid + self.spreads[row.instrument], row.digits)
                row.time = self.server_now() - datetime.timedelta(
                    milliseconds=self._random.uniform(low, high))
                minute = str(to_ms(row.time) // 60000 * 60000)
                per = self.state["ticks_per_minute"].setdefault(row.instrument, {})
                per[minute] = per.get(minute, 0) + len(listeners)
                self.state["ticks_sent"] += len(listeners)
                for listener in listeners:
                    deliveries.append((listener, row.copy()))
            for minutes in self.state["ticks_per_minute"].values():
                for key in sorted(minutes)[:-15]:
                    del minutes[key]
            self.state["callback_thread"] = threading.current_thread().name
            self.dirty = True
        for listener, row in deliveries:
            listener.on_changed(row.offer_id, row)

    def bad_ticks(self, session: Session) -> None:
        """Malformed offers, as a broken feed could send them: no time, NaN bid, ask below
        bid, an instrument nobody configured."""
        row = self.rows[0]
        bad = [row.copy() for _ in range(4)]
        bad[0].time = None
        bad[1].bid = float("nan")
        bad[2].ask = bad[2].bid - 1.0
        bad[3].instrument = "ZZZ/QQQ"
        with self.lock:
            listeners = session.update_listeners()
            self.state["bad_ticks_sent"] += len(bad) * len(listeners)
            self.dirty = True
        for listener in listeners:
            for item in bad:
                listener.on_changed(item.offer_id, item)

    # -- history ---------------------------------------------------------------------------

    def bars(self, offer: O2GOfferTableRow, timeframe: O2GTimeFrame,
             date_from: Optional[datetime.datetime], date_to: Optional[datetime.datetime],
             count: int) -> List[HistoryRow]:
        """Deterministic bars (a function of instrument and time) up to the server's now."""
        step = UNIT_MS[timeframe.unit] * timeframe.size
        now = to_ms(self.server_now())
        end = min(now, to_ms(date_to)) if date_to is not None else now
        last = end - end % step
        if date_from is not None:
            first = to_ms(date_from) - to_ms(date_from) % step
        else:
            first = last - (max(count, 1) - 1) * step
        starts = list(range(max(first, last - 5000 * step), last + 1, step))
        if count > 0:
            starts = starts[-count:]
        spread = self.spreads[offer.instrument]
        point = offer.point_size
        rows = []
        for start in starts:
            wave = ((start // step) * 7919) % 101
            open_ = self.bases[offer.instrument] + wave * point
            bid = (round(open_, offer.digits), round(open_ + 5 * point, offer.digits),
                   round(open_ - 3 * point, offer.digits), round(open_ + point, offer.digits))
            ask = tuple(round(price + spread, offer.digits) for price in bid)
            rows.append(HistoryRow(EPOCH + datetime.timedelta(milliseconds=start), bid,
                                   ask, 10 + wave))
        with self.lock:
            served = self.state["bars_served"].setdefault(
                "{} {}".format(offer.instrument, timeframe.id), {})
            for row in rows:
                served[str(to_ms(row.date))] = [
                    row.bid_open, row.bid_high, row.bid_low, row.bid_close, row.ask_open,
                    row.ask_high, row.ask_low, row.ask_close, row.volume]
            for key in sorted(served, key=int)[:-3000]:
                del served[key]
            self.dirty = True
        return rows
