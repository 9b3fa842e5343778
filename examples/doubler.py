"""The README's first actor ("Writing an actor"), runnable: it doubles every ``number`` message
published under ``numbers.`` and publishes the result under ``doubled.<sender>``.

From the checkout, next to a running host (``make run``)::

    PYTHONPATH=. .venv/bin/fxcm attach --name doubler examples.doubler:Doubler
"""

from actors import LOSSLESS, Actor, Subscribe, handles


class Doubler(Actor):
    subscriptions = (Subscribe("numbers.", LOSSLESS),)

    def on_start(self):                      # also the restart path
        self.every(5.0, self.report)         # fixed-delay timer

    @handles("number")
    def on_number(self, value, delivery):
        self.publish("doubled." + delivery.header.sender, value * 2, msg_type="number")

    def report(self):
        self.set_state("running", "doubled {} so far".format(self.counters["handled"]))
