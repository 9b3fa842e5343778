"""Stand-in for the wheel's native ``forexconnect.lib.fxcorepy``.

The enums carry the names, values, order and ``str()`` of forexconnect 1.6.43 (a Boost.Python
enum is an ``int`` whose ``str()`` is the bare name); the objects are the native ones the
wheel's Python layer and our broker touch: the transport, sessions, the table manager, the
OFFERS table and its rows, and the price history communicator. What they do is scripted by the
scenario (see ``_server``); callbacks reach the caller on the double's own "native" thread, as
the SDK's do (CONNECTING on the calling thread, as observed on the wheel).
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, Iterator, List, Optional, Type, TypeVar

E = TypeVar("E", bound="_Enum")


class _Enum(int):
    """Like a Boost.Python enum: an int with a name; ``names`` and ``values`` per class."""

    name = ""
    names: Dict[str, Any] = {}
    values: Dict[int, Any] = {}

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return "forexconnect.lib.fxcorepy.{}.{}".format(type(self).__name__, self.name)

    __hash__ = int.__hash__


def _fill(cls: Type[E], *members: str, start: int = 0) -> Type[E]:
    cls.names = {}
    cls.values = {}
    for value, name in enumerate(members, start):
        member = int.__new__(cls, value)
        member.name = name
        setattr(cls, name, member)
        cls.names[name] = member
        cls.values[value] = member
    return cls


class O2GSessionStatus(_Enum):
    DISCONNECTED: O2GSessionStatus
    CONNECTING: O2GSessionStatus
    TRADING_SESSION_REQUESTED: O2GSessionStatus
    CONNECTED: O2GSessionStatus
    RECONNECTING: O2GSessionStatus
    DISCONNECTING: O2GSessionStatus
    SESSION_LOST: O2GSessionStatus
    PRICE_SESSION_RECONNECTING: O2GSessionStatus
    CONNECTED_WITH_NEED_TO_CHANGE_PASSWORD: O2GSessionStatus
    CHART_SESSION_RECONNECTING: O2GSessionStatus


_fill(O2GSessionStatus, "DISCONNECTED", "CONNECTING", "TRADING_SESSION_REQUESTED", "CONNECTED",
      "RECONNECTING", "DISCONNECTING", "SESSION_LOST", "PRICE_SESSION_RECONNECTING",
      "CONNECTED_WITH_NEED_TO_CHANGE_PASSWORD", "CHART_SESSION_RECONNECTING")


class O2GCandleOpenPriceMode(_Enum):
    PREVIOUS_CLOSE: O2GCandleOpenPriceMode
    FIRST_TICK: O2GCandleOpenPriceMode


_fill(O2GCandleOpenPriceMode, "PREVIOUS_CLOSE", "FIRST_TICK")


class O2GTableType(_Enum):
    TABLE_UNKNOWN: O2GTableType
    OFFERS: O2GTableType
    ACCOUNTS: O2GTableType
    ORDERS: O2GTableType
    TRADES: O2GTableType
    CLOSED_TRADES: O2GTableType
    MESSAGES: O2GTableType
    SUMMARY: O2GTableType


_fill(O2GTableType, "TABLE_UNKNOWN", "OFFERS", "ACCOUNTS", "ORDERS", "TRADES", "CLOSED_TRADES",
      "MESSAGES", "SUMMARY", start=-1)


class O2GTableUpdateType(_Enum):
    UPDATE_UNKNOWN: O2GTableUpdateType
    INSERT: O2GTableUpdateType
    UPDATE: O2GTableUpdateType
    DELETE: O2GTableUpdateType


_fill(O2GTableUpdateType, "UPDATE_UNKNOWN", "INSERT", "UPDATE", "DELETE", start=-1)


class O2GTableManagerStatus(_Enum):
    TABLES_LOADING: O2GTableManagerStatus
    TABLES_LOADED: O2GTableManagerStatus
    TABLES_LOAD_FAILED: O2GTableManagerStatus


_fill(O2GTableManagerStatus, "TABLES_LOADING", "TABLES_LOADED", "TABLES_LOAD_FAILED")


class O2GTableStatus(_Enum):
    INITIAL: O2GTableStatus
    REFRESHING: O2GTableStatus
    REFRESHED: O2GTableStatus
    FAILED: O2GTableStatus


_fill(O2GTableStatus, "INITIAL", "REFRESHING", "REFRESHED", "FAILED")


class O2GTableManagerMode(_Enum):
    NO: O2GTableManagerMode
    YES: O2GTableManagerMode


_fill(O2GTableManagerMode, "NO", "YES")


class O2GTimeFrameUnit(_Enum):
    TICK: O2GTimeFrameUnit
    MIN: O2GTimeFrameUnit
    HOUR: O2GTimeFrameUnit
    DAY: O2GTimeFrameUnit
    WEEK: O2GTimeFrameUnit
    MONTH: O2GTimeFrameUnit
    YEAR: O2GTimeFrameUnit


_fill(O2GTimeFrameUnit, "TICK", "MIN", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")


# -- abstract listeners the Python layer subclasses ----------------------------------------------

class AO2GSessionStatus(object):
    O2GSessionStatus = O2GSessionStatus
    DISCONNECTED = O2GSessionStatus.DISCONNECTED
    CONNECTING = O2GSessionStatus.CONNECTING
    TRADING_SESSION_REQUESTED = O2GSessionStatus.TRADING_SESSION_REQUESTED
    CONNECTED = O2GSessionStatus.CONNECTED
    RECONNECTING = O2GSessionStatus.RECONNECTING
    DISCONNECTING = O2GSessionStatus.DISCONNECTING
    SESSION_LOST = O2GSessionStatus.SESSION_LOST
    PRICE_SESSION_RECONNECTING = O2GSessionStatus.PRICE_SESSION_RECONNECTING
    CONNECTED_WITH_NEED_TO_CHANGE_PASSWORD = O2GSessionStatus.CONNECTED_WITH_NEED_TO_CHANGE_PASSWORD
    CHART_SESSION_RECONNECTING = O2GSessionStatus.CHART_SESSION_RECONNECTING

    def on_session_status_changed(self, status: Any) -> None:
        raise NotImplementedError

    def on_login_failed(self, error: str) -> None:
        raise NotImplementedError


class AO2GTableListener(object):
    def on_added(self, row_id: str, row: Any) -> None:
        raise NotImplementedError

    def on_changed(self, row_id: str, row: Any) -> None:
        raise NotImplementedError

    def on_deleted(self, row_id: str, row: Any) -> None:
        raise NotImplementedError

    def on_status_changed(self, status: O2GTableStatus) -> None:
        raise NotImplementedError


class AO2GTableManagerListener(object):
    def on_status_changed(self, status: O2GTableManagerStatus, table_manager: Any) -> None:
        raise NotImplementedError


# -- rows and tables -----------------------------------------------------------------------------

class O2GRow(object):
    table_type = O2GTableType.TABLE_UNKNOWN


class O2GOfferTableRow(O2GRow):
    """An OFFERS row, fields as the wheel's snake_case attributes (a copy: the table's row
    changes under the SDK, a delivered one does not)."""

    table_type = O2GTableType.OFFERS

    def __init__(self, offer_id: str, instrument: str, bid: float, ask: float,
                 time: datetime.datetime, subscription_status: str, digits: int,
                 point_size: float) -> None:
        self.offer_id = offer_id
        self.instrument = instrument
        self.bid = bid
        self.ask = ask
        self.time = time
        self.subscription_status = subscription_status
        self.digits = digits
        self.point_size = point_size
        self.low = bid
        self.high = ask
        self.volume = 0
        self.quote_id = ""

    def copy(self) -> O2GOfferTableRow:
        row = O2GOfferTableRow(self.offer_id, self.instrument, self.bid, self.ask, self.time,
                               self.subscription_status, self.digits, self.point_size)
        return row


O2GOfferRow = O2GOfferTableRow


class O2GTable(object):
    """The OFFERS table of one session: rows, and listeners per update type."""

    def __init__(self, core: Any, table_type: O2GTableType, rows: List[O2GOfferTableRow]
                 ) -> None:
        self._core = core
        self.type = table_type
        self._rows = rows

    def __iter__(self) -> Iterator[O2GOfferTableRow]:
        with self._core.server.lock:
            rows = [row.copy() for row in self._rows]
        return iter(rows)

    def size(self) -> int:
        return len(self._rows)

    def get_row(self, index: int) -> O2GOfferTableRow:
        return self._rows[index].copy()

    def subscribe_update(self, update_type: O2GTableUpdateType, listener: Any) -> None:
        self._core.subscribe(self, update_type, listener)

    def unsubscribe_update(self, update_type: O2GTableUpdateType, listener: Any) -> None:
        self._core.unsubscribe(self, update_type, listener)

    def subscribe_status(self, listener: Any) -> None:
        pass

    def unsubscribe_status(self, listener: Any) -> None:
        pass


class O2GTableManager(object):
    def __init__(self, core: Any) -> None:
        self._core = core

    @property
    def status(self) -> O2GTableManagerStatus:
        status: O2GTableManagerStatus = self._core.table_status
        return status

    def get_table(self, table_type: O2GTableType) -> Optional[O2GTable]:
        if table_type != O2GTableType.OFFERS:
            return None
        table: O2GTable = self._core.offers_table
        return table


# -- the session and the transport ---------------------------------------------------------------

class O2GSession(object):
    def __init__(self, core: Any) -> None:
        self._core = core

    def use_table_manager(self, mode: O2GTableManagerMode, listener: Any) -> None:
        self._core.table_listener = listener if mode == O2GTableManagerMode.YES else None

    def subscribe_session_status(self, listener: Any) -> None:
        self._core.status_listeners.append(listener)

    def unsubscribe_session_status(self, listener: Any) -> None:
        if listener in self._core.status_listeners:
            self._core.status_listeners.remove(listener)

    def login(self, user_id: str, password: str, url: str, connection: str) -> bool:
        return bool(self._core.login(user_id, password, url, connection))

    def login_with_token(self, user_id: str, token: str, url: str, connection: str) -> bool:
        return bool(self._core.login(user_id, token, url, connection))

    def logout(self) -> None:
        self._core.logout()

    def set_trading_session(self, session_id: str, pin: str) -> None:
        pass

    def force_close(self) -> None:
        self._core.logout()

    @property
    def session_status(self) -> O2GSessionStatus:
        status: O2GSessionStatus = self._core.status
        return status

    @property
    def table_manager(self) -> Optional[O2GTableManager]:
        manager: Optional[O2GTableManager] = self._core.table_manager
        return manager


class O2GTransport(object):
    @staticmethod
    def create_session() -> O2GSession:
        from forexconnect.lib._server import server
        return server().create_session()

    @staticmethod
    def set_transport_modules_path(path: str) -> None:
        pass

    @staticmethod
    def set_number_of_reconnections(count: int) -> None:
        pass

    @staticmethod
    def finalize_wrapper() -> None:
        pass

    @staticmethod
    def finalize() -> None:
        pass


# -- price history -------------------------------------------------------------------------------

class O2GTimeFrame(object):
    def __init__(self, timeframe_id: str, unit: O2GTimeFrameUnit, size: int) -> None:
        self.id = timeframe_id
        self.unit = unit
        self.size = size


class TimeframeFactory(object):
    # The codes the wheel's factory accepted (FOREXCONNECT.md section 2).
    _UNITS = {"t": O2GTimeFrameUnit.TICK, "m": O2GTimeFrameUnit.MIN, "H": O2GTimeFrameUnit.HOUR,
              "D": O2GTimeFrameUnit.DAY, "W": O2GTimeFrameUnit.WEEK,
              "M": O2GTimeFrameUnit.MONTH}
    _ACCEPTED = ("t1", "m1", "m2", "m5", "m15", "m30", "H1", "H2", "H3", "H4", "H6", "H8", "D1",
                 "D2", "W1", "M1")

    def create(self, timeframe_id: str) -> Optional[O2GTimeFrame]:
        if timeframe_id not in self._ACCEPTED:
            raise Exception("PriceHistoryManager error: Invalid timeframe tf={} code: "
                            "BadArguments".format(timeframe_id))
        return O2GTimeFrame(timeframe_id, self._UNITS[timeframe_id[0]], int(timeframe_id[1:]))


class PriceHistoryCommunicator(object):
    def __init__(self, core: Any, path: str) -> None:
        self._core = core
        self.path = path
        self.timeframe_factory = TimeframeFactory()
        self._mode = O2GCandleOpenPriceMode.PREVIOUS_CLOSE

    def is_ready(self) -> bool:  # a method, as on the wheel (its wrapper's loop never waits)
        return bool(self._core.history_ready())

    @property
    def candle_open_price_mode(self) -> O2GCandleOpenPriceMode:
        return self._mode

    @candle_open_price_mode.setter
    def candle_open_price_mode(self, mode: O2GCandleOpenPriceMode) -> None:
        if not self._core.server.scenario.get("history", {}).get("open_price_mode_sticks"):
            self._mode = mode

    def get_history(self, instrument: str, timeframe: O2GTimeFrame,
                    date_from: Optional[datetime.datetime], date_to: Optional[datetime.datetime],
                    quotes_count: int) -> List[Any]:
        rows: List[Any] = self._core.history(instrument, timeframe, date_from, date_to,
                                             quotes_count, str(self._mode))
        return rows


class PriceHistoryCommunicatorFactory(object):
    @staticmethod
    def create_communicator(session: O2GSession, path: str) -> PriceHistoryCommunicator:
        if session is None:
            raise Exception("PriceHistoryManager error: Can't create PriceHistoryCommunicator "
                            "because pointer to IO2GSessionIsNull is NULL. code: OtherError")
        return PriceHistoryCommunicator(session._core, path)
