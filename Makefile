# Two commands: `make run` serves on http://127.0.0.1:8080, `make test` runs every check.
# Only Python 3.11+ is needed: Poetry is installed into .tools/, dependencies into .venv/.

PYTHON ?= python3
POETRY_VERSION := 2.5.1
POETRY := .tools/poetry/bin/poetry
VENV := .venv
BIN := $(VENV)/bin

export POETRY_VIRTUALENVS_IN_PROJECT := true
export POETRY_NO_INTERACTION := 1
# The PostgreSQL server the tests create their scratch databases on.
export CHAT_SERVICE_TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

.PHONY: help install run migrate serve test lint typecheck importlint pytest format clean \
	bench bench-quick bench-deps bench-fanout bench-flood

help:
	@echo "make run    install, migrate the SQLite database, serve on http://127.0.0.1:8080"
	@echo "make test   ruff, mypy, import-linter and pytest on SQLite and PostgreSQL"
	@echo "make bench  the full benchmark matrix (about 30 min); writes docs/benchmarks.md"
	@echo "make bench-quick  a reduced benchmark run (about a minute) into bench/results/"
	@echo "make bench-fanout  live fan-out, 1 to 1 000 subscribers (about 25 min); writes docs/benchmarks.md"
	@echo "make bench-flood  one customer floods, others post (about 5 min); writes docs/benchmarks.md"

$(POETRY):
	$(PYTHON) -m venv .tools/poetry
	.tools/poetry/bin/pip install --quiet "poetry==$(POETRY_VERSION)"

$(VENV)/.installed: pyproject.toml poetry.lock | $(POETRY)
	$(POETRY) sync
	touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/chat-service migrate

serve: install
	$(BIN)/chat-service serve

run: migrate serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

importlint: install
	$(BIN)/lint-imports

pytest: install
	$(BIN)/pytest

test: lint typecheck importlint pytest

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The load generator is wrk from the distribution's packages; the harness's own Python
# packages are Poetry's optional "bench" group.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

bench-deps: install
	command -v wrk >/dev/null 2>&1 || $(SUDO) apt-get install -y wrk \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }
	$(POETRY) install --with bench --no-root

bench: bench-deps
	$(BIN)/python -m bench --publish

bench-quick: bench-deps
	$(BIN)/python -m bench --quick

bench-fanout: bench-deps
	$(BIN)/python -m bench.fanout --publish

bench-flood: bench-deps
	$(BIN)/python -m bench.flood --publish

clean:
	rm -rf .tools $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/results
