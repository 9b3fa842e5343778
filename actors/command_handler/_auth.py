"""Command signatures: canonical JSON, HMAC-SHA256, keys from the environment, auth modes.

A signed command carries ``auth: {kid, nonce, sig}`` with ``sig`` the hex HMAC-SHA256, under
the secret of ``kid``, of::

    json.dumps({"cmd", "req_id", "ts", "args", "kid", "nonce"}, sort_keys=True,
               separators=(",", ":"), ensure_ascii=False).encode("utf-8")

over the values as sent. Keys come from the environment only: ``FXCM_HMAC_KID`` +
``FXCM_HMAC_SECRET`` (the secret that also signs ohlcv), and/or ``kid=secret`` lines in the
file named by ``FXCM_HMAC_SECRETS_FILE`` (blank lines and ``#`` comments skipped).
``FXCM_HMAC_SECRET`` alone, without a kid, is how the predecessor's operators have it: it
signs ohlcv and verifies a signed command whatever kid the command names.

Modes: ``off`` (nothing checked), ``rolling`` (unsigned accepted, a present signature must be
right), ``required``. ``auto`` is ``required`` when a kid is configured (``FXCM_HMAC_KID`` or
the secrets file), ``rolling`` with the secret alone (the predecessor's producers send
unsigned commands; the actor says so loudly at start), ``off`` with no secret.

A secret never appears in an exception, a log line, a status or a result.

Pure: the nonce replay check (Redis ``SET NX PX``) is the actor's; this module names the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any, Dict, Tuple

from actors.command_handler._results import CommandRefused
from protocol.errors import ConfigError

MODES = ("auto", "off", "rolling", "required")
KID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# A ts at or above this is read as milliseconds (1e11 s is in the year 5138).
MILLISECONDS_FROM = 1e11

ENV_KID = "FXCM_HMAC_KID"
ENV_SECRET = "FXCM_HMAC_SECRET"
ENV_SECRETS_FILE = "FXCM_HMAC_SECRETS_FILE"


def canonical_json(cmd: str, req_id: str, ts: Any, args: Any, kid: str, nonce: str) -> bytes:
    """The signed bytes of a command."""
    return json.dumps({"cmd": cmd, "req_id": req_id, "ts": ts, "args": args, "kid": kid,
                       "nonce": nonce}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def sign(secret: bytes, cmd: str, req_id: str, ts: Any, args: Any, kid: str,
         nonce: str) -> str:
    """The hex HMAC-SHA256 ``sig`` of a command (what a sender computes)."""
    return hmac.new(secret, canonical_json(cmd, req_id, ts, args, kid, nonce),
                    hashlib.sha256).hexdigest()


def ts_seconds(ts: float) -> float:
    """A command's ``ts`` in Unix seconds (milliseconds are recognised by their size)."""
    return ts / 1000.0 if ts >= MILLISECONDS_FROM else float(ts)


def _add_key(keys: Dict[str, bytes], kid: str, secret: str, where: str) -> None:
    if not KID_PATTERN.match(kid):
        raise ConfigError("{}: a kid must be 1..64 letters, digits, '.', '_' or '-'".format(where))
    if not secret:
        raise ConfigError("{}: the secret of kid {!r} is empty".format(where, kid))
    value = secret.encode("utf-8")
    if kid in keys and not hmac.compare_digest(keys[kid], value):
        raise ConfigError("{}: kid {!r} is given twice with different secrets".format(
            where, kid))
    keys[kid] = value


# The key of FXCM_HMAC_SECRET set without FXCM_HMAC_KID: it verifies any kid a command names.
ANY_KID = "*"


