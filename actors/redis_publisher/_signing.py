"""The ``sig`` of ``ohlcv`` messages (seed 001 section 10, DESIGN.md section 7).

``sig`` = hex HMAC(secret, canonical JSON of ``{"symbol", "tf", "bars"}``), the canonical JSON
being ``json.dumps(base, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded as
UTF-8. The secret comes from the environment only (``FXCM_HMAC_SECRET``); it is never logged and
never shown: ``repr`` and ``describe()`` name the algorithm alone.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

SECRET_ENV = "FXCM_HMAC_SECRET"


class Signer:
    """HMAC over canonical JSON text. The keyed state is built once and copied per message."""

    __slots__ = ("algorithm", "_keyed")

    def __init__(self, secret: bytes, algorithm: str) -> None:
        if not secret:
            raise ValueError("an empty HMAC secret signs nothing")
        self.algorithm = algorithm
        self._keyed = hmac.new(secret, digestmod=algorithm)

    def sign(self, canonical: str) -> str:
        mac = self._keyed.copy()
        mac.update(canonical.encode("utf-8"))
        return mac.hexdigest()

    def describe(self) -> dict[str, str]:
        return {"algorithm": self.algorithm}

    def __repr__(self) -> str:
        return "Signer({})".format(self.algorithm)


def signer_from_environment(environ: Mapping[str, str], algorithm: str) -> Signer | None:
    """A Signer when ``FXCM_HMAC_SECRET`` is set and not empty, else None (unsigned)."""
    secret = environ.get(SECRET_ENV, "")
    if not secret:
        return None
    return Signer(secret.encode("utf-8"), algorithm)
