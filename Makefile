# simcompress: two-command quick start (`make demo`, `make test`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.install-stamp

.PHONY: install demo test lint bench clean qkeras-env test-qkeras

# Extra things `make test` needs (system tools, side environments): each mk/*.mk
# appends its target to TEST_DEPS, so areas add theirs without editing this rule.
TEST_DEPS :=
-include mk/*.mk

install: $(STAMP)

# torch first: `pip install torch==2.13.0` takes the local CPU build; any other
# torch requirement would pull a several-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[firmware,cluster,deploy,dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/simcompress demo

test: install qkeras-env $(TEST_DEPS) lint
	$(PY) -m pytest -q

# ruff (hist's rule families, pyproject.toml) over the code, tests and benches; mypy over simcompress/
lint: install
	$(VENV)/bin/ruff check simcompress tests bench
	$(VENV)/bin/mypy

# QKeras interop: TensorFlow 2.14.1 needs numpy<2, so it lives in its own venv
# (about 30 s and 330 MB of wheels; see pyproject's `qkeras` extra). The interop
# tests in the main venv drive it through subprocesses.
QKVENV := .venv-qkeras
$(QKVENV)/.install-stamp: Makefile
	test -x $(QKVENV)/bin/python || $(PYTHON) -m venv $(QKVENV)
	$(QKVENV)/bin/python -m pip install -q "tensorflow-cpu==2.14.1" "qkeras==0.9.0" "hls4ml==1.3.0" "tensorflow-model-optimization==0.7.5" pyparsing
	touch $@

qkeras-env: $(QKVENV)/.install-stamp

test-qkeras: install qkeras-env
	$(PY) -m pytest -q tests/interop

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(QKVENV) build *.egg-info
