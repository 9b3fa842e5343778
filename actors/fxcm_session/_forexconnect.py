"""The ``forexconnect`` broker: the real FXCM SDK (Python 3.7 only; see FOREXCONNECT.md).

- Credentials come only from the environment: ``FXCM_USERNAME``, ``FXCM_PASSWORD``,
  ``FXCM_CONNECTION`` (default ``Demo``), ``FXCM_HOST_URL``. They are never logged; the SDK's
  error texts contain the user name, so every message leaving here is redacted.
- No SDK (``import forexconnect`` fails): every login fails with that reason, so fxcm_session
  reports DISCONNECTED and backs off instead of crash-looping.
- One session at a time. ``login`` waits up to 30 s inside the SDK; a login that timed out
  leaves its session CONNECTING, and the SDK can neither log it out (30 s, socket kept) nor
  close it. So the next ``login`` keeps waiting on that same session (``login_wait_seconds``)
  instead of opening a second one; a new ``ForexConnect`` is made only once the previous
  session is DISCONNECTED or logged out. Status callbacks carry the generation of the session
  they were registered for: those of an earlier session are ignored (counted).
- The SDK reconnects by itself: RECONNECTING pauses the ticks (reported), and the CONNECTED
  after it is reported at once, so that fxcm_session subscribes the offers again (as Gehtsoft's
  samples do) instead of waiting for the stale-tick detector. SESSION_LOST or DISCONNECTED of a
  logged-in session: fxcm_session logs in again.
- Offer updates arrive on SDK threads; the callback copies the fields and hands them to
  ``on_tick``; it also feeds the server-clock estimate (``ClockSkew``): the pipeline clock is
  our wall clock plus that offset, so bars close on FXCM's time. Nothing raised here may
  reach the SDK.
- The OFFERS table is the truth about instruments once logged in: each symbol's SDK name
  (``USOil``, ``EUR/USD``), precision and subscription status (``T`` = subscribed).
- History uses the first-tick open mode (read back after the first call of each session: a
  different mode is warned about) and naive UTC datetimes; the SDK's own "not ready" error
  becomes ``HistoryNotReady``.
- The SDK writes ``./History``: the host runs this process in its own working directory.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from actors.fxcm_session._broker import LOST, RECONNECTED, RECONNECTING, Broker, redact
from actors.fxcm_session._clock import ClockSkew
from protocol.bars import basis_price
from protocol.errors import BrokerError, ConfigError, HistoryNotReady, LoginFailed, ProtocolError
from protocol.market import (
    FXCM_TF,
    Instrument,
    default_digits,
    fxcm_instrument,
    normalize_symbol,
)

log = logging.getLogger("fxcm.session")

EPOCH = datetime.datetime(1970, 1, 1)
OLE_EPOCH = datetime.datetime(1899, 12, 30)
DEFAULT_URL = "http://www.fxcorporate.com/Hosts.jsp"

# The SDK's session statuses (str() of fxcorepy.AO2GSessionStatus.O2GSessionStatus) by role.
CONNECTING_STATES = ("CONNECTING", "TRADING_SESSION_REQUESTED")
RECONNECTING_STATES = ("RECONNECTING", "PRICE_SESSION_RECONNECTING")
CONNECTED = "CONNECTED"
DISCONNECTED = "DISCONNECTED"
GONE_STATES = ("SESSION_LOST", DISCONNECTED)
SUBSCRIBED = "T"  # an offer's subscription_status: T subscribed, V view only, D disabled
# No tick this long after a login: the pipeline clock runs on the wall clock (plus the last
# offset known) rather than not at all (a quiet or closed market).
CLOCK_SETTLE_SECONDS = 10.0
FIRST_TICK = "FIRST_TICK"


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


class Offer(object):
    """What the OFFERS table says of one instrument."""

    __slots__ = ("broker_name", "subscription_status", "digits", "point_size")

    def __init__(self, broker_name: str, subscription_status: str, digits: Optional[int],
                 point_size: Optional[float]) -> None:
        self.broker_name = broker_name
        self.subscription_status = subscription_status
        self.digits = digits
        self.point_size = point_size

    def as_dict(self) -> Dict[str, Any]:
        return {"broker_name": self.broker_name,
                "subscription_status": self.subscription_status, "digits": self.digits,
                "point_size": self.point_size}


def read_offer(row: Any) -> Optional[Offer]:
    """An OFFERS row as an Offer (None if it has no usable instrument name)."""
    name = str(row.instrument or "")
    if not name:
        return None
    digits: Optional[int]
    point_size: Optional[float]
    try:
        digits = int(row.digits)
    except (TypeError, ValueError):
        digits = None
    try:
        point_size = float(row.point_size)
    except (TypeError, ValueError):
        point_size = None
    return Offer(name, str(row.subscription_status or ""), digits, point_size)


class ForexConnectBroker(Broker):
    kind = "forexconnect"

    def __init__(self, settings: Dict[str, Any], trading_day_start: Any,
                 login_wait_seconds: float = 30.0) -> None:
        super(ForexConnectBroker, self).__init__()
        self.user = os.environ.get("FXCM_USERNAME", "")
        self._password = os.environ.get("FXCM_PASSWORD", "")
        self.connection = os.environ.get("FXCM_CONNECTION") or settings.get("connection", "Demo")
        self.url = os.environ.get("FXCM_HOST_URL") or settings.get("url") or DEFAULT_URL
        if not self.user or not self._password:
            raise ConfigError("broker forexconnect: FXCM_USERNAME and FXCM_PASSWORD must be set "
                              "in the environment")
        self.login_wait_seconds = login_wait_seconds
        self.unavailable = ""
        self.sdk = ""
        # Import before any thread of ours starts: the package chdirs into its lib/ on import.
        try:
            import forexconnect
            self.sdk = str(getattr(forexconnect, "__file__", "") or "")
        except Exception as exc:  # ImportError, or the bundled libraries failing to load
            self.unavailable = (
                "the forexconnect SDK does not import ({}: {}); install forexconnect==1.6.43 "
                "with numpy and pandas into the interpreter of broker.python (make venv37)"
                .format(type(exc).__name__, exc))
            log.error("%s", self.unavailable)
        self._fx: Any = None
        self._generation = 0  # of the current session; callbacks of earlier ones are ignored
        self._session_status: Optional[str] = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._listener: Any = None
        self._logged_in = False
        self._unsettled_since = time.monotonic()
        self._skew = ClockSkew()
        self._skew_lock = threading.Lock()
        self._names: Dict[str, str] = {}  # our symbol -> the SDK's name, from OFFERS
        self.offers: Dict[str, Optional[Offer]] = {}  # per configured symbol (None: not offered)
        self.open_price_mode: Optional[str] = None
        self._mode_checked: Any = None  # the ForexConnect whose open price mode was read back
        self.callback_errors = 0
        self.ignored_callbacks = 0
        self.sessions_created = 0
        self.login_attempts = 0
        self.waits_on_connecting = 0
        self.sdk_reconnects = 0
        self.subscriptions = 0
        self.status_changes: List[str] = []

    def redact(self, text: str) -> str:
        return redact(text, [self.user, self._password])

    # -- the clock -------------------------------------------------------------------------

    def clock_ms(self) -> int:
        offset = self._skew.offset_ms()
        now = int(time.time() * 1000)
        return now if offset is None else now + offset

    def clock_settled(self) -> bool:
        return (self._skew.offset_ms() is not None
                or time.monotonic() - self._unsettled_since >= CLOCK_SETTLE_SECONDS)

    def clock_skew_seconds(self) -> Optional[float]:
        offset = self._skew.offset_ms()
        return None if offset is None else offset / 1000.0

    # -- session ---------------------------------------------------------------------------

    def interrupt(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def _wait_while(self, states: Any, timeout: float) -> Optional[str]:
        """Wait up to ``timeout`` for the current session to leave ``states``; its status."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._session_status in states and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 1.0))
        return self._session_status

    def login(self) -> None:
        if self.unavailable:
            raise LoginFailed(self.unavailable)
        self.login_attempts += 1
        fx = self._fx
        if fx is not None and self._session_status in CONNECTING_STATES:
            # An earlier login timed out with its session still connecting: wait on it.
            self.waits_on_connecting += 1
            state = self._wait_while(CONNECTING_STATES, self.login_wait_seconds)
            if state in CONNECTING_STATES:
                raise LoginFailed("Wait timeout exceeded: the FXCM session is still {} (waiting "
                                  "on it; no second session is opened)".format(state))
            if state == CONNECTED:
                self._logged_in_now()
                return
            log.info("the FXCM session that was connecting ended %s; logging in anew", state)
        elif fx is not None and self._session_status not in (None, DISCONNECTED):
            self._close(fx)
        from forexconnect import ForexConnect

        self._generation += 1
        callback: Callable[[Any, Any], None] = functools.partial(
            self._on_session_status, self._generation)
        self._session_status = None
        fx = ForexConnect()
        self._fx = fx
        self.sessions_created += 1
        try:
            fx.login(self.user, self._password, self.url, self.connection,
                     session_status_callback=callback)
        except Exception as exc:  # LoginFailedError and anything the SDK raises
            text = str(getattr(exc, "msg", None) or str(exc) or type(exc).__name__)
            if self._session_status in CONNECTING_STATES:
                text += " (the session is still {}: the next attempt waits on it)".format(
                    self._session_status)
            raise LoginFailed(self.redact(text)) from None
        self._logged_in_now()

    def _logged_in_now(self) -> None:
        self._logged_in = True
        if self._skew.offset_ms() is None:
            self._unsettled_since = time.monotonic()

    def _on_session_status(self, generation: int, session: Any, status: Any) -> None:
        """From the SDK (the calling thread for CONNECTING, its own threads otherwise)."""
        try:
            name = str(status)
            if generation != self._generation:
                self.ignored_callbacks += 1  # an earlier session's: it must not touch this one
                return
            previous = self._session_status
            self._session_status = name
            self.status_changes.append(name)
            del self.status_changes[:-20]
            with self._changed:
                self._changed.notify_all()
            callback = self.on_status
            if not self._logged_in or callback is None:
                return  # a login in progress reads the status itself
            if name in RECONNECTING_STATES:
                callback(RECONNECTING, "FXCM session {} (the SDK reconnects by itself)".format(
                    name))
            elif name == CONNECTED and previous in RECONNECTING_STATES:
                self.sdk_reconnects += 1
                callback(RECONNECTED, "FXCM session CONNECTED again after {}".format(previous))
            elif name in GONE_STATES:
                self._logged_in = False
                callback(LOST, "FXCM session status " + name)
        except Exception:  # an exception here breaks the SDK's own waiting
            self.callback_errors += 1

    def _close(self, fx: Any) -> None:
        """Log out a session that is not connecting (the SDK bounds this at 30 s)."""
        try:
            fx.logout()
        finally:
            if self._fx is fx:
                self._fx = None

    def logout(self) -> None:
        self.unsubscribe()
        self._logged_in = False
        fx = self._fx
        if fx is None:
            return
        if self._session_status in CONNECTING_STATES:
            # The SDK's logout of a connecting session blocks 30 s and keeps its socket: the
            # next login waits on this session instead, and the process's exit closes it.
            log.info("leaving the FXCM session %s: the next login waits on it",
                     self._session_status)
            return
        self._close(fx)

    # -- instruments and ticks -------------------------------------------------------------

    def broker_name(self, symbol: str) -> str:
        return self._names.get(symbol) or fxcm_instrument(symbol)

    def instruments(self, symbols: List[str], configured: Dict[str, Any]) -> Dict[str, Instrument]:
        """From the OFFERS table: each symbol's SDK name, digits and point size, and whether
        the account subscribed it; a symbol not offered at all is not subscribed either."""
        from forexconnect import ForexConnect

        fx = self._fx
        table: Dict[str, Offer] = {}
        try:
            for row in fx.get_table(ForexConnect.OFFERS):
                offer = read_offer(row)
                if offer is None:
                    continue
                try:
                    table[normalize_symbol(offer.broker_name)] = offer
                except ProtocolError:
                    continue
        except Exception as exc:  # tables not loaded: say so, keep what settings know
            log.warning("the FXCM OFFERS table is unreadable (%s): instrument precision from "
                        "settings, subscriptions unknown", self.redact(str(exc)))
            return super(ForexConnectBroker, self).instruments(symbols, configured)
        self._names = {symbol: offer.broker_name for symbol, offer in table.items()}
        result: Dict[str, Instrument] = {}
        for symbol in symbols:
            offer = table.get(symbol)
            self.offers[symbol] = offer
            entry = configured.get(symbol) or {}
            digits = offer.digits if offer is not None and offer.digits is not None \
                else entry.get("digits")
            if not isinstance(digits, int) or isinstance(digits, bool):
                digits = default_digits(symbol)
            point = offer.point_size if offer is not None and offer.point_size else \
                10.0 ** -digits
            subscribed = offer is not None and offer.subscription_status == SUBSCRIBED
            name = offer.broker_name if offer is not None else fxcm_instrument(symbol)
            result[symbol] = Instrument(symbol, digits, point, name, subscribed)
            if offer is None:
                log.error("%s: FXCM offers no instrument %r to this account: no ticks and no "
                          "history for it. Check the symbol in settings (symbols), or ask "
                          "FXCM to enable the instrument for the account.", symbol, name)
            elif not subscribed:
                log.error("%s: the instrument %r is not subscribed in this FXCM account "
                          "(subscription_status %r): no ticks and no history for it. Subscribe "
                          "it in the FXCM account (Trading Station: the instrument's "
                          "subscription settings), then restart fxcm_session: it is checked at "
                          "every login.", symbol, name, offer.subscription_status)
        return result

    def subscribe(self, symbols: List[str]) -> None:
        from forexconnect import Common, ForexConnect
        fx = self._fx
        if fx is None:
            raise BrokerError("not logged in")
        self.unsubscribe()
        offers = fx.get_table(ForexConnect.OFFERS)
        # Ticks are the table's updates (UPDATE), as in Gehtsoft's samples.
        self._listener = Common.subscribe_table_updates(offers,
                                                        on_change_callback=self._on_offer)
        self.subscriptions += 1

    def _on_offer(self, listener: Any, row_id: Any, row: Any) -> None:
        try:
            local_ms = int(time.time() * 1000)
            ts_ms = to_ms(row.time)
            if ts_ms is not None:
                with self._skew_lock:
                    self._skew.observe(ts_ms, local_ms)
            callback = self.on_tick
            if callback is not None:
                callback(row.instrument, ts_ms, row.bid, row.ask)
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

    # -- history ---------------------------------------------------------------------------

    def get_history(self, symbol: str, tf: str, from_ms: Optional[int], to_ms: Optional[int],
                    count: int, basis: str) -> List[List[float]]:
        from forexconnect import fxcorepy
        fx = self._fx
        if fx is None or not self._logged_in:
            raise BrokerError("not logged in")
        try:
            table = fx.get_history(
                self.broker_name(symbol), FXCM_TF[tf], _naive_utc(from_ms), _naive_utc(to_ms),
                count if count > 0 else -1,
                candle_open_price_mode=fxcorepy.O2GCandleOpenPriceMode.FIRST_TICK)
        except Exception as exc:  # the SDK raises plain Exception with a native message
            text = self.redact(str(exc) or type(exc).__name__)
            if "not ready" in text.lower():
                raise HistoryNotReady(text) from None
            raise BrokerError(text) from None
        if self._mode_checked is not fx:
            self._mode_checked = fx
            self._read_back_open_price_mode(fx)
        times = table["Date"].astype("int64") // 1000000
        columns: Dict[str, Any] = {}
        for part in ("Open", "High", "Low", "Close"):
            bid = table["Bid" + part]
            ask = table["Ask" + part]
            columns[part] = basis_price(bid, ask, basis)  # element-wise on the columns
        volume = table["Volume"]
        return [[int(times[i]), float(columns["Open"][i]), float(columns["High"][i]),
                 float(columns["Low"][i]), float(columns["Close"][i]), float(volume[i])]
                for i in range(len(table))]

    def _read_back_open_price_mode(self, fx: Any) -> None:
        """The mode the SDK's history communicator holds after a call that asked for
        FIRST_TICK (bars whose open is the first tick, like the tick bars)."""
        try:
            mode = str(fx._com.candle_open_price_mode)
        except Exception as exc:  # a wrapper without it: say so once
            mode = "unknown ({})".format(type(exc).__name__)
        self.open_price_mode = mode
        if mode != FIRST_TICK:
            log.warning("FXCM history: the candle open price mode reads back as %s, not %s: "
                        "history bars open at the previous close while tick bars open at the "
                        "first tick; history and tick bars will differ", mode, FIRST_TICK)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        with self._skew_lock:
            skew = self._skew.status()
        return {"kind": self.kind, "url": self.url, "connection": self.connection,
                "sdk": self.unavailable and "unavailable: " + self.unavailable or self.sdk,
                "logged_in": self._logged_in, "session_status": self._session_status,
                "last_statuses": list(self.status_changes[-5:]),
                "sessions_created": self.sessions_created,
                "login_attempts": self.login_attempts,
                "waits_on_connecting_session": self.waits_on_connecting,
                "ignored_callbacks": self.ignored_callbacks,
                "sdk_reconnects": self.sdk_reconnects, "subscriptions": self.subscriptions,
                "callback_errors": self.callback_errors,
                "history_open_price_mode": self.open_price_mode,
                "clock_skew": skew,
                "offers": {symbol: offer.as_dict() if offer is not None else None
                           for symbol, offer in self.offers.items()}}

    def close(self) -> None:
        self.interrupt()
        self.unsubscribe()
