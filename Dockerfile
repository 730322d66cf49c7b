# syntax=docker/dockerfile:1
# chat-service image: `docker build -t chat-service .`, then
#   docker run --rm -e CHAT_SERVICE_DATABASE_URL=... chat-service chat-service migrate
#   docker run --rm -p 8080:8080 -e CHAT_SERVICE_DATABASE_URL=... chat-service
# docker-compose.yml wires it to PostgreSQL. Both stages must use the same base image:
# the virtualenv copied from the first stage links to its Python interpreter.

# --- build: the virtualenv, exactly as poetry.lock pins it ---------------------------
FROM python:3.11-slim AS build

# Keep in step with POETRY_VERSION in the Makefile.
ARG POETRY_VERSION=2.5.1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POETRY_NO_INTERACTION=1 \
    POETRY_VIRTUALENVS_IN_PROJECT=true \
    POETRY_CACHE_DIR=/tmp/poetry-cache

# Poetry lives in its own virtualenv, which stays behind in this stage.
RUN python -m venv /opt/poetry \
    && /opt/poetry/bin/pip install "poetry==${POETRY_VERSION}"

WORKDIR /app
# The project's virtualenv, made from this image's interpreter (not Poetry's own); Poetry
# installs into it because it is the in-project .venv.
RUN python -m venv /app/.venv
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml poetry.lock ./
RUN /opt/poetry/bin/poetry install --only main --no-root --compile

# Then the project itself (pyproject's `readme` must exist to install it).
COPY README.md ./
COPY chat_service/ chat_service/
RUN /opt/poetry/bin/poetry install --only-root

# --- runtime: the virtualenv and what `migrate` and `serve` read, no build tools ------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    CHAT_SERVICE_HTTP_BIND=0.0.0.0:8080

RUN groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin chat

# The settings file, alembic.ini and the default SQLite file (data/chat.sqlite3) are
# found relative to the working directory.
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY chat_service/ chat_service/
COPY config/ config/
COPY migrations/ migrations/
COPY alembic.ini ./
# Everything above stays owned by root; only the SQLite directory is writable.
RUN mkdir /app/data && chown chat:chat /app/data

USER 10001:10001
EXPOSE 8080
# Liveness only (GET /health does not touch the database); slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["chat-service", "serve"]
