# One command each for the quick start: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install client-test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/python -m sidecar.demo

lint: $(BIN)/.installed
	$(BIN)/ruff check sidecar tests
	$(BIN)/mypy --strict sidecar

test: lint client-test
	$(BIN)/pytest -q

# The TypeScript client, tested through the real @tauri-apps/plugin-shell API against the sidecar.
client-test: $(BIN)/.installed
	npm ci --prefix clients/tauri --no-audit --no-fund --loglevel=error
	npm test --prefix clients/tauri

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
