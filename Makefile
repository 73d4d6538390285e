# StayCheck: `make demo` and `make test` set everything up on a machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest proto proto-check fuzz bench bench-quick load profile clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.base
	$(BIN)/staycheck demo

test: $(VENV)/.dev lint typecheck pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
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

pytest: $(VENV)/.dev
	$(BIN)/pytest -q

proto: $(VENV)/.dev
	$(PY) protos/generate.py

proto-check: $(VENV)/.dev
	$(PY) protos/generate.py --check

# Benchmarks (not part of `make test`): h2load drives the load when it can be installed
# (Debian nghttp2-client), else a Python load generator; pyinstrument and py-spy profile.
$(VENV)/.bench: $(VENV)/.base
	command -v h2load >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nghttp2-client; } || echo "h2load unavailable: the bench uses its Python load generator"
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.bench
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: $(VENV)/.bench
	$(PY) -m bench.run --quick $(BENCH_ARGS)

# 50 clients for 60 s against a real server with 10 000 areas; fails on any error.
load: $(VENV)/.base
	$(PY) -m bench.load $(LOAD_ARGS)

profile: $(VENV)/.bench
	$(PY) -m bench.profile $(PROFILE_ARGS)

# Longer fuzzing than `make test` does (FUZZ_SECONDS, default 600).
fuzz: $(VENV)/.dev
	$(PY) -m pip install --quiet -e '.[fuzz]' || echo "atheris unavailable: Hypothesis fallback"
	$(PY) -m bench.fuzz --seconds $(or $(FUZZ_SECONDS),600)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
