"""The downstream contracts: one JSON Schema per Redis channel, shipped in ``protocol/schemas``.

A channel's payload is described by ``schemas/<channel>.schema.json`` (JSON Schema draft-07;
``$ref`` only inside the file). Channel names are the logical ones of DESIGN.md section 7:
``ohlcv``, ``price_tik``, ``heartbeat``, ``market_status``, ``status``, ``commands``,
``commands_result``. Each schema has one author; everyone may read them all, and consumers can
load them from the installed package (``schema_path``/``load_schema``)::

    from protocol import contracts

    contracts.validate("ohlcv", payload)        # raises ContractError naming the field
    check = contracts.validator("price_tik")     # compiled once per process; None if no schema
    if check is not None:
        check(payload)

Some rules of the predecessor's contract cannot be said in JSON Schema; they are checked here,
after the schema, for the channels that have them (``ohlcv``: the ingestor's checklist of seed
001 section 10 -- ``close_time >= open_time``, ``low <= open, close <= high``, finite prices,
``open_time`` strictly increasing within a payload; ``price_tik``: finite prices).

Validators are jsonschema-rs (Rust): on the publisher's hot path it checks a bar three times
faster than fastjsonschema's generated Python did (``make bench``, redis_publisher rows). It
never fills in defaults: validating a payload does not change it. JSON Schema counts ``5.0`` as
an integer; the ``ohlcv`` rules below refuse a float time or tick count all the same, because
it would be written ``5.0`` where consumers read an int.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs

from protocol.errors import ProtocolError

__all__ = ["CHANNELS", "CHANNEL_SUFFIXES", "SCHEMA_DIR", "ContractError", "Validator",
           "channel_names", "field_path", "load_schema", "schema_path", "shipped", "validate",
           "validator"]

SCHEMA_DIR = Path(__file__).resolve().with_name("schemas")

# The channels of DESIGN.md section 7, by their logical names.
CHANNELS = ("ohlcv", "price_tik", "heartbeat", "market_status", "status", "commands",
            "commands_result")

# Each channel's Redis name is <prefix>:<suffix> unless channels.<name> overrides it.
CHANNEL_SUFFIXES = {"ohlcv": "ohlcv", "price_tik": "price_tik", "heartbeat": "heartbeat",
                    "market_status": "market_status", "status": "status",
                    "commands": "commands", "commands_result": "commands:result"}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def channel_names(section: Any) -> dict[str, str]:
    """The Redis name of each channel from the ``channels`` settings section (``prefix`` and
    per-channel overrides; ``""`` = ``<prefix>:<suffix>``), the one home of this rule. Values
    are not checked here: the publisher's settings check does that at start."""
    prefix = str(section.get("prefix") or "fxcm")
    return {name: str(section.get(name) or "{}:{}".format(prefix, suffix))
            for name, suffix in CHANNEL_SUFFIXES.items()}

Validator = Callable[[Any], None]


class ContractError(ProtocolError):
    """A payload does not match its channel's contract, or a schema file is unusable.

    ``channel`` is the logical channel name; ``field`` the offending field's path
    (``bars[3].low``), empty when the payload as a whole is wrong."""

    def __init__(self, channel: str, message: str, field: str = "") -> None:
        super().__init__("{}: {}".format(channel, message))
        self.channel = channel
        self.field = field


def schema_path(channel: str) -> Path:
    """Where the schema of ``channel`` lives (whether or not it exists yet)."""
    if not _NAME.match(channel):
        raise ValueError("not a channel name: {!r}".format(channel))
    return SCHEMA_DIR / "{}.schema.json".format(channel)


def shipped() -> tuple[str, ...]:
    """The channels that have a schema file, sorted."""
    suffix = ".schema.json"
    return tuple(sorted(path.name[:-len(suffix)] for path in SCHEMA_DIR.glob("*" + suffix)))


def load_schema(channel: str) -> dict[str, Any] | None:
    """The parsed schema of ``channel``; None when no schema file ships for it yet."""
    path = schema_path(channel)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(channel, "schema file {} is not JSON: {}".format(path, exc)) from None
    if not isinstance(schema, dict):
        raise ContractError(channel, "schema file {} must hold a JSON object".format(path))
    return schema


