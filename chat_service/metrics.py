"""Prometheus metrics: defined once here, updated where things happen, served at /metrics.

The module sits at the bottom of the layers, beside ``config`` and ``errors``, so the
model, the services and the routes can all update its metrics. It imports nothing
from the service.

With several workers (``http.workers`` above 1), each worker writes its values to
files in the directory named by ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode; the supervisor in ``chat_service.server`` prepares a fresh one),
and a scrape, whichever worker answers it, adds up every worker's values. Each gauge
says how its workers' values combine: ``livesum`` adds those of the workers still
running. In one process the metrics are served from the client's default registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

# prometheus-client's own switch: it picks file-backed values when it is imported in a
# process that has this variable.
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE = "chat_service"
# The route label of a request that matched no route (404, 405): never the raw path,
# which anyone can vary without end.
UNMATCHED_ROUTE = "unmatched"
# An API answers in milliseconds: finer buckets at the low end than the client's default.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# No `_created` series beside each counter: they double the series, and the
# multiprocess mode has none, so the output is the same with one worker or several.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route template (`unmatched` for none), method and status.",
    ["route", "method", "status"],
    namespace=NAMESPACE,
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival in the application to its response "
    "(a live stream: to the start of the stream), by route template and method.",
    ["route", "method"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
DB_POOL_CHECKED_OUT = Gauge(
    "db_pool_checked_out",
    "Database connections in use, by pool (`async`; on SQLite also `sync`).",
    ["pool"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "db_pool_size",
    "Connections a database pool keeps open (database.pool_size), by pool.",
    ["pool"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "db_pool_max_connections",
    "Most connections a database pool opens at once (pool_size + max_overflow): "
    "requests wait for a connection when checked_out reaches it.",
    ["pool"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
LIVE_CONNECTIONS = Gauge(
    "live_connections",
    "Open live streams, by transport (`sse`, `websocket`).",
    ["transport"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
MESSAGES_CREATED = Counter(
    "messages_created",
    "Messages posted and committed (REST and WebSocket).",
    namespace=NAMESPACE,
)
RATE_LIMITED = Counter(
    "rate_limited",
    "Requests and WebSocket frames refused by a rate limit (429), by route class "
    "(`sessions`, `messages`, `reads`, `writes`).",
    ["route_class"],
    namespace=NAMESPACE,
)
# Requests with an Idempotency-Key answered with the stored answer of an earlier one.
IDEMPOTENT_REPLAYS = Counter(
    "idempotent_replays",
    "Requests answered by replaying the stored answer to an earlier request with the "
    "same Idempotency-Key, by route template.",
    ["route"],
    namespace=NAMESPACE,
)

for _transport in ("sse", "websocket"):
    LIVE_CONNECTIONS.labels(transport=_transport)


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics in the format ``accept`` asks for (Prometheus text by default).

    Returns the body and its content type.
    """
    encoder, content_type = choose_encoder(accept)
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if not directory:
        return encoder(REGISTRY), content_type
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return encoder(registry), content_type
