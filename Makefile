# Two commands do all the set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
WORKDIR ?= runs/shapes
CONFIG ?= configs/shapes.py
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test lint venv clean

$(STAMP): requirements-lock.txt setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found); set PYTHON=..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-lock.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m mirrorgan_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check mirrorgan_jax configs tests launch experiments

test: $(STAMP)
	$(VENV)/bin/ruff check mirrorgan_jax configs tests launch experiments
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

clean:
	rm -rf $(VENV) runs .pytest_cache
