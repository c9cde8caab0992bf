# `make test` and `make demo` set up .venv themselves: torch's CPU build first, then the
# package with every extra the tests exercise.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,jax,flax,viz,metrics]'
	touch $@

.PHONY: test demo bench
test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(VENV)/bin/gradcam-func demo

bench: $(VENV)/.installed
	$(PY) benchmarks/multi_target.py
