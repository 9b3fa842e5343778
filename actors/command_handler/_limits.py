"""Rate limits and the raw intake gate, driven by an injected clock.

Pure: no sockets, no Redis. ``clock`` is any ``() -> float`` in seconds (``time.monotonic`` in
the actor; a test's own counter in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Dict

Clock = Callable[[], float]


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate_per_second``; ``take()`` spends one."""

    def __init__(self, rate_per_second: float, burst: float, clock: Clock) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate_per_second
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def take(self) -> bool:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def available(self) -> float:
        self._refill()
        return self.tokens


class PerCommandLimiter:
    """One bucket per command name: ``per_minute`` in any minute, refilled evenly."""

    def __init__(self, per_minute: int, clock: Clock) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        self.per_minute = per_minute
        self.clock = clock
        self.buckets: Dict[str, TokenBucket] = {}

    def take(self, cmd: str) -> bool:
        bucket = self.buckets.get(cmd)
        if bucket is None:
            bucket = self.buckets[cmd] = TokenBucket(self.per_minute / 60.0, self.per_minute,
                                                     self.clock)
        return bucket.take()


class RawGate:
    """The first two checks, on the raw bytes: the size cap, then the raw rate limit (an
    oversize message spends no token). ``admit`` returns None or the refusal code.

    Two lanes: a validly signed command spends a token of ``signed`` (its own bucket), anything
    else one of ``bucket``, so a flood of unsigned junk cannot shut out a signed command."""

    def __init__(self, max_bytes: int, bucket: TokenBucket,
                 signed: TokenBucket | None = None) -> None:
        self.max_bytes = max_bytes
        self.bucket = bucket
        self.signed = signed

    def admit(self, size: int, signed: bool = False) -> str | None:
        if size > self.max_bytes:
            return "too_large"
        bucket = self.signed if signed and self.signed is not None else self.bucket
        if not bucket.take():
            return "rate_limited"
        return None


class RejectionTally:
    """Counts refusals made before a message is read (so with no req_id to answer) and lets
    them be reported at most once per ``interval`` seconds: a flood gets a few results that
    carry counts, not one result per message. The first refusal after a quiet interval is
    due at once."""

    def __init__(self, interval: float, clock: Clock) -> None:
        self.interval = interval
        self.clock = clock
        self.pending: Dict[str, int] = {}
        self.last_report = float("-inf")

    def add(self, code: str) -> None:
        self.pending[code] = self.pending.get(code, 0) + 1

    def due(self) -> Dict[str, int] | None:
        """The counts to report now (and forget), or None."""
        if not self.pending:
            return None
        now = self.clock()
        if now - self.last_report < self.interval:
            return None
        counts, self.pending = self.pending, {}
        self.last_report = now
        return counts
