"""The heartbeat's context blocks in the seed's shapes (seed 001 sections 6.2.1-6.2.3 and 9.1,
seed 000 Stage 1 item 3 and section 4.2), from what the actors report in their statuses.

Pure functions: each takes plain data (an actor's ``status()`` as heartbeat received it, its age,
the time) and returns one block. Every value is a plain JSON type of the shape the predecessor's
consumers read (its debug viewer passes strings straight to table cells and reads times as
seconds), so a missing input gives ``None`` or an empty block, never a different type.

Times inside the blocks: ``*_ts`` float Unix seconds, ``*_utc`` ISO 8601 with offset,
``*_seconds`` float seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

# The seed's words for why the feed idles (seed 001 section 9.1, context.idle_reason).
IDLE_CALENDAR = "calendar_closed"
IDLE_FXCM_BACKOFF = "fxcm_backoff"
IDLE_FXCM_UNAVAILABLE = "fxcm_temporarily_unavailable"
IDLE_REPLAY_FINISHED = "replay_finished"

# heartbeat.state (seed 001 section 9.1): what the feed as a whole is doing.
WARMUP = "warmup"
WARMUP_CACHE = "warmup_cache"
STREAM = "stream"
IDLE = "idle"


def number(value: Any) -> float | None:
    """A finite float, or None (NaN, infinity, bool and non-numbers are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def iso_seconds(seconds: float | None) -> str | None:
    """Unix seconds -> ``2025-12-05T06:00:00.123456+00:00`` (the seed's backoff ``*_ts``)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def feed_state(feed_phase: str, diag_state: str | None) -> str:
    """``heartbeat.state``: warmup_cache while the store's tail goes out at start, warmup until
    the warmup has published its tail (or while a failed warmup retries), then stream, or idle
    while the diagnostic state is IDLE or DISCONNECTED (seed 000's state is in the context)."""
    if feed_phase == "warmup_cache":
        return WARMUP_CACHE
    if feed_phase != "ready":
        return WARMUP
    if diag_state in ("IDLE", "DISCONNECTED"):
        return IDLE
    return STREAM


def idle_reason(diag_state: str | None, market_open: bool, login_retry_in: float | None,
                session_reason: str) -> str | None:
    """``context.idle_reason`` in the seed's words, or None when not idle."""
    if diag_state == "DISCONNECTED":
        return IDLE_FXCM_BACKOFF if login_retry_in else IDLE_FXCM_UNAVAILABLE
    if diag_state == "IDLE":
        if not market_open:
            return IDLE_CALENDAR
        if "replay" in session_reason:
            return IDLE_REPLAY_FINISHED
        return "market_closed"
    return None


def _backoff(active: bool, sleep_seconds: float | None, remaining: float | None,
             fail_count: int, last_error: str | None, last_error_ts: float | None,
             now: float) -> dict[str, Any]:
    remaining = max(0.0, remaining or 0.0) if active else 0.0
    return {
        "active": bool(active and remaining > 0),
        "sleep_seconds": round(max(0.0, sleep_seconds or 0.0), 3),
        "remaining_seconds": round(remaining, 3),
        "fail_count": int(fail_count),
        "last_error": last_error,
        "last_error_ts": iso_seconds(last_error_ts),
        "resume_at": iso_seconds(now + remaining) if active and remaining > 0 else None,
    }


def backoff_blocks(session: Mapping[str, Any] | None, session_age: float,
                   publisher: Mapping[str, Any] | None, publisher_age: float,
                   now: float) -> dict[str, Any]:
    """``context.diag.backoff``: one block per subsystem, as the predecessor's viewer reads
    it: ``fxcm_history`` and ``redis`` always, ``fxcm_login`` too (a block of ours)."""
    backoff = session.get("backoff") if isinstance(session, Mapping) else None
    backoff = backoff if isinstance(backoff, Mapping) else {}
    history_failures = int(number(backoff.get("history_failures")) or 0)
    history_left = (number(backoff.get("history_paused_for")) or 0.0) - session_age
    login_failures = int(number(backoff.get("login_failures")) or 0)
    login_left = (number(backoff.get("next_login_in")) or 0.0) - session_age
    redis = publisher.get("redis") if isinstance(publisher, Mapping) else None
    redis = redis if isinstance(redis, Mapping) else {}
    redis_failures = int(number(redis.get("failures")) or 0)
    redis_down = redis.get("connected") is False and redis.get("mode") not in (None, "off")
    redis_left = (number(redis.get("retry_in_seconds")) or 0.0) - publisher_age
    down_seconds = number(redis.get("down_seconds"))
    return {
        "fxcm_history": _backoff(
            history_failures > 0, number(backoff.get("history_delay_seconds")), history_left,
            history_failures, text(backoff.get("last_history_error")),
            number(backoff.get("last_history_error_ts")), now),
        "fxcm_login": _backoff(
            login_failures > 0, number(backoff.get("login_delay_seconds")), login_left,
            login_failures, text(backoff.get("last_login_error")),
            number(backoff.get("last_login_error_ts")), now),
        "redis": _backoff(
            redis_down, number(redis.get("retry_in_seconds")), redis_left, redis_failures,
            text(redis.get("last_error")),
            now - down_seconds if redis_down and down_seconds is not None else None, now),
    }


def history_block(session: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``context.history``: the history quota as fxcm_session reports it, in the seed's keys
    (seed 001 section 6.2.1); None without a session status."""
    quota = session.get("quota") if isinstance(session, Mapping) else None
    if not isinstance(quota, Mapping):
        return None
    priority = quota.get("priority")
    priority = priority if isinstance(priority, Mapping) else {}
    skipped = quota.get("skipped_polls")
    state = text(quota.get("throttle_state")) or "ok"
    return {
        "calls_60s": int(number(quota.get("calls_60s")) or 0),
        "limit_60s": int(number(quota.get("limit_60s")) or 0),
        "calls_3600s": int(number(quota.get("calls_3600s")) or 0),
        "limit_3600s": int(number(quota.get("limit_3600s")) or 0),
        "priority": {
            "targets": [str(target) for target in priority.get("targets") or []
                        if isinstance(target, str)],
            "reserve_per_min": int(number(priority.get("reserve_per_min")) or 0),
            "reserve_per_hour": int(number(priority.get("reserve_per_hour")) or 0),
            "calls_60s": int(number(priority.get("calls_60s")) or 0),
            "calls_3600s": int(number(priority.get("calls_3600s")) or 0),
        },
        "throttle_state": state,
        "next_slot_seconds": round(number(quota.get("next_slot_seconds")) or 0.0, 3),
        "last_denied_reason": text(quota.get("last_denied_reason")),
        "skipped_polls": [
            {"symbol": str(entry.get("symbol")), "tf": str(entry.get("tf")),
             "count": int(number(entry.get("count")) or 0)}
            for entry in (skipped if isinstance(skipped, list) else [])
            if isinstance(entry, Mapping)],
    }


def price_stream_block(telemetry: Mapping[str, Any] | None, telemetry_age: float | None,
                       channel: str | None, queue_depth: int | None, now: float,
                       cadence: dict[str, Any] | None) -> dict[str, Any]:
    """``context.price_stream`` (seed 000 Stage 1 item 3; seed 001 section 9.1) from the
    snapshotter's telemetry: ``symbols_state`` a list of ``{symbol, bid, ask, mid, tick_ts,
    tick_age_seconds}``, every ``*_ts`` in seconds, ``state`` ok/waiting/stale/stopped, or
    ``stopped`` (and ``interval_seconds`` 0) when the snapshotter reports nothing.
    ``queue_depth``: ticks waiting in fxcm_session's hand-over queue (the price stream's
    queue)."""
    if not isinstance(telemetry, Mapping):
        return {"channel": channel, "interval_seconds": 0.0, "symbols": [], "symbols_state": [],
                "last_snap_ts": None, "last_tick_ts": None, "tick_silence_seconds": None,
                "queue_depth": queue_depth or 0, "thread_alive": False, "state": "stopped",
                "adaptive_cadence": cadence}
    age = telemetry_age or 0.0
    rows = []
    states = telemetry.get("symbols_state")
    if isinstance(states, Mapping):
        for symbol in sorted(states):
            entry = states[symbol]
            if not isinstance(entry, Mapping):
                continue
            tick_ts = number(entry.get("tick_ts"))
            rows.append({
                "symbol": str(symbol),
                "bid": number(entry.get("bid")),
                "ask": number(entry.get("ask")),
                "mid": number(entry.get("mid")),
                "tick_ts": tick_ts,
                "tick_age_seconds": round(max(0.0, now - tick_ts), 3)
                if tick_ts is not None else None,
            })
    last_snap = number(telemetry.get("last_snap_ts"))
    last_tick = number(telemetry.get("last_tick_ts"))
    silence = number(telemetry.get("tick_silence_seconds"))
    state = text(telemetry.get("state")) or "stopped"
    return {
        "channel": channel,
        "interval_seconds": number(telemetry.get("interval_seconds")) or 0.0,
        "symbols": [row["symbol"] for row in rows],
        "symbols_state": rows,
        # the snapshotter reports these two in milliseconds; the seed's consumers read seconds
        "last_snap_ts": last_snap / 1000.0 if last_snap is not None else None,
        "last_tick_ts": last_tick / 1000.0 if last_tick is not None else None,
        "tick_silence_seconds": round(silence + age, 3) if silence is not None else None,
        "queue_depth": int(queue_depth or 0),
        "thread_alive": state != "stopped",
        "state": state,
        "adaptive_cadence": cadence,
    }


def tick_cadence_block(tick_silence: float | None, stale_seconds: float, market_open: bool,
                       history_paused: bool, poll_seconds: float, idle_multiplier: float,
                       timeframes: list[str]) -> dict[str, Any]:
    """``context.tick_cadence`` (seed 001 section 6.2.3): how the tick stream looks and how often
    history is asked, in the seed's words. Here the cadence does not follow the ticks (live
    bars come from the ticks, history only repairs): the repair scan runs every
    ``poll_seconds``, a polled target that found nothing waits ``idle_multiplier`` times
    longer; ``reason`` and ``state`` describe the tick stream as the seed's controller did."""
    if not market_open:
        state, reason, multiplier = "stale", "calendar_closed", idle_multiplier
    elif tick_silence is None:
        state, reason, multiplier = "stale", "no_ticks", idle_multiplier
    elif tick_silence > stale_seconds:
        state, reason, multiplier = "stale", "tick_idle", idle_multiplier
    elif tick_silence > stale_seconds / 2.0:
        state, reason, multiplier = "lag", "tick_lag", 1.0
    else:
        state, reason, multiplier = "ok", "live_ticks", 1.0
    cadence = round(poll_seconds, 3)
    return {
        "state": state,
        "history_state": "paused" if history_paused or not market_open else "active",
        "tick_silence_seconds": round(tick_silence, 3) if tick_silence is not None else None,
        "cadence_seconds": {tf: cadence for tf in timeframes},
        "next_poll_in_seconds": {tf: cadence for tf in timeframes},
        "multiplier": round(multiplier, 3),
        "reason": reason,
    }


