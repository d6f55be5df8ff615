# The two commands a newcomer needs:  make demo  and  make test
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
# The suites start hundreds of Python processes (CLI runs, servers, workers,
# relays): let them cache compiled bytecode (about 0.1 s a start) even where
# the environment turns that off.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-bench test-citus test-ha test-lb test-cluster test-ansible lint type docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(STAMP)  ## set up on the embedded default and run the main job
	$(VENV)/bin/swiftmail demo

# tests/contrib (the Ansible role's files, templates and real ansible-playbook
# runs, about 3.5 minutes) runs with the role's machines in make test-ansible.
test: $(STAMP)  ## run the test suite against real PostgreSQL and Redis (the role's tests: make test-ansible)
	$(VENV)/bin/python -m pytest --ignore=tests/contrib

test-bench: $(STAMP)  ## the benchmarks' runs on a PostgreSQL of their own (--server private, about a minute)
	SWIFTMAIL_TEST_PRIVATE_SERVER=1 $(VENV)/bin/python -m pytest -p no:cacheprovider tests/bench/test_private_server.py

# Citus source, patch and build script ship beside the repository in shared/.
CITUS_VENDOR ?= $(firstword $(wildcard ../shared/vendor/citus ../../shared/vendor/citus) ../shared/vendor/citus)

test-citus: $(STAMP)  ## the Citus suite: a real coordinator and two workers on this machine
	@if [ ! -f /usr/lib/postgresql/15/lib/citus.so ]; then bash $(CITUS_VENDOR)/build.sh; fi
	SWIFTMAIL_TEST_CITUS=1 $(VENV)/bin/python -m pytest -p no:cacheprovider tests/citus

test-ha: $(STAMP)  ## the failover suite: Redis Sentinel, a PostgreSQL standby, Patroni with etcd, on loopback
	SWIFTMAIL_TEST_HA=1 timeout 600 $(VENV)/bin/python -m pytest -p no:cacheprovider -s tests/ha

test-lb: $(STAMP)  ## the API behind HAProxy: rolling restarts with a steady client (minutes)
	SWIFTMAIL_TEST_LB=1 timeout 900 $(VENV)/bin/python -m pytest -p no:cacheprovider tests/lb

CLUSTER_MEASURES ?= /tmp/swiftmail-cluster-measures.jsonl

test-cluster: $(STAMP)  ## hosts as network namespaces (root): cut cables, a campaign and the API under kills; last line JSON
	rm -f $(CLUSTER_MEASURES)
	SWIFTMAIL_TEST_CLUSTER=1 SWIFTMAIL_MEASURE_FILE=$(CLUSTER_MEASURES) timeout -k 120 1500 \
	  $(VENV)/bin/python -m pytest -p no:cacheprovider -s tests/cluster; \
	  status=$$?; $(VENV)/bin/python -m tests.cluster.summary $(CLUSTER_MEASURES) $$status; \
	  exit $$status

test-ansible: $(STAMP)  ## the role's files and plays (tests/contrib), then the role on nspawn Debian 12 machines, two scenarios at once: split (install, HAProxy, firewall, upgrade, backup, restore) and HA (Patroni, Sentinel, the primary's machine lost) (root); last line JSON
	$(VENV)/bin/python -m pytest -p no:cacheprovider -q tests/contrib
	SWA_TIMEOUT=1500 bash contrib/ansible/tests/all.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

type: $(STAMP)
	$(VENV)/bin/mypy swiftmail_core

docs: $(STAMP)
	$(VENV)/bin/python -m swiftmail_core.cli.reference cli > docs/cli.md
	$(VENV)/bin/python -m swiftmail_core.cli.reference settings > docs/configuration.md

clean:
	rm -rf $(VENV) build *.egg-info
