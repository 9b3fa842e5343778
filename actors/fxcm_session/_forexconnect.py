"""The ``forexconnect`` broker: the real FXCM SDK (Python 3.7 only; see FOREXCONNECT.md).

- Credentials come only from the environment: ``FXCM_USERNAME``, ``FXCM_PASSWORD``,
  ``FXCM_CONNECTION`` (default ``Demo``), ``FXCM_HOST_URL``. They are never logged; the SDK's
  error texts contain the user name, so every message leaving here is redacted.
- ``login`` waits up to 30 s inside the SDK and raises ``LoginFailed`` with the SDK's text
  (``str(e)``; its ``args`` are empty). ``logout`` may wait another 30 s.
- Offer updates arrive on SDK threads; the callback copies the fields and hands them to
  ``on_tick``. Nothing raised here may reach the SDK.
- History uses the first-tick open mode and naive UTC datetimes; the SDK's own "not ready"
  error becomes ``HistoryNotReady``.
- The SDK writes ``./History``: the host runs this process in its own working directory.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any, Dict, List, Optional

from actors.fxcm_session._broker import Broker
from protocol.errors import BrokerError, ConfigError, HistoryNotReady, LoginFailed
from protocol.market import FXCM_TF, fxcm_instrument

EPOCH = datetime.datetime(1970, 1, 1)
OLE_EPOCH = datetime.datetime(1899, 12, 30)
DEFAULT_URL = "http://www.fxcorporate.com/Hosts.jsp"


def to_ms(value: Any) -> Optional[int]:
    """An offer's time as ms UTC: datetime (naive UTC), pandas Timestamp, or an OLE date."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return int((value - EPOCH).total_seconds() * 1000)
    if hasattr(value, "value") and hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        return int(value.value // 1000000)
    if isinstance(value, (int, float)):
        if 1e4 < value < 1e6:  # days since 1899-12-30 (OLE automation date)
            return int(((OLE_EPOCH + datetime.timedelta(days=value)) - EPOCH).total_seconds()
                       * 1000)
        return int(value)
    return None


def _naive_utc(ms: Optional[int]) -> Optional[datetime.datetime]:
    return None if ms is None else EPOCH + datetime.timedelta(milliseconds=ms)


class ForexConnectBroker(Broker):
    kind = "forexconnect"

    def __init__(self, settings: Dict[str, Any], trading_day_start: Any) -> None:
        super(ForexConnectBroker, self).__init__()
        self.user = os.environ.get("FXCM_USERNAME", "")
        self._password = os.environ.get("FXCM_PASSWORD", "")
        self.connection = os.environ.get("FXCM_CONNECTION") or settings.get("connection", "Demo")
        self.url = os.environ.get("FXCM_HOST_URL") or settings.get("url") or DEFAULT_URL
        if not self.user or not self._password:
            raise ConfigError("broker forexconnect: FXCM_USERNAME and FXCM_PASSWORD must be set "
                              "in the environment")
        # Import before any thread of ours starts: the package chdirs into its lib/ on import.
        import forexconnect  # noqa: F401
        self._fx: Any = None
        self._listener: Any = None
        self._logged_in = False
        self.callback_errors = 0
        self.status_changes: List[str] = []

    def redact(self, text: str) -> str:
        for secret in (self.user, self._password):
            if secret:
                text = text.replace(secret, "***")
        return text

    def clock_ms(self) -> int:
        return int(time.time() * 1000)

    def login(self) -> None:
        from forexconnect import ForexConnect
        self._fx = ForexConnect()
        try:
            self._fx.login(self.user, self._password, self.url, self.connection,
                           session_status_callback=self._on_session_status)
        except Exception as exc:  # LoginFailedError and anything the SDK raises
            text = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
            raise LoginFailed(self.redact(str(text))) from None
        self._logged_in = True

    def _on_session_status(self, session: Any, status: Any) -> None:
        try:
            name = str(status)
            self.status_changes.append(name)
            del self.status_changes[:-20]
            if self._logged_in and name in ("SESSION_LOST", "DISCONNECTED") \
                    and self.on_status is not None:
                self._logged_in = False
                self.on_status(False, "FXCM session status " + name)
        except Exception:  # an exception here breaks the SDK's own waiting
            self.callback_errors += 1

    def logout(self) -> None:
        self.unsubscribe()
        fx = self._fx
        self._logged_in = False
        if fx is not None:
            fx.logout()

    def subscribe(self, symbols: List[str]) -> None:
        from forexconnect import Common, ForexConnect
        if self._fx is None:
            raise BrokerError("not logged in")
        self.unsubscribe()
        offers = self._fx.get_table(ForexConnect.OFFERS)
        self._listener = Common.subscribe_table_updates(
            offers, on_change_callback=self._on_offer, on_add_callback=self._on_offer)

    def _on_offer(self, listener: Any, row_id: Any, row: Any) -> None:
        try:
            callback = self.on_tick
            if callback is not None:
                callback(row.instrument, to_ms(row.time), row.bid, row.ask)
        except Exception:  # never raise into the SDK
            self.callback_errors += 1

    def unsubscribe(self) -> None:
        listener = self._listener
        self._listener = None
        if listener is not None:
            try:
                listener.unsubscribe()
            except Exception:  # the session may already be gone
                self.callback_errors += 1

    def get_history(self, symbol: str, tf: str, from_ms: Optional[int], to_ms: Optional[int],
                    count: int, basis: str) -> List[List[float]]:
        from forexconnect import fxcorepy
        if self._fx is None:
            raise BrokerError("not logged in")
        try:
            table = self._fx.get_history(
                fxcm_instrument(symbol), FXCM_TF[tf], _naive_utc(from_ms), _naive_utc(to_ms),
                count if count > 0 else -1,
                candle_open_price_mode=fxcorepy.O2GCandleOpenPriceMode.FIRST_TICK)
        except Exception as exc:  # the SDK raises plain Exception with a native message
            text = self.redact(str(exc))
            if "not ready" in text:
                raise HistoryNotReady(text) from None
            raise BrokerError(text) from None
        times = table["Date"].astype("int64") // 1000000
        columns = {}
        for part in ("Open", "High", "Low", "Close"):
            bid = table["Bid" + part]
            ask = table["Ask" + part]
            columns[part] = (bid + ask) / 2.0 if basis == "mid" else (bid if basis == "bid"
                                                                      else ask)
        volume = table["Volume"]
        return [[int(times[i]), float(columns["Open"][i]), float(columns["High"][i]),
                 float(columns["Low"][i]), float(columns["Close"][i]), float(volume[i])]
                for i in range(len(table))]

    def status(self) -> Dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "connection": self.connection,
                "logged_in": self._logged_in, "callback_errors": self.callback_errors,
                "last_statuses": list(self.status_changes[-5:])}

    def close(self) -> None:
        self.unsubscribe()
