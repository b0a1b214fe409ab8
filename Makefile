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
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/evaluate.py

# Experiments side by side: the params and metrics that matter, narrow enough to read.
EXP_DROP := ^(paths|validate|prepare)\.|^data\.(kaggle|folder|dicebear)|train\.(device|log_every|checkpoint_every|grid_size|resume|max_steps|experiment_name|registered_model_name|beta1|beta2|max_channels)|evaluate\.|kid_.*_std|num_|run_id|_uri|note|files_seen|rejected|accepted|max_reject|grad_norm|kl_scale|peak_memory|steps$$|device|.*_std$$|.*_floor_std$$|count$$|draws$$|small_sample|warnings|validated_metrics|nn_distance|kid_|recon_|swd_(32|16|8)
exps: setup
	$(BIN)/dvc exp show --md --drop '$(EXP_DROP)'

# The MLflow UI over the project's store: http://127.0.0.1:5000
ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

clean:
	rm -rf $(VENV) .pytest_cache
