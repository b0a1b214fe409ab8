# alpha-gan: every target sets up what it needs; re-running with nothing changed is fast.
#   make repro   venv + install + `dvc repro` on the built-in offline sample
#   make test    venv + install + the whole test suite (what CI runs)
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3.11
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench ui exps clean

setup: $(INSTALLED)

# The stamp is newer than pyproject.toml once installed; editing the pins reinstalls.
$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/data_path.py
	$(BIN)/python benchmarks/train.py --profile 5
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/evaluate.py
	$(BIN)/python benchmarks/memmap_read.py

# Experiments side by side: the params that differ and the validated metrics with their
# floors, fitted to 160 columns (src/alphagan/experiments.py; `dvc exp show` has ~70 columns).
exps: setup
	$(BIN)/python -m alphagan.experiments

# The MLflow UI over the project's store: http://127.0.0.1:5000
ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

clean:
	rm -rf $(VENV) .pytest_cache
