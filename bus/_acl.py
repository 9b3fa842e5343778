"""Who may put what on the bus: reserved topic prefixes and their owners.

A topic under a reserved prefix may be published only by that prefix's owners (actor names);
``actor.status.<name>`` only by ``<name>``; anything else by anyone. The
longest matching reserved prefix decides. The router enforces it (a refused message is counted
and answered with DENY); the client checks the same rule before sending, so a refused publish
raises at the call site. The rule lives here once for both.

The router gets the map from the host (``bus.reserved_topics``), reduced by ``enforced`` to the
prefixes one of whose owners is an actor of that host: a host without fxcm_session, say, may take
its ticks from an attached feed.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence

STATUS_PREFIX = "actor.status."


def owners_of(topic: str, reserved: Mapping[str, Sequence[str]]) -> Optional[FrozenSet[str]]:
    """The names that may publish ``topic``; None: anyone."""
    if topic.startswith(STATUS_PREFIX):
        return frozenset([topic[len(STATUS_PREFIX):]])
    best = None
    for prefix in reserved:
        if topic.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else frozenset(reserved[best])


def may_publish(name: str, topic: str, reserved: Mapping[str, Sequence[str]]) -> bool:
    owners = owners_of(topic, reserved)
    return owners is None or name in owners


def enforced(reserved: Mapping[str, Sequence[str]], host_actors: Iterable[str]
             ) -> Dict[str, List[str]]:
    """The entries of ``reserved`` that apply on a host whose own actors are ``host_actors``."""
    names = set(host_actors)
    return {prefix: list(owners) for prefix, owners in reserved.items()
            if any(owner in names for owner in owners)}
