"""The wheel's ``ForexConnect`` class, as its Python layer behaves (login, logout, tables,
history), over the double's native objects. Its waits are the scenario's ``sdk_wait_seconds``
(30 s on the wheel), and its quirks are kept: ``get_history``'s readiness loop never waits
(``is_ready`` is a method), the history communicator lives in ``./History`` of the working
directory and is bound to the session it was first made for."""

from __future__ import annotations

import datetime
from typing import Any, Callable, Optional, Tuple

import numpy as np  # type: ignore[import-not-found, unused-ignore]

from forexconnect.errors import LoginFailedError, TableManagerError, TimeFrameError
from forexconnect.lib import fxcorepy
from forexconnect.SessionStatusListener import SessionStatusListener
from forexconnect.TableManagerListener import TableManagerListener

BAR_DTYPE = np.dtype([("Date", "M8[ns]"), ("BidOpen", "f8"), ("BidHigh", "f8"),
                      ("BidLow", "f8"), ("BidClose", "f8"), ("AskOpen", "f8"),
                      ("AskHigh", "f8"), ("AskLow", "f8"), ("AskClose", "f8"),
                      ("Volume", "i4")])
TICK_DTYPE = np.dtype([("Date", "M8[ns]"), ("Bid", "f8"), ("Ask", "f8")])


