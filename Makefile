# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   create .venv if missing, install vrft-lite, train the demo preset on CPU
#   make test   same set-up, then the test suite
# Both are idempotent: the install re-runs only when setup.cfg, pyproject.toml or
# constraints.txt change. constraints.txt pins every package at the version the tests passed
# with (pip -c: it pins versions, it installs nothing by itself); after an upgrade that passed
# the tests, `make constraints` rewrites it from .venv.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vrft-lite-installed

.PHONY: demo test install constraints bench clean

demo: $(STAMP)
	$(VENV)/bin/vrft-lite train --preset demo --out runs/demo --force

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

constraints: $(STAMP)
	$(PY) tools/pin_constraints.py

bench: $(STAMP)
	$(PY) bench/rewards_speed.py
	$(PY) bench/grpo_step.py

clean:
	rm -rf build dist *.egg-info runs/demo
