# live-commerce: `make run` (install and start on embedded defaults), `make test` (install and test).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test install install-dev system-deps test-system-deps web-deps lint typecheck pytest-sqlite pytest-pg \
	migrate reconcile rebuild admin-token defaults wheel clean bench rig

# System packages (Debian/Ubuntu names), installed only when missing: "command-or-file:package".
# `make run` needs redis-server and npm; `make test` also needs Chromium and CJK fonts (the
# browser tests take screenshots of Chinese pages).
RUN_PKGS := redis-server:redis-server npm:npm
TEST_PKGS := $(RUN_PKGS) chromium:chromium /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:fonts-noto-cjk
define ensure_pkgs
	@missing=""; for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  { command -v $$cmd >/dev/null || [ -e "$$cmd" ]; } || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	    echo "installing$$missing (sudo)"; sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi
endef

system-deps:
	$(call ensure_pkgs,$(RUN_PKGS))

test-system-deps:
	$(call ensure_pkgs,$(TEST_PKGS))

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: system-deps $(BIN)/python
	$(BIN)/pip install -q -e .
	@$(MAKE) -s web-deps

install-dev: test-system-deps $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@$(MAKE) -s web-deps

# Front-end packages from the npm registry (nothing third-party is committed).
web-deps:
	@if [ -f web/package.json ]; then \
	  command -v npm >/dev/null || { echo "npm is needed for the web pages (apt-get install npm)"; exit 1; }; \
	  npm install --prefix web --no-audit --no-fund --silent; \
	fi

run: install
	$(BIN)/live-server

# Operations commands on the same settings and data dir as `make run` (docs: README, "Operations").
migrate: install
	$(BIN)/live migrate

reconcile: install
	$(BIN)/live reconcile

rebuild: install
	@[ -n "$(CARD)" ] || { echo "usage: make rebuild CARD=<card id>"; exit 2; }
	$(BIN)/live rebuild $(CARD)

admin-token: install
	@$(BIN)/live admin-token

defaults: install
	@$(BIN)/live defaults

# The wheel (pages, their npm modules, Lua, documented defaults) into dist/; needs npm.
wheel: $(BIN)/python
	$(BIN)/pip wheel --no-deps -q -w dist .

lint:
	$(BIN)/ruff check live tests bench run_server.py setup.py

typecheck:
	$(BIN)/mypy

test: install-dev lint typecheck
	@env -u LIVE_TEST_DATABASE_URL $(MAKE) -s pytest-sqlite
	@if [ -n "$$LIVE_TEST_DATABASE_URL" ]; then $(MAKE) -s pytest-pg; fi

pytest-sqlite:
	$(BIN)/python -m pytest $(PYTEST_ARGS)

pytest-pg:
	@echo "== the suite again on PostgreSQL =="
	$(BIN)/python -m pytest -m "not browser and not wheel" $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m bench

# The multi-host rehearsal in network namespaces (needs root; installs nginx if missing).
rig: install-dev
	$(BIN)/python -m bench.rig

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
