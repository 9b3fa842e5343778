"""Print, as JSON, the surface of whichever ``forexconnect`` this interpreter imports: what our
broker relies on. Run on Python 3.7 once with the real wheel and once with the double
(``tests/sdk_double``) first on ``PYTHONPATH``; tests/test_forexconnect_double.py compares the
two outputs. (It lives outside ``tests/sdk_double`` so that running it as a script does not put
the double on ``sys.path`` by itself.)

The surface: the signatures (parameter names, kinds, defaults) of the methods our broker and the
double's scenarios go through; the enums (names, values, order, ``str()``); the error classes'
shape; the offer row fields we read; which update types ``Common.subscribe_table_updates``
subscribes for an ``on_change_callback``; the arguments a session status callback receives;
and what ``ForexConnect.get_history`` builds from a history reader (its numpy dtype, dates as
int64 ns) and leaves in its communicator's ``candle_open_price_mode``, observed by running the
real method over a stand-in communicator (no server needed).
"""

from __future__ import annotations

import datetime
import inspect
import json
import sys
from typing import Any, Dict, List

import forexconnect
from forexconnect import (
    Common,
    ForexConnect,
    SessionStatusListener,
    TableListener,
    errors,
    fxcorepy,
)

ROW_FIELDS = ("instrument", "time", "bid", "ask", "subscription_status", "digits", "point_size",
              "offer_id")


def parameters(function: Any) -> List[List[Any]]:
    result = []
    for parameter in inspect.signature(function).parameters.values():
        default = None if parameter.default is inspect.Parameter.empty else str(
            parameter.default)
        result.append([parameter.name, str(parameter.kind), default])
    return result


def enum(cls: Any) -> List[List[Any]]:
    return [[str(member), int(member)] for _, member in sorted(cls.values.items())]


def is_double() -> bool:
    return "sdk_double" in (getattr(forexconnect, "__file__", "") or "")


def row_fields() -> List[str]:
    row_class = fxcorepy.O2GOfferTableRow
    if is_double():  # plain attributes, set by the constructor
        names = set(inspect.signature(row_class.__init__).parameters)
    else:  # the wheel's rows read fields through __getattr__; each has an is_<f>_valid
        names = {field for field in ROW_FIELDS if hasattr(row_class, "is_{}_valid".format(field))}
    return sorted(field for field in ROW_FIELDS if field in names)


class FakeTable(object):
    def __init__(self) -> None:
        self.updates: List[str] = []

    def subscribe_update(self, update_type: Any, listener: Any) -> None:
        self.updates.append(str(update_type))

    def unsubscribe_update(self, update_type: Any, listener: Any) -> None:
        self.updates.append("-" + str(update_type))

    def subscribe_status(self, listener: Any) -> None:
        self.updates.append("status")

    def unsubscribe_status(self, listener: Any) -> None:
        self.updates.append("-status")


class FakeFrame(object):
    def __init__(self, unit: Any) -> None:
        self.unit = unit


class FakeFactory(object):
    def create(self, timeframe: str) -> FakeFrame:
        unit = fxcorepy.O2GTimeFrameUnit.TICK if timeframe == "t1" else \
            fxcorepy.O2GTimeFrameUnit.MIN
        return FakeFrame(unit)


class FakeRow(object):
    date = datetime.datetime(2026, 1, 2, 3, 4)
    bid_open, bid_high, bid_low, bid_close = 1.1, 1.3, 1.0, 1.2
    ask_open, ask_high, ask_low, ask_close = 1.2, 1.4, 1.1, 1.3
    volume = 7
    bid, ask = 1.1, 1.2


class FakeCommunicator(object):
    """Stands in for the native history communicator under the real ``get_history``."""

    def __init__(self) -> None:
        self.timeframe_factory = FakeFactory()
        self.candle_open_price_mode: Any = None
        self.calls: List[int] = []

    def is_ready(self) -> bool:
        return True

    def get_history(self, *args: Any) -> List[FakeRow]:
        self.calls.append(len(args))
        return [FakeRow(), FakeRow()]


