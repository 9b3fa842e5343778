"""The state machines (protocol.states): each table's moves, a refused move raising in tests and
counted in production, up to ``fxcm_invalid_state_transitions_total`` on a running host's
/metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from actors.base import Actor
from protocol import states
from protocol.states import (
    DEGRADED,
    DISCONNECTED,
    DOWN,
    DRAINING,
    FAULTED,
    IDLE,
    LIFECYCLE,
    MACHINES,
    PUBLISHER,
    RECOVERING,
    RESUMING,
    RUNNING,
    SESSION,
    STARTING,
    STOPPED,
    STOPPING,
    STREAM,
    UP,
    InvalidTransition,
    StateTable,
)
from tests.helpers import host_process, wait_for
from tests.test_metrics_live import samples, scrape


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production's behaviour: a refused move is counted, not raised."""
    monkeypatch.setenv(states.STRICT_ENV, "0")


def test_the_suite_runs_strict() -> None:
    assert os.environ.get(states.STRICT_ENV) == "1"
    assert states.strict()


@pytest.mark.parametrize("table,old,new", [
    (LIFECYCLE, STARTING, RUNNING), (LIFECYCLE, RUNNING, STOPPING), (LIFECYCLE, STOPPING, STOPPED),
    (LIFECYCLE, RUNNING, DEGRADED), (LIFECYCLE, DEGRADED, RUNNING),
    (LIFECYCLE, RUNNING, FAULTED), (LIFECYCLE, STOPPED, STARTING),
    (SESSION, "CONNECTING", STREAM), (SESSION, STREAM, DISCONNECTED),
    (SESSION, DISCONNECTED, RECOVERING), (SESSION, RECOVERING, STREAM), (SESSION, STREAM, IDLE),
    (SESSION, IDLE, STREAM),
    (PUBLISHER, "off", DOWN), (PUBLISHER, DOWN, RESUMING), (PUBLISHER, RESUMING, DRAINING),
    (PUBLISHER, DRAINING, UP), (PUBLISHER, UP, DOWN), (PUBLISHER, DOWN, UP),
])
def test_the_moves_the_code_makes_are_in_the_tables(table: StateTable, old: str, new: str) -> None:
    assert table.allows(old, new)
    assert table.check(old, new)


@pytest.mark.parametrize("table,old,new", [
    (LIFECYCLE, STOPPED, RUNNING),     # a stopped actor does not run again without starting
    (LIFECYCLE, FAULTED, RUNNING),
    (LIFECYCLE, STARTING, STOPPED),    # stopping comes first
    (SESSION, DISCONNECTED, STREAM),   # ticks alone never end a disconnect
    (SESSION, STREAM, RECOVERING),
    (SESSION, STREAM, "CONNECTING"),
    (PUBLISHER, UP, DRAINING),         # a backlog builds only while Redis is away
    (PUBLISHER, UP, "off"),
    (PUBLISHER, DRAINING, RESUMING),
])
def test_a_move_the_table_refuses_raises_in_tests(table: StateTable, old: str, new: str) -> None:
    assert not table.allows(old, new)
    with pytest.raises(InvalidTransition, match="{}: {} -> {}".format(table.name, old, new)):
        table.check(old, new)


def test_staying_in_a_state_is_always_allowed() -> None:
    for table in MACHINES:
        for state in table.states:
            assert table.check(state, state)


def test_a_table_cannot_name_a_state_without_a_row() -> None:
    with pytest.raises(ValueError, match="without a row: \\['gone'\\]"):
        StateTable("broken", {"a": ("gone",)})


def test_in_production_a_refused_move_is_counted_and_made(lenient: None) -> None:
    actor = Actor("worker")
    actor.set_state(STOPPED)  # from STARTING: refused, counted, taken
    assert actor.state == STOPPED
    assert not actor.check_transition(PUBLISHER, UP, DRAINING)
    assert actor.check_transition(PUBLISHER, DOWN, DRAINING)
    assert actor.status()["invalid_transitions"] == {"lifecycle": 1, "publisher": 1}


def test_in_tests_an_actor_s_refused_move_raises() -> None:
    actor = Actor("worker")
    with pytest.raises(InvalidTransition, match="lifecycle: starting -> stopped"):
        actor.set_state(STOPPED)
    assert "invalid_transitions" not in Actor("fresh").status()


class MisstepActor(Actor):
    """Makes one move the publisher's table refuses when it starts (a bug on purpose)."""

    def on_start(self) -> None:
        self.check_transition(PUBLISHER, UP, DRAINING)


@pytest.mark.timeout(120)
def test_a_running_host_exports_the_count_per_actor_and_machine(tmp_path: Path,
                                                                 run_dir: str) -> None:
    actors = [{"name": "misstep", "class": "tests.test_states:MisstepActor"},
              {"name": "worker", "class": "tests.test_states:MisstepActor",
               "placement": "process"}]
    with host_process(tmp_path, run_dir, actors, env={states.STRICT_ENV: "0"}) as host:
        with open(os.path.join(run_dir, "host.json"), encoding="utf-8") as handle:
            port = int(json.load(handle)["http_port"])

        def counted() -> dict[tuple[str, str], float] | None:
            found: dict[tuple[str, str], float] = {
                (labels["actor"], labels["machine"]): value for labels, value in samples(
                    scrape(port)).get("fxcm_invalid_state_transitions_total", [])}
            wanted = {("misstep", "publisher"), ("worker", "publisher")}
            return found if wanted <= set(found) else None

        found: Any = wait_for(counted, 60, "the invalid moves on /metrics", interval=0.3)
        assert found[("misstep", "publisher")] == 1 and found[("worker", "publisher")] == 1
        assert found[("misstep", "lifecycle")] == 0 and found[("worker", "lifecycle")] == 0
        assert "invalid publisher transition up -> draining" in host.output()


def test_docs_show_each_table_as_the_code_has_it() -> None:
    """docs/architecture.md's tables, row by row: the moves a reader sees are the code's."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    shown: dict[str, dict[str, set[str]]] = {}
    for table in MACHINES:
        block = text[text.index("| {} ".format(table.name)):]
        block = block[:block.index("\n\n")]
        moves: dict[str, set[str]] = {}
        for line in block.splitlines()[2:]:
            left, right = line.strip("|").split("|")
            targets = set(re.findall(r"`([^`]+)`", right.split("(")[0]))
            for state in re.findall(r"`([^`]+)`", left.split("(")[0]):
                moves[state] = targets
        shown[table.name] = moves
    for table in MACHINES:
        assert shown[table.name] == {state: set(targets) for state, targets in table.rows()}
