"""``fxcm command``: build a command, sign it, publish it, wait for its result.

``fxcm command backfill --symbol XAUUSD --lookback-minutes 60`` builds
``{cmd: "fxcm_backfill", req_id: <uuid4>, ts, args: {symbol, lookback_minutes}}``, signs it
(``auth: {kid, nonce, sig}``, exactly as ``actors.command_handler`` verifies, with its
``sign``/``canonical_json``) when ``FXCM_HMAC_SECRET`` and ``FXCM_HMAC_KID`` are set, subscribes
to the results channel (``<prefix>:commands:result``), then publishes on the commands channel
and prints every result carrying its ``req_id`` (``accepted``, ``running``, then ``ok`` or
``error``) until a final one or ``--timeout``.

Exit codes: 0 ok, 1 error (the handler's code is printed), 2 timeout, no Redis, nobody
subscribed to the commands channel, or a bad configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors.command_handler import sign
from actors.tools._connect import configured_redis_url, load_channels, resolve_redis_url
from config.settings import redact_url
from protocol.errors import ConfigError

ENV_SECRET = "FXCM_HMAC_SECRET"
ENV_KID = "FXCM_HMAC_KID"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 2

FINAL_STATES = ("ok", "error")
# How long connecting to Redis and confirming the subscription may take.
CONNECT_SECONDS = 5.0
# The read timeout of one wait for a result (also how soon a deadline is noticed).
_POLL_SECONDS = 0.2

# sub-command -> (cmd, help)
COMMAND_NAMES = {
    "warmup": ("fxcm_warmup", "warm the bar store from history"),
    "backfill": ("fxcm_backfill", "fetch history for one symbol over a range"),
    "set-universe": ("fxcm_set_universe", "set the live universe of (symbol, tf) targets"),
    "republish-tail": ("fxcm_republish_tail", "republish the tail of the store"),
    "tail-guard": ("fxcm_tail_guard", "audit (and repair) the tail of the store"),
    "bootstrap": ("fxcm_bootstrap", "warmup -> backfill -> republish_tail -> tail_guard"),
}


def _csv(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got {!r}".format(
            text))
    return items


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("not JSON: {}".format(exc)) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, got {!r}".format(text))
    return value


# Options per sub-command: (flag, argument key, kind). Kinds: str, int, csv (a list), flag
# (true when given), bool (--x / --no-x), json (an object).
_OPTIONS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "warmup": (
        ("--symbols", "symbols", "csv", "EURUSD,XAUUSD"),
        ("--timeframes", "timeframes", "csv", "1m,5m (default: the poller's)"),
        ("--lookback-days", "lookback_days", "int", "days of history"),
        ("--lookback-hours", "lookback_hours", "int", "hours of history"),
        ("--min-history-bars", "min_history_bars", "int", "bars of history"),
        ("--publish", "publish", "bool", "republish the tail afterwards (default true)"),
        ("--window-hours", "window_hours", "int", "the republished window"),
        ("--provider", "provider", "str", "history provider"),
    ),
    "backfill": (
        ("--symbol", "symbol", "str", "XAUUSD (required)"),
        ("--timeframes", "timeframes", "csv", "1m,5m"),
        ("--lookback-minutes", "lookback_minutes", "int", "the last N minutes"),
        ("--start-ms", "start_ms", "int", "range start, epoch ms (with --end-ms)"),
        ("--end-ms", "end_ms", "int", "range end, epoch ms"),
        ("--start-utc", "start_utc", "str", "range start, e.g. 2025-12-05T09:00:00Z"),
        ("--end-utc", "end_utc", "str", "range end, ISO 8601 with Z or an offset"),
        ("--publish", "publish", "bool", "publish the fetched bars"),
        ("--window-hours", "window_hours", "int", "the republished window"),
        ("--provider", "provider", "str", "history provider"),
    ),
    "set-universe": (
        ("--targets", "targets", "csv", "EURUSD:1m,XAUUSD:5m (required)"),
        ("--reason", "reason", "str", "why (shown in the poller's status)"),
        ("--expires-at-ms", "expires_at_ms", "int", "epoch ms when it reverts"),
    ),
    "republish-tail": (
        ("--symbol", "symbol", "str", "EURUSD (required)"),
        ("--timeframes", "timeframes", "csv", "1m,5m (required)"),
        ("--window-hours", "window_hours", "int", "hours of the tail"),
        ("--force", "force", "flag", "ignore the watermark"),
    ),
    "tail-guard": (
        ("--symbols", "symbols", "csv", "EURUSD,XAUUSD (required)"),
        ("--window-hours", "window_hours", "int", "hours of the audited tail"),
        ("--repair", "repair", "flag", "repair what is missing"),
        ("--republish-after-repair", "republish_after_repair", "flag", "republish repaired"),
        ("--republish-force", "republish_force", "flag", "republish ignoring the watermark"),
        ("--tfs", "tfs", "csv", "timeframes to audit, e.g. 1m,5m"),
        ("--provider", "provider", "str", "history provider"),
    ),
    "bootstrap": (
        ("--warmup", "warmup", "json", "warmup args as JSON, e.g. '{\"symbols\": [\"EURUSD\"]}'"),
        ("--backfill", "backfill", "json", "backfill args as JSON"),
        ("--republish-tail", "republish_tail", "json", "republish_tail args as JSON"),
        ("--tail-guard", "tail_guard", "json", "tail_guard args as JSON"),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-commands of ``fxcm command`` and their options (called by actors/cli.py)."""
    names = parser.add_subparsers(dest="name", required=True, metavar="name")
    for name, (cmd, description) in COMMAND_NAMES.items():
        sub = names.add_parser(name, help="{} ({})".format(description, cmd))
        for flag, key, kind, text in _OPTIONS[name]:
            if kind == "int":
                sub.add_argument(flag, dest="arg_" + key, type=int, metavar="N", help=text)
            elif kind == "csv":
                sub.add_argument(flag, dest="arg_" + key, type=_csv, metavar="A,B", help=text)
            elif kind == "flag":
                sub.add_argument(flag, dest="arg_" + key, action="store_const", const=True,
                                 help=text)
            elif kind == "bool":
                sub.add_argument(flag, dest="arg_" + key, action=argparse.BooleanOptionalAction,
                                 help=text)
            elif kind == "json":
                sub.add_argument(flag, dest="arg_" + key, type=_json_object, metavar="JSON",
                                 help=text)
            else:
                sub.add_argument(flag, dest="arg_" + key, metavar="TEXT", help=text)
        sub.add_argument("--args", dest="extra_args", type=_json_object, metavar="JSON",
                         help="more arguments as a JSON object (over the options above)")
        sub.add_argument("--run-dir", help="the host's run dir (its embedded Redis)")
        sub.add_argument("--redis-url", help="Redis URL (default: FXCM_REDIS_URL, else the "
                         "embedded Redis of the run dir)")
        sub.add_argument("--config", help="settings file, for the channel names (as the host)")
        sub.add_argument("--timeout", type=float, default=180.0,
                         help="seconds to wait for the final result (default 180)")
        sub.add_argument("--req-id", help="the request id (default: a new uuid4)")
        sub.add_argument("--json", action="store_true", help="print each result as JSON")


