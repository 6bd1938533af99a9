# edgelab's two entry points: `make up` (run the service) and `make test` (run every test).
# Both set up .venv/ on first use and are fast (no-ops) on the second run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgelab-installed
PYTEST_ARGS ?=

.PHONY: setup model up test lint unit integration clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	bash .ci/install-llama.sh $(BIN)/pip $(BIN)/python
	$(BIN)/pip install -q -e ".[llama,embedded,dev]"
	touch $@

setup: $(STAMP)

model: setup
	$(BIN)/edgelab models fetch smollm2-135m

# Quiet on purpose: `edgelab up` applies the migrations itself and prints one short
# summary (the model fetch shows progress only while it downloads or verifies).
up: setup
	@$(BIN)/edgelab models fetch smollm2-135m > /dev/null
	@$(BIN)/edgelab up $(UP_ARGS)

lint: setup
	$(BIN)/ruff check edgelab tests bench
	$(BIN)/ruff format --check edgelab tests bench
	$(BIN)/mypy

test: lint model
	$(BIN)/pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var test-artifacts
