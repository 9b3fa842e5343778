"""The one backoff of the project, and the one place its settings are checked.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from protocol.errors import ConfigError

# The keys of a backoff section in the settings (``fxcm_session.login_backoff``, ...).
BACKOFF_KEYS = ("base_seconds", "max_seconds", "multiplier", "jitter")


@dataclass(frozen=True)
class BackoffSettings:
    """A backoff section's values: first delay and cap in seconds, growth per failure, and
    jitter as a fraction (0.2 spreads each delay over +-20 %)."""

    base_seconds: float
    max_seconds: float
    multiplier: float = 2.0
    jitter: float = 0.2

    @classmethod
    def from_mapping(cls, section: Any, key: str = "backoff") -> BackoffSettings:
        """Checked values of ``section``; a ConfigError names ``<key>.<field>``. A missing
        ``multiplier`` or ``jitter`` takes the class default."""
        if not isinstance(section, Mapping):
            raise ConfigError("{}: must be an object, got {!r}".format(key, section))
        values = {}
        for name in BACKOFF_KEYS:
            value = section.get(name, getattr(cls, name, None))
            if value is None:
                raise ConfigError("{}.{}: missing (a backoff section needs base_seconds and "
                                  "max_seconds)".format(key, name))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError("{}.{}: must be a number, got {!r}".format(key, name, value))
            values[name] = float(value)
        if values["base_seconds"] <= 0:
            raise ConfigError("{}.base_seconds: must be > 0, got {}".format(
                key, values["base_seconds"]))
        if values["max_seconds"] < values["base_seconds"]:
            raise ConfigError("{}.max_seconds: must be >= base_seconds ({}), got {}".format(
                key, values["base_seconds"], values["max_seconds"]))
        if values["multiplier"] < 1:
            raise ConfigError("{}.multiplier: must be >= 1, got {}".format(
                key, values["multiplier"]))
        if not 0 <= values["jitter"] <= 1:
            raise ConfigError("{}.jitter: must be within 0..1, got {}".format(
                key, values["jitter"]))
        return cls(**values)


class Backoff(object):
    """Exponential backoff with a cap and jitter; ``compute(failures)`` in seconds.

    The one backoff of the project: bus reconnects, supervisor restarts, broker login, history
    errors and Redis reconnects all use it. ``jitter`` is a fraction: 0.2 spreads each delay
    over +-20 %. ``rng`` is injectable so tests can pin the jitter."""

    def __init__(self, base_seconds: float, cap_seconds: float, jitter: float = 0.2,
                 rng: Optional[random.Random] = None, factor: float = 2.0) -> None:
        self.base_seconds = base_seconds
        self.cap_seconds = cap_seconds
        self.jitter = jitter
        self.factor = factor
        self.rng = rng or random.Random()

    @classmethod
    def from_settings(cls, settings: Union[BackoffSettings, Mapping[str, Any]],
                      key: str = "backoff", rng: Optional[random.Random] = None) -> Backoff:
        """A backoff from checked ``BackoffSettings``, or from a settings section
        (``{"base_seconds", "max_seconds", "multiplier", "jitter"}``), checked here with
        errors that name ``key``."""
        if not isinstance(settings, BackoffSettings):
            settings = BackoffSettings.from_mapping(settings, key)
        return cls(settings.base_seconds, settings.max_seconds, settings.jitter, rng=rng,
                   factor=settings.multiplier)

    def compute(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        delay = min(self.cap_seconds,
                    self.base_seconds * (self.factor ** min(failures - 1, 64)))
        spread = delay * self.jitter
        return max(0.0, delay + self.rng.uniform(-spread, spread))
