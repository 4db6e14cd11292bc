# One command for the main job, one for the tests; both set up .venv on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/gvt demo

test: install
	$(PYTHON) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests benchmarks conversion_scripts

bench: install
	$(PYTHON) benchmarks/bench_tokenizer.py
