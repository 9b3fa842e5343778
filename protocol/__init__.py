"""Wire protocol of the bus: envelope, codec, message registry, errors.

Imports nothing of the project and runs on Python 3.7 as well as 3.10+.
"""

from protocol.errors import (
    BackpressureError,
    BrokerError,
    BusDenied,
    BusError,
    ConfigError,
    ConnectorError,
    EndpointError,
    HistoryNotReady,
    InjectedCrash,
    LoginFailed,
    ProtocolError,
    RequestTimeout,
)
from protocol.messages import from_wire, lookup, message, registered, to_wire, wire_name
from protocol.wire import Header, decode_header, pack, unpack

__all__ = [
    "BackpressureError", "BrokerError", "BusDenied", "BusError", "ConfigError", "ConnectorError",
    "EndpointError", "Header", "HistoryNotReady", "InjectedCrash", "LoginFailed",
    "ProtocolError", "RequestTimeout", "decode_header", "from_wire", "lookup", "message", "pack",
    "registered", "to_wire", "unpack", "wire_name",
]

# Registers the market message types on import, so any decoder (the tap, a 3.7 child) knows them.
from protocol import market as market