_TASK_STATES = {"running": "running", "starting": "running", "restarting": "error",
                "faulted": "error", "stopping": "done", "stopped": "done",
                "detached": "disabled"}


def supervisor_block(runtime: Mapping[str, Any], published: Mapping[str, Any],
                     started_at: float | None, now: float) -> dict[str, Any]:
    """``context.supervisor`` in the shape of the predecessor's async supervisor (its viewer's
    SUPERVISOR mode): each actor's mailbox as a queue, each actor as a task, the router's
    figures as metrics, the publisher's counts per channel as ``publish_counts``."""
    actors = _mapping(runtime.get("actors"))
    router = _mapping(runtime.get("router"))
    queues: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for name in sorted(actors):
        view = actors[name]
        if not isinstance(view, Mapping):
            continue
        depth = int(number(view.get("mailbox_depth")) or 0)
        dead = int(number(view.get("dead_letters")) or 0)
        queues.append({"name": name, "size": depth,
                       "peak": int(number(view.get("mailbox_peak")) or 0),
                       "inflight": int(number(view.get("inflight")) or 0),
                       "dropped": dead,
                       "blocked": bool(view.get("blocked"))})
        tasks.append({"name": name,
                      "state": _TASK_STATES.get(str(view.get("state")), "running"),
                      "errors": int(number(view.get("restarts")) or 0),
                      "last_error": text(view.get("last_exit"))})
    counts = {str(channel): int(number(count) or 0) for channel, count in published.items()}
    backpressure = int(number(router.get("backpressure_events")) or 0)
    depth_total = sum(queue["size"] for queue in queues)
    return {
        "state": "running",
        "loop_alive": True,
        "started_at": started_at,
        "backpressure": any(queue["blocked"] for queue in queues),
        "last_error": None,
        "queues": queues,
        "tasks": tasks,
        "publish_counts": counts,
        "backpressure_events": backpressure,
        "uptime_seconds": round(number(router.get("uptime_seconds")) or 0.0, 3),
        "metrics": {
            "total_enqueued": int(number(router.get("published")) or 0)
            + int(number(router.get("sent")) or 0),
            "total_dropped": sum(queue["dropped"] for queue in queues),
            "queue_depth_total": depth_total,
            "publishes_total": sum(counts.values()),
            "active_tasks": sum(1 for task in tasks if task["state"] == "running"),
            "task_errors": sum(task["errors"] for task in tasks),
        },
    }
