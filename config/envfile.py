"""The predecessor's env-file dispatcher (seed 001 sections 5 and 6.1, its ``env_profile.py``).

``load_env_files(environ, cwd)`` reads ``<cwd>/.env`` when it exists, then the profile file
that ``AI_ONE_ENV_FILE`` names (set in the real environment or in ``.env``; relative to the
directory of ``.env``), into ``environ``. As in the predecessor (python-dotenv with
``override=False``), a variable already set is never replaced: the real environment wins over
``.env``, and ``.env`` wins over the profile. Values are never logged; the caller logs which
files were read.

The format is python-dotenv's: ``KEY=VALUE`` lines, optional ``export``, ``#`` comments (also
after an unquoted value, following a space), values in single quotes (literal) or double quotes
(``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes), and ``${NAME}`` / ``${NAME:-default}`` expanded in
unquoted and double-quoted values from the variables known so far. A line that is none of these
raises ConfigError naming the file and line; so does an ``AI_ONE_ENV_FILE`` that names a file
that does not exist (the predecessor went on without it, with the wrong settings).
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

from protocol.errors import ConfigError

DISPATCHER = ".env"
PROFILE_VARIABLE = "AI_ONE_ENV_FILE"

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$")
_EXPAND = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def parse(text: str, where: str, known: MutableMapping[str, str]) -> list[tuple[str, str]]:
    """``[(name, value)]`` of an env file, in order; ``known`` resolves ``${NAME}`` (the values
    parsed earlier in the same file are added to it as they come)."""
    result: list[tuple[str, str]] = []
    scope = dict(known)
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        index += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ConfigError("{}:{}: not a KEY=VALUE line".format(where, number))
        name, raw = match.group(1), match.group(2)
        if raw[:1] in ("'", '"'):
            quote = raw[0]
            body = raw[1:]
            # a quoted value may span lines
            while not _closed(body, quote) and index < len(lines):
                body += "\n" + lines[index]
                index += 1
            end = _closing(body, quote)
            if end < 0:
                raise ConfigError("{}:{}: {} has an unclosed quote".format(where, number, name))
            rest = body[end + 1:].strip()
            if rest and not rest.startswith("#"):
                raise ConfigError("{}:{}: text after the quoted value of {}".format(
                    where, number, name))
            value = body[:end]
            if quote == '"':
                value = _expand(re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)),
                                       value), scope)
        else:
            value = re.split(r"\s#", raw, maxsplit=1)[0].strip()
            value = _expand(value, scope)
        scope[name] = value
        result.append((name, value))
    return result


def _closing(body: str, quote: str) -> int:
    escaped = False
    for position, char in enumerate(body):
        if quote == '"' and char == "\\" and not escaped:
            escaped = True
            continue
        if char == quote and not escaped:
            return position
        escaped = False
    return -1


def _closed(body: str, quote: str) -> bool:
    return _closing(body, quote) >= 0


def _expand(value: str, scope: MutableMapping[str, str]) -> str:
    return _EXPAND.sub(lambda m: scope.get(m.group(1)) or (m.group(2) or ""), value)


def _load(path: str, environ: MutableMapping[str, str]) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("{}: cannot read it: {}".format(path, exc.strerror)) from None
    for name, value in parse(text, path, environ):
        environ.setdefault(name, value)


def load_env_files(environ: MutableMapping[str, str], cwd: str | None = None) -> list[str]:
    """Read ``.env`` and the ``AI_ONE_ENV_FILE`` profile into ``environ`` (see the module
    docstring); returns the paths read, in order."""
    base = os.path.abspath(cwd or os.getcwd())
    read: list[str] = []
    dispatcher = os.path.join(base, DISPATCHER)
    if os.path.isfile(dispatcher):
        _load(dispatcher, environ)
        read.append(dispatcher)
    profile = environ.get(PROFILE_VARIABLE, "").strip()
    if profile:
        path = profile if os.path.isabs(profile) else os.path.join(base, profile)
        path = os.path.normpath(path)
        if not os.path.isfile(path):
            raise ConfigError("{}: names {}, which does not exist".format(PROFILE_VARIABLE, path))
        if path != dispatcher:
            _load(path, environ)
            read.append(path)
    return read
