"""Configuration: settings loading and validation (the trading calendar joins later)."""

from config.settings import ActorSpec, BusConfig, HttpConfig, Settings, SupervisorConfig, load

__all__ = ["ActorSpec", "BusConfig", "HttpConfig", "Settings", "SupervisorConfig", "load"]
