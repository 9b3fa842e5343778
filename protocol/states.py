"""The project's state machines: each one's states and the moves it allows, in one table.

An actor's lifecycle, fxcm_session's session state and redis_publisher's mode change only
through ``StateTable.check``. A move the table does not allow is a bug in the code that made it:
with ``FXCM_STRICT_STATES=1`` (the test suite sets it) it raises ``InvalidTransition``; in
production it is logged and counted by the caller
(``fxcm_invalid_state_transitions_total{actor, machine}``) and the new state is taken anyway,
since a feed that stops over a bookkeeping error would be worse than the error.

Staying in a state (``old == new``) is always allowed: callers restate a state with a new reason.

Portable: this module runs on Python 3.7 too.
"""

from __future__ import annotations

import os
from typing import Dict, FrozenSet, Iterable, List, Mapping, Tuple

from protocol.errors import ConnectorError

STRICT_ENV = "FXCM_STRICT_STATES"


class InvalidTransition(ConnectorError):
    """A state machine was asked for a move its table does not allow."""


def strict() -> bool:
    """True when an invalid move must raise (``FXCM_STRICT_STATES=1``, as in the tests)."""
    return os.environ.get(STRICT_ENV, "") == "1"


class StateTable(object):
    """The states of one machine and, for each, the states it may move to."""

    def __init__(self, name: str, moves: Mapping[str, Iterable[str]]) -> None:
        self.name = name
        self.moves: Dict[str, FrozenSet[str]] = {
            state: frozenset(targets) for state, targets in moves.items()}
        unknown = {target for targets in self.moves.values() for target in targets} - set(
            self.moves)
        if unknown:
            raise ValueError("{}: moves to states without a row: {}".format(
                name, sorted(unknown)))

    @property
    def states(self) -> Tuple[str, ...]:
        return tuple(self.moves)

    def allows(self, old: str, new: str) -> bool:
        return old == new or new in self.moves.get(old, frozenset())

    def check(self, old: str, new: str) -> bool:
        """True for an allowed move; False for one the table refuses (raises when strict)."""
        if self.allows(old, new):
            return True
        if strict():
            raise InvalidTransition("{}: {} -> {} is not a move of this machine (allowed "
                                    "from {}: {})".format(self.name, old, new, old, ", ".join(
                                        sorted(self.moves.get(old, ()))) or "none"))
        return False

    def rows(self) -> List[Tuple[str, List[str]]]:
        """(state, sorted targets) in the table's order, for docs and status."""
        return [(state, sorted(targets)) for state, targets in self.moves.items()]


# -- the machines ----------------------------------------------------------------------------

# An actor's lifecycle (actors.base): set by the actor loop, RUNNING/DEGRADED also by the actor.
STARTING = "starting"
RUNNING = "running"
DEGRADED = "degraded"
STOPPING = "stopping"
STOPPED = "stopped"
FAULTED = "faulted"
LIFECYCLE = StateTable("lifecycle", {
    STARTING: (RUNNING, DEGRADED, STOPPING, FAULTED),
    RUNNING: (DEGRADED, STOPPING, FAULTED),
    DEGRADED: (RUNNING, STOPPING, FAULTED),
    # on_stop may still report what it meets (Redis away while the journal is flushed)
    STOPPING: (STOPPED, FAULTED, RUNNING, DEGRADED),
    STOPPED: (STARTING,),   # the same instance run again (a thread actor's restart)
    FAULTED: (STARTING,),
})

# fxcm_session's session with the broker (seed 001's ``fxcm.state``).
CONNECTING = "CONNECTING"
STREAM = "STREAM"
IDLE = "IDLE"
DISCONNECTED = "DISCONNECTED"
RECOVERING = "RECOVERING"
SESSION = StateTable("session", {
    CONNECTING: (STREAM, IDLE, DISCONNECTED, RECOVERING),
    # a stream goes quiet (IDLE) or is lost; it never logs in again without being lost first
    STREAM: (IDLE, DISCONNECTED),
    IDLE: (STREAM, DISCONNECTED, RECOVERING, CONNECTING),
    # ticks alone never end a disconnect: a login (or the broker's own reconnect) comes first
    DISCONNECTED: (CONNECTING, RECOVERING, IDLE),
    RECOVERING: (STREAM, IDLE, DISCONNECTED),
})

# redis_publisher's link to Redis.
OFF = "off"             # redis.required is false: the journal only
DOWN = "down"           # Redis away: durable messages go to the journal
RESUMING = "resuming"   # Redis back: waiting a while for the subscribers of before
DRAINING = "draining"   # Redis back: publishing the backlog, oldest first
UP = "up"
PUBLISHER = StateTable("publisher", {
    OFF: (DOWN,),
    DOWN: (RESUMING, DRAINING, UP),
    RESUMING: (DRAINING, UP, DOWN),
    DRAINING: (UP, DOWN),
    UP: (DOWN,),
})

MACHINES = (LIFECYCLE, SESSION, PUBLISHER)
