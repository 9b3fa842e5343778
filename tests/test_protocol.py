"""The wire protocol: header, codec, delivery tags, signature, message registry, errors."""

from __future__ import annotations

import inspect
import os
import subprocess
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import errors
from protocol.errors import (
    BackpressureError,
    BusError,
    ConnectorError,
    ProtocolError,
    RequestTimeout,
)
from protocol.messages import from_wire, lookup, message, registered, to_wire, wire_name
from protocol.wire import (
    Header,
    decode_header,
    make_header,
    pack,
    pack_tag,
    pack_u32,
    pack_u64,
    unpack,
    unpack_tag,
    unpack_u32,
    unpack_u64,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
U16_MAX = 0xFFFF

# --- strategies ---------------------------------------------------------------------------------

# Integers msgpack can carry.
wire_ints = st.integers(min_value=I64_MIN, max_value=U64_MAX)
# Anything msgpack packs and unpacks back to an equal value (lists, not tuples; str map keys).
wire_scalars = (st.none() | st.booleans() | wire_ints | st.floats(allow_nan=False)
                | st.text(max_size=20) | st.binary(max_size=20))
wire_values = st.recursive(
    wire_scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=10,
)

HEADER_FIELDS = ("sender", "seq", "ts", "type", "corr", "reply_to")
_ABSENT = object()


@st.composite
def header_maps(draw: st.DrawFn) -> Dict[str, Any]:
    """Header-shaped maps: each field absent, well-typed, or anything; sometimes extra keys."""
    plausible = {
        "sender": st.text(max_size=10),
        "seq": wire_ints,
        "ts": wire_ints,
        "type": st.none() | st.text(max_size=10),
        "corr": st.none() | st.text(max_size=10),
        "reply_to": st.none() | st.text(max_size=10),
    }
    header: Dict[str, Any] = {}
    for field in HEADER_FIELDS:
        value = draw(st.just(_ABSENT) | plausible[field] | wire_values)
        if value is not _ABSENT:
            header[field] = value
    extras = draw(st.dictionaries(
        st.text(max_size=8).filter(lambda key: key not in HEADER_FIELDS), wire_values,
        max_size=2))
    header.update(extras)
    return header


def _is_valid_header(header: Dict[str, Any]) -> bool:
    """The oracle: what DESIGN.md section 5 says a header is."""
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    return (isinstance(header.get("sender"), str)
            and is_int(header.get("seq")) and header["seq"] >= 0
            and is_int(header.get("ts"))
            and all(header.get(name) is None or isinstance(header.get(name), str)
                    for name in ("type", "corr", "reply_to")))


# --- a message type for the registry tests ------------------------------------------------------

@message("test.tick")
@dataclass(frozen=True)
class _Tick:
    symbol: str
    ts_ms: int
    bid: float
    ask: float
    volume: Optional[int]


ticks = st.builds(
    _Tick,
    symbol=st.text(max_size=12),
    ts_ms=wire_ints,
    bid=st.floats(allow_nan=False),
    ask=st.floats(allow_nan=False),
    volume=st.none() | wire_ints,
)


def _fresh_name(prefix: str) -> str:
    return "{}.{}".format(prefix, uuid.uuid4().hex)


# --- header -------------------------------------------------------------------------------------

@given(sender=st.text(), seq=st.integers(min_value=0, max_value=U64_MAX), ts=wire_ints,
       msg_type=st.none() | st.text(), corr=st.none() | st.text(),
       reply_to=st.none() | st.text())
def test_header_round_trips_every_field(sender: str, seq: int, ts: int, msg_type: Optional[str],
                                        corr: Optional[str], reply_to: Optional[str]) -> None:
    header = decode_header(make_header(sender, seq, ts, msg_type, corr, reply_to))

    assert isinstance(header, Header)
    assert (header.sender, header.seq, header.ts, header.type, header.corr, header.reply_to) == (
        sender, seq, ts, msg_type, corr, reply_to)


@given(st.binary(max_size=64))
def test_decode_header_on_random_bytes_returns_a_header_or_raises_protocol_error(
        data: bytes) -> None:
    try:
        header = decode_header(data)
    except ProtocolError:
        return
    assert isinstance(header, Header)


@given(header_maps())
def test_decode_header_accepts_exactly_the_well_formed_maps(raw: Dict[str, Any]) -> None:
    data = msgpack.packb(raw, use_bin_type=True)

    if _is_valid_header(raw):
        header = decode_header(data)
        assert (header.sender, header.seq, header.ts) == (raw["sender"], raw["seq"], raw["ts"])
        assert (header.type, header.corr, header.reply_to) == (
            raw.get("type"), raw.get("corr"), raw.get("reply_to"))
    else:
        with pytest.raises(ProtocolError):
            decode_header(data)


@pytest.mark.parametrize(("data", "named"), [
    pytest.param(b"", "header", id="empty"),
    pytest.param(b"\xc1", "header", id="reserved-byte"),
    pytest.param(b"\x81\xa6sender", "header", id="truncated"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1, "ts": 2}) + b"\x00", "header",
                 id="trailing-bytes"),
    pytest.param(msgpack.packb([b"sender", 1, 2]), "map", id="list-not-map"),
    pytest.param(msgpack.packb("sender"), "map", id="string-not-map"),
    pytest.param(msgpack.packb({1: "a"}), "header", id="integer-key"),
    pytest.param(msgpack.packb({"seq": 1, "ts": 2}), "sender", id="missing-sender"),
    pytest.param(msgpack.packb({"sender": "a", "ts": 2}), "seq", id="missing-seq"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1}), "ts", id="missing-ts"),
    pytest.param(msgpack.packb({"sender": b"a", "seq": 1, "ts": 2}, use_bin_type=True), "sender",
                 id="bytes-sender"),
    pytest.param(msgpack.packb({"sender": "a", "seq": -1, "ts": 2}), "seq", id="negative-seq"),
    pytest.param(msgpack.packb({"sender": "a", "seq": True, "ts": 2}), "seq", id="bool-seq"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1.0, "ts": 2}), "seq", id="float-seq"),
    pytest.param(msgpack.packb({"sender": "a", "seq": "1", "ts": 2}), "seq", id="string-seq"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1, "ts": False}), "ts", id="bool-ts"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1, "ts": 2.5}), "ts", id="float-ts"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1, "ts": 2, "type": 7}), "type",
                 id="integer-type"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1, "ts": 2, "corr": [1]}), "corr",
                 id="list-corr"),
    pytest.param(msgpack.packb({"sender": "a", "seq": 1, "ts": 2, "reply_to": {"x": 1}}),
                 "reply_to", id="map-reply_to"),
])
def test_decode_header_rejects_malformed_input_naming_what_is_wrong(data: bytes,
                                                                     named: str) -> None:
    with pytest.raises(ProtocolError, match=named):
        decode_header(data)


