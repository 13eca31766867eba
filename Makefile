# The two newcomer commands are `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint unit integration clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(PY) -m devtools.demo

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy --strict syncd

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .demo
