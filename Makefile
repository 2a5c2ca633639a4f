# Two commands do all set-up: `make demo` (runs the flow on the offline demo dataset and prints
# the inspection) and `make test` (lint + the default test suite). Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
#: A local copy of OpenFace 2.2's AU models (e.g. in ../shared): fetched into the user model
#: cache so that `--au-backend auto` picks `fused`. Licence: non-commercial research only.
OPENFACE_MIRROR ?= $(SHARED)/models/openface
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: setup models demo test test-all lint bench device-prep clean

setup: $(STAMP)

models: setup
	@if [ -f $(OPENFACE_MIRROR)/AU_all_static.txt ]; then \
	  echo "OpenFace 2.2 AU models from $(OPENFACE_MIRROR) (non-commercial research use only)"; \
	  $(BIN)/expllm models fetch openface --accept-licence --url "file://$(abspath $(OPENFACE_MIRROR))"; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: models
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

#: What the prepared GPU jobs carry (scripts/device_prep.sh, ~20 min): needs a venv with
#: expllm[train,openface] (TRAIN_VENV, default this one) and OpenFace's models (`make models`).
TRAIN_VENV ?= $(VENV)
device-prep: models
	PYTHON=$(TRAIN_VENV)/bin/python EXPLLM=$(TRAIN_VENV)/bin/expllm SHARED=$(SHARED) \
	  bash scripts/device_prep.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