def test_decode_header_ignores_unknown_fields() -> None:
    data = msgpack.packb({"sender": "a", "seq": 1, "ts": 2, "future": [1, 2]})

    header = decode_header(data)

    assert (header.sender, header.seq, header.ts, header.type) == ("a", 1, 2, None)


def test_make_header_omits_optional_fields_that_are_none() -> None:
    raw = msgpack.unpackb(make_header("a", 1, 2), raw=False)

    assert raw == {"sender": "a", "seq": 1, "ts": 2}


# --- codec --------------------------------------------------------------------------------------

@given(wire_values)
def test_pack_then_unpack_gives_back_the_value(value: Any) -> None:
    assert unpack(pack(value)) == value


@given(st.binary(max_size=64))
def test_unpack_on_random_bytes_raises_only_protocol_error(data: bytes) -> None:
    try:
        unpack(data)
    except ProtocolError:
        pass


def test_unpack_error_names_what_was_being_decoded() -> None:
    with pytest.raises(ProtocolError, match="checkpoint"):
        unpack(b"\xc1", "checkpoint")


@pytest.mark.parametrize("value", [
    pytest.param(object(), id="object"),
    pytest.param(U64_MAX + 1, id="int-too-big"),
    pytest.param(I64_MIN - 1, id="int-too-small"),
    pytest.param({"a": {1, 2}}, id="nested-set"),
])
def test_pack_of_an_unencodable_value_raises_protocol_error(value: Any) -> None:
    with pytest.raises(ProtocolError):
        pack(value)


def test_pack_works_normally_after_a_failed_pack() -> None:
    with pytest.raises(ProtocolError):
        pack([1, "partial", object()])

    assert pack({"a": 1}) == msgpack.packb({"a": 1}, use_bin_type=True)


# --- delivery tags and fixed-size integers ------------------------------------------------------

@given(delivery_id=st.integers(min_value=0, max_value=U64_MAX),
       attempt=st.integers(min_value=0, max_value=U16_MAX))
def test_delivery_tag_round_trips(delivery_id: int, attempt: int) -> None:
    assert unpack_tag(pack_tag(delivery_id, attempt)) == (delivery_id, attempt)


def test_delivery_tag_attempt_saturates_at_the_u16_maximum() -> None:
    assert unpack_tag(pack_tag(7, U16_MAX + 1000)) == (7, U16_MAX)


