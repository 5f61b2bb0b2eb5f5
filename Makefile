# A newcomer needs two commands: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration api flows properties bench openapi test-external clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pumpparty serve

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit integration api flows properties: $(STAMP)
	$(BIN)/python -m pytest tests/$@

# The same suite against a separate PostgreSQL server reached by URL over TCP.
test-external: $(STAMP)
	$(BIN)/python -m scripts.external_postgres -- $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

openapi: $(STAMP)
	$(BIN)/pumpparty openapi > openapi.json

clean:
	rm -rf $(VENV)
