"""Readiness beyond "every required actor runs": the feed must move.

``/readyz`` fails (503, with the reasons) when

- the market is open and no message on a ``health.flow_topics`` prefix (``tick.``, ``bar.``) was
  published for ``health.feed_stall_seconds`` (the router counts them per prefix), or
- a producer has been held back by backpressure (a full lossless mailbox) for that long, or
- an actor that warms the feed up (the history poller: its status carries ``feed.phase``) has not
  reached ``ready``: consumers would read a partial history (seed 002's ``warmup`` state).

The first check applies only to a live feed (the ``sim`` and ``forexconnect`` brokers: a replay
ends when its file does) on a host that runs an actor owning a flow topic. A market that just
opened gets the full interval before silence counts. Pure: the host feeds it the router's
figures and the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any


class FeedWatch:
    def __init__(self, stall_seconds: float, market_open: Callable[[int], bool] | None,
                 now: float) -> None:
        """``market_open(now_ms)``; None when no flow is expected on this host."""
        self.stall_seconds = stall_seconds
        self.market_open = market_open
        self.last_total: int | None = None
        self.last_move = now
        self.was_open = False

    def observe(self, flow: Mapping[str, int], now: float, now_ms: int) -> None:
        """Take the router's per-prefix counts (called about once a second)."""
        total = sum(int(count) for count in flow.values())
        if total != self.last_total:
            self.last_total = total
            self.last_move = now
        is_open = self.market_open is not None and self.market_open(now_ms)
        if is_open and not self.was_open:
            self.last_move = max(self.last_move, now)  # the silence of a closed market is fine
        self.was_open = is_open

    def reasons(self, actors: Mapping[str, Mapping[str, Any]], now: float) -> list[str]:
        """Why the feed is not ready (empty: it is)."""
        stall = self.stall_seconds
        if stall <= 0:
            return []
        reasons = []
        silent = now - self.last_move
        if self.was_open and silent > stall:
            reasons.append("no tick or bar published for {:.0f} s with the market open "
                           "(health.feed_stall_seconds {:g})".format(silent, stall))
        for name, figures in sorted(actors.items()):
            held = float(figures.get("blocked_seconds") or 0.0)
            if held > stall:
                full = ", ".join(figures.get("blocked_by") or []) or "?"
                reasons.append("{} held back by backpressure for {:.0f} s (full: {}; "
                               "health.feed_stall_seconds {:g})".format(name, held, full, stall))
        return reasons


def warmup_reasons(statuses: Mapping[str, Mapping[str, Any]],
                   warming: Iterable[str]) -> list[str]:
    """Why the feed is still warming up, from the last status of each running actor that
    warms it up (``Actor.warms_up_feed``: the history poller's ``feed.phase``)."""
    reasons = []
    for name in sorted(warming):
        feed = (statuses.get(name) or {}).get("feed")
        if not isinstance(feed, Mapping) or "phase" not in feed:
            reasons.append("{}: no feed phase reported yet".format(name))
        elif feed["phase"] != "ready":
            reasons.append("{}: feed phase {} ({})".format(
                name, feed["phase"], feed.get("reason") or "?"))
    return reasons
