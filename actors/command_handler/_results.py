"""Result payloads of ``command.result`` and the stable error codes (commands_result.schema.json).

Pure: no sockets, no Redis.
"""

from __future__ import annotations

import time
from typing import Any

from protocol.errors import ProtocolError

ACCEPTED = "accepted"
RUNNING = "running"
OK = "ok"
ERROR = "error"

# Stable error codes, in the order of the checks; each is documented in the result schema.
CODES = (
    "too_large",         # over max_bytes (checked first, before anything is read)
    "rate_limited",      # over the raw rate limit, or over the per-command limit
    "bad_json",          # not JSON, or not UTF-8
    "contract_error",    # does not follow commands.schema.json (or a rule beyond it)
    "unknown_command",   # cmd/type names no command
    "auth_failed",       # missing signature (required), unknown kid, bad signature, stale ts
    "auth_unavailable",  # the replay check (Redis SET NX) could not be made
    "replay_rejected",   # kid+nonce already used within nonce_ttl_seconds
    "not_allowed",       # a known command outside the allowlist
    "queue_full",        # max_queued commands are already waiting
    "timeout",           # no reply from the history poller in time: outcome unknown
    "poller_error",      # the history poller answered with an error
    "cancelled",         # the handler stopped before running the command
)

MESSAGE_MAX = 500


class CommandRefused(ProtocolError):
    """A command failed one of the checks; ``code`` is one of ``CODES``. The message is public:
    it never contains a secret, a signature or the auth block."""

    def __init__(self, code: str, message: str, req_id: str | None = None,
                 cmd: str | None = None) -> None:
        if code not in CODES:
            raise ValueError("unknown error code {!r}".format(code))
        super().__init__(message)
        self.code = code
        self.message = message
        self.req_id = req_id
        self.cmd = cmd


def make_result(req_id: str | None, cmd: str | None, state: str, *,
                code: str | None = None, message: str = "",
                result: dict[str, Any] | None = None, now: float | None = None) -> dict[str, Any]:
    """One ``command.result`` payload: ``{req_id, cmd, state, ts, error?, result?}``."""
    payload: dict[str, Any] = {"req_id": req_id, "cmd": cmd, "state": state,
                               "ts": time.time() if now is None else now}
    if state == ERROR:
        if code not in CODES:
            raise ValueError("an error result needs one of the stable codes, got {!r}".format(
                code))
        if len(message) > MESSAGE_MAX:
            message = message[:MESSAGE_MAX - 3] + "..."
        payload["error"] = {"code": code, "message": message}
    if result is not None:
        payload["result"] = result
    return payload


def refusal(exc: CommandRefused, now: float | None = None) -> dict[str, Any]:
    return make_result(exc.req_id, exc.cmd, ERROR, code=exc.code, message=exc.message, now=now)