def command_args(name: str, namespace: argparse.Namespace) -> dict[str, Any]:
    """The ``args`` object of sub-command ``name`` from its parsed options."""
    args: dict[str, Any] = {}
    for _flag, key, _kind, _text in _OPTIONS[name]:
        value = getattr(namespace, "arg_" + key, None)
        if value is not None:
            args[key] = value
    args.update(getattr(namespace, "extra_args", None) or {})
    return args


def build_command(cmd: str, args: dict[str, Any], environ: Mapping[str, str],
                  req_id: str | None = None, now: float | None = None,
                  nonce: str | None = None) -> dict[str, Any]:
    """``{cmd, req_id, ts, args}``, plus ``auth`` when ``FXCM_HMAC_SECRET`` is set (then
    ``FXCM_HMAC_KID`` is required: ConfigError)."""
    message: dict[str, Any] = {
        "cmd": cmd, "req_id": req_id or str(uuid.uuid4()),
        "ts": round(time.time() if now is None else now, 3), "args": args}
    secret = environ.get(ENV_SECRET, "")
    kid = environ.get(ENV_KID, "").strip()
    if secret and not kid:
        raise ConfigError("{}: required to sign when {} is set".format(ENV_KID, ENV_SECRET))
    if kid and not secret:
        raise ConfigError("{}: set, but {} is empty: cannot sign".format(ENV_KID, ENV_SECRET))
    if secret:
        nonce = nonce or uuid.uuid4().hex
        message["auth"] = {"kid": kid, "nonce": nonce, "sig": sign(
            secret.encode("utf-8"), cmd, message["req_id"], message["ts"], args, kid, nonce)}
    return message


