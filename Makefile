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
	@echo "make nightly - the test suite with the long hypothesis profile, and a longer fuzz run"
	@echo "make fuzz   - cargo-fuzz on the flush planner for FUZZ_SECONDS (installs cargo-fuzz)"
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
	$(MAKE) --no-print-directory fuzz

.PHONY: nightly
nightly: build
	HYPOTHESIS_PROFILE=nightly $(VPY) -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=1800

# cargo-fuzz needs a nightly compiler's -Z flags (sanitizers, coverage); the machine's stable
# toolchain accepts them under RUSTC_BOOTSTRAP=1, for this build only. Crashes are saved in
# fuzz/artifacts/plan/ (replay one: cargo fuzz run plan <file>).
FUZZ_SECONDS ?= 30
.PHONY: fuzz
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	RUSTC_BOOTSTRAP=1 cargo fuzz run plan -- -max_total_time=$(FUZZ_SECONDS) \
		> fuzz/last-run.log 2>&1 || { tail -n 60 fuzz/last-run.log; exit 1; }
	@tail -n 1 fuzz/last-run.log

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
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --all-targets --features python -- -D warnings

.PHONY: format
format: venv
	$(VPY) -m ruff check --fix python tests benches
	$(VPY) -m ruff format python tests benches
	cargo fmt --all
	cargo fmt --manifest-path fuzz/Cargo.toml

.PHONY: clean
clean:
	rm -rf target $(VENV) python/retort/*.so
