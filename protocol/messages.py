"""Registry of message types carried on the bus.

A message type is a frozen dataclass registered under a wire name::

    @message("tick")
    @dataclass(frozen=True)
    class Tick:
        symbol: str
        ts_ms: int
        bid: float
        ask: float

Its wire form is the list of its field values in declaration order (a list packs and unpacks
faster than a map, DESIGN.md section 10). ``from_wire`` checks the length and every field's type
and raises ProtocolError naming the field; ``float`` fields accept integers.

Portable: this module runs on Python 3.7 too (annotations use ``typing`` names, not ``X | Y``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

from protocol.errors import ProtocolError

T = TypeVar("T")

_REGISTRY: Dict[str, Type[Any]] = {}

Checker = Callable[[str, Any], Any]


def _checker_for(hint: Any) -> Checker:
    """Build a function that validates (and lightly coerces) one decoded field."""
    origin = getattr(hint, "__origin__", None)
    args = getattr(hint, "__args__", ()) or ()
    # ``X | None`` (types.UnionType, 3.10+ actors) has no __origin__ but the same __args__.
    is_union = origin is typing.Union or type(hint).__name__ == "UnionType"
    if is_union and len(args) == 2 and type(None) in args:
        inner = _checker_for(next(arg for arg in args if arg is not type(None)))

        def check_optional(name: str, value: Any) -> Any:
            return None if value is None else inner(name, value)
        return check_optional
    if hint is Any:
        return lambda name, value: value
    if hint is float:
        def check_float(name: str, value: Any) -> Any:
            if isinstance(value, float):
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            raise ProtocolError("field {!r} must be a number, got {}".format(
                name, type(value).__name__))
        return check_float
    if hint is int:
        def check_int(name: str, value: Any) -> Any:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise ProtocolError("field {!r} must be an integer, got {}".format(
                name, type(value).__name__))
        return check_int
    base = origin if origin is not None else hint
    if base in (list, List):
        base = list
    if base in (dict, Dict):
        base = dict
    if base in (tuple, Tuple):
        def check_tuple(name: str, value: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return tuple(value)
            raise ProtocolError("field {!r} must be a list, got {}".format(
                name, type(value).__name__))
        return check_tuple
    if isinstance(base, type):
        def check_type(name: str, value: Any) -> Any:
            if isinstance(value, base):
                return value
            raise ProtocolError("field {!r} must be {}, got {}".format(
                name, base.__name__, type(value).__name__))
        return check_type
    raise TypeError("unsupported field type {!r} in a message".format(hint))


def message(name: str) -> Callable[[Type[T]], Type[T]]:
    """Register a frozen dataclass as the message type ``name``."""

    def register(cls: Type[T]) -> Type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError("{} must be a dataclass".format(cls.__name__))
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError("{} must be a frozen dataclass".format(cls.__name__))
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise TypeError("message type {!r} is already registered".format(name))
        hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        checkers = [(field, _checker_for(hints[field])) for field in fields]
        count = len(fields)

        def to_wire(self: Any) -> List[Any]:
            return [getattr(self, field) for field in fields]

        def from_wire(klass: Type[T], obj: Any) -> T:
            if not isinstance(obj, (list, tuple)):
                raise ProtocolError("{} body must be a list, got {}".format(
                    name, type(obj).__name__))
            if len(obj) != count:
                raise ProtocolError("{} body must have {} fields, got {}".format(
                    name, count, len(obj)))
            values = [check(field, value) for (field, check), value in zip(checkers, obj)]
            return klass(*values)

        cls.to_wire = to_wire  # type: ignore[attr-defined]
        cls.from_wire = classmethod(from_wire)  # type: ignore[attr-defined]
        cls.wire_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return register


def lookup(name: str) -> Optional[Type[Any]]:
    """The registered class for a wire name, or None."""
    return _REGISTRY.get(name)


def registered() -> Dict[str, Type[Any]]:
    """A copy of the registry: wire name -> class."""
    return dict(_REGISTRY)


def wire_name(obj: Any) -> Optional[str]:
    """The wire name of a registered message instance, or None for a plain body."""
    return getattr(type(obj), "wire_name", None)


def to_wire(obj: Any) -> Any:
    """The wire form of a message: registered types become lists, plain data passes through."""
    encode = getattr(obj, "to_wire", None)
    return encode() if encode is not None else obj


def from_wire(name: Optional[str], obj: Any) -> Any:
    """Rebuild a registered message from its wire form; unregistered types pass through."""
    cls = _REGISTRY.get(name) if name is not None else None
    if cls is None:
        return obj
    return cls.from_wire(obj)