def history() -> Dict[str, Any]:
    fx = ForexConnect()
    fx._com = FakeCommunicator()
    bars = fx.get_history("EUR/USD", "m1", None, None, 2,
                          candle_open_price_mode=fxcorepy.O2GCandleOpenPriceMode.FIRST_TICK)
    mode = str(fx._com.candle_open_price_mode)
    ticks = fx.get_history("EUR/USD", "t1", None, None, 2)
    return {"bar_dtype": [list(item) for item in bars.dtype.descr],
            "tick_dtype": [list(item) for item in ticks.dtype.descr],
            "date_ns": int(bars["Date"].astype("int64")[0]),
            "bid_close": float(bars["BidClose"][1]), "volume": int(bars["Volume"][0]),
            "mode_after_a_first_tick_call": mode,
            "mode_after_a_default_call": str(fx._com.candle_open_price_mode),
            "reader_arguments": fx._com.calls}


def status_callback() -> List[Any]:
    received: List[Any] = []
    session = object()
    listener = SessionStatusListener(session, "", "", lambda *args: received.append(args))
    listener.on_session_status_changed(fxcorepy.AO2GSessionStatus.O2GSessionStatus.CONNECTED)
    (got_session, status), = received
    return [got_session is session, str(status), listener.connected]


def table_updates() -> List[str]:
    table = FakeTable()
    listener = Common.subscribe_table_updates(table, on_change_callback=lambda *args: None)
    listener.unsubscribe()
    assert isinstance(listener, TableListener)
    return table.updates


def errors_shape() -> Dict[str, Any]:
    result = {}
    for name in ("LoginFailedError", "TableManagerError", "TimeFrameError",
                 "RequestFailedError"):
        error = getattr(errors, name)("the text")
        result[name] = [list(error.args), str(error), error.msg, repr(error)]
    return result


def main() -> None:
    surface = {
        "methods": {name: parameters(function) for name, function in (
            ("ForexConnect.__init__", ForexConnect.__init__),
            ("ForexConnect.login", ForexConnect.login),
            ("ForexConnect.logout", ForexConnect.logout),
            ("ForexConnect.get_table", ForexConnect.get_table),
            ("ForexConnect.get_history", ForexConnect.get_history),
            ("Common.subscribe_table_updates", Common.subscribe_table_updates),
            ("TableListener.__init__", TableListener.__init__),
            ("TableListener.subscribe", TableListener.subscribe),
            ("TableListener.unsubscribe", TableListener.unsubscribe),
            ("SessionStatusListener.__init__", SessionStatusListener.__init__),
        )},
        "properties": [name for name in ("session", "table_manager")
                       if isinstance(inspect.getattr_static(ForexConnect, name), property)],
        "enums": {name: enum(cls) for name, cls in (
            ("O2GSessionStatus", fxcorepy.AO2GSessionStatus.O2GSessionStatus),
            ("O2GCandleOpenPriceMode", fxcorepy.O2GCandleOpenPriceMode),
            ("O2GTableType", fxcorepy.O2GTableType),
            ("O2GTableUpdateType", fxcorepy.O2GTableUpdateType),
            ("O2GTableManagerStatus", fxcorepy.O2GTableManagerStatus),
            ("O2GTableStatus", fxcorepy.O2GTableStatus),
            ("O2GTimeFrameUnit", fxcorepy.O2GTimeFrameUnit),
        )},
        "ForexConnect.OFFERS": [str(ForexConnect.OFFERS), int(ForexConnect.OFFERS)],
        "start_url": ForexConnect._START_URL,
        "errors": errors_shape(),
        "offer_row_fields": row_fields(),
        "offer_row_has_table_type": hasattr(fxcorepy.O2GOfferTableRow, "table_type"),
        "subscribe_table_updates_on_change": table_updates(),
        "status_callback": status_callback(),
        "history": history(),
        "python": list(sys.version_info[:2]),
    }
    print(json.dumps(surface, sort_keys=True))


if __name__ == "__main__":
    main()
