"""The application factory: wiring only."""

from __future__ import annotations

from quart import Quart
from quart_schema import Info, PydanticDumpOptions, QuartSchema
from sqlalchemy import make_url

from chat_service import __version__, routes
from chat_service.config import Settings
from chat_service.model import Database
from chat_service.realtime import Bus, MemoryBus, PostgresBus, RedisBus
from chat_service.routes.auth import SECURITY_SCHEMES
from chat_service.routes.live import LiveWebsocket
from chat_service.routes.openapi import OpenAPIProvider
from chat_service.routes.state import EXTENSION_KEY, AppState, app_state
from chat_service.services.cursors import CursorCodec
from chat_service.services.idempotency import Idempotency
from chat_service.services.jwt_tokens import JwtVerifier
from chat_service.services.live import LiveHub
from chat_service.services.rate_limits import RateLimiter

DESCRIPTION = """\
A customer-support chat backend. Customers open chat sessions and post messages;
the support side answers. Every error is an RFC 9457 `application/problem+json`
document.
"""


def create_app(settings: Settings) -> Quart:
    """Build the application from ``settings``; the database opens when serving starts."""
    app = Quart("chat_service")
    app.websocket_class = LiveWebsocket
    app.config.update(
        MAX_CONTENT_LENGTH=settings.http.max_body_bytes,
        BODY_TIMEOUT=settings.http.body_timeout_seconds,
    )
    QuartSchema(
        app,
        info=Info(title="chat-service", version=__version__, description=DESCRIPTION),
        swagger_ui_path="/docs",
        redoc_ui_path="/redocs",
        scalar_ui_path=None,
        openapi_provider_class=OpenAPIProvider,
        security_schemes=SECURITY_SCHEMES,  # type: ignore[arg-type]
        # JSON mode: timestamps as RFC 3339 strings rather than the JSON provider's HTTP dates.
        pydantic_dump_options=PydanticDumpOptions(mode="json"),  # type: ignore[typeddict-unknown-key]
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db_settings = settings.database
    db = Database(
        db_settings.url.get_secret_value(),
        pool_size=db_settings.pool_size,
        max_overflow=db_settings.max_overflow,
        pool_timeout=db_settings.pool_timeout_seconds,
        sqlite_busy_timeout_ms=db_settings.sqlite_busy_timeout_ms,
        statement_timeout_seconds=db_settings.statement_timeout_seconds,
        echo=db_settings.echo,
    )
    cursors = CursorCodec(settings.security.cursor_secret.get_secret_value())
    auth = settings.auth
    jwt = JwtVerifier(
        algorithms=auth.jwt_algorithms,
        secret=auth.jwt_secret.get_secret_value(),
        jwks_url=auth.jwt_jwks_url,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
        tenant_claim=auth.jwt_tenant_claim,
        role_claim=auth.jwt_role_claim,
        subject_claim=auth.jwt_subject_claim,
        leeway_seconds=auth.jwt_leeway_seconds,
        jwks_cache_seconds=auth.jwks_cache_seconds,
        jwks_min_refresh_seconds=auth.jwks_min_refresh_seconds,
    )
    live = live_hub(settings, db)
    limiter = RateLimiter(settings.rate_limits) if settings.rate_limits.enabled else None
    keys = Idempotency(
        db,
        ttl_seconds=settings.idempotency.ttl_seconds,
        lease_seconds=settings.idempotency.lease_seconds,
    )
    app.extensions[EXTENSION_KEY] = AppState(
        settings=settings,
        db=db,
        cursors=cursors,
        jwt=jwt,
        live=live,
        rate_limits=limiter,
        idempotency=keys,
    )
    routes.register(app)

    @app.before_serving
    async def start_live() -> None:
        await live.start()

    @app.after_serving
    async def close_resources() -> None:
        await live.close()
        if limiter is not None:
            await limiter.close()
        await jwt.aclose()
        await db.dispose()

    return app


def live_hub(settings: Settings, db: Database) -> LiveHub:
    """The live hub with the event bus that ``settings.live`` chooses."""
    live = settings.live
    bus: Bus
    if settings.live_bus == "postgres":
        url = make_url(settings.database.url.get_secret_value()).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        bus = PostgresBus(dsn, live.channel, reconnect_max_seconds=live.reconnect_max_seconds)
    elif settings.live_bus == "redis":
        bus = RedisBus(
            live.redis_url.get_secret_value(),
            live.channel,
            reconnect_max_seconds=live.reconnect_max_seconds,
        )
    else:
        bus = MemoryBus()
    return LiveHub(
        db,
        bus,
        queue_events=live.queue_events,
        heartbeat_seconds=live.heartbeat_seconds,
        resync_seconds=live.resync_seconds,
        tenant_replay_seconds=live.tenant_replay_seconds,
        typing_interval_seconds=live.typing_interval_seconds,
    )


def begin_shutdown(app: Quart) -> None:
    """Close the live connections (WebSocket 1001) as the server starts stopping."""
    app_state(app).live.shutdown()
