# The quickstart commands: `make demo`, `make test-quick` (the set-up check: the engine and
# TUI tests, minutes) and `make test` (everything, end-to-end processes included; what CI
# runs). All create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# A machine with its own CUDA build of torch can set TORCH= to keep it (with a venv made
# by hand); the default pins the build these course machines install from a local file.
TORCH ?= torch==2.13.0
# PyPI's torch 2.13.0 is a CUDA 13.0 build: it needs driver R580+ and has no Volta (sm_70)
# kernels. On a CUDA-12 driver (R525-R575) or a V100, install from PyTorch's own index:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
# (docs/gpu.md has the driver -> wheel table; `nanotui doctor` names the one to use).
TORCH_INDEX ?=
BIN := $(VENV)/bin

.PHONY: demo test test-quick install clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH)")
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(BIN)/nanotui demo

test: install
	$(BIN)/python -m pytest -q

# no real processes (e2e) and nothing marked slow: a check that leaves a shared box usable
test-quick: install
	$(BIN)/python -m pytest -q -m "not e2e and not slow" --ignore=tests/e2e

clean:
	rm -rf $(VENV) .pytest_cache
