"""The broker seam: the one interface fxcm_session talks to.

Three implementations: ``sim`` (a deterministic market simulator), ``replay`` (ticks from a
CSV file) and ``forexconnect`` (the real SDK, Python 3.7 only). All calls except ``subscribe``'s
callbacks and ``clock_ms`` are made from the one thread that owns the session (the SDK is not
thread-safe); they may block (the SDK's login can take 30 s, its logout another 30 s).

Ticks reach fxcm_session through ``on_tick(raw_symbol, ts_ms, bid, ask)`` from the broker's own
thread. ``on_status(event, reason)`` reports what the broker's connection did on its own, from
its own thread: ``LOST`` (gone: fxcm_session logs in again), ``RECONNECTING`` (the broker is
reconnecting by itself; ticks pause) and ``RECONNECTED`` (it is back: subscribe again at once).

History rows, on the requested price basis: ``[open_time_ms, open, high, low, close, volume]``.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional

from protocol.market import Instrument, default_digits, fxcm_instrument

TickCallback = Callable[[str, Any, Any, Any], None]
StatusCallback = Callable[[str, str], None]

# on_status events (see the module docstring)
LOST = "lost"
RECONNECTING = "reconnecting"
RECONNECTED = "reconnected"

def redact(text: str, secrets: List[str]) -> str:
    """Hide credentials in a message (the SDK's login errors contain the user name)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Broker(object):
    """Base class; see the module docstring for the threading rules."""

    kind = ""

    def __init__(self) -> None:
        self.on_tick: Optional[TickCallback] = None
        self.on_status: Optional[StatusCallback] = None

    def login(self) -> None:
        """Log in; raises LoginFailed (redacted message)."""
        raise NotImplementedError

    def logout(self) -> None:
        raise NotImplementedError

    def subscribe(self, symbols: List[str]) -> None:
        """Start delivering ticks of ``symbols`` to ``on_tick`` (re-created after a reconnect)."""
        raise NotImplementedError

    def unsubscribe(self) -> None:
        raise NotImplementedError

    def get_history(self, symbol: str, tf: str, from_ms: Optional[int], to_ms: Optional[int],
                    count: int, basis: str) -> List[List[float]]:
        """Bars of ``symbol``/``tf`` (our names: ``EURUSD``, ``1m``) on ``basis``, oldest first.
        Raises HistoryNotReady when the broker's history service is not ready, BrokerError
        for anything else."""
        raise NotImplementedError

    def clock_ms(self) -> int:
        """The pipeline clock: the wall clock for the sim, the server's clock estimated from
        tick times for forexconnect, the replay clock for replay."""
        raise NotImplementedError

    def clock_settled(self) -> bool:
        """False while ``clock_ms`` is not worth publishing yet: a live broker that has not
        seen a tick to learn the server's clock from, a replay without a single valid row.
        A published clock never goes back, so a guess would close minutes too early."""
        return True

    def clock_skew_seconds(self) -> Optional[float]:
        """Server minus local clock as the broker estimates it; None when it does not (a
        simulated or replayed clock has no server)."""
        return None

    def interrupt(self) -> None:
        """Called from another thread when the session stops: cut short the broker's own
        waits (not the SDK's). Default: nothing to cut short."""

    def metrics(self) -> Dict[str, Any]:
        """The broker's own Prometheus families, in the ``status()["metrics"]`` shape."""
        return {}

    def instruments(self, symbols: List[str], configured: Dict[str, Any]) -> Dict[str, Instrument]:
        """What the broker knows of ``symbols`` once logged in: precision, its own name, and
        whether the account may stream them. ``configured`` is the ``instruments`` setting
        (``{SYMBOL: {"digits": n}}``), which a broker without its own knowledge follows; this
        default knows nothing else (sim and replay)."""
        result = {}
        for symbol in symbols:
            entry = configured.get(symbol) or {}
            digits = entry.get("digits")
            if not isinstance(digits, int) or isinstance(digits, bool):
                digits = default_digits(symbol)
            result[symbol] = Instrument(symbol, digits, 10.0 ** -digits, fxcm_instrument(symbol),
                                        True)
        return result

    def finished(self) -> bool:
        """True when the broker will never deliver another tick (the end of a replay file)."""
        return False

    def keep_timeline(self, path: str, run: str) -> bool:
        """Keep this broker's place in time in the file ``path`` for a later instance of the
        session within the same host run (``run``: the router's id from WELCOME), and take
        over an earlier instance's place if ``path`` holds one of this run. Returns True when
        it resumed. Called once, before ``login``. Only the replay broker has a timeline of
        its own; a live feed streams from now after any restart, so this does nothing."""
        return False

    def status(self) -> Dict[str, Any]:
        return {"kind": self.kind}

    def close(self) -> None:
        """Release threads and files; called once, after logout."""


class StreamingBroker(Broker):
    """A broker whose ticks come from a thread of its own (sim, replay): ``subscribe`` starts
    ``_stream(stop)`` on it, ``unsubscribe`` stops and joins it."""

    def __init__(self) -> None:
        super(StreamingBroker, self).__init__()
        self._connected = False
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def _stream(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def subscribe(self, symbols: List[str]) -> None:
        from protocol.errors import BrokerError

        if not self._connected:
            raise BrokerError("not logged in")
        self.unsubscribe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream, args=(self._stop,),
                                        name="{}-ticks".format(self.kind), daemon=True)
        self._thread.start()

    def unsubscribe(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self._thread = None

    def close(self) -> None:
        self.unsubscribe()
