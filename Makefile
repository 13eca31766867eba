# The two newcomer commands are `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup tools demo test lint unit integration clean

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

# helm, promtool/prometheus, the Pushgateway and hadolint, which the deploy,
# service and alert tests use (cached; see devtools/install_tools.sh).
tools:
	bash devtools/install_tools.sh

test: lint tools
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .demo
