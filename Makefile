# restorebench: two commands on a fresh machine.
#   make demo   - install into .venv if needed, run the whole pipeline on the embedded sample; ends in
#                 results/table.csv and results/report.html
#   make test   - install into .venv if needed, run the test suite
# The environment is pinned: `make install` installs the exact versions in requirements.lock (every
# dependency and the dev extras); `make lock` re-resolves it from pyproject.toml (see README).
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

LOCK := requirements.lock
PIP_VERSION := 26.3
UV_VERSION := 0.13.9
# the lock tool lives in its own venv, never in the project's
LOCK_TOOL := .lock-tool
# pip's own cap on versions (a machine whose pip config constrains packages, e.g. to wheels on its disk)
# applies to the resolution too, so the lock never names a version `make install` cannot get there
PIP_CONSTRAINT_FILE := $(or $(PIP_CONSTRAINT),$(shell $(PYTHON) -m pip config list 2>/dev/null | \
  sed -n "s/^\(global\|install\).constraint='\(.*\)'$$/\2/p" | head -1))
LOCK_ARGS ?= $(if $(PIP_CONSTRAINT_FILE),-c $(PIP_CONSTRAINT_FILE))
UPGRADE ?=

.PHONY: install lock demo dvc-commit test test-fast lint bench gpu-wheels clean-outputs

# exact versions from the lock, then the project itself without resolving anything
$(VENV)/.installed: $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

install: $(VENV)/.installed

# re-resolve the lock; every pin it holds is kept unless asked: UPGRADE=--upgrade (all) or
# UPGRADE='--upgrade-package dvc' (one); universal: markers for Linux, macOS and Windows, Python >= 3.11
lock:
	test -x $(LOCK_TOOL)/bin/uv || { $(PYTHON) -m venv $(LOCK_TOOL) && \
	  $(LOCK_TOOL)/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_TOOL)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --custom-compile-command 'make lock' $(LOCK_ARGS) $(UPGRADE) -o $(LOCK)

demo: install
	snakemake --cores $(CORES) all  # rule all: results/table.csv and results/report.html
	$(MAKE) --no-print-directory dvc-commit

# record what Snakemake built in dvc.lock (one state for both orchestrators: `dvc status` is then clean and
# `dvc metrics diff` compares against a branch without re-running); the `code` stage's fingerprints first,
# the one dvc.yaml stage Snakemake has no rule for
dvc-commit: install
	restorebench pipeline code -o .restorebench/code
	dvc commit --force --quiet
	dvc status

test: install
	pytest -q --timeout=900

test-fast: install
	pytest -q -m "not slow" --timeout=300

lint: install
	ruff check src tests benchmarks
	snakemake --lint

bench: install
	python benchmarks/run_all.py

# .whl/: what benchmarks/gpu_check.sh installs on a lent GPU machine (Python 3.12, torch preinstalled, no
# internet): omegaconf (+ antlr4, sdist only, built here) and the timm / transformers this venv tests with
gpu-wheels: install
	rm -rf .whl && mkdir -p .whl
	python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux2014_x86_64 -d .whl omegaconf==$$(python -c 'import omegaconf; print(omegaconf.__version__)') \
	  timm==$$(python -c 'import timm; print(timm.__version__)') \
	  transformers==$$(python -c 'import transformers; print(transformers.__version__)')
	python -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
	ls .whl

clean-outputs:
	rm -rf data/raw data/manifests data/validation data/store runs metrics results logs .snakemake
