# One command each for the quick start: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install client-test test-deps binary test-frozen bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint,build,bench]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/python -m sidecar_dev.demo

lint: $(BIN)/.installed
	$(BIN)/ruff check sidecar sidecar_dev tests build bench
	$(BIN)/mypy --strict sidecar sidecar_dev build/build.py bench

# Everything CI runs: lint, the TypeScript client's suite, the Python suites from source (the
# WebKit one included), then the same process-level suites (Python, TypeScript and WebKit; the
# security suite too, for what the binary must carry: TLS trust, proxies) against the frozen
# one-file binary.
test: lint client-test test-deps
	$(BIN)/pytest -q
	$(MAKE) test-frozen

# The TypeScript client, tested through the real @tauri-apps/plugin-shell API against the sidecar.
client-test: $(BIN)/.installed
	npm ci --prefix clients/tauri --no-audit --no-fund --loglevel=error
	npm test --prefix clients/tauri

# Debian packages the suites need, installed only when missing (as root, or through sudo):
# WebKitGTK's WebKitWebDriver and MiniBrowser (Tauri's Linux webview engine) and Xvfb for
# tests/webkit; fuse3, and libfuse3's headers and pkg-config, which the powerloss extra's
# pyfuse3 compiles against, for tests/powerloss.
$(BIN)/.test-deps: $(BIN)/.installed
	@if ! command -v WebKitWebDriver >/dev/null 2>&1 || ! command -v Xvfb >/dev/null 2>&1 \
	  || ! command -v fusermount3 >/dev/null 2>&1 || ! pkg-config --exists fuse3 2>/dev/null; then \
	  sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    webkit2gtk-driver xvfb fuse3 libfuse3-dev pkg-config; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[powerloss]'
	touch $@

test-deps: $(BIN)/.test-deps

binary: $(BIN)/.installed
	$(BIN)/python build/build.py

FROZEN = "$$PWD/$$($(BIN)/python build/build.py --print-path)"
test-frozen: binary
	SIDECAR_COMMAND=$(FROZEN) $(BIN)/pytest -q tests/integration tests/webkit tests/powerloss \
	  tests/reliability/test_security.py
	SIDECAR_COMMAND=$(FROZEN) npm test --prefix clients/tauri

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build/work
