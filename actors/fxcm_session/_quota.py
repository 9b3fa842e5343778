"""The history quota (seed 001, sections 6.2 and 6.2.1): pure logic, clock injected.

Every history call to the broker asks ``HistoryQuota.acquire(target, priority, now)`` first.

- Hard caps: at most ``max_calls_per_min`` calls in any 60 s and ``max_calls_per_hour`` in any
  3600 s (sliding windows). Nobody passes them, priority or not.
- Reserve: ``priority_reserve_per_min`` / ``_per_hour`` calls of each window are kept for the
  priority targets: other targets are refused once the window is used up to ``max - reserve``.
- Load = the fuller of the two windows, as a fraction of its cap. At ``min_interval`` load and
  above, each target waits its ``min_interval_seconds`` (per timeframe) between calls; at
  ``critical`` load and above only priority targets are served. ``warn`` and ``reserve`` name
  the states in between, for status.

A refusal says why and when to retry; every refusal is counted by reason and by target (the
seed's ``skipped_polls``). ``status`` carries the seed's ``context.history`` block too (seed 001
section 6.2.1: ``calls_60s``, ``limit_60s``, ..., ``throttle_state``, ``next_slot_seconds``,
``last_denied_reason`` in the seed's words, ``skipped_polls``).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Optional, Tuple

from protocol.errors import ConfigError, ProtocolError

OK = "ok"
WARN = "warn"
RESERVE = "reserve"
CRITICAL = "critical"


@dataclass(frozen=True)
class QuotaSettings(object):
    """``fxcm_session.quota``: calls per minute and hour, the pause between calls per
    timeframe, the priority targets (``SYMBOL:tf``) and their reserve, and the load
    thresholds (fractions of the quota)."""

    max_calls_per_min: int
    max_calls_per_hour: int
    min_interval_seconds: Dict[str, float]
    priority_targets: Tuple[str, ...]
    priority_reserve_per_min: int
    priority_reserve_per_hour: int
    load_min_interval: float
    load_warn: float
    load_reserve: float
    load_critical: float

    @classmethod
    def from_mapping(cls, data: Any, key: str = "fxcm_session.quota") -> "QuotaSettings":
        """Checked values of the quota section; a ConfigError names ``<key>.<field>``."""
        from config.fields import Fields
        from protocol.market import normalize_symbol, normalize_tf

        own = Fields(data, key)
        per_min = own.integer("max_calls_per_min", minimum=1)
        per_hour = own.integer("max_calls_per_hour", minimum=1)
        reserve_min = own.integer("priority_reserve_per_min")
        reserve_hour = own.integer("priority_reserve_per_hour")
        if not 0 <= reserve_min < per_min:
            raise ConfigError("{}.priority_reserve_per_min: must be within "
                              "0..max_calls_per_min-1".format(key))
        if not 0 <= reserve_hour < per_hour:
            raise ConfigError("{}.priority_reserve_per_hour: must be within "
                              "0..max_calls_per_hour-1".format(key))
        thresholds = own.mapping_of("load_thresholds")
        levels = Fields(thresholds, key + ".load_thresholds")
        values = [levels.number(name) for name in ("min_interval", "warn", "reserve",
                                                   "critical")]
        if values != sorted(values) or not values[0] >= 0 or values[-1] > 1:
            raise ConfigError("{}.load_thresholds: must satisfy 0 <= min_interval <= warn <= "
                              "reserve <= critical <= 1, got {}".format(key, dict(thresholds)))
        intervals = {}  # type: Dict[str, float]
        for tf, seconds in own.mapping_of("min_interval_seconds").items():
            try:
                canonical = normalize_tf(tf)  # "m1" and "1m" name one key
            except ProtocolError as exc:
                raise ConfigError("{}.min_interval_seconds.{}: {}".format(key, tf, exc)) from None
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise ConfigError("{}.min_interval_seconds.{}: must be a number >= 0".format(
                    key, tf))
            intervals[canonical] = float(seconds)
        targets = []
        for index, target in enumerate(own.strings("priority_targets")):
            symbol, _, tf = target.rpartition(":")
            try:
                targets.append("{}:{}".format(normalize_symbol(symbol), normalize_tf(tf)))
            except ProtocolError:
                raise ConfigError("{}.priority_targets[{}]: must be SYMBOL:tf, got {!r}".format(
                    key, index, target)) from None
        return cls(
            max_calls_per_min=per_min, max_calls_per_hour=per_hour,
            min_interval_seconds=intervals, priority_targets=tuple(targets),
            priority_reserve_per_min=reserve_min, priority_reserve_per_hour=reserve_hour,
            load_min_interval=values[0], load_warn=values[1], load_reserve=values[2],
            load_critical=values[3])

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "QuotaSettings":
        """The same as ``from_mapping`` (the older name)."""
        return cls.from_mapping(data)


class Decision(object):
    __slots__ = ("allowed", "reason", "retry_after")

    def __init__(self, allowed: bool, reason: str = "", retry_after: float = 0.0) -> None:
        self.allowed = allowed
        self.reason = reason
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return "Decision(allowed={}, reason={!r}, retry_after={:.3f})".format(
            self.allowed, self.reason, self.retry_after)


class HistoryQuota(object):
    """Sliding-window quota for history calls. Times are seconds (any monotonic clock)."""

    def __init__(self, settings: QuotaSettings) -> None:
        self.settings = settings
        self._minute: Deque[float] = deque()
        self._hour: Deque[float] = deque()
        self._last_call: Dict[str, float] = {}
        self.denied: Counter[str] = Counter()
        self.denied_targets: Counter[str] = Counter()
        self.granted = 0
        self.last_denied_reason = ""
        self.last_denied_seed_reason: Optional[str] = None
        self._priority_minute: Deque[float] = deque()
        self._priority_hour: Deque[float] = deque()

    @staticmethod
    def target(symbol: str, tf: str) -> str:
        return "{}:{}".format(symbol, tf)

    def is_priority(self, target: str) -> bool:
        return target in self.settings.priority_targets

    def _expire(self, now: float) -> None:
        for window, span in ((self._minute, 60.0), (self._hour, 3600.0),
                             (self._priority_minute, 60.0), (self._priority_hour, 3600.0)):
            while window and now - window[0] >= span:
                window.popleft()

    def load(self, now: float) -> float:
        self._expire(now)
        settings = self.settings
        return max(len(self._minute) / float(settings.max_calls_per_min),
                   len(self._hour) / float(settings.max_calls_per_hour))

    def state(self, now: float) -> str:
        load = self.load(now)
        settings = self.settings
        if load >= settings.load_critical:
            return CRITICAL
        if load >= settings.load_reserve:
            return RESERVE
        if load >= settings.load_warn:
            return WARN
        return OK

    def _window_free_in(self, window: Deque[float], span: float, allowed: int,
                        now: float) -> float:
        """Seconds until ``window`` holds fewer than ``allowed`` calls."""
        excess = len(window) - allowed
        if excess < 0:
            return 0.0
        return max(0.0, window[excess] + span - now)

    def acquire(self, target: str, now: float, priority: Optional[bool] = None) -> Decision:
        """Take one call for ``target`` if the quota allows it; else say why and when."""
        self._expire(now)
        is_priority = self.is_priority(target) if priority is None else (
            priority or self.is_priority(target))
        decision = self._decide(target, now, is_priority)
        if decision.allowed:
            self._minute.append(now)
            self._hour.append(now)
            if is_priority:
                self._priority_minute.append(now)
                self._priority_hour.append(now)
            self._last_call[target] = now
            self.granted += 1
        else:
            self.denied[decision.reason] += 1
            self.denied_targets[target] += 1
            self.last_denied_reason = decision.reason
            self.last_denied_seed_reason = self._seed_reason(decision.reason)
        return decision

    def _seed_reason(self, reason: str) -> str:
        """A refusal in the seed's words: which window was full, or the reserve."""
        if reason == "cap":
            return ("minute_quota" if len(self._minute) >= self.settings.max_calls_per_min
                    else "hour_quota")
        if reason in ("reserve", "critical"):
            return "priority_reserve"
        return reason

    def _decide(self, target: str, now: float, is_priority: bool) -> Decision:
        settings = self.settings
        minute_cap = settings.max_calls_per_min
        hour_cap = settings.max_calls_per_hour
        if len(self._minute) >= minute_cap or len(self._hour) >= hour_cap:
            wait = max(self._window_free_in(self._minute, 60.0, minute_cap, now),
                       self._window_free_in(self._hour, 3600.0, hour_cap, now))
            return Decision(False, "cap", wait)
        load = max(len(self._minute) / float(minute_cap), len(self._hour) / float(hour_cap))
        if not is_priority:
            if load >= settings.load_critical:
                wait = max(self._window_free_in(
                    self._minute, 60.0, int(minute_cap * settings.load_critical), now),
                    self._window_free_in(
                        self._hour, 3600.0, int(hour_cap * settings.load_critical), now))
                return Decision(False, "critical", max(wait, 0.001))
            minute_share = minute_cap - settings.priority_reserve_per_min
            hour_share = hour_cap - settings.priority_reserve_per_hour
            if len(self._minute) >= minute_share or len(self._hour) >= hour_share:
                wait = max(self._window_free_in(self._minute, 60.0, minute_share, now),
                           self._window_free_in(self._hour, 3600.0, hour_share, now))
                return Decision(False, "reserve", max(wait, 0.001))
        if load >= settings.load_min_interval:
            tf = target.rpartition(":")[2]
            interval = settings.min_interval_seconds.get(tf, 0.0)
            last = self._last_call.get(target)
            if interval and last is not None and now - last < interval:
                return Decision(False, "min_interval", interval - (now - last))
        return Decision(True)

    def next_slot_seconds(self, now: float) -> float:
        """Seconds until an ordinary (not priority) target could be served by the windows."""
        settings = self.settings
        minute_share = settings.max_calls_per_min - settings.priority_reserve_per_min
        hour_share = settings.max_calls_per_hour - settings.priority_reserve_per_hour
        return max(self._window_free_in(self._minute, 60.0, minute_share, now),
                   self._window_free_in(self._hour, 3600.0, hour_share, now))

    def status(self, now: float) -> Dict[str, Any]:
        self._expire(now)
        settings = self.settings
        skipped = sorted(self.denied_targets.items(), key=lambda item: (-item[1], item[0]))
        return {
            "calls_last_minute": len(self._minute),
            "calls_last_hour": len(self._hour),
            "load": round(self.load(now), 4),
            "granted": self.granted,
            "denied": dict(self.denied),
            # the seed's context.history block (seed 001 section 6.2.1)
            "calls_60s": len(self._minute),
            "limit_60s": settings.max_calls_per_min,
            "calls_3600s": len(self._hour),
            "limit_3600s": settings.max_calls_per_hour,
            "priority": {
                "targets": sorted(settings.priority_targets),
                "reserve_per_min": settings.priority_reserve_per_min,
                "reserve_per_hour": settings.priority_reserve_per_hour,
                "calls_60s": len(self._priority_minute),
                "calls_3600s": len(self._priority_hour),
            },
            "throttle_state": self.state(now),
            "next_slot_seconds": round(self.next_slot_seconds(now), 3),
            "last_denied_reason": self.last_denied_seed_reason,
            "skipped_polls": [
                {"symbol": target.rpartition(":")[0], "tf": target.rpartition(":")[2],
                 "count": count} for target, count in skipped[:12]],
        }
