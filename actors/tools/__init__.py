"""Operator tools over a running host: ``fxcm viewer`` and ``fxcm command``.

- ``command``: build, sign, publish a command on ``<prefix>:commands`` and wait for its result
  on ``<prefix>:commands:result`` (``build_command``, ``send_and_wait``, ``run``).
- ``viewer``: a rich dashboard of the Redis keys and channels and of the host's actor table
  (``Board`` gathers, ``render`` is a pure function from a snapshot dict, ``run`` loops).

Neither writes to Redis except ``command``'s one PUBLISH.
"""

from actors.tools._connect import channel_names, load_channels, resolve_redis_url

__all__ = ["channel_names", "load_channels", "resolve_redis_url"]
