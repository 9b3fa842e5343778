"""The bus: the router (mailboxes, flow control, delivery, tap) and the actor-side client.

Knows nothing of FX. Portable: runs on Python 3.7 too.
"""

from bus._acl import enforced as enforced_topics
from bus._backoff import BackoffSettings
from bus._client import Backoff, BusClient, ControlChannel, Delivery, Subscription
from bus._mailbox import LATEST, LOSSLESS, POLICIES
from bus._router import DIRECT, Router, RouterSettings, ipc_endpoint
from bus._rundir import (
    UnsafeRunDir,
    check_run_dir,
    create_private_file,
    open_private,
    prepare_run_dir,
    read_private_file,
    write_private_atomic,
)

__all__ = [
    "DIRECT", "LATEST", "LOSSLESS", "POLICIES", "Backoff", "BackoffSettings", "BusClient",
    "ControlChannel", "Delivery", "Router", "RouterSettings", "Subscription", "UnsafeRunDir",
    "check_run_dir", "create_private_file", "enforced_topics", "ipc_endpoint", "open_private",
    "prepare_run_dir", "read_private_file", "write_private_atomic",
]
