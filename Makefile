# restorebench: two commands on a fresh machine.
#   make demo   - install into .venv if needed, run the whole pipeline on the embedded sample; ends in
#                 results/table.csv and results/report.html
#   make test   - install into .venv if needed, run the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install demo test test-fast lint bench gpu-wheels clean-outputs

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	snakemake --cores $(CORES) all  # rule all: results/table.csv and results/report.html

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
