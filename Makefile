# tokenworks: `make reproduce` regenerates every result and figure; `make test` checks them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: reproduce test lab figures site models clean venv

venv: $(VENV)/.installed

# The environment: a .venv from the same pins as environment.yml (requirements.txt).
$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Every notebook through papermill with its reproduction parameters, then figures and README;
# up-to-date runs are skipped. Options of reproduce/run.py go in ARGS: make reproduce ARGS="-j 2".
ARGS ?=
reproduce: venv
	$(PY) reproduce/run.py $(ARGS)

# kvpress's own tests, from the sdist of the version we pin (never committed; cached in build/).
# --no-binary kvpress, not :all:, which would also build pip's build backend from source.
KVPRESS := $(shell sed -n 's/^kvpress==//p' requirements-nodeps.txt)
KVPRESS_TESTS := build/kvpress-tests
$(KVPRESS_TESTS)/tests: requirements-nodeps.txt $(VENV)/.installed
	$(if $(KVPRESS),,$(error no kvpress== pin in requirements-nodeps.txt))
	rm -rf build/kvpress-sdist $(KVPRESS_TESTS) && mkdir -p build/kvpress-sdist $(KVPRESS_TESTS)
	$(PY) -m pip download --quiet --no-deps --no-binary kvpress kvpress==$(KVPRESS) -d build/kvpress-sdist
	tar xzf build/kvpress-sdist/kvpress-$(KVPRESS).tar.gz -C build/kvpress-sdist
	cp -r build/kvpress-sdist/kvpress-$(KVPRESS)/tests $@

# Unit tests, Triton kernels in interpreter mode, kvpress's tests against our presses through
# the adapter tests/kvpress_suite/adapter.py (copied in as their root conftest.py), nbval on the notebooks.
test: venv $(KVPRESS_TESTS)/tests
	TRITON_INTERPRET=1 $(PY) -m pytest --durations=15 tests
	cp tests/kvpress_suite/adapter.py $(KVPRESS_TESTS)/conftest.py && printf '[pytest]\naddopts = -p no:cacheprovider\n' \
	  > $(KVPRESS_TESTS)/pytest.ini && cd $(KVPRESS_TESTS) && $(abspath $(PY)) -m pytest tests
	out=$$(mktemp -d) && TOKENWORKS_OUT=$$out TRITON_INTERPRET=1 \
	  $(PY) -m pytest --durations=10 --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  -p no:cacheprovider notebooks/

lab: venv
	$(PY) -m jupyter lab --notebook-dir=.

# Redraw figures/ and the README tables from results/ only (no computation).
figures: venv
	$(PY) reproduce/figures.py

# The site: a static HTML book of the executed full-run notebooks in build/site/html (offline;
# publish by copying that folder to a static host). tests/test_site.py checks it in Chromium.
site: venv
	$(PY) reproduce/book.py

# Retrain the model zoo (hours on a 2-core CPU; minutes on a GPU).
models: venv
	$(PY) reproduce/train_zoo.py

clean:
	rm -rf $(VENV) build *.egg-info lib/*.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
