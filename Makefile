# Skein developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STACK := deploy/local/stack.sh
PYTEST := $(VENV)/bin/pytest
# The native crates (decision 12): the Postgres loader's plans and the gate's /batch lane.
NATIVE := services/loaders/native services/gate/native
NATIVE_SOURCES := $(foreach crate,$(NATIVE),$(crate)/Cargo.toml $(crate)/Cargo.lock $(crate)/src/lib.rs)
# Cargo's builds of $(NATIVE), kept outside the clone so a fresh clone builds incrementally.
NATIVE_TARGET ?= $(HOME)/.cache/skein/native

.DEFAULT_GOAL := help

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,stack,redshift,bigquery,snowflake,iceberg]'
	@# The native crates (optional: without cargo, or where one cannot build, the loader and
	@# the gate run their Python paths; SKEIN_NATIVE=0 skips them).
	@if [ "$${SKEIN_NATIVE:-1}" != 0 ] && PATH="$$HOME/.cargo/bin:$$PATH" command -v cargo >/dev/null; then \
	  for crate in $(NATIVE); do \
	    PATH="$$HOME/.cargo/bin:$$PATH" CARGO_TARGET_DIR="$(NATIVE_TARGET)" MATURIN_PEP517_ARGS=--locked \
	      $(VENV)/bin/pip install -q $$crate \
	      || echo "could not build $$crate (Rust >= 1.82 needed): its Python path runs"; \
	  done; \
	else echo "no cargo (or SKEIN_NATIVE=0): skipping $(NATIVE); the Python paths run"; fi
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv/ with Skein, its dev tools and the S3 server

.PHONY: up
up: install ## Start the local stack (Kafka x3, Postgres x2, S3, Prometheus), migrate, wait until ready
	$(STACK) up

.PHONY: down
down: ## Stop everything the local stack started (data is kept)
	$(STACK) down

.PHONY: status
status: ## Show what is running and the records topic's health
	$(STACK) status

.PHONY: logs
logs: ## Tail the stack's logs (make logs C=kafka-1 | pg-control | s3 for one)
	$(STACK) logs $(C)

.PHONY: migrate
migrate: install ## Apply control-database migrations
	$(VENV)/bin/skein db migrate

.PHONY: test
test: up ## Run every test suite against the running local stack
	$(PYTEST) tests

.PHONY: chaos
chaos: up ## Long chaos run under load: SKEIN_CHAOS_SECONDS of faults (default 900), SKEIN_CHAOS_SEED replays one; SCALE=2 on the scaled profile
	SKEIN_CHAOS_SECONDS=$${SKEIN_CHAOS_SECONDS:-900} SKEIN_CHAOS_SCALES=$(or $(SCALE),1) $(PYTEST) tests/e2e/test_chaos.py

.PHONY: test-unit
test-unit: install ## Unit tests only (no servers)
	$(PYTEST) tests/unit

.PHONY: bigquery-emulator
bigquery-emulator: ## Build the BigQuery emulator the tests use (once per version, cached outside the clone)
	deploy/local/bigquery-emulator.sh path

.PHONY: lint
lint: install ## ruff (format check + lint), mypy; rustfmt + clippy on the native crates where cargo has them
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@export PATH="$$HOME/.cargo/bin:$$PATH" CARGO_TARGET_DIR="$(NATIVE_TARGET)"; \
	if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then \
	  for crate in $(NATIVE); do \
	    cargo fmt --manifest-path $$crate/Cargo.toml --check && \
	    cargo clippy --quiet --release --locked --manifest-path $$crate/Cargo.toml -- -D warnings \
	    || exit 1; \
	  done; \
	else echo "no cargo fmt/clippy here: $(NATIVE) not checked"; fi

.PHONY: docs
docs: install ## Regenerate the README's settings and CLI tables and docs/cli.md from the code
	$(VENV)/bin/python -m docs.generate

.PHONY: fmt
fmt: install ## Format and auto-fix with ruff (and cargo fmt on the native crates)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	@if PATH="$$HOME/.cargo/bin:$$PATH" cargo fmt --version >/dev/null 2>&1; then \
	  for crate in $(NATIVE); do \
	    PATH="$$HOME/.cargo/bin:$$PATH" cargo fmt --manifest-path $$crate/Cargo.toml || exit 1; \
	  done; fi

.PHONY: clean
clean: down ## Stop the stack and delete its runtime data (.run/)
	rm -rf .run
