# The few verbs people use. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# No telemetry or update checks: the tools run offline.
export DVC_NO_ANALYTICS := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint format venv ui clean-pipeline

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the whole pipeline on the embedded default (synthetic data, CPU) with `dvc repro`
run: $(STAMP)
	$(BIN)/dvc repro

## test: the test suite
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
