"""Small actors the tests run in a host, in a child process or attached (Python 3.7 too)."""

from __future__ import annotations

import time
from typing import Any, Dict, List

from actors import LOSSLESS, Actor, Subscribe, handles
from bus import Delivery


class Echo(Actor):
    """Answers ``echo`` requests with the same body and republishes it on ``echoed.<name>``.
    A body equal to ``"poison"`` makes the handler raise."""

    subscriptions = (Subscribe("echo.", LOSSLESS),)

    @handles("echo")
    def on_echo(self, body: Any, delivery: Delivery) -> None:
        if body == "poison":
            raise RuntimeError("poisoned message")
        if delivery.header.reply_to is not None:
            self.reply(delivery, "echo.reply", body)
        self.publish("echoed." + self.name, body, "echoed")


class Folder(Actor):
    """Folds a sequence into a running hash, checkpointing its state with its acks.

    Publishes ``[value, total, count]`` on ``folded`` per message. Settings: ``crash_at``
    (values whose first delivery raises), ``delay_seconds`` (per message)."""

    ack_mode = "checkpoint"
    subscriptions = (Subscribe("seq.", LOSSLESS),)

    def __init__(self, name: str, settings: Any = None) -> None:
        super(Folder, self).__init__(name, settings)
        self.total = 0
        self.count = 0

    def snapshot(self) -> Any:
        return [self.total, self.count]

    def restore(self, state: Any) -> None:
        self.total, self.count = state

    @handles("seq")
    def on_seq(self, value: int, delivery: Delivery) -> None:
        if value in self.settings.get("crash_at", ()) and delivery.attempt == 1:
            raise RuntimeError("injected crash at {}".format(value))
        self.total = fold(self.total, value)
        self.count += 1
        self.publish("folded", [value, self.total, self.count], "folded")
        delay = self.settings.get("delay_seconds", 0)
        if delay:
            time.sleep(delay)  # a deliberately slow consumer


def fold(total: int, value: int) -> int:
    return (total * 31 + value) % 1000000007


def reference_fold(values: List[int]) -> List[List[int]]:
    """What Folder publishes for ``values`` when nothing goes wrong."""
    total = 0
    result = []
    for count, value in enumerate(values, 1):
        total = fold(total, value)
        result.append([value, total, count])
    return result


class Recorder(Actor):
    """Appends every ``record`` value to the file ``settings["path"]``, optionally slowly."""

    subscriptions = (Subscribe("record.", LOSSLESS),)

    def on_start(self) -> None:
        self._file = open(self.settings["path"], "a")  # noqa: SIM115 - closed in on_stop

    @handles("record")
    def on_record(self, value: Any, delivery: Delivery) -> None:
        self._file.write("{}\n".format(value))
        self._file.flush()
        delay = self.settings.get("delay_seconds", 0)
        if delay:
            time.sleep(delay)

    def on_stop(self) -> None:
        self._file.close()


class Ticker(Actor):
    """Publishes a counter on ``demo.tick.<n % 3>`` every ``interval_seconds``."""

    def on_start(self) -> None:
        self.n = 0
        self.every(float(self.settings.get("interval_seconds", 0.01)), self.tick)

    def tick(self) -> None:
        self.n += 1
        self.publish("demo.tick.{}".format(self.n % 3), {"n": self.n}, "demo.tick")


class Metered(Actor):
    """Reports a counter and a gauge in its status, as actors expose Prometheus metrics."""

    def status(self) -> Any:
        result = super(Metered, self).status()
        result["metrics"] = {
            "fxcm_test_widgets_total": {"type": "counter", "help": "Widgets made",
                                        "samples": [[{"kind": "blue"}, 3], [{"kind": "red"}, 4]]},
            "fxcm_test_temperature": {"type": "gauge", "help": "Degrees",
                                      "samples": [[{}, 21.5]]},
        }
        return result


class CrashOnStart(Actor):
    def on_start(self) -> None:
        raise RuntimeError("this actor never starts")


class Relay(Actor):
    """For attach tests: asks ``settings["target"]`` to echo each ``relay`` body, and publishes
    the answer on ``relayed``."""

    subscriptions = (Subscribe("relay.", LOSSLESS),)

    @handles("relay")
    def on_relay(self, body: Any, delivery: Delivery) -> None:
        import sys
        _, answer = self.request(self.settings.get("target", "echo"), "echo", body, timeout=10)
        self.publish("relayed", {"answer": answer, "python": list(sys.version_info[:2])},
                     "relayed")


