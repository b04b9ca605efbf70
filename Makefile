# `make train`, `make sample` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: train test test-fast typecheck sample clean

$(VENV)/.installed-%: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(if $(filter test,$*),requirements-test.txt,requirements.txt)
	touch $@

train: $(VENV)/.installed-train
	$(PY) -m lm_jax.train --config=configs/char_tf.py

sample: $(VENV)/.installed-train
	$(PY) -m lm_jax.sample --workdir=runs/char_tf --prompt="ROMEO:"

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 tests

# The quick subset for the edit-test loop: every test not marked slow.
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 -m "not slow" tests

# The static type check over lm_jax/ (CI runs it too).
typecheck: $(VENV)/.installed-test
	$(PY) -m mypy

clean:
	rm -rf $(VENV) runs
