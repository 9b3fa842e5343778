"""command_handler: commands from a real Redis, results on the real bus, a stand-in poller.

Pure parts first (canonical JSON and HMAC, keys, token buckets with a test clock, schema and
normalisation), then a real host with a real Redis: every kind of bad input gets its error
result with its code, valid commands still run, bootstrap runs its steps in order, and the
subscription comes back after Redis restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import redis

from actors._redis_server import EmbeddedRedis
from actors.command_handler import (
    CODES,
    COMMANDS,
    COMMANDS_SCHEMA,
    RESULTS_SCHEMA,
    CommandRefused,
    Intake,
    PerCommandLimiter,
    RawGate,
    RejectionTally,
    TokenBucket,
    Verifier,
    canonical_json,
    check_settings,
    load_keys,
    make_result,
    resolve_mode,
    sign,
)
from bus import ipc_endpoint
from protocol.errors import ConfigError
from tests.helpers import Probe, bus_status, host_in_thread, wait_for

KID = "ops-1"
SECRET = "correct horse battery staple"
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"]
CHANNEL = "fxcm:commands"
NOW = 1_764_867_000.0


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def independent_sig(secret: str, cmd: str, req_id: str, ts: Any, args: Any, kid: str,
                    nonce: str) -> str:
    """The signature as a sender computes it, written out here rather than imported."""
    text = json.dumps({"args": args, "cmd": cmd, "kid": kid, "nonce": nonce, "req_id": req_id,
                       "ts": ts}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def envelope(cmd: str, args: dict[str, Any], req_id: str, ts: float | None = None
             ) -> dict[str, Any]:
    return {"cmd": cmd, "req_id": req_id, "ts": time.time() if ts is None else ts, "args": args}


def signed(cmd: str, args: dict[str, Any], req_id: str, ts: float | None = None,
           nonce: str | None = None, kid: str = KID, secret: str = SECRET) -> dict[str, Any]:
    message = envelope(cmd, args, req_id, ts)
    nonce = nonce or uuid.uuid4().hex
    message["auth"] = {"kid": kid, "nonce": nonce, "sig": independent_sig(
        secret, cmd, req_id, message["ts"], args, kid, nonce)}
    return message


def make_intake(mode: str = "off", clock: FakeClock | None = None, per_minute: int = 100,
                allowlist: tuple[str, ...] = COMMANDS) -> Intake:
    keys = {KID: SECRET.encode()} if mode != "off" else {}
    return Intake(SYMBOLS, Verifier(mode, keys, 30.0),
                  PerCommandLimiter(per_minute, clock or FakeClock()), allowlist,
                  new_req_id=lambda: "legacy-generated")


def refused(intake: Intake, message: Any, now: float = NOW) -> CommandRefused:
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    with pytest.raises(CommandRefused) as caught:
        intake.admit(intake.screen(data, now))
    return caught.value


def screen(intake: Intake, message: dict[str, Any], now: float = NOW) -> Any:
    return intake.screen(json.dumps(message).encode(), now)


# -- canonical JSON and HMAC -------------------------------------------------------------------

def test_canonical_json_is_sorted_compact_and_keeps_non_ascii() -> None:
    text = canonical_json("fxcm_warmup", "r-1", 1700000000.5, {"symbols": ["XAUUSD"],
                                                               "provider": "ünï"}, "k", "n-123456")
    assert text == ('{"args":{"provider":"ünï","symbols":["XAUUSD"]},"cmd":"fxcm_warmup",'
                    '"kid":"k","nonce":"n-123456","req_id":"r-1","ts":1700000000.5}'
                    ).encode("utf-8")


def test_sign_matches_an_independent_hmac_of_the_canonical_json() -> None:
    args = {"symbols": ["XAUUSD"], "lookback_days": 3}
    assert sign(SECRET.encode(), "fxcm_warmup", "r-1", NOW, args, KID, "nonce-001") == \
        independent_sig(SECRET, "fxcm_warmup", "r-1", NOW, args, KID, "nonce-001")


def test_verifier_accepts_a_good_signature_and_names_its_nonce() -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-good", ts=NOW,
                     nonce="nonce-good-1")
    command = screen(make_intake("required"), message, now=NOW + 5)
    assert command.signed == (KID, "nonce-good-1")


def test_verifier_refuses_a_signature_over_other_args() -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-tampered", ts=NOW)
    message["args"] = {"symbols": ["EURUSD"]}
    error = refused(make_intake("required"), message)
    assert (error.code, error.req_id) == ("auth_failed", "r-tampered")
    assert "bad signature" in error.message


def test_verifier_refuses_an_unknown_kid() -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-kid", ts=NOW, kid="other")
    error = refused(make_intake("required"), message)
    assert error.code == "auth_failed" and "unknown kid" in error.message


@pytest.mark.parametrize("offset", [-31.0, 31.0])
def test_verifier_refuses_a_ts_outside_the_skew_window(offset: float) -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-skew", ts=NOW + offset)
    error = refused(make_intake("required"), message)
    assert error.code == "auth_failed" and "skew" in error.message


def test_verifier_reads_a_millisecond_ts() -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-ms", ts=int(NOW * 1000) + 2000)
    assert screen(make_intake("required"), message).signed is not None


def test_rolling_mode_accepts_unsigned_but_refuses_a_bad_signature() -> None:
    intake = make_intake("rolling")
    assert screen(intake, envelope("fxcm_warmup", {"symbols": "XAUUSD"}, "r-u", NOW)).signed \
        is None
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-bad", ts=NOW, secret="wrong")
    assert refused(intake, message).code == "auth_failed"


def test_required_mode_refuses_an_unsigned_command() -> None:
    error = refused(make_intake("required"), envelope("fxcm_warmup", {"symbols": "XAUUSD"},
                                                      "r-unsigned", NOW))
    assert error.code == "auth_failed" and "unsigned" in error.message


def test_refusals_never_contain_the_secret_or_the_signature() -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-leak", ts=NOW)
    message["args"]["lookback_days"] = 2
    error = refused(make_intake("required"), message)
    public = json.dumps(make_result(error.req_id, error.cmd, "error", code=error.code,
                                    message=error.message))
    assert SECRET not in public and message["auth"]["sig"] not in public


# -- keys and modes ----------------------------------------------------------------------------

def test_auto_mode_is_required_with_a_key_and_off_without() -> None:
    assert resolve_mode("auto", {})[0] == "off"
    mode, keys = resolve_mode("auto", {"FXCM_HMAC_KID": KID, "FXCM_HMAC_SECRET": SECRET})
    assert (mode, keys) == ("required", {KID: SECRET.encode()})


def test_a_secret_without_a_kid_verifies_signed_commands_and_lets_unsigned_ones_in() -> None:
    # The predecessor's operators have FXCM_HMAC_SECRET alone: it signs ohlcv, and its
    # producers send unsigned commands; a signature, when present, is still checked.
    mode, keys = resolve_mode("auto", {"FXCM_HMAC_SECRET": SECRET})
    assert mode == "rolling"
    intake = Intake(SYMBOLS, Verifier(mode, keys, 30.0), PerCommandLimiter(100, FakeClock()),
                    COMMANDS, new_req_id=lambda: "legacy-generated")
    assert screen(intake, {"type": "fxcm_warmup", "symbol": "XAUUSD", "tf": "1m"}).signed \
        is None
    good = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-any-kid", ts=NOW, kid="smc")
    assert screen(intake, good).signed == ("smc", good["auth"]["nonce"])
    forged = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-forged", ts=NOW, kid="smc",
                    secret="not the secret")
    assert refused(intake, forged).code == "auth_failed"
    # required mode (or a kid) makes the signature mandatory, with the same secret
    assert resolve_mode("required", {"FXCM_HMAC_SECRET": SECRET})[0] == "required"
    assert resolve_mode("auto", {"FXCM_HMAC_SECRET": SECRET, "FXCM_HMAC_KID": KID})[0] \
        == "required"


def test_required_mode_without_any_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="command_handler.auth_mode"):
        resolve_mode("required", {})


def test_secrets_file_gives_several_kids(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("# rotation\nold = first-secret\n\nnew=second=with=equals\n")
    keys = load_keys({"FXCM_HMAC_SECRETS_FILE": str(path), "FXCM_HMAC_KID": KID,
                      "FXCM_HMAC_SECRET": SECRET})
    assert keys == {"old": b"first-secret", "new": b"second=with=equals", KID: SECRET.encode()}


def test_a_bad_secrets_file_line_is_named_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("good=one\nthis-line-has-no-separator-and-is-secret\n")
    with pytest.raises(ConfigError) as caught:
        load_keys({"FXCM_HMAC_SECRETS_FILE": str(path)})
    assert "line 2" in str(caught.value)
    assert "this-line-has-no-separator" not in str(caught.value)


def handler_settings(**overrides: Any) -> dict[str, Any]:
    import config
    from config.settings import SHARED_KEYS

    raw = config.load(environ={}).raw
    settings = {key: raw[key] for key in SHARED_KEYS}
    settings.update(raw["command_handler"])
    settings.update(overrides)
    return settings


def test_shipped_settings_pass_their_check() -> None:
    assert check_settings(handler_settings(), {}) == ("off", {})


@pytest.mark.parametrize("key, value, named", [
    ("rate_burst", 0, "command_handler.rate_burst"),
    ("allowlist", ["fxcm_warmup", "fxcm_reboot"], "command_handler.allowlist[1]"),
    ("nonce_ttl_seconds", 10.0, "command_handler.nonce_ttl_seconds"),
    ("auth_mode", "sometimes", "command_handler.auth_mode"),
    ("timeout_seconds", "soon", "command_handler.timeout_seconds"),
])
def test_impossible_settings_are_refused_naming_the_key(key: str, value: Any,
                                                        named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_settings(handler_settings(**{key: value}), {})


# -- limits with a test clock ------------------------------------------------------------------

def test_token_bucket_allows_its_burst_then_refills_with_the_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.49)
    assert not bucket.take()
    clock.advance(0.01)
    assert bucket.take() and not bucket.take()
    clock.advance(100.0)
    assert bucket.available() == 3.0


def test_per_command_limit_counts_each_command_on_its_own() -> None:
    clock = FakeClock()
    limiter = PerCommandLimiter(2, clock)
    assert [limiter.take("fxcm_warmup") for _ in range(3)] == [True, True, False]
    assert limiter.take("fxcm_backfill")
    clock.advance(30.0)  # one more warmup per 30 s at 2 per minute
    assert limiter.take("fxcm_warmup") and not limiter.take("fxcm_warmup")


def test_raw_gate_checks_size_before_rate_and_an_oversize_message_spends_no_token() -> None:
    gate = RawGate(100, TokenBucket(1.0, 1, FakeClock()))
    assert gate.admit(101) == "too_large"
    assert gate.admit(100) is None
    assert gate.admit(10) == "rate_limited"
    assert gate.admit(1000) == "too_large"


def test_rejection_tally_reports_the_first_at_once_then_once_per_interval() -> None:
    clock = FakeClock()
    tally = RejectionTally(1.0, clock)
    tally.add("rate_limited")
    assert tally.due() == {"rate_limited": 1}
    for _ in range(5):
        tally.add("rate_limited")
    tally.add("too_large")
    clock.advance(0.5)
    assert tally.due() is None
    clock.advance(0.5)
    assert tally.due() == {"rate_limited": 5, "too_large": 1}
    assert tally.due() is None


def test_per_command_limit_comes_after_auth_and_before_the_allowlist() -> None:
    intake = make_intake("required", per_minute=1, allowlist=("fxcm_warmup",))
    bad = signed("fxcm_backfill", {"symbol": "XAUUSD"}, "r-1", ts=NOW, secret="wrong")
    assert refused(intake, bad).code == "auth_failed"
    first = signed("fxcm_backfill", {"symbol": "XAUUSD"}, "r-2", ts=NOW)
    assert refused(intake, first).code == "not_allowed"  # the bad one spent no token
    second = signed("fxcm_backfill", {"symbol": "XAUUSD"}, "r-3", ts=NOW)
    assert refused(intake, second).code == "rate_limited"


# -- schema and normalisation ------------------------------------------------------------------

def whole_schema(path: Path) -> Any:
    return jsonschema_rs.validator_for(json.loads(path.read_text())).validate


def test_commands_schema_accepts_both_shapes() -> None:
    validate = whole_schema(COMMANDS_SCHEMA)
    validate(signed("fxcm_bootstrap", {"warmup": {"symbols": ["XAU/USD"]},
                                       "backfill": {"symbol": "XAUUSD", "lookback_minutes": 60},
                                       "republish_tail": {"symbol": "XAUUSD",
                                                          "timeframes": ["1m"]},
                                       "tail_guard": {"symbols": "XAUUSD", "repair": False}},
                    "r-schema", ts=NOW))
    validate({"type": "fxcm_warmup", "symbol": "XAUUSD", "tf": "1m", "min_history_bars": 1000})
    validate({"type": "fxcm_set_universe", "targets": [{"symbol": "XAU/USD", "tf": "m1"}]})


@pytest.mark.parametrize("message", [
    {"cmd": "fxcm_warmup", "req_id": "r", "ts": "now", "args": {"symbols": ["XAUUSD"]}},
    {"cmd": "fxcm_warmup", "req_id": "r", "ts": NOW, "args": {"symbols": 5}},
    {"cmd": "fxcm_warmup", "req_id": "r", "ts": NOW, "args": {"symbols": ["XAUUSD"]},
     "extra": 1},
    {"cmd": "fxcm_backfill", "req_id": "r", "ts": NOW, "args": {"symbol": "XAUUSD",
                                                                "start_ms": 1764800000000}},
    {"cmd": "fxcm_warmup", "req_id": "has spaces", "ts": NOW, "args": {"symbols": ["XAUUSD"]}},
    {"cmd": "fxcm_warmup", "req_id": "r", "ts": NOW, "args": {"symbols": ["XAUUSD"]},
     "auth": {"kid": KID, "nonce": "short", "sig": "00"}},
], ids=["ts-string", "symbols-number", "extra-key", "half-range", "bad-req-id", "bad-auth"])
def test_wrong_shapes_are_contract_errors_in_schema_and_intake(message: dict[str, Any]) -> None:
    with pytest.raises(jsonschema_rs.ValidationError):
        whole_schema(COMMANDS_SCHEMA)(message)
    assert refused(make_intake(), message).code == "contract_error"


def test_a_command_nested_too_deep_for_the_validator_is_a_contract_error() -> None:
    """Brackets nested 900 deep must be refused, not crash the handler (a validator may give
    up on deep nesting with a ValueError)."""
    nested: Any = "x"
    for _ in range(900):
        nested = [nested]
    for message in ({"cmd": "fxcm_warmup", "req_id": "r", "ts": NOW, "args": {"x": nested}},
                    {"type": "fxcm_warmup", "symbol": nested}):
        error = refused(make_intake(), message)
        assert error.code == "contract_error"


def test_unknown_command_is_told_apart_from_a_contract_error() -> None:
    intake = make_intake("required")
    error = refused(intake, envelope("fxcm_reboot", {}, "r-unknown", NOW))
    assert (error.code, error.req_id, error.cmd) == ("unknown_command", "r-unknown",
                                                    "fxcm_reboot")
    assert refused(intake, {"type": "fxcm_reboot"}).code == "unknown_command"


def test_not_json_and_not_utf8_are_bad_json() -> None:
    intake = make_intake()
    assert refused(intake, b"{not json").code == "bad_json"
    assert refused(intake, b"\xff\xfe").code == "bad_json"
    assert refused(intake, b"[" * 100000).code == "bad_json"
    assert refused(intake, b'{"cmd": NaN}').code == "bad_json"
    assert refused(intake, b"[1, 2]").code == "contract_error"


def test_legacy_shape_becomes_a_command_with_a_generated_req_id() -> None:
    command = screen(make_intake(), {"type": "fxcm_warmup", "symbol": "XAU/USD", "tf": "m1",
                                     "min_history_bars": 1000})
    assert (command.req_id, command.cmd, command.legacy) == ("legacy-generated", "fxcm_warmup",
                                                             True)
    assert command.steps == (("warmup", {"symbols": ["XAUUSD"], "timeframes": ["1m"],
                                         "min_history_bars": 1000}),)


# The commands smc_v1's warmup requester sends (app/fxcm_warmup_requester.py), byte for byte:
# sorted keys, compact, all nine keys every time (research notes, section 7.1).
SMC_V1_COMMANDS = [
    b'{"fxcm_status":{"market":"closed","ohlcv":"ok","price":"ok"},"lookback_bars":2000,'
    b'"lookback_minutes":2000,"min_history_bars":2000,"reason":"insufficient_history",'
    b'"s2":{"bars_count":0,"history_state":"insufficient","last_open_time_ms":null},'
    b'"symbol":"XAUUSD","tf":"1m","type":"fxcm_warmup"}',
    b'{"fxcm_status":{"market":"unknown","ohlcv":"down","price":"down"},"lookback_bars":20160,'
    b'"lookback_minutes":20160,"min_history_bars":20160,"reason":"insufficient_history",'
    b'"s2":{"bars_count":0,"history_state":"insufficient","last_open_time_ms":null},'
    b'"symbol":"XAUUSD","tf":"1m","type":"fxcm_warmup"}',
    b'{"fxcm_status":{"market":"open","ohlcv":"ok","price":"ok"},"lookback_bars":4032,'
    b'"lookback_minutes":20160,"min_history_bars":4032,"reason":"prefetch_history",'
    b'"s2":{"bars_count":50,"history_state":"ok","last_open_time_ms":1765557300000},'
    b'"symbol":"XAUUSD","tf":"5m","type":"fxcm_warmup"}',
    b'{"fxcm_status":{"market":"open","ohlcv":"delayed","price":"lag"},"lookback_bars":4032,'
    b'"lookback_minutes":20160,"min_history_bars":4032,"reason":"stale_tail",'
    b'"s2":{"bars_count":50,"history_state":"stale_tail","last_open_time_ms":1765550100000},'
    b'"symbol":"XAUUSD","tf":"5m","type":"fxcm_backfill"}',
    # its wip branch's live-gap guard: fxcm_status values may be null there
    b'{"fxcm_status":{"market":null,"ohlcv":null,"price":null},"lookback_bars":12,'
    b'"lookback_minutes":12,"min_history_bars":12,"reason":"live_gap_detected",'
    b'"s2":{"expected_step_ms":60000,"gap_ms":720000,"history_state":"gappy_tail",'
    b'"last_open_time_ms":1765557300000,"missing_bars":11,"next_open_time_ms":1765558020000},'
    b'"symbol":"XAUUSD","tf":"1m","type":"fxcm_warmup"}',
]
# ... and the predecessor's own documented and tested shapes.
PREDECESSOR_COMMANDS = [
    b'{"type":"fxcm_warmup","symbol":"XAUUSD","tf":"1m","min_history_bars":1000}',
    b'{"type":"fxcm_warmup","symbol":"XAUUSD","tf":"1m","min_history_bars":250,'
    b'"lookback_minutes":60}',
    b'{"type":"fxcm_backfill","symbol":"XAUUSD","tf":"1m","lookback_minutes":90}',
    b'{"type":"fxcm_warmup","symbol":"XAU/USD","tf":"m1"}',
    b'{"type":"fxcm_set_universe","targets":[{"symbol":"XAU/USD","tf":"m1"}]}',
    b'{"type":"fxcm_set_universe","targets":[{"symbol":"XAUUSD","tf":"1m"}],'
    b'"reason":"smc","expires_at_ms":1765557300000}',
]


@pytest.mark.parametrize("data", SMC_V1_COMMANDS + PREDECESSOR_COMMANDS)
def test_the_predecessors_producers_commands_are_taken_with_extra_fields_ignored(
        data: bytes) -> None:
    for mode in ("off", "rolling"):
        command = make_intake(mode).screen(data, NOW)
        sent = json.loads(data)
        assert command.legacy and command.cmd == sent["type"] and command.signed is None
        expected_ignored = {"lookback_bars", "reason", "s2", "fxcm_status"} & set(sent)
        if sent["type"] == "fxcm_set_universe":
            expected_ignored = set()
        assert set(command.ignored) == expected_ignored
        for key in ("min_history_bars", "lookback_minutes"):
            if key in sent:
                assert command.args[key] == sent[key]


def test_legacy_counts_as_the_predecessor_read_them() -> None:
    # int(payload.get(key) or 0): numeric strings count, 0 and null are "not given"
    command = make_intake().screen(json.dumps({
        "type": "fxcm_backfill", "symbol": "XAUUSD", "tf": "1m", "lookback_minutes": "90",
        "min_history_bars": 0}).encode(), NOW)
    assert command.args["lookback_minutes"] == 90 and "min_history_bars" not in command.args
    # the current envelope stays strict: an unknown argument is a contract error
    error = refused(make_intake(), envelope("fxcm_warmup", {"symbols": ["XAUUSD"],
                                                            "reason": "x"}, "r-strict"))
    assert error.code == "contract_error" and "reason" in error.message


def test_arguments_are_normalised_for_the_poller() -> None:
    intake = make_intake()
    backfill = screen(intake, envelope("fxcm_backfill", {
        "symbol": "eur/usd", "tf": "m60", "start_utc": "2025-12-05T09:00:00Z",
        "end_utc": "2025-12-05T10:00:00+00:00", "publish": False}, "r-b", NOW))
    assert backfill.args == {"symbol": "EURUSD", "timeframes": ["1h"], "publish": False,
                             "start_ms": 1764925200000, "end_ms": 1764928800000}
    universe = screen(intake, envelope("fxcm_set_universe", {
        "targets": ["XAU/USD:m1", {"symbol": "XAUUSD", "tf": "1m"}, "EURUSD:H4"]}, "r-u", NOW))
    assert universe.args["targets"] == [{"symbol": "XAUUSD", "tf": "1m"},
                                        {"symbol": "EURUSD", "tf": "4h"}]
    guard = screen(intake, envelope("fxcm_tail_guard", {"symbols": "XAUUSD", "tfs": "1m"},
                                    "r-g", NOW))
    assert guard.args == {"symbols": ["XAUUSD"], "timeframes": ["1m"]}


@pytest.mark.parametrize("cmd, args, words", [
    ("fxcm_warmup", {"symbols": ["BTCUSD"]}, "not configured"),
    ("fxcm_republish_tail", {"symbol": "XAUUSD", "timeframes": ["7m"]}, "unknown timeframe"),
    ("fxcm_backfill", {"symbol": "XAUUSD", "start_ms": 1764928800000,
                       "end_ms": 1764925200000}, "before end_ms"),
    ("fxcm_backfill", {"symbol": "XAUUSD", "lookback_minutes": 60, "start_ms": 1764925200000,
                       "end_ms": 1764928800000}, "one range"),
    ("fxcm_warmup", {"symbols": ["XAUUSD"], "lookback_days": 1, "lookback_hours": 2},
     "give one of"),
])
def test_rules_beyond_the_schema_are_contract_errors(cmd: str, args: dict[str, Any],
                                                     words: str) -> None:
    error = refused(make_intake(), envelope(cmd, args, "r-rule", NOW))
    assert error.code == "contract_error" and words in error.message


def test_bootstrap_keeps_its_steps_in_order_whatever_the_key_order() -> None:
    command = screen(make_intake(), envelope("fxcm_bootstrap", {
        "tail_guard": {"symbols": ["XAUUSD"]}, "warmup": {"symbols": ["XAUUSD"]},
        "republish_tail": {"symbol": "XAUUSD", "timeframes": "1m"}}, "r-boot", NOW))
    assert [op for op, _ in command.steps] == ["warmup", "republish_tail", "tail_guard"]


def test_results_schema_knows_exactly_the_stable_codes() -> None:
    schema = json.loads(RESULTS_SCHEMA.read_text())
    assert tuple(schema["properties"]["error"]["properties"]["code"]["enum"]) == CODES
    validate = jsonschema_rs.validator_for(schema).validate
    validate(make_result("r", "fxcm_warmup", "ok", result={"bars": 3}))
    validate(make_result(None, None, "error", code="bad_json", message="not JSON"))
    with pytest.raises(jsonschema_rs.ValidationError):
        validate({"req_id": "r", "cmd": "fxcm_warmup", "state": "error", "ts": NOW})


# -- through a real host and a real Redis ------------------------------------------------------

ACTORS = [{"name": "history_poller", "class": "tests.sample_actors:PollerStandIn"},
          {"name": "command_handler", "class": "actors.command_handler:CommandHandler"}]
FINAL = ("ok", "error")
RESULT_VALIDATOR = jsonschema_rs.validator_for(json.loads(RESULTS_SCHEMA.read_text())).validate


class Harness:
    """A host (stand-in poller + command_handler) on a Redis of the test's own."""

    def __init__(self, host: Any, run_dir: str, server: EmbeddedRedis) -> None:
        self.host = host
        self.run_dir = run_dir
        self.server = server
        self.redis = redis.Redis.from_url(server.url)
        self.probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"), ("command.result",))

    def subscribed(self) -> None:
        wait_for(lambda: self.redis.pubsub_numsub(CHANNEL)[0][1] >= 1, 30,
                 "command_handler to subscribe to " + CHANNEL)

    def send(self, message: Any) -> None:
        self.subscribed()
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.redis.publish(CHANNEL, data)

    def results(self, start: int = 0) -> list[dict[str, Any]]:
        return [body for kind, body in self.probe.received[start:] if kind == "command.result"]

    def final(self, req_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every result of ``req_id``, up to and including its final one."""
        self.probe.collect(lambda received: any(
            body.get("req_id") == req_id and body.get("state") in FINAL
            for _, body in received), timeout, "the final result of " + req_id)
        return [body for body in self.results() if body["req_id"] == req_id]

    def unread(self, code: str, start: int, count: int = 1, timeout: float = 30.0
               ) -> list[dict[str, Any]]:
        """Results with no req_id and this code, after position ``start``."""
        def found(received: list[tuple[str, Any]]) -> bool:
            return len(self.unread_now(code, start)) >= count
        self.probe.collect(found, timeout, "{} result(s) {}".format(count, code))
        return self.unread_now(code, start)

    def unread_now(self, code: str, start: int) -> list[dict[str, Any]]:
        return [body for body in self.results(start) if body["req_id"] is None
                and body.get("error", {}).get("code") == code]

    def handler_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.host.status()["actor_status"].get("command_handler", {})
        return status

    def poller_calls(self) -> list[list[Any]]:
        _, calls = self.probe.client.request("history_poller", "poller.calls", None, 30)
        result: list[list[Any]] = calls
        return result

    def close(self) -> None:
        self.probe.close()
        self.redis.close()


@contextmanager
def harness(tmp: Path, env: dict[str, str], **handler: Any) -> Iterator[Harness]:
    """A host with the stand-in poller and command_handler (settings ``handler`` over a fast
    reconnect backoff) on a fresh Redis; ``env`` holds the HMAC variables of the test."""
    redis_dir = tempfile.mkdtemp(prefix="fxcm-r-")
    run_dir = tempfile.mkdtemp(prefix="fxcm-t-")
    server = EmbeddedRedis(redis_dir, 0)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in ("FXCM_HMAC_KID", "FXCM_HMAC_SECRET", "FXCM_HMAC_SECRETS_FILE"):
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            settings: dict[str, Any] = {"per_command_per_minute": 1000, "redis_backoff": {
                "base_seconds": 0.2, "max_seconds": 1.0, "multiplier": 2.0, "jitter": 0.1}}
            settings.update(handler)
            with host_in_thread(tmp, run_dir, ACTORS, redis={"url": server.url, "port": 0},
                                command_handler=settings,
                                bus={"status_interval_seconds": 0.2}) as host:
                rig = Harness(host, run_dir, server)
                try:
                    yield rig
                finally:
                    rig.close()
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(redis_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """auth_mode rolling with a key; fxcm_set_universe left out of the allowlist."""
    allowlist = [cmd for cmd in COMMANDS if cmd != "fxcm_set_universe"]
    with harness(tmp_path_factory.mktemp("rolling"),
                 {"FXCM_HMAC_KID": KID, "FXCM_HMAC_SECRET": SECRET},
                 auth_mode="rolling", allowlist=allowlist, timeout_seconds=4.0) as rig:
        yield rig


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """auth_mode auto with a key (so: required), 2 commands per minute each."""
    with harness(tmp_path_factory.mktemp("strict"),
                 {"FXCM_HMAC_KID": KID, "FXCM_HMAC_SECRET": SECRET},
                 per_command_per_minute=2) as rig:
        yield rig


def states(results: list[dict[str, Any]]) -> list[str]:
    return [result["state"] for result in results]


def test_signed_command_is_accepted_run_and_answered_with_the_poller_result(
        rolling: Harness) -> None:
    rolling.send(signed("fxcm_warmup", {"symbols": ["XAU/USD", "eurusd"], "lookback_days": 2},
                        "t-warmup"))
    results = rolling.final("t-warmup")
    assert states(results) == ["accepted", "running", "ok"]
    expected_args = {"symbols": ["XAUUSD", "EURUSD"], "lookback_days": 2}
    assert results[-1]["result"] == {"op": "warmup", "args": expected_args}
    assert ["warmup", expected_args] in rolling.poller_calls()


def test_not_json_gets_bad_json(rolling: Harness) -> None:
    start = len(rolling.probe.received)
    rolling.send(b"{this is not json")
    [result] = rolling.unread("bad_json", start)
    assert result["state"] == "error" and result["cmd"] is None


def test_oversize_message_gets_too_large(rolling: Harness) -> None:
    start = len(rolling.probe.received)
    rolling.send(json.dumps(envelope("fxcm_warmup", {"symbols": ["XAUUSD"],
                                                     "provider": "x" * 70000},
                                     "t-big")).encode())
    [result] = rolling.unread("too_large", start)
    assert "1 message over max_bytes (65536)" in result["error"]["message"]
    assert not [body for body in rolling.results(start) if body["req_id"] == "t-big"]


def test_wrong_types_get_contract_error(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_warmup", {"symbols": 5, "lookback_days": "3"}, "t-types"))
    [result] = rolling.final("t-types")
    assert result["error"]["code"] == "contract_error"
    assert result["error"]["message"].startswith("args.")


def test_unknown_command_gets_unknown_command(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_format_disk", {}, "t-unknown"))
    [result] = rolling.final("t-unknown")
    assert (result["cmd"], result["error"]["code"]) == ("fxcm_format_disk", "unknown_command")


def test_bad_signature_gets_auth_failed_and_echoes_no_secret(rolling: Harness) -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "t-badsig", secret="guessed")
    rolling.send(message)
    [result] = rolling.final("t-badsig")
    assert result["error"]["code"] == "auth_failed"
    text = json.dumps(result)
    assert SECRET not in text and message["auth"]["sig"] not in text and "auth" not in result
    assert SECRET not in json.dumps(rolling.handler_status())


def test_stale_ts_gets_auth_failed(rolling: Harness) -> None:
    rolling.send(signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "t-stale",
                        ts=time.time() - 3600))
    [result] = rolling.final("t-stale")
    assert result["error"]["code"] == "auth_failed" and "skew" in result["error"]["message"]


def test_replayed_nonce_gets_replay_rejected(rolling: Harness) -> None:
    message = signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "t-replay")
    rolling.send(message)
    assert states(rolling.final("t-replay")) == ["accepted", "running", "ok"]
    start = len(rolling.probe.received)
    rolling.send(message)
    rolling.probe.collect(lambda received: any(body.get("req_id") == "t-replay"
                                               for _, body in received[start:]), 30, "replay")
    [result] = [body for body in rolling.results(start) if body["req_id"] == "t-replay"]
    assert result["error"]["code"] == "replay_rejected"


def test_flood_gets_rate_limited_counts_every_message_and_valid_commands_run_after(
        rolling: Harness) -> None:
    rolling.subscribed()
    start = len(rolling.probe.received)
    flood = 300
    pipe = rolling.redis.pipeline(transaction=False)
    for index in range(flood):
        pipe.publish(CHANNEL, "flood {}".format(index))
    pipe.execute()

    def counted() -> int:
        limited = sum(int(body["error"]["message"].split()[0])
                      for body in rolling.unread_now("rate_limited", start))
        return limited + len(rolling.unread_now("bad_json", start))
    rolling.probe.collect(lambda received: counted() >= flood, 60, "every flood message")
    assert counted() == flood
    assert rolling.unread_now("rate_limited", start)
    assert len(rolling.unread_now("bad_json", start)) < flood / 2
    rolling.send(envelope("fxcm_tail_guard", {"symbols": ["XAUUSD"]}, "t-after-flood"))
    assert states(rolling.final("t-after-flood")) == ["accepted", "running", "ok"]


def test_a_flood_of_junk_does_not_shut_out_a_signed_command(rolling: Harness) -> None:
    rolling.subscribed()
    start = len(rolling.probe.received)
    pipe = rolling.redis.pipeline(transaction=False)
    for index in range(5000):  # far beyond the raw limit (20/s, burst 40), in one burst
        pipe.publish(CHANNEL, '{"type":"fxcm_warmup","junk":%d}' % index)
        if index == 2000:
            pipe.publish(CHANNEL, json.dumps(signed("fxcm_backfill", {
                "symbol": "XAUUSD", "lookback_minutes": 60}, "t-signed-in-flood")))
            pipe.publish(CHANNEL, json.dumps(envelope(
                "fxcm_tail_guard", {"symbols": ["XAUUSD"]}, "t-unsigned-in-flood")))
    pipe.execute()
    assert states(rolling.final("t-signed-in-flood", 60)) == ["accepted", "running", "ok"]
    # the unsigned one with a req_id was dropped unread, and its sender is told so
    [dropped] = rolling.final("t-unsigned-in-flood", 60)
    assert dropped["state"] == "error" and dropped["error"]["code"] == "rate_limited"
    assert rolling.unread("rate_limited", start)  # and the flood's counts reach everyone


def test_smc_v1_commands_run_and_their_extra_fields_are_counted(rolling: Harness) -> None:
    start = len(rolling.probe.received)
    before = int(rolling.handler_status().get("ignored_legacy_fields", 0))
    for data in SMC_V1_COMMANDS[:2]:
        rolling.send(data)
    rolling.probe.collect(lambda received: sum(
        1 for _, body in received[start:] if str(body.get("req_id", "")).startswith("legacy-")
        and body["state"] == "ok") >= 2, 30, "both smc_v1 commands run")
    wait_for(lambda: int(rolling.handler_status().get("ignored_legacy_fields", 0))
             >= before + 8, 30, "the ignored fields counted in status")


def test_a_long_job_reports_progress_and_its_true_end(rolling: Harness) -> None:
    # a step longer than timeout_seconds (4 s here) that keeps reporting is no timeout
    rolling.send(envelope("fxcm_tail_guard", {"symbols": ["XAUUSD"],
                                               "provider": "stand-in:job:7"}, "t-long"))
    results = rolling.final("t-long", 60)
    assert results[0]["state"] == "accepted" and results[-1]["state"] == "ok"
    progress = [r for r in results if r["state"] == "running" and "progress" in r["result"]]
    assert progress, "running results carrying the job's progress"
    assert results[-1]["ts"] - results[0]["ts"] >= 6.5


def test_a_running_command_is_cancelled_and_ends_so(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_tail_guard", {"symbols": ["XAUUSD"],
                                               "provider": "stand-in:job:600"}, "t-to-cancel"))
    rolling.probe.collect(lambda got: any(
        body.get("req_id") == "t-to-cancel" and body["state"] == "running"
        for _, body in got), 30, "the long command running")
    rolling.send(envelope("fxcm_cancel", {"target": "t-to-cancel"}, "t-cancel"))
    [answer] = rolling.final("t-cancel")
    assert answer["state"] == "ok" and answer["result"] == {"cancelled": "t-to-cancel",
                                                            "running": True}
    ended = rolling.final("t-to-cancel")[-1]
    assert ended["state"] == "error" and ended["error"]["code"] == "cancelled"
    rolling.send(envelope("fxcm_tail_guard", {"symbols": ["XAUUSD"]}, "t-after-cancel"))
    assert states(rolling.final("t-after-cancel"))[-1] == "ok"


def test_a_job_that_goes_silent_times_out_and_is_cancelled(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_tail_guard", {"symbols": ["XAUUSD"],
                                               "provider": "stand-in:mute-job"}, "t-mute"))
    ended = rolling.final("t-mute", 60)[-1]
    assert ended["error"]["code"] == "timeout" and "cancelled there" in ended["error"]["message"]


def test_bootstrap_runs_its_four_steps_in_order(rolling: Harness) -> None:
    calls_before = len(rolling.poller_calls())
    rolling.send(signed("fxcm_bootstrap", {
        "tail_guard": {"symbols": ["XAUUSD"], "repair": False},
        "republish_tail": {"symbol": "XAUUSD", "timeframes": ["1m", "5m"]},
        "backfill": {"symbol": "XAUUSD", "lookback_minutes": 120},
        "warmup": {"symbols": ["XAUUSD"], "lookback_days": 1}}, "t-bootstrap"))
    results = rolling.final("t-bootstrap")
    order = ["warmup", "backfill", "republish_tail", "tail_guard"]
    assert states(results) == ["accepted"] + ["running"] * 4 + ["ok"]
    assert [result["result"]["step"] for result in results[1:5]] == order
    assert [step["step"] for step in results[-1]["result"]["steps"]] == order
    assert [op for op, _ in rolling.poller_calls()[calls_before:]] == order


def test_bootstrap_stops_at_the_first_failing_step(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_bootstrap", {
        "warmup": {"symbols": ["XAUUSD"]},
        "backfill": {"symbol": "XAUUSD", "provider": "stand-in:fail"},
        "tail_guard": {"symbols": ["XAUUSD"]}}, "t-boot-fail"))
    results = rolling.final("t-boot-fail")
    assert states(results) == ["accepted", "running", "running", "error"]
    assert results[-1]["error"]["code"] == "poller_error"
    assert "stand_in_failure" in results[-1]["error"]["message"]
    assert results[-1]["result"]["failed_step"] == "backfill"


def test_legacy_shape_is_accepted_with_a_generated_req_id(rolling: Harness) -> None:
    start = len(rolling.probe.received)
    rolling.send({"type": "fxcm_warmup", "symbol": "XAU/USD", "tf": "m1",
                  "min_history_bars": 1000})
    rolling.probe.collect(lambda received: any(
        str(body.get("req_id", "")).startswith("legacy-") and body["state"] == "ok"
        for _, body in received[start:]), 30, "the legacy command's result")
    results = [body for body in rolling.results(start)
               if str(body["req_id"]).startswith("legacy-")]
    assert states(results) == ["accepted", "running", "ok"]
    assert re.fullmatch(r"legacy-[0-9a-f]{32}", results[0]["req_id"])
    assert results[-1]["result"]["args"] == {"symbols": ["XAUUSD"], "timeframes": ["1m"],
                                             "min_history_bars": 1000}


def test_command_outside_the_allowlist_gets_not_allowed(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_set_universe", {"targets": "XAUUSD:1m"}, "t-not-allowed"))
    [result] = rolling.final("t-not-allowed")
    assert result["error"]["code"] == "not_allowed"


def test_poller_silence_gets_timeout_and_the_next_command_still_runs(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_warmup", {"symbols": ["XAUUSD"],
                                          "provider": "stand-in:slow:5"}, "t-slow"))
    rolling.send(envelope("fxcm_warmup", {"symbols": ["EURUSD"]}, "t-behind-slow"))
    slow = rolling.final("t-slow")
    assert slow[-1]["error"]["code"] == "timeout"
    behind = rolling.final("t-behind-slow")
    assert states(behind) == ["accepted", "running", "ok"]


def test_poller_error_is_reported_as_poller_error(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_tail_guard", {"symbols": ["XAUUSD"],
                                              "provider": "stand-in:fail"}, "t-fail"))
    result = rolling.final("t-fail")[-1]
    assert result["error"] == {"code": "poller_error", "message":
                               "stand_in_failure: told to fail by its provider argument"}


def test_bad_input_leaves_the_host_and_the_handler_running(rolling: Harness) -> None:
    for bad in (b"\xff\xfe", b"[]", b"null", b'{"cmd": 1}', b"{" * 5000, b"x" * 70000,
                json.dumps({"type": "fxcm_warmup", "symbol": {"nested": [1, 2]}}).encode()):
        rolling.send(bad)
    rolling.send(envelope("fxcm_warmup", {"symbols": ["GBPUSD"]}, "t-still-fine"))
    assert states(rolling.final("t-still-fine"))[-1] == "ok"
    actors = bus_status(rolling.run_dir)["actors"]
    assert actors["command_handler"]["restarts"] == 0
    assert actors["command_handler"]["state"] == "running"
    assert actors["history_poller"]["restarts"] == 0


def test_every_result_published_follows_the_results_schema(rolling: Harness) -> None:
    rolling.send(envelope("fxcm_warmup", {"symbols": ["USDJPY"]}, "t-schema"))
    rolling.final("t-schema")
    results = rolling.results()
    assert len(results) > 10
    for result in results:
        RESULT_VALIDATOR(result)


def test_status_reports_outcomes_rejections_and_metrics(rolling: Harness) -> None:
    start = len(rolling.probe.received)
    rolling.send(b"not json either")
    rolling.unread("bad_json", start)
    rolling.send(envelope("fxcm_warmup", {"symbols": ["XAUUSD"]}, "t-status"))
    rolling.final("t-status")

    def counts(status: dict[str, Any], name: str) -> dict[tuple[str, ...], float]:
        return {tuple(labels.values()): value
                for labels, value in status["metrics"][name]["samples"]}
    status = wait_for(lambda: (s := rolling.handler_status()).get("last_result", {}).get(
        "req_id") == "t-status" and s, 30, "the handler's status after t-status")
    assert status["redis"]["connected"] is True
    assert status["auth"] == {"mode": "rolling", "kids": [KID]}
    assert status["queue"] == {"depth": 0, "running": None}
    assert counts(status, "fxcm_commands_total")[("fxcm_warmup", "ok")] >= 1  # predecessor's
    assert counts(status, "fxcm_commands_total")[("parse", "error")] >= 1
    assert counts(status, "fxcm_command_outcomes_total")[("fxcm_warmup", "ok")] >= 1
    assert counts(status, "fxcm_command_rejections_total")[("bad_json",)] >= 1
    assert status["rejections"]["bad_json"] >= 1
    assert counts(status, "fxcm_command_redis_connected") == {(): 1.0}


def test_required_mode_refuses_unsigned_commands_of_both_shapes(strict: Harness) -> None:
    strict.send(envelope("fxcm_warmup", {"symbols": ["XAUUSD"]}, "s-unsigned"))
    [result] = strict.final("s-unsigned")
    assert result["error"]["code"] == "auth_failed"
    strict.send({"type": "fxcm_warmup", "symbol": "XAUUSD", "req_id": "s-legacy"})
    [legacy] = strict.final("s-legacy")
    assert legacy["error"]["code"] == "auth_failed"
    strict.send(signed("fxcm_warmup", {"symbols": ["XAUUSD"]}, "s-signed"))
    assert states(strict.final("s-signed")) == ["accepted", "running", "ok"]


def test_per_command_limit_refuses_the_command_over_its_limit(strict: Harness) -> None:
    for index in range(3):
        strict.send(signed("fxcm_republish_tail", {"symbol": "XAUUSD", "timeframes": "1m"},
                           "s-limit-{}".format(index)))
    assert states(strict.final("s-limit-0"))[-1] == "ok"
    assert states(strict.final("s-limit-1"))[-1] == "ok"
    [third] = strict.final("s-limit-2")
    assert third["error"]["code"] == "rate_limited"
    assert "2 fxcm_republish_tail commands per minute" in third["error"]["message"]


def test_subscription_comes_back_after_redis_restarts_and_the_outage_shows(
        tmp_path: Path) -> None:
    with harness(tmp_path, {}) as rig:
        rig.send(envelope("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-before"))
        assert states(rig.final("r-before"))[-1] == "ok"
        rig.redis.close()
        rig.server.stop()
        down = wait_for(lambda: (s := rig.handler_status()).get("redis", {}).get(
            "connected") is False and s, 30, "the outage in the handler's status")
        assert down["state"] == "degraded" and down["redis"]["last_error"]
        assert down["metrics"]["fxcm_command_redis_connected"]["samples"] == [[{}, 0.0]]
        rig.server.start()
        rig.redis = redis.Redis.from_url(rig.server.url)
        up = wait_for(lambda: (s := rig.handler_status()).get("redis", {}).get(
            "reconnects", 0) >= 1 and s["redis"]["connected"] and s, 30, "the resubscription")
        assert up["state"] == "running"
        rig.send(envelope("fxcm_warmup", {"symbols": ["XAUUSD"]}, "r-after"))
        assert states(rig.final("r-after"))[-1] == "ok"
        assert bus_status(rig.run_dir)["actors"]["command_handler"]["restarts"] == 0
