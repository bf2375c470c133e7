# Two commands matter (see README): `make course` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# `=`, not `:=`: pip is asked only when the install runs, not on every make
FIND_LINKS = $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null) $(PIP_FIND_LINKS)

.PHONY: course build test test-fast clean

# uv installs the lock in about 45 s where pip takes about 140 (2 cores); pip stays the fallback. uv reads no
# pip configuration, so pip's find-links (where a machine keeps its torch wheels) is passed on. The lock is
# complete (a freeze), hence --no-deps: see its header for the one dependency left out on purpose.
$(VENV)/.installed: requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9 && $(PY) -m uv pip install --quiet --python $(PY) --compile-bytecode --no-deps \
	    $(foreach d,$(sort $(FIND_LINKS)),--find-links $(d)) -r requirements-lock.txt \
	  || $(PY) -m pip install --quiet --no-deps -r requirements-lock.txt
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
