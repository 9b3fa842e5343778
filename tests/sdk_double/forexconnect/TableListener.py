"""The wheel's TableListener: forwards a table's row events to the given callbacks, and
subscribes or unsubscribes exactly the update types it has callbacks for."""

from __future__ import annotations

from typing import Any, Callable, Optional

from forexconnect.lib import fxcorepy

RowCallback = Optional[Callable[[Any, str, Any], None]]


class TableListener(fxcorepy.AO2GTableListener):
    def __init__(self, table: Any = None, on_changed_callback: RowCallback = None,
                 on_added_callback: RowCallback = None, on_deleted_callback: RowCallback = None,
                 on_status_changed_callback: Optional[Callable[[Any, Any], None]] = None
                 ) -> None:
        fxcorepy.AO2GTableListener.__init__(self)
        self._on_changed_callback = on_changed_callback
        self._on_added_callback = on_added_callback
        self._on_deleted_callback = on_deleted_callback
        self._on_status_changed_callback = on_status_changed_callback
        self._table = table

    def on_added(self, row_id: str, row: Any) -> None:
        if self._on_added_callback:
            self._on_added_callback(self, row_id, row)

    def on_changed(self, row_id: str, row: Any) -> None:
        if self._on_changed_callback:
            self._on_changed_callback(self, row_id, row)

    def on_deleted(self, row_id: str, row: Any) -> None:
        if self._on_deleted_callback:
            self._on_deleted_callback(self, row_id, row)

    def on_status_changed(self, status: Any) -> None:
        if self._on_status_changed_callback:
            self._on_status_changed_callback(self, status)

    def _unsubscribe(self, type_u: Any) -> None:
        self._table.unsubscribe_update(type_u, self)

    def unsubscribe(self) -> None:
        if self._table is not None:
            if self._on_changed_callback is not None:
                self._unsubscribe(fxcorepy.O2GTableUpdateType.UPDATE)
            if self._on_deleted_callback is not None:
                self._unsubscribe(fxcorepy.O2GTableUpdateType.DELETE)
            if self._on_added_callback is not None:
                self._unsubscribe(fxcorepy.O2GTableUpdateType.INSERT)
            if self._on_status_changed_callback is not None:
                self._table.unsubscribe_status(self)

    def subscribe(self, table: Any = None) -> None:
        if self._table is None:
            if table is None:
                raise ValueError("Table is not set")
            self._table = table
        if self._on_changed_callback is not None:
            self._table.subscribe_update(fxcorepy.O2GTableUpdateType.UPDATE, self)
        if self._on_deleted_callback is not None:
            self._table.subscribe_update(fxcorepy.O2GTableUpdateType.DELETE, self)
        if self._on_added_callback is not None:
            self._table.subscribe_update(fxcorepy.O2GTableUpdateType.INSERT, self)
        if self._on_status_changed_callback is not None:
            self._table.subscribe_status(self)
