"""Shared fixtures: the Python 3.7 interpreter for the portable subset.

The 3.7 interpreter is found the way the Makefile provides it: the repository's ``.venv37``
(``make venv37``) first, then the ``FXCM_PYTHON37`` environment variable. A test that needs it
takes the ``python37`` fixture; it is marked ``py37`` automatically, and skipped with a loud
reason when there is no 3.7 interpreter. The terminal summary repeats that loudly, so a green
run that never touched 3.7 does not pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# A move a state table refuses raises in tests (protocol.states), in hosts started by tests too.
os.environ["FXCM_STRICT_STATES"] = "1"
# Not resolved: a venv's python is a symlink, and following it would lose the venv.
VENV37_PYTHON = REPO_ROOT / ".venv37" / "bin" / "python"
PYTHON37_ENV = "FXCM_PYTHON37"
NO_PYTHON37 = (
    "no Python 3.7 interpreter: the portable subset was NOT checked on 3.7; run make venv37"
)
_VERSION_CHECK_SECONDS = 30


def _is_python37(path: str) -> bool:
    try:
        result = subprocess.run(
            [path, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 7))"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=_VERSION_CHECK_SECONDS, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def find_python37() -> Tuple[Optional[str], List[str]]:
    """The first usable 3.7 interpreter, and the candidates that were rejected (with why)."""
    candidates = [str(VENV37_PYTHON)]
    from_env = os.environ.get(PYTHON37_ENV)
    if from_env:
        candidates.append(from_env)
    rejected = []
    for candidate in candidates:
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            rejected.append("{} (missing)".format(candidate))
        elif not _is_python37(candidate):
            rejected.append("{} (not a working Python 3.7)".format(candidate))
        else:
            return candidate, rejected
    return None, rejected


@pytest.fixture(scope="session")
def python37() -> str:
    """Path of a Python 3.7 interpreter; skips (loudly) when the machine has none."""
    path, rejected = find_python37()
    if path is None:
        pytest.skip("{} [tried: {}]".format(NO_PYTHON37, ", ".join(rejected)))
    return path


# The files that wait minutes of wall clock on live minutes, longest first. `make test` runs one
# file a worker in collection order (pytest -n 4 --dist loadfile --no-loadscope-reorder); these
# start first, so the rest of the suite fills the other workers around them.
LONG_FILES = ("test_final_bars_crash_drill.py", "test_final_bars.py",
              "test_commands_on_redis.py", "test_set_universe_on_redis.py")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    for item in items:
        if "python37" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.py37)

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: every file keeps its own order


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "py37" in getattr(report, "keywords", {})]
    if skipped:
        terminalreporter.write_sep(
            "!",
            "{} py37 test(s) SKIPPED: the portable subset was NOT checked on Python 3.7 "
            "(run make venv37 or set {})".format(len(skipped), PYTHON37_ENV),
            red=True, bold=True,
        )


@pytest.fixture
def run_dir() -> Iterator[str]:
    """A short run dir (unix socket paths are limited to 107 bytes), removed afterwards."""
    path = tempfile.mkdtemp(prefix="fxcm-t-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


NO_SDK = "the forexconnect wheel does not import in the Python 3.7 venv: the real-SDK tests were " \
    "NOT run (make venv37 installs forexconnect==1.6.43, numpy, pandas)"


@pytest.fixture(scope="session")
def sdk_python(python37: str) -> str:
    """A Python 3.7 interpreter where ``import forexconnect`` works; skips loudly otherwise."""
    try:
        result = subprocess.run([python37, "-c", "import forexconnect"], cwd=tempfile.gettempdir(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
                                check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip("{} [{}]".format(NO_SDK, exc))
    if result.returncode != 0:
        pytest.skip("{} [{}]".format(NO_SDK, result.stderr.decode(errors="replace")[-300:]))
    return python37
