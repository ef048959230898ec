# Two commands from a fresh clone (only Python >= 3.10 needed):
#   make train   # train PinSage on MovieLens-100K, print metrics, write embeddings
#   make test    # run the test suite
# Both create ./.venv on first use (torch CPU + this package with its dev
# and spark extras). Pass Hydra overrides with ARGS="...",
# e.g. make train ARGS="data=movielens_1m trainer.max_epochs=20".
# TORCH picks the torch build: the default is the CPU wheel; for CUDA set it
# to a CUDA build and point pip at your CUDA wheel index (PIP_INDEX_URL).
# EXT=1 also builds the compiled backends torch-scatter, torch-sparse and
# torch-cluster (the [ext] extra; ~12 min each on 2 cores the first time,
# pip's wheel cache afterwards) and makes their parity tests mandatory
# (PINSAGE_REQUIRE_EXT=1: fail, not skip, if they are missing). SPARK=1
# makes sure Java 17+ is there for the Spark tests (.ci/ensure-java: the
# one found on JAVA_HOME / PATH, else Debian's headless OpenJDK when run as
# root) and makes them mandatory (PINSAGE_REQUIRE_SPARK=1). CI runs with
# EXT=1 SPARK=1.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
EXT ?= 0
SPARK ?= 0
BIN := $(VENV)/bin
EXT_PKGS := 'torch-scatter>=2.1.2' 'torch-sparse>=0.6.18' 'torch-cluster>=1.6.3'

.PHONY: install java train test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,spark]"
	touch $@

# Built against the venv's torch, hence --no-build-isolation (same
# requirements as the [ext] extra in pyproject.toml).
$(BIN)/.installed-ext: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet setuptools wheel
	$(BIN)/python -m pip install --quiet --no-build-isolation $(EXT_PKGS)
	touch $@

# Java for the Spark tests (checked every run: it lives outside the venv).
java:
	.ci/ensure-java

ifeq ($(EXT),1)
install: $(BIN)/.installed $(BIN)/.installed-ext
else
install: $(BIN)/.installed
endif
ifeq ($(SPARK),1)
install: java
endif

train: install
	$(BIN)/pinsage-train $(ARGS)

test: install
	PINSAGE_REQUIRE_EXT=$(EXT) PINSAGE_REQUIRE_SPARK=$(SPARK) $(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
