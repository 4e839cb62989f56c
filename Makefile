# The two commands the README names:
#   make demo   run the showcase on an embedded default (emulated API server, own redis-server)
#   make test   lint, type-check, CRD freshness, then the whole test suite
# Both build their own virtualenv (.venv) and Node packages, so a fresh
# machine with Python 3.11+, Node 20 and kubectl needs nothing else.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test lint demo venv node clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $@

node: tests/interop/node_modules/.installed
tests/interop/node_modules/.installed: tests/interop/package.json tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund
	touch $@

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy operator/requeue
	$(BIN)/requeue crds --check

test: venv node lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/requeue demo

clean:
	rm -rf $(VENV) tests/interop/node_modules .pytest_cache .mypy_cache .ruff_cache
