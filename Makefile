# flaskops.stack developer loop. `make help` lists the targets.
# Every target installs what it needs, so a fresh clone on a fresh Debian 12
# machine (as root) needs nothing but `make` and `git`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
PY_VERSION = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ansible-test and the collection loader need the collection at
# ansible_collections/flaskops/stack. Unit tests import through a symlink;
# ansible-test needs a real directory (it resolves its working directory) that
# is not inside this git work tree (it would list files with git, and .build/
# is ignored), so sanity and integration run on a copy, outside the clone, of
# the tracked and untracked files.
LINK_ROOT := $(CURDIR)/.build/link
COPY_ROOT := $(or $(TMPDIR),/tmp)/flaskops-stack-$(shell printf %s '$(CURDIR)' | md5sum | cut -c1-12)
COPY_DIR := $(COPY_ROOT)/ansible_collections/flaskops/stack

export ANSIBLE_COLLECTIONS_PATH := $(LINK_ROOT)
export ANSIBLE_NOCOLOR := 1
export PY_COLORS := 0

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt constraints.txt
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  echo "Installing python3-venv (needs root and apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv with the pinned tools

.PHONY: link
link:
	@mkdir -p $(LINK_ROOT)/ansible_collections/flaskops
	@ln -sfn $(CURDIR) $(LINK_ROOT)/ansible_collections/flaskops/stack

.PHONY: copy
copy:
	@rm -rf $(COPY_ROOT) && mkdir -p $(COPY_DIR)
	@git ls-files -z --cached --others --exclude-standard \
	  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C $(COPY_DIR)

.PHONY: lint
lint: venv link ## yamllint, ansible-lint (production profile), ruff, changelog fragments, docs up to date
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint
	$(BIN)/antsibull-changelog lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=$(LINK_ROOT) $(BIN)/python scripts/gen_docs.py --check

# ansible-test downloads a get-pip bootstrap from outside the package index;
# give it the stand-in from scripts/ (see the comment there) instead.
GET_PIP_VERSION = $(shell grep -oP "pip='\K[0-9.]+" $(VENV)/lib/python*/site-packages/ansible_test/_internal/python_requirements.py)
GET_PIP_CACHE = $(HOME)/.ansible/test/cache/get_pip_$(subst .,_,$(GET_PIP_VERSION)).py

.PHONY: sanity
sanity: venv copy ## ansible-test sanity (local Python, per-test virtualenvs)
	@test -n "$(GET_PIP_VERSION)"
	@mkdir -p $(dir $(GET_PIP_CACHE)) && cp scripts/ansible-test-get-pip.py $(GET_PIP_CACHE)
	cd $(COPY_DIR) && $(BIN)/ansible-test sanity --venv --python $(PY_VERSION) --color no

.PHONY: unit
unit: venv link ## pytest: unit and property tests, filters through real templating
	PYTHONPATH=$(LINK_ROOT) $(BIN)/pytest tests/unit

.PHONY: integration
integration: venv copy ## ansible-test integration on this machine (read-only targets)
	cd $(COPY_DIR) && $(BIN)/ansible-test integration --local --python $(PY_VERSION) --color no

.PHONY: docs
docs: venv link ## Regenerate the README tables from the real model
	PYTHONPATH=$(LINK_ROOT) $(BIN)/python scripts/gen_docs.py

# Test hosts: podman systemd containers from images built with debootstrap
# (tools/testhost, no registry needed). Needs root.
TESTHOST := tools/testhost/testhost.sh
SCENARIOS := smoke default preflight reload resilience faults fleet doctor metrics
# The verifiers' LOAD RESULT and SECURITY RESULT lines, one file per scenario, printed after it.
RESULTS_DIR := $(CURDIR)/.build/results
# molecule with the pinned tools first on PATH and the scenarios under molecule/; callers add
# FLASKOPS_RESULTS_FILE=<file> before it and `test -s <scenario>` after it.
MOLECULE := PATH="$(BIN):$$PATH" MOLECULE_GLOB='molecule/*/molecule.yml' $(BIN)/molecule

.PHONY: testhost
testhost: ## Install podman and build the Debian 12 and 13 test images
	$(TESTHOST) setup
	$(TESTHOST) image debian12
	$(TESTHOST) image debian13

.PHONY: molecule
molecule: venv link installed testhost ## molecule test, every scenario, one after another (SCENARIOS="reload fleet" for some)
	@set -e; mkdir -p $(RESULTS_DIR); for scenario in $(SCENARIOS); do \
	  start=$$(date +%s); rm -f $(RESULTS_DIR)/$$scenario.txt; \
	  FLASKOPS_RESULTS_FILE=$(RESULTS_DIR)/$$scenario.txt $(MOLECULE) test -s $$scenario; \
	  if [ -f $(RESULTS_DIR)/$$scenario.txt ]; then cat $(RESULTS_DIR)/$$scenario.txt; fi; \
	  echo "SCENARIO RESULT scenario=$$scenario seconds=$$(( $$(date +%s) - start ))"; \
	done

.PHONY: fleet
fleet: ## The fleet scenario alone: three app hosts behind HAProxy, rolling changes under load
	$(MAKE) molecule SCENARIOS=fleet

