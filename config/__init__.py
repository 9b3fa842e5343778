"""Configuration: settings loading and validation, and the trading calendar."""

from config.calendar import DEFAULT_CALENDAR_PATH, Session, TradingCalendar, load_calendar
from config.settings import ActorSpec, BusConfig, HttpConfig, Settings, SupervisorConfig, load

__all__ = ["DEFAULT_CALENDAR_PATH", "ActorSpec", "BusConfig", "HttpConfig", "Session",
           "Settings", "SupervisorConfig", "TradingCalendar", "load", "load_calendar"]
