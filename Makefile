# One command per task; CI (.ci/run) calls `make test`. Every target installs what it needs and
# checks first what it cannot install (tools/prereqs.py: one line naming what is missing, why).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
JOBS ?= 2
APT_PACKAGES := g++ cmake ninja-build libgtest-dev valgrind tmux clang libclang-rt-14-dev clang-format redis-server iproute2
DEMO_APT := g++ cmake ninja-build

# XSHM_LONG=1 make test: the long reliability campaign (about an hour) instead of the CI scale.
ifeq ($(XSHM_LONG),1)
export XSHM_CRASH_ROUNDS ?= 20000
export XSHM_FUZZ_SECONDS ?= 900
export XSHM_STRESS_ROUNDS ?= 1000000
export XSHM_MANY_WRITERS_PUBLISHES ?= 50000
export XSHM_LEAK_ITERATIONS ?= 1000000
export XSHM_PY_CRASH_ROUNDS ?= 2000
export XSHM_PY_STREAM_CRASH_ROUNDS ?= 2000
endif
TEXT_LIB := rust/target/release/libxshm_text.a
TEXT_CDYLIB := $(CURDIR)/rust/target/release/libxshm_text.so
CMAKE_TEXT := -DXSHM_TEXT_LIBRARY=$(CURDIR)/$(TEXT_LIB)

.PHONY: help setup demo readme test test-cpp test-rust test-spec-reader test-python lint format wheel-check fuzz bench bench-peers benchmarks bench-smoke clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# .base: what building and running the package needs (all the demo needs); .deps: the tools.
$(VENV)/.base: pyproject.toml rust/pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" "maturin>=1.7,<2" numpy rich
	touch $@

$(VENV)/.deps: $(VENV)/.base tests/requirements.txt
	$(PIP) install -q ruff mypy typing_extensions cibuildwheel -r tests/requirements.txt
	touch $@

