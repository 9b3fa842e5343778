"""A short ``make chaos`` inside ``make test``: the same scenario runner (tests/chaos), with
every kind of fault, on a small file (3 symbols, a 30 s replay, a 4 s Redis outage, a smaller
tick mailbox for the stall to fill), in a subprocess as an operator runs it. It checks every
final bar's presence and its arrival time (close_grace_ms + 2 s after its end for 1m, 1 s after
its last minute for a derived bar)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

SHORT = ["--seconds", "30", "--symbols", "3", "--rate", "1500", "--minutes", "12",
         "--outage", "4", "--tick-bound", "3000"]

CRASHED = ("redis_publisher", "heartbeat", "snapshotter", "history_poller", "command_handler",
           "tick_aggregator", "fxcm_session")


@pytest.mark.timeout(300)
def test_short_chaos_run_loses_nothing_through_every_kind_of_fault() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos", *SHORT], cwd=str(REPO_ROOT),
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=280, check=False)
    output = result.stdout
    assert result.returncode == 0, output
    assert "\nVERDICT: PASS" in output, output
    faults = output.split("FAULTS INJECTED", 1)[1].split("RECOVERIES / OBSERVATIONS", 1)[0]
    for name in CRASHED:
        assert "crash op: {}'s next handler raises InjectedCrash".format(name) in faults, output
    for fault in ("SIGKILL tick_aggregator", "stall op: tick_aggregator",
                  "release op: tick_aggregator", "Redis stopping", "Redis started again",
                  "bus flood: 20000", "commands flood: "):
        assert fault in faults, (fault, output)
    times = output.split("RECOVERY TIMES", 1)[1].split("STALL (", 1)[0]
    for name in CRASHED:
        assert re.search(r"crash op {} +\d+\.\d+ s  running again".format(name), times), output
    assert re.search(r"producer held back +True", output), output
    assert re.search(r"router injected crashes / stalls +7 / 1", output), output
    assert re.search(r"session outage: replay resumed at row +[1-9]\d* of \d+", output), output
    assert re.search(r"\n  missing +0\n", output), output
    # timeliness: every expected final bar by its arrival time, repairs included
    checked = re.search(r"on time: bars checked +(\d+)", output)
    assert checked and int(checked.group(1)) > 0, output
    assert re.search(r"late \(arrival-time limits\) +0\n", output), output
