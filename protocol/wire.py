"""Wire format of the bus: frames, verbs, header and body codec (DESIGN.md section 5).

Every multipart message (after the ROUTER's routing id) starts with the signature frame
``FXA1`` and a verb frame. The frames after that depend on the verb::

    actor -> router                              router -> actor
    HELLO   name, meta                           WELCOME info
    SEND    dest, type, header, body             DELIVER tag, topic_or_type, header, body
    PUB     topic, header, body                  REPLY   type, header, body
    REPLY   dest, type, header, body             CREDIT  n
    ACK     up_to [, checkpoint]                 PING / PONG
    PING / PONG                                  RESET   reason
    BYE     reason                               CTRL    result
    CTRL    request                              FAULT   spec
                                                 DENY    what, reason

Batches: ``PUBN batch``, ``SENDN batch`` (actor -> router) and ``DELIVERN batch`` (router ->
actor) carry several messages in ONE msgpack frame: lists of ``[topic, header, body]``,
``[dest, type, header, body]`` and ``[delivery_id, attempt, topic, header, body]``. Every frame
is a pyzmq call that releases the GIL; with several threads sharing it, the number of calls,
not the bytes, bounds the bus, so producers batch what they publish in one loop turn and the
router hands an actor its backlog at once. A single message keeps the multi-frame form.

``tag`` packs the delivery id (u64) and the attempt number (u16). ``REPLY`` is our addition to
the verbs of the design: a reply goes straight to the requester's live connection, outside the
mailboxes and the prefetch window, so that a request made from inside a handler cannot deadlock
behind its own unacked deliveries. ``RESET`` tells a peer the router does not know it (the host
restarted): say HELLO again. ``CTRL`` carries status queries and host instructions.
``FAULT`` is an injected fault the router passes on when asked over CTRL (``make chaos``,
``fxcm crash``): a msgpack map ``{"kind": "crash" | "stall" | "release", "seconds": s}``. The
actor's next handler raises ``InjectedCrash`` (``crash``) or first blocks up to ``s`` seconds
(``stall``, at most ``MAX_STALL_SECONDS``); ``release`` ends a stall and cancels a pending fault.
``DENY`` tells a peer the router refused something it sent: ``what`` is ``HELLO`` (the name is
held by a live connection, reserved for the host's actors, or malformed) or the topic or type
of a PUB/SEND the name may not put on the bus (docs/architecture.md, "Trust").

HELLO's meta is a msgpack map: ``subscriptions`` (``[topic, policy, bound]`` each),
``prefetch``, ``ack_mode`` (``ACK_MODES``), ``pid``, ``transport``, ``incarnation`` and, for the
host's own actors, ``token``; the client writes it (``BusClient._hello_frames``), the router
reads what it needs into its peer record and keeps no other copy.

The header is a msgpack map: ``sender``, ``seq`` (per sender), ``ts`` (ns) and optional ``type``,
``corr`` and ``reply_to``. Bodies are msgpack. Packers are per thread: never share one.

Portable: this module runs on Python 3.7 too.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Dict, Optional, Tuple

import msgpack

from protocol.errors import ProtocolError

SIGNATURE = b"FXA1"

HELLO = b"HELLO"
WELCOME = b"WELCOME"
SEND = b"SEND"
PUB = b"PUB"
DELIVER = b"DELIVER"
REPLY = b"REPLY"
ACK = b"ACK"
CREDIT = b"CREDIT"
PING = b"PING"
PONG = b"PONG"
BYE = b"BYE"
PUBN = b"PUBN"
SENDN = b"SENDN"
DELIVERN = b"DELIVERN"
RESET = b"RESET"
CTRL = b"CTRL"
FAULT = b"FAULT"
DENY = b"DENY"

# The longest path of a unix socket (``ipc://``): sun_path is 108 bytes including the NUL.
IPC_PATH_MAX = 107

# How an actor acknowledges deliveries (HELLO meta ``ack_mode``): each as handled, or with a
# checkpoint that the router keeps and hands back in WELCOME.
ACK_MODES = ("auto", "checkpoint")

# The kinds of injected fault (FAULT), and the longest stall one may ask for.
FAULT_KINDS = ("crash", "stall", "release")
MAX_STALL_SECONDS = 300.0

_TAG = struct.Struct("!QH")
_U64 = struct.Struct("!Q")
_U32 = struct.Struct("!I")

# An actor's name: the one rule for config's ``actors[].name`` and the router's HELLO.
ACTOR_NAME_MAX = 64
ACTOR_NAME_RULE = "1..64 letters, digits, '_', '-' or '.'"


def valid_actor_name(name: object) -> bool:
    """True for 1..64 letters, digits, ``_``, ``-`` or ``.`` (no spaces, no control
    characters: a name ends up in log lines, metric labels and file names)."""
    return (isinstance(name, str) and 0 < len(name) <= ACTOR_NAME_MAX
            and all(c.isalnum() or c in "_-." for c in name))


# Largest frame the router accepts; anything bigger is malformed input, not a message.
MAX_FRAME_BYTES = 4 * 1024 * 1024

_local = threading.local()


def _packer() -> msgpack.Packer:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        _local.packer = packer
    return packer


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` with this thread's reusable packer."""
    try:
        packed: bytes = _packer().pack(obj)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        # A failed pack can leave the packer's buffer dirty: start the next one clean.
        _local.packer = None
        raise ProtocolError("cannot encode {!r}: {}".format(type(obj).__name__, exc)) from exc


