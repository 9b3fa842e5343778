"""The project's one exception hierarchy.

::

    ConnectorError
    ├── ProtocolError            malformed frame, header or body; unknown message type
    │   └── ContractError        a payload breaks its Redis channel's schema (protocol.contracts)
    ├── BusError                 the bus refused or lost something
    │   ├── BackpressureError    a lossless mailbox stayed full past the send timeout
    │   ├── RequestTimeout       no reply to a request within its timeout
    │   ├── EndpointError        a socket could not bind/connect (names the endpoint and actor)
    │   └── BusDenied            the router refused a name, a topic or a control op
    ├── BrokerError              the broker (sim, replay, forexconnect) failed
    │   ├── LoginFailed
    │   └── HistoryNotReady
    ├── ConfigError              a setting is unknown, mistyped or impossible (names the key)
    └── InjectedCrash            an actor crashing on request (the crash fault: make chaos)

Portable: this module runs on Python 3.7 too.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error this project raises on purpose."""


class ProtocolError(ConnectorError):
    """Bytes from the wire could not be decoded into what they claim to be."""


class BusError(ConnectorError):
    """The bus refused an operation or could not complete it."""


class BackpressureError(BusError):
    """A lossless destination stayed full for longer than the send timeout."""


class RequestTimeout(BusError):
    """A request got no reply in time."""


class EndpointError(BusError):
    """A socket operation failed; the message names the endpoint and the actor."""


class BusDenied(BusError):
    """The router refused this peer something: a name held by a live connection or
    reserved for the host, a topic reserved for other actors, a drill that is disabled."""


class BrokerError(ConnectorError):
    """The market-data broker failed."""


class LoginFailed(BrokerError):
    """Login to the broker failed."""


class HistoryNotReady(BrokerError):
    """The broker's history service is not ready yet (market not ready, not a failure)."""


class ConfigError(ConnectorError):
    """A setting is unknown, has the wrong type or an impossible value."""


class InjectedCrash(ConnectorError):
    """Raised by an actor's loop in place of its next handler because the router was asked to
    crash it (CTRL ``{"op": "crash"}``: ``make chaos``, ``fxcm crash``). Not a bug: a drill
    that takes the same path as one (crash, restart, redelivery)."""
