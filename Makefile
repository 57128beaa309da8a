# matteflow: every target creates the virtual environment itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast check bench clean

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

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --diff .
	$(VENV)/bin/mypy

# Benchmarks print ratios against a baseline measured in the same run (the machine is shared).
# BENCH_ARGS=--quick gives a smoke test of a minute or two.
bench: install
	$(PY) bench/pacing_bench.py $(BENCH_ARGS)

clean:
	rm -rf output samples .pytest_cache .mypy_cache .ruff_cache
