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
# Two pytest workers (pytest-xdist), each file on one worker so a file's fixtures are built
# once: the suite is mostly training runs, servers and subprocesses that wait on each
# other, so two workers finish it in about half the time even on 2 cores.
# A worker that dies is reported as a failed test and not replaced: with --dist loadfile,
# pytest-xdist 3.8 re-runs the test that killed it on the replacement and can then wait
# forever (pytest-xdist issues #1378, #1371), which turned one crash into a CI timeout.
# --no-loadscope-reorder keeps the order tests/conftest.py gives: slow files first.
# PYTEST_ARGS="-p no:xdist" runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder --max-worker-restart=0
# The pipeline's stages call `flowerclf`: put this venv first on PATH for them.
DVC := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc

.DEFAULT_GOAL := help
.PHONY: help install triton-server install-browser quickstart params data train evaluate export repro push pull \
	serve ui loadtest bench results results-run test test-fast lint docs format pre-commit-install clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python ## create .venv; install flowerclf with every extra (train, export, serve, ui, pipeline, weights, dev)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[all]"
	$(MAKE) triton-server

triton-server: $(BIN)/python ## the tritonserver binary (nvidia-pytriton wheel, --no-deps: it pins numpy<2) and its Python-backend environment
	$(BIN)/pip install --no-deps "nvidia-pytriton==0.7.0"
	$(BIN)/flowerclf serve-triton --prepare-env

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
	$(BIN)/flowerclf benchmark --model $(MODEL) --json --targets scripts/benchmark_targets.json

results: ## re-render docs/results.md and the README summary from the DVC metrics and results/*.json (no training)
	$(BIN)/python scripts/results.py readme
	$(BIN)/python scripts/results.py docs

results-run: ## re-train the non-pipeline results rows (long), then re-render the results
	$(BIN)/python scripts/results.py run
	$(MAKE) results

test: ## the whole test suite: unit, integration (real datasets), end to end (slowest 20 printed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: ## every fast test, wherever it lives (-m "not slow": no training runs, DVC, browser)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: ## ruff; import layers (import-linter); params.yaml and results page up to date; docs build; pip-audit
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports
	$(BIN)/flowerclf config params --check
	$(BIN)/python scripts/results.py check
	$(BIN)/python scripts/audit_dependencies.py
	@site="$$(mktemp -d)" && trap 'rm -rf "$$site"' EXIT && echo "$(MKDOCS_BUILD) (into a temp dir)" \
		&& $(MKDOCS_BUILD) --site-dir "$$site"

# --strict turns every warning (broken link or anchor, missing API target) into an error.
# No --quiet: mkdocs counts only the warnings it logs, so --quiet makes --strict pass them.
MKDOCS_BUILD := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
docs: ## build the documentation site into site/ (git-ignored); `mkdocs serve` to preview
	$(MKDOCS_BUILD) --site-dir site

format: ## ruff fix and format
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

pre-commit-install: ## install the git pre-commit hook
	$(BIN)/pre-commit install

clean: ## remove caches and build outputs (not the venv, data, runs or models)
	rm -rf build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
