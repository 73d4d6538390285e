# StayCheck: `make demo` and `make test` set everything up on a machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest proto proto-check fuzz clean

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

# Longer fuzzing than `make test` does (FUZZ_SECONDS, default 600).
fuzz: $(VENV)/.dev
	$(PY) -m pip install --quiet -e '.[fuzz]' || echo "atheris unavailable: Hypothesis fallback"
	$(PY) bench/fuzz.py --seconds $(or $(FUZZ_SECONDS),600)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
