# A newcomer needs two commands: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# promtool tests the alert rules (ops/prometheus); ops/install-promtool.sh puts it here.
PROMTOOL := $(BIN)/promtool

.PHONY: run test lint typecheck unit integration api flows properties economy ingest architecture ops engine backtests demo devchain console bench openapi test-external mutate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(PROMTOOL): | $(STAMP)
	sh ops/install-promtool.sh $(BIN)

run: $(STAMP)
	$(BIN)/pumpparty serve

test: $(STAMP) $(PROMTOOL) lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

unit integration api flows properties economy ingest architecture ops engine backtests devchain console demo: $(STAMP)
	$(BIN)/python -m pytest tests/$@

# The alert rules' tests need promtool.
ops: $(PROMTOOL)

# The same suite against a separate PostgreSQL server reached by URL over TCP.
test-external: $(STAMP) $(PROMTOOL)
	$(BIN)/python -m scripts.external_postgres -- $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

openapi: $(STAMP)
	$(BIN)/pumpparty openapi > openapi.json

# Mutation testing of the rules that guard money and access ([tool.mutmut] in pyproject.toml):
# mutmut goes into .venv (the `mutation` extra, which `make test` never installs), a fresh
# run against the fast tests, then the score per module. Not part of `make test`.
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,mutation]'
	rm -rf mutants && mkdir mutants
	$(BIN)/mutmut run --max-children 2 > mutants/run.log 2>&1 || (tail -c 4000 mutants/run.log; exit 1)
	$(BIN)/python -m scripts.mutation_report

clean:
	rm -rf $(VENV)