@pytest.mark.parametrize("length", [0, 1, 9, 11, 64])
def test_unpack_tag_of_a_wrong_length_frame_raises_protocol_error(length: int) -> None:
    with pytest.raises(ProtocolError, match="tag"):
        unpack_tag(b"\x00" * length)


@given(st.integers(min_value=0, max_value=U64_MAX))
def test_u64_round_trips(value: int) -> None:
    assert unpack_u64(pack_u64(value), "up_to") == value


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_u32_round_trips(value: int) -> None:
    assert unpack_u32(pack_u32(value), "credit") == value


@pytest.mark.parametrize("length", [0, 4, 7, 9])
def test_unpack_u64_of_a_wrong_length_frame_raises_protocol_error_naming_it(length: int) -> None:
    with pytest.raises(ProtocolError, match="up_to"):
        unpack_u64(b"\x00" * length, "up_to")


@pytest.mark.parametrize("length", [0, 3, 5, 8])
def test_unpack_u32_of_a_wrong_length_frame_raises_protocol_error_naming_it(length: int) -> None:
    with pytest.raises(ProtocolError, match="credit"):
        unpack_u32(b"\x00" * length, "credit")


# --- message registry ---------------------------------------------------------------------------

@given(ticks)
def test_registered_message_round_trips_through_the_wire(tick: _Tick) -> None:
    body = unpack(pack(to_wire(tick)))

    decoded = from_wire("test.tick", body)

    assert type(decoded) is _Tick
    assert decoded == tick


def test_registered_message_is_found_by_its_wire_name() -> None:
    tick = _Tick("EURUSD", 1, 1.1, 1.2, None)

    assert wire_name(tick) == "test.tick"
    assert lookup("test.tick") is _Tick
    assert registered()["test.tick"] is _Tick


def test_message_wire_form_is_the_field_values_in_declaration_order() -> None:
    assert to_wire(_Tick("EURUSD", 1, 1.1, 1.2, 5)) == ["EURUSD", 1, 1.1, 1.2, 5]


def test_unregistered_bodies_pass_through_unchanged() -> None:
    body = {"anything": [1, 2]}

    assert to_wire(body) is body
    assert from_wire(None, body) is body
    assert from_wire(_fresh_name("test.unknown"), body) is body
    assert wire_name(body) is None


@pytest.mark.parametrize(("body", "named"), [
    pytest.param(["EURUSD", 1, 1.1, 1.2], "5 fields", id="too-short"),
    pytest.param(["EURUSD", 1, 1.1, 1.2, None, None], "5 fields", id="too-long"),
    pytest.param([], "5 fields", id="empty"),
    pytest.param({"symbol": "EURUSD"}, "list", id="map-not-list"),
    pytest.param("EURUSD", "list", id="string-not-list"),
    pytest.param(None, "list", id="nil-not-list"),
    pytest.param([1, 1, 1.1, 1.2, None], "'symbol'", id="int-for-str"),
    pytest.param([b"EURUSD", 1, 1.1, 1.2, None], "'symbol'", id="bytes-for-str"),
    pytest.param(["EURUSD", 1.0, 1.1, 1.2, None], "'ts_ms'", id="float-for-int"),
    pytest.param(["EURUSD", True, 1.1, 1.2, None], "'ts_ms'", id="bool-for-int"),
    pytest.param(["EURUSD", "1", 1.1, 1.2, None], "'ts_ms'", id="str-for-int"),
    pytest.param(["EURUSD", 1, "1.1", 1.2, None], "'bid'", id="str-for-float"),
    pytest.param(["EURUSD", 1, 1.1, False, None], "'ask'", id="bool-for-float"),
    pytest.param(["EURUSD", 1, 1.1, None, None], "'ask'", id="nil-for-float"),
    pytest.param(["EURUSD", 1, 1.1, 1.2, 2.5], "'volume'", id="float-for-optional-int"),
    pytest.param(["EURUSD", 1, 1.1, 1.2, True], "'volume'", id="bool-for-optional-int"),
])
def test_from_wire_rejects_a_malformed_body_naming_the_problem(body: Any, named: str) -> None:
    with pytest.raises(ProtocolError, match=named):
        from_wire("test.tick", body)


def test_from_wire_accepts_integers_for_float_fields() -> None:
    tick = from_wire("test.tick", ["EURUSD", 1, 1, 2, None])

    assert (tick.bid, tick.ask) == (1.0, 2.0)
    assert type(tick.bid) is float
    assert type(tick.ask) is float


def test_from_wire_accepts_none_for_optional_fields() -> None:
    tick = from_wire("test.tick", ["EURUSD", 1, 1.1, 1.2, None])

    assert tick == _Tick("EURUSD", 1, 1.1, 1.2, None)


