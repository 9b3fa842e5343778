"""Market vocabulary shared by the actors: symbols, timeframes and the messages they exchange.

Topics: ``tick.<SYMBOL>``, ``bar.<SYMBOL>.<tf>``, ``price.snapshot.<SYMBOL>``, ``session.state``.
Times are integer milliseconds UTC unless a field says otherwise.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from protocol.errors import ProtocolError
from protocol.messages import message

MINUTE_MS = 60000

# Bar timeframes, in the order of the derived chain.
TIMEFRAMES = ("1m", "5m", "15m", "30m", "1h", "4h", "1d")
TF_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS, "30m": 30 * MINUTE_MS,
         "1h": 60 * MINUTE_MS, "4h": 240 * MINUTE_MS, "1d": 1440 * MINUTE_MS}
# ForexConnect's timeframe codes (case-sensitive: m = minute, H = hour, D = day).
FXCM_TF = {"1m": "m1", "5m": "m5", "15m": "m15", "30m": "m30", "1h": "H1", "4h": "H4",
           "1d": "D1"}
_FROM_FXCM_TF = {code: tf for tf, code in FXCM_TF.items()}

# The pipeline clock travels in the tick stream (same producer, same ordered mailbox), so that a
# checkpointed consumer replays ticks and clock in exactly the order it first saw them, and a
# bar closed by the clock before a crash is closed by it again after the restart.
CLOCK_TOPIC = "tick.$clock"
# The session state travels there too: a consumer of the tick stream learns in order that
# ticks stopped because the session was lost, not because the market was quiet.
SESSION_IN_TICKS_TOPIC = "tick.$session"
# What the broker says of each instrument (its precision; whether the account may stream it),
# on ``instrument.<SYMBOL>`` for anyone, and in the tick stream as ``tick.$instrument.<SYMBOL>``
# so that a consumer of the ticks knows a symbol's precision before its first tick.
INSTRUMENT_PREFIX = "instrument."
INSTRUMENT_IN_TICKS_PREFIX = "tick.$instrument."
# tick_aggregator's notices of minutes it will not emit (BarGap): ``gap.<SYMBOL>``.
GAP_PREFIX = "gap."


def normalize_symbol(raw: str) -> str:
    """``EUR/USD``, ``eurusd`` or ``EURUSD`` -> ``EURUSD``; raises ProtocolError if empty."""
    symbol = raw.replace("/", "").replace(" ", "").upper()
    if not symbol or not symbol.isalnum():
        raise ProtocolError("not a symbol: {!r}".format(raw))
    return symbol


# Codes that make a six-letter symbol a pair at FXCM (``EUR/USD``, ``XAU/USD``, ``BTC/USD``):
# ISO 4217 currencies FXCM quotes, the metals, and the crypto codes of its pairs.
PAIR_CODES = frozenset((
    "USD", "EUR", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "PLN", "HUF",
    "CZK", "TRY", "ZAR", "MXN", "SGD", "HKD", "CNH", "CNY", "RUB", "ILS", "THB", "INR", "KRW",
    "XAU", "XAG", "XPT", "XPD",
    "BTC", "ETH", "LTC", "XRP", "BCH", "EOS", "XLM", "ADA", "DOT", "DOG", "SOL", "LNK", "AVX",
    "MTC", "UNI", "BNB",
))

# FXCM's names of instruments that are not pairs, as the SDK spells them (the OFFERS table is
# the truth when logged in; this is the fallback): indices, energy, metals, bonds, baskets.
FXCM_NAMES = {name.upper(): name for name in (
    "USOil", "UKOil", "USOilSpot", "UKOilSpot", "NGAS", "Copper", "Bund", "USDOLLAR", "SOYF",
    "WHEATF", "CORNF", "SPX500", "US30", "NAS100", "US2000", "GER30", "UK100", "FRA40",
    "ESP35", "EUSTX50", "JPN225", "HKG33", "AUS200", "CHN50", "VOLX", "CryptoMajor",
)}


def fxcm_instrument(symbol: str) -> str:
    """Our symbol -> the SDK's instrument name when the broker has not said (its OFFERS table is
    the truth once logged in): ``EURUSD`` -> ``EUR/USD``, ``BTCUSD`` -> ``BTC/USD``, ``USOIL``
    -> ``USOil``, ``COPPER`` -> ``Copper``. A name that is neither a known pair nor a known
    FXCM name passes through normalized: no slash is invented. Inverse of ``normalize_symbol``
    on FXCM's names."""
    symbol = normalize_symbol(symbol)
    known = FXCM_NAMES.get(symbol)
    if known is not None:
        return known
    if len(symbol) == 6 and symbol[:3] in PAIR_CODES and symbol[3:] in PAIR_CODES:
        return symbol[:3] + "/" + symbol[3:]
    return symbol


