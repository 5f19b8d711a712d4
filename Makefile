# The README's two commands: `make repro` and `make test`. Each sets itself up first.
PYTHON ?= python3
VENV ?= .venv
TEST_WORKERS ?= 2  # pytest processes; each test file runs whole in one (module fixtures are built once)
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install repro test test-fast lint bench screenshots clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

repro: install  ## run the whole pipeline on the built-in data (digits by default)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: install  ## every test, the end-to-end runs included
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

test-fast: install  ## unit tests only
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not e2e and not slow"

lint: install
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench

bench: install  ## every benchmark (an hour or more); results go to docs/benchmarks.md by hand
	set -e; for script in bench/bench_*.py; do echo "== $$script"; PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$script; done

screenshots: install  ## the README's pictures of the MLflow UI (queued variants, a model card) in headless Chromium
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_UI_SCREENSHOTS="$(CURDIR)/docs/figures" $(BIN)/python -m pytest \
		tests/e2e/test_experiments.py tests/e2e/test_series.py -k "browser or mlflow_ui"

clean:
	rm -rf data/ingested data/validated data/prepared data/finetune models reports .pipeline mlflow.db mlruns
