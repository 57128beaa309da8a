# matteflow: every target creates the virtual environment itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast test-hardening check bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[local,onnx,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m flows.demo

test: install
	$(PY) -m pytest -m "not live" -q

# Bad input, faults, kill -9 and secret scans (tests/hardening, ~2-3 min on 2 cores).
test-hardening: install
	$(PY) -m pytest tests/hardening -q

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --diff .
	$(VENV)/bin/mypy

# Benchmarks print ratios against a baseline measured in the same run (the machine is shared).
# BENCH_ARGS=--quick gives a smoke test of each.
bench: install
	$(PY) bench/pacing_bench.py $(BENCH_ARGS)
	$(PY) -m bench.engine_bench $(BENCH_ARGS)

clean:
	rm -rf output samples .pytest_cache .mypy_cache .ruff_cache
