"""Writing rendered messages to Redis: one pipeline per flush, late-joiner keys included.

One pipeline per flush (no MULTI: each step is idempotent on its own):
- first one Lua call upserts the bars of every final ``ohlcv`` message into its late-joiner
  key ``<prefix>:ohlcv:last:<SYMBOL>:<tf>`` (a sorted set scored by ``open_time``: the script
  replaces the member of each ``open_time`` and trims the set to the newest ``last_bars``,
  atomically; one call for the whole flush, not one per message: a fifth less time per bar);
- then per message: SET of its late-joiner key where it has one (``price_tik``, ``heartbeat``,
  ``market_status``, ``status``: the same JSON text), and PUBLISH.
A consumer that gets a message and then reads the keys finds that message's data there.

Connection trouble (refused, reset, timeout, a server still loading) raises ``RedisDown``: the
caller cannot know which commands of that pipeline were applied, so it keeps everything durable
and writes it again later (at least once). A command Redis refuses (a key of the wrong type,
say) is counted and logged, never retried in a loop.

Under a least-privilege ACL (docs/operations.md, "Redis ACL") two conveniences may be denied,
and the sink does without them, counting each denial in ``denied``: CLIENT SETNAME (the
connection stays unnamed) and INFO (the server's run_id, which tells a restarted Redis: a
marker key of our own, ``marker_key``, stands in for it; a Redis restarted without its data has
lost it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from actors.redis_publisher._render import Message
from config.settings import redact_url
from protocol.errors import ConnectorError

log = logging.getLogger("fxcm.redis_publisher")

# KEYS: the sorted sets; ARGV[1]: how many bars each keeps; then, for each key in turn, the
# number of its bars and that many open_time, member pairs, oldest first. Bars newer than the
# newest member (a live stream, a republished tail) are appended with one ZADD per chunk;
# only a bar at or before it needs the replace-by-open_time of ZREMRANGEBYSCORE + ZADD.
UPSERT_BARS = """
local keep = tonumber(ARGV[1])
local i = 2
for k = 1, #KEYS do
  local key = KEYS[k]
  local count = tonumber(ARGV[i])
  i = i + 1
  local stop = i + 2 * count
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
  newest = newest and tonumber(newest) or -1
  while i < stop and tonumber(ARGV[i]) <= newest do
    redis.call('ZREMRANGEBYSCORE', key, ARGV[i], ARGV[i])
    redis.call('ZADD', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  while i < stop do
    local last = math.min(stop, i + 2 * 256) - 1
    redis.call('ZADD', key, unpack(ARGV, i, last))
    i = last + 1
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
end
return #KEYS
"""

_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


class RedisDown(ConnectorError):
    """Redis cannot be reached (or stopped answering) for this write."""


class WriteResult:
    """What a write did: receivers per channel (PUBLISH's answer), the messages whose PUBLISH
    Redis refused (by id) and every refused command, described."""

    __slots__ = ("receivers", "unpublished", "errors")

    def __init__(self) -> None:
        self.receivers: dict[str, int] = {}
        self.unpublished: set[int] = set()
        self.errors: list[str] = []


class RedisSink:
    def __init__(self, url: str, socket_timeout: float, last_bars: int, client_name: str,
                 marker_key: str = "") -> None:
        self.url = url
        self.socket_timeout = socket_timeout
        self.last_bars = last_bars
        self.client_name = client_name
        self.marker_key = marker_key
        self.client: redis.Redis | None = None
        self.run_id = ""  # the server's run_id: changes when Redis restarts
        self._upsert_sha = ""
        self.denied: dict[str, int] = {}  # commands the server's ACL refused, done without

    def connect(self) -> None:
        """Open a connection, check it answers and load the script; RedisDown if not."""
        self.close()
        if self.url == "embedded":
            raise RedisDown("redis.url is 'embedded' but no host started the embedded server "
                            "(run under `fxcm host`, or set redis.url)")
        named = "client setname" not in self.denied
        try:
            client = self._client(named)
            try:
                client.ping()
            except redis.exceptions.NoPermissionError:
                if not named:
                    raise
                client.close()  # CLIENT SETNAME denied by the ACL: an unnamed connection
                self._deny("client setname")
                client = self._client(False)
                client.ping()
            self._upsert_sha = str(client.script_load(UPSERT_BARS))
            self.run_id = self._server_run_id(client)
        except _DOWN as exc:
            client.close()
            raise RedisDown(_describe(exc)) from None
        except redis.RedisError as exc:  # e.g. NOAUTH / WRONGPASS: as good as down, but say so
            client.close()
            raise RedisDown("{}: {}".format(type(exc).__name__, exc)) from None
        except ValueError as exc:
            raise RedisDown("redis.url {}: {}".format(redact_url(self.url), exc)) from None
        self.client = client

    def _client(self, named: bool) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout, retry=Retry(NoBackoff(), 0),
            health_check_interval=0, client_name=self.client_name if named else None)

    def _deny(self, command: str) -> None:
        if command not in self.denied:
            log.warning("Redis at %s denies %s (ACL): going on without it (docs/operations.md, "
                        "Redis ACL)", redact_url(self.url), command.upper())
        self.denied[command] = self.denied.get(command, 0) + 1

    def _server_run_id(self, client: redis.Redis) -> str:
        """The server's run_id (INFO); where INFO is denied or renamed away, the value of our
        marker key, set when missing: a Redis restarted without its data gets a new one."""
        try:
            info: dict[str, Any] = client.info("server")
            return str(info.get("run_id", ""))
        except redis.exceptions.NoPermissionError:
            self._deny("info")
        except redis.ResponseError:  # INFO renamed away on a managed server
            pass
        if not self.marker_key:
            return ""
        client.set(self.marker_key, os.urandom(8).hex(), nx=True)
        marker = client.get(self.marker_key)
        return "marker:" + _text(marker) if marker is not None else ""

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # closing a broken connection must not raise
                pass
            self.client = None

    def write(self, messages: list[Message]) -> WriteResult:
        """Everything in one pipeline; RedisDown when the connection fails."""
        client = self.client
        if client is None:
            raise RedisDown("not connected")
        result = WriteResult()
        if not messages:
            return result
        pipe = client.pipeline(transaction=False)
        upsert = self._upsert_args(messages)
        if upsert is not None:
            pipe.evalsha(self._upsert_sha, *upsert)
        for message in messages:
            if message.last_key is not None:
                pipe.set(message.last_key, message.text)
            pipe.publish(message.channel, message.text)
        try:
            replies = pipe.execute(raise_on_error=False)
        except _DOWN as exc:
            self.close()
            raise RedisDown(_describe(exc)) from None
        index = 0
        if upsert is not None:
            reply = replies[0]
            index = 1
            if isinstance(reply, NoScriptError):  # the script cache was flushed: load, retry
                reply = self._upsert_again(upsert)
            if isinstance(reply, Exception):
                result.errors.append("late-joiner bars: {}".format(reply))
        for message in messages:
            if message.last_key is not None:
                if isinstance(replies[index], Exception):
                    result.errors.append("SET {}: {}".format(message.last_key, replies[index]))
                index += 1
            reply = replies[index]
            index += 1
            if isinstance(reply, Exception):
                result.unpublished.add(id(message))
                result.errors.append("PUBLISH {}: {}".format(message.channel, reply))
            else:
                result.receivers[message.channel] = int(reply)
        return result

    def _upsert_args(self, messages: list[Message]) -> list[Any] | None:
        """``numkeys, keys..., keep, (count, open_time, member...)...`` for UPSERT_BARS."""
        keys: list[Any] = []
        args: list[Any] = [self.last_bars]
        for message in messages:
            if message.zset_key is not None:
                keys.append(message.zset_key)
                args.append(len(message.zset_members) // 2)
                args.extend(message.zset_members)
        if not keys:
            return None
        return [len(keys)] + keys + args

    def _upsert_again(self, upsert: list[Any]) -> Any:
        client = self.client
        assert client is not None
        try:
            self._upsert_sha = str(client.script_load(UPSERT_BARS))
            return client.evalsha(self._upsert_sha, *upsert)
        except _DOWN as exc:
            self.close()
            raise RedisDown(_describe(exc)) from None
        except redis.ResponseError as exc:
            return exc

    def ping(self) -> None:
        """Check the connection (when nothing was written for a while); RedisDown if gone."""
        client = self.client
        if client is None:
            raise RedisDown("not connected")
        try:
            client.ping()
        except _DOWN as exc:
            self.close()
            raise RedisDown(_describe(exc)) from None

    def subscribers(self, channels: list[str]) -> dict[str, int]:
        """Subscribers each channel would reach now (PUBSUB NUMSUB, plus pattern ones)."""
        client = self.client
        if client is None:
            raise RedisDown("not connected")
        try:
            pipe = client.pipeline(transaction=False)
            pipe.pubsub_numsub(*channels)
            pipe.pubsub_numpat()
            numsub, numpat = pipe.execute()
        except _DOWN as exc:
            self.close()
            raise RedisDown(_describe(exc)) from None
        counts = {_text(name): int(count) for name, count in numsub}
        return {channel: counts.get(channel, 0) + int(numpat) for channel in channels}

    def recent_bars(self, prefix: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """The bars of every late-joiner sorted set: (symbol, tf, contract), for seeding the
        dedup memory at start."""
        import json

        client = self.client
        if client is None:
            raise RedisDown("not connected")
        head = "{}:ohlcv:last:".format(prefix)
        try:
            for raw_key in client.scan_iter(match=head + "*", count=500):
                key = _text(raw_key)
                symbol, _, tf = key[len(head):].rpartition(":")
                if not symbol or not tf:
                    continue
                members: list[bytes] = client.zrange(key, 0, -1)  # type: ignore[assignment]
                for member in members:
                    try:
                        bar = json.loads(member)
                    except ValueError:
                        continue
                    if isinstance(bar, dict):
                        yield symbol, tf, bar
        except _DOWN as exc:
            self.close()
            raise RedisDown(_describe(exc)) from None
        except redis.ResponseError as exc:
            log.warning("seeding the dedup memory from Redis failed: %s", exc)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return "{}: {}".format(type(exc).__name__, exc) if str(exc) else type(exc).__name__
