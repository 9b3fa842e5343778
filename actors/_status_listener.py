"""The host's ear on ``actor.status.*``: the newest status each actor published.

It feeds ``/metrics`` (the ``metrics`` an actor reports in its status) and ``/status``. It joins
the bus as ``$host`` (names starting with ``$`` are the host's own, hidden from the actor table)
with a ``latest`` subscription, so it never holds an actor back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import zmq

from bus import LATEST, BusClient, Subscription
from protocol.errors import ConnectorError

log = logging.getLogger("fxcm.host")

PREFIX = "actor.status."


class StatusListener:
    def __init__(self, endpoint: str, context: zmq.Context[Any], token: str | None = None) -> None:
        """``token``: the host's secret (``$`` names are the host's own)."""
        self.endpoint = endpoint
        self.context = context
        self.token = token
        self.latest: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="host-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        client = BusClient("$host", self.endpoint, self.context,
                           subscriptions=(Subscription(PREFIX, LATEST, 1000),), prefetch=64,
                           token=self.token)
        try:
            client.connect(10)
            while not self._stop.is_set():
                client.poll(0.2)
                while client.buffer:
                    delivery = client.buffer.popleft()
                    name = delivery.topic.decode("utf-8", "replace")[len(PREFIX):]
                    try:
                        body = delivery.body()
                    except ConnectorError:
                        body = None
                    if isinstance(body, dict):
                        # replace, never mutate: the HTTP thread reads this dict
                        self.latest = dict(self.latest, **{name: body})
                    client.handled(delivery)
                client.ack()
            client.bye(timeout=1.0)
        except ConnectorError as exc:
            log.warning("status listener stopped: %s", exc)
        finally:
            client.close()
