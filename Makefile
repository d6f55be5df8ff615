# The two commands a newcomer needs:  make demo  and  make test
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test lint type docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(STAMP)  ## set up on the embedded default and run the main job
	$(VENV)/bin/swiftmail demo

test: $(STAMP)  ## run the whole test suite against real PostgreSQL and Redis
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

type: $(STAMP)
	$(VENV)/bin/mypy swiftmail_core

docs: $(STAMP)
	$(VENV)/bin/python -m swiftmail_core.cli.reference cli > docs/cli.md
	$(VENV)/bin/python -m swiftmail_core.cli.reference settings > docs/configuration.md

clean:
	rm -rf $(VENV) build *.egg-info
