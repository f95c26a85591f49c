# One command each for the quick start: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install client-test binary test-frozen bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint,build,bench]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/python -m sidecar.demo

lint: $(BIN)/.installed
	$(BIN)/ruff check sidecar tests build bench
	$(BIN)/mypy --strict sidecar build/build.py bench

# Everything CI runs: lint, the TypeScript client's suite, the Python suites from source, then
# the same process-level suites (Python and TypeScript) against the frozen one-file binary.
test: lint client-test
	$(BIN)/pytest -q
	$(MAKE) test-frozen

# The TypeScript client, tested through the real @tauri-apps/plugin-shell API against the sidecar.
client-test: $(BIN)/.installed
	npm ci --prefix clients/tauri --no-audit --no-fund --loglevel=error
	npm test --prefix clients/tauri

binary: $(BIN)/.installed
	$(BIN)/python build/build.py

FROZEN = "$$PWD/$$($(BIN)/python build/build.py --print-path)"
test-frozen: binary
	SIDECAR_COMMAND=$(FROZEN) $(BIN)/pytest -q tests/integration
	SIDECAR_COMMAND=$(FROZEN) npm test --prefix clients/tauri

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build/work
