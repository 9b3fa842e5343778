"""Contract rendering: what arrives on the bus becomes the channel payloads of DESIGN.md
section 7, checked against their schemas, as ready-to-write ``Message``s.

- ``Batch`` gathers what arrived together: bars of one ``(symbol, tf, source)`` (finals and
  previews apart) become one ``ohlcv`` message, oldest first; a later bar for the same
  ``open_time`` replaces the earlier one within the batch, so a payload's ``open_time`` always
  increases strictly, as the ingestor requires.
- ``Renderer`` turns entries into messages: the JSON text, the Redis channel, the late-joiner
  key, the journal record of durable messages. A payload that fails its contract is never
  rendered; for ``ohlcv`` the bars are then checked one by one, so one bad bar does not take its
  neighbours down with it.

The ``ohlcv`` text is built from each bar's canonical JSON (sorted keys, compact separators, no
ASCII escaping), which is byte for byte what ``json.dumps`` of the whole payload with those
options gives; the same bar strings are the members of the late-joiner sorted set, and the
canonical ``{"bars","symbol","tf"}`` text that ``sig`` covers is assembled from them too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from actors.redis_publisher._signing import Signer
from protocol.contracts import ContractError, Validator
from protocol.market import Bar, PriceSnapshot

# The ingestor's hard limit of bars per payload (seed 001 section 6.1.1, FXCM_INGEST_MAX_BATCH);
# also the schema's maxItems.
MAX_BARS_PER_MESSAGE = 5000

canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False).encode
compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

# The canonical JSON of a bar that passed the ohlcv contract (exactly its ten fields, finite
# numbers, true booleans), written directly: json.dumps writes int and float with their repr,
# so for the plain int/float/bool that come off the wire (msgpack, JSON) this is byte for byte
# ``canonical(bar)``, 2.5x faster. Any other shape falls back to ``canonical``.
_BAR_FORMAT = ('{"close":%r,"close_time":%r,"complete":%s,"high":%r,"low":%r,"open":%r,'
               '"open_time":%r,"synthetic":%s,"tick_count":%r,"volume":%r}')
_JSON_BOOL = {True: "true", False: "false"}


def bar_json(bar: dict[str, Any]) -> str:
    """``canonical(bar)`` for a checked bar in the contract's shape, fast."""
    if len(bar) != 10:
        return canonical(bar)
    try:
        return _BAR_FORMAT % (
            bar["close"], bar["close_time"], _JSON_BOOL[bar["complete"]], bar["high"],
            bar["low"], bar["open"], bar["open_time"], _JSON_BOOL[bar["synthetic"]],
            bar["tick_count"], bar["volume"])
    except KeyError:
        return canonical(bar)

OHLCV = "ohlcv"
PRICE_TIK = "price_tik"
COMMANDS_RESULT = "commands_result"


class BarGroup:
    """Bars of one (symbol, tf, source, complete) that arrived together."""

    __slots__ = ("symbol", "tf", "source", "complete", "bars")

    def __init__(self, symbol: str, tf: str, source: str, complete: bool) -> None:
        self.symbol = symbol
        self.tf = tf
        self.source = source
        self.complete = complete
        self.bars: dict[int, dict[str, Any]] = {}  # open_time -> contract; later wins


class Payload:
    """A dict payload for one channel. ``conflate`` names what a newer payload replaces while
    Redis is away (None: durable, journaled in order); ``last_key`` the late-joiner key."""

    __slots__ = ("channel", "payload", "conflate", "last_key")

    def __init__(self, channel: str, payload: Any, conflate: str | None,
                 last_key: str | None) -> None:
        self.channel = channel
        self.payload = payload
        self.conflate = conflate
        self.last_key = last_key


Entry = BarGroup | Payload


