# prefixcache: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test lint typecheck pytest demo bench-overhead clean

setup: $(STAMP)

# A plain venv + pip (pip is what finds the CPU torch wheel; see README "Install").
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/prefixcache lint

typecheck: setup
	$(BIN)/mypy src/prefixcache

pytest: setup
	$(BIN)/pytest

test: lint typecheck pytest

demo: setup
	$(BIN)/prefixcache analyze-prompts

bench-overhead: setup
	$(BIN)/python benchmarks/bench_overhead.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
