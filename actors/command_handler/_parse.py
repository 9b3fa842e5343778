"""From raw bytes to a checked, normalised command: JSON, schema, auth, per-command limit,
allowlist (the size cap and the raw rate limit come before, in ``_limits.RawGate``).

Pure: no sockets, no Redis. The nonce reservation sits between ``Intake.screen`` (which ends
with the signature check) and ``Intake.admit`` (per-command limit, then allowlist); the actor
makes it with Redis.

What the history poller receives (``poller.<op>`` requests, body = the normalised args):
symbols are normalised (``XAU/USD`` -> ``XAUUSD``) and must be configured; every timeframe
argument (``tf``, ``timeframes``, ``tfs``) becomes ``timeframes: [tf, ...]`` in the project's
names (``m1`` -> ``1m``); a backfill range given as ``start_utc``/``end_utc`` becomes
``start_ms``/``end_ms``; ``targets`` becomes ``[{symbol, tf}]``. Other arguments pass unchanged;
absent ones stay absent (their defaults are the poller's).
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import jsonschema_rs

import protocol
from actors.command_handler._auth import Verifier
from actors.command_handler._limits import PerCommandLimiter
from actors.command_handler._results import CommandRefused
from protocol.contracts import field_path
from protocol.errors import ProtocolError
from protocol.market import TF_MS, normalize_symbol, normalize_tf

SCHEMA_DIR = Path(protocol.__file__).resolve().parent / "schemas"
COMMANDS_SCHEMA = SCHEMA_DIR / "commands.schema.json"
RESULTS_SCHEMA = SCHEMA_DIR / "commands_result.schema.json"

COMMANDS = ("fxcm_warmup", "fxcm_backfill", "fxcm_set_universe", "fxcm_republish_tail",
            "fxcm_tail_guard", "fxcm_bootstrap", "fxcm_cancel")
# fxcm_bootstrap's steps, in the order they run.
BOOTSTRAP_STEPS = ("warmup", "backfill", "republish_tail", "tail_guard")

_INTEGER_ARGS = ("lookback_days", "lookback_hours", "min_history_bars", "window_hours",
                 "lookback_minutes", "start_ms", "end_ms", "expires_at_ms")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REQ_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TF_PARTS = re.compile(r"^(?:([mhdMHD])([0-9]{1,4})|([0-9]{1,4})([mhdMHD]))$")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}


def load_schema(path: Path = COMMANDS_SCHEMA) -> Dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        schema: Dict[str, Any] = json.load(handle)
    return schema


def compile_definition(schema: Dict[str, Any], name: str) -> Callable[[Any], None]:
    """A check of ``definitions/<name>`` of ``schema`` (references resolve in it): returns
    when the value fits, raises ``SchemaMismatch`` naming the first field that does not."""
    validator = jsonschema_rs.validator_for(
        {"$schema": schema["$schema"], "definitions": schema["definitions"],
         "$ref": "#/definitions/" + name})

    def check(value: Any) -> None:
        try:
            if validator.is_valid(value):
                return
            for error in validator.iter_errors(value):
                raise SchemaMismatch(field_path(error.instance_path), error.message)
        except ValueError as exc:  # e.g. nested deeper than the validator goes: refused
            if isinstance(exc, SchemaMismatch):
                raise
            raise SchemaMismatch("", "cannot be checked: {}".format(exc)) from None

    return check


class SchemaMismatch(ValueError):
    """A command's value does not fit its schema: ``field`` (``args.symbols[0]``-style, empty
    for the value as a whole) and the schema's ``message``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def public(self, prefix: str) -> str:
        """The message as the sender reads it: the field named from the command's top."""
        where = ".".join(part for part in (prefix, self.field) if part).replace(".[", "[")
        return "{}: {}".format(where or "the command", self.message)


@dataclass(frozen=True)
class Command:
    """A command that passed the checks of ``Intake.screen``."""

    req_id: str
    cmd: str
    args: Dict[str, Any]                       # normalised
    steps: Tuple[Tuple[str, Dict[str, Any]], ...]  # (poller op, its args), in order
    legacy: bool
    signed: Tuple[str, str] | None              # (kid, nonce) of a verified signature
    ignored: Tuple[str, ...] = ()               # legacy keys the command does not take

    @property
    def op(self) -> str:
        return self.cmd[len("fxcm_"):]


def new_legacy_req_id() -> str:
    return "legacy-" + uuid.uuid4().hex


def _refuse_constant(name: str) -> Any:
    raise ValueError("{} is not JSON".format(name))


