"""command_handler: commands from Redis, checked and run on the history poller.

Input: Redis ``<prefix>:commands`` (``channels.prefix``, or the whole name in
``channels.commands``, the naming the publisher shares), in either shape of ``protocol/schemas/
commands.schema.json``: ``{cmd, req_id, ts, args, auth?: {kid, nonce, sig}}`` or the legacy
``{"type": "fxcm_warmup", ...args}``.

Checks, in order, each failing with its stable code (``commands_result.schema.json``): size cap
(``too_large``), raw rate limit (``rate_limited``), JSON (``bad_json``), schema
(``contract_error``, ``unknown_command``), auth (``auth_failed``, ``replay_rejected``,
``auth_unavailable``), per-command limit (``rate_limited``), allowlist (``not_allowed``), queue
bound (``queue_full``).

Output: bus topic ``command.result`` (type ``command.result``), a dict ``{req_id, cmd, state,
ts, error?: {code, message}, result?}``; redis_publisher writes it to
``<prefix>:commands:result``. A command that passes gets ``accepted`` at once, ``running`` per
step, then ``ok`` (the poller's result) or ``error`` (``timeout``, ``poller_error``,
``cancelled``).

Dispatch: ``request(poller, "poller.<op>", args, timeout_seconds)`` with ``op`` in warmup,
backfill, set_universe, republish_tail, tail_guard (``fxcm_bootstrap`` runs warmup ->
backfill -> republish_tail -> tail_guard, the steps it was given, stopping at the first
failure); the poller replies ``poller.result`` with ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": {"code", "message"}}``. The args are normalised (see ``_parse``).

Pure parts, usable without sockets: ``Intake`` (JSON, schema, auth, limits, allowlist),
``Verifier``/``sign``/``canonical_json``/``load_keys``/``resolve_mode`` (HMAC), ``TokenBucket``,
``PerCommandLimiter``, ``RawGate``, ``RejectionTally``.
"""

from actors.command_handler._actor import CommandHandler
from actors.command_handler._auth import (
    Verifier,
    canonical_json,
    load_keys,
    nonce_key,
    resolve_mode,
    sign,
    ts_seconds,
)
from actors.command_handler._config import CommandHandlerSettings, commands_channel
from actors.command_handler._config import check as check_settings
from actors.command_handler._limits import (
    PerCommandLimiter,
    RawGate,
    RejectionTally,
    TokenBucket,
)
from actors.command_handler._parse import (
    BOOTSTRAP_STEPS,
    COMMANDS,
    COMMANDS_SCHEMA,
    RESULTS_SCHEMA,
    Command,
    Intake,
    load_schema,
)
from actors.command_handler._results import CODES, CommandRefused, make_result

__all__ = [
    "BOOTSTRAP_STEPS", "CODES", "COMMANDS", "COMMANDS_SCHEMA", "RESULTS_SCHEMA", "Command",
    "CommandHandler", "CommandHandlerSettings", "CommandRefused", "Intake", "PerCommandLimiter",
    "RawGate", "RejectionTally", "TokenBucket", "Verifier", "canonical_json", "check_settings",
    "commands_channel", "load_keys", "load_schema", "make_result", "nonce_key", "resolve_mode",
    "sign", "ts_seconds",
]