def unpack(data: bytes, what: str = "body") -> Any:
    """Decode msgpack bytes; anything malformed raises ProtocolError naming ``what``."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError("malformed {}: {}".format(what, exc)) from exc


def pack_tag(delivery_id: int, attempt: int) -> bytes:
    return _TAG.pack(delivery_id, min(attempt, 0xFFFF))


def unpack_tag(data: bytes) -> Tuple[int, int]:
    if len(data) != _TAG.size:
        raise ProtocolError("delivery tag must be {} bytes, got {}".format(_TAG.size, len(data)))
    delivery_id, attempt = _TAG.unpack(data)
    return delivery_id, attempt


def pack_u64(value: int) -> bytes:
    return _U64.pack(value)


def unpack_u64(data: bytes, what: str) -> int:
    if len(data) != _U64.size:
        raise ProtocolError("{} must be {} bytes, got {}".format(what, _U64.size, len(data)))
    return int(_U64.unpack(data)[0])


def pack_u32(value: int) -> bytes:
    return _U32.pack(value)


def unpack_u32(data: bytes, what: str) -> int:
    if len(data) != _U32.size:
        raise ProtocolError("{} must be {} bytes, got {}".format(what, _U32.size, len(data)))
    return int(_U32.unpack(data)[0])


def make_header(sender: str, seq: int, ts_ns: int, msg_type: Optional[str] = None,
                corr: Optional[str] = None, reply_to: Optional[str] = None) -> bytes:
    header: Dict[str, Any] = {"sender": sender, "seq": seq, "ts": ts_ns}
    if msg_type is not None:
        header["type"] = msg_type
    if corr is not None:
        header["corr"] = corr
    if reply_to is not None:
        header["reply_to"] = reply_to
    return pack(header)


class Header(object):
    """A decoded, validated header."""

    __slots__ = ("sender", "seq", "ts", "type", "corr", "reply_to")

    def __init__(self, sender: str, seq: int, ts: int, type: Optional[str] = None,
                 corr: Optional[str] = None, reply_to: Optional[str] = None) -> None:
        self.sender = sender
        self.seq = seq
        self.ts = ts
        self.type = type
        self.corr = corr
        self.reply_to = reply_to

    def __repr__(self) -> str:
        return "Header(sender={!r}, seq={}, ts={}, type={!r})".format(
            self.sender, self.seq, self.ts, self.type)


_OPTIONAL_HEADER_FIELDS = ("type", "corr", "reply_to")


def decode_header(data: bytes) -> Header:
    """Decode and check a header frame; raises ProtocolError naming the bad field."""
    raw = unpack(data, "header")
    if not isinstance(raw, dict):
        raise ProtocolError("header must be a map, got {}".format(type(raw).__name__))
    sender = raw.get("sender")
    seq = raw.get("seq")
    ts = raw.get("ts")
    if not isinstance(sender, str):
        raise ProtocolError("header field 'sender' must be a string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ProtocolError("header field 'seq' must be a non-negative integer")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise ProtocolError("header field 'ts' must be an integer (ns)")
    optional = []
    for name in _OPTIONAL_HEADER_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise ProtocolError("header field {!r} must be a string".format(name))
        optional.append(value)
    return Header(sender, seq, ts, optional[0], optional[1], optional[2])

