# The two quickstart commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# A machine with its own CUDA build of torch can set TORCH= to keep it (with a venv made
# by hand); the default pins the build these course machines install from a local file.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test install clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(BIN)/nanotui demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
