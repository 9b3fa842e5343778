"""``python -m tests.soak --duration 30m [--redis-outage 10m] [--rate 1000] [--work-dir DIR]``."""

from __future__ import annotations

import sys

from tests.soak._runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
