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

.PHONY: install demo demo-video test test-slow bench lint assets curves clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[dev]"
	touch $@

# The built-in digits/Skip-DiT: 20 labelled digits with Skip-Cache (demo-out/grid.png) and without it
# (demo-out/uncached/grid.png), then the measured speed-up and the PSNR between the two.
demo: install
	$(BIN)/skipdit sample --seeds 0-19 --cache skip:N=2 --compare-uncached --out demo-out --no-progress

# The built-in moving-digits/Latte-T2V-skip: "the digit 7 moves up" with Skip-Cache and without it,
# as mp4 and gif per seed plus demo-video/grid.gif, then the measured speed-up and the PSNR.
demo-video: install
	$(BIN)/skipdit sample --task t2v --prompt "the digit 7 moves up" --seeds 0-7 --cache t2v:N=2 \
		--compare-uncached --out demo-video --no-progress

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python benchmarks/skip_cache_speed.py --steps 50
	$(BIN)/python benchmarks/train_speed.py

# How the built-in weights in src/skipdit/assets were made (CPU, about an hour; see docs/model-zoo.md).
assets: install
	$(BIN)/python -m skipdit.metrics.digits --out src/skipdit/assets/digits-evaluator.safetensors
	$(BIN)/skipdit train --config configs/digits/skip-dit.yaml --no-progress
	$(BIN)/skipdit train --config configs/digits/dit.yaml --no-progress
	$(BIN)/skipdit export runs/digits-skip-dit --out src/skipdit/assets/digits-skip-dit.safetensors
	$(BIN)/skipdit export runs/digits-dit --out src/skipdit/assets/digits-dit.safetensors

# Accuracy and FDD of both digits runs at every 500 steps (docs/benchmarks.md).
curves: install
	$(BIN)/python benchmarks/digits_curves.py --runs runs/digits-dit runs/digits-skip-dit

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-out samples .pytest_cache
