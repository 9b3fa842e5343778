"""The command_handler actor: Redis ``<prefix>:commands`` in, ``command.result`` out.

A thread of its own holds the Redis subscription (redis-py pubsub), reconnecting with
``bus.Backoff`` when Redis goes away (status ``redis.connected``, state ``degraded`` meanwhile;
what is published on the channel while nobody is subscribed is lost, as with any pub/sub). On
that thread each raw message meets the size cap and the raw rate limit; a refused one is only
counted there, and the counts reach the actor at most once per
``reject_report_interval_seconds``. A message that passes is handed to the actor with
``call_soon``.

On the actor's thread: JSON, schema, auth (signature, kid, ts, then the nonce with Redis
``SET NX PX``), per-command limit, allowlist (``_parse.Intake``), queue bound. A command that
passes is queued and answered ``accepted`` at once; the queue runs one step at a time
(``fxcm_bootstrap`` has up to four), each a blocking ``request(poller, "poller.<op>", args,
timeout_seconds)``. Between two steps the loop takes in what Redis delivered meanwhile, so a
long command delays intake by one step at most, and never loses it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from functools import partial
from typing import Any, Deque, Dict, List, Tuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors import base
from actors.base import Actor, handles
from actors.command_handler._auth import ANY_KID, Verifier, nonce_key, resolve_mode
from actors.command_handler._config import CommandHandlerSettings, check
from actors.command_handler._limits import (
    PerCommandLimiter,
    RawGate,
    RejectionTally,
    TokenBucket,
)
from actors.command_handler._parse import Command, Intake
from actors.command_handler._results import (
    ACCEPTED,
    ERROR,
    OK,
    RUNNING,
    CommandRefused,
    make_result,
    refusal,
)
from bus import Backoff, Delivery
from protocol.errors import BackpressureError, RequestTimeout

log = logging.getLogger("fxcm.command_handler")

RESULT_TOPIC = "command.result"
RESULT_TYPE = "command.result"
REPLY_TYPE = "poller.result"
# How often the queue is looked at between two steps (the first step starts at once).
_PUMP_SECONDS = 0.05
# A running command's progress becomes a ``running`` result at most this often.
PROGRESS_RESULT_SECONDS = 2.0
# The subscription thread's read timeout: how soon it notices a stop or a due report.
_READ_SECONDS = 0.2


class _Job:
    __slots__ = ("command", "index", "steps_done", "waiting", "deadline", "progress",
                 "progress_shown")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.index = 0
        self.steps_done: List[Dict[str, Any]] = []
        self.waiting: str | None = None  # the poller's job of the running step
        self.deadline = 0.0              # no word from it by then: timeout
        self.progress: Dict[str, Any] = {}
        self.progress_shown = 0.0

    def step_job(self) -> str:
        """The poller's job id of the current step: ``<req_id>#<step>``."""
        return "{}#{}".format(self.command.req_id, self.index + 1)


