# The everyday commands; CI runs `make test` after installing ".[test]" (see README).
PYTHON ?= python3
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR

.PHONY: install dev demo lint test test-rust test-python bench

install:            ## build and install shoal with the test tools
	$(PYTHON) -m pip install ".[test]"

dev:                ## editable install for working on shoal
	$(PYTHON) -m pip install -e ".[test,bench]"

demo:
	$(PYTHON) -m shoal demo

lint:               ## formatting, lints and types, Rust and Python
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(PYTHON) -m ruff check python tests benches
	$(PYTHON) -m ruff format --check python tests benches
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest shoal._shoal

test-rust:
	cargo test -p shoal-engine

test-python:
	$(PYTHON) -m pytest

test: lint test-rust test-python

bench:              ## peers side by side; prints ratios (needs ".[bench]")
	$(PYTHON) benches/queue_bench.py
