# Clarion: `make run` serves on http://127.0.0.1:8000; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
PORT ?= 8000

.PHONY: run test lint format bench migrate compile clean

# The environment, from the lock file; rebuilt when pyproject.toml or uv.lock change.
# Bytecode is compiled up front: where PYTHONDONTWRITEBYTECODE is set, every command would
# otherwise recompile its dependencies at each start (about 6 s for `clarion`).
$(VENV)/.synced: pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv sync --frozen --quiet --compile-bytecode
	touch $@

# Clarion's own modules too: the project is installed editable, which uv does not compile
# (about 0.3 s of every `clarion` command's start where PYTHONDONTWRITEBYTECODE is set).
compile: $(VENV)/.synced
	$(BIN)/python -m compileall -q src

run: compile
	$(BIN)/clarion migrate
	$(BIN)/clarion demo --if-empty
	$(BIN)/clarion serve --port $(PORT)

migrate: $(VENV)/.synced
	$(BIN)/clarion migrate

test: $(VENV)/.synced
	$(BIN)/pytest

lint: $(VENV)/.synced
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.synced
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The segments bench at full size takes about 20 minutes on PostgreSQL alone (docs/benchmarks.md):
# `make bench SEGMENTS_BENCH=` runs it so; by default it is the smoke run.
SEGMENTS_BENCH ?= --quick
# The messaging bench at full size (100,000 recipients) takes about 10 minutes on 2 cores
# (docs/benchmarks.md): `make bench MESSAGING_BENCH=` runs it so.
MESSAGING_BENCH ?= --quick
# The journeys bench at full size (100,000 profiles) takes about 6 minutes: it is the default.
JOURNEYS_BENCH ?=

bench: compile
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/segments.py $(SEGMENTS_BENCH)
	$(BIN)/python bench/retail.py
	$(BIN)/python bench/messaging.py $(MESSAGING_BENCH)
	$(BIN)/python bench/journeys.py $(JOURNEYS_BENCH)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
