# SPDX-License-Identifier: Apache-2.0
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Cargo.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip 'maturin>=1.16,<2'
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv with vmwatch (editable) and the test and lint tools

.PHONY: build-dev
build-dev: $(STAMP) ## Build the Rust extension into .venv (debug)
	$(BIN)/maturin develop -q

.PHONY: build-prod
build-prod: $(STAMP) ## Build the Rust extension into .venv (release: fat LTO, one codegen unit)
	$(BIN)/maturin develop -q --release

.PHONY: servers
servers: $(STAMP) ## Build (once) the pinned test servers: vcsim, etcd, kube-apiserver
	$(BIN)/vmwatch devenv build

.PHONY: format
format: $(STAMP) ## Format Python and Rust
	$(BIN)/ruff check --fix python tests benches examples
	$(BIN)/ruff format python tests benches examples
	cargo fmt

.PHONY: lint-python
lint-python: $(STAMP) ## ruff
	$(BIN)/ruff check python tests benches examples
	$(BIN)/ruff format --check python tests benches examples

.PHONY: lint-rust
lint-rust: ## cargo fmt --check and clippy
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

.PHONY: mypy
mypy: $(STAMP) ## mypy --strict on python/, and the extension's stub checked against the build
	$(BIN)/mypy python/vmwatch
	$(BIN)/mypy --strict examples/kopf-operator/example.py
	$(BIN)/python -m mypy.stubtest vmwatch._vmwatch

.PHONY: lint-docker
lint-docker: $(STAMP) ## hadolint on the Dockerfile (there is no Docker engine here to build the image)
	$(BIN)/hadolint Dockerfile

.PHONY: lint
lint: lint-python lint-rust mypy lint-docker ## All linters

.PHONY: test-rust
test-rust: ## cargo test
	cargo test -q

.PHONY: test-python
test-python: build-prod servers ## pytest, with the real servers (vcsim, kube-apiserver, etcd; built once first)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test
test: lint test-rust test-python ## The whole suite: linters, cargo test, pytest with the real servers

.PHONY: fuzz-smoke
fuzz-smoke: ## Fuzz the decoder for FUZZ_SECONDS (default 60) with cargo-fuzz on nightly
	bash fuzz/smoke.sh $(FUZZ_SECONDS)

.PHONY: benchmark
benchmark: build-prod ## Decode benchmark: vmwatch vs pyVmomi vs govmomi vs expat (writes benches/results/)
	$(BIN)/python benches/decode_bench.py

.PHONY: bench
bench: build-prod servers ## Benchmarks vs a plain pyVmomi watcher, and several vCenters (~90 min): benches/results/{startup,watch-sync,run-sync,pipeline,vcsim,vcenters}-<date>.json + PNGs
	$(BIN)/pip install -q 'matplotlib>=3.8'
	$(BIN)/python benches/startup_bench.py
	$(BIN)/python benches/watch_sync_bench.py
	$(BIN)/python benches/run_sync_bench.py
	$(BIN)/python benches/pipeline_bench.py --startup-vms 1000 2000
	$(BIN)/python benches/vcsim_bench.py
	$(BIN)/python benches/vcenters_bench.py

.PHONY: demo
demo: build-prod servers ## Build everything and run the demo on a local vcsim + kube-apiserver
	$(BIN)/vmwatch demo

.PHONY: all
all: lint test ## Lint and test

# ---- artifacts: wheels, sdist, locks --------------------------------------------------------------------
# The wheels are abi3 (one per architecture, every CPython >= 3.11) and manylinux_2_28: they link against
# glibc 2.28 through zig (ziglang from PyPI), so they install on RHEL/UBI 8 and anything newer.
DIST ?= dist
WHEEL_TARGETS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
MANYLINUX ?= manylinux_2_28
PIP_COMPILE := $(BIN)/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url

.PHONY: wheels
wheels: $(STAMP) ## abi3 manylinux_2_28 wheels for x86_64 and aarch64 (maturin + zig) and the sdist into dist/, then tests/packaging on them
	rm -f $(DIST)/vmwatch-*
	@for target in $(WHEEL_TARGETS); do \
	  if ! rustup target list --installed | grep -qx "$$target"; then \
	    echo "== rustup target add $$target"; \
	    rustup target add "$$target" || { echo "make wheels: the Rust standard library for $$target is not installed and rustup could not fetch it (to build the others: make wheels WHEEL_TARGETS=x86_64-unknown-linux-gnu)" >&2; exit 1; }; \
	  fi; \
	  echo "== wheel for $$target"; \
	  $(BIN)/maturin build --release --locked --zig --compatibility $(MANYLINUX) --target "$$target" --out $(DIST) || exit 1; \
	done
	$(BIN)/maturin sdist --out $(DIST)
	@for whl in $(DIST)/vmwatch-*.whl; do $(BIN)/auditwheel show "$$whl" || exit 1; done
	VMWATCH_DIST=$(abspath $(DIST)) $(BIN)/pytest -p no:cacheprovider -q tests/packaging

.PHONY: lock
lock: $(STAMP) ## Re-pin requirements/*.lock (exact versions + hashes) from pyproject's dependencies and requirements/build.in
	$(BIN)/pip install -q 'pip-tools==7.7.0'
	$(PIP_COMPILE) -o requirements/runtime.lock pyproject.toml
	$(PIP_COMPILE) -o requirements/build.lock requirements/build.in
	for f in requirements/runtime.lock requirements/build.lock; do \
	  grep -q '^# SPDX-License-Identifier' "$$f" || sed -i '1i # SPDX-License-Identifier: Apache-2.0' "$$f"; \
	done
