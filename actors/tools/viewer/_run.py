"""``fxcm viewer``'s loop: the screen and the keys on the main thread, the I/O on another.

Looking at Redis and the host can block (a connect timeout, a host that stopped answering); the
keys must not wait for it. So a collector thread polls Redis and the host every ``refresh``
seconds into the board, and the main thread redraws from the board's latest snapshot and reads
the keyboard every tenth of a second: ``q`` quits at once, whatever the I/O is doing.

Keys (the predecessor's): ``0``..``9`` modes, ``p`` pause (the screen stops changing), ``c``
clears the viewer's own history (timeline, channel counts), ``q`` (or Ctrl-C) quits.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live

from actors.tools._connect import channel_names, resolve_redis_url
from actors.tools.viewer._board import Board
from actors.tools.viewer._feed import RedisFeed, fetch_host, load_limits
from actors.tools.viewer._panels import MODES, mode_key, render
from protocol.errors import ConfigError

# how often the screen is redrawn and the keyboard read
KEY_INTERVAL_SECONDS = 0.1


class Collector:
    """The I/O thread: Redis and the host into the board, every ``refresh`` seconds."""

    def __init__(self, feed: RedisFeed, board: Board, run_dir: str, refresh: float,
                 fetch: Callable[[str], dict[str, Any]] = fetch_host) -> None:
        self.feed = feed
        self.board = board
        self.run_dir = run_dir
        self.refresh = refresh
        self.fetch = fetch
        # (redis view, host view), replaced as one, so that a frame never mixes two looks;
        # until the first look: shown as "connecting" / "looking", not as "not reachable"
        self.views: tuple[dict[str, Any], dict[str, Any]] = (
            {"url": None, "connected": False, "error": "", "pending": True},
            {"reachable": False, "error": "", "pending": True, "actors": {}})
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer-io", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # the thread may be inside a connect timeout: it is a daemon, no long wait for it
        self._thread.join(0.5)

    def look(self) -> None:
        self.feed.poll()
        host = self.fetch(self.run_dir)
        redis_view = self.feed.view()
        self.board.observe(time.time(), redis_view, host)
        self.views = (redis_view, host)
        self.looks += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.look()
            except Exception as exc:  # shown on screen; the viewer goes on
                redis_view, host = self.views
                self.views = (dict(redis_view, error="viewer: {}: {}".format(
                    type(exc).__name__, exc)), host)
            self._stop.wait(self.refresh)


@contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """``wait(seconds) -> the keys pressed`` (cbreak mode on a terminal; else just waits)."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        def pause(seconds: float) -> str:
            time.sleep(seconds)
            return ""

        yield pause
        return
    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(seconds: float) -> str:
        ready, _, _ = select.select([fd], [], [], seconds)
        return os.read(fd, 64).decode("utf-8", "replace") if ready else ""

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Screen:
    """Which mode is shown, paused or not; ``press`` applies keys, says whether to quit."""

    def __init__(self, mode: str = "1") -> None:
        self.mode = mode
        self.paused = False
        self.cleared = False

    def press(self, keys: str, board: Board) -> bool:
        for key in keys.lower():
            if key == "q":
                return True
            if key in MODES:
                self.mode = key
            elif key == "p":
                self.paused = not self.paused
            elif key == "c":
                board.clear()
        return False


def run(run_dir: str, redis_url: str | None, refresh: float, config_path: str | None,
        mode: str = "1") -> int:
    """The dashboard loop until q or Ctrl-C; returns 0 (2 on a bad configuration)."""
    import config

    if refresh <= 0:
        print("fxcm viewer: --refresh: must be > 0, got {}".format(refresh), file=sys.stderr)
        return 2
    start_mode = mode_key(mode)
    if start_mode is None:
        print("fxcm viewer: --mode: one of {}, got {!r}".format(
            ", ".join("{} ({})".format(key, name) for key, (name, _, _) in MODES.items()), mode),
            file=sys.stderr)
        return 2
    try:
        raw = config.load(config_path).raw
        prefix, channels = str(raw["channels"]["prefix"]), channel_names(raw["channels"])
        limits = load_limits(raw)
    except ConfigError as exc:
        print("fxcm viewer: {}".format(exc), file=sys.stderr)
        return 2
    board = Board(int(limits["timeline_history_max"]))
    configured = str(raw["redis"]["url"])  # FXCM_REDIS_HOST/PORT/PASSWORD as the host reads them
    feed = RedisFeed(lambda: resolve_redis_url(redis_url, run_dir, configured=configured),
                     prefix, channels, board,
                     health_interval=limits["redis_health_interval"])
    collector = Collector(feed, board, run_dir, refresh)
    screen = Screen(start_mode)
    started = time.time()
    frozen: dict[str, Any] = {}

    def frame() -> Any:
        """The newest snapshot; while paused, the one taken when p was pressed (another mode
        may still be chosen to look at it)."""
        if screen.paused and frozen:
            snapshot = dict(frozen, mode=screen.mode, paused=True)
        else:
            redis_view, host = collector.views
            snapshot = board.snapshot(time.time(), redis_view, host, limits, screen.mode,
                                      screen.paused)
            snapshot["started"] = started
            frozen.clear()
            if screen.paused:
                frozen.update(snapshot)
        return render(snapshot)

    console = Console()
    collector.start()
    try:
        with _keys() as wait, Live(frame(), console=console, screen=True,
                                   auto_refresh=False) as live:
            last_draw = 0.0
            while True:
                pressed = wait(KEY_INTERVAL_SECONDS)
                if screen.press(pressed, board):
                    break
                now = time.monotonic()
                if pressed or now - last_draw >= min(refresh, 1.0):
                    live.update(frame(), refresh=True)
                    last_draw = now
    except KeyboardInterrupt:
        pass
    finally:
        collector.stop()
        feed.close()
    return 0
