# Two commands matter: `make demo` and `make test`. Each does all of its own set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
ARTIFACTS := artifacts/manifest.json

.PHONY: demo test test-fast test-stress lint venv system-deps artifacts fastsvc-artifacts \
	bytecode clean bench-quick

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

# The FastAPI example service's models (examples/fastapi_service); its tests train their own.
FASTSVC_ARTIFACTS := artifacts/fastapi_service/manifest.json
$(FASTSVC_ARTIFACTS): $(VENV)/.installed
	$(PY) -m examples.fastapi_service.train --out artifacts/fastapi_service

fastsvc-artifacts: $(FASTSVC_ARTIFACTS)

# Every harness run starts Python processes (orchestrator, load driver, service) that
# import the project; where PYTHONDONTWRITEBYTECODE is set (CI images, this machine)
# nothing is cached and each start compiles ~70 modules again: ~0.3 CPU-s per process.
# compileall writes the caches anyway (up-to-date files are skipped: ~0.1 s).
bytecode: venv
	$(PY) -m compileall -q harness reference_service scenarios examples > /dev/null

demo: venv system-deps artifacts bytecode
	$(PY) scripts/demo.py

# Two pytest workers (pytest-xdist), one test file each at a time (module fixtures such as
# the FastAPI services stay in one process): most of the suite waits on real services and
# real runs, so two files at once halve the wall time on 2 cores. Every test also passes on
# a machine busy with other work (make test-stress), which two workers make it.
TEST_WORKERS ?= 2
test: venv system-deps artifacts bytecode
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: venv artifacts bytecode
	$(PY) -m pytest -q -m "not slow"

# The suite on a busy machine, as CI often is: one CPU-burning process per core runs as
# long as pytest does. Arguments go to pytest: make test-stress ARGS="tests/test_x.py -k y"
test-stress: venv system-deps artifacts bytecode
	bash scripts/stress-test-suite.sh $(ARGS)

# Reduced validation benchmarks (a few minutes; the full ones: benchmarks/README.md)
bench-quick: venv system-deps artifacts
	$(PY) benchmarks/accuracy.py --quick
	$(PY) benchmarks/fault_matrix.py --rounds 1 --duration 5 --warmup 1 --cases clean_aa,store_fixed,store_errors,inference_cpu,serialize_bloat
	$(PY) benchmarks/compare_calibration_names.py --runs 2 --duration 8
	$(PY) benchmarks/compare_calibration.py --out runs/bench-quick-compare --rounds 1 --duration 4 --warmup 1
	$(PY) benchmarks/loadgen_efficiency.py --duration 5 --rounds 1

lint: venv
	$(VENV)/bin/ruff check harness reference_service scenarios examples tests benchmarks
	$(VENV)/bin/mypy harness

clean:
	rm -rf $(VENV) artifacts runs .pytest_cache
