"""/metrics of a running host: the seed's metrics (seed 001 section 9, seed 000 section 3.1)
with their labels and live values, every series once, and every series the alert rules use.

The merge of actor families (actors/_http.py) is tested first as a pure function; then one
real host (every shipped actor, the sim broker, an open calendar, its embedded Redis) is
scraped over HTTP as Prometheus does, and the text parsed with prometheus_client's parser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import config
from actors._http import merge_actor_metrics
from tests.helpers import REPO_ROOT, HostProcess, open_calendar, wait_for, write_config

ALERTS = REPO_ROOT / "deploy" / "alerts.yml"
METRIC = re.compile(r"\bfxcm_[a-z0-9_]+\b")

# seed 001 section 9 (and seed 000 3.1) -> the label names each series carries
SEED_METRICS = {
    "fxcm_ohlcv_bars_total": {"symbol", "tf"},
    "fxcm_stream_lag_seconds": {"symbol", "tf"},
    "fxcm_stream_staleness_seconds": {"symbol", "tf"},
    "fxcm_stream_last_close_ms": {"symbol", "tf"},
    "fxcm_dropped_bars_total": {"symbol", "tf"},
    "fxcm_connector_errors_total": {"type"},
    "fxcm_market_status": set(),
    "fxcm_next_open_seconds": set(),
    "fxcm_connector_heartbeat_timestamp": set(),
}
# exported by fxcm_session (the FXCM engineer's part of issue 12)
SESSION_METRICS: dict[str, set[str] | None] = {
    "fxcm_pricehistory_not_ready_total": set(),
    "fxcm_history_throttled_total": None,  # labels are fxcm_session's choice
}


# -- the merge (pure) --------------------------------------------------------------------------

def family(kind: str, *samples: tuple[dict[str, str], float], text: str = "x") -> dict[str, Any]:
    return {"type": kind, "help": text, "samples": [[labels, value] for labels, value in samples]}


def test_counters_of_several_actors_with_the_same_labels_are_summed() -> None:
    families, conflicts = merge_actor_metrics({
        "redis_publisher": {"metrics": {"fxcm_connector_errors_total": family(
            "counter", ({"type": "redis"}, 2.0), ({"type": "cache_io"}, 1.0), text="b")}},
        "history_poller": {"metrics": {"fxcm_connector_errors_total": family(
            "counter", ({"type": "cache_io"}, 3.0), text="a")}}})
    merged = families["fxcm_connector_errors_total"]
    assert merged.values == {(("type", "cache_io"),): 4.0, (("type", "redis"),): 2.0}
    assert merged.help == "a" and merged.owner == "history_poller"  # first by name
    assert conflicts == {}


def test_a_gauge_series_belongs_to_the_first_actor_by_name() -> None:
    families, conflicts = merge_actor_metrics({
        "zeta": {"metrics": {"fxcm_g": family("gauge", ({}, 9.0))}},
        "alpha": {"metrics": {"fxcm_g": family("gauge", ({}, 1.0))}}})
    assert families["fxcm_g"].values == {(): 1.0}
    assert conflicts == {("fxcm_g", "zeta"): 1}


def test_a_type_conflict_or_a_host_name_is_left_out_and_counted() -> None:
    families, conflicts = merge_actor_metrics({
        "a": {"metrics": {"fxcm_x": family("counter", ({}, 1.0)),
                          "fxcm_actor_up": family("gauge", ({"actor": "a"}, 1.0))}},
        "b": {"metrics": {"fxcm_x": family("gauge", ({}, 5.0), ({"k": "v"}, 6.0)),
                          "bad": {"type": "summary"}, "worse": [1, 2]}},
        "c": "not a status"})
    assert set(families) == {"fxcm_x"} and families["fxcm_x"].values == {(): 1.0}
    assert conflicts == {("fxcm_x", "b"): 2, ("fxcm_actor_up", "a"): 1}


# -- a running host --------------------------------------------------------------------------

def scrape(port: int) -> str:
    with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(port), timeout=10) as reply:
        return str(reply.read().decode("utf-8"))


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], as Prometheus stores them."""
    result: dict[str, list[tuple[dict[str, str], float]]] = {}
    for parsed in text_string_to_metric_families(text):
        for sample in parsed.samples:
            result.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return result


def family_names(text: str) -> set[str]:
    """Every name /metrics declares, with the ``_total`` of counters."""
    names = set()
    for line in text.splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            counter = match.group(2) == "counter" and not match.group(1).endswith("_total")
            names.add(match.group(1) + ("_total" if counter else ""))
    return names | set(samples(text))


