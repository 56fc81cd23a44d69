PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint bench demo-reset demo-staging demo-jobs clean

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
	rm -rf .loop .loop-fake examples/shop/fixes

# configs/staging.toml against the fake Cloud Run Admin API, whose revisions run the shop's
# services on this machine (examples/shop/images.toml). No Google account needed.
GCP_PROJECT ?= deployloop-demo
GCP_REGION ?= europe-west1
demo-staging:
	rm -rf examples/shop/fixes
	GCP_PROJECT=$(GCP_PROJECT) GCP_REGION=$(GCP_REGION) $(BIN)/python tests/cloudrun_fake.py \
		--images examples/shop/images.toml -- $(BIN)/loop run --env staging

# configs/jobs.toml the same way: the tests run as Cloud Run job tasks (local processes of
# `python -m deployloop.task`), their results through a Cloud Storage emulator.
demo-jobs:
	rm -rf examples/shop/fixes
	GCP_PROJECT=$(GCP_PROJECT) GCP_REGION=$(GCP_REGION) $(BIN)/python tests/cloudrun_fake.py \
		--images examples/shop/images.toml --storage $(GCP_PROJECT)-loop-results \
		-- $(BIN)/loop run --env jobs

clean:
	rm -rf $(VENV) .loop build src/*.egg-info
