"""``python -m tests.chaos [--seconds N] [--symbols N] [--rate TICKS_PER_S] [--seed N]``."""

from __future__ import annotations

import sys

from tests.chaos._runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
