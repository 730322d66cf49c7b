"""Typed settings, loaded once at start-up and handed down.

Precedence, lowest first: class defaults < ``config/config.toml`` < files listed in
``CHAT_SERVICE_SETTINGS`` < ``CHAT_SERVICE_<SECTION>_<KEY>`` environment variables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import typed_settings as ts
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError
from typed_settings.types import Secret

APPNAME = "chat-service"
DEFAULT_CONFIG_FILE = Path("config/config.toml")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value}")


def _database_url(_instance: object, _attribute: object, value: Secret[str]) -> None:
    try:
        url = make_url(value.get_secret_value())
    except ArgumentError:
        raise ValueError("database.url is not a database URL") from None
    if url.drivername not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
        raise ValueError(
            "database.url must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
            f"not {url.drivername}://"
        )
    if url.drivername.startswith("sqlite") and url.database in (None, "", ":memory:"):
        # The service opens several connections; each would get its own empty database.
        raise ValueError("database.url must name a SQLite file: sqlite+aiosqlite:///path")


@attrs.frozen
class DatabaseSettings:
    """Where the data lives and how connections are pooled."""

    url: Secret[str] = ts.secret(
        default=Secret("sqlite+aiosqlite:///data/chat.sqlite3"),
        help="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
        validator=_database_url,
    )
    pool_size: int = ts.option(default=10, validator=_positive)
    max_overflow: int = ts.option(default=10, validator=attrs.validators.ge(0))
    pool_timeout_seconds: float = ts.option(default=10.0, validator=_positive)
    sqlite_busy_timeout_ms: int = ts.option(default=10_000, validator=attrs.validators.ge(0))
    statement_timeout_seconds: float = ts.option(
        default=10.0,
        validator=_positive,
        help="PostgreSQL: a statement running longer is cancelled and its request answers "
        "503 (migrations are not limited).",
    )
    echo: bool = ts.option(default=False, help="Log every SQL statement (never in production).")


@attrs.frozen
class HttpSettings:
    """The HTTP server (Hypercorn) and request limits."""

    bind: str = ts.option(default="127.0.0.1:8080")
    workers: int = ts.option(default=1, validator=_positive)
    max_body_bytes: int = ts.option(default=64 * 1024, validator=_positive)
    body_timeout_seconds: float = ts.option(default=30.0, validator=_positive)
    keep_alive_seconds: float = ts.option(default=5.0, validator=_positive)
    graceful_timeout_seconds: float = ts.option(default=10.0, validator=_positive)


@attrs.frozen
class LimitSettings:
    """Bounds on what one request may ask for or send."""

    message_chars: int = ts.option(default=10_000, validator=_positive)
    page_size_default: int = ts.option(default=50, validator=_positive)
    page_size_max: int = ts.option(default=200, validator=_positive)
    session_inline_messages: int = ts.option(default=1000, validator=_positive)


@attrs.frozen
class SessionSettings:
    """Behaviour of chat sessions."""

    default_message: str = ts.option(default="Hello, how may I help you?")
    edit_window_seconds: float = ts.option(
        default=900.0,
        validator=attrs.validators.ge(0),
        help="How long after posting an author may edit a message.",
    )


@attrs.frozen
class SecuritySettings:
    """Keys. Never put real values in the committed TOML."""

    cursor_secret: Secret[str] = ts.secret(
        default=Secret(""),
        help="Signs pagination cursors. Empty: a random key per process "
        "(cursors then do not survive a restart or cross replicas).",
    )


JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
# Values that are plainly not secrets: refused where a real secret is required.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "secret", "placeholder", "example", "password", "test"}
)
MIN_SECRET_CHARS = 32


def _algorithms(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    unknown = set(value) - set(JWT_ALGORITHMS)
    if unknown:
        raise ValueError(
            f"auth.jwt_algorithms: {', '.join(sorted(unknown))} not supported "
            f"(choose from {', '.join(JWT_ALGORITHMS)})"
        )


@attrs.frozen
class AuthSettings:
    """Who may call the API, and how identity providers' JWTs are checked."""

    required: bool = ts.option(
        default=False,
        help="false: callers without a credential act on the default tenant with the "
        "original, open contract (local use only). true: every call needs a credential.",
    )
    jwt_algorithms: tuple[str, ...] = ts.option(
        default=(),
        help="JWT algorithms accepted for agents and admins: HS256, RS256, ES256 (none: no JWTs).",
        validator=_algorithms,
    )
    jwt_secret: Secret[str] = ts.secret(
        default=Secret(""), help="HS256 shared secret (at least 32 characters)."
    )
    jwt_jwks_url: str = ts.option(default="", help="JWKS URL for RS256/ES256 keys.")
    jwt_issuer: str = ts.option(default="", help="Required `iss`; empty: not checked.")
    jwt_audience: str = ts.option(
        default="", help="Required `aud` (needed for RS256/ES256); empty: not checked (HS256)."
    )
    jwt_tenant_claim: str = ts.option(
        default="tenant", help="Claim naming the tenant (id or slug)."
    )
    jwt_role_claim: str = ts.option(default="role", help="Claim holding `agent` or `admin`.")
    jwt_subject_claim: str = ts.option(default="sub", help="Claim identifying the agent.")
    jwt_leeway_seconds: float = ts.option(default=30.0, validator=attrs.validators.ge(0))
    jwks_cache_seconds: float = ts.option(default=300.0, validator=_positive)
    jwks_min_refresh_seconds: float = ts.option(
        default=10.0,
        validator=attrs.validators.ge(0),
        help="An unknown key id refetches the JWKS at most this often.",
    )


