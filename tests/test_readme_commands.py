"""Every command of README.md, examples/README.md and docs/*.md runs as printed.

A command is a line of a fenced ``sh`` block (continued with ``\\``; a trailing ``# comment``
is not part of it), or inline code in prose that starts the way a typed command does
(``make ...``, ``.venv/bin/...``, ``PYTHONPATH=...``). ``HOW`` says how each one is run; a
command in the docs that ``HOW`` does not know fails the suite (add it), and so does an entry
of ``HOW`` that no document has any more. Commands that cannot run here are in ``HOW`` with the
reason, and show up as SKIPPED with it.

They run against the host ``make run`` starts, as the README says: in this checkout, on the
documented defaults (run dir, HTTP port 9200, embedded Redis on 6380). The environment only
adds an always-open trading calendar, so that bars flow on any day; when a default port or the
default run dir is taken (someone's own ``make run``), the whole module is skipped, loudly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from config.settings import default_run_dir
from tests.helpers import REPO_ROOT, bus_status, open_calendar, wait_for

DOCUMENTS = [REPO_ROOT / "README.md", REPO_ROOT / "examples" / "README.md",
             *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`((?:make |\.venv/bin/|PYTHONPATH=[^`\s]+ )[^`]+)`")
SHELL_BLOCKS = ("sh", "bash", "shell")


@dataclass(frozen=True)
class Command:
    where: str      # file:line
    text: str


def open_quote(text: str) -> bool:
    """Whether ``text`` ends inside a quoted string (the shell reads on, newline included)."""
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in ("'", '"'):
            quote = char
    return bool(quote)


def strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in ("'", '"'):
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def commands() -> list[Command]:
    found: list[Command] = []
    for path in DOCUMENTS:
        text = path.read_text()
        name = str(path.relative_to(REPO_ROOT))
        for block in FENCE.finditer(text):
            first_line = text[:block.start()].count("\n") + 2
            if block.group(1) in SHELL_BLOCKS:
                pending, start = "", 0
                for offset, line in enumerate(block.group(2).splitlines()):
                    if not pending:
                        start = first_line + offset
                    if line.rstrip().endswith("\\"):
                        pending += line.rstrip()[:-1].strip() + " "
                        continue
                    if open_quote(strip_comment(pending + line)):
                        pending += line.strip() + " "
                        continue
                    command = strip_comment((pending + line.strip()).strip())
                    pending = ""
                    if command:
                        found.append(Command("{}:{}".format(name, start),
                                             re.sub(r"\s+", " ", command)))
        prose = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
        for number, line in enumerate(prose.splitlines(), 1):
            for match in INLINE.finditer(line):
                found.append(Command("{}:{}".format(name, number), match.group(1).strip()))
    return found


# -- how each command runs ---------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """Runs to its end: exit 0 and ``expect`` in its output."""

    expect: str
    timeout: float = 120.0


@dataclass(frozen=True)
class Long:
    """Runs until stopped (Ctrl-C): ``ready`` (a pattern of its output, or a check of the
    host) must come true, then it gets SIGINT, as from a terminal."""

    ready: str | Callable[[], bool]


@dataclass(frozen=True)
class Terminal:
    """Needs a terminal: run under a pseudo-terminal until ``expect``, then ``keys``."""

    expect: list[str]
    keys: str = "q"


@dataclass(frozen=True)
class Skip:
    reason: str


def attached(name: str) -> Callable[[], bool]:
    def check() -> bool:
        figures = bus_status(default_run_dir())["actors"].get(name, {})
        return bool(figures.get("connected")) and figures.get("placement") == "attached"
    return check


SYSTEMD = Skip("installs under systemd as root (/opt/fxcm, /etc/fxcm, a system user): not on "
               "a test machine; tests/test_deploy.py checks the unit and the files it installs")
PRODUCTION = Skip("the paths of a systemd install (/opt/fxcm, /run/fxcm, Redis on 6379): the same "
                  "commands run against `make run` above")
FXCM_LOGIN = Skip("logs in to real FXCM: tests never reach a real FXCM host (loopback only)")
SPREAD_MONITOR_README = (
    """PYTHONPATH=. .venv/bin/fxcm attach --name spread_monitor --settings '{"max_spread": """
    """{"XAUUSD": 0.5, "*": 0.0003}, "realert_seconds": 60}' examples.spread_monitor:"""
    """SpreadMonitor""")
SPREAD_MONITOR_EXAMPLES = (
    """PYTHONPATH=. .venv/bin/fxcm attach --name spread_monitor --settings '{"max_spread": """
    """{"XAUUSD": 0.5, "USDJPY": 0.02, "*": 0.0003}, "realert_seconds": 60}' """
    """examples.spread_monitor:SpreadMonitor""")

