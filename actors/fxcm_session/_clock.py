"""The broker's clock from ours: the server-minus-local offset, estimated from tick times.

With the real SDK, tick times are FXCM's clock and the pipeline clock is ours; bars close on the
pipeline clock, so a local clock ahead of the server closes minutes before their last ticks
arrive (late ticks), one behind closes them late. ``ClockSkew`` estimates the offset so that
the pipeline clock can run on server time (``local + offset``).

Why this statistic: a tick stamped ``e`` by the server and received at local time ``r`` gives
``e - r = offset - delay`` with ``delay >= 0`` (network, queues, the SDK's threads): latency
only ever makes a tick look older. So the upper envelope of ``e - r`` is ``offset - (the
smallest delay)``, the best estimate there is, and a clock built on it is at most that smallest
delay behind the server, never ahead. Per bucket of ``bucket_ms`` of local time the largest
sample is kept; the estimate is the (lower) median of the newest ``buckets`` bucket maxima.
A single bogus time (a tick stamped in the future) moves one bucket, not the estimate; a real
step of either clock (an NTP correction) takes over once it holds half the buckets. Only
buckets with ticks count, so a quiet weekend keeps the last estimate. Samples further than
``max_abs_ms`` from zero are not a clock difference but a wrong time: discarded, counted.

Pure: times are passed in. Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Optional

DEFAULT_BUCKET_MS = 10000
DEFAULT_BUCKETS = 9
DEFAULT_MAX_ABS_MS = 24 * 3600 * 1000


class ClockSkew(object):
    """See the module docstring. ``observe`` per tick, ``offset_ms`` for the estimate (None
    before the first tick)."""

    def __init__(self, bucket_ms: int = DEFAULT_BUCKET_MS, buckets: int = DEFAULT_BUCKETS,
                 max_abs_ms: int = DEFAULT_MAX_ABS_MS) -> None:
        if bucket_ms <= 0 or buckets <= 0:
            raise ValueError("bucket_ms and buckets must be positive")
        self.bucket_ms = bucket_ms
        self.buckets = buckets
        self.max_abs_ms = max_abs_ms
        self._maxima: Deque[List[int]] = deque()  # [bucket index, largest sample]
        self._estimate: Optional[int] = None
        self.samples = 0
        self.discarded = 0

    def observe(self, event_ms: int, local_ms: int) -> None:
        sample = event_ms - local_ms
        if abs(sample) > self.max_abs_ms:
            self.discarded += 1
            return
        self.samples += 1
        bucket = local_ms // self.bucket_ms
        maxima = self._maxima
        if maxima and maxima[-1][0] == bucket:
            if sample <= maxima[-1][1]:
                return  # nothing changes
            maxima[-1][1] = sample
        elif maxima and bucket < maxima[-1][0]:
            # Our clock stepped back: that bucket is gone; fold into the newest one.
            if sample > maxima[-1][1]:
                maxima[-1][1] = sample
        else:
            maxima.append([bucket, sample])
            while len(maxima) > self.buckets:
                maxima.popleft()
        values = sorted(entry[1] for entry in maxima)
        self._estimate = values[(len(values) - 1) // 2]

    def offset_ms(self) -> Optional[int]:
        """Server minus local, in ms (add it to the local clock for server time)."""
        return self._estimate

    def status(self) -> Dict[str, Any]:
        estimate = self._estimate
        return {"skew_seconds": None if estimate is None else round(estimate / 1000.0, 3),
                "samples": self.samples, "discarded": self.discarded,
                "buckets": len(self._maxima)}