def _redis_url(_instance: object, _attribute: object, value: Secret[str]) -> None:
    url = value.get_secret_value()
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a redis_url must start with redis://, rediss:// or unix://")


@attrs.frozen
class LiveSettings:
    """Live delivery: the event bus between processes, and each live connection."""

    bus: Literal["auto", "memory", "postgres", "redis"] = ts.option(
        default="auto",
        help="How processes tell each other of new events. auto: postgres (LISTEN/NOTIFY) "
        "on PostgreSQL, memory (this process only) on SQLite; redis: Redis pub/sub.",
    )
    redis_url: Secret[str] = ts.secret(
        default=Secret(""), help="redis://host:port/db, for bus = redis.", validator=_redis_url
    )
    channel: str = ts.option(
        default="chat_service_events",
        help="The NOTIFY channel or Redis channel the processes share.",
        validator=attrs.validators.matches_re(r"[a-z_][a-z0-9_]{0,62}"),
    )
    heartbeat_seconds: float = ts.option(
        default=15.0,
        validator=_positive,
        help="An idle live connection gets an SSE comment or a WebSocket heartbeat frame "
        "at least this often.",
    )
    queue_events: int = ts.option(
        default=1000,
        validator=_positive,
        help="Events one connection may have waiting; beyond that it is closed and resumes.",
    )
    direct_writes: bool = ts.option(
        default=True,
        help="Write an event straight to each connection waiting for one, rather than "
        "through the ASGI send (SSE and WebSockets over HTTP/1.1, under Hypercorn). "
        "false: every event goes through ASGI (slower).",
    )
    websocket_compression: bool = ts.option(
        default=False,
        help="Agree to per-message deflate when a live WebSocket's client asks for it "
        "(browsers do). Off: chat events are small, and deflate costs each connection "
        "about 200 KB of memory and each delivery several times the CPU.",
    )
    ticket_seconds: float = ts.option(
        default=30.0, validator=_positive, help="How long a live ticket may be used."
    )
    typing_interval_seconds: int = ts.option(
        default=2,
        validator=_positive,
        help="At most one typing event per client and session this often.",
    )
    resync_seconds: float = ts.option(
        default=30.0,
        validator=_positive,
        help="Each process re-reads its live sessions this often, in case a notification "
        "was lost (a process that died between COMMIT and publishing).",
    )
    tenant_replay_seconds: float = ts.option(
        default=30.0,
        validator=attrs.validators.ge(0),
        help="A resumed tenant stream replays sessions changed this long before its "
        "position too: a write committed late may carry an earlier time.",
    )
    reconnect_max_seconds: float = ts.option(
        default=10.0, validator=_positive, help="Longest wait between bus reconnections."
    )