class ForexConnect:
    _SESSION = None
    _STATUS_LISTENER = None
    _TABLE_MANAGER_LISTENER = None
    _START_URL = "http://fxcorporate.com/Hosts.jsp"
    _LISTENER = None

    OFFERS = fxcorepy.O2GTableType.OFFERS
    ACCOUNTS = fxcorepy.O2GTableType.ACCOUNTS
    TRADES = fxcorepy.O2GTableType.TRADES
    CLOSED_TRADES = fxcorepy.O2GTableType.CLOSED_TRADES
    ORDERS = fxcorepy.O2GTableType.ORDERS
    MESSAGES = fxcorepy.O2GTableType.MESSAGES
    SUMMARY = fxcorepy.O2GTableType.SUMMARY

    def __init__(self) -> None:
        self._session: Any = ForexConnect._SESSION
        self._status_listener: Any = ForexConnect._STATUS_LISTENER
        self._table_manager_listener: Any = ForexConnect._TABLE_MANAGER_LISTENER
        self._start_url = ForexConnect._START_URL
        self._session_id: Optional[str] = None
        self._pin: Optional[str] = None
        self._table_manager: Any = None
        self._com: Any = None

    @property
    def session(self) -> Any:
        return self._session

    @property
    def table_manager(self) -> Any:
        return self._table_manager

    def __enter__(self) -> ForexConnect:
        return self

    def __exit__(self, tp: Any, value: Any, traceback: Any) -> None:
        self.logout()

    def _login(self, login_function: str, login_params: Any, session_id: Optional[str] = None,
               pin: Optional[str] = None,
               session_status_callback: Optional[Callable[[Any, Any], None]] = None,
               use_table_manager: bool = True,
               table_manager_callback: Optional[Callable[..., None]] = None) -> Any:
        self._session_id = session_id
        self._pin = pin
        self._session = fxcorepy.O2GTransport.create_session()
        if use_table_manager:
            self._table_manager_listener = TableManagerListener(table_manager_callback)
            self._session.use_table_manager(fxcorepy.O2GTableManagerMode.YES,
                                            self._table_manager_listener)
        self._status_listener = SessionStatusListener(self._session, session_id or "", pin or "",
                                                      session_status_callback)
        self._session.subscribe_session_status(self._status_listener)
        self._status_listener.reset()
        if not getattr(self._session, login_function)(*login_params):
            raise LoginFailedError("The login method returned an exception. This may be caused "
                                   "by the incorrect session status.")
        timeout = self._status_listener.wait_event()
        status_connect = self._status_listener.connected
        self._table_manager = self._session.table_manager
        if not timeout:
            raise LoginFailedError("Wait timeout exceeded")
        if not status_connect:
            if self._status_listener.last_error:
                raise LoginFailedError(self._status_listener.last_error)
            raise LoginFailedError("Not connected")
        if use_table_manager:
            self._table_manager_listener.wait_event()
            if self._table_manager.status != fxcorepy.O2GTableManagerStatus.TABLES_LOADED:
                raise LoginFailedError("Table manager not ready")
        return self._session

    def login(self, user_id: str, password: str, url: str = _START_URL,
              connection: str = "Demo", session_id: Optional[str] = None,
              pin: Optional[str] = None,
              session_status_callback: Optional[Callable[[Any, Any], None]] = None,
              use_table_manager: bool = True,
              table_manager_callback: Optional[Callable[..., None]] = None) -> Any:
        return self._login("login", (user_id, password, url, connection), session_id, pin,
                           session_status_callback, use_table_manager, table_manager_callback)

    def login_with_token(self, user_id: str, token: str, url: str = _START_URL,
                         connection: str = "Demo", session_id: Optional[str] = None,
                         pin: Optional[str] = None,
                         session_status_callback: Optional[Callable[[Any, Any], None]] = None,
                         use_table_manager: bool = True,
                         table_manager_callback: Optional[Callable[..., None]] = None) -> Any:
        return self._login("login_with_token", (user_id, token, url, connection), session_id,
                           pin, session_status_callback, use_table_manager,
                           table_manager_callback)

    def logout(self) -> None:
        if self._session is None or \
                self._session.session_status == fxcorepy.O2GSessionStatus.DISCONNECTED:
            return
        self._status_listener.reset()
        self._session.logout()
        self._status_listener.wait_event()
        self._session.unsubscribe_session_status(self._status_listener)
        self._session = None
        self._status_listener = None
        self._table_manager = None

    def set_session_status_listener(self, listener: Callable[[Any, Any], None]) -> None:
        self._status_listener.set_callback(listener)

    def get_table(self, table_type: Any) -> Any:
        if self._table_manager_listener is None:
            raise TableManagerError('Need login with flag "useTableManager"')
        if not self._table_manager_listener.wait_event():
            raise TableManagerError("Wait timeout exceeded")
        if self._table_manager_listener.status == \
                fxcorepy.O2GTableManagerStatus.TABLES_LOAD_FAILED:
            raise TableManagerError("Cannot refresh all tables of table manager")
        return self._session.table_manager.get_table(table_type)

    def get_history(self, instrument: str, timeframe: str,
                    date_from: Optional[datetime.datetime] = None,
                    date_to: Optional[datetime.datetime] = None, quotes_count: int = -1,
                    candle_open_price_mode: Any = fxcorepy.O2GCandleOpenPriceMode.PREVIOUS_CLOSE
                    ) -> Any:
        if self._com is None:
            self._com = fxcorepy.PriceHistoryCommunicatorFactory.create_communicator(
                self._session, "./History")
        frame = self._com.timeframe_factory.create(timeframe)
        if not frame:
            raise TimeFrameError("Timeframe is incorrect")
        while not self._com.is_ready:  # the wheel's loop: a bound method is true, never waits
            pass
        self._com.candle_open_price_mode = candle_open_price_mode
        reader = self._com.get_history(instrument, frame, date_from, date_to, quotes_count)
        if frame.unit == fxcorepy.O2GTimeFrameUnit.TICK:
            ticks = np.zeros(len(reader), TICK_DTYPE)
            for index, row in enumerate(reader):
                ticks[index]["Date"] = np.datetime64(row.date)
                ticks[index]["Bid"] = row.bid
                ticks[index]["Ask"] = row.ask
            return ticks
        result = np.zeros(len(reader), BAR_DTYPE)
        for index, row in enumerate(reader):
            result[index]["Date"] = np.datetime64(row.date)
            result[index]["BidOpen"] = row.bid_open
            result[index]["BidHigh"] = row.bid_high
            result[index]["BidLow"] = row.bid_low
            result[index]["BidClose"] = row.bid_close
            result[index]["AskOpen"] = row.ask_open
            result[index]["AskHigh"] = row.ask_high
            result[index]["AskLow"] = row.ask_low
            result[index]["AskClose"] = row.ask_close
            result[index]["Volume"] = row.volume
        return result

    @staticmethod
    def parse_timeframe(timeframe: str) -> Tuple[Any, int]:
        if len(timeframe) < 2:
            raise TimeFrameError("Timeframe is incorrect")
        units = {"t": fxcorepy.O2GTimeFrameUnit.TICK, "m": fxcorepy.O2GTimeFrameUnit.MIN,
                 "H": fxcorepy.O2GTimeFrameUnit.HOUR, "D": fxcorepy.O2GTimeFrameUnit.DAY,
                 "W": fxcorepy.O2GTimeFrameUnit.WEEK, "M": fxcorepy.O2GTimeFrameUnit.MONTH}
        try:
            unit = units[timeframe[0]]
        except KeyError:
            raise TimeFrameError("Unit is incorrect") from None
        try:
            size = int(timeframe[1:])
        except ValueError:
            raise TimeFrameError("Size must be a number") from None
        return unit, size
