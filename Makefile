# The single source of project commands: README and .ci/run call these targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help
help:
	@echo "make test   - set up .venv, build the extension, run cargo test and pytest (real PostgreSQL)"
	@echo "make bench  - set up .venv, build the extension, run the benchmark on an embedded PostgreSQL"
	@echo "make lint   - ruff, mypy, stubtest, cargo fmt --check, clippy"
	@echo "make nightly - the test suite with the long hypothesis profile"
	@echo "make build  - (re)build the native extension into .venv"

$(VENV)/.deps: pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "maturin>=1.5,<2"
	touch $@

.PHONY: venv
venv: $(VENV)/.deps

.PHONY: build
build: venv
	$(VENV)/bin/maturin develop --release --extras dev,bench -q

.PHONY: test
test: build
	cargo test --quiet
	$(VPY) -m pytest -q $(PYTEST_ARGS)

.PHONY: nightly
nightly: build
	HYPOTHESIS_PROFILE=nightly $(VPY) -m pytest -q $(PYTEST_ARGS)

.PHONY: bench
bench: build
	$(VPY) -m benches $(BENCH_ARGS)

.PHONY: lint
lint: build
	$(VPY) -m ruff check python tests benches
	$(VPY) -m ruff format --check python tests benches
	$(VPY) -m mypy
	$(VPY) -m mypy.stubtest retort._core
	cargo fmt --all -- --check
	cargo clippy --all-targets --features python -- -D warnings

.PHONY: format
format: venv
	$(VPY) -m ruff check --fix python tests benches
	$(VPY) -m ruff format python tests benches
	cargo fmt --all

.PHONY: clean
clean:
	rm -rf target $(VENV) python/retort/*.so
