# simcompress: two-command quick start (`make demo`, `make test`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.install-stamp

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# torch first: `pip install torch==2.13.0` takes the local CPU build; any other
# torch requirement would pull a several-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[firmware,cluster,dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/simcompress demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
