# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint fuzz bench bench-prune bench-audience bench-ids chaos soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pushline demo

test: $(STAMP) lint
	bash scripts/services.sh
	bash scripts/browser.sh  # chromium and chromedriver for the /docs and /console tests
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder --durations=15  # three files at a time: most of a test is waiting

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy schemas producer worker simulators

# schemathesis over every operation, unbounded in time (at least 20,000 requests), with counts.
fuzz: $(STAMP)
	bash scripts/services.sh
	$(PY) -m tests.fuzzing

bench: $(STAMP)
	bash scripts/services.sh
	$(PY) -m bench.transactional
	$(PY) -m bench.throughput

# Pruning a day of 1,000,000 Deliveries on PostgreSQL while pushes flow (a few minutes).
bench-prune: $(STAMP)
	bash scripts/services.sh
	$(PY) -m bench.prune

# POST /v1/audience's count over 1,000,000 registrations on PostgreSQL, per target kind
# (its own database, dropped afterwards; a couple of minutes).
bench-audience: $(STAMP)
	bash scripts/services.sh
	$(PY) -m bench.audience

# PostgreSQL's CPU per single-device push written over 2,000,000 stored, with random
# against time-ordered row ids (two databases of its own; a few minutes).
bench-ids: $(STAMP)
	bash scripts/services.sh
	$(PY) -m bench.ids

# A broadcast through a Redis FLUSHALL, an empty Redis restart and a worker SIGKILL, on
# default settings: time to resume, time to done, re-sends (a few minutes).
chaos: $(STAMP)
	bash scripts/services.sh
	$(PY) -m bench.chaos

# Worker memory over 1,000,000 deliveries (about ten minutes).
soak: $(STAMP)
	bash scripts/services.sh
	$(PY) -m bench.soak

clean:
	rm -rf .pushline $(VENV)
