# The everyday commands; CI runs `make test` after installing ".[test]" (see README).
# `make help` lists them.
PYTHON ?= python3
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR

.PHONY: help install dev demo lint test test-rust test-python test-chaos test-other-pythons pythons wheel \
	sdist test-wheel bench bench-queue bench-pool bench-buffers bench-sync bench-startup \
	bench-cluster bench-doors bench-progress bench-stats bench-process soak docs

help:               ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 20

install:            ## build and install shoal with the test tools
	$(PYTHON) -m pip install ".[test]"

dev:                ## editable install for working on shoal, the benchmarks' peers, pre-commit
	$(PYTHON) -m pip install -e ".[test,bench,dev]"
	$(PYTHON) -m pre_commit install

demo:               ## the demo: real work across processes, with timings
	$(PYTHON) -m shoal demo

lint:               ## formatting, lints and types, Rust and Python
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc -p shoal-engine --no-deps --quiet
	$(PYTHON) -m ruff check python tests benches docs/conf.py
	$(PYTHON) -m ruff format --check python tests benches docs/conf.py
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest shoal._shoal

test-rust:          ## the engine's own tests, without Python
	cargo test -p shoal-engine

test-python:        ## the Python suite (processes, a Dask cluster, CPython's Pool tests)
	$(PYTHON) -m pytest --ignore=tests/test_chaos.py

test-chaos:         ## chaos on every backend for seconds each (make soak: for longer)
	$(PYTHON) -m pytest tests/test_chaos.py

SOAK_SECONDS ?= 600
soak:               ## chaos on every backend for SOAK_SECONDS each (600 by default)
	cd tests && for how in "--start-method zygote" "--start-method fork" \
		"--start-method spawn" "--backend thread" "--backend dask" "--backend ray"; do \
		$(PYTHON) chaos.py --seconds $(SOAK_SECONDS) $$how || exit 1; done

docs:               ## the docs site into target/docs/html: warnings are errors, every reference checked
	$(PYTHON) -m sphinx -E -a -W --keep-going -n -q -b html -d target/docs/doctrees docs target/docs/html

OTHER_PYTHONS ?= 3.12 3.13 3.14 3.15
test-other-pythons: pythons ## the portable part of the suite on CPython 3.12 to 3.15, where present
	$(PYTHON) tests/other_pythons.py $(OTHER_PYTHONS)

# Versions no pyenv here can build and Debian stable lacks: Debian unstable's builds.
DEBIAN_PYTHONS ?= 3.14 3.15
pythons:            ## CPython 3.14 and 3.15 from Debian unstable, unpacked under target/pythons/
	PYTHON=$(PYTHON) bash tests/pythons.sh $(DEBIAN_PYTHONS)

# The wheel a user installs without Rust. Its platform tag: the engine calls glibc's
# memfd_create, which glibc 2.27 brought, so no older tag is true (a manylinux2014 build
# links it unversioned and then fails to import on glibc 2.17-2.26); manylinux_2_28 is the
# baseline PyPA builds for past it (RHEL 8 and its rebuilds, Debian 10, Ubuntu 18.10 on).
# The kernel is another matter: pidfd_open and waitid(P_PIDFD) need Linux 5.4, whatever the
# glibc.
WHEEL_TAG ?= manylinux_2_28
# maturin, zig and auditwheel (pyproject's dependency group "wheel"), in a venv of their
# own; zig links against the tag's glibc, so no manylinux container is needed.
WHEEL_TOOLS := target/wheel-tools
DIST := target/dist

$(WHEEL_TOOLS)/installed: pyproject.toml
	rm -rf $(WHEEL_TOOLS)
	$(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_TOOLS)/bin/python -m pip install -q --disable-pip-version-check "pip>=25.1"
	$(WHEEL_TOOLS)/bin/python -m pip install -q --disable-pip-version-check --group wheel
	touch $@

wheel: $(WHEEL_TOOLS)/installed ## the abi3 manylinux_2_28 wheel, auditwheel-checked, in target/dist
	rm -f $(DIST)/shoal-*.whl
	PATH="$(CURDIR)/$(WHEEL_TOOLS)/bin:$$PATH" maturin build --release --locked --zig \
		--compatibility $(WHEEL_TAG) --out $(DIST)
	$(WHEEL_TOOLS)/bin/python tests/wheel_check.py $(DIST)/shoal-*.whl $(WHEEL_TAG)

sdist: $(WHEEL_TOOLS)/installed ## the source distribution (Cargo.lock included), in target/dist
	rm -f $(DIST)/shoal-*.tar.gz
	$(WHEEL_TOOLS)/bin/maturin sdist --out $(DIST)

# The sdist's build outlasts the suite's faulthandler_timeout; each test has its own timeout.
test-wheel: wheel sdist ## the wheel in a fresh venv without Rust; the sdist built in another
	SHOAL_WHEEL="$$(echo $(CURDIR)/$(DIST)/shoal-*.whl)" \
		SHOAL_SDIST="$$(echo $(CURDIR)/$(DIST)/shoal-*.tar.gz)" \
		$(PYTHON) -m pytest tests/test_wheel.py -o faulthandler_timeout=0

test: lint docs test-rust test-python test-chaos test-other-pythons test-wheel ## everything CI runs

bench: bench-queue ## the queue beside its peers (each bench-* needs ".[bench]")

bench-queue:        ## shoal.Queue beside multiprocessing's queues and faster-fifo
	$(PYTHON) benches/queue_bench.py

bench-pool:         ## shoal.Pool beside multiprocessing, ProcessPoolExecutor, joblib, mpire, pebble
	$(PYTHON) benches/pool_bench.py

bench-buffers:      ## large numpy arrays through each pool, Ray and Dask included
	$(PYTHON) benches/buffers_bench.py

bench-sync:         ## shoal's locks beside multiprocessing's
	$(PYTHON) benches/sync_bench.py

bench-startup:      ## a pool in a program that imported pandas first
	$(PYTHON) benches/startup_bench.py

bench-cluster:      ## shoal.Pool on Ray and Dask against each used directly
	$(PYTHON) benches/cluster_bench.py

bench-doors:        ## shoal.Executor, asyncio and joblib beside ProcessPoolExecutor, loky, aiomultiprocess
	$(PYTHON) benches/doors_bench.py

bench-progress:     ## what a progress bar costs on tiny tasks
	$(PYTHON) benches/progress_bench.py

bench-stats:        ## what Pool.stats()'s counting costs on tiny tasks
	$(PYTHON) benches/stats_bench.py

bench-process:      ## shoal.Process start and Manager calls beside multiprocessing's start methods
	$(PYTHON) benches/process_bench.py
