# Two commands on a fresh machine (each sets itself up):
#   make demo   create .venv, install hybrid-eda, run the main job on the embedded default data
#   make test   create .venv, install hybrid-eda with its test extra, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= hybrid-eda-demo
# One math thread per process on small machines (2 OpenMP threads on 2 cores made anemoi 50x slower).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export NUMBA_NUM_THREADS ?= 1

.PHONY: demo test install clean

$(BIN)/hybrid-eda: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	@touch $@

install: $(BIN)/hybrid-eda

demo: install
	$(BIN)/hybrid-eda demo --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