class Intake:
    """The checks after the raw gate. ``screen`` (JSON, schema, auth) then, once the actor
    has reserved the nonce of a signed command, ``admit`` (per-command limit, allowlist)."""

    def __init__(self, symbols: Iterable[str], verifier: Verifier,
                 per_command: PerCommandLimiter, allowlist: Iterable[str],
                 new_req_id: Callable[[], str] = new_legacy_req_id,
                 schema: Dict[str, Any] | None = None) -> None:
        self.symbols = frozenset(normalize_symbol(symbol) for symbol in symbols)
        self.verifier = verifier
        self.per_command = per_command
        self.allowlist = frozenset(allowlist)
        self.new_req_id = new_req_id
        schema = schema if schema is not None else load_schema()
        self._envelope = compile_definition(schema, "envelope")
        self._legacy = compile_definition(schema, "legacy_envelope")
        self._args = {cmd: compile_definition(schema, "args_" + cmd) for cmd in COMMANDS}
        self._known_args = {cmd: frozenset(schema["definitions"]["args_" + cmd]["properties"])
                            for cmd in COMMANDS}

    # -- the checks ------------------------------------------------------------------------

    def screen(self, data: bytes, now: float) -> Command:
        """JSON, schema (envelope or legacy shape, command name, arguments), auth. Raises
        CommandRefused with the code of the first check that fails."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandRefused("bad_json", "not UTF-8 text") from None
        try:
            message = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise CommandRefused("bad_json", "not JSON: {}".format(exc)) from None
        except RecursionError:
            raise CommandRefused("bad_json", "not JSON: nested too deeply") from None
        if not isinstance(message, dict):
            raise CommandRefused("contract_error", "a command must be a JSON object")
        legacy = "cmd" not in message and "type" in message
        name_key = "type" if legacy else "cmd"
        given = message.get("req_id")
        safe_req_id = given if isinstance(given, str) and _REQ_ID.match(given) else None
        name = message.get(name_key)
        safe_name = name if isinstance(name, str) and _NAME.match(name) else None
        if "cmd" not in message and "type" not in message:
            raise CommandRefused("contract_error", "a command needs cmd (or the legacy type)",
                                 safe_req_id)
        try:
            (self._legacy if legacy else self._envelope)(message)
        except SchemaMismatch as exc:
            raise CommandRefused("contract_error", exc.public(""),
                                 safe_req_id, safe_name) from None
        cmd: str = message[name_key]
        req_id: str | None = safe_req_id
        ignored: Tuple[str, ...] = ()
        if legacy:
            req_id = safe_req_id or self.new_req_id()
            raw_args, ignored = self._legacy_args(cmd_name(message), message)
            ts = None
            auth = None
        else:
            raw_args = message["args"]
            ts = message["ts"]
            auth = message.get("auth")
        if cmd not in COMMANDS:
            raise CommandRefused("unknown_command", "unknown command {!r} (known: {})".format(
                cmd, ", ".join(COMMANDS)), req_id, cmd)
        try:
            self._args[cmd](raw_args)
        except SchemaMismatch as exc:
            raise CommandRefused("contract_error", exc.public("args"),
                                 req_id, cmd) from None
        try:
            args, steps = self._normalise(cmd, raw_args)
        except ProtocolError as exc:
            raise CommandRefused("contract_error", str(exc), req_id, cmd) from None
        assert req_id is not None  # the envelope's schema requires it
        signed = self.verifier.verify(cmd, req_id, ts, raw_args, auth, now)
        return Command(req_id=req_id, cmd=cmd, args=args, steps=steps, legacy=legacy,
                       signed=signed, ignored=ignored)

    def _legacy_args(self, cmd: str, message: Dict[str, Any]
                     ) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
        """The arguments of a legacy ``{type, ...}`` command, read as the predecessor did:
        keys the command does not take are ignored (and named, for the count and the debug
        log: smc_v1 sends ``lookback_bars``, ``reason``, ``s2``, ``fxcm_status``), integer
        arguments may come as numeric strings, and a 0 or null count is no count."""
        known = self._known_args.get(cmd)
        args: Dict[str, Any] = {}
        ignored = []
        for key, value in message.items():
            if key in ("type", "req_id"):
                continue
            if known is not None and key not in known:
                ignored.append(key)
                continue
            if key in _INTEGER_ARGS:
                if value is None or value == 0 or value == "" or value == "0":
                    continue  # the predecessor: int(payload.get(key) or 0), 0 = not given
                if isinstance(value, str) and value.strip().isdigit():
                    value = int(value.strip())
            args[key] = value
        return args, tuple(sorted(ignored))

    def admit(self, command: Command) -> None:
        """The per-command rate limit, then the allowlist."""
        if not self.per_command.take(command.cmd):
            raise CommandRefused("rate_limited", "more than {} {} commands per minute".format(
                self.per_command.per_minute, command.cmd), command.req_id, command.cmd)
        if command.cmd not in self.allowlist:
            raise CommandRefused("not_allowed", "{} is not in command_handler.allowlist".format(
                command.cmd), command.req_id, command.cmd)

    # -- normalisation ---------------------------------------------------------------------

    def _normalise(self, cmd: str, raw: Dict[str, Any]
                   ) -> Tuple[Dict[str, Any], Tuple[Tuple[str, Dict[str, Any]], ...]]:
        if cmd == "fxcm_bootstrap":
            steps = tuple((step, self._step_args(step, raw[step], "args." + step + "."))
                          for step in BOOTSTRAP_STEPS if step in raw)
            return {step: args for step, args in steps}, steps
        op = cmd[len("fxcm_"):]
        args = self._step_args(op, raw, "args.")
        return args, ((op, args),)

    def _step_args(self, op: str, raw: Dict[str, Any], where: str) -> Dict[str, Any]:
        args: Dict[str, Any] = {}
        for key, value in raw.items():
            if key in _INTEGER_ARGS:
                args[key] = int(value)
            elif key not in ("symbol", "symbols", "tf", "timeframes", "tfs", "targets",
                             "start_utc", "end_utc"):
                args[key] = value
        timeframes = _unique(
            [self._tf(item, where + key) for key in ("tf", "timeframes", "tfs") if key in raw
             for item in _as_list(raw[key])])
        if timeframes:
            args["timeframes"] = timeframes
        if op in ("warmup", "tail_guard"):
            args["symbols"] = _unique(
                [self._symbol(item, where + key) for key in ("symbols", "symbol") if key in raw
                 for item in _as_list(raw[key])])
        if op in ("backfill", "republish_tail"):
            args["symbol"] = self._symbol(raw["symbol"], where + "symbol")
        if op == "warmup":
            given = [key for key in ("lookback_days", "lookback_hours", "lookback_minutes")
                     if key in raw]
            if len(given) > 1:
                raise ProtocolError("{}: give one of lookback_days, lookback_hours, "
                                    "lookback_minutes, not {}".format(where.rstrip("."),
                                                                      " and ".join(given)))
        if op == "backfill":
            forms = [name for name, key in (("start_ms/end_ms", "start_ms"),
                                            ("start_utc/end_utc", "start_utc"),
                                            ("lookback_minutes", "lookback_minutes"))
                     if key in raw]
            if len(forms) > 1:
                raise ProtocolError("{}: give one range, not {}".format(
                    where.rstrip("."), " and ".join(forms)))
            if "start_utc" in raw:
                args["start_ms"] = _utc_ms(raw["start_utc"], where + "start_utc")
                args["end_ms"] = _utc_ms(raw["end_utc"], where + "end_utc")
            if "start_ms" in args and args["start_ms"] >= args["end_ms"]:
                raise ProtocolError("{}start_ms: must be before end_ms".format(where))
        if op == "set_universe":
            args["targets"] = self._targets(raw["targets"], where + "targets")
        return args

    def _symbol(self, raw: str, where: str) -> str:
        symbol = normalize_symbol(raw)
        if symbol not in self.symbols:
            raise ProtocolError("{}: symbol {!r} is not configured".format(where, raw))
        return symbol

    def _tf(self, raw: str, where: str) -> str:
        try:
            return normalize_tf(raw)
        except ProtocolError:
            pass
        match = _TF_PARTS.match(raw)
        if match is not None:
            unit = (match.group(1) or match.group(4)).lower()
            count = int(match.group(2) or match.group(3))
            for tf, span in TF_MS.items():
                if span == count * _UNIT_MINUTES[unit] * 60000:
                    return tf
        raise ProtocolError("{}: unknown timeframe {!r} (known: {})".format(
            where, raw, ", ".join(TF_MS)))

    def _targets(self, raw: Any, where: str) -> List[Dict[str, str]]:
        items = [part.strip() for part in raw.split(",") if part.strip()] \
            if isinstance(raw, str) else list(raw)
        if not items:
            raise ProtocolError("{}: no target".format(where))
        result: List[Dict[str, str]] = []
        for index, item in enumerate(items):
            at = "{}[{}]".format(where, index)
            if isinstance(item, str):
                symbol, sep, tf = item.rpartition(":")
                if not sep or not symbol:
                    raise ProtocolError("{}: must be SYMBOL:tf".format(at))
            else:
                symbol, tf = item["symbol"], item["tf"]
            target = {"symbol": self._symbol(symbol, at), "tf": self._tf(tf, at)}
            if target not in result:
                result.append(target)
        return result


def cmd_name(message: Dict[str, Any]) -> str:
    """The command's name in either shape."""
    return str(message.get("cmd") if "cmd" in message else message.get("type"))


def _as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, list) else [value]


def _unique(items: List[str]) -> List[str]:
    result: List[str] = []
    for item in items:
        if item not in result:
            result.append(item)
    return result


def _utc_ms(text: str, where: str) -> int:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError("{}: not an ISO 8601 time".format(where)) from None
    if moment.tzinfo is None:
        raise ProtocolError("{}: needs an offset or Z".format(where))
    return int(moment.timestamp() * 1000)
