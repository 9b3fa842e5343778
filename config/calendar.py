"""The trading calendar: when a symbol's market is open, which session it is in, where a trading
day starts. Pure logic with the clock injected: every function takes the time as integer
milliseconds UTC and none reads the wall clock. Daylight saving comes from ``zoneinfo``.

Shape of ``config/calendar.json`` (every key optional; a missing key takes the FX default)::

    {
      "trading_day_start": "17:00@America/New_York",
      "default": {
        "weekly_open":  "Sun 17:00@America/New_York",
        "weekly_close": "Fri 17:00@America/New_York",
        "daily_breaks": [],
        "holidays": ["2026-12-25", {"date": "2027-01-01", "name": "New Year's Day"}]
      },
      "profiles": {
        "metals": {
          "symbols": ["XAUUSD", "XAGUSD"],
          "daily_breaks": ["17:00-18:00@America/New_York"]
        }
      },
      "session_windows": [
        {"tag": "LONDON", "start": "08:00", "end": "17:00", "tz": "Europe/London"}
      ]
    }

- ``weekly_open`` / ``weekly_close``: ``"[Day ]HH:MM[@Zone]"``; the day defaults to Sunday for the
  open and Friday for the close, the zone to UTC (the predecessor's ``weekly_open_utc`` /
  ``weekly_close_utc`` are accepted as other names for the same keys). The market is open from each
  weekly open to the first weekly close after it.
- ``daily_breaks``: closed every day, each ``"HH:MM-HH:MM@Zone"``, ``["HH:MM", "HH:MM", "Zone"]``
  or ``{"start", "end", "tz"}``, times in that zone (UTC if absent). ``end < start`` crosses
  midnight. Breaks of one profile must not overlap.
- ``holidays``: ``"YYYY-MM-DD"`` or ``{"date": "YYYY-MM-DD", "name": "..."}``; the whole trading
  day of that date is closed. The trading day of a date is the one (from ``trading_day_start`` to
  the next) that contains noon of that date in the trading-day zone; with 17:00 New York the
  holiday ``2026-12-25`` closes 2026-12-24 17:00 to 2026-12-25 17:00 New York.
- ``profiles``: named groups of ``symbols`` (any spelling ``normalize_symbol`` accepts). A profile
  may set ``weekly_open``, ``weekly_close``, ``daily_breaks`` and ``holidays``; each key it sets
  replaces the default's, each key it leaves out is inherited. A symbol belongs to one profile at
  most; symbols in none (and ``symbol=None``) use ``default``.
- ``session_windows``: ``{"tag", "start", "end", "tz", "timezone"?}``, times in ``tz``;
  ``timezone`` is only a label for display (the seed's shape), defaulting to ``tz``.
- ``trading_day_start``: ``"HH:MM[@Zone]"``; aligns 4h and 1d bars and bounds holidays.

Answers, with open periods half-open ``[open, close)``:

- ``is_open(t)``: ``t`` lies inside an open period.
- ``next_open(t)``: the start of the first open period that starts strictly after ``t``: when
  closed, the instant the market opens; when open, the opening after the current period closes.
  Always ``> t``; the market is open there and closed one millisecond before.
- ``next_close(t)``: the end of the open period containing ``t``, or when closed, the end of the
  next open period. Always ``> t``; the market is closed there and open one millisecond before.
- ``session_at(t)``: ``Session(tag, start_ms, end_ms)`` of the window containing ``t``, or None
  when no window contains it or the market is closed. When windows overlap (London and New York
  mornings) the one that opened last wins, so the tag moves Tokyo -> London -> New York.
- ``open_intervals(a, b)`` / ``open_minutes(a, b)``: the open periods clipped to ``[a, b)``, and
  the open times of the 1m buckets in ``[a, b)`` whose first millisecond is open.

Open periods are computed per week by interval arithmetic and cached, so ``is_open`` is a dict
lookup and a bisect. Imports only ``protocol``; runs on Python 3.7 too, because fxcm_session
with the real SDK (a 3.7 child) needs it.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple, Tuple

try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
except ImportError:  # Python 3.7 (fxcm_session with the SDK): the same API, backported
    from backports.zoneinfo import (  # type: ignore[import-not-found,no-redef]
        ZoneInfo,
        ZoneInfoNotFoundError,
    )

from protocol.errors import ConfigError, ProtocolError
from protocol.market import normalize_symbol

DEFAULT_CALENDAR_PATH = Path(__file__).with_name("calendar.json")

MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS
# Open periods are computed and cached per chunk of this length (aligned to the epoch).
CHUNK_MS = 7 * DAY_MS
# How far next_open/next_close look before deciding that the market never opens (or closes).
SEARCH_LIMIT_CHUNKS = 60
CACHE_MAX_ENTRIES = 4096

DEFAULT_PROFILE = "default"
_ROOT = "calendar"

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_ANCHOR = re.compile(r"^(?:([A-Za-z]+)\s+)?(\d{1,2}:\d{2})\s*(?:@\s*(\S+))?$")
_RANGE = re.compile(r"^(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*(?:@\s*(\S+))?$")

_TOP_KEYS = ("trading_day_start", "default", "profiles", "session_windows")
_PROFILE_KEYS = ("weekly_open", "weekly_close", "daily_breaks", "holidays")
_ALIASES = {"weekly_open_utc": "weekly_open", "weekly_close_utc": "weekly_close"}
_BUILTIN_DEFAULT: dict[str, Any] = {
    "weekly_open": "Sun 17:00@America/New_York",
    "weekly_close": "Fri 17:00@America/New_York",
    "daily_breaks": [],
    "holidays": [],
}
_BUILTIN_TRADING_DAY_START = "17:00@America/New_York"

Interval = Tuple[int, int]  # typing.Tuple: a runtime alias must work on 3.7


class Session(NamedTuple):
    """The session window containing an instant: its tag and its own start and end (ms UTC)."""

    tag: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class WeeklyAnchor:
    """A weekday and a local time in a zone: ``Sun 17:00@America/New_York``."""

    weekday: int  # Monday = 0
    minute: int  # minutes after local midnight
    zone: ZoneInfo

    def __str__(self) -> str:
        return "{} {}@{}".format(_WEEKDAYS[self.weekday].capitalize(), _hhmm(self.minute),
                                 self.zone.key)

    def seed_form(self) -> str:
        """``17:00@America/New_York``: the predecessor's ``weekly_open``/``weekly_close`` form
        (its heartbeat and market_status carry the time and zone; the day is implied)."""
        return "{}@{}".format(_hhmm(self.minute), self.zone.key)


@dataclass(frozen=True)
class DailyWindow:
    """A local time range repeated every day; ``end_minute < start_minute`` crosses midnight."""

    start_minute: int
    end_minute: int
    zone: ZoneInfo

    def __str__(self) -> str:
        return "{}-{}@{}".format(_hhmm(self.start_minute), _hhmm(self.end_minute), self.zone.key)

    def occurrence(self, day: date) -> Interval:
        """The window that starts on local ``day``, in ms UTC (empty if a DST gap swallows it)."""
        start = local_ms(day, self.start_minute, self.zone)
        end_day = day if self.end_minute > self.start_minute else day + timedelta(days=1)
        return start, local_ms(end_day, self.end_minute, self.zone)


@dataclass(frozen=True)
class SessionWindow:
    tag: str
    window: DailyWindow
    timezone: str  # display label, the seed's "timezone"


@dataclass(frozen=True)
class Holiday:
    date: date
    name: str


@dataclass(frozen=True)
class Profile:
    """One symbol group's hours. ``default`` has no symbols and serves every other symbol."""

    name: str
    symbols: tuple[str, ...]
    weekly_open: WeeklyAnchor
    weekly_close: WeeklyAnchor
    daily_breaks: tuple[DailyWindow, ...]
    holidays: tuple[Holiday, ...]


