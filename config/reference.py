"""Write docs/configuration.md: every setting, its default and its environment override.

``python -m config.reference > docs/configuration.md``; tests/test_docs_configuration.py keeps
the document complete (every key and every FXCM_* variable appears in it).
"""

from __future__ import annotations

import json
from typing import Any

from config.settings import ACTOR_DEFAULTS, ENVIRONMENT, load_defaults

# One line per key that needs words beyond its name; the rest read well enough as they are.
MEANING = {
    "run_dir": "sockets, lock, bus.json, the embedded Redis's password, a replay's timeline; "
               "created 0700; refused unless ours alone (not a symlink, not writable by others); "
               "one host per run dir (default $XDG_RUNTIME_DIR/fxcm or /tmp/fxcm-<uid>)",
    "symbols": "the universe: streamed, aggregated, warmed up",
    "price_basis": "mid, bid or ask; the same for tick bars and history bars",
    "instruments": "{SYMBOL: {\"digits\": n}}: quote decimals where the broker does not say "
                   "(sim, replay); bid/ask/bars at n, mid at n + 1",
    "calendar_file": "trading calendar JSON (\"\" = the shipped config/calendar.json)",
    "broker.kind": "sim, replay or forexconnect (the real SDK, in a Python 3.7 child)",
    "broker.python": "interpreter for forexconnect (\"\" = the checkout's .venv37)",
    "broker.sim.faults.disconnect_after_seconds": "inject a lost session after this long",
    "broker.replay.file": "CSV ts_ms,symbol,bid,ask (.gz accepted)",
    "broker.replay.speed": "1 real time, 10 ten times faster, 0 as fast as the pipeline takes",
    "fxcm_session.stale_seconds": "no tick this long with the market open: resubscribe, "
                                  "then reconnect",
    "fxcm_session.clock_interval_seconds": "how often the pipeline clock is published "
                                           "(bars close within grace + this)",
    "fxcm_session.quota.priority_targets": "SYMBOL:tf targets that may use the reserve",
    "tick_aggregator.close_grace_ms": "a 1m bar closes this long after its end without "
                                      "a later tick",
    "tick_aggregator.max_synth_gap_minutes": "at most this many flat synthetic bars in a row",
    "tick_aggregator.live_publish_interval_seconds": "previews (complete=false); 0 = off",
    "history_poller.targets": "\"XAU/USD:m1,EUR/USD:m5\" or a list; \"\" = every symbol's 1m",
    "history_poller.poll_seconds": "repair scan and polling cadence",
    "history_poller.idle_poll_multiplier": "a target whose last poll found nothing new "
                                           "waits this many times longer",
    "history_poller.warmup_bars": "warmup reaches back this many open minutes",
    "history_poller.max_bars": "bars kept per (symbol, tf) in the store",
    "cache.dir": "the bar store",
    "redis.url": "embedded (a redis-server the host starts, with a password in "
                 "<run_dir>/redis.pass and no dangerous commands), redis://, rediss://, unix://",
    "redis.port": "TCP port of the embedded Redis on 127.0.0.1 (0: its unix socket only)",
    "redis.required": "false: no Redis at all, bars go to the journal (file-only)",
    "channels.prefix": "channel names are <prefix>:<name> unless overridden below",
    "redis_publisher.last_bars": "late-joiner keys keep this many final bars per (symbol, tf)",
    "redis_publisher.journal_max_bytes": "at the bound the journal refuses: backpressure",
    "command_handler.auth_mode": "off, rolling, required; auto = required when a secret is set",
    "bus.mailbox_bound": "lossless subscription bound (per actor: actors[].mailbox_bounds)",
    "bus.drills": "allow the crash, stall and release ops (fxcm crash, make chaos); off in "
                  "production",
    "bus.detached_mailbox_seconds": "an attached actor (not in actors) gone this long loses its "
                                    "mailboxes, so it holds no producer back (fxcm detach: now)",
    "bus.max_peers": "at most this many attached names in the router; more HELLOs are refused",
    "bus.reserved_topics": "{topic prefix: [actors]}: only these may publish under it; "
                           "enforced where one of them is an actor of this host",
    "http.timeout_seconds": "a connection must send its request within this; also per write",
    "http.workers": "threads answering requests (idle connections hold none)",
    "health.feed_stall_seconds": "/readyz fails when no tick or bar moved this long with the "
                                 "market open, or a producer is held back this long; 0 = off",
    "health.flow_topics": "topic prefixes whose messages count as the feed moving",
    "supervisor.max_restarts": "more restarts than this in restart_window_seconds: the host "
                               "stops in order and exits 1",
    "shutdown.drain_seconds": "time to drain lossless mailboxes on SIGTERM",
}

ACTOR_MEANING = {
    "placement": "thread (in the host) or process (a child on `python`)",
    "required": "counted by /readyz",
    "stop_timeout_seconds": "then a process is killed",
    "mailbox_bounds": "{topic: bound} overrides of bus.mailbox_bound",
    "settings": "the actor's own settings, over its section",
}

FREE_FORM = {"min_interval_seconds", "instruments", "reserved_topics"}


def rows() -> list[tuple[str, Any]]:
    """(dotted key, default) for every setting, in the order of the shipped file."""
    result: list[tuple[str, Any]] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = prefix + key
            if isinstance(value, dict) and value and key not in FREE_FORM:
                walk(value, path + ".")
            else:
                result.append((path, value))

    for key, value in load_defaults().items():
        if key == "actors":
            continue
        if isinstance(value, dict) and value and key not in FREE_FORM:
            walk(value, key + ".")
        else:
            result.append((key, value))
    return result


def render() -> str:
    env: dict[str, list[str]] = {}
    for variable, (key, _) in ENVIRONMENT.items():
        env.setdefault(key, []).append(variable)
    lines = [
        "# Configuration reference", "",
        "Generated from `config/runtime_settings.json` by `python -m config.reference`. Order of",
        "precedence: these defaults, then the file given with `fxcm host --config FILE`, then",
        "the `FXCM_*` variables, then command-line flags. An unknown key, a wrong type or an",
        "impossible value stops the host at start with one line naming the key. Secrets are",
        "never settings: see the end of this page.", "",
        "| key | default | environment | meaning |", "| --- | --- | --- | --- |"]
    for key, default in rows():
        lines.append("| `{}` | `{}` | {} | {} |".format(
            key, json.dumps(default), ", ".join("`{}`".format(v) for v in env.get(key, [])),
            MEANING.get(key, "")))
    lines += ["", "## Each entry of `actors`", "",
              "| key | default | meaning |", "| --- | --- | --- |"]
    for key, default in ACTOR_DEFAULTS.items():
        lines.append("| `{}` | `{}` | {} |".format(key, json.dumps(default),
                                                  ACTOR_MEANING.get(key, "")))
    lines += ["", "## Secrets (environment only, never logged)", "",
              "| variable | for |", "| --- | --- |",
              "| `FXCM_USERNAME`, `FXCM_PASSWORD` | the ForexConnect login |",
              "| `FXCM_CONNECTION`, `FXCM_HOST_URL` | Demo/Real and the SDK's host list URL |",
              "| `FXCM_HMAC_SECRET`, `FXCM_HMAC_KID` | signing ohlcv (`sig`) and commands |",
              "| `FXCM_HMAC_SECRETS_FILE` | several `kid=secret` lines for command auth |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
