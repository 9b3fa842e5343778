"""history_poller's jobs and the scheduler that runs them, one history call at a time.

A job is a generator that yields ``HistoryRequest``s and receives ``HistoryReply``s (it returns
its result map). Every job runs in a lane; the scheduler always steps the first runnable job of
the highest lane, so a long job never holds up a more urgent one for more than the one call in
flight:

    LIVE     gap repairs and the derived bars they complete (a final bar is late otherwise)
    WARMUP   the start's warmup (the feed is not ready before it ends)
    COMMAND  operators' commands (warmup, backfill, tail_guard, republish_tail)
    POLL     polling the targets tick aggregation does not cover

Within a lane jobs run first come, first served; a job waiting to retry (``not_before``) lets
the next runnable one go, and a job may yield ``Pace(seconds)`` to step aside for that long (a
command publishing thousands of bars does, between chunks). ``RetryPolicy`` says what a
refusal costs: ``throttled`` waits the
broker's ``retry_after``; ``not_ready`` (the history service is not ready: not a failure) and a
timeout wait with a growing backoff and are retried up to ``not_ready_retries`` times, then the
job gets the refusal and leaves those minutes missing (never known-empty), for the next repair.

Pure: no sockets, the clock is passed in.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from bus import Backoff, Delivery
from protocol.market import HistoryReply, HistoryRequest


class Pace:
    """What a job yields to let the others run: it is stepped again after ``seconds``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


Step = HistoryRequest | Pace
Job = Generator[Step, HistoryReply | None, dict[str, Any]]

LIVE = 0
WARMUP = 1
COMMAND = 2
POLL = 3
LANES = ("live", "warmup", "command", "poll")


class Scheduled:
    """A job, its lane and where its pending request stands."""

    __slots__ = ("name", "lane", "job", "request", "reply", "not_before", "delivery",
                 "attempts", "started", "order", "job_id", "requester", "progress",
                 "progress_sent")

    def __init__(self, name: str, lane: int, job: Job, delivery: Delivery | None,
                 order: int) -> None:
        self.name = name
        self.lane = lane
        self.job = job
        self.request: HistoryRequest | None = None
        self.reply: HistoryReply | None = None
        self.not_before = 0.0
        self.delivery = delivery
        self.attempts = 0
        self.started = False
        self.order = order
        # a command's job: its id, who waits for its end, what it says of its progress
        self.job_id: str | None = None
        self.requester: str | None = None
        self.progress: dict[str, Any] = {}
        self.progress_sent = 0.0


class Scheduler:
    """The jobs by lane; ``runnable(now)`` is the one to step next."""

    def __init__(self) -> None:
        self.jobs: list[Scheduled] = []
        self._order = 0

    def add(self, name: str, lane: int, job: Job, delivery: Delivery | None = None
            ) -> Scheduled:
        self._order += 1
        item = Scheduled(name, lane, job, delivery, self._order)
        self.jobs.append(item)
        self.jobs.sort(key=lambda job: (job.lane, job.order))
        return item

    def remove(self, item: Scheduled) -> None:
        self.jobs.remove(item)

    def find(self, job_id: str) -> Scheduled | None:
        return next((item for item in self.jobs if item.job_id == job_id), None)

    def runnable(self, now: float) -> Scheduled | None:
        for item in self.jobs:
            if item.not_before <= now:
                return item
        return None

    def busy(self, lane: int | None = None, name: str | None = None) -> bool:
        return any((lane is None or item.lane == lane) and (name is None or item.name == name)
                   for item in self.jobs)

    def names(self) -> list[str]:
        return [item.name for item in self.jobs]

    def __len__(self) -> int:
        return len(self.jobs)


class RetryPolicy:
    """What to do with a reply that is not an answer: ``retry_in(item, status, retry_after)``
    returns the seconds to wait before asking again, or None to hand the reply to the job."""

    def __init__(self, not_ready_retries: int, backoff: Backoff) -> None:
        self.not_ready_retries = not_ready_retries
        self.backoff = backoff

    def retry_in(self, item: Scheduled, status: str, retry_after: float) -> float | None:
        if status == "throttled":
            return max(0.05, retry_after)  # the quota's word; not a failure
        if status in ("not_ready", "timeout"):
            if item.attempts >= self.not_ready_retries:
                return None
            item.attempts += 1
            return max(0.05, retry_after, self.backoff.compute(item.attempts))
        return None