class _Subscription(threading.Thread):
    """The Redis side: subscribe, screen raw messages, reconnect with backoff."""

    def __init__(self, actor: CommandHandler, url: str, channel: str, gate: RawGate,
                 tally: RejectionTally, backoff: Backoff, timeout: float,
                 health_check: int, verifier: Verifier, verify_budget: TokenBucket,
                 answers: TokenBucket) -> None:
        super().__init__(name="{}-redis".format(actor.name), daemon=True)
        self.actor = actor
        self.verifier = verifier
        self.verify_budget = verify_budget
        self.answers = answers
        self.url = url
        self.channel = channel
        self.gate = gate
        self.tally = tally
        self.backoff = backoff
        self.timeout = timeout
        self.health_check = health_check
        self.halt = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.halt.is_set():
            client = None
            pubsub = None
            try:
                client = redis.Redis.from_url(
                    self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                    health_check_interval=self.health_check, retry=Retry(NoBackoff(), 0))
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                self._confirm(pubsub)
                failures = 0
                self.actor.call_soon(self.actor._redis_up)
                while not self.halt.is_set():
                    message = pubsub.get_message(timeout=_READ_SECONDS)
                    if message is not None and message.get("type") == "message":
                        self._screen(message["data"])
                    self._report()
            except (redis.RedisError, OSError) as exc:
                failures += 1
                delay = self.backoff.compute(failures)
                self.actor.call_soon(partial(self.actor._redis_down,
                                             "{}: {}".format(type(exc).__name__, exc), delay))
                self._report()
                self.halt.wait(delay)
            finally:
                for closable in (pubsub, client):
                    if closable is not None:
                        try:
                            closable.close()
                        except Exception:  # closing a broken connection: nothing to do
                            pass

    def _confirm(self, pubsub: Any) -> None:
        """Wait for Redis to confirm the subscription: from then on nothing is missed."""
        deadline = time.monotonic() + self.timeout
        while not self.halt.is_set():
            message = pubsub.get_message(timeout=_READ_SECONDS)
            if message is not None and message.get("type") == "subscribe":
                return
            if time.monotonic() > deadline:
                raise redis.TimeoutError("no confirmation of SUBSCRIBE {} within {} s".format(
                    self.channel, self.timeout))

    def _screen(self, data: Any) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        code = self.gate.admit(len(data), len(data) <= self.gate.max_bytes
                               and self._validly_signed(data))
        if code is None:
            self.actor.call_soon(partial(self.actor._on_raw, data))
            return
        self.tally.add(code)
        if code == "rate_limited":
            req_id = _req_id_of(data)
            # The sender can be told (a legacy command without req_id cannot), up to a rate:
            # beyond it the counts of the tally's summary results cover it.
            if req_id is not None and self.answers.take():
                self.actor.call_soon(partial(self.actor._on_dropped, req_id))

    def _validly_signed(self, data: bytes) -> bool:
        """Whether ``data`` is a command with a right signature (kid, nonce and ts are checked
        later, on the actor): such a command takes the signed lane of the rate limit. Checking
        costs a JSON parse, so at most ``verify_budget`` messages a second are checked."""
        if b'"auth"' not in data or not self.verify_budget.take():
            return False
        try:
            message = json.loads(data)
            auth = message["auth"]
            return self.verifier.signature_holds(
                str(message["cmd"]), str(message["req_id"]), message["ts"], message["args"],
                str(auth["kid"]), str(auth["nonce"]), str(auth["sig"]))
        except (ValueError, TypeError, KeyError, RecursionError):
            return False

    def _report(self) -> None:
        counts = self.tally.due()
        if counts:
            self.actor.call_soon(partial(self.actor._on_unread_refusals, counts))


