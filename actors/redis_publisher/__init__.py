"""redis_publisher: the only Redis writer (DESIGN.md sections 6-7, issue 5).

Bus -> Redis (topic, its mailbox policy: channel, late-joiner key):

- ``bar.<SYMBOL>.<tf>`` (lossless): ``<prefix>:ohlcv``, ``<prefix>:ohlcv:last:<SYMBOL>:<tf>``
- ``price.snapshot.<SYMBOL>`` (latest): ``<prefix>:price_tik``,
  ``<prefix>:price_tik:last:<SYMBOL>``
- ``heartbeat`` (latest): ``<prefix>:heartbeat``, ``<prefix>:heartbeat:last``
- ``market_status`` (latest): ``<prefix>:market_status``, ``<prefix>:market_status:last``
- ``status.public`` (latest): ``<prefix>:status``, ``<prefix>:status:last``
- ``command.result`` (lossless): ``<prefix>:commands:result``, no key

``<prefix>`` is ``channels.prefix`` (``FXCM_CHANNEL_PREFIX``, default ``fxcm``); each channel can
be renamed in ``channels.<name>`` (``FXCM_OHLCV_CHANNEL``, ...; "" keeps the default). Key names
always use the prefix.

Late-joiner keys (Pub/Sub keeps nothing, so a consumer that starts late reads these first):

- ``<prefix>:ohlcv:last:<SYMBOL>:<tf>``: a sorted set of the newest ``last_bars`` final bars,
  score = ``open_time``, member = the bar's canonical JSON (the ``bars[]`` item of ``ohlcv``).
  Read with ``ZRANGE key 0 -1`` (oldest first). Written idempotently: one member per
  ``open_time`` (a Lua script replaces it), trimmed to the newest ``last_bars``.
- ``<prefix>:price_tik:last:<SYMBOL>``, ``<prefix>:heartbeat:last``,
  ``<prefix>:market_status:last``, ``<prefix>:status:last``: strings holding the last payload
  published on that channel, byte for byte (``GET``).

Payloads: ``ohlcv`` = ``{symbol, tf, source, bars: [Bar.to_contract()...], sig?}``, bars of one
``(symbol, tf, source)`` that arrived together, oldest first; ``sig`` = hex HMAC
(``hmac_algo``/``FXCM_HMAC_ALGO``) over the canonical JSON of ``{symbol, tf, bars}`` when
``FXCM_HMAC_SECRET`` is set (environment only; never logged or shown). ``price_tik`` =
``{symbol, bid, ask, mid, tick_ts, snap_ts}``. Health and command results pass through as the
producing actor shaped them. Every payload is checked against
``protocol/schemas/<channel>.schema.json`` before it is written; one that fails is counted
(``fxcm_redis_schema_errors_total``), logged and never published.

Identical re-emitted finals are published once (a bounded memory of recent keys, seeded at start
from the sorted sets and the journal); a different final for a published key is published and
counted as a conflict. Writes go through redis-py pipelines, flushed as soon as the inbox is
empty (and at the latest every ``pipeline_max`` bars and payloads), and before every ack: the
router forgets a message only once it is in Redis or in the journal.

Redis away (noticed on a write, or by a PING after ``health_check_seconds`` of quiet):
reconnects with ``bus.Backoff`` (``redis_backoff``); final bars and command results go to an
fsynced on-disk journal (``journal_dir``, default ``<cache.dir>/journal``, one directory per
actor name) in order, bounded by ``journal_max_bytes``: at the bound the journal refuses, the
actor holds what it has and stops acking, so the bus applies backpressure to the producers;
nothing is dropped. Snapshots and health are conflated to the newest. When Redis is back the
publisher waits (up to ``resume_wait_seconds``) for the subscribers it saw before to subscribe
again, then publishes the backlog in order before anything new. A Redis that comes back empty
(a new run id) gets re-emitted finals again, to rebuild its late-joiner keys.
``redis.required`` false (``FXCM_REDIS_REQUIRED=0``): no Redis at all; durable messages go to
the journal only (and are published by the next run that has Redis).

Status (``actor.status.redis_publisher``): ``redis_connected``, ``redis`` (mode up / down /
resuming / draining / off, ``down_seconds``, ``reconnect_attempts``, ``last_error``),
``channels`` (logical name -> Redis channel), ``journal`` (messages, bytes, held, refusals),
``duplicates``, ``conflicts``, ``schema_errors``, and ``metrics`` (``fxcm_ohlcv_bars_total``,
``fxcm_dropped_bars_total``, ``fxcm_connector_errors_total{type=redis|cache_io}``,
``fxcm_redis_*``).
"""

from actors.redis_publisher._actor import RedisPublisher
from actors.redis_publisher._config import CHANNEL_SUFFIXES, PublisherConfig
from actors.redis_publisher._dedup import RecentFinals
from actors.redis_publisher._journal import Journal
from actors.redis_publisher._render import Batch, Renderer, canonical
from actors.redis_publisher._signing import SECRET_ENV, Signer, signer_from_environment
from actors.redis_publisher._sink import UPSERT_BARS, RedisSink

__all__ = [
    "CHANNEL_SUFFIXES", "SECRET_ENV", "UPSERT_BARS", "Batch", "Journal", "PublisherConfig",
    "RecentFinals", "RedisPublisher", "RedisSink", "Renderer", "Signer", "canonical",
    "signer_from_environment",
]
