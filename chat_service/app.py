"""The application factory: wiring only."""

from __future__ import annotations

from quart import Quart
from quart_schema import Info, PydanticDumpOptions, QuartSchema

from chat_service import __version__, routes
from chat_service.config import Settings
from chat_service.model import Database
from chat_service.routes.auth import SECURITY_SCHEMES
from chat_service.routes.openapi import OpenAPIProvider
from chat_service.routes.state import EXTENSION_KEY, AppState
from chat_service.services.cursors import CursorCodec
from chat_service.services.jwt_tokens import JwtVerifier

DESCRIPTION = """\
A customer-support chat backend. Customers open chat sessions and post messages;
the support side answers. Every error is an RFC 9457 `application/problem+json`
document.
"""


def create_app(settings: Settings) -> Quart:
    """Build the application from ``settings``; the database opens when serving starts."""
    app = Quart("chat_service")
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
    app.extensions[EXTENSION_KEY] = AppState(settings=settings, db=db, cursors=cursors, jwt=jwt)
    routes.register(app)

    @app.after_serving
    async def close_resources() -> None:
        await jwt.aclose()
        await db.dispose()

    return app
