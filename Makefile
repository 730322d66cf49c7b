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

.PHONY: help install run migrate serve test lint typecheck importlint pytest format clean

help:
	@echo "make run    install, migrate the SQLite database, serve on http://127.0.0.1:8080"
	@echo "make test   ruff, mypy, import-linter and pytest on SQLite and PostgreSQL"

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

clean:
	rm -rf .tools $(VENV) .mypy_cache .ruff_cache .pytest_cache