# Each piece of the set-up is a stamp that depends on its sources, so a narrow target
# (test-python, lint, ...) rebuilds only what changed since the last run.
STAMPS := build/stamps
RUST_SOURCES := $(shell find rust -path rust/target -prune -o -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.py' -o -name '*.pyi' -o -name '*.h' -o -name Cargo.lock \) -print)
CPP_SOURCES := $(shell find cpp cmake -type f) CMakeLists.txt
PY_SOURCES := $(shell find python -type f -not -name '_version.py' -not -path '*/__pycache__/*') pyproject.toml

PREREQS := Makefile tools/prereqs.py rust/Cargo.toml rust/Cargo.lock

# The prerequisites, checked up front (apt installs what it can; Rust and Go are named, with the
# version needed): the demo's (a compiler, CMake, Ninja, Rust for the xshm-text module), the
# whole set-up's (the test-only packages, Rust for the crate's tests), make test's (Go).
$(STAMPS)/prereqs-demo: $(PREREQS)
	@mkdir -p $(STAMPS)
	@$(PY) tools/prereqs.py demo --apt "$(DEMO_APT)"
	@touch $@

$(STAMPS)/apt: $(PREREQS)
	@mkdir -p $(STAMPS)
	@$(PY) tools/prereqs.py setup --apt "$(APT_PACKAGES)"
	@touch $@

$(STAMPS)/prereqs-test: $(PREREQS) tests/spec_reader/go.mod
	@mkdir -p $(STAMPS)
	@$(PY) tools/prereqs.py test --apt "$(APT_PACKAGES)"
	@touch $@

# The xshm_text Python module (a maturin wheel): xshm imports it.
$(STAMPS)/text-py: $(STAMPS)/prereqs-demo $(VENV)/.base $(RUST_SOURCES)
	rm -rf build/wheels-text
	cd rust && ../$(VENV)/bin/maturin build -q --release -o ../build/wheels-text
	$(PIP) install -q --force-reinstall --no-deps build/wheels-text/*.whl
	touch $@

# The crate's C ABI library (static and shared), for the C++ tests and the Python ABI tests.
$(STAMPS)/text: $(STAMPS)/apt $(STAMPS)/text-py $(RUST_SOURCES)
	cd rust && cargo build -q --release -p xshm-text
	touch $@

# xshm itself (--no-deps: .base holds numpy and rich, text-py installs xshm-text), so that it
# and the Rust module can build side by side; package: both, installed.
$(STAMPS)/xshm: $(STAMPS)/prereqs-demo $(VENV)/.base $(CPP_SOURCES) $(PY_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps .
	touch $@

$(STAMPS)/package: $(STAMPS)/xshm $(STAMPS)/text-py
	touch $@

# The demo's C++ consumer alone (no tests): a Release build of one example.
$(STAMPS)/demo-cpp: $(STAMPS)/prereqs-demo $(CPP_SOURCES)
	cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DXSHM_BUILD_TESTS=OFF >/dev/null
	cmake --build build/demo -j $(JOBS) --target xshm_consumer
	touch $@

$(STAMPS)/cpp: $(STAMPS)/text $(CPP_SOURCES) $(shell find benchmarks/cpp tests/cross_language -type f)
	cmake -S . -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_TEXT) >/dev/null
	cmake --build build/cpp -j $(JOBS)
	touch $@

$(STAMPS)/bench-peers: $(VENV)/.deps benchmarks/requirements.txt
	@mkdir -p $(STAMPS)
	$(PIP) install -q -r benchmarks/requirements.txt
	touch $@

bench-peers: $(STAMPS)/bench-peers  ## the benchmarks' peers and matplotlib, pinned (benchmarks/requirements.txt)

setup: $(VENV)/.deps $(STAMPS)/package $(STAMPS)/text $(STAMPS)/cpp  ## everything make test builds: apt packages, .venv with the tools, Rust crate, xshm, C++ tests

demo:  ## the main job: a live producer and consumers (Python and C++) for a few seconds; builds only what it runs
	@$(MAKE) --no-print-directory -j $(JOBS) --output-sync=target $(STAMPS)/package $(STAMPS)/demo-cpp
	cd build && XSHM_CPP_CONSUMER=$(CURDIR)/build/demo/xshm_consumer ../$(VENV)/bin/xshm demo

test-cpp: $(STAMPS)/cpp  ## C++ tests: plain (+ valgrind, crash campaign), ASan+UBSan and TSan builds
	cd build/cpp && ctest --output-on-failure -j $(JOBS) -E CrashCampaign
	set -o pipefail; cd build/cpp && ctest --output-on-failure -V -R CrashCampaign | grep -E "crash campaign|tests passed|Failed"
	for s in address thread; do \
	  cmake -S . -B build/cpp-$$s -G Ninja -DCMAKE_BUILD_TYPE=Debug -DXSHM_SANITIZE=$$s $(CMAKE_TEXT) >/dev/null && \
	  cmake --build build/cpp-$$s -j $(JOBS) && \
	  (cd build/cpp-$$s && ctest --output-on-failure -j $(JOBS)) || exit 1; \
	done

# The loom model runs the xshm crate's own protocol code on loom's atomics (--cfg loom), in a
# target directory of its own so that the normal build is not rebuilt.
LOOM_CARGO := RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 cargo

test-rust: $(STAMPS)/apt  ## cargo test (unit, golden vectors, properties, header drift, loom model), clippy, fmt, package
	cd rust && cargo test -q --workspace --exclude xshm-text-py
	cd rust && $(LOOM_CARGO) test -q --release -p xshm --test loom
	cd rust && cargo clippy -q --all-targets -- -D warnings
	cd rust && $(LOOM_CARGO) clippy -q -p xshm --lib --test loom -- -D warnings
	cd rust && cargo fmt --check
	cd rust && cargo package -q -p xshm -p xshm-text --allow-dirty
	@# Miri cannot be installed here (rustup downloads no components); the closest check of the
	@# crate's unsafe code is its tests under the nightly compiler's AddressSanitizer.
	cd rust && RUSTFLAGS=-Zsanitizer=address RUSTDOCFLAGS=-Zsanitizer=address CARGO_TARGET_DIR=target/asan \
	  cargo +nightly test -q -p xshm --target $$(rustc -vV | sed -n 's/^host: //p') --lib --tests

test-python: $(VENV)/.deps $(STAMPS)/package $(STAMPS)/text $(STAMPS)/bench-peers  ## pytest against the installed packages (run outside the source tree)
	cd build && XSHM_TEXT_CDYLIB=$(TEXT_CDYLIB) ../$(VPY) -m pytest -c ../pyproject.toml --rootdir .. \
	  ../tests ../benchmarks --benchmark-disable -p no:cacheprovider -rP

test-spec-reader:  ## the Go reader written from docs/LAYOUT.md alone: gofmt, go vet, go test over the golden vectors
	cd tests/spec_reader && test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	cd tests/spec_reader && GOTOOLCHAIN=local CGO_ENABLED=0 go vet ./... && GOTOOLCHAIN=local CGO_ENABLED=0 go test -count=1 ./...

lint: $(VENV)/.deps $(STAMPS)/package  ## ruff, stubs vs the compiled modules, mypy, actionlint, cibuildwheel build list
	$(VENV)/bin/ruff check python tests benchmarks rust/python tools
	$(VENV)/bin/ruff format --check python tests benchmarks rust/python tools
	clang-format --dry-run -Werror $(CPP_FORMAT_FILES)
	cd build && ../$(VPY) -m mypy.stubtest xshm xshm_text --allowlist ../python/stubtest-allowlist.txt
	cd build && ../$(VENV)/bin/mypy --strict -p xshm -p xshm_text
	test -x build/bin/actionlint || GOBIN=$(CURDIR)/build/bin go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
	build/bin/actionlint
	cd build && ../$(VENV)/bin/cibuildwheel --print-build-identifiers .. && \
	  ../$(VENV)/bin/cibuildwheel --print-build-identifiers ../rust && \
	  CIBW_PLATFORM=macos ../$(VENV)/bin/cibuildwheel --print-build-identifiers ../rust

CPP_FORMAT_FILES = $(shell git ls-files 'cpp/*.hpp' 'cpp/*.cpp' 'benchmarks/cpp/*.cpp' 'tests/*.cpp' 'tests/**/*.cpp')

format: $(STAMPS)/apt $(VENV)/.deps  ## rewrite in the house style: ruff format, cargo fmt, clang-format (.clang-format)
	$(VENV)/bin/ruff format -q python tests benchmarks rust/python tools
	$(VENV)/bin/ruff check -q --fix python tests benchmarks rust/python tools
	cd rust && cargo fmt
	clang-format -i $(CPP_FORMAT_FILES)

fuzz: setup  ## libFuzzer and atheris targets, XSHM_FUZZ_SECONDS (60) each
	bash .ci/fuzz

wheel-check: setup  ## wheels with pip wheel + auditwheel, tested from a fresh venv; sdist
	bash .ci/wheel-check

test: $(STAMPS)/prereqs-test test-cpp test-rust test-spec-reader test-python lint bench-smoke fuzz wheel-check  ## every test: C++ (3 builds), Rust, the Go spec reader, Python, lint, benchmark smoke, fuzz, wheels
	@echo "make test: all passed"

readme: $(STAMPS)/package $(STAMPS)/bench-peers  ## rerun the README's console transcripts in a private /dev/shm and rewrite them
	$(VPY) tools/readme_transcripts.py

bench: setup  ## micro-benchmarks against multiprocessing.shared_memory + Lock
	cd build && ../$(VPY) -m pytest -c ../pyproject.toml --rootdir .. ../benchmarks -p no:cacheprovider \
	  --benchmark-only --benchmark-columns=median,iqr,ops --benchmark-sort=name \
	  --benchmark-json=micro-raw.json
	$(VPY) benchmarks/summarize.py build/micro-raw.json benchmarks/results/micro.json --docs docs/BENCHMARKS.md

benchmarks: setup $(STAMPS)/bench-peers  ## cross-process benchmarks vs the peers: results, plots, docs/BENCHMARKS.md tables
	$(VPY) benchmarks/run.py --docs docs/BENCHMARKS.md

bench-smoke: setup $(STAMPS)/bench-peers  ## the cross-process benchmarks at smoke-test size (no timing assertions)
	$(VPY) benchmarks/run.py --quick --out build/bench-quick

clean:  ## remove build products
	rm -rf build dist wheelhouse rust/target
