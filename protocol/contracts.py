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

Validators are compiled with fastjsonschema (code generation: several times faster than an
interpreting validator on the publisher's hot path) and never fill in defaults: validating a
payload does not change it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema

from protocol.errors import ProtocolError

__all__ = ["CHANNELS", "SCHEMA_DIR", "ContractError", "Validator", "load_schema", "schema_path",
           "shipped", "validate", "validator"]

SCHEMA_DIR = Path(__file__).resolve().with_name("schemas")

# The channels of DESIGN.md section 7, by their logical names.
CHANNELS = ("ohlcv", "price_tik", "heartbeat", "market_status", "status", "commands",
            "commands_result")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

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
        compiled = fastjsonschema.compile(_inline_refs(schema), use_default=False)
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ContractError(channel, "schema file {} is not a usable JSON Schema: {}".format(
            schema_path(channel), exc)) from None
    rules = _RULES.get(channel)

    def check(payload: Any) -> None:
        try:
            compiled(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            name = exc.name or "data"
            field = _field(name)
            message = exc.message
            if message.startswith(name):
                message = (field or "payload") + message[len(name):]
            raise ContractError(channel, message, field) from None
        if rules is not None:
            rules(channel, payload)

    return check


def validate(channel: str, payload: Any) -> bool:
    """Check ``payload`` against ``channel``'s contract: True when checked and valid, False
    when no schema ships for the channel yet; raises ContractError when invalid."""
    check = validator(channel)
    if check is None:
        return False
    check(payload)
    return True


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its local ``#/definitions/...`` (or ``#/$defs/...``) references
    replaced by what they point to: the compiled check then makes no call per reference (a
    third faster on ``ohlcv``). A recursive reference is left as it is."""
    definitions: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            definitions.update({"#/{}/{}".format(key, name): value
                                for name, value in schema[key].items()})

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref in definitions and ref not in seen:
                return walk(definitions[ref], seen + (ref,))
            return {key: walk(value, seen) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, seen) for value in node]
        return node

    return {key: (value if key in ("definitions", "$defs") else walk(value, ()))
            for key, value in schema.items()}


def _field(name: str) -> str:
    """fastjsonschema's ``data.bars[0].low`` -> ``bars[0].low``."""
    if name == "data":
        return ""
    return name[len("data."):] if name.startswith("data.") else name


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
                and 0 <= bar["volume"] < _INFINITY and bar["close_time"] >= opened > previous):
            _ohlcv_explain(channel, payload)
        previous = opened


def _ohlcv_explain(channel: str, payload: dict[str, Any]) -> None:
    """Raise the ContractError that names the first broken rule of an ohlcv payload."""
    previous = None
    for index, bar in enumerate(payload["bars"]):
        where = "bars[{}]".format(index)
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