def normalize_tf(raw: str) -> str:
    """``1m``/``m1`` -> ``1m``; ``H1``/``1h`` -> ``1h``; ``D1``/``1d`` -> ``1d``."""
    if raw in TF_MS:
        return raw
    if raw in _FROM_FXCM_TF:
        return _FROM_FXCM_TF[raw]
    lowered = raw.lower()
    if lowered in TF_MS:
        return lowered
    raise ProtocolError("unknown timeframe {!r} (expected one of {})".format(
        raw, ", ".join(TIMEFRAMES)))


def parse_targets(spec: Any) -> List[Tuple[str, str]]:
    """The seed's ``"XAU/USD:m1,EUR/USD:m5"`` string, or a list of such strings or of
    ``{"symbol", "tf"}`` maps, as ``[(symbol, tf)]`` without duplicates, in order."""
    items = []  # type: List[Any]
    if isinstance(spec, str):
        items = [part for part in spec.split(",") if part.strip()]
    elif isinstance(spec, list):
        items = spec
    else:
        raise ProtocolError("targets must be a string or a list")
    result = []  # type: List[Tuple[str, str]]
    for item in items:
        if isinstance(item, str):
            symbol, sep, tf = item.strip().rpartition(":")
            if not sep:
                raise ProtocolError("target {!r} must be SYMBOL:tf".format(item))
        elif isinstance(item, dict):
            symbol, tf = str(item.get("symbol", "")), str(item.get("tf", ""))
        else:
            raise ProtocolError("target {!r} must be SYMBOL:tf or {{symbol, tf}}".format(item))
        target = (normalize_symbol(symbol), normalize_tf(tf.strip()))
        if target not in result:
            result.append(target)
    return result


def tick_topic(symbol: str) -> str:
    return "tick." + symbol


def bar_topic(symbol: str, tf: str) -> str:
    return "bar.{}.{}".format(symbol, tf)


# Decimals of well-known instruments' quotes, when neither the broker nor the configuration
# (``instruments.<SYMBOL>.digits``) says: FX majors 5, yen crosses 3, gold 2, silver 3.
KNOWN_DIGITS = {"USDJPY": 3, "EURJPY": 3, "GBPJPY": 3, "AUDJPY": 3, "CADJPY": 3, "CHFJPY": 3,
                "NZDJPY": 3, "XAUUSD": 2, "XAGUSD": 3}


def default_digits(symbol: str) -> int:
    """The decimals of ``symbol``'s quotes when nobody says otherwise."""
    known = KNOWN_DIGITS.get(symbol)
    if known is not None:
        return known
    return 3 if symbol.endswith("JPY") else 5


def round_price(value: float, digits: int) -> float:
    """``value`` at ``digits`` decimals: no float noise on the wire (``1.0999500000000002``
    -> ``1.09995``). Bid, ask and their bars take the instrument's digits; a mid takes one
    more (the mean of two prices at ``d`` decimals has at most ``d + 1``)."""
    return round(value, digits)


def basis_digits(digits: int, basis: str) -> int:
    """The decimals of prices on ``basis`` for an instrument quoted at ``digits``: a mid has
    one more than its bid and ask."""
    return digits + 1 if basis == "mid" else digits