def load_keys(environ: Mapping[str, str]) -> Dict[str, bytes]:
    """``{kid: secret}`` from the environment (and the secrets file it names); the secret
    without a kid comes as ``{ANY_KID: secret}``.

    Raises ConfigError naming the variable (or file line), never the secret."""
    keys: Dict[str, bytes] = {}
    kid = environ.get(ENV_KID, "").strip()
    secret = environ.get(ENV_SECRET, "")
    if secret and not kid:
        keys[ANY_KID] = secret.encode("utf-8")
    if kid and not secret:
        raise ConfigError("{}: set, but {} is empty".format(ENV_KID, ENV_SECRET))
    if kid:
        _add_key(keys, kid, secret, ENV_KID)
    path = environ.get(ENV_SECRETS_FILE, "")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError as exc:
            raise ConfigError("{}: cannot read {}: {}".format(
                ENV_SECRETS_FILE, path, exc.strerror)) from None
        except UnicodeDecodeError:
            raise ConfigError("{}: {} is not UTF-8".format(ENV_SECRETS_FILE, path)) from None
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            name, sep, value = text.partition("=")
            where = "{} {} line {}".format(ENV_SECRETS_FILE, path, number)
            if not sep:
                raise ConfigError("{}: expected kid=secret".format(where))
            _add_key(keys, name.strip(), value.strip(), where)
        if not keys:
            raise ConfigError("{}: {} holds no kid=secret line".format(ENV_SECRETS_FILE, path))
    return keys


def resolve_mode(setting: str, environ: Mapping[str, str]) -> Tuple[str, Dict[str, bytes]]:
    """The effective mode and the keys for ``auth_mode`` = ``setting``."""
    if setting not in MODES:
        raise ConfigError("command_handler.auth_mode: must be one of {}, got {!r}".format(
            ", ".join(MODES), setting))
    if setting == "off":
        return "off", {}
    keys = load_keys(environ)
    if setting == "auto":
        if any(kid != ANY_KID for kid in keys):
            return "required", keys
        return ("rolling" if keys else "off"), keys
    if not keys:
        raise ConfigError("command_handler.auth_mode: {!r} needs a key: {} + {}, or {}".format(
            setting, ENV_KID, ENV_SECRET, ENV_SECRETS_FILE))
    return setting, keys


class Verifier:
    """Checks a command's signature, kid and ts (not the nonce: see ``nonce_key``)."""

    def __init__(self, mode: str, keys: Mapping[str, bytes], skew_seconds: float) -> None:
        if mode not in ("off", "rolling", "required"):
            raise ValueError("mode must be off, rolling or required")
        self.mode = mode
        self._keys = dict(keys)
        self.skew_seconds = skew_seconds

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def signature_holds(self, cmd: str, req_id: str, ts: Any, args: Any, kid: str,
                        nonce: str, sig: str) -> bool:
        """Whether ``sig`` is right under ``kid``'s secret (or the secret that verifies any
        kid). Pure and thread-safe: the subscription thread asks it to give validly signed
        commands their own lane through a flood."""
        secret = self._keys.get(kid, self._keys.get(ANY_KID))
        if secret is None:
            return False
        return hmac.compare_digest(sign(secret, cmd, req_id, ts, args, kid, nonce),
                                   sig.lower())

    def verify(self, cmd: str, req_id: str, ts: Any, args: Any,
               auth: Mapping[str, Any] | None, now: float) -> Tuple[str, str] | None:
        """None if the command is accepted unsigned; (kid, nonce) once its signature, kid and
        ts are right (the nonce is still to be reserved); CommandRefused otherwise."""
        if self.mode == "off":
            return None
        if auth is None:
            if self.mode == "required":
                raise CommandRefused("auth_failed", "unsigned command: auth_mode is required, "
                                     "sign it with auth {kid, nonce, sig}", req_id, cmd)
            return None
        kid = str(auth["kid"])
        nonce = str(auth["nonce"])
        if kid not in self._keys and ANY_KID not in self._keys:
            raise CommandRefused("auth_failed", "unknown kid {!r}".format(kid), req_id, cmd)
        if not self.signature_holds(cmd, req_id, ts, args, kid, nonce, str(auth["sig"])):
            raise CommandRefused("auth_failed", "bad signature for kid {!r}".format(kid),
                                 req_id, cmd)
        offset = now - ts_seconds(float(ts))
        if abs(offset) > self.skew_seconds:
            raise CommandRefused("auth_failed", "ts is {:.0f} s {} now, outside the skew window "
                                 "of {:g} s".format(abs(offset),
                                                    "before" if offset > 0 else "after",
                                                    self.skew_seconds), req_id, cmd)
        return kid, nonce


def nonce_key(channel: str, kid: str, nonce: str) -> str:
    """The Redis key that reserves a nonce (``SET key 1 NX PX ttl``)."""
    return "{}:nonce:{}:{}".format(channel, kid, nonce)
