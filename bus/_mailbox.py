"""Mailboxes: where messages wait in the router for an actor (DESIGN.md section 5).

Two policies:

- ``lossless``: a FIFO with an explicit bound. The bound is not a cap on memory (a message that
  arrived is never dropped) but the point where the producers feeding it stop getting credit; the
  queued count therefore stays within the bound plus each producer's credit window.
- ``latest``: the newest message per topic (a topic such as ``tick.EURUSD`` names the key). A
  newer message replaces an older pending one, which is counted as conflated. Never blocks.

A mailbox holds pending messages; messages handed to the actor but not yet acked are inflight
and are counted in the depth until acked. If the actor dies they go back to the front.

Portable: runs on Python 3.7 too.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Deque, Dict, Optional, Set

LOSSLESS = "lossless"
LATEST = "latest"
POLICIES = (LOSSLESS, LATEST)


class Envelope(object):
    """One routed message as the router stores it: frames kept as bytes, never decoded."""

    __slots__ = ("topic", "header", "body", "deliveries", "failures")

    def __init__(self, topic: bytes, header: bytes, body: bytes) -> None:
        self.topic = topic
        self.header = header
        self.body = body
        self.deliveries = 0  # times handed to an actor
        self.failures = 0  # crashes of the handler attributed to this message


class Mailbox(object):
    """Common state of both policies; see the module docstring."""

    policy = ""

    def __init__(self, owner: str, topic: str, bound: int) -> None:
        if bound < 1:
            raise ValueError("mailbox bound must be >= 1, got {}".format(bound))
        self.owner = owner
        self.topic = topic
        self.bound = bound
        self.inflight = 0
        self.peak = 0
        self.enqueued = 0
        self.blocked: Set[Any] = set()

    def depth(self) -> int:
        raise NotImplementedError

    def put(self, envelope: Envelope) -> None:
        raise NotImplementedError

    def take(self) -> Optional[Envelope]:
        raise NotImplementedError

    def is_full(self) -> bool:
        return False

    def has_pending(self) -> bool:
        raise NotImplementedError

    def requeue(self, envelope: Envelope) -> None:
        """Give back an inflight message whose actor died (called in reverse delivery order)."""
        raise NotImplementedError

    def pending_count(self) -> int:
        raise NotImplementedError

    def stats(self) -> Dict[str, Any]:
        return {
            "topic": self.topic,
            "policy": self.policy,
            "bound": self.bound,
            "depth": self.depth(),
            "pending": self.pending_count(),
            "inflight": self.inflight,
            "peak": self.peak,
            "enqueued": self.enqueued,
            "blocked_producers": len(self.blocked),
        }


class LosslessMailbox(Mailbox):
    policy = LOSSLESS

    def __init__(self, owner: str, topic: str, bound: int) -> None:
        super(LosslessMailbox, self).__init__(owner, topic, bound)
        self.pending: Deque[Envelope] = deque()
        # Producers are released once the depth falls to this mark, not at bound - 1, so that a
        # full mailbox does not turn every single ack into a credit message.
        self.low_water = bound - max(1, bound // 10)

    def depth(self) -> int:
        return len(self.pending) + self.inflight

    def pending_count(self) -> int:
        return len(self.pending)

    def put(self, envelope: Envelope) -> None:
        self.pending.append(envelope)
        self.enqueued += 1
        depth = len(self.pending) + self.inflight
        if depth > self.peak:
            self.peak = depth

    def is_full(self) -> bool:
        return len(self.pending) + self.inflight >= self.bound

    def take(self) -> Optional[Envelope]:
        if not self.pending:
            return None
        self.inflight += 1
        return self.pending.popleft()

    def has_pending(self) -> bool:
        return bool(self.pending)

    def requeue(self, envelope: Envelope) -> None:
        self.inflight -= 1
        self.pending.appendleft(envelope)


class LatestMailbox(Mailbox):
    policy = LATEST

    def __init__(self, owner: str, topic: str, bound: int) -> None:
        super(LatestMailbox, self).__init__(owner, topic, bound)
        self.pending: OrderedDict[bytes, Envelope] = OrderedDict()
        self.conflated = 0

    def depth(self) -> int:
        return len(self.pending) + self.inflight

    def pending_count(self) -> int:
        return len(self.pending)

    def put(self, envelope: Envelope) -> None:
        pending = self.pending
        if envelope.topic in pending:
            del pending[envelope.topic]
            self.conflated += 1
        pending[envelope.topic] = envelope
        self.enqueued += 1
        depth = len(pending) + self.inflight
        if depth > self.peak:
            self.peak = depth

    def is_full(self) -> bool:
        return False

    def take(self) -> Optional[Envelope]:
        if not self.pending:
            return None
        self.inflight += 1
        return self.pending.popitem(last=False)[1]

    def has_pending(self) -> bool:
        return bool(self.pending)

    def requeue(self, envelope: Envelope) -> None:
        self.inflight -= 1
        # A newer value that arrived meanwhile wins; the old one is conflated away.
        if envelope.topic in self.pending:
            self.conflated += 1
        else:
            self.pending[envelope.topic] = envelope
            self.pending.move_to_end(envelope.topic, last=False)

    def stats(self) -> Dict[str, Any]:
        result = super(LatestMailbox, self).stats()
        result["conflated"] = self.conflated
        return result


def make_mailbox(owner: str, topic: str, policy: str, bound: int) -> Mailbox:
    if policy == LOSSLESS:
        return LosslessMailbox(owner, topic, bound)
    if policy == LATEST:
        return LatestMailbox(owner, topic, bound)
    raise ValueError("unknown mailbox policy {!r} (expected one of {})".format(policy, POLICIES))