def _rate_limits(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    from limits import parse_many  # imported here: the package takes a while to import

    if value.strip():
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"rate_limits.{attribute.name} must read like '60/minute' or "
                f"'5/second;100/hour' (empty: no limit), not {value!r}"
            ) from None


def _rate_limit_option(default: str, what: str) -> str:
    return ts.option(
        default=default,
        validator=_rate_limits,
        help=f"Most {what} per caller, like '60/minute' or '5/second;100/hour'; empty: none.",
    )


@attrs.frozen
class RateLimitSettings:
    """Requests per caller: a customer token, an agent, an API key, or else an address."""

    enabled: bool = ts.option(default=True)
    storage: Literal["memory", "redis"] = ts.option(
        default="memory",
        help="memory: each worker counts alone; redis: every worker and replica together.",
    )
    redis_url: Secret[str] = ts.secret(
        default=Secret(""), help="redis://host:port/db, for storage = redis.", validator=_redis_url
    )
    strategy: Literal["fixed-window", "moving-window", "sliding-window-counter"] = ts.option(
        default="sliding-window-counter"
    )
    sessions: str = _rate_limit_option("30/minute", "sessions opened (POST /sessions)")
    messages: str = _rate_limit_option(
        "10/second;120/minute", "messages posted (REST or WebSocket)"
    )
    reads: str = _rate_limit_option("20/second;600/minute", "reads (GET, live streams opened)")
    writes: str = _rate_limit_option("10/second;300/minute", "other writes")
    refusal_delay_seconds: float = ts.option(
        default=1.0,
        validator=attrs.validators.ge(0),
        help="How long a refused request waits before its 429 (half to all of it, at most "
        "its Retry-After): a caller flooding over many connections is slowed to about one "
        "request per connection this often instead of taking the worker's time from "
        "everyone else. 0: at once.",
    )


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6) as a pair.

    Raises:
        ValueError: not a host and a port from 1 to 65535.
    """
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def _metrics_bind(_instance: object, _attribute: object, value: str) -> None:
    if value:
        try:
            host_port(value)
        except ValueError:
            raise ValueError(
                f"metrics.bind must read like 127.0.0.1:9100 or [::1]:9100, not {value!r}"
            ) from None


@attrs.frozen
class MetricsSettings:
    """The Prometheus metrics at ``GET /metrics``."""

    enabled: bool = ts.option(default=True, help="Serve the metrics at GET /metrics.")
    token: Secret[str] = ts.secret(
        default=Secret(""),
        help="When set, /metrics needs 'Authorization: Bearer <token>'. Empty: open.",
    )
    bind: str = ts.option(
        default="",
        help="A second address (host:port) to listen on, the only one where /metrics "
        "answers (404 on http.bind); it serves nothing else. Empty: /metrics on http.bind.",
        validator=_metrics_bind,
    )

    @property
    def listener(self) -> tuple[str, int] | None:
        """``bind`` as (host, port); None when the metrics share ``http.bind``."""
        return host_port(self.bind) if self.bind else None


@attrs.frozen
class IdempotencySettings:
    """``Idempotency-Key`` on creates: how long an answer is kept for retries."""

    ttl_seconds: float = ts.option(
        default=86_400.0,
        validator=_positive,
        help="How long a key's answer is replayed; after that the key may be used anew.",
    )
    lease_seconds: float = ts.option(
        default=60.0,
        validator=_positive,
        help="How long a request holds its key: a retry within it answers 409; after it, "
        "a request that died before writing anything is run again.",
    )


@attrs.frozen
class LogSettings:
    """Logging output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = ts.option(
        default="INFO", converter=str.upper
    )
    format: Literal["json", "text"] = ts.option(default="text")
    access_log: bool = ts.option(
        default=True, help="One line per request (and per WebSocket) at INFO."
    )


