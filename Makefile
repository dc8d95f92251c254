# One command per job, each working on a fresh machine:
#   make demo    MNIST-1D: autolrs against a constant LR (writes autolrs-demo/)
#   make test    the test suite
# torch==2.13.0 is installed first: an unpinned torch would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.demo
	$(BIN)/autolrs demo --out autolrs-demo

test: $(VENV)/.test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) autolrs-demo .pytest_cache