HOW: dict[str, Run | Long | Terminal | Skip] = {
    "make run": Skip("it is the host every other command here runs against (the module's "
                     "fixture runs it; test_make_run_prints_the_banner and the fixture's "
                     "teardown check it)"),
    "make test": Skip("the test suite itself, which runs this file"),
    "make bench": Skip("minutes of benchmarks; their figures are in docs/performance.md"),
    ".venv/bin/python -m tests.bench --report docs/performance.md": Skip(
        "make bench itself (minutes of benchmarks)"),
    ".venv/bin/python -m tests.bench crash": Skip(
        "minutes of crash drills (make bench runs it too); the same drill on the sim is "
        "tests/test_final_bars_crash_drill.py"),
    "make chaos": Skip("minutes of fault injection; a short chaos run is part of make test "
                       "(tests/test_chaos_short.py)"),
    "make soak DURATION=30m": Skip("30 minutes; a 40-second soak is part of make test"),
    "make soak DURATION=15m OUTAGE=10m": Skip("15 minutes; a 40-second soak with an outage is "
                                              "part of make test"),
    "make soak SOAK_ARGS=--help": Run(r"usage: .*soak"),
    "make venv37": Skip("builds the Python 3.7 venv of the real SDK (.venv37, shared on this "
                        "machine); make test runs it"),
    ".venv/bin/fxcm watch": Long(r"fxcm:price_tik"),
    ".venv/bin/fxcm viewer": Terminal([r"mode 1 SUM", r"host: pid \d+", r"redis: connected"]),
    ".venv/bin/fxcm status": Run(r"fxcm_session\s+running"),
    ".venv/bin/fxcm status --json": Run(r'"actors"'),
    ".venv/bin/fxcm tap --topic price.snapshot. --count 5": Run(r"price\.snapshot\.[A-Z]{6}"),
    ".venv/bin/fxcm command backfill --symbol XAUUSD --lookback-minutes 60": Run(r"\bok\b"),
    "curl -s localhost:9200/metrics | grep fxcm_": Run(r"fxcm_ohlcv_bars_total\{"),
    "curl -s localhost:9200/readyz": Run(r'"ready": true'),
    "PYTHONPATH=. .venv/bin/fxcm attach --name doubler examples.doubler:Doubler":
        Long(attached("doubler")),
    SPREAD_MONITOR_README: Long(attached("spread_monitor")),
    SPREAD_MONITOR_EXAMPLES: Long(attached("spread_monitor")),
    ".venv/bin/fxcm tap --topic alert.spread": Long(r"tapping .*alert\.spread"),
    "export FXCM_USERNAME=... FXCM_PASSWORD=... FXCM_CONNECTION=Demo": FXCM_LOGIN,
    ".venv/bin/fxcm host --broker forexconnect": FXCM_LOGIN,
    "sudo useradd --system --home /var/lib/fxcm fxcm": SYSTEMD,
    "sudo git clone <repo> /opt/fxcm && cd /opt/fxcm && sudo make venv": SYSTEMD,
    "sudo install -d -m 0750 /etc/fxcm": SYSTEMD,
    "sudo install -m 0640 deploy/config.json /etc/fxcm/config.json": SYSTEMD,
    "sudo install -m 0600 -o fxcm deploy/fxcm.env.example /etc/fxcm/fxcm.env": SYSTEMD,
    "sudo cp deploy/fxcm-connector.service /etc/systemd/system/": SYSTEMD,
    "sudo systemctl daemon-reload && sudo systemctl enable --now fxcm-connector": SYSTEMD,
    "journalctl -u fxcm-connector -f": SYSTEMD,
    "/opt/fxcm/.venv/bin/fxcm status --run-dir /run/fxcm": PRODUCTION,
    "/opt/fxcm/.venv/bin/fxcm tap --run-dir /run/fxcm --topic bar.XAUUSD.1m": PRODUCTION,
    "/opt/fxcm/.venv/bin/fxcm viewer --run-dir /run/fxcm --redis-url "
    "redis://127.0.0.1:6379/0": PRODUCTION,
    "/opt/fxcm/.venv/bin/fxcm watch --run-dir /run/fxcm --redis-url "
    "redis://127.0.0.1:6379/0": PRODUCTION,
    "redis-cli SUBSCRIBE fxcm:ohlcv fxcm:price_tik fxcm:status": PRODUCTION,
    "redis-cli GET fxcm:status:last": PRODUCTION,
    "curl -s 127.0.0.1:9200/metrics | grep -E 'fxcm_(stream_lag|redis_up|actor_restarts)'":
        PRODUCTION,
    "curl -s 127.0.0.1:9200/readyz": PRODUCTION,
}

COMMANDS = commands()


def test_every_documented_command_says_how_it_runs() -> None:
    unknown = sorted({"{}: {}".format(c.where, c.text) for c in COMMANDS if c.text not in HOW})
    assert not unknown, "commands in the docs without an entry in HOW:\n" + "\n".join(unknown)
    stale = sorted(set(HOW) - {command.text for command in COMMANDS})
    assert not stale, "entries of HOW that no document has: {}".format(stale)


