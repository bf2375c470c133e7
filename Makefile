# Two commands matter (see README): `make course` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: course build test test-fast clean

$(VENV)/.installed: requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-lock.txt
	touch $@

course: $(VENV)/.installed  ## the main job: release + solution versions, autograde the reference solutions
	$(PY) -m instructor all

build: $(VENV)/.installed   ## regenerate release/ and solution/ after editing source/
	$(PY) -m instructor build

test: $(VENV)/.installed    ## the whole test suite (CPU; skips only what needs CUDA, saying so)
	$(PY) -m pytest -n 2 --dist loadgroup -rs  # loadgroup: a module fixture (the class of 30) is built once

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -rs

clean:
	rm -rf submitted gradebook.db feedback
