# StayCheck: `make demo` and `make test` set everything up on a machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest hsm-tools proto proto-check fuzz bench bench-quick load profile clean

# The package installs as `staycheck.*` from several top-level folders (pyproject.toml,
# ADR 8), so the editable install is setuptools' "strict" mode: a tree of links under
# build/ that mypy and import-linter can walk. A new module needs new links: the install
# is redone when any package file changes.
PKG_FILES := $(wildcard protos/staycheck/*.py protos/staycheck/v1/*.py geo/*.py trust/*.py \
	client/*.py server/*.py cli/*.py cli/data/*)
EDITABLE := --config-settings editable_mode=strict

$(VENV)/.venv:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.base: pyproject.toml $(PKG_FILES) | $(VENV)/.venv
	$(PY) -m pip install --quiet $(EDITABLE) -e '.[server,qr]' > $(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; exit 1; }
	$(PY) -c "import staycheck.server, staycheck.cli.main"
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install --quiet $(EDITABLE) -e '.[dev]' > $(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; exit 1; }
	$(PY) -c "import importlinter, staycheck.server"
	touch $@

# The base install's dependencies as wheels, for tests/packaging: it installs the built
# wheel into a fresh venv from here, without reaching the package index during the test.
$(VENV)/.wheelhouse: pyproject.toml | $(VENV)/.venv
	rm -rf $(VENV)/wheelhouse
	$(PY) -m pip wheel --quiet --wheel-dir $(VENV)/wheelhouse . > $(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; exit 1; }
	touch $@

demo: $(VENV)/.base
	$(BIN)/staycheck demo

test: $(VENV)/.dev lint typecheck pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/buf lint
	@tag=$$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null); \
	if [ -n "$$tag" ]; then \
		echo "buf breaking against $$tag"; \
		$(BIN)/buf breaking --against ".git#tag=$$tag,subdir=protos"; \
	else \
		echo "buf breaking: no release tag (v*) in this clone; skipped"; \
	fi

typecheck: $(VENV)/.dev
	$(BIN)/mypy

pytest: $(VENV)/.dev $(VENV)/.wheelhouse hsm-tools
	$(BIN)/pytest -q

# tests/hsm sign on a throwaway SoftHSM2 token and read it back with OpenSC's pkcs11-tool
# (ADR 10): both from Debian's packages when missing (CI runs as root), as the bench installs
# h2load. Without them those tests are skipped, and fail under CI.
hsm-tools:
	@command -v softhsm2-util >/dev/null 2>&1 && command -v pkcs11-tool >/dev/null 2>&1 \
		|| { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq \
			&& apt-get install -y -qq softhsm2 opensc >/dev/null; } \
		|| echo "softhsm2/opensc unavailable: tests/hsm are skipped (and fail under CI)"

proto: $(VENV)/.dev
	$(PY) protos/generate.py

proto-check: $(VENV)/.dev
	$(PY) protos/generate.py --check

# Benchmarks (not part of `make test`): h2load drives the load when it can be installed
# (Debian nghttp2-client), else a Python load generator; pyinstrument and py-spy profile.
$(VENV)/.bench: $(VENV)/.base
	command -v h2load >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nghttp2-client; } || echo "h2load unavailable: the bench uses its Python load generator"
	$(PY) -m pip install --quiet $(EDITABLE) -e '.[bench]'
	touch $@

bench: $(VENV)/.bench hsm-tools
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: $(VENV)/.bench hsm-tools
	$(PY) -m bench.run --quick $(BENCH_ARGS)

# 50 clients for 60 s against a real server with 10 000 areas; fails on any error.
load: $(VENV)/.base
	$(PY) -m bench.load $(LOAD_ARGS)

profile: $(VENV)/.bench
	$(PY) -m bench.profile $(PROFILE_ARGS)

# Longer fuzzing than `make test` does (FUZZ_SECONDS, default 600).
fuzz: $(VENV)/.dev
	$(PY) -m pip install --quiet $(EDITABLE) -e '.[fuzz]' || echo "atheris unavailable: Hypothesis fallback"
	$(PY) -m bench.fuzz --seconds $(or $(FUZZ_SECONDS),600)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
