# floe: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both set up what they need on a fresh machine (a virtualenv, and the test control plane built from source).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
SETUP_STAMP := $(VENV)/.floe-setup
PYTEST_ARGS ?=

.PHONY: setup browser test unit demo dev-cluster dev-down lint crds cluster bench clean help

help:
	@echo "make demo   - start a local control plane + operator, fine-tune a small T5, deploy it as a UDF"
	@echo "              (KEEP=1: leave that cluster running afterwards)"
	@echo "make dev-cluster - start a local control plane + operator and leave it running; make dev-down stops it"
	@echo "make test   - run every test (unit, integration on a real control plane, e2e)"
	@echo "make setup  - create $(VENV) with floe's packages (contract, operator, trainer) and the test tools"
	@echo "make crds   - regenerate helm/floe/crds and the files generated from the API models' KINDS"
	@echo "make lint   - ruff, CRD freshness, Dockerfile lint"
	@echo "make bench  - run the CPU benchmarks (GPU ones: see bench/README.md)"

$(SETUP_STAMP): contract/pyproject.toml operator/pyproject.toml trainer-image/pyproject.toml requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip uv
	$(UV) pip install --python $(PY) --quiet -e ./contract -e ./operator[cli] -e ./trainer-image -r requirements-test.txt
	touch $@

setup: $(SETUP_STAMP) browser

# Headless Chromium and its driver from Debian, for the notebook's browser test (installed only when missing).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y --no-install-recommends chromium chromium-driver; }

cluster:
	dev/build.sh

# FLOE_TEST_KUBECONFIG=<path>: run the tests against that cluster; no local control plane is built.
# Test files run on TEST_WORKERS processes, each with its own local control plane: a file's time is mostly waiting on
# one pod's single-threaded start-up, so one process leaves a core idle.
TEST_WORKERS ?= $(if $(FLOE_TEST_KUBECONFIG),1,2)  # an existing cluster is shared: one worker
test: setup $(if $(FLOE_TEST_KUBECONFIG),,cluster) lint
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

crds: setup
	$(PY) -m hack.sync_manifests

lint: setup
	$(VENV)/bin/ruff check contract operator trainer-image dev hack tests bench
	$(PY) -m hack.sync_manifests --check
	$(VENV)/bin/hadolint operator/Dockerfile trainer-image/Dockerfile

# FLOE_KUBECONFIG=<path>: run the demo on that cluster (floe installed) instead of a local control plane.
# KEEP=1: leave the local control plane, pod runner and operator running afterwards (make dev-down stops them).
FLOE_KUBECONFIG ?=
KEEP ?=
demo: setup $(if $(FLOE_KUBECONFIG),,cluster)
	$(PY) -m dev.demo $(if $(FLOE_KUBECONFIG),--kubeconfig $(FLOE_KUBECONFIG)) $(if $(KEEP),--keep)

# The demo's local cluster with floe running and nothing applied, left running; prints its KUBECONFIG.
dev-cluster: setup cluster
	$(PY) -m dev.cluster up

dev-down:
	$(PY) -m dev.cluster down

# CPU benchmark on the bundled sample (9 to 15 minutes on 2 cores); writes bench/results/udf_bench.json and .md.
bench: setup
	$(PY) bench/udf_bench.py --data tests/data/news_summary.csv --rows 16 --out bench/results

clean:
	[ ! -x $(PY) ] || $(PY) -m dev.cluster down
	rm -rf $(VENV) .demo

-include mk/*.mk
