# The README's two commands: `make demo` and `make test`.
# Both set the machine up first (system peers when missing, uv, the workspace
# venv from uv.lock); see tools/setup.sh.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# uv needs the system CA bundle to reach the package index.
ifeq ($(origin SSL_CERT_FILE),undefined)
export UV_NATIVE_TLS ?= 1
endif

# uv from PATH, or the private copy tools/setup.sh installs when pip is refused.
UV = $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.uv-bootstrap/bin/uv)
PYTEST_ARGS ?= -n auto

# Hand-written code only: mypy's config (root pyproject.toml) excludes *_pb2*.
MYPY_TARGETS = $(wildcard packages/*/src) $(wildcard packages/*/tests) tests tools conftest.py

.PHONY: help setup demo test lint typecheck protos-check pytest pants-test pants-package

help:
	@echo "make demo   set up, then run the main job (tools/demo.py)"
	@echo "make test   set up, then ruff, import contracts, mypy --strict and pytest -n auto over everything"

setup:
	tools/setup.sh all

demo: setup
	$(UV) run --locked python tools/demo.py

test: setup lint typecheck protos-check
	$(UV) run --locked pytest $(PYTEST_ARGS)

lint:
	$(UV) run --locked ruff check
	$(UV) run --locked ruff format --check
	$(UV) run --locked lint-imports --no-cache  # .importlinter: the README's may-import table

typecheck:
	$(UV) run --locked mypy $(MYPY_TARGETS)

protos-check:
	@if [[ -f tools/gen_protos.py ]]; then \
	  $(UV) run --locked python tools/gen_protos.py --check; \
	else \
	  echo "tools/gen_protos.py not present yet: generated code not checked"; \
	fi

# The Pants build (see README): slower, hermetic.
pants-test:
	./pants test ::

pants-package:
	./pants package ::
