"""``exit_with_parent``: a ``preexec_fn`` that makes a child process get SIGTERM when the
thread that started it dies (Linux ``PR_SET_PDEATHSIG``), so a host killed with SIGKILL (or
a test run ended by its timeout) leaves no server of its own running. Elsewhere a no-op.

Linux ties the signal to the starting *thread*: use it only for children started by a
thread that lives as long as they should (a host's main thread, a test's thread). ``prctl``
is looked up here, at import: between fork and exec only the call itself runs (no dlopen,
no import, which could deadlock in a process with threads).
"""

from __future__ import annotations

import signal
from typing import Any

_PR_SET_PDEATHSIG = 1


def _find_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux, or no prctl: nothing to arm
        return None


_prctl = _find_prctl()


def exit_with_parent() -> None:
    """In the child, between fork and exec: SIGTERM when the parent thread goes."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
