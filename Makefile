# skipdit: `make demo` and `make test` work on a fresh machine (they install first).
#
# torch is installed before the package, so that this file picks its build rather than pip resolving the
# package's `torch` requirement: on Linux x86-64 PyPI's torch is the CUDA build, several GB of nvidia-* wheels.
# The default, TORCH unset:
#   - Linux x86-64 with an NVIDIA GPU (nvidia-smi lists one): PyPI's torch==TORCH_VERSION (CUDA);
#   - Linux x86-64 without one: the CPU build torch==TORCH_VERSION+cpu, from PyTorch's CPU wheel index
#     (TORCH_CPU_INDEX) or from a local wheel pip already finds (PIP_FIND_LINKS, find-links in pip.conf).
#     With neither reachable, pip stops ("no matching distribution") instead of pulling the CUDA build;
#   - macOS and other platforms: PyPI's torch==TORCH_VERSION, which has no CUDA there.
# Choose the build with TORCH, e.g. `make install TORCH=torch==2.13.0` (PyPI's, CUDA on Linux x86-64),
# `make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"`, or reuse a
# system torch with `make install VENV_ARGS=--system-site-packages`: a torch the venv can already import
# is never replaced. Any torch >= 2.4 works.

PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PLATFORM := $(shell uname -sm)
HAS_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo yes)
ifeq ($(PLATFORM)$(HAS_GPU),Linux x86_64)
TORCH ?= torch==$(TORCH_VERSION)+cpu --extra-index-url $(TORCH_CPU_INDEX)
else
TORCH ?= torch==$(TORCH_VERSION)
endif
BIN := $(VENV)/bin

.PHONY: install demo demo-video serve test test-slow bench compare lint assets curves clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/python -c "import torch; print('installed torch', torch.__version__, 'CUDA', torch.version.cuda)"
	# the reference Inception of one test; its own requirements would pull torchvision, which it does not need
	$(BIN)/pip install --no-deps "torch-fidelity==0.4.0"
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

# The web demo (README "Web demo") on http://127.0.0.1:7860, until Ctrl-C.
serve: install
	$(BIN)/skipdit serve

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python benchmarks/skip_cache_speed.py --steps 50
	$(BIN)/python benchmarks/train_speed.py

# Skip-Cache against every peer cache on the built-in twins: the table and figures of docs/benchmarks.md
# (about 8 minutes on a 2-core CPU).
compare: install
	$(BIN)/skipdit bench --model digits/Skip-DiT --baseline-model digits/DiT --caches all --seeds 0-63 \
		--repeats 3 --out docs/figures/bench-digits --flops --no-progress

# How the built-in weights in src/skipdit/assets were made (CPU, a few hours; see docs/model-zoo.md for
# the data changes made during the moving-digits runs).
assets: install
	$(BIN)/python -m skipdit.metrics.digits --out src/skipdit/assets/digits-evaluator.safetensors
	$(BIN)/skipdit train --config configs/digits/skip-dit.yaml --no-progress
	$(BIN)/skipdit train --config configs/digits/dit.yaml --no-progress
	$(BIN)/skipdit train --config configs/digits-deep/skip-dit.yaml --no-progress
	$(BIN)/skipdit train --config configs/digits-deep/dit.yaml --no-progress
	$(BIN)/skipdit train --config configs/digits/t2i-skip.yaml --no-progress
	$(BIN)/skipdit train --config configs/moving-digits/latte-skip.yaml --no-progress
	$(BIN)/skipdit train --config configs/moving-digits/latte-t2v-skip.yaml --no-progress
	$(BIN)/skipdit train --config configs/moving-digits/latte-skip-stage2.yaml --no-progress
	$(BIN)/skipdit train --config configs/moving-digits/latte-t2v-skip-stage2.yaml --no-progress
	$(BIN)/skipdit export runs/digits-skip-dit --out src/skipdit/assets/digits-skip-dit.safetensors
	$(BIN)/skipdit export runs/digits-dit --out src/skipdit/assets/digits-dit.safetensors
	$(BIN)/skipdit export runs/digits-deep-skip-dit --storage bf16 \
		--out src/skipdit/assets/digits-deep-skip-dit.safetensors
	$(BIN)/skipdit export runs/digits-deep-dit --storage bf16 --out src/skipdit/assets/digits-deep-dit.safetensors
	$(BIN)/skipdit export runs/digits-t2i-skip --out src/skipdit/assets/digits-t2i-skip.safetensors
	$(BIN)/skipdit export runs/moving-digits-latte-skip-stage2 \
		--out src/skipdit/assets/moving-digits-latte-skip.safetensors
	$(BIN)/skipdit export runs/moving-digits-latte-t2v-skip-stage2 \
		--out src/skipdit/assets/moving-digits-latte-t2v-skip.safetensors

# Accuracy and FDD of both digits runs at every 500 steps (docs/benchmarks.md).
curves: install
	$(BIN)/python benchmarks/digits_curves.py --runs runs/digits-dit runs/digits-skip-dit

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-out samples .pytest_cache