# -- the host: make run, on the documented defaults ------------------------------------------

def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FXCM_", "AI_ONE_", "PYTHON"))}
    env["TERM"] = "xterm-256color"
    return env


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def ready() -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:9200/readyz", timeout=2) as reply:
            return bool(json.load(reply).get("ready"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


class MakeRun:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["make", "run"], cwd=str(REPO_ROOT), env=env,
                                     stdout=self._handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        if not self._handle.closed:
            self._handle.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Ctrl-C, as in the terminal: the whole foreground group gets SIGINT."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._handle.close()


@pytest.fixture(scope="module")
def host() -> Iterator[MakeRun]:
    run_dir = default_run_dir()
    busy = [what for what, taken in (("port 9200", port_taken(9200)),
                                     ("port 6380", port_taken(6380)),
                                     ("run dir " + run_dir,
                                      os.path.exists(os.path.join(run_dir, "bus.json"))))
            if taken]
    if busy:
        pytest.skip("cannot run the documented commands as printed: {} in use (another "
                    "`make run`?)".format(", ".join(busy)))
    work = Path(tempfile.mkdtemp(prefix="fxcm-readme-"))
    env = environment()
    env["FXCM_CALENDAR_PATH"] = str(open_calendar(work))  # bars flow on any day
    started = MakeRun(env, work / "make-run.log")
    try:
        def up() -> bool:
            if started.proc.poll() is not None:
                raise AssertionError("make run ended:\n" + started.output())
            return ready()
        wait_for(up, 120, "make run's host to be ready", interval=0.2)
        yield started
    finally:
        started.stop()
    # Ctrl-C stops everything in order, as the README says
    assert "stopping: signal received" in started.output()
    assert "Traceback" not in started.output()


@pytest.mark.timeout(240)
def test_make_run_prints_the_banner(host: MakeRun) -> None:
    banner = host.output()
    assert re.search(r"fxcm host \S+ \(pid \d+\)", banner)
    cache = re.search(r"  cache     (\S+)", banner)
    assert cache and cache.group(1) == str(REPO_ROOT / "cache"), banner
    assert "http://127.0.0.1:9200/metrics" in banner


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.where)
def test_documented_command_runs_as_printed(command: Command, host: MakeRun,
                                            tmp_path: Path) -> None:
    how = HOW.get(command.text)
    if how is None:
        pytest.fail("no entry in HOW for {!r}".format(command.text))
    if isinstance(how, Skip):
        pytest.skip("{}: {}".format(command.text, how.reason))
    env = environment()
    if isinstance(how, Terminal):
        child = pexpect.spawn("bash", ["-c", command.text], cwd=str(REPO_ROOT), env=env,
                              dimensions=(60, 200), encoding="utf-8", codec_errors="replace",
                              timeout=60)
        seen = ""
        try:
            def shows() -> bool:
                nonlocal seen
                try:
                    seen += child.read_nonblocking(65536, timeout=0.1)
                except pexpect.TIMEOUT:
                    pass
                plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen)
                return all(re.search(pattern, plain) for pattern in how.expect)
            wait_for(shows, 60, "{} to show {}".format(command.text, how.expect))
            child.send(how.keys)
            child.expect(pexpect.EOF, timeout=30)
        finally:
            child.close(force=True)
        assert child.exitstatus == 0
        return
    log = tmp_path / "out.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(["bash", "-c", command.text], cwd=str(REPO_ROOT), env=env,
                                stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            if isinstance(how, Run):
                code = proc.wait(how.timeout)
                output = log.read_text(errors="replace")
                assert code == 0, "{} exited {}:\n{}".format(command.text, code, output)
                assert re.search(how.expect, output), output
                return
            ready_check = how.ready

            def is_ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError("{} ended with {}:\n{}".format(
                        command.text, proc.returncode, log.read_text(errors="replace")))
                if callable(ready_check):
                    return ready_check()
                return bool(re.search(ready_check, log.read_text(errors="replace")))
            wait_for(is_ready, 90, "{} to be running".format(command.text), interval=0.2)
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)
            assert "Traceback" not in log.read_text(errors="replace")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_readmes_actor_is_the_one_in_examples() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme[readme.index("## Writing an actor"):]
    code = re.search(r"```python\n(.*?)```", block, re.DOTALL)
    assert code is not None
    def lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]
    example = lines((REPO_ROOT / "examples" / "doubler.py").read_text())
    shown = lines(code.group(1))
    start = example.index(shown[0])
    assert example[start:start + len(shown)] == shown


def test_the_command_list_is_what_a_reader_sees() -> None:
    found = {command.text for command in COMMANDS}
    assert ".venv/bin/fxcm status" in found and "make run" in found
    assert not any(text.startswith("fxcm ") for text in found), "bare `fxcm` is not on PATH"
