PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint bench demo-reset clean

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'

test:
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

bench:
	$(BIN)/python bench/run_bench.py

demo-reset:
	rm -rf .loop examples/shop/fixes

clean:
	rm -rf $(VENV) .loop build src/*.egg-info
