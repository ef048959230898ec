# Two commands from a fresh clone (only Python >= 3.10 needed):
#   make train   # train PinSage on MovieLens-100K, print metrics, write embeddings
#   make test    # run the test suite
# Both create ./.venv on first use (torch CPU + this package with its dev
# and spark extras). Pass Hydra overrides with ARGS="...",
# e.g. make train ARGS="data=movielens_1m trainer.max_epochs=20".
# TORCH picks the torch build: the default is the CPU wheel; for CUDA set it
# to a CUDA build and point pip at your CUDA wheel index (PIP_INDEX_URL).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
BIN := $(VENV)/bin

.PHONY: install train test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,spark]"
	touch $@

install: $(BIN)/.installed

train: install
	$(BIN)/pinsage-train $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
