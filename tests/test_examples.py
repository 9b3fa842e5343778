"""examples/spread_monitor: attached with ``fxcm attach`` from another process to a real host
running the sim broker, its alerts observed on the bus; its pure logic without sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import ipc_endpoint
from examples.spread_monitor import SpreadMonitor, SpreadWatch
from protocol.errors import ConfigError
from protocol.market import PriceSnapshot
from tests.helpers import Probe, bus_status, host_process, open_calendar, wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
FXCM = Path(sys.executable).with_name("fxcm")  # the console script of this venv

# The sim quotes spreads of 0.8..1.2 times XAUUSD 0.30, USDJPY 0.010 and about 1e-4 for the
# other pairs; snapshots come every 0.5 s, so a standing alert repeats about every cycle.
SETTINGS = {"max_spread": {"XAUUSD": 0.1, "*": 0.05}, "realert_seconds": 0.4}


def attach(run_dir: str, settings: dict[str, Any], log_path: Path) -> subprocess.Popen[bytes]:
    """``fxcm attach`` as the README shows it: from the checkout, with PYTHONPATH=."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [str(FXCM), "attach", "--run-dir", run_dir, "--name", "spread_monitor",
             "--settings", json.dumps(settings), "examples.spread_monitor:SpreadMonitor"],
            cwd=str(REPO_ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def sim_host(tmp_path: Path, run_dir: str) -> Iterator[str]:
    """A host with the sim broker and the snapshotter, on a calendar open around now."""
    actors = [{"name": "snapshotter", "class": "actors.snapshotter:Snapshotter"},
              {"name": "fxcm_session", "class": "actors.fxcm_session:FxcmSession"}]
    with host_process(tmp_path, run_dir, actors, calendar_file=str(open_calendar(tmp_path)),
                      redis={"port": 0, "required": False},
                      snapshotter={"price_snap_interval_seconds": 0.5, "stale_seconds": 30.0}):
        yield run_dir


def snapshot(symbol: str, bid: float, ask: float) -> PriceSnapshot:
    return PriceSnapshot(symbol, bid, ask, (bid + ask) / 2, 1795354001.0, 1795354001.5)


# -- attached to a real host ------------------------------------------------------------------

def test_attached_spread_monitor_publishes_alerts_for_wide_spreads_only(
        sim_host: str, tmp_path: Path) -> None:
    run_dir = sim_host
    probe = Probe("probe", ipc_endpoint(run_dir, "bus.sock"), ("alert.spread",))
    child = attach(run_dir, SETTINGS, tmp_path / "attach.log")
    try:
        wait_for(lambda: bus_status(run_dir)["actors"].get("spread_monitor", {})
                 .get("connected"), 60, "spread_monitor to attach", interval=0.05)
        assert bus_status(run_dir)["actors"]["spread_monitor"]["placement"] == "attached"
        probe.collect(lambda received: len(received) >= 1, 60, "a spread alert")
        # the alert repeats over a few more snapshot cycles, in which the narrow FX pairs
        # (quoted in the same cycles) must stay silent
        probe.collect(lambda received: len(received) >= 4, 60, "repeated spread alerts")
        alerts = probe.bodies("alert.spread")
        assert {alert["symbol"] for alert in alerts} == {"XAUUSD"}
        first = alerts[0]
        assert first["state"] == "wide" and first["max_spread"] == 0.1
        assert first["spread"] == pytest.approx(first["ask"] - first["bid"])
        assert first["spread"] > 0.1
    finally:
        probe.close()
        child.terminate()
        code = child.wait(30)
    assert code == 0, (tmp_path / "attach.log").read_text()


def test_attached_spread_monitor_with_bad_settings_exits_2_naming_the_key(
        sim_host: str, tmp_path: Path) -> None:
    child = attach(sim_host, {"max_spread": {"XAUUSD": -1}, "realert_seconds": 0},
                   tmp_path / "bad.log")
    assert child.wait(60) == 2
    output = (tmp_path / "bad.log").read_text()
    assert "max_spread.XAUUSD: must be a number > 0" in output
    assert "Traceback" not in output


# -- the pure logic ---------------------------------------------------------------------------

def test_watch_alerts_once_when_a_spread_widens_and_once_when_it_narrows() -> None:
    watch = SpreadWatch({"XAUUSD": 0.1}, realert_seconds=0)
    assert watch.update(snapshot("XAUUSD", 2634.7, 2634.75), 0.0) is None
    wide = watch.update(snapshot("XAUUSD", 2634.7, 2635.0), 1.0)
    assert wide is not None and wide["state"] == "wide"
    assert wide["spread"] == pytest.approx(0.3)
    assert watch.update(snapshot("XAUUSD", 2634.7, 2635.0), 2.0) is None
    normal = watch.update(snapshot("XAUUSD", 2634.7, 2634.75), 3.0)
    assert normal is not None and normal["state"] == "normal"


def test_watch_repeats_a_standing_alert_after_realert_seconds() -> None:
    watch = SpreadWatch({"*": 0.0003}, realert_seconds=60)
    assert watch.update(snapshot("EURUSD", 1.0920, 1.0925), 0.0) is not None
    assert watch.update(snapshot("EURUSD", 1.0920, 1.0925), 59.0) is None
    assert watch.update(snapshot("EURUSD", 1.0920, 1.0925), 60.0) is not None


def test_watch_ignores_symbols_without_a_threshold() -> None:
    watch = SpreadWatch({"XAUUSD": 0.1}, realert_seconds=0)
    assert watch.update(snapshot("EURUSD", 1.0, 2.0), 0.0) is None


@pytest.mark.parametrize("settings, key", [
    ({"realert_seconds": 0}, "max_spread"),
    ({"max_spread": {"XAUUSD": "wide"}, "realert_seconds": 0}, "max_spread.XAUUSD"),
    ({"max_spread": {"XAUUSD": 0.1}, "realert_seconds": -1}, "realert_seconds"),
])
def test_bad_settings_raise_config_error_naming_the_key(settings: dict[str, Any],
                                                        key: str) -> None:
    with pytest.raises(ConfigError, match="^{}:".format(key.replace(".", r"\."))):
        SpreadMonitor("spread_monitor", settings)
