# Two commands do all set-up: `make demo` (runs the flow on the offline demo dataset and prints
# the inspection) and `make test` (lint + the default test suite). Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/expllm demo --out runs/demo

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

test-all: lint
	$(BIN)/python -m pytest -m "slow or not slow"

bench: setup
	$(BIN)/python benchmarks/flow_throughput.py
	$(BIN)/python benchmarks/describe_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