def describe(result: dict[str, Any]) -> str:
    """One human line for one result."""
    state = str(result.get("state", "?"))
    head = "{:<8} {} {}".format(state, result.get("cmd") or "-", result.get("req_id") or "-")
    detail = result.get("result")
    error = result.get("error")
    if state == "error" and isinstance(error, dict):
        text = "{}: {}".format(error.get("code", "?"), error.get("message", ""))
        if detail:
            text += " " + json.dumps(detail, sort_keys=True)
        return "{}  {}".format(head, text)
    if state == "running" and isinstance(detail, dict):
        return "{}  step {}/{} {}".format(head, detail.get("index", "?"), detail.get("of", "?"),
                                          detail.get("step", "?"))
    if detail is not None:
        return "{}  {}".format(head, json.dumps(detail, sort_keys=True))
    return head


def _decode(data: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def send_and_wait(url: str, commands_channel: str, result_channel: str,
                  message: dict[str, Any], timeout: float,
                  on_result: Callable[[dict[str, Any]], None],
                  on_info: Callable[[str], None]) -> int:
    """Subscribe to ``result_channel``, publish ``message`` on ``commands_channel``, hand every
    result with its ``req_id`` to ``on_result`` until a final one; returns the exit code."""
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_SECONDS,
                                  socket_timeout=CONNECT_SECONDS, retry=Retry(NoBackoff(), 0))
    pubsub = client.pubsub()
    shown = redact_url(url)
    req_id = message["req_id"]
    try:
        try:
            pubsub.subscribe(result_channel)
            deadline = time.monotonic() + CONNECT_SECONDS
            while True:
                confirmation = pubsub.get_message(timeout=_POLL_SECONDS)
                if confirmation is not None and confirmation.get("type") == "subscribe":
                    break
                if time.monotonic() > deadline:
                    raise redis.TimeoutError("no confirmation of SUBSCRIBE {}".format(
                        result_channel))
            receivers = client.publish(commands_channel, json.dumps(message))
        except (redis.RedisError, OSError) as exc:
            on_info("cannot reach Redis at {}: {}".format(shown, exc))
            return EXIT_UNAVAILABLE
        if not receivers:
            on_info("nobody is subscribed to {} on {}: is the host (its command_handler) "
                    "running?".format(commands_channel, shown))
            return EXIT_UNAVAILABLE
        on_info("sent {} {} to {}{}; waiting up to {:g} s on {}".format(
            message["cmd"], req_id, commands_channel,
            " (signed, kid {})".format(message["auth"]["kid"]) if "auth" in message else "",
            timeout, result_channel))
        deadline = time.monotonic() + timeout
        last_state = "none"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                on_info("timed out after {:g} s waiting for the result of {} (last state: "
                        "{})".format(timeout, req_id, last_state))
                return EXIT_UNAVAILABLE
            try:
                received = pubsub.get_message(timeout=min(_POLL_SECONDS, left))
            except (redis.RedisError, OSError) as exc:
                on_info("lost Redis at {} while waiting for {}: {}".format(shown, req_id, exc))
                return EXIT_UNAVAILABLE
            if received is None or received.get("type") != "message":
                continue
            result = _decode(received["data"])
            if result is None or result.get("req_id") != req_id:
                continue
            on_result(result)
            last_state = str(result.get("state"))
            if last_state in FINAL_STATES:
                return EXIT_OK if last_state == "ok" else EXIT_ERROR
    finally:
        for closable in (pubsub, client):
            try:
                closable.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass


def run(namespace: argparse.Namespace, run_dir: str, environ: Mapping[str, str] | None = None,
        out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``fxcm command <name> ...``; returns the exit code."""
    env = os.environ if environ is None else environ
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    cmd = COMMAND_NAMES[namespace.name][0]
    try:
        _prefix, channels = load_channels(namespace.config)
        url = resolve_redis_url(namespace.redis_url, run_dir, env,
                                configured_redis_url(namespace.config, env))
        message = build_command(cmd, command_args(namespace.name, namespace), env,
                                req_id=namespace.req_id)
    except ConfigError as exc:
        print("fxcm command: {}".format(exc), file=stderr)
        return EXIT_UNAVAILABLE

    def on_result(result: dict[str, Any]) -> None:
        if namespace.json:
            print(json.dumps(result, sort_keys=True), file=stdout, flush=True)
        else:
            print(describe(result), file=stdout, flush=True)

    def on_info(text: str) -> None:
        print("fxcm command: {}".format(text), file=stderr, flush=True)

    return send_and_wait(url, channels["commands"], channels["commands_result"], message,
                         namespace.timeout, on_result, on_info)