class Collector(Actor):
    """Keeps every message of ``settings["topics"]`` (lossless) and answers ``collected``
    requests with them, as ``[type, wire form, arrival time in s]``. Start it before the
    producers: it then has everything from the first message on."""

    def __init__(self, name: str, settings: Any = None) -> None:
        super(Collector, self).__init__(name, settings)
        self.subscriptions = tuple(Subscribe(topic, LOSSLESS)
                                   for topic in self.settings.get("topics", []))
        self.kept: List[Any] = []

    def on_message(self, body: Any, delivery: Delivery) -> None:
        self.kept.append([delivery.type, body.to_wire() if hasattr(body, "to_wire") else body,
                          time.time()])

    @handles("collected")
    def on_collected(self, body: Any, delivery: Delivery) -> None:
        start = int(body or 0)
        self.reply(delivery, "collected", self.kept[start:])


class PollerStandIn(Actor):
    """A stand-in ``history_poller`` for the command tests. Answers each ``poller.<op>``
    request with ``poller.result`` ``{"ok": true, "result": {"op": op, "args": args}}`` and
    keeps the calls, which a ``poller.calls`` request returns as ``[[op, args], ...]``.
    ``args["provider"]`` steers it: ``"stand-in:fail"`` answers ``{"ok": false, "error":
    {"code": "stand_in_failure", ...}}``; ``"stand-in:slow:<seconds>"`` answers only after
    that long (to outlast the requester's timeout); ``"stand-in:job:<seconds>"`` runs as the
    real poller's jobs do: answers ``started`` at once, sends ``poller.progress`` every 0.2 s
    and ``poller.done`` after that long, unless ``poller.cancel`` ends it first;
    ``"stand-in:mute-job"`` answers ``started`` and then says nothing."""

    def __init__(self, name: str, settings: Any = None) -> None:
        super(PollerStandIn, self).__init__(name, settings)
        self.calls = []  # type: List[Any]
        # job -> [requester, ends at, op, args]
        self.jobs: Dict[str, List[Any]] = {}

    def on_start(self) -> None:
        self.every(0.2, self._step_jobs)

    def _step_jobs(self) -> None:
        now = time.monotonic()
        for job, (requester, ends, op, args) in list(self.jobs.items()):
            if ends is None:
                continue
            if now >= ends:
                del self.jobs[job]
                self.send(requester, "poller.done", {"job": job, "ok": True, "result": {
                    "op": op, "args": args}})
            else:
                self.send(requester, "poller.progress", {"job": job, "progress": {
                    "left_seconds": round(ends - now, 1)}})

    def on_message(self, body: Any, delivery: Delivery) -> None:
        kind = delivery.type
        if not kind.startswith("poller.") or delivery.header.reply_to is None:
            self.counters["unhandled"] += 1
            return
        if kind == "poller.calls":
            self.reply(delivery, "poller.calls", self.calls)
            return
        op = kind[len("poller."):]
        if op == "cancel":
            known = self.jobs.pop(str(body.get("job")), None)
            if known is not None:
                self.send(known[0], "poller.done", {"job": body["job"], "ok": False, "error": {
                    "code": "cancelled", "message": "cancelled on request"}})
            self.reply(delivery, "poller.result", {"ok": known is not None})
            return
        args = {key: value for key, value in body.items() if key != "_job"} \
            if isinstance(body, dict) else body
        self.calls.append([op, args])
        provider = args.get("provider", "") if isinstance(args, dict) else ""
        if provider.startswith("stand-in:slow:"):
            time.sleep(float(provider.rsplit(":", 1)[1]))  # a deliberately slow poller
        if provider.startswith("stand-in:job:") or provider == "stand-in:mute-job":
            job = str(body["_job"])
            ends = time.monotonic() + float(provider.rsplit(":", 1)[1]) \
                if provider != "stand-in:mute-job" else None
            self.jobs[job] = [delivery.header.sender, ends, op, args]
            self.reply(delivery, "poller.result", {"ok": True, "started": job})
            return
        if provider == "stand-in:fail":
            self.reply(delivery, "poller.result", {
                "ok": False, "error": {"code": "stand_in_failure",
                                       "message": "told to fail by its provider argument"}})
            return
        self.reply(delivery, "poller.result", {"ok": True, "result": {"op": op, "args": args}})
