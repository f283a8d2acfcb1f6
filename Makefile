# Quick start:  make report   (creates .venv, installs, runs the benchmark DAG, writes
#                              the Markdown summary and the HTML report)
#               make test     (the test suite, tiny synthetic models, a few minutes)
#               make pipelines (your files in inputs/ through the configured pipelines)
#
# Variables:    PYTHON=python3.12   the interpreter for .venv (default: found, 3.11+)
#               TORCH=auto|cpu|pypi|URL   which PyTorch build (README, "Which PyTorch")
#               CONFIG="size=tiny"  Snakemake --config overrides for report/pipelines
#               CORES=1             Snakemake --cores
export PYTHON ?=
export TORCH ?= auto
CONFIG ?=
CORES ?= 1
VENV := .venv
BIN := $(VENV)/bin
INSTALL := sh envs/install.sh $(VENV)
INSTALLED := $(VENV)/.installed
TESTED := $(VENV)/.installed-test
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES)
# After the target: --config takes every word that follows it.
OVERRIDES := $(if $(strip $(CONFIG)),--config $(CONFIG))

.PHONY: report pipelines test lint install lock clean-results

$(INSTALLED): envs/install.sh requirements.txt requirements.lock pyproject.toml
	$(INSTALL) requirements.txt
	touch $@

$(TESTED): $(INSTALLED) requirements-test.txt
	$(INSTALL) requirements.txt requirements-test.txt
	touch $@

# Reinstall now, e.g. after choosing another PyTorch build: make install TORCH=cpu
install:
	$(INSTALL) requirements.txt
	touch $(INSTALLED)

# The benchmark, then the HTML report of it (Snakemake's --report, from the same
# .snakemake records), in the results folder that localbench.report.locate names for CONFIG.
report: $(INSTALLED)
	$(SNAKEMAKE) report $(OVERRIDES)
	@results=$$(PYTHONPATH=workflow $(BIN)/python -m localbench.report.locate $(CONFIG)) && \
	$(SNAKEMAKE) --report "$$results/report.html" html_report $(OVERRIDES) && \
	echo "Markdown summary: $$results/SUMMARY.md" && \
	echo "HTML report:      $$results/report.html (one file, charts included)"

pipelines: $(INSTALLED)
	$(SNAKEMAKE) pipelines $(OVERRIDES)

test: $(TESTED)
	$(BIN)/python -m pytest -q --durations=20

lint: $(TESTED)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c requirements.lock
	$(BIN)/ruff check workflow tests
	$(BIN)/ruff format --check workflow tests
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

# Every platform's versions in one file, from the three requirement files.
lock: $(TESTED)
	$(BIN)/uv pip compile --universal --python-version 3.11 --no-config \
		--default-index https://pypi.org/simple --custom-compile-command "make lock" \
		requirements.txt requirements-test.txt requirements-dev.txt -o requirements.lock

clean-results:
	rm -rf results .snakemake
