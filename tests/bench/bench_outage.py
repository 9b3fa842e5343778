"""Memory through a Redis outage: the soak runner (``tests.soak``) with the sim broker at
1,000 ticks/s and Redis stopped for ``BENCH_OUTAGE`` seconds (default 600, the target's ten
minutes) in the middle of a run of ``BENCH_OUTAGE + 180`` seconds after its warm-up.

The figure is the host's peak RSS during the outage, beside its median in the minutes before
the outage (the baseline, same run): the publisher journals final bars to disk and conflates
the rest, so memory must stay within 10 %. The soak's own checks (drained journal, every bar
exactly once, no restarts) must pass too, or this benchmark fails.

``BENCH_OUTAGE=60 make bench`` gives a quick run.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ._results import Row, compare, median

TARGET = 1.10


def _log(text: str) -> None:
    print("  [outage] " + text, file=sys.stderr, flush=True)


def run(rounds: int = 1) -> list[Row]:
    outage = float(os.environ.get("BENCH_OUTAGE", "600"))
    duration = 120.0 + outage + 180.0  # warm-up, before, outage, after (with the recovery)
    work = Path(tempfile.mkdtemp(prefix="fxcm-bo-"))
    try:
        _log("the soak runner: {:.0f} s with a {:.0f} s Redis outage at 1000 ticks/s".format(
            duration, outage))
        done = subprocess.run(
            [sys.executable, "-m", "tests.soak", "--duration", str(duration), "--warmup",
             "120", "--redis-outage", str(outage), "--work-dir", str(work)],
            stdout=sys.stderr, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError("the soak through the outage failed (exit {}): see its "
                               "summary above".format(done.returncode))
        with open(work / "samples.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rss(phase: str) -> list[float]:
        return [float(row["rss_mb.host"]) for row in rows
                if row["phase"] == phase and row.get("rss_mb.host")]

    before, during = rss("run"), rss("outage")
    return [compare("host RSS peak through a {:g}-minute Redis outage, sim 1000 ticks/s".format(
                        outage / 60.0), max(during), "MiB", median(before),
                    baseline_name="host RSS median before the outage, same run",
                    target=TARGET, higher_is_better=False)]
