"""The bus: the router (mailboxes, flow control, delivery, tap) and the actor-side client.

Knows nothing of FX. Portable: runs on Python 3.7 too.
"""

from bus._client import Backoff, BusClient, ControlChannel, Delivery, Subscription
from bus._mailbox import LATEST, LOSSLESS, POLICIES
from bus._router import DIRECT, Router, RouterSettings, ipc_endpoint

__all__ = [
    "DIRECT", "LATEST", "LOSSLESS", "POLICIES", "Backoff", "BusClient", "ControlChannel",
    "Delivery", "Router",
    "RouterSettings", "Subscription", "ipc_endpoint",
]
