"""The soak: ``fxcm host`` on the ``sim`` broker at a high tick rate for a long time, sampled
once a second (RSS, open files and threads of every process, mailbox depths, lag), optionally
through a long Redis outage; fails when memory, file descriptors or lag drift
(``make soak DURATION=30m``, ``python -m tests.soak --help``)."""
