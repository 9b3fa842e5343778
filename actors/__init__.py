"""Actors: the base class (portable), the host and its supervisor (3.10+), one module per actor.

Only the base class is imported here, so that a Python 3.7 child can import this package.
"""

from actors.base import LATEST, LOSSLESS, Actor, RunOptions, Subscribe, handles

__all__ = ["LATEST", "LOSSLESS", "Actor", "RunOptions", "Subscribe", "handles"]
