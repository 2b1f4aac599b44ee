# Quick start: `make demo` runs the main job, `make test` installs what is missing and runs the suite.
# Both create .venv and install torch==2.13.0 only when torch is absent there (from pip's index, or
# from TORCH_INDEX, e.g. make test TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build).
PYTHON ?= python3
TORCH_INDEX ?=
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pyg_rbp-installed

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -e ".[test,plot]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pyg-rbp demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check pyg_rbp tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