def local_ms(day: date, minute: int, zone: ZoneInfo) -> int:
    """``day`` at ``minute`` after local midnight in ``zone``, as ms UTC. A time that does not
    exist (spring-forward gap) maps as zoneinfo does with ``fold=0`` (after the gap)."""
    moment = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
    return (moment - _EPOCH) // _ONE_MS


def local_date(t_ms: int, zone: ZoneInfo) -> date:
    return (_EPOCH + timedelta(milliseconds=t_ms)).astimezone(zone).date()


def _hhmm(minute: int) -> str:
    return "{:02d}:{:02d}".format(minute // 60, minute % 60)


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted, with overlapping or touching intervals joined and empty ones dropped."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _subtract(opened: list[Interval], closed: list[Interval]) -> list[Interval]:
    """``opened`` minus ``closed``; both merged and sorted."""
    result: list[Interval] = []
    index = 0
    for start, end in opened:
        while index < len(closed) and closed[index][1] <= start:
            index += 1
        cursor = start
        scan = index
        while scan < len(closed) and closed[scan][0] < end:
            if closed[scan][0] > cursor:
                result.append((cursor, closed[scan][0]))
            cursor = max(cursor, closed[scan][1])
            scan += 1
        if cursor < end:
            result.append((cursor, end))
    return result


class TradingCalendar:
    """Validated calendar data and the answers computed from it (see the module docstring)."""

    def __init__(self, default: Profile, profiles: Sequence[Profile],
                 session_windows: Sequence[SessionWindow], trading_day_minute: int,
                 trading_day_zone: ZoneInfo) -> None:
        self.default = default
        self.profiles: dict[str, Profile] = {profile.name: profile for profile in profiles}
        self.session_windows = tuple(session_windows)
        self.trading_day_minute = trading_day_minute
        self.trading_day_zone = trading_day_zone
        self._by_symbol = {symbol: profile for profile in profiles for symbol in profile.symbols}
        self._symbol_cache: dict[str, Profile] = {}
        self._open_cache: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        self._session_cache: dict[int, list[tuple[int, int, int]]] = {}

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any) -> TradingCalendar:
        """Validate ``data`` (the JSON shape in the module docstring); raises ConfigError naming
        the entry, e.g. ``calendar.profiles.metals.daily_breaks[1]: overlaps daily_breaks[0]``."""
        if not isinstance(data, dict):
            raise ConfigError("{}: must be an object".format(_ROOT))
        for key in data:
            if key not in _TOP_KEYS:
                raise ConfigError("{}.{}: unknown setting".format(_ROOT, key))
        minute, zone = _parse_time_at(data.get("trading_day_start", _BUILTIN_TRADING_DAY_START),
                                      _ROOT + ".trading_day_start")
        default_raw = data.get("default", {})
        where = _ROOT + ".default"
        if not isinstance(default_raw, dict):
            raise ConfigError("{}: must be an object".format(where))
        merged_default = {key: ("{}.{}".format(where, key), value)
                          for key, value in _BUILTIN_DEFAULT.items()}
        merged_default.update(_profile_fields(default_raw, where, allow_symbols=False))
        default = _build_profile(DEFAULT_PROFILE, (), merged_default, where, minute, zone)

        profiles_raw = data.get("profiles", {})
        if not isinstance(profiles_raw, dict):
            raise ConfigError("{}.profiles: must be an object".format(_ROOT))
        profiles: list[Profile] = []
        owner: dict[str, str] = {}
        for name, raw in profiles_raw.items():
            where = "{}.profiles.{}".format(_ROOT, name)
            if not name or name == DEFAULT_PROFILE:
                raise ConfigError("{}: a profile may not be called {!r}".format(where, name))
            if not isinstance(raw, dict):
                raise ConfigError("{}: must be an object".format(where))
            fields = _profile_fields(raw, where, allow_symbols=True)
            symbols = _parse_symbols(raw.get("symbols"), where + ".symbols", name, owner)
            profile = _build_profile(name, symbols, {**merged_default, **fields}, where,
                                     minute, zone)
            profiles.append(profile)

        windows = _parse_session_windows(data.get("session_windows", []),
                                         _ROOT + ".session_windows")
        return cls(default, profiles, windows, minute, zone)

    # -- which profile ----------------------------------------------------------------------------

    def profile_for(self, symbol: str | None = None) -> Profile:
        """The profile that governs ``symbol`` (``default`` for None or an unlisted symbol)."""
        if symbol is None:
            return self.default
        profile = self._symbol_cache.get(symbol)
        if profile is None:
            try:
                normalized = normalize_symbol(symbol)
            except ProtocolError:
                normalized = symbol
            profile = self._by_symbol.get(normalized, self.default)
            if len(self._symbol_cache) < CACHE_MAX_ENTRIES:
                self._symbol_cache[symbol] = profile
        return profile

    # -- open / closed ----------------------------------------------------------------------------

    def is_open(self, t_ms: int, symbol: str | None = None) -> bool:
        starts, ends = self._chunk(self.profile_for(symbol), t_ms // CHUNK_MS)
        index = bisect.bisect_right(starts, t_ms) - 1
        return index >= 0 and t_ms < ends[index]

    def next_open(self, t_ms: int, symbol: str | None = None) -> int:
        """The start of the first open period starting strictly after ``t_ms`` (see module)."""
        for start, _end in self._periods_from(self.profile_for(symbol), t_ms):
            if start > t_ms:
                return start
        raise AssertionError("unreachable: _periods_from raises when it runs out")

    def next_close(self, t_ms: int, symbol: str | None = None) -> int:
        """The end of the open period containing ``t_ms``, or of the next one (see module)."""
        for _start, end in self._periods_from(self.profile_for(symbol), t_ms):
            return end
        raise AssertionError("unreachable: _periods_from raises when it runs out")

    def open_intervals(self, start_ms: int, end_ms: int,
                       symbol: str | None = None) -> list[Interval]:
        """The open periods within ``[start_ms, end_ms)``, clipped to it, as ``[(open, close)]``
        half-open, sorted, never touching each other."""
        if end_ms <= start_ms:
            return []
        profile = self.profile_for(symbol)
        result: list[Interval] = []
        for chunk in range(start_ms // CHUNK_MS, (end_ms - 1) // CHUNK_MS + 1):
            starts, ends = self._chunk(profile, chunk)
            for index in range(bisect.bisect_right(ends, start_ms), len(starts)):
                begin, finish = max(starts[index], start_ms), min(ends[index], end_ms)
                if begin >= end_ms:
                    break
                if begin >= finish:
                    continue
                if result and result[-1][1] == begin:
                    result[-1] = (result[-1][0], finish)
                else:
                    result.append((begin, finish))
        return result

    def open_minutes(self, start_ms: int, end_ms: int,
                     symbol: str | None = None) -> Iterator[int]:
        """Open times of the 1m buckets in ``[start_ms, end_ms)`` (bucket starts at or after
        ``start_ms``) whose first millisecond is open, ascending."""
        first_minute = -(-start_ms // MINUTE_MS) * MINUTE_MS
        for begin, finish in self.open_intervals(first_minute, end_ms, symbol):
            yield from range(-(-begin // MINUTE_MS) * MINUTE_MS, finish, MINUTE_MS)

    def count_open_minutes(self, start_ms: int, end_ms: int, symbol: str | None = None) -> int:
        """``len(list(open_minutes(...)))`` without building the list."""
        first_minute = -(-start_ms // MINUTE_MS) * MINUTE_MS
        total = 0
        for begin, finish in self.open_intervals(first_minute, end_ms, symbol):
            total += len(range(-(-begin // MINUTE_MS) * MINUTE_MS, finish, MINUTE_MS))
        return total

    # -- sessions and trading days ------------------------------------------------------------

    def session_at(self, t_ms: int, symbol: str | None = None) -> Session | None:
        """The session window containing ``t_ms`` (the latest-opened one where windows overlap),
        or None when there is none or the market of ``symbol`` is closed at ``t_ms``."""
        if not self.session_windows or not self.is_open(t_ms, symbol):
            return None
        best: tuple[int, int, int] | None = None
        for start, end, index in self._session_chunk(t_ms // CHUNK_MS):
            if start <= t_ms < end and (best is None or start > best[0]):
                best = (start, end, index)
        if best is None:
            return None
        return Session(self.session_windows[best[2]].tag, best[0], best[1])

    def trading_day_start(self, t_ms: int) -> int:
        """The latest trading-day start (17:00 New York by default, DST-aware) at or before
        ``t_ms``. 4h and 1d buckets are ``trading_day_start + k * bucket``."""
        day = local_date(t_ms, self.trading_day_zone)
        start = local_ms(day, self.trading_day_minute, self.trading_day_zone)
        if start > t_ms:
            start = local_ms(day - timedelta(days=1), self.trading_day_minute,
                             self.trading_day_zone)
        return start

    def next_trading_day_start(self, t_ms: int) -> int:
        """The first trading-day start strictly after ``t_ms`` (the end of its trading day)."""
        day = local_date(self.trading_day_start(t_ms), self.trading_day_zone)
        return local_ms(day + timedelta(days=1), self.trading_day_minute, self.trading_day_zone)

    def trading_date(self, t_ms: int) -> date:
        """The date that names the trading day containing ``t_ms``: the one whose noon (in the
        trading-day zone) it contains; 2026-12-24 18:00 New York is in trading date 2026-12-25."""
        day = local_date(self.trading_day_start(t_ms), self.trading_day_zone)
        return day + timedelta(days=1) if self.trading_day_minute > 720 else day

    # -- internals ------------------------------------------------------------------------------

    def _periods_from(self, profile: Profile, t_ms: int) -> Iterator[Interval]:
        """Open periods ending after ``t_ms``, whole (joined across chunk edges), in order."""
        first = t_ms // CHUNK_MS
        pending: Interval | None = None
        for chunk in range(first, first + SEARCH_LIMIT_CHUNKS):
            starts, ends = self._chunk(profile, chunk)
            for start, end in zip(starts, ends):
                if pending is not None and pending[1] == start:
                    pending = (pending[0], end)
                    continue
                if pending is not None and pending[1] > t_ms:
                    yield pending
                pending = (start, end)
        raise ConfigError("{}: the market of profile {!r} does not open and close within {} "
                          "days after {} ms".format(_where(profile), profile.name,
                                                    SEARCH_LIMIT_CHUNKS * 7, t_ms))

    def _chunk(self, profile: Profile, chunk: int) -> tuple[list[int], list[int]]:
        key = (profile.name, chunk)
        cached = self._open_cache.get(key)
        if cached is None:
            periods = compute_open_periods(profile, chunk * CHUNK_MS, (chunk + 1) * CHUNK_MS,
                                           self.trading_day_minute, self.trading_day_zone)
            cached = ([start for start, _ in periods], [end for _, end in periods])
            if len(self._open_cache) >= CACHE_MAX_ENTRIES:
                self._open_cache.clear()
            self._open_cache[key] = cached
        return cached

    def _session_chunk(self, chunk: int) -> list[tuple[int, int, int]]:
        cached = self._session_cache.get(chunk)
        if cached is None:
            low, high = chunk * CHUNK_MS, (chunk + 1) * CHUNK_MS
            cached = []
            first = (_EPOCH + timedelta(milliseconds=low)).date() - timedelta(days=2)
            last = (_EPOCH + timedelta(milliseconds=high)).date() + timedelta(days=1)
            for index, window in enumerate(self.session_windows):
                for day in _days(first, last):
                    start, end = window.window.occurrence(day)
                    if start < end and start < high and end > low:
                        cached.append((start, end, index))
            if len(self._session_cache) >= CACHE_MAX_ENTRIES:
                self._session_cache.clear()
            self._session_cache[chunk] = cached
        return cached


def compute_open_periods(profile: Profile, low: int, high: int, trading_day_minute: int,
                         trading_day_zone: ZoneInfo, with_holidays: bool = True) -> list[Interval]:
    """The open periods of ``profile`` clipped to ``[low, high)``, merged and sorted."""
    first = (_EPOCH + timedelta(milliseconds=low)).date() - timedelta(days=9)
    last = (_EPOCH + timedelta(milliseconds=high)).date() + timedelta(days=9)
    weekly_open, weekly_close = profile.weekly_open, profile.weekly_close
    opens = [local_ms(day, weekly_open.minute, weekly_open.zone)
             for day in _days(first, last) if day.weekday() == weekly_open.weekday]
    closes = [local_ms(day, weekly_close.minute, weekly_close.zone)
              for day in _days(first, last) if day.weekday() == weekly_close.weekday]
    weeks: list[Interval] = []
    for start in opens:
        index = bisect.bisect_right(closes, start)
        if index < len(closes):
            weeks.append((max(start, low), min(closes[index], high)))
    opened = _merge(weeks)

    closed: list[Interval] = []
    near_first, near_last = first + timedelta(days=7), last - timedelta(days=7)
    for window in profile.daily_breaks:
        for day in _days(near_first, near_last):
            closed.append(window.occurrence(day))
    if with_holidays:
        for holiday in profile.holidays:
            if near_first <= holiday.date <= near_last:
                closed.append(_holiday_interval(holiday.date, trading_day_minute,
                                                trading_day_zone))
    return _subtract(opened, _merge(closed))


def _holiday_interval(day: date, minute: int, zone: ZoneInfo) -> Interval:
    first = day - timedelta(days=1) if minute > 720 else day
    return local_ms(first, minute, zone), local_ms(first + timedelta(days=1), minute, zone)


def _where(profile: Profile) -> str:
    if profile.name == DEFAULT_PROFILE:
        return _ROOT + ".default"
    return "{}.profiles.{}".format(_ROOT, profile.name)


# -- parsing ------------------------------------------------------------------------------------

_ZONES: dict[str, ZoneInfo] = {}


def _parse_zone(name: Any, where: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ConfigError("{}: the time zone must be a name like 'America/New_York', got {!r}"
                          .format(where, name))
    zone = _ZONES.get(name)
    if zone is None:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ConfigError("{}: unknown time zone {!r}".format(where, name)) from exc
        _ZONES[name] = zone
    return zone


def _parse_minute(text: Any, where: str) -> int:
    match = _TIME.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ConfigError("{}: the time must be HH:MM within 00:00..23:59, got {!r}".format(
            where, text))
    return int(match.group(1)) * 60 + int(match.group(2))


def _parse_time_at(text: Any, where: str) -> tuple[int, ZoneInfo]:
    """``"HH:MM@Zone"`` (zone UTC if absent)."""
    match = _ANCHOR.match(text.strip()) if isinstance(text, str) else None
    if match is None or match.group(1):
        raise ConfigError("{}: must be 'HH:MM@Zone', got {!r}".format(where, text))
    return _parse_minute(match.group(2), where), _parse_zone(match.group(3) or "UTC", where)


def _parse_anchor(text: Any, default_weekday: int, where: str) -> WeeklyAnchor:
    """``"[Day ]HH:MM[@Zone]"``."""
    match = _ANCHOR.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigError("{}: must be '[Day ]HH:MM@Zone' like 'Sun 17:00@America/New_York', "
                          "got {!r}".format(where, text))
    weekday = default_weekday
    if match.group(1):
        word = match.group(1).lower()
        if word in _WEEKDAYS:
            weekday = _WEEKDAYS.index(word)
        elif word in _WEEKDAY_NAMES:
            weekday = _WEEKDAY_NAMES.index(word)
        else:
            raise ConfigError("{}: unknown weekday {!r}".format(where, match.group(1)))
    return WeeklyAnchor(weekday, _parse_minute(match.group(2), where),
                        _parse_zone(match.group(3) or "UTC", where))


def _parse_daily(entry: Any, where: str) -> DailyWindow:
    """``"HH:MM-HH:MM@Zone"``, ``["HH:MM", "HH:MM", "Zone"]`` or ``{"start", "end", "tz"}``."""
    if isinstance(entry, str):
        match = _RANGE.match(entry.strip())
        if match is None:
            raise ConfigError("{}: must be 'HH:MM-HH:MM@Zone', got {!r}".format(where, entry))
        start, end, zone = match.group(1), match.group(2), match.group(3) or "UTC"
    elif isinstance(entry, list):
        if len(entry) not in (2, 3):
            raise ConfigError("{}: must be ['HH:MM', 'HH:MM', 'Zone'], got {!r}".format(
                where, entry))
        start, end = entry[0], entry[1]
        zone = entry[2] if len(entry) == 3 else "UTC"
    elif isinstance(entry, dict):
        for key in entry:
            if key not in ("start", "end", "tz"):
                raise ConfigError("{}.{}: unknown setting".format(where, key))
        if "start" not in entry or "end" not in entry:
            raise ConfigError("{}: needs 'start' and 'end'".format(where))
        start, end, zone = entry["start"], entry["end"], entry.get("tz", "UTC")
    else:
        raise ConfigError("{}: must be 'HH:MM-HH:MM@Zone', a list or an object, got {!r}"
                          .format(where, entry))
    window = DailyWindow(_parse_minute(start, where), _parse_minute(end, where),
                         _parse_zone(zone, where))
    if window.start_minute == window.end_minute:
        raise ConfigError("{}: start and end are both {}".format(where, _hhmm(window.end_minute)))
    return window


def _parse_holiday(entry: Any, where: str) -> Holiday:
    name = ""
    text = entry
    if isinstance(entry, dict):
        for key in entry:
            if key not in ("date", "name"):
                raise ConfigError("{}.{}: unknown setting".format(where, key))
        text = entry.get("date")
        name = entry.get("name", "")
        if not isinstance(name, str):
            raise ConfigError("{}.name: must be a string, got {!r}".format(where, name))
    if not isinstance(text, str):
        raise ConfigError("{}: must be 'YYYY-MM-DD' or {{date, name}}, got {!r}".format(
            where, entry))
    try:
        if len(text) != 10:
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("{}: not a date 'YYYY-MM-DD': {!r}".format(where, text)) from exc
    return Holiday(day, name)


def _profile_fields(raw: dict[str, Any], where: str,
                    allow_symbols: bool) -> dict[str, tuple[str, Any]]:
    """The profile keys of ``raw`` as ``{key: (where, value)}``, aliases resolved to their key
    (``where`` keeps the spelling used); unknown keys raise."""
    fields: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        if key == "symbols" and allow_symbols:
            continue
        canonical = _ALIASES.get(key, key)
        if canonical not in _PROFILE_KEYS:
            raise ConfigError("{}.{}: unknown setting".format(where, key))
        if canonical in fields:
            raise ConfigError("{}.{}: given twice (also as {})".format(where, key, canonical))
        fields[canonical] = ("{}.{}".format(where, key), value)
    return fields


def _build_profile(name: str, symbols: tuple[str, ...], fields: dict[str, tuple[str, Any]],
                   where: str, trading_day_minute: int, trading_day_zone: ZoneInfo) -> Profile:
    """``fields`` holds every profile key as ``(where, value)``; inherited ones name the
    default's entry (already validated there)."""
    open_where, open_raw = fields["weekly_open"]
    close_where, close_raw = fields["weekly_close"]
    weekly_open = _parse_anchor(open_raw, 6, open_where)
    weekly_close = _parse_anchor(close_raw, 4, close_where)
    if (weekly_open.weekday, weekly_open.minute, weekly_open.zone.key) == (
            weekly_close.weekday, weekly_close.minute, weekly_close.zone.key):
        raise ConfigError("{}: equals weekly_open ({})".format(close_where, weekly_open))

    breaks_where, breaks_raw = fields["daily_breaks"]
    if not isinstance(breaks_raw, list):
        raise ConfigError("{}: must be a list".format(breaks_where))
    breaks = tuple(_parse_daily(item, "{}[{}]".format(breaks_where, index))
                   for index, item in enumerate(breaks_raw))
    _check_break_overlaps(breaks, breaks_where)

    holidays_where, holidays_raw = fields["holidays"]
    if not isinstance(holidays_raw, list):
        raise ConfigError("{}: must be a list".format(holidays_where))
    holidays: list[Holiday] = []
    seen: dict[date, int] = {}
    for index, item in enumerate(holidays_raw):
        item_where = "{}[{}]".format(holidays_where, index)
        holiday = _parse_holiday(item, item_where)
        if holiday.date in seen:
            raise ConfigError("{}: {} is already holidays[{}]".format(
                item_where, holiday.date.isoformat(), seen[holiday.date]))
        seen[holiday.date] = index
        holidays.append(holiday)

    profile = Profile(name, symbols, weekly_open, weekly_close, breaks,
                      tuple(sorted(holidays, key=lambda holiday: holiday.date)))
    # A reference fortnight (outside any DST switch) must hold some open time, else the
    # weekly hours and breaks leave the market shut for good.
    low = local_ms(date(2026, 1, 5), 0, ZoneInfo("UTC"))
    if not compute_open_periods(profile, low, low + 2 * CHUNK_MS, trading_day_minute,
                                trading_day_zone, with_holidays=False):
        raise ConfigError("{}: the weekly hours and daily breaks leave the market never open"
                          .format(where))
    return profile


def _check_break_overlaps(breaks: tuple[DailyWindow, ...], where: str) -> None:
    """Breaks of one profile must not overlap on any day of a reference year, which holds every
    zone's DST switches (touching is fine)."""
    if len(breaks) < 2:
        return
    occurrences: list[tuple[int, int, int]] = []
    for index, window in enumerate(breaks):
        for day in _days(date(2025, 12, 30), date(2027, 1, 2)):
            start, end = window.occurrence(day)
            if start < end:
                occurrences.append((start, end, index))
    occurrences.sort()
    reach: tuple[int, int] | None = None  # (end, index) of the furthest-reaching so far
    for start, end, index in occurrences:
        if reach is not None and start < reach[0] and reach[1] != index:
            first, second = sorted((index, reach[1]))
            raise ConfigError("{}[{}]: overlaps daily_breaks[{}]".format(where, second, first))
        if reach is None or end > reach[0]:
            reach = (end, index)


def _parse_symbols(raw: Any, where: str, profile: str, owner: dict[str, str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("{}: must be a non-empty list of symbols".format(where))
    symbols: list[str] = []
    for index, item in enumerate(raw):
        item_where = "{}[{}]".format(where, index)
        if not isinstance(item, str):
            raise ConfigError("{}: must be a symbol string, got {!r}".format(item_where, item))
        try:
            symbol = normalize_symbol(item)
        except ProtocolError as exc:
            raise ConfigError("{}: {}".format(item_where, exc)) from exc
        if symbol in owner:
            previous = owner[symbol]
            detail = ("listed twice" if previous == profile
                      else "already in profile {!r}".format(previous))
            raise ConfigError("{}: {} is {}".format(item_where, symbol, detail))
        owner[symbol] = profile
        symbols.append(symbol)
    return tuple(symbols)


def _parse_session_windows(raw: Any, where: str) -> tuple[SessionWindow, ...]:
    if not isinstance(raw, list):
        raise ConfigError("{}: must be a list".format(where))
    windows: list[SessionWindow] = []
    tags: dict[str, int] = {}
    for index, entry in enumerate(raw):
        item_where = "{}[{}]".format(where, index)
        if not isinstance(entry, dict):
            raise ConfigError("{}: must be an object {{tag, start, end, tz}}".format(item_where))
        for key in entry:
            if key not in ("tag", "start", "end", "tz", "timezone"):
                raise ConfigError("{}.{}: unknown setting".format(item_where, key))
        tag = entry.get("tag")
        if not isinstance(tag, str) or not tag:
            raise ConfigError("{}.tag: must be a non-empty string, got {!r}".format(
                item_where, tag))
        if tag in tags:
            raise ConfigError("{}.tag: {!r} is already session_windows[{}]".format(
                item_where, tag, tags[tag]))
        tags[tag] = index
        if "start" not in entry or "end" not in entry:
            raise ConfigError("{}: needs 'start' and 'end'".format(item_where))
        window = _parse_daily({"start": entry["start"], "end": entry["end"],
                               "tz": entry.get("tz", "UTC")}, item_where)
        label = entry.get("timezone", window.zone.key)
        _parse_zone(label, item_where + ".timezone")
        windows.append(SessionWindow(tag, window, label))
    return tuple(windows)


def load_calendar(path: str | Path | None = None) -> TradingCalendar:
    """The calendar in the JSON file at ``path`` (default: the shipped ``config/calendar.json``).
    Raises ConfigError naming the file or the entry."""
    target = Path(path) if path is not None else DEFAULT_CALENDAR_PATH
    try:
        with target.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError("calendar file {}: {}".format(target, exc.strerror)) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError("calendar file {}: not JSON ({})".format(target, exc)) from exc
    return TradingCalendar.from_dict(data)