# The faults scenario's reload_soak case alone, with 1000 HUPs instead of make test's 100. Its
# result, with the commit it ran on, is committed as SOAK_RESULT.
SOAK_RESULT := molecule/faults/soak-result.txt

.PHONY: soak
soak: venv link testhost ## 1000 HUPs back to back at 80% of capacity (faults scenario): molecule/faults/soak-result.txt
	@mkdir -p $(RESULTS_DIR); rm -f $(RESULTS_DIR)/soak.txt; start=$$(date +%s); \
	FLASKOPS_RESULTS_FILE=$(RESULTS_DIR)/soak.txt FLASKOPS_SOAK_HUPS=1000 PYTEST_ADDOPTS="-k reload_soak" \
	  $(MOLECULE) test -s faults; \
	{ echo "# make soak: commit $$(git rev-parse --short HEAD)$$(git diff --quiet HEAD || echo ' (with uncommitted changes)')," \
	    "$$(date -u +%Y-%m-%d), $$(nproc) CPUs, $$(( $$(date +%s) - start )) s"; \
	  cat $(RESULTS_DIR)/soak.txt; } > $(SOAK_RESULT)
	@cat $(SOAK_RESULT)

DEMO_HOST := flaskops-demo
DEMO_PORT := 8080

.PHONY: demo
demo: venv link ## Serve the demo app from a local systemd container on 127.0.0.1:8080
	$(TESTHOST) setup
	$(TESTHOST) image debian12
	@podman container exists $(DEMO_HOST) || podman run -d --name $(DEMO_HOST) --hostname $(DEMO_HOST) \
	  --privileged --cgroupns=private --systemd=always -p 127.0.0.1:$(DEMO_PORT):80 \
	  localhost/flaskops-debian12:latest /sbin/init
	@podman start $(DEMO_HOST) >/dev/null
	$(TESTHOST) pin $(DEMO_HOST)
	@timeout 120 podman exec $(DEMO_HOST) systemctl is-system-running --wait >/dev/null || true
	PATH="$(BIN):$$PATH" $(BIN)/ansible-playbook -i playbooks/demo/inventory.yml playbooks/site.yml
	@echo; echo "curl http://127.0.0.1:$(DEMO_PORT)/healthz"; curl -fsS http://127.0.0.1:$(DEMO_PORT)/healthz; echo
	@echo "curl http://127.0.0.1:$(DEMO_PORT)/"; curl -fsS http://127.0.0.1:$(DEMO_PORT)/ | head -20

.PHONY: demo-clean
demo-clean: ## Remove the demo container
	podman rm -f --ignore $(DEMO_HOST)

# The tuning benchmark (benchmarks/README.md): provisions its own podman containers with site.yml,
# measures with wrk, writes <date>.md/.json/.png. It measures and asserts nothing; bench-smoke runs
# the same harness on a tiny grid and checks what it wrote, so the harness cannot rot.
BENCH := PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/bench.py
BENCH_DIR := $(CURDIR)/.build/bench

.PHONY: bench
bench: venv link testhost ## Tuning benchmark, 1 and 2 CPUs (an hour or more): results in benchmarks/results/
	$(BENCH) --profile full --out benchmarks/results

.PHONY: bench-quick
bench-quick: venv link testhost ## Tuning benchmark subset, 2 CPUs, 64 connections, io, mixed, wait: .build/bench/quick/
	$(BENCH) --profile quick --out $(BENCH_DIR)/quick

.PHONY: bench-smoke
bench-smoke: venv link testhost ## The benchmark harness on a tiny grid, its output checked (part of make test)
	@rm -rf $(BENCH_DIR)/smoke && mkdir -p $(BENCH_DIR)/smoke
	$(BENCH) --profile smoke --out $(BENCH_DIR)/smoke --prefix flaskops-bench-smoke | tee $(BENCH_DIR)/smoke/stdout.txt
	BENCH_RESULTS_DIR=$(BENCH_DIR)/smoke $(BIN)/pytest benchmarks/tests

.PHONY: test
test: lint sanity unit integration molecule bench-smoke ## Everything CI runs

.PHONY: build
build: venv ## Build the collection tarball
	$(BIN)/ansible-galaxy collection build --force

# The built artifact, as users get it: the tarball installed into an empty collections path. The
# reload scenario runs every playbook from it (its molecule.yml sets ANSIBLE_COLLECTIONS_PATH).
INSTALLED_ROOT := $(CURDIR)/.build/installed

.PHONY: installed
installed: venv ## Build the collection tarball and install it into .build/installed
	@rm -rf $(CURDIR)/.build/dist $(INSTALLED_ROOT) && mkdir -p $(CURDIR)/.build/dist
	$(BIN)/ansible-galaxy collection build --output-path $(CURDIR)/.build/dist
	ANSIBLE_COLLECTIONS_PATH=$(INSTALLED_ROOT) $(BIN)/ansible-galaxy collection install --force --collections-path $(INSTALLED_ROOT) \
	  $(CURDIR)/.build/dist/flaskops-stack-*.tar.gz

.PHONY: clean
clean: ## Remove build output (keeps .venv)
	rm -rf .build $(COPY_ROOT) tests/output .pytest_cache .hypothesis .ruff_cache flaskops-stack-*.tar.gz
