# skipdit: `make demo` and `make test` work on a fresh machine (they install first).
#
# torch is installed before the package so that pip never pulls a CUDA build by accident. Pick the
# build with TORCH, e.g. `make install TORCH="torch==2.5.1 --index-url <your CUDA wheel index>"`, or
# reuse a system torch with `make install VENV_ARGS=--system-site-packages`. Any torch >= 2.4 works.

PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test test-slow bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: install
	$(BIN)/skipdit sample --model DiT-S/4-skip --random-weights --image-size 32 --seeds 0-7 \
		--steps 50 --cache skip:N=2,b=2 --compare-uncached --out demo-out --no-progress

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python benchmarks/skip_cache_speed.py --steps 50

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-out samples .pytest_cache
