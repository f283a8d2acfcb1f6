# Quick start:  make report   (creates .venv, installs, runs the benchmark DAG)
#               make test     (the test suite, tiny synthetic models, a few minutes)
#               make pipelines (your files in inputs/ through the configured pipelines)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CORES ?= 1

.PHONY: report pipelines test lint clean-results

# torch is pinned in requirements.txt: an unpinned torch would pull CUDA packages
# onto machines that have no GPU.
$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(INSTALLED)

report: $(INSTALLED)
	$(BIN)/snakemake --cores $(CORES) report

pipelines: $(INSTALLED)
	$(BIN)/snakemake --cores $(CORES) pipelines

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

lint: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/ruff check workflow tests
	$(BIN)/ruff format --check workflow tests
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results .snakemake
