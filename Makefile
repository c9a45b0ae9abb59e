# Two commands matter: `make demo` and `make test`. Each does all of its own set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
ARTIFACTS := artifacts/manifest.json

.PHONY: demo test test-fast lint venv system-deps artifacts clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

$(ARTIFACTS): $(VENV)/.installed
	$(PY) -m reference_service.train

artifacts: $(ARTIFACTS)

demo: venv system-deps artifacts
	$(PY) scripts/demo.py

test: venv system-deps artifacts
	$(PY) -m pytest -q

test-fast: venv artifacts
	$(PY) -m pytest -q -m "not slow"

lint: venv
	$(VENV)/bin/ruff check harness reference_service scenarios tests benchmarks
	$(VENV)/bin/mypy harness

clean:
	rm -rf $(VENV) artifacts runs .pytest_cache
