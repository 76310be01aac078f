# restorebench: two commands on a fresh machine.
#   make demo   - install into .venv if needed, run the whole pipeline on the embedded sample
#   make test   - install into .venv if needed, run the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install demo test test-fast lint bench clean-outputs

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	snakemake --cores $(CORES) results/table.csv

test: install
	pytest -q --timeout=900

test-fast: install
	pytest -q -m "not slow" --timeout=300

lint: install
	ruff check src tests benchmarks
	snakemake --lint

bench: install
	python benchmarks/run_all.py

clean-outputs:
	rm -rf data/raw data/manifests data/validation data/store runs metrics results logs .snakemake
