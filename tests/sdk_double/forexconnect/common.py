"""The wheel's ``Common`` helpers that a market-data connector uses."""

from __future__ import annotations

from typing import Any, Callable, Optional

from forexconnect.TableListener import TableListener

RowCallback = Optional[Callable[[Any, str, Any], None]]


class Common:
    @staticmethod
    def create_table_listener(table: Any = None, on_add_callback: RowCallback = None,
                              on_delete_callback: RowCallback = None,
                              on_change_callback: RowCallback = None,
                              on_status_change_callback: Optional[Callable[[Any, Any], None]]
                              = None) -> TableListener:
        return TableListener(table, on_change_callback, on_add_callback, on_delete_callback,
                             on_status_change_callback)

    @staticmethod
    def subscribe_table_updates(table: Any = None, on_add_callback: RowCallback = None,
                                on_delete_callback: RowCallback = None,
                                on_change_callback: RowCallback = None,
                                on_status_change_callback: Optional[Callable[[Any, Any], None]]
                                = None) -> TableListener:
        table_listener = Common.create_table_listener(table, on_add_callback, on_delete_callback,
                                                      on_change_callback,
                                                      on_status_change_callback)
        table_listener.subscribe()
        return table_listener

    @staticmethod
    def get_offer(fc: Any, instrument: str) -> Any:
        for offer in fc.get_table(fc.OFFERS):
            if offer.instrument == instrument and offer.subscription_status == "T":
                return offer
        return None