@functools.lru_cache(maxsize=None)
def validator(channel: str) -> Validator | None:
    """A compiled check of ``channel``'s payloads (raises ContractError), or None when no
    schema ships for that channel yet. Compiled once per process."""
    schema = load_schema(channel)
    if schema is None:
        return None
    try:
        compiled = jsonschema_rs.validator_for(schema)
    except Exception as exc:  # ValidationError against the meta-schema, ReferencingError...
        raise ContractError(channel, "schema file {} is not a usable JSON Schema: {}".format(
            schema_path(channel), str(exc).splitlines()[0])) from None
    is_valid = compiled.is_valid
    rules = _RULES.get(channel)

    def check(payload: Any) -> None:
        try:
            valid = is_valid(payload)
        except ValueError as exc:  # not JSON-shaped at all (a dict key that is not a string)
            raise ContractError(channel, "payload is not JSON: {}".format(exc)) from None
        if not valid:
            _explain(channel, compiled, payload)
        if rules is not None:
            rules(channel, payload)

    return check


def _explain(channel: str, compiled: Any, payload: Any) -> None:
    """Raise the ContractError that names the first field the schema refuses."""
    for error in compiled.iter_errors(payload):
        field = field_path(error.instance_path)
        raise ContractError(channel, "{}: {}".format(field or "payload", error.message), field)
    raise ContractError(channel, "payload refused by the schema")  # not reached


def field_path(path: Any) -> str:
    """``["bars", 0, "low"]`` -> ``bars[0].low``."""
    text = ""
    for part in path:
        text += "[{}]".format(part) if isinstance(part, int) else (
            ".{}".format(part) if text else str(part))
    return text


def validate(channel: str, payload: Any) -> bool:
    """Check ``payload`` against ``channel``'s contract: True when checked and valid, False
    when no schema ships for the channel yet; raises ContractError when invalid."""
    check = validator(channel)
    if check is None:
        return False
    check(payload)
    return True


# -- rules beyond JSON Schema ---------------------------------------------------------------

def _finite(channel: str, value: Any, field: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ContractError(channel, "{} must be a finite number, got {}".format(field, value),
                            field)


_INFINITY = float("inf")


def _ohlcv_rules(channel: str, payload: dict[str, Any]) -> None:
    previous = -1
    for bar in payload["bars"]:
        # One comparison chain per bar (NaN fails every comparison; with high finite and
        # everything within low..high, every price is finite); the details only on failure.
        low = bar["low"]
        high = bar["high"]
        opened = bar["open_time"]
        if not (low <= bar["open"] <= high and low <= bar["close"] <= high and high < _INFINITY
                and 0 <= bar["volume"] < _INFINITY and bar["close_time"] >= opened > previous
                and type(opened) is int and type(bar["close_time"]) is int
                and type(bar["tick_count"]) is int):
            _ohlcv_explain(channel, payload)
        previous = opened


def _ohlcv_explain(channel: str, payload: dict[str, Any]) -> None:
    """Raise the ContractError that names the first broken rule of an ohlcv payload."""
    previous = None
    for index, bar in enumerate(payload["bars"]):
        where = "bars[{}]".format(index)
        for name in ("open_time", "close_time", "tick_count"):
            if type(bar[name]) is not int:
                raise ContractError(channel, "{}.{} must be an integer, got {!r}".format(
                    where, name, bar[name]), "{}.{}".format(where, name))
        for name in ("open", "high", "low", "close", "volume"):
            _finite(channel, bar[name], "{}.{}".format(where, name))
        if bar["close_time"] < bar["open_time"]:
            raise ContractError(channel, "{}.close_time must be >= open_time".format(where),
                                where + ".close_time")
        if not bar["low"] <= min(bar["open"], bar["close"]) \
                or not max(bar["open"], bar["close"]) <= bar["high"]:
            raise ContractError(channel, "{} must have low <= open, close <= high, got "
                                "o={} h={} l={} c={}".format(where, bar["open"], bar["high"],
                                                             bar["low"], bar["close"]), where)
        if previous is not None and bar["open_time"] <= previous:
            raise ContractError(channel, "{}.open_time must increase strictly within a "
                                "payload".format(where), where + ".open_time")
        previous = bar["open_time"]
    raise ContractError(channel, "bars break the ohlcv rules")  # not reached: a rule failed


def _price_tik_rules(channel: str, payload: dict[str, Any]) -> None:
    for name in ("bid", "ask", "mid", "tick_ts", "snap_ts"):
        _finite(channel, payload[name], name)


_RULES: dict[str, Callable[[str, Any], None]] = {
    "ohlcv": _ohlcv_rules,
    "price_tik": _price_tik_rules,
}
