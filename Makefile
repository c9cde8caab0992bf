# `make test` and `make demo` set up .venv themselves: torch's CPU build first, then the
# package with every extra the tests exercise.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,jax,flax,equinox,viz,metrics,dev,docs]'
	touch $@

.PHONY: test lint typecheck docs mutate demo bench anchors wheel-check
test: $(VENV)/.installed
	$(PY) -m pytest -q

# ruff's bug-catching rules and its formatter, both configured in pyproject.toml.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy on the package, configured in pyproject.toml: zero errors.
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# The site in site/: the guides in docs/ and the API reference generated from the
# docstrings; --strict (in mkdocs.yml) fails on any warning, a missing docstring included.
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build

# Mutation testing (mutmut, configured in pyproject.toml) of the core modules against their
# fast tests; slow (hours for every module on 2 cores), so not in CI. Pass a subset as
# MUTANTS='gradcam_func.ops* gradcam_func._targets*'. docs/testing.md has the last score.
mutate: $(VENV)/.installed
	$(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut results

demo: $(VENV)/.installed
	$(VENV)/bin/gradcam-func demo

bench: $(VENV)/.installed
	$(PY) benchmarks/multi_target.py

# The anchors benchmark (pytorch-grad-cam, torchcam, Captum on torchvision models) in an
# environment of its own: torchvision does not import beside the CPU torch build of .venv,
# so this one takes torch 2.14.1 with its matching torchvision (a CUDA build, several GB,
# run on the CPU). Not in CI.
ANCHORS := build/anchors-venv
$(ANCHORS)/.installed: pyproject.toml Makefile
	python3 -m venv $(ANCHORS)
	$(ANCHORS)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(ANCHORS)/bin/pip install -q grad-cam==1.5.7 torchcam==0.5.0 captum==0.9.0
	$(ANCHORS)/bin/pip install -q -e .
	touch $@

anchors: $(ANCHORS)/.installed
	cd benchmarks && ../$(ANCHORS)/bin/python anchors.py

# The sdist and wheel from the standard front end, then the wheel alone (no extras) in a
# fresh virtual environment: the core must work there and each extra must be named.
wheel-check: $(VENV)/.installed
	rm -rf dist build/wheel-venv
	$(PY) -m pip install -q build
	$(PY) -m build -q --outdir dist .
	python3 -m venv build/wheel-venv
	build/wheel-venv/bin/pip install -q torch==2.13.0
	build/wheel-venv/bin/pip install -q dist/*.whl
	build/wheel-venv/bin/python .ci/wheel_smoke.py
