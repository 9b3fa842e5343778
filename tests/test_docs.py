"""docs/contracts.md: its examples follow the shipped schemas, its snippets do what they say.

An example is a fenced ``json`` block right after ``<!-- example: <schema> -->``; ``<schema>`` is
a channel of ``protocol.contracts`` or ``ohlcv.bar`` (one bar, as kept in the late-joiner
sorted set). A snippet is a fenced ``python`` block after ``<!-- snippet: <name> -->``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis

from actors._redis_server import EmbeddedRedis
from actors.command_handler import sign
from actors.redis_publisher import Signer
from protocol import contracts

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = REPO_ROOT / "docs" / "contracts.md"
EXAMPLE_SECRET = b"example-secret"

BLOCK = re.compile(r"<!-- (example|snippet|canonical): ([A-Za-z0-9_.:-]+) -->\s*\n```(\w+)\n"
                   r"(.*?)\n```", re.DOTALL)
FENCE = re.compile(r"^```(\w*)$", re.MULTILINE)


def blocks(kind: str) -> list[tuple[str, str]]:
    """(name, text) of every annotated block of ``kind``, in document order."""
    return [(name, text) for found, name, _, text in BLOCK.findall(CONTRACTS.read_text())
            if found == kind]


def examples() -> list[tuple[str, Any]]:
    return [(name, json.loads(text)) for name, text in blocks("example")]


def snippet(name: str) -> str:
    found = [text for block, text in blocks("snippet") if block == name]
    assert len(found) == 1, "one snippet named {}".format(name)
    return found[0]


def run_snippet(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(snippet(name), "contracts.md:" + name, "exec"), namespace)
    return namespace


def first_signed_ohlcv() -> dict[str, Any]:
    payload: dict[str, Any] = next(body for name, body in examples()
                                   if name == "ohlcv" and "sig" in body)
    return payload


def check(schema: str, payload: Any) -> None:
    if schema == "ohlcv.bar":
        contracts.validate("ohlcv", {"symbol": "XAUUSD", "tf": "1m", "bars": [payload]})
    else:
        assert contracts.validate(schema, payload), "no schema ships for " + schema


# -- examples ---------------------------------------------------------------------------------

@pytest.mark.parametrize("index", range(len(examples())))
def test_example_validates_against_its_shipped_schema(index: int) -> None:
    schema, payload = examples()[index]
    check(schema, payload)


def test_every_channel_has_an_example() -> None:
    documented = {name for name, _ in examples()}
    assert set(contracts.CHANNELS) <= documented
    assert "ohlcv.bar" in documented


def test_every_json_block_is_an_annotated_example() -> None:
    text = CONTRACTS.read_text()
    json_fences = [m for m in FENCE.finditer(text) if m.group(1) == "json"]
    assert len(json_fences) == len(examples())


def test_example_check_rejects_a_broken_example() -> None:
    payload = copy.deepcopy(first_signed_ohlcv())
    payload["bars"][0]["low"] = payload["bars"][0]["high"] + 1
    with pytest.raises(contracts.ContractError):
        check("ohlcv", payload)


def test_every_channel_and_late_joiner_key_is_described() -> None:
    text = CONTRACTS.read_text()
    for name in ("ohlcv", "price_tik", "heartbeat", "market_status", "status", "commands",
                 "commands:result"):
        assert "`fxcm:{}`".format(name) in text, name
    for key in ("ohlcv:last:<SYMBOL>:<tf>", "price_tik:last:<SYMBOL>", "heartbeat:last",
                "market_status:last", "status:last"):
        assert "`<prefix>:{}`".format(key) in text, key


# -- sig --------------------------------------------------------------------------------------

def test_documented_verifier_accepts_the_signed_example() -> None:
    verify = run_snippet("verify-ohlcv")["verify_ohlcv"]
    assert verify(first_signed_ohlcv(), EXAMPLE_SECRET) is True


def test_documented_verifier_rejects_a_changed_bar_or_another_secret() -> None:
    verify = run_snippet("verify-ohlcv")["verify_ohlcv"]
    changed = copy.deepcopy(first_signed_ohlcv())
    changed["bars"][0]["close"] = changed["bars"][0]["close"] + 0.01
    assert verify(changed, EXAMPLE_SECRET) is False
    assert verify(first_signed_ohlcv(), b"another-secret") is False


def test_documented_canonical_text_is_what_the_publishers_signer_signs() -> None:
    payload = first_signed_ohlcv()
    (name, text), = blocks("canonical")
    assert name == "ohlcv"
    base = {"symbol": payload["symbol"], "tf": payload["tf"], "bars": payload["bars"]}
    assert text == json.dumps(base, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert Signer(EXAMPLE_SECRET, "sha256").sign(text) == payload["sig"]


def test_signed_text_is_the_canonical_payload_without_sig_and_source() -> None:
    payload = first_signed_ohlcv()
    sent = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    stripped = re.sub(r',"sig":"[0-9a-f]+"', "", sent)
    stripped = re.sub(r',"source":"[a-z0-9_]+"', "", stripped)
    (_, text), = blocks("canonical")
    assert stripped == text


def test_documented_command_signature_matches_the_handlers_signature() -> None:
    signed_command = run_snippet("sign-command")["signed_command"]
    args = {"symbol": "XAUUSD", "lookback_minutes": 60}
    command = signed_command("fxcm_backfill", args, "docs-1", "ops", EXAMPLE_SECRET)
    contracts.validate("commands", command)
    auth = command["auth"]
    assert auth["sig"] == sign(EXAMPLE_SECRET, "fxcm_backfill", "docs-1", command["ts"], args,
                               "ops", auth["nonce"])


def test_signed_command_example_carries_a_valid_signature() -> None:
    command = next(body for name, body in examples() if name == "commands" and "auth" in body)
    auth = command["auth"]
    assert auth["sig"] == sign(EXAMPLE_SECRET, command["cmd"], command["req_id"], command["ts"],
                               command["args"], auth["kid"], auth["nonce"])


# -- late joiner ------------------------------------------------------------------------------

def test_late_joiner_snippet_reads_the_keys_and_deduplicates(run_dir: str) -> None:
    server = EmbeddedRedis(run_dir, 0)
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        payload = first_signed_ohlcv()
        key = "fxcm:ohlcv:last:{}:{}".format(payload["symbol"], payload["tf"])
        for bar in payload["bars"]:
            member = json.dumps(bar, sort_keys=True, separators=(",", ":"))
            client.zadd(key, {member: bar["open_time"]})
        status = next(body for name, body in examples() if name == "status")
        client.set("fxcm:status:last", json.dumps(status))
        price = next(body for name, body in examples() if name == "price_tik")
        client.set("fxcm:price_tik:last:" + price["symbol"], json.dumps(price))
        # Run steps 1 and 2 (the listening loop of step 3 never returns) on this server.
        code = snippet("late-joiner")
        assert 'redis://127.0.0.1:6379/0' in code
        code = code.replace("redis://127.0.0.1:6379/0", server.url)
        head, _, _ = code.partition("# 3.")
        namespace: dict[str, Any] = {}
        exec(compile(head, "contracts.md:late-joiner", "exec"), namespace)
        bars = namespace["bars"]
        assert sorted(bars) == [(payload["symbol"], payload["tf"], bar["open_time"])
                                for bar in payload["bars"]]
        assert namespace["status"] == status
        assert namespace["prices"] == {price["symbol"]: price}
        namespace["apply_ohlcv"](payload)  # the same bars again, from the channel
        assert len(bars) == len(payload["bars"])
        namespace["pubsub"].close()
        client.close()
    finally:
        server.stop()


def test_documented_hmac_is_hex_sha256_of_the_canonical_text() -> None:
    payload = first_signed_ohlcv()
    (_, text), = blocks("canonical")
    expected = hmac.new(EXAMPLE_SECRET, text.encode("utf-8"), hashlib.sha256).hexdigest()
    assert payload["sig"] == expected


# -- every doc --------------------------------------------------------------------------------

def test_every_fxcm_variable_in_the_docs_is_one_the_code_reads() -> None:
    from tests.test_deploy import variables_the_code_reads

    known = variables_the_code_reads()
    for path in sorted((REPO_ROOT / "docs").glob("*.md")):
        used = set(re.findall(r"\bFXCM_[A-Z0-9_]+\b", path.read_text()))
        assert used <= known, "{} names unknown variables {}".format(
            path.name, sorted(used - known))


def test_every_repository_path_the_docs_name_exists() -> None:
    for path in sorted((REPO_ROOT / "docs").glob("*.md")):
        named = set(re.findall(r"`((?:deploy|examples|protocol/schemas|config)/[\w./-]+)`",
                               path.read_text()))
        missing = sorted(name for name in named if not (REPO_ROOT / name).exists())
        assert not missing, "{} names missing files {}".format(path.name, missing)
