"""The wheel's SessionStatusListener: calls back on every status, and lets ``login`` wait for
CONNECTED or DISCONNECTED (30 s on the wheel; ``sdk_wait_seconds`` here)."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from forexconnect.lib import fxcorepy
from forexconnect.lib._server import sdk_wait_seconds

Status = fxcorepy.AO2GSessionStatus.O2GSessionStatus


class SessionStatusListener(fxcorepy.AO2GSessionStatus):
    def __init__(self, session: fxcorepy.O2GSession, session_id: str, pin: str,
                 on_status_changed_callback: Optional[Callable[[Any, Any], None]] = None
                 ) -> None:
        fxcorepy.AO2GSessionStatus.__init__(self)
        self.__session = session
        self.__session_id = session_id
        self.__pin = pin
        self.__semaphore = threading.Event()
        self.set_callback(on_status_changed_callback)
        self.__connected = False
        self.__disconnected = False
        self.__last_error: Optional[str] = None

    def wait_event(self) -> bool:
        return self.__semaphore.wait(sdk_wait_seconds())

    @property
    def connected(self) -> bool:
        return self.__connected

    @property
    def disconnected(self) -> bool:
        return self.__disconnected

    @property
    def last_error(self) -> Optional[str]:
        return self.__last_error

    def reset(self) -> None:
        self.__last_error = None
        self.__semaphore.clear()

    def set_callback(self, on_status_changed_callback: Optional[Callable[[Any, Any], None]]
                     ) -> None:
        self.__on_status_changed_callback = on_status_changed_callback

    def on_session_status_changed(self, status: Any) -> None:
        self.__connected = status == Status.CONNECTED
        self.__disconnected = status == Status.DISCONNECTED
        if self.__on_status_changed_callback is not None:
            self.__on_status_changed_callback(self.__session, status)
        if status == Status.CONNECTED or status == Status.DISCONNECTED:
            self.__semaphore.set()
        if status == Status.TRADING_SESSION_REQUESTED and self.__session_id != "":
            self.__session.set_trading_session(self.__session_id, self.__pin)

    def on_login_failed(self, err: str) -> None:
        self.__last_error = err
