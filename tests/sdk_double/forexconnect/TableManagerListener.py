"""The wheel's TableManagerListener: ``get_table`` waits on it (30 s on the wheel)."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from forexconnect.lib import fxcorepy
from forexconnect.lib._server import sdk_wait_seconds


class TableManagerListener(fxcorepy.AO2GTableManagerListener):
    def __init__(self, on_status_changed_callback: Optional[Callable[..., None]] = None
                 ) -> None:
        fxcorepy.AO2GTableManagerListener.__init__(self)
        self._on_status_changed_callback = on_status_changed_callback
        self._status = fxcorepy.O2GTableManagerStatus.TABLES_LOADING
        self._semaphore = threading.Event()

    @property
    def status(self) -> Any:
        return self._status

    def set_callback(self, on_status_changed_callback: Optional[Callable[..., None]]) -> None:
        self._on_status_changed_callback = on_status_changed_callback

    def on_status_changed(self, status: Any, table_manager: Any) -> None:
        self._status = status
        if self._on_status_changed_callback:
            self._on_status_changed_callback(self, table_manager, status)
        if status != fxcorepy.O2GTableManagerStatus.TABLES_LOADING:
            self._semaphore.set()

    def wait_event(self) -> bool:
        return self._semaphore.wait(sdk_wait_seconds())

    def reset(self) -> None:
        self._status = fxcorepy.O2GTableManagerStatus.TABLES_LOADING
        self._semaphore.clear()
