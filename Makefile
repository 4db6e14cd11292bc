# One command for the main job, one for the tests; both set up .venv on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test lint bench

$(VENV)/.installed: pyproject.toml
	@echo "First use: setting up $(VENV) (about 2 minutes; later calls reuse it)."
	python3 -m venv $(VENV)
	@echo "Installing PyTorch 2.13, CPU build (about 750 MB once installed)..."
	$(PYTHON) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	@echo "Installing gvt with its dependencies (transformers, diffusers, datasets, peft, evaluate, accelerate) and its dev extra..."
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@
	@echo "$(VENV) is ready."

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/gvt demo

test: install
	$(PYTHON) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests benchmarks conversion_scripts recipes

bench: install
	$(PYTHON) benchmarks/bench_tokenizer.py
