# durable-proxy developer commands. Everything runs inside a local virtualenv (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test test-postgres lint typecheck check install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[speedups]' fastapi
	touch $@

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

## make run: start the proxy on SQLite with the example order service, registered, and print a curl line
run: $(VENV)/.installed
	$(BIN)/python -m examples.run

# The in-process end-to-end suites on PostgreSQL: every journal a test opens is a database of its own.
# Four workers: the run waits mostly on the server creating and dropping databases, not on the CPU.
PG_E2E := DURABLE_TEST_STORE=postgresql $(BIN)/pytest tests/e2e tests/examples tests/handler_sdk -q -n 4
PG_NOTE := DURABLE_TEST_POSTGRES_DSN is not set (e.g. postgresql://postgres@127.0.0.1:5432/test, as .ci/run sets it)

## make test: install the dev stack, then lint, type-check and run the whole test suite, then the
## end-to-end suites again on PostgreSQL when DURABLE_TEST_POSTGRES_DSN names a server
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest
	@if [ -n "$(DURABLE_TEST_POSTGRES_DSN)" ]; then \
		echo "$(PG_E2E)"; $(PG_E2E); \
	else \
		echo "note: skipped the end-to-end suites on PostgreSQL: $(PG_NOTE)"; \
	fi

## make test-postgres: only the end-to-end suites on PostgreSQL (needs DURABLE_TEST_POSTGRES_DSN)
test-postgres: $(STAMP)
	@if [ -z "$(DURABLE_TEST_POSTGRES_DSN)" ]; then echo "make test-postgres: $(PG_NOTE)" >&2; exit 2; fi
	$(PG_E2E)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache durable-proxy.db*

## make chaos: the CI chaos run: 300+ random programs while 30+ kill -9s and SIGSTOPs hit the processes (< 3 min)
chaos: $(STAMP)
	$(BIN)/pytest tests/chaos/test_chaos.py -m chaos -q -s

## make soak N=5000: a longer chaos run that prints its figures (also SEED=, KILLS=, SECONDS=, REPORT=file.json)
soak: $(STAMP)
	$(BIN)/python -m tests.chaos.run --invocations $(or $(N),5000) --seed $(or $(SEED),1) \
		--kills $(or $(KILLS),100) --max-seconds $(or $(SECONDS),3600) $(if $(REPORT),--report $(REPORT))

## make bench: durable-proxy on SQLite (FULL) vs Restate and DBOS on the same workloads (BENCH_ARGS=--quick ...)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## make chaos-postgres: the chaos run with three proxy instances on one PostgreSQL database (< 2 min; needs DURABLE_TEST_POSTGRES_DSN)
chaos-postgres: $(STAMP)
	$(BIN)/pytest tests/chaos/test_chaos.py -m chaos -k postgresql -q -s