class LiveHost:
    def __init__(self, host: HostProcess) -> None:
        self.host = host
        with open(os.path.join(host.run_dir, "host.json"), encoding="utf-8") as handle:
            self.port = int(json.load(handle)["http_port"])

    def scrape(self) -> str:
        return scrape(self.port)

    def series(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return samples(self.scrape())


@pytest.fixture(scope="module")
def live() -> Iterator[LiveHost]:
    work = Path(tempfile.mkdtemp(prefix="fxcm-m-"))
    run_dir = str(work / "run")
    actors = config.settings.load_defaults()["actors"]
    path = write_config(work, run_dir, actors, symbols=["EURUSD", "XAUUSD"],
                        calendar_file=str(open_calendar(work)),
                        cache={"dir": str(work / "cache")},
                        heartbeat={"interval_seconds": 1.0, "evaluate_interval_seconds": 0.5},
                        broker={"sim": {"faults": {"history_not_ready": 1}}})
    host = HostProcess(path, run_dir, work / "host.log")
    try:
        host.wait_ready(tuple(actor["name"] for actor in actors), timeout=90)
        yield LiveHost(host)
    finally:
        host.stop()
        shutil.rmtree(work, ignore_errors=True)


def wait_for_series(live: LiveHost, name: str, condition: Any = bool,
                    timeout: float = 90) -> list[tuple[dict[str, str], float]]:
    def found() -> list[tuple[dict[str, str], float]] | None:
        if live.host.proc.poll() is not None:
            raise AssertionError("host exited:\n" + live.host.output())
        values = live.series().get(name, [])
        return values if values and condition(values) else None
    result: list[tuple[dict[str, str], float]] = wait_for(found, timeout, name, interval=0.5)
    return result


@pytest.mark.timeout(300)
def test_every_seed_metric_is_exported_with_its_labels(live: LiveHost) -> None:
    bars = wait_for_series(live, "fxcm_ohlcv_bars_total", lambda values: {
        labels.get("symbol") for labels, value in values if value > 0} >= {"EURUSD", "XAUUSD"})
    assert {labels["tf"] for labels, _ in bars} >= {"1m"}
    wait_for_series(live, "fxcm_connector_heartbeat_timestamp")
    wait_for_series(live, "fxcm_stream_lag_seconds", lambda values: {
        labels.get("symbol") for labels, _ in values} >= {"EURUSD", "XAUUSD"})
    text = live.scrape()
    exported = samples(text)
    names = family_names(text)
    for name, labels in SEED_METRICS.items():
        assert name in names, name
        for sample_labels, _ in exported.get(name, []):
            assert set(sample_labels) == labels, (name, sample_labels)
    for name in ("fxcm_stream_lag_seconds", "fxcm_stream_staleness_seconds",
                 "fxcm_stream_last_close_ms", "fxcm_market_status", "fxcm_next_open_seconds"):
        assert exported.get(name), "{} has no series".format(name)
    errors = {labels["type"]: value for labels, value in exported["fxcm_connector_errors_total"]}
    assert {"redis", "cache_io"} <= set(errors)
    assert exported["fxcm_market_status"] == [({}, 1.0)]  # the open test calendar
    last_close = {(labels["symbol"], labels["tf"]): value
                  for labels, value in exported["fxcm_stream_last_close_ms"]}
    now_ms = time.time() * 1000
    assert all(now_ms - 3 * 86400_000 < value <= now_ms for value in last_close.values())


@pytest.mark.timeout(300)
def test_seed_metrics_move_while_the_host_runs(live: LiveHost) -> None:
    first = wait_for_series(live, "fxcm_connector_heartbeat_timestamp")[0][1]
    wait_for_series(live, "fxcm_connector_heartbeat_timestamp",
                    lambda values: values[0][1] > first, timeout=30)
    lag = {tuple(sorted(labels.items())): value
           for labels, value in wait_for_series(live, "fxcm_stream_lag_seconds")}
    wait_for_series(live, "fxcm_stream_lag_seconds", lambda values: any(
        lag.get(tuple(sorted(labels.items()))) not in (None, value)
        for labels, value in values), timeout=30)
    bars = sum(value for _, value in wait_for_series(live, "fxcm_ohlcv_bars_total"))
    # the sim closes a 1m bar per symbol each minute: the counter grows within ~70 s
    wait_for_series(live, "fxcm_ohlcv_bars_total",
                    lambda values: sum(value for _, value in values) > bars, timeout=150)


@pytest.mark.timeout(300)
def test_no_series_is_exported_twice(live: LiveHost) -> None:
    wait_for_series(live, "fxcm_ohlcv_bars_total")
    text = live.scrape()
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{") if "{" in line.split(" ")[0] else (
            line.split(" ")[0], "", "")
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest.partition("}")[0])))
        key = (name, labels)
        assert key not in seen, "exported twice: {}".format(line)
        seen.add(key)
    cache_io = [labels for labels, _ in samples(text)["fxcm_connector_errors_total"]
                if labels.get("type") == "cache_io"]
    assert len(cache_io) == 1  # the bar store's and the journal's, summed
    assert samples(text).get("fxcm_metric_conflicts", []) == []


@pytest.mark.timeout(300)
def test_alert_rules_use_only_series_a_running_host_exports(live: LiveHost) -> None:
    wait_for_series(live, "fxcm_connector_heartbeat_timestamp")
    names = family_names(live.scrape())
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
             for rule in group["rules"]]
    for rule in rules:
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= names, "{} uses {}, which /metrics does not export".format(
            rule["alert"], sorted(used - names))


@pytest.mark.timeout(300)
def test_fxcm_session_exports_the_seeds_history_metrics(live: LiveHost) -> None:
    # the sim refuses one history call with "PriceHistoryCommunicator is not ready"
    wait_for_series(live, "fxcm_pricehistory_not_ready_total",
                    lambda values: values[0][1] >= 1, timeout=60)
    text = live.scrape()
    names = family_names(text)
    for name, labels in SESSION_METRICS.items():
        assert name in names, name
        if labels is not None:
            assert all(set(found) == labels for found, _ in samples(text)[name])
    errors = {labels["type"]: value
              for labels, value in samples(text)["fxcm_connector_errors_total"]}
    assert {"fxcm", "pricehistory_not_ready"} <= set(errors)
    assert errors["pricehistory_not_ready"] >= 1
