# Real ROOT for the ROOT-file cross-check tests (tests/showers/test_root_crosscheck.py).
# CERN's pip distribution (`pip install ROOT`: package root 0.1a12, ROOT 6.40, one 248 MB
# cp311 wheel, marked alpha) lives in its own venv; the tests in the main venv drive it
# through subprocesses and skip, saying why, when the interpreter is missing.
ROOTVENV := .venv-root
$(ROOTVENV)/.install-stamp: mk/root.mk
	test -x $(ROOTVENV)/bin/python || $(PYTHON) -m venv $(ROOTVENV)
	$(ROOTVENV)/bin/python -m pip install -q "ROOT==0.1a12" "numpy>=1.26"
	$(ROOTVENV)/bin/python -W ignore -c "import ROOT; print('ROOT', ROOT.gROOT.GetVersion(), 'in $(ROOTVENV)')"
	touch $@

.PHONY: root-env test-root
root-env: $(ROOTVENV)/.install-stamp

test-root: install root-env
	$(PY) -m pytest -q tests/showers/test_root_crosscheck.py

TEST_DEPS += root-env

# `make clean` removes the ROOT venv too
.PHONY: clean-root
clean-root:
	rm -rf $(ROOTVENV)
clean: clean-root