class CommandHandler(Actor):
    """Validates commands from Redis and runs them on the history poller, one at a time.

    Settings (section ``command_handler``): see ``config/runtime_settings.json`` and the
    package docstring."""

    subscriptions = ()

    def __init__(self, name: str, settings: Dict[str, Any] | None = None) -> None:
        super().__init__(name, settings)
        self.queue: Deque[_Job] = deque()
        self.commands: Dict[Tuple[str, str], int] = {}   # (cmd, outcome) -> count
        self.rejections: Dict[str, int] = {}
        self.accepted = 0
        self.late_done = 0
        self.last_accepted_ts = 0.0
        self.ignored_fields = 0
        # the predecessor's fxcm_commands_total{type, result}: result ok, error or ignored
        self.predecessor_counts: Dict[Tuple[str, str], int] = {}
        self.redis_connected = False
        self.redis_off = False
        self.redis_reconnects = 0
        self.redis_last_error = ""
        self.redis_retry_at = 0.0
        self.redis_since = 0.0
        self.last_result: Dict[str, Any] = {}
        self._ever_connected = False
        self._subscription: _Subscription | None = None
        self._nonces: redis.Redis | None = None
        self.mode = "off"
        self.kids: List[str] = []
        self.channel = ""

    @classmethod
    def check_settings(cls, settings: Dict[str, Any]) -> None:
        check(settings)

    # -- lifecycle -----------------------------------------------------------------------------

    def on_start(self) -> None:
        config = self.config = CommandHandlerSettings.from_mapping(self.settings)
        mode, keys = resolve_mode(config.auth_mode, os.environ)
        verifier = Verifier(mode, keys, config.skew_seconds)
        self.mode = mode
        self.kids = verifier.kids
        self.channel = config.commands_channel
        self.poller = config.poller
        self.timeout = config.timeout_seconds
        self.max_queued = config.max_queued
        self.nonce_ttl_ms = int(config.nonce_ttl_seconds * 1000)
        self.redis_timeout = config.redis_timeout_seconds
        self.intake = Intake(list(config.symbols), verifier,
                             PerCommandLimiter(config.per_command_per_minute, time.monotonic),
                             list(config.allowlist))
        self.every(_PUMP_SECONDS, self._run_next_step)
        if not config.redis_required:
            self.redis_off = True
            self.set_state(base.RUNNING, "redis off (redis.required false): no commands")
            log.warning("%s: redis.required is false: no command channel", self.name)
            return
        self.url = config.redis_url
        self._subscription = _Subscription(
            self, self.url, self.channel,
            RawGate(config.max_bytes,
                    TokenBucket(config.rate_limit_per_second, config.rate_burst,
                                time.monotonic),
                    TokenBucket(config.signed_rate_limit_per_second, config.signed_rate_burst,
                                time.monotonic)),
            RejectionTally(config.reject_report_interval_seconds, time.monotonic),
            Backoff.from_settings(config.redis_backoff),
            self.redis_timeout, config.redis_health_check_seconds, verifier,
            TokenBucket(config.verify_per_second, max(1, int(config.verify_per_second)),
                        time.monotonic),
            TokenBucket(config.rate_limited_results_per_second,
                        max(1, int(config.rate_limited_results_per_second)),
                        time.monotonic))
        self._subscription.start()
        log.info("%s: commands from %s, auth %s%s, run by %s", self.name, self.channel, mode,
                 " (kids: {})".format(", ".join(self.kids)) if self.kids else "", self.poller)
        if mode == "rolling" and self.kids == [ANY_KID]:
            log.warning("%s: FXCM_HMAC_SECRET is set without FXCM_HMAC_KID, as the predecessor "
                        "had it: signed commands are verified (any kid), UNSIGNED COMMANDS ARE "
                        "ACCEPTED (its producers send them unsigned). Set FXCM_HMAC_KID or "
                        "command_handler.auth_mode=required to make signatures mandatory",
                        self.name)

    def on_stop(self) -> None:
        while self.queue:
            job = self.queue.popleft()
            if job.index:
                message = "the command handler stopped after step {} of {}".format(
                    job.index, len(job.command.steps))
                result: Dict[str, Any] | None = {"steps": job.steps_done}
            else:
                message = "the command handler stopped before running it"
                result = None
            self._finish(job, ERROR, code="cancelled", message=message, result=result)

    def on_close(self) -> None:
        subscription = self._subscription
        if subscription is not None:
            subscription.halt.set()
            subscription.join(self.redis_timeout + 2 * _READ_SECONDS + 1.0)
            self._subscription = None
        if self._nonces is not None:
            self._nonces.close()
            self._nonces = None

    # -- from the subscription thread (through call_soon) --------------------------------------

    def _redis_up(self) -> None:
        if self._ever_connected:
            self.redis_reconnects += 1
            log.info("%s: subscribed to %s again", self.name, self.channel)
        self._ever_connected = True
        self.redis_connected = True
        self.redis_since = time.time()
        self.redis_retry_at = 0.0
        self.set_state(base.RUNNING)

    def _redis_down(self, error: str, retry_in: float) -> None:
        if self.redis_connected or not self.redis_last_error:
            log.warning("%s: Redis subscription lost (%s); retrying in %.1f s", self.name,
                        error, retry_in)
        self.redis_connected = False
        self.redis_last_error = error
        self.redis_retry_at = time.time() + retry_in
        self.set_state(base.DEGRADED, "redis: {}".format(error))

    def _on_unread_refusals(self, counts: Dict[str, int]) -> None:
        limits = {
            "too_large": "over max_bytes ({})".format(self.config.max_bytes),
            "rate_limited": "over the raw rate limit ({:g}/s, burst {})".format(
                self.config.rate_limit_per_second, self.config.rate_burst),
        }
        for code, count in sorted(counts.items()):
            self.rejections[code] = self.rejections.get(code, 0) + count
            self._count_predecessor("parse", "error", count)
            message = "{} message{} {} refused unread".format(
                count, "" if count == 1 else "s", limits.get(code, code))
            log.info("%s: %s", self.name, message)
            self._emit(make_result(None, None, ERROR, code=code, message=message))

    def _on_dropped(self, req_id: str) -> None:
        """A command dropped unread by the raw rate limit, whose ``req_id`` could be read: its
        sender is told (the counts reach everyone through ``_on_unread_refusals``)."""
        self._emit(make_result(req_id, None, ERROR, code="rate_limited",
                               message="dropped unread: over the raw rate limit ({:g}/s, burst "
                               "{})".format(self.config.rate_limit_per_second,
                                            self.config.rate_burst)))

    def _on_raw(self, data: bytes) -> None:
        try:
            command = self.intake.screen(data, time.time())
            if command.signed is not None:
                self._reserve_nonce(command, *command.signed)
            self.intake.admit(command)
            if len(self.queue) >= self.max_queued:
                raise CommandRefused("queue_full", "{} commands are waiting (max_queued)".format(
                    len(self.queue)), command.req_id, command.cmd)
        except CommandRefused as exc:
            self.rejections[exc.code] = self.rejections.get(exc.code, 0) + 1
            self._count_predecessor(
                "parse" if exc.code in ("bad_json", "too_large") else exc.cmd or "unknown",
                "ignored" if exc.code == "unknown_command" else "error")
            log.info("%s: refused %s %s: %s: %s", self.name, exc.cmd or "-", exc.req_id or "-",
                     exc.code, exc.message)
            self._emit(refusal(exc))
            return
        if command.cmd == "fxcm_cancel":
            try:
                outcome = self._cancel(command)
            except CommandRefused as exc:
                self.rejections[exc.code] = self.rejections.get(exc.code, 0) + 1
                self._emit(refusal(exc))
                return
            self._emit(make_result(command.req_id, command.cmd, OK, result=outcome))
            self._count_predecessor(command.cmd, "ok")
            return
        if command.ignored:
            # The predecessor ignored them too (smc_v1 sends lookback_bars, reason, s2, ...).
            self.ignored_fields += len(command.ignored)
            log.debug("%s: %s %s: ignored legacy fields %s", self.name, command.cmd,
                      command.req_id, ", ".join(command.ignored))
        self.queue.append(_Job(command))
        self.accepted += 1
        self.last_accepted_ts = time.time()
        log.info("%s: accepted %s %s%s", self.name, command.cmd, command.req_id,
                 " (legacy shape)" if command.legacy else "")
        self._emit(make_result(command.req_id, command.cmd, ACCEPTED,
                               result={"position": len(self.queue),
                                       "steps": [op for op, _ in command.steps]}))
        if len(self.queue) == 1:
            self.call_soon(self._run_next_step)

    def _reserve_nonce(self, command: Command, kid: str, nonce: str) -> None:
        try:
            if self._nonces is None:
                self._nonces = redis.Redis.from_url(
                    self.url, socket_timeout=self.redis_timeout,
                    socket_connect_timeout=self.redis_timeout, retry=Retry(NoBackoff(), 0))
            fresh = self._nonces.set(nonce_key(self.channel, kid, nonce), b"1", nx=True,
                                     px=self.nonce_ttl_ms)
        except (redis.RedisError, OSError) as exc:
            if self._nonces is not None:
                self._nonces.close()
                self._nonces = None
            raise CommandRefused("auth_unavailable", "the replay check could not reach Redis "
                                 "({})".format(type(exc).__name__), command.req_id,
                                 command.cmd) from None
        if not fresh:
            raise CommandRefused("replay_rejected", "nonce already used by kid {!r} within "
                                 "{:g} s".format(kid, self.nonce_ttl_ms / 1000.0),
                                 command.req_id, command.cmd)

    # -- running -------------------------------------------------------------------------------

    def _run_next_step(self) -> None:
        """Start the next step of the first command, or watch the one running: a step the
        poller runs as a job answers ``started`` at once and ends with ``poller.done``; each
        ``poller.progress`` moves its deadline (``timeout_seconds`` without a word: timeout,
        and the job is cancelled)."""
        if not self.queue:
            return
        job = self.queue[0]
        command = job.command
        op, args = command.steps[job.index]
        if job.waiting is not None:
            if time.monotonic() > job.deadline:
                self._cancel_on_poller(job.waiting)
                self._step_failed(job, op, "timeout", "no word from {} about {} for {:g} s "
                                  "(cancelled there)".format(self.poller, job.waiting,
                                                             self.timeout))
            return
        self._emit(make_result(command.req_id, command.cmd, RUNNING,
                               result={"step": op, "index": job.index + 1,
                                       "of": len(command.steps)}))
        try:
            reply_type, body = self.request(self.poller, "poller." + op,
                                            dict(args, _job=job.step_job()), self.timeout)
        except RequestTimeout:
            self._step_failed(job, op, "timeout", "no reply from {} to poller.{} within {:g} s "
                              "(the outcome is unknown)".format(self.poller, op, self.timeout))
            return
        except BackpressureError:
            self._step_failed(job, op, "poller_error", "the mailbox of {} stayed full for "
                              "{:g} s".format(self.poller, self.timeout))
            return
        if isinstance(body, dict) and body.get("ok") is True and body.get("started"):
            job.waiting = str(body["started"])
            job.deadline = time.monotonic() + self.timeout
            return
        self._step_outcome(job, op, reply_type, body)

    def _step_outcome(self, job: _Job, op: str, reply_type: str, body: Any) -> None:
        command = job.command
        job.waiting = None
        job.progress = {}
        ok, detail = _outcome(reply_type, body)
        if not ok:
            code = "cancelled" if isinstance(body, dict) and isinstance(
                body.get("error"), dict) and body["error"].get("code") == "cancelled" \
                else "poller_error"
            self._step_failed(job, op, code, str(detail))
            return
        result: Dict[str, Any] = detail if isinstance(detail, dict) else {}
        job.steps_done.append({"step": op, "state": OK, "result": result})
        job.index += 1
        if job.index < len(command.steps):
            return  # the next step on the next turn of the loop, after what came in
        self.queue.popleft()
        if command.cmd == "fxcm_bootstrap":
            result = {"steps": job.steps_done}
        self._finish(job, OK, result=result)

    @handles("poller.progress")
    def on_progress(self, body: Any, delivery: Delivery) -> None:
        job = self.queue[0] if self.queue else None
        if job is None or not isinstance(body, dict) or body.get("job") != job.waiting:
            return  # of a step that ended (timed out, cancelled) already
        job.deadline = time.monotonic() + self.timeout
        progress = body.get("progress")
        job.progress = progress if isinstance(progress, dict) else {}
        now = time.monotonic()
        if now - job.progress_shown >= PROGRESS_RESULT_SECONDS:
            job.progress_shown = now
            op = job.command.steps[job.index][0]
            self._emit(make_result(job.command.req_id, job.command.cmd, RUNNING, result={
                "step": op, "index": job.index + 1, "of": len(job.command.steps),
                "progress": job.progress}))

    @handles("poller.done")
    def on_done(self, body: Any, delivery: Delivery) -> None:
        job = self.queue[0] if self.queue else None
        if job is None or not isinstance(body, dict) or body.get("job") != job.waiting:
            self.late_done += 1
            return
        self._step_outcome(job, job.command.steps[job.index][0], REPLY_TYPE, body)

    def _cancel_on_poller(self, poller_job: str) -> bool:
        try:
            _, body = self.request(self.poller, "poller.cancel", {"job": poller_job},
                                   self.timeout)
        except (RequestTimeout, BackpressureError):
            return False
        return isinstance(body, dict) and body.get("ok") is True

    def _cancel(self, command: Command) -> Dict[str, Any]:
        """``fxcm_cancel``: a queued command is dropped, the running one is cancelled on the
        poller (its step ends with ``poller.done`` code cancelled); answered at intake, never
        queued behind what it cancels."""
        target = str(command.args["target"])
        for position, job in enumerate(self.queue):
            if job.command.req_id != target:
                continue
            if position == 0 and job.waiting is not None:
                if not self._cancel_on_poller(job.waiting):
                    raise CommandRefused("poller_error", "{} could not cancel {}".format(
                        self.poller, target), command.req_id, command.cmd)
                return {"cancelled": target, "running": True}
            if position == 0:
                raise CommandRefused("poller_error", "{} is between two steps; cancel it "
                                     "again".format(target), command.req_id, command.cmd)
            del self.queue[position]
            self._finish(job, ERROR, code="cancelled", message="cancelled by {} before it "
                         "ran".format(command.req_id))
            return {"cancelled": target, "running": False}
        raise CommandRefused("contract_error", "no queued or running command {}".format(target),
                             command.req_id, command.cmd)

    def _step_failed(self, job: _Job, op: str, code: str, message: str) -> None:
        self.queue.popleft()
        result = None
        if job.command.cmd == "fxcm_bootstrap":
            job.steps_done.append({"step": op, "state": ERROR})
            result = {"failed_step": op, "steps": job.steps_done}
            message = "{}: {}".format(op, message)
        self._finish(job, ERROR, code=code, message=message, result=result)

    def _finish(self, job: _Job, state: str, code: str | None = None, message: str = "",
                result: Dict[str, Any] | None = None) -> None:
        command = job.command
        outcome = OK if state == OK else str(code)
        key = (command.cmd, outcome)
        self.commands[key] = self.commands.get(key, 0) + 1
        self._count_predecessor(command.cmd, "ok" if state == OK else "error")
        log.log(logging.INFO if state == OK else logging.WARNING, "%s: %s %s -> %s%s", self.name,
                command.cmd, command.req_id, outcome, ": " + message if message else "")
        self._emit(make_result(command.req_id, command.cmd, state, code=code, message=message,
                               result=result))

    def _count_predecessor(self, kind: str, result: str, count: int = 1) -> None:
        key = (kind, result)
        self.predecessor_counts[key] = self.predecessor_counts.get(key, 0) + count

    def _emit(self, payload: Dict[str, Any]) -> None:
        self.last_result = {key: payload[key] for key in ("req_id", "cmd", "state", "ts")}
        if "error" in payload:
            self.last_result["error"] = payload["error"]
        self.publish(RESULT_TOPIC, payload, RESULT_TYPE)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        result = super().status()
        running = None
        if self.queue:
            job = self.queue[0]
            running = {"req_id": job.command.req_id, "cmd": job.command.cmd,
                       "step": job.command.steps[job.index][0]}
        outcomes: Dict[str, int] = {}
        for (_, outcome), count in self.commands.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        result.update({
            "channel": self.channel,
            "auth": {"mode": self.mode, "kids": list(self.kids)},
            "redis": {
                "connected": self.redis_connected,
                "off": self.redis_off,
                "reconnects": self.redis_reconnects,
                "last_error": self.redis_last_error,
                "retry_in_seconds": max(0.0, self.redis_retry_at - time.time())
                if not self.redis_connected and self.redis_retry_at else 0.0,
                "connected_since": self.redis_since,
            },
            "queue": {"depth": len(self.queue), "running": running},
            "accepted": self.accepted,
            "ignored_legacy_fields": self.ignored_fields,
            "outcomes": outcomes,
            "rejections": dict(self.rejections),
            "last_result": dict(self.last_result),
            "metrics": self._metrics(),
        })
        return result

    def _metrics(self) -> Dict[str, Any]:
        return {
            "fxcm_commands_total": {
                "type": "counter",
                "help": "Commands by type and result (ok, error, ignored), as the predecessor "
                        "counted them (type parse: unreadable).",
                "samples": [[{"type": kind, "result": result}, float(count)]
                            for (kind, result), count in sorted(self.predecessor_counts.items())],
            },
            "fxcm_command_outcomes_total": {
                "type": "counter",
                "help": "Commands run, by command and outcome (ok or the error code).",
                "samples": [[{"cmd": cmd, "outcome": outcome}, float(count)]
                            for (cmd, outcome), count in sorted(self.commands.items())],
            },
            "fxcm_commands_last_ts_seconds": {
                "type": "gauge", "help": "When the last command was accepted (Unix seconds).",
                "samples": [[{}, self.last_accepted_ts]] if self.last_accepted_ts else [],
            },
            "fxcm_commands_accepted_total": {
                "type": "counter", "help": "Commands that passed every check and were queued.",
                "samples": [[{}, float(self.accepted)]],
            },
            "fxcm_command_ignored_fields_total": {
                "type": "counter",
                "help": "Fields of legacy commands that the command does not take (ignored).",
                "samples": [[{}, float(self.ignored_fields)]],
            },
            "fxcm_command_rejections_total": {
                "type": "counter", "help": "Commands refused before they were queued, by code.",
                "samples": [[{"code": code}, float(count)]
                            for code, count in sorted(self.rejections.items())],
            },
            "fxcm_command_queue_depth": {
                "type": "gauge", "help": "Commands queued or running.",
                "samples": [[{}, float(len(self.queue))]],
            },
            "fxcm_command_redis_connected": {
                "type": "gauge", "help": "1 while the commands channel is subscribed.",
                "samples": [[{}, 1.0 if self.redis_connected else 0.0]],
            },
            "fxcm_command_redis_reconnects_total": {
                "type": "counter", "help": "Subscriptions to the commands channel renewed.",
                "samples": [[{}, float(self.redis_reconnects)]],
            },
        }


_REQ_ID = re.compile(rb'"req_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')


def _req_id_of(data: bytes) -> str | None:
    """The ``req_id`` of a raw command, read without parsing it (a flood is not parsed)."""
    match = _REQ_ID.search(data, 0, 4096)
    return match.group(1).decode("ascii") if match is not None else None


def _outcome(reply_type: str, body: Any) -> Tuple[bool, Any]:
    """(True, result) or (False, public message) from a ``poller.result`` reply."""
    if reply_type != REPLY_TYPE or not isinstance(body, dict) or not isinstance(
            body.get("ok"), bool):
        return False, "unexpected reply {!r} from the poller".format(reply_type)
    if body["ok"]:
        return True, body.get("result") if isinstance(body.get("result"), dict) else {}
    error: Dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    return False, "{}: {}".format(error.get("code", "error"), error.get("message", ""))

