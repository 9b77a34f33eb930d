# durable-proxy developer commands. Everything runs inside a local virtualenv (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck check install clean bench

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

## make test: install the dev stack, then lint, type-check and run the whole test suite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

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