def test_registering_a_mutable_dataclass_raises_type_error() -> None:
    name = _fresh_name("test.mutable")

    @dataclass
    class Mutable:
        value: int

    with pytest.raises(TypeError, match="frozen"):
        message(name)(Mutable)
    assert lookup(name) is None


def test_registering_a_plain_class_raises_type_error() -> None:
    name = _fresh_name("test.plain")

    class Plain:
        value: int = 0

    with pytest.raises(TypeError, match="dataclass"):
        message(name)(Plain)
    assert lookup(name) is None


def test_registering_a_name_twice_with_another_class_raises_type_error() -> None:
    name = _fresh_name("test.duplicate")

    @dataclass(frozen=True)
    class First:
        value: int

    @dataclass(frozen=True)
    class Second:
        value: int

    message(name)(First)

    with pytest.raises(TypeError, match="already registered"):
        message(name)(Second)
    assert lookup(name) is First


def test_registering_the_same_class_under_its_name_again_is_harmless() -> None:
    assert message("test.tick")(_Tick) is _Tick

    assert lookup("test.tick") is _Tick
    assert from_wire("test.tick", ["EURUSD", 1, 1.1, 1.2, None]) == _Tick(
        "EURUSD", 1, 1.1, 1.2, None)


def test_registering_a_message_with_an_unsupported_field_type_raises_type_error() -> None:
    name = _fresh_name("test.union")

    @dataclass(frozen=True)
    class Ambiguous:
        value: Union[int, str]

    with pytest.raises(TypeError, match="unsupported"):
        message(name)(Ambiguous)
    assert lookup(name) is None


# --- errors -------------------------------------------------------------------------------------

def _error_classes() -> List[type]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if cls.__module__ == errors.__name__ and issubclass(cls, BaseException)]


def test_every_error_class_derives_from_connector_error() -> None:
    classes = _error_classes()

    assert {cls.__name__ for cls in classes} >= {
        "ConnectorError", "ProtocolError", "BusError", "BackpressureError", "RequestTimeout",
        "EndpointError", "BrokerError", "LoginFailed", "HistoryNotReady", "ConfigError"}
    assert [cls for cls in classes if not issubclass(cls, ConnectorError)] == []


def test_every_error_class_is_exported_from_the_protocol_package() -> None:
    missing = [cls.__name__ for cls in _error_classes()
               if getattr(protocol, cls.__name__, None) is not cls]

    assert missing == []


@pytest.mark.parametrize("cls", [BackpressureError, RequestTimeout])
def test_flow_control_failures_are_bus_errors(cls: type) -> None:
    assert issubclass(cls, BusError)


def test_protocol_error_is_not_a_bus_error() -> None:
    assert not issubclass(ProtocolError, BusError)


# --- Python 3.7 ---------------------------------------------------------------------------------

_PORTABLE_CHECK = textwrap.dedent("""
    import sys
    assert sys.version_info[:2] == (3, 7), sys.version

    for path in sys.argv[1:]:
        with open(path, "rb") as source:
            compile(source.read(), path, "exec", dont_inherit=True)

    import actors.base
    import actors.fxcm_session
    import bus
    import protocol
    from dataclasses import dataclass
    from typing import Optional
    from protocol.wire import make_header

    @protocol.message("py37.tick")
    @dataclass(frozen=True)
    class Tick:
        symbol: str
        ts_ms: int
        bid: float
        volume: Optional[int]

    tick = Tick("EURUSD", 1700000000000, 1.0845, None)
    body = protocol.unpack(protocol.pack(protocol.to_wire(tick)))
    assert protocol.from_wire("py37.tick", body) == tick, body
    header = protocol.decode_header(make_header("feed", 3, 1700000000000000000, "py37.tick"))
    assert (header.sender, header.seq, header.type) == ("feed", 3, "py37.tick"), header
    print("portable subset OK")
""")

_PORTABLE_SOURCES = ("protocol/*.py", "bus/*.py", "actors/__init__.py", "actors/base.py",
                     "actors/child.py", "actors/fxcm_session/*.py")


@pytest.mark.py37
def test_portable_subset_compiles_and_imports_on_python37(python37: str) -> None:
    sources = sorted(str(path.relative_to(REPO_ROOT)) for pattern in _PORTABLE_SOURCES
                     for path in REPO_ROOT.glob(pattern))
    assert "protocol/wire.py" in sources
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)

    result = subprocess.run(
        [python37, "-c", _PORTABLE_CHECK, *sources], cwd=str(REPO_ROOT), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout
    assert "portable subset OK" in result.stdout
