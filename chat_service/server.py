"""Serving the application with Hypercorn: one process, or a supervisor and workers.

Settings are loaded once by the command line and handed to each worker process
(pickled), so a worker never reads the configuration again. With several workers the
supervisor also gives them a fresh directory for their metrics (prometheus-client's
multiprocess mode), which it removes when they have stopped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from typing import Any

import attrs
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app
from prometheus_client import multiprocess
from typed_settings.types import Secret

from chat_service import logs, metrics
from chat_service.app import begin_shutdown, create_app
from chat_service.config import Settings

log = logging.getLogger(__name__)


def hypercorn_config(settings: Settings) -> HypercornConfig:
    """Hypercorn's configuration, derived from ``settings.http``."""
    config = HypercornConfig()
    config.bind = [settings.http.bind]
    if settings.metrics.enabled and settings.metrics.bind:
        # The metrics' own listener; the application tells the two apart by the
        # address a request arrived on.
        config.bind.append(settings.metrics.bind)
    config.workers = settings.http.workers
    config.keep_alive_timeout = settings.http.keep_alive_seconds
    config.graceful_timeout = settings.http.graceful_timeout_seconds
    # The application writes the access log itself (chat_service.routes.access), with
    # the route template and the request id as fields of their own.
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # A WebSocket frame above the body limit closes the connection with 1009. (Idle
    # WebSockets get the application's heartbeat frames rather than Hypercorn's pings,
    # whose timer holds each closed connection open until its next tick.)
    config.websocket_max_message_size = settings.http.max_body_bytes
    return config


AppFactory = Callable[[Settings], Any]
GC_THRESHOLDS = (100_000, 50, 1_000)


# How often a worker checks that its supervisor is still there.
SUPERVISOR_CHECK_SECONDS = 0.5


def run(settings: Settings, app_factory: AppFactory = create_app) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code.

    ``app_factory`` builds the ASGI application in each worker; it must be a
    module-level function, since workers are spawned processes.
    """
    config = hypercorn_config(settings)
    sockets = config.create_sockets()
    if settings.http.workers == 1:
        _serve(settings, app_factory, config, sockets, shutdown_event=None)
        return 0
    return _supervise(settings, app_factory, config, sockets)


def _supervise(
    settings: Settings, app_factory: AppFactory, config: HypercornConfig, sockets: Sockets
) -> int:
    # A private, empty directory: values left by an earlier run (or another server)
    # must not be added to this one's. The workers inherit the variable when spawned.
    metrics_dir = tempfile.mkdtemp(prefix="chat-service-metrics-")
    os.environ[metrics.MULTIPROCESS_DIR_VARIABLE] = metrics_dir
    try:
        return _run_workers(settings, app_factory, config, sockets)
    finally:
        del os.environ[metrics.MULTIPROCESS_DIR_VARIABLE]
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_workers(
    settings: Settings, app_factory: AppFactory, config: HypercornConfig, sockets: Sockets
) -> int:
    settings = _with_shared_cursor_secret(settings)
    context = multiprocessing.get_context("spawn")
    shutdown_event = context.Event()
    workers = [
        context.Process(
            target=_worker,
            args=(settings, app_factory, config, sockets, shutdown_event),
            name=f"chat-service-worker-{index}",
        )
        for index in range(settings.http.workers)
    ]

    def stop(*_args: Any) -> None:
        shutdown_event.set()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # workers inherit this; the supervisor decides
    for worker in workers:
        worker.start()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    log.info("serving on %s with %d workers", settings.http.bind, len(workers))
    multiprocessing.connection.wait([worker.sentinel for worker in workers])
    # One worker ended (a signal, or a crash): stop the others too.
    shutdown_event.set()
    for worker in workers:
        worker.join(config.graceful_timeout + 5)
        if worker.is_alive():
            worker.terminate()
            worker.join()
    return max((abs(worker.exitcode or 0) for worker in workers), default=0)


def _with_shared_cursor_secret(settings: Settings) -> Settings:
    """Give every worker the same cursor key when none is configured.

    Without it each worker would draw its own key, and a cursor issued by one worker
    would be refused by the next. Replicas still need a configured key.
    """
    if settings.security.cursor_secret.get_secret_value():
        return settings
    security = attrs.evolve(settings.security, cursor_secret=Secret(secrets.token_urlsafe(32)))
    return attrs.evolve(settings, security=security)


def _worker(
    settings: Settings,
    app_factory: AppFactory,
    config: HypercornConfig,
    sockets: Sockets,
    shutdown_event: EventType,
) -> None:
    logs.configure(settings.log)
    try:
        _serve(settings, app_factory, config, sockets, shutdown_event)
    finally:
        # Its live gauges (connections, pool) stop counting in the other workers' scrapes.
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _serve(
    settings: Settings,
    app_factory: AppFactory,
    config: HypercornConfig,
    sockets: Sockets,
    shutdown_event: EventType | None,
) -> None:
    app = app_factory(settings)
    # Everything built so far lives as long as the process: keep it out of the
    # collector's way, so a full collection under load scans only per-request objects.
    gc.collect()
    gc.freeze()
    # Live streams keep many objects per connection alive for long: with the default
    # thresholds, full collections of a thousand connections took a quarter of a
    # second every few seconds, stalling every delivery. Collect young objects less
    # often and the old generation rarely (cycles are still collected).
    gc.set_threshold(*GC_THRESHOLDS)
    runner = _event_loop_runner()
    runner(_serve_async(app, config, sockets, shutdown_event))


async def _serve_async(
    app: Any, config: HypercornConfig, sockets: Sockets, shutdown_event: EventType | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if shutdown_event is not None:
        loop.run_in_executor(None, _wait_then_set, shutdown_event, loop, stop)
    log.info("serving on %s", ", ".join(config.bind))

    async def stopping() -> None:
        await stop.wait()
        # Live streams would otherwise hold the graceful wait to its end.
        begin_shutdown(app)

    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),
        config,
        sockets=sockets,
        shutdown_trigger=stopping,
    )


def _wait_then_set(
    shutdown_event: EventType, loop: asyncio.AbstractEventLoop, stop: asyncio.Event
) -> None:
    # A supervisor killed outright (SIGKILL, the OOM killer) never sets the event: its
    # workers stop when it is gone rather than serve on as orphans.
    supervisor = multiprocessing.parent_process()
    while not shutdown_event.wait(SUPERVISOR_CHECK_SECONDS):
        if supervisor is not None and not supervisor.is_alive():
            log.warning("the supervisor process is gone: stopping")
            break
    loop.call_soon_threadsafe(stop.set)


def _event_loop_runner() -> Callable[[Any], None]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