@attrs.frozen
class Settings:
    """All settings of the service."""

    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    limits: LimitSettings = LimitSettings()
    sessions: SessionSettings = SessionSettings()
    security: SecuritySettings = SecuritySettings()
    auth: AuthSettings = AuthSettings()
    live: LiveSettings = LiveSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()

    def __attrs_post_init__(self) -> None:
        if self.limits.page_size_default > self.limits.page_size_max:
            raise ValueError("limits.page_size_default must not exceed limits.page_size_max")
        algorithms = set(self.auth.jwt_algorithms)
        if "HS256" in algorithms:
            _check_secret("auth.jwt_secret", self.auth.jwt_secret)
        if algorithms & {"RS256", "ES256"}:
            if not self.auth.jwt_jwks_url:
                raise ValueError("auth.jwt_jwks_url is required for RS256 and ES256")
            # An identity provider signs tokens for many applications: only those
            # meant for this service may be accepted.
            if not self.auth.jwt_audience:
                raise ValueError("auth.jwt_audience is required for RS256 and ES256")
        if self.live.bus == "redis" and not self.live.redis_url.get_secret_value():
            raise ValueError("live.redis_url is required for live.bus = redis")
        if (
            self.rate_limits.storage == "redis"
            and not self.rate_limits.redis_url.get_secret_value()
        ):
            raise ValueError("rate_limits.redis_url is required for rate_limits.storage = redis")
        if self.idempotency.ttl_seconds < self.idempotency.lease_seconds:
            # A key must not expire under a request still holding it.
            raise ValueError("idempotency.ttl_seconds must not be below lease_seconds")
        if self.live.bus == "postgres" and self.database_dialect != "postgresql":
            raise ValueError("live.bus = postgres needs a PostgreSQL database.url")
        if self.metrics.bind and self.metrics.bind == self.http.bind:
            raise ValueError("metrics.bind must differ from http.bind (or be empty)")
        if self.auth.required:
            # Production mode: cursors must be signed with a real, shared key.
            _check_secret("security.cursor_secret", self.security.cursor_secret)

    @property
    def database_dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return make_url(self.database.url.get_secret_value()).get_backend_name()

    @property
    def live_bus(self) -> Literal["memory", "postgres", "redis"]:
        """The event bus in use (``auto`` resolved by the database)."""
        if self.live.bus != "auto":
            return self.live.bus
        return "postgres" if self.database_dialect == "postgresql" else "memory"


def _check_secret(name: str, value: Secret[str]) -> None:
    secret = value.get_secret_value()
    if not secret:
        raise ValueError(f"{name} must be set")
    if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < MIN_SECRET_CHARS:
        raise ValueError(
            f"{name} looks like a placeholder: use at least {MIN_SECRET_CHARS} random characters"
        )


class SettingsError(ValueError):
    """The configuration cannot be used; the message names each bad value."""


def load(config_files: Iterable[Path] = (DEFAULT_CONFIG_FILE,)) -> Settings:
    """Load the settings from the config files and the environment.

    Raises:
        SettingsError: a value is missing, malformed or out of range.
    """
    return _load(ts.default_loaders(APPNAME, list(config_files)))


def load_without_environment(
    config_files: Iterable[Path] = (DEFAULT_CONFIG_FILE,),
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load the settings from files and a mapping only (tests, tools)."""
    loaders: list[ts.loaders.Loader] = [
        ts.FileLoader(
            files=list(config_files),
            formats={"*.toml": ts.TomlFormat(APPNAME)},
        )
    ]
    if overrides:
        loaders.append(ts.loaders.DictLoader(dict(overrides)))
    return _load(loaders)


def _load(loaders: list[ts.loaders.Loader]) -> Settings:
    try:
        return ts.load_settings(Settings, loaders)
    except (ts.exceptions.TsError, ValueError) as error:
        raise SettingsError(_describe(error)) from None


def _describe(error: BaseException) -> str:
    """Every leaf of a (nested) exception group, with the notes that locate it."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in error.exceptions)
    notes = [note for note in getattr(error, "__notes__", []) if note]
    return " ".join([str(error) or type(error).__name__, *(f"({note})" for note in notes)])


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as a nested dict with every secret replaced by ``***``."""

    def convert(value: Any) -> Any:
        if isinstance(value, Secret):
            return "***" if value.get_secret_value() else ""
        if attrs.has(type(value)):
            return {f.name: convert(getattr(value, f.name)) for f in attrs.fields(type(value))}
        return value

    result: dict[str, Any] = convert(settings)
    return result
