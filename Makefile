# Every target sets up what it needs on a fresh clone: `make run`, `make test`, `make bench`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The portable subset (and, later, the ForexConnect SDK) runs on Python 3.7 when the machine has
# one: pyenv's build or python3.7 on PATH. Found, never hard-coded.
PY37 ?= $(shell for c in "$$(pyenv root 2>/dev/null)"/versions/3.7*/bin/python3.7 "$$(command -v python3.7)"; do \
	if [ -x "$$c" ] && "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))' 2>/dev/null; then echo "$$c"; break; fi; done)
VENV37 := .venv37
STAMP37 := $(VENV37)/.installed

.PHONY: help run test lint bench chaos soak venv venv37 clean

help:
	@echo "make run    start the host on the embedded defaults"
	@echo "make test   lint, type-check and run the test suite"
	@echo "make bench  run the benchmarks (prints ratios against same-run baselines)"
	@echo "make chaos  replay a generated tick file through faults; verify every final bar in Redis"
	@echo "make soak   the sim at 1000 ticks/s for DURATION (default 600 s, e.g. 30m), optionally"
	@echo "            through a Redis outage of OUTAGE (e.g. 10m); fails if memory, fds or lag drift"

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "the host needs Python 3.10+, $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# Every editable install makes setuptools print an "Editable installation" notice
	@# (information, not a defect); it is the only backend output left, so it is filtered.
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(STAMP)

# The portable subset needs pyzmq, msgpack and the zoneinfo backport; the real SDK needs
# forexconnect 1.6.43 with numpy and pandas (FOREXCONNECT.md section 4).
$(STAMP37): Makefile
	@if [ -z "$(PY37)" ]; then \
		echo "!! no Python 3.7 interpreter on this machine: the 3.7 tests will be SKIPPED"; \
	else \
		set -e; rm -rf $(VENV37); "$(PY37)" -m venv $(VENV37); \
		$(VENV37)/bin/pip install --quiet --disable-pip-version-check 'pyzmq<27' 'msgpack<1.1' \
			backports.zoneinfo tzdata; \
		$(VENV37)/bin/pip install --quiet --disable-pip-version-check forexconnect==1.6.43 \
			numpy pandas || echo "!! forexconnect could not be installed: the SDK tests will be SKIPPED"; \
		touch $@; \
	fi

venv37: $(STAMP37)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# One test file a worker (module fixtures and fixed ports stay in one process), longest first
# (tests/conftest.py); most tests wait on wall-clock minutes, so four workers share two cores
TEST_WORKERS ?= 4
test: $(STAMP) venv37 lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

run: $(STAMP)
	$(BIN)/fxcm host

bench: $(STAMP)
	$(BIN)/python -m tests.bench --report docs/performance.md

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

# make soak DURATION=30m; make soak DURATION=15m OUTAGE=10m; more options: SOAK_ARGS=--help
DURATION ?= 600
OUTAGE ?= 0
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python -m tests.soak --duration $(DURATION) --redis-outage $(OUTAGE) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(VENV37) .pytest_cache .mypy_cache .ruff_cache *.egg-info
