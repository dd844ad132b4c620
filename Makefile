# One command for each job; each makes its own virtual environment.
# torch==2.13.0 is installed before the package so pip never pulls a CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: venv data demo test lint format bench clean

$(BIN)/python:
	@echo "vaelab: creating the virtual environment $(VENV)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "vaelab: installing torch 2.13.0 (CPU build) into $(VENV); a few minutes the first time"
	$(BIN)/pip install -q torch==2.13.0
	@echo "vaelab: installing vaelab and its dependencies (editable, with dev tools)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Debian's Fashion-MNIST package when root; vaelab itself downloads or falls back otherwise.
data:
	@bash scripts/get_data.sh >/dev/null

demo: venv
	@echo "vaelab: getting Fashion-MNIST, then training the reference VAE into $(RUN)"
	$(BIN)/vaelab train --dataset $$(bash scripts/get_data.sh) --out $(RUN) --overwrite
	$(BIN)/vaelab evaluate $(RUN) --samples 100 --limit 1000
	@echo "samples and reconstructions: $(RUN)/samples.png $(RUN)/reconstructions.png"

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: venv
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

test: venv lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
