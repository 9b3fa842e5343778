"""``make chaos``: the scenario runner of issue 7 (``python -m tests.chaos``).

Not collected by pytest (no ``test_*.py`` here): it starts a real ``fxcm host`` on the replay
broker, injects faults while the file streams, and proves afterwards that every final bar an
uninterrupted aggregation of the file yields reached Redis exactly once, unchanged, in order.
"""
