# Quick start: `make run` (main job on the embedded default) and `make test` (full test suite).
# Both bootstrap .venv from a bare python3 and reinstall when pyproject.toml changes. --no-compile: Python compiles
# only the modules a run imports (about 20 s less of bootstrap on 2 cores than byte-compiling every installed file).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --no-compile -e ".[test,onnx]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/surrinf run

# Two pytest workers: most tests are bound by single-threaded XLA compilation, so two processes use both cores. Whole
# modules go to a worker (no module fixture computed twice), longest first (tests/conftest.py MODULE_SECONDS).
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check surrinf tests benchmarks studies
	$(VENV)/bin/ruff format --check surrinf tests benchmarks studies

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) runs .pytest_cache