class Precision(object):
    """Each symbol's quote decimals: what the broker said (``Instrument`` messages), else the
    ``instruments`` setting (``{SYMBOL: {"digits": n}}``), else ``default_digits``. The one
    home of that order, for everything that computes a price (bars, history, snapshots)."""

    def __init__(self, configured: Optional[Dict[str, Any]] = None) -> None:
        self.configured = {}  # type: Dict[str, int]
        for symbol, entry in (configured or {}).items():
            digits = entry.get("digits") if isinstance(entry, dict) else None
            if isinstance(digits, int) and not isinstance(digits, bool):
                self.configured[symbol] = digits
        self.broker = {}  # type: Dict[str, int]

    def learn(self, instrument: "Instrument") -> bool:
        """Take what the broker says of a symbol; True when its digits changed."""
        changed = self.broker.get(instrument.symbol) != instrument.digits
        self.broker[instrument.symbol] = instrument.digits
        return changed

    def digits(self, symbol: str) -> int:
        known = self.broker.get(symbol)
        if known is None:
            known = self.configured.get(symbol)
        return known if known is not None else default_digits(symbol)

    def for_basis(self, symbol: str, basis: str) -> int:
        return basis_digits(self.digits(symbol), basis)

    def snapshot(self) -> Dict[str, int]:
        return dict(self.broker)

    def restore(self, state: Any) -> None:
        if isinstance(state, dict):
            self.broker = {str(k): int(v) for k, v in state.items()}


@message("tick")
@dataclass(frozen=True)
class Tick:
    """One bid/ask quote. ``ts_ms`` is the broker's event time."""

    symbol: str
    ts_ms: int
    bid: float
    ask: float


# Where a bar came from, on the bus (``Bar.source``), and the word the ``ohlcv`` contract uses
# for it (seed 001 section 1.1: ``stream``, ``tick_agg``, ``history_s3``); the only mapping.
SOURCE_TICK = "tick"            # 1m from live ticks (tick_aggregator)
SOURCE_DERIVED = "derived"      # 5m..1d folded from final 1m bars by tick_aggregator
SOURCE_HISTORY = "history"      # the broker's history, fetched by the feed itself (warmup, repair)
SOURCE_REBUILT = "rebuilt"      # 5m..1d rebuilt by history_poller from stored 1m bars
SOURCE_STORE = "store"          # the bar store's tail, republished at start
SOURCE_COMMAND = "command"      # what a command published (warmup, backfill, republish_tail...)
WIRE_SOURCE = {SOURCE_TICK: "tick_agg", SOURCE_DERIVED: "tick_agg", SOURCE_HISTORY: "stream",
               SOURCE_REBUILT: "stream", SOURCE_STORE: "stream", SOURCE_COMMAND: "history_s3"}


def wire_source(source: str) -> str:
    """The ``ohlcv`` word for a bar's ``source``: ``tick_agg`` for what live ticks made,
    ``stream`` for the feed's own history, ``history_s3`` for what a command asked for."""
    return WIRE_SOURCE.get(source, "stream")


@message("bar")
@dataclass(frozen=True)
class Bar:
    """An OHLCV bar over ``[open_time, close_time]`` (``close_time = open_time + tf - 1``);
    ``source`` is one of the ``SOURCE_*`` names above."""

    symbol: str
    tf: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    tick_count: int
    complete: bool
    synthetic: bool
    source: str

    @property
    def key(self) -> Tuple[str, str, int]:
        return (self.symbol, self.tf, self.open_time)

    def same_values(self, other: "Bar") -> bool:
        """Equal as a final bar, whatever the source; prices within float noise (a mid
        computed from bid and ask may differ from a broker's mid in the last bits)."""
        return (self.volume == other.volume and self.tick_count == other.tick_count
                and self.synthetic == other.synthetic
                and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in (
                    (self.open, other.open), (self.high, other.high), (self.low, other.low),
                    (self.close, other.close))))

    def to_contract(self) -> Dict[str, Any]:
        """The bar as downstream consumers read it in ``ohlcv`` (seed 001, section 1.1)."""
        return {
            "open_time": self.open_time, "close_time": self.close_time, "open": self.open,
            "high": self.high, "low": self.low, "close": self.close, "volume": self.volume,
            "complete": self.complete, "synthetic": self.synthetic,
            "tick_count": self.tick_count,
        }


@message("session.state")
@dataclass(frozen=True)
class SessionState:
    """fxcm_session's state: CONNECTING, STREAM, IDLE, DISCONNECTED or RECOVERING."""

    state: str
    reason: str
    since_ms: int
    broker: str


