"""What the tools need to find a host's outputs: the Redis URL and the channel names.

Pure but for two reads of the environment, one ``os.path.exists`` and, for a host's embedded
Redis, the check of its run dir and the read of its password file (``redis.pass``, 0600).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from actors._redis_server import SOCKET_FILE, embedded_url, read_password
from bus import check_run_dir
from protocol import contracts
from protocol.contracts import CHANNEL_SUFFIXES
from protocol.errors import ConfigError

ENV_REDIS_URL = "FXCM_REDIS_URL"
# The embedded Redis of a host listens on this socket in its run dir (actors/_redis_server.py).
EMBEDDED_SOCKET = SOCKET_FILE


def embedded_socket(run_dir: str) -> str:
    return os.path.join(os.path.abspath(run_dir), EMBEDDED_SOCKET)


def resolve_redis_url(given: str | None, run_dir: str,
                      environ: Mapping[str, str] | None = None,
                      configured: str | None = None) -> str:
    """``given`` (``--redis-url``), else ``configured`` (``redis.url`` as the host reads it:
    the config file, ``FXCM_REDIS_URL`` and the predecessor's ``FXCM_REDIS_HOST/PORT/PASSWORD``;
    see ``configured_redis_url``), else ``FXCM_REDIS_URL``, else the embedded Redis of
    ``run_dir`` (``unix://<run_dir>/redis.sock``, with the password the host keeps in the run
    dir) when that socket exists. "embedded" in any place means the run dir's socket. Raises
    ConfigError saying what was tried (UnsafeRunDir for a run dir that is not ours)."""
    env = os.environ if environ is None else environ
    for source, value in (("--redis-url", given), ("redis.url", configured),
                          (ENV_REDIS_URL, env.get(ENV_REDIS_URL))):
        if value and value != "embedded":
            if "://" not in value:
                raise ConfigError("{}: not a Redis URL (redis://, rediss://, unix://): "
                                  "{!r}".format(source, value))
            return value
    path = embedded_socket(run_dir)
    if os.path.exists(path):
        check_run_dir(run_dir)
        return embedded_url(path, read_password(run_dir))
    raise ConfigError("no Redis: no --redis-url, no {} or FXCM_REDIS_HOST, and no embedded "
                      "Redis at {} (is a host running with --run-dir {}?)".format(
                          ENV_REDIS_URL, path, run_dir))


def configured_redis_url(config_path: str | None,
                         environ: Mapping[str, str] | None = None) -> str:
    """``redis.url`` as the host would read it (ConfigError naming the key)."""
    import config

    return str(config.load(config_path, environ=environ).raw["redis"]["url"])


def channel_names(channels: Mapping[str, Any]) -> dict[str, str]:
    """Logical name -> Redis channel, from the shared ``channels`` section, named as the
    publisher names them (``protocol.contracts.channel_names``); an empty prefix is refused
    where a channel needs it (the publisher would not start)."""
    if not channels.get("prefix"):
        for name in CHANNEL_SUFFIXES:
            if not channels.get(name):
                raise ConfigError("channels.prefix: empty, and channels.{} is empty too"
                                  .format(name))
    return contracts.channel_names(channels)


def load_channels(config_path: str | None) -> tuple[str, dict[str, str]]:
    """``(prefix, channels)`` from the shipped defaults, ``--config`` and ``FXCM_*``, as the
    host reads them. Raises ConfigError naming the key."""
    import config

    section = config.load(config_path).raw["channels"]
    return str(section["prefix"]), channel_names(section)


