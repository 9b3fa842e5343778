"""Write docs/configuration.md: every setting, its default and its environment override.

``python -m config.reference > docs/configuration.md``; tests/test_docs_configuration.py keeps
the document complete (every key and every FXCM_* variable appears in it).
"""

from __future__ import annotations

import json
from typing import Any

from config.legacy import ENV_ALIASES, ENV_IGNORED, PREDECESSOR_VARIABLES, migration_rows
from config.settings import ACTOR_DEFAULTS, ENVIRONMENT, load_defaults

# One line per key that needs words beyond its name; the rest read well enough as they are.
MEANING = {
    "run_dir": "sockets, lock, bus.json, the embedded Redis's password, a replay's timeline; "
               "created 0700; refused unless ours alone (not a symlink, not writable by others); "
               "one host per run dir (default $XDG_RUNTIME_DIR/fxcm or /tmp/fxcm-<uid>)",
    "symbols": "the universe: streamed, aggregated, warmed up",
    "price_basis": "mid, bid or ask; the same for tick bars and history bars",
    "timeframes": "the bars built, by tick aggregation and from history alike (1m required)",
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
    "fxcm_session.login_wait_seconds": "forexconnect: how long a login retry waits on the "
                                       "session still connecting (never a second session)",
    "fxcm_session.clock_skew_warn_seconds": "forexconnect: warn when FXCM's clock and ours "
                                            "differ by more (bars close on FXCM's clock)",
    "fxcm_session.quota.priority_targets": "SYMBOL:tf targets that may use the reserve",
    "tick_aggregator.timeframes": "older spelling of timeframes ([] = follow timeframes; "
                                  "if set, it stands for timeframes)",
    "tick_aggregator.close_grace_ms": "a 1m bar closes this long after its end without "
                                      "a later tick",
    "tick_aggregator.max_synth_gap_minutes": "at most this many flat synthetic bars in a row",
    "tick_aggregator.live_publish_interval_seconds": "previews (complete=false); 0 = off",
    "history_poller.targets": "\"XAU/USD:m1,EUR/USD:m5\" or a list; \"\" = every symbol's 1m",
    "history_poller.poll_seconds": "safety-net repair scan and polling cadence (gaps "
                                   "named by tick aggregation are repaired at once)",
    "history_poller.repair_delay_ms": "a gap minute is fetched this long after its end "
                                      "(pipeline clock)",
    "history_poller.not_ready_retries": "history not ready: retries with backoff (0.25 s to "
                                        "30 s), then the minutes stay missing for the next "
                                        "repair (never marked empty)",
    "history_poller.idle_poll_multiplier": "a target whose last poll found nothing new "
                                           "waits this many times longer",
    "history_poller.warmup_bars": "warmup reaches back this many open minutes",
    "history_poller.republish_window_hours": "fxcm_republish_tail's window when none is given",
    "history_poller.republish_watermark_ttl_seconds": "a republish without force sends only "
                                                      "bars newer than the last one republished "
                                                      "within this time (seed 004)",
    "history_poller.tail_guard_near_window_minutes": "fxcm_tail_guard's near tier (the far "
                                                     "tier is its window_hours)",
    "history_poller.tail_guard_repair_only_when_market_closed": "fxcm_tail_guard repairs only "
                                                                "while the market is closed "
                                                                "(seed 004)",
    "history_poller.command_publish_rate": "bars a second a command publishes at most (live "
                                           "bars go first)",
    "history_poller.command_publish_chunk": "bars a command publishes between two pauses",
    "history_poller.progress_interval_seconds": "a running command reports its progress this "
                                                "often",
    "history_poller.warmup_retry_base_seconds": "a failed warmup is tried again after this, "
                                                "doubling ...",
    "history_poller.warmup_retry_max_seconds": "... up to this; the feed is not ready meanwhile",
    "history_poller.max_bars": "bars kept per (symbol, tf) in the store",
    "cache.dir": "the bar store (and the Redis outage journal); a relative path is taken from "
                 "$STATE_DIRECTORY (systemd StateDirectory=) when set, else from the working "
                 "directory; the banner shows the absolute path",
    "cache.enabled": "the predecessor's FXCM_CACHE_ENABLED",
    "redis.url": "embedded (a redis-server the host starts, with a password in "
                 "<run_dir>/redis.pass and no dangerous commands), redis://, rediss://, "
                 "unix://; FXCM_REDIS_HOST/PORT/PASSWORD name an external one (below)",
    "redis.embedded_port": "TCP port of the embedded Redis (0: its unix socket only); used only "
                           "when no external Redis is named",
    "heartbeat.session_tag": "AUTO: from the calendar's sessions; or a fixed tag",
    "viewer.heartbeat_alert_seconds": "`fxcm viewer`: a heartbeat older than this is an alert",
    "viewer.ohlcv_lag_warn_seconds": "`fxcm viewer`: a bar this late past its due time is late",
    "viewer.ohlcv_lag_error_seconds": "`fxcm viewer`: ... and this late, stale",
    "viewer.ohlcv_msg_idle_warn_seconds": "`fxcm viewer`: the ohlcv channel silent this long "
                                          "(market open) is a warning ...",
    "viewer.ohlcv_msg_idle_error_seconds": "... and this long, an error",
    "viewer.redis_health_interval": "`fxcm viewer`: seconds between two Redis PINGs",
    "viewer.timeline_history_max": "`fxcm viewer`: state changes kept on the timeline",
    "redis.required": "false: no Redis at all, bars go to the journal (file-only)",
    "channels.prefix": "channel names are <prefix>:<name> unless overridden below",
    "redis_publisher.last_bars": "late-joiner keys keep this many final bars per (symbol, tf)",
    "redis_publisher.journal_max_bytes": "at the bound the journal refuses: backpressure",
    "command_handler.auth_mode": "off, rolling, required; auto = required with a kid "
                                 "(FXCM_HMAC_KID or the secrets file), rolling with "
                                 "FXCM_HMAC_SECRET alone, off without a secret",
    "command_handler.rate_limit_per_second": "raw rate limit of commands without a valid "
                                             "signature (a flood beyond it is dropped unread)",
    "command_handler.signed_rate_limit_per_second": "the validly signed commands' own lane "
                                                    "(a flood of junk cannot shut them out)",
    "command_handler.verify_per_second": "signatures checked on arrival at most (the rest "
                                         "take the unsigned lane)",
    "command_handler.rate_limited_results_per_second": "rate_limited results for dropped "
                                                       "commands with a req_id (the rest "
                                                       "are counted in summary results)",
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
    lines += [
        "", "## More variables", "",
        "| variable | what it does |", "| --- | --- |",
        "| `FXCM_REDIS_HOST`, `FXCM_REDIS_PORT`, `FXCM_REDIS_PASSWORD` | an external Redis, as "
        "in the predecessor: any of them set replaces the host, port or password of "
        "`redis.url` (of `redis://127.0.0.1:6379/0` when that is `embedded`); "
        "`FXCM_REDIS_URL` wins over HOST and PORT |",
        "| `FXCM_CONNECTOR_VERSION_OVERRIDE` | the version shown in the banner, `host.json`, "
        "`fxcm status` and the heartbeat |",
        "| `FXCM_CONNECTOR_REQUIRED_VERSION` | the host refuses to start (exit 2) with another "
        "version |",
        "| `AI_ONE_ENV_FILE` | `fxcm` reads `.env` of the working directory, then the profile "
        "file this names (relative to that directory); the real environment wins over `.env`, "
        "`.env` over the profile |",
        "| `STATE_DIRECTORY` | set by systemd (`StateDirectory=`): the base of a relative "
        "`cache.dir` |"]
    for alias, canonical in ENV_ALIASES.items():
        lines.append("| `{}` | the predecessor's name of `{}` ({} wins when both are set) "
                     "|".format(alias, canonical, canonical))
    for variable, reason in ENV_IGNORED.items():
        lines.append("| `{}` | ignored, with a warning: {} |".format(variable, reason))
    lines += ["", "The predecessor's `runtime_settings.json` keys (`stream.*`, `backoff.*`, "
              "`viewer.*`, ...) are read too: docs/operations.md, \"Migrating from the "
              "predecessor\".", ""]
    lines += ["## Secrets (environment only, never logged)", "",
              "| variable | for |", "| --- | --- |",
              "| `FXCM_USERNAME`, `FXCM_PASSWORD` | the ForexConnect login |",
              "| `FXCM_CONNECTION`, `FXCM_HOST_URL` | Demo/Real and the SDK's host list URL |",
              "| `FXCM_REDIS_PASSWORD` | the external Redis's password |",
              "| `FXCM_HMAC_SECRET`, `FXCM_HMAC_KID` | signing ohlcv (`sig`) and commands |",
              "| `FXCM_HMAC_SECRETS_FILE` | several `kid=secret` lines for command auth |", ""]
    return "\n".join(lines)


def render_migration() -> str:
    """The two tables of docs/operations.md "Migrating from the predecessor" (generated, so that
    they always say what config/legacy.py does)."""
    lines = ["| the predecessor's variable | here |", "| --- | --- |"]
    for variable, text in PREDECESSOR_VARIABLES.items():
        if variable in ENVIRONMENT:
            text = "sets `{}`: {}".format(ENVIRONMENT[variable][0], text)
        lines.append("| `{}` | {} |".format(variable, text))
    lines += ["", "| the predecessor's `runtime_settings.json` key | here |", "| --- | --- |",
              "| `cache.dir` | the same; a relative path is taken from `$STATE_DIRECTORY` "
              "(systemd `StateDirectory=`) when set, else from the working directory, as "
              "before |"]
    for key in load_defaults()["viewer"]:
        lines.append("| `viewer.{}` | the same (`fxcm viewer`) |".format(key))
    for key, text in migration_rows():
        lines.append("| `{}` | {} |".format(key, text))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(render_migration() if sys.argv[1:] == ["--migration"] else render(), end="")
