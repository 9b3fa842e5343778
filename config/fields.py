"""Typed reads of an actor's settings, for its frozen settings class (``from_mapping``).

Every actor checks its settings in one place, its settings class (e.g.
``actors/tick_aggregator/_settings.py``), and reads attributes from then on. ``Fields`` is the
one way those classes read: a wrong type or an impossible value raises ConfigError with one
line naming the key (``tick_aggregator.close_grace_ms: must be >= 0, got -1``); a key that is not
given takes the class's default, which is the shipped default (config/runtime_settings.json;
tests/test_settings_classes.py holds them equal).

Portable: runs on Python 3.7 too (fxcm_session reads its settings here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from protocol.errors import ConfigError


class Fields(object):
    """Reads ``mapping`` (what an actor receives: the shared keys and its own section) for the
    settings class ``cls``; ``section`` prefixes the key in errors (``""`` for shared keys)."""

    def __init__(self, mapping: Mapping[str, Any], section: str, cls: Any = None) -> None:
        if not isinstance(mapping, Mapping):
            raise ConfigError("{}: must be an object".format(section or "settings"))
        self.mapping = mapping
        self.section = section
        self.defaults: Dict[str, Any] = {}
        if cls is not None:
            for spec in dataclasses.fields(cls):
                if spec.default is not dataclasses.MISSING:
                    self.defaults[spec.name] = spec.default
                elif spec.default_factory is not dataclasses.MISSING:
                    self.defaults[spec.name] = spec.default_factory()

    def name(self, key: str) -> str:
        """The key as errors name it: ``<section>.<key>``."""
        return "{}.{}".format(self.section, key) if self.section else key

    def value(self, key: str) -> Any:
        """The raw value, or the class default when not given."""
        if key in self.mapping:
            return self.mapping[key]
        if key in self.defaults:
            return self.defaults[key]
        raise ConfigError("{}: missing".format(self.name(key)))

    def fail(self, key: str, rule: str, value: Any) -> ConfigError:
        """A ConfigError for ``key``: ``<section>.<key>: <rule>, got <value>``."""
        return ConfigError("{}: {}, got {!r}".format(self.name(key), rule, value))

    def number(self, key: str, minimum: Optional[float] = None,
               above: Optional[float] = None, maximum: Optional[float] = None) -> float:
        """A number (an integer may stand for it): ``>= minimum``, ``> above``, ``<= maximum``."""
        value = self.value(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, "must be a number", value)
        self._bounds(key, value, minimum, above, maximum)
        return float(value)

    def integer(self, key: str, minimum: Optional[int] = None,
                maximum: Optional[int] = None) -> int:
        value = self.value(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "must be an integer", value)
        self._bounds(key, value, minimum, None, maximum)
        return value

    def string(self, key: str, choices: Sequence[str] = (), required: bool = False) -> str:
        value = self.value(key)
        if not isinstance(value, str):
            raise self.fail(key, "must be a string", value)
        if choices and value not in choices:
            raise self.fail(key, "must be one of {}".format(", ".join(choices)), value)
        if required and not value:
            raise self.fail(key, "must not be empty", value)
        return value

    def flag(self, key: str) -> bool:
        value = self.value(key)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false", value)
        return value

    def strings(self, key: str) -> Tuple[str, ...]:
        """A list of strings, as a tuple."""
        value = self.value(key)
        if not isinstance(value, (list, tuple)):
            raise self.fail(key, "must be a list", value)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError("{}[{}]: must be a string, got {!r}".format(
                    self.name(key), index, item))
        return tuple(value)

    def mapping_of(self, key: str) -> Mapping[str, Any]:
        """An object (a JSON map), as given."""
        value = self.value(key)
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be an object", value)
        return value

    def _bounds(self, key: str, value: float, minimum: Optional[float],
                above: Optional[float], maximum: Optional[float]) -> None:
        if minimum is not None and value < minimum:
            raise ConfigError("{}: must be >= {}, got {}".format(self.name(key), minimum, value))
        if above is not None and value <= above:
            raise ConfigError("{}: must be > {}, got {}".format(self.name(key), above, value))
        if maximum is not None and value > maximum:
            raise ConfigError("{}: must be <= {}, got {}".format(self.name(key), maximum, value))