@message("history.get")
@dataclass(frozen=True)
class HistoryRequest:
    """Ask fxcm_session for bars of ``symbol``/``tf`` in ``[from_ms, to_ms]`` (either may be
    None) or the last ``count``. ``priority`` requests may use the reserved quota."""

    symbol: str
    tf: str
    from_ms: Optional[int]
    to_ms: Optional[int]
    count: int
    priority: bool


@message("history.bars")
@dataclass(frozen=True)
class HistoryReply:
    """The answer to ``history.get``. ``status``: ``ok``, ``throttled`` (retry after
    ``retry_after`` seconds), ``not_ready`` (market not ready: not a failure), ``error``.
    ``bars`` rows: ``[open_time, open, high, low, close, volume, complete]`` on the configured
    price basis."""

    symbol: str
    tf: str
    status: str
    retry_after: float
    error: str
    bars: List[List[Any]]

    def to_bars(self, source: str = "history", digits: Optional[int] = None) -> List[Bar]:
        """The rows as bars; with ``digits``, prices at that many decimals (the broker's rows
        carry float noise: ``1.0999500000000002``)."""
        step = TF_MS[self.tf]
        result = []
        for row in self.bars:
            prices = [float(row[1]), float(row[2]), float(row[3]), float(row[4])]
            if digits is not None:
                prices = [round_price(price, digits) for price in prices]
            result.append(Bar(self.symbol, self.tf, int(row[0]), int(row[0]) + step - 1,
                              prices[0], prices[1], prices[2], prices[3], float(row[5]),
                              int(row[5]), bool(row[6]), False, source))
        return result


@message("bar.gap")
@dataclass(frozen=True)
class BarGap:
    """tick_aggregator's notice (on ``gap.<SYMBOL>``) that it will publish no final 1m bar for
    the minutes of ``[from_ms, to_ms)`` of ``symbol``, nor any derived bar holding one of
    them: it did not see all their ticks (a fresh start, a lost session). history_poller fills
    them from history and builds those derived bars. ``from_ms`` is None after a fresh start:
    the past is unknown as far back as the longest derived bucket holding ``to_ms - 1``
    reaches. ``to_ms`` is the first minute tick aggregation emits itself."""

    symbol: str
    from_ms: Optional[int]
    to_ms: int


@message("instrument")
@dataclass(frozen=True)
class Instrument:
    """An instrument as the broker has it: ``digits`` decimals of its bid/ask (the SDK offer's
    ``digits``, else per-symbol config), ``point_size``, its name at the broker
    (``EUR/USD``, ``USOil``), and ``subscribed``: False when the account has not subscribed it
    (the SDK offer's ``subscription_status`` is not ``T``): no ticks and no history then."""

    symbol: str
    digits: int
    point_size: float
    broker_name: str
    subscribed: bool


# The live universe: which (symbol, tf) the feed publishes on ``ohlcv`` (seed 001: stream
# targets; fxcm_set_universe, dynamic universe v1). history_poller owns it.
UNIVERSE_TOPIC = "universe"


@message("universe")
@dataclass(frozen=True)
class Universe:
    """The (symbol, tf) targets the live feed publishes; ``targets`` None means every
    configured symbol at every configured timeframe (an empty list: none). ``mode``: ``static``
    (configuration), ``default`` (dynamic universe enabled, nothing set yet:
    ``dynamic_universe_default_targets``) or ``dynamic`` (set by ``fxcm_set_universe``). Bars a
    command asked for are published whatever the universe."""

    targets: Optional[List[List[str]]]
    mode: str
    since_ms: int

    def allows(self, symbol: str, tf: str) -> bool:
        return self.targets is None or [symbol, tf] in self.targets


@message("price.snapshot")
@dataclass(frozen=True)
class PriceSnapshot:
    """The newest quote of a symbol at snapshot time; both times in float seconds."""

    symbol: str
    bid: float
    ask: float
    mid: float
    tick_ts: float
    snap_ts: float


@message("clock")
@dataclass(frozen=True)
class Clock:
    """The pipeline clock (DESIGN.md section 6): the broker's notion of now, published by
    fxcm_session a few times a second so that bars close on it even when no tick arrives."""

    now_ms: int
    broker: str
