# One virtual environment, installed from pyproject.toml; every target creates or reuses it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= ../shared/data/mnist
JOBS ?= 2

.PHONY: install train test docs bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test,docs]"
	touch $@

install: $(VENV)/.installed

## The main job: train a CNN on MNIST and report its test accuracy.
train: install
	$(VENV)/bin/funcnet train mnist --model cnn --data-dir $(DATA_DIR) --out runs/mnist

## Lint, the whole test suite, then a strict build of the docs site.
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(JOBS)
	$(PY) -m mkdocs build --strict --site-dir $(VENV)/site

docs: install
	$(PY) -m mkdocs serve

bench: install
	$(PY) -m pip install -e ".[bench]"
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) site runs .pytest_cache
