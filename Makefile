# The README's two commands: `make run` (the main job) and `make test` (lint + tests).
# Both start from a machine with only Python and pip, and are fast when nothing changed.
PYTHON ?= python3
VENV ?= .venv
# A tested CPU build by default; override e.g. `make run TORCH_SPEC="torch==2.14.1"`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
SDL := SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy
# The main job's budget: about a minute on 2 cores (100 updates). Its learning rate is lr 1e-3 with clipping at 1,
# which learns faster in so short a run than the maze entry's long-run recipe (lr 3e-4; RESULTS.md, Experiment 4).
RUN_TIMESTEPS ?= 800000

.PHONY: run test gpu-check install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in the same pip call as the project, so pip never picks a different (CUDA) build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/plastic-rl build-kernel
	$(SDL) $(BIN)/plastic-rl train --algo plastic_a2c --env PlasticMaze-v0 --policy plastic \
		-n $(RUN_TIMESTEPS) -f logs --compare-random -params learning_rate:0.001 max_grad_norm:1.0
	@echo "The pretrained plastic agent shipped with the package (200,000 episodes), on the same held-out episodes:"
	$(SDL) $(BIN)/plastic-rl evaluate --pretrained maze --no-random --out logs/pretrained_maze_evaluation.json

test: $(VENV)/.installed-dev
	$(BIN)/plastic-rl build-kernel
	$(BIN)/ruff check plastic_rl tests examples
	$(BIN)/ruff format --check plastic_rl tests examples
	$(BIN)/mypy plastic_rl
	$(SDL) $(BIN)/pytest

# On a machine with a CUDA GPU and a CUDA build of torch in the environment (e.g. `make gpu-check TORCH_SPEC=torch`
# where the index is reachable): the GPU tests, then the core and A2C benchmarks on cuda. Untested so far: no GPU has
# been lent to this project's sessions yet.
gpu-check: $(VENV)/.installed-dev
	$(BIN)/python -c "import torch, sys; print(torch.__version__, torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 1)"
	$(SDL) $(BIN)/pytest -v tests/test_gpu.py tests/test_fused.py
	$(BIN)/plastic-rl bench core --device cuda --configs 200,250,32 1001,100,8 --rules hebb neuromod retroneuromod
	$(SDL) $(BIN)/plastic-rl bench a2c --device cuda --n-envs 32 64 --policy plastic neuromod retroneuromod

clean:
	rm -rf $(VENV) logs runs