class Batch:
    """What arrived since the last flush, in arrival order (bar groups at their first bar)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._groups: dict[tuple[str, str, str, bool], BarGroup] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add_bar(self, symbol: str, tf: str, source: str, complete: bool,
                contract: dict[str, Any]) -> None:
        key = (symbol, tf, source, complete)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = BarGroup(symbol, tf, source, complete)
            self.entries.append(group)
        group.bars[contract["open_time"]] = contract
        self.count += 1

    def add(self, payload: Payload) -> None:
        self.entries.append(payload)
        self.count += 1

    def take(self) -> list[Entry]:
        """Everything gathered, in arrival order, except that live previews go last and a
        preview that a final of the same batch supersedes (its open_time or an earlier one) is
        dropped: smc_v1's ingestor writes the previous preview as final when a preview of the
        next minute comes first, and never takes the real final after it."""
        entries = self.entries
        finals: dict[tuple[str, str], int] = {}
        for entry in entries:
            if isinstance(entry, BarGroup) and entry.complete and entry.bars:
                key = (entry.symbol, entry.tf)
                finals[key] = max(finals.get(key, 0), max(entry.bars))
        previews = []
        ordered: list[Entry] = []
        for entry in entries:
            if isinstance(entry, BarGroup) and not entry.complete:
                last_final = finals.get((entry.symbol, entry.tf))
                if last_final is not None:
                    entry.bars = {t: bar for t, bar in entry.bars.items() if t > last_final}
                if entry.bars:
                    previews.append(entry)
            else:
                ordered.append(entry)
        self.entries = []
        self._groups = {}
        self.count = 0
        return ordered + previews


def bar_from_contract(symbol: str, tf: str, source: str, bar: dict[str, Any]) -> Bar:
    """A Bar back from its ``ohlcv`` form (journal records, late-joiner members)."""
    return Bar(symbol, tf, int(bar["open_time"]), int(bar["close_time"]), float(bar["open"]),
               float(bar["high"]), float(bar["low"]), float(bar["close"]), bar["volume"],
               int(bar["tick_count"]), bool(bar["complete"]), bool(bar["synthetic"]), source)


def price_tik(snapshot: PriceSnapshot) -> dict[str, Any]:
    """The ``price_tik`` payload of seed 000 section 4.6."""
    return {"symbol": snapshot.symbol, "bid": snapshot.bid, "ask": snapshot.ask,
            "mid": snapshot.mid, "tick_ts": snapshot.tick_ts, "snap_ts": snapshot.snap_ts}


class Message:
    """One Redis message, ready: PUBLISH ``text`` on ``channel`` (the Redis name), SET
    ``last_key`` to it, and upsert ``zset_members`` into ``zset_key`` (final bars)."""

    __slots__ = ("name", "channel", "text", "last_key", "zset_key", "zset_members", "record",
                 "conflate", "symbol", "tf", "bars")

    def __init__(self, name: str, channel: str, text: str, last_key: str | None = None,
                 record: list[Any] | None = None, conflate: str | None = None) -> None:
        self.name = name  # logical channel name
        self.channel = channel
        self.text = text
        self.last_key = last_key
        self.zset_key: str | None = None
        self.zset_members: list[Any] = []  # open_time, member, open_time, member, ...
        self.record = record  # the journal form, for durable messages
        self.conflate = conflate
        self.symbol = ""
        self.tf = ""
        self.bars = 0

    @property
    def durable(self) -> bool:
        return self.record is not None


class Rejection:
    """A payload (or some bars of one) that failed its contract and is not published."""

    __slots__ = ("channel", "reason", "symbol", "tf", "bars")

    def __init__(self, channel: str, reason: str, symbol: str = "", tf: str = "",
                 bars: list[dict[str, Any]] | None = None) -> None:
        self.channel = channel
        self.reason = reason
        self.symbol = symbol
        self.tf = tf
        self.bars = bars or []


class Renderer:
    """Entries -> messages. ``validators`` maps logical channel names to their compiled
    contract checks (None: no schema ships yet; such messages go out unvalidated and are
    counted in ``unvalidated``)."""

    def __init__(self, channels: dict[str, str], prefix: str, last_bars: int,
                 signer: Signer | None, validators: dict[str, Validator | None]) -> None:
        self.channels = channels
        self.prefix = prefix
        self.last_bars = last_bars
        self.signer = signer
        self.validators = validators
        self.unvalidated: dict[str, int] = {}

    def bars_key(self, symbol: str, tf: str) -> str:
        return "{}:ohlcv:last:{}:{}".format(self.prefix, symbol, tf)

    def render(self, entries: Iterable[Entry]) -> tuple[list[Message], list[Rejection]]:
        messages: list[Message] = []
        rejected: list[Rejection] = []
        for entry in entries:
            if isinstance(entry, BarGroup):
                self._render_bars(entry, messages, rejected)
            else:
                self._render_payload(entry, messages, rejected)
        return messages, rejected

    # -- ohlcv ------------------------------------------------------------------------------

    def _render_bars(self, group: BarGroup, messages: list[Message],
                     rejected: list[Rejection]) -> None:
        bars = [group.bars[t] for t in sorted(group.bars)]
        for start in range(0, len(bars), MAX_BARS_PER_MESSAGE):
            chunk = bars[start:start + MAX_BARS_PER_MESSAGE]
            try:
                messages.append(self._ohlcv(group, chunk))
                continue
            except (ContractError, ValueError) as exc:
                if len(chunk) == 1:
                    rejected.append(Rejection(OHLCV, str(exc), group.symbol, group.tf, chunk))
                    continue
            good = []
            for bar in chunk:  # find the culprits; the rest still goes out
                try:
                    self._ohlcv(group, [bar])
                    good.append(bar)
                except (ContractError, ValueError) as exc:
                    rejected.append(Rejection(OHLCV, str(exc), group.symbol, group.tf, [bar]))
            if good:
                try:
                    messages.append(self._ohlcv(group, good))
                except (ContractError, ValueError) as exc:
                    rejected.append(Rejection(OHLCV, str(exc), group.symbol, group.tf, good))

    def _ohlcv(self, group: BarGroup, bars: list[dict[str, Any]]) -> Message:
        """One ohlcv message; raises ContractError (or ValueError for a non-finite number)."""
        payload: dict[str, Any] = {"symbol": group.symbol, "tf": group.tf,
                                   "source": group.source, "bars": bars}
        self._check(OHLCV, payload)
        if self.validators.get(OHLCV) is None:
            members = [canonical(bar) for bar in bars]  # unchecked: ValueError on NaN/inf
        else:
            members = [bar_json(bar) for bar in bars]
        joined = ",".join(members)
        tail = ',"symbol":{},"tf":{}}}'.format(canonical(group.symbol), canonical(group.tf))
        sig = ""
        if self.signer is not None:
            sig = self.signer.sign('{"bars":[' + joined + "]" + tail)
        text = '{"bars":[' + joined + "]" + (',"sig":"' + sig + '"' if sig else "") \
            + ',"source":' + canonical(group.source) + tail
        message = Message(OHLCV, self.channels[OHLCV], text,
                          record=[OHLCV, group.symbol, group.tf, group.source, bars]
                          if group.complete else None)
        message.symbol = group.symbol
        message.tf = group.tf
        message.bars = len(bars)
        if group.complete:
            message.zset_key = self.bars_key(group.symbol, group.tf)
            zset: list[Any] = []
            for bar, member in zip(bars, members, strict=True):
                zset.append(bar["open_time"])
                zset.append(member)
            message.zset_members = zset
        return message

    # -- dict payloads --------------------------------------------------------------------------

    def _render_payload(self, entry: Payload, messages: list[Message],
                        rejected: list[Rejection]) -> None:
        try:
            self._check(entry.channel, entry.payload)
            text = compact(entry.payload)
        except (ContractError, ValueError, TypeError) as exc:
            rejected.append(Rejection(entry.channel, str(exc)))
            return
        record = None if entry.conflate is not None else ["payload", entry.channel,
                                                            entry.payload, entry.last_key]
        messages.append(Message(entry.channel, self.channels[entry.channel], text,
                                entry.last_key, record, entry.conflate))

    def _check(self, channel: str, payload: Any) -> None:
        check = self.validators.get(channel)
        if check is None:
            self.unvalidated[channel] = self.unvalidated.get(channel, 0) + 1
            return
        check(payload)


def entries_from_records(records: Iterable[Any]) -> list[Entry]:
    """Journal records back into batch entries, merging bars of a group across records."""
    batch = Batch()
    for record in records:
        if record[0] == OHLCV:
            _, symbol, tf, source, bars = record
            for bar in bars:
                batch.add_bar(symbol, tf, source, True, bar)
        else:
            # ["payload", channel, payload, last_key]; journals written before the last key
            # was kept have three fields
            batch.add(Payload(record[1], record[2], None, record[3] if len(record) > 3 else None))
    return batch.entries
