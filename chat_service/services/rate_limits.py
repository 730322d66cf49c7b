"""Rate limits: requests per caller and route class, counted by the ``limits`` package.

A caller is its credential (a customer token, an agent, an API key) or, without one,
its address. Each route class has its own limits (``rate_limits.*``). The counts live
in this process (``memory``) or in Redis, shared by every worker and replica. When
Redis cannot be reached the request goes through: a limit protects the service, it
must not take it down.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chat_service import metrics
from chat_service.errors import RateLimited
from chat_service.services.access import Kind, Principal

if TYPE_CHECKING:
    from chat_service.config import RateLimitSettings

log = logging.getLogger(__name__)

# A storage failure is logged at most this often.
WARN_EVERY_SECONDS = 30.0
# After a storage failure, requests go through uncounted for this long before Redis is
# tried again: a Redis that is down must not add its timeout to every request.
PAUSE_SECONDS = 5.0
# The longest a request waits for Redis (to connect, or to answer).
REDIS_TIMEOUT_SECONDS = 0.5
KEY_PREFIX = "chat-service-limits"


class RouteClass(enum.StrEnum):
    """The kinds of request that have their own limits."""

    SESSIONS = "sessions"  # opening a session
    MESSAGES = "messages"  # posting a message (REST or WebSocket)
    READS = "reads"  # GET, and opening a live stream
    WRITES = "writes"  # every other change


for _route_class in RouteClass:  # every series exists from the start, at 0
    metrics.RATE_LIMITED.labels(route_class=_route_class.value)


@dataclass(frozen=True, slots=True)
class Quota:
    """Where a caller stands against the tightest of its route class's limits."""

    limit: int
    remaining: int
    reset_seconds: int  # until that limit's window frees a request
    policy: str  # every limit of the class: "10;w=1, 120;w=60"


def caller(principal: Principal, address: str | None) -> str:
    """Whose count a request adds to: its credential's holder, else its address."""
    if principal.kind is Kind.CUSTOMER:
        return f"customer:{principal.session_id}"
    if principal.kind is Kind.LOCAL:
        return f"address:{address or 'unknown'}"
    return f"{principal.kind.value}:{principal.id}"


class RateLimiter:
    """Counts requests per (route class, caller) and refuses those above a limit."""

    def __init__(self, settings: RateLimitSettings) -> None:
        # `limits` takes a while to import: only when limits are on.
        from limits import parse_many
        from limits.aio import storage, strategies

        self._items: dict[RouteClass, list[Any]] = {}
        for route_class in RouteClass:
            text = getattr(settings, route_class.value).strip()
            if text:
                self._items[route_class] = list(parse_many(text))
        self._policies = {
            route_class: ", ".join(f"{item.amount};w={item.get_expiry()}" for item in items)
            for route_class, items in self._items.items()
        }
        self._storage: Any
        if settings.storage == "redis":
            url = settings.redis_url.get_secret_value()
            url = (
                "async+redis+unix" + url[len("unix") :]
                if url.startswith("unix:")
                else "async+" + url
            )
            self._storage = storage.RedisStorage(
                url,
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
        else:
            self._storage = storage.MemoryStorage()
        strategy: Any = {
            "fixed-window": strategies.FixedWindowRateLimiter,
            "moving-window": strategies.MovingWindowRateLimiter,
            "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
        }[settings.strategy]
        self._limiter = strategy(self._storage)
        self._warned_at = -math.inf
        self._paused_until = -math.inf

    async def hit(self, route_class: RouteClass, who: str) -> Quota | None:
        """Count a request against the caller's limits of its class.

        Returns the caller's quota; None when the class has no limit, or while the
        counts cannot be reached.

        Raises:
            RateLimited: a limit of the class is reached; retry after ``retry_after``.
        """
        items = self._items.get(route_class)
        if not items or time.monotonic() < self._paused_until:
            return None
        try:
            tightest: Quota | None = None
            for item in items:
                allowed = await self._limiter.hit(item, route_class.value, who)
                stats = await self._limiter.get_window_stats(item, route_class.value, who)
                reset = max(1, math.ceil(stats.reset_time - time.time()))
                if not allowed:
                    metrics.RATE_LIMITED.labels(route_class=route_class.value).inc()
                    raise RateLimited(
                        f"more than {item.amount} {route_class.value} per "
                        f"{_window(item.get_expiry())} from this caller: retry in {reset} s",
                        retry_after=reset,
                        limit=item.amount,
                        policy=self._policies[route_class],
                    )
                if tightest is None or stats.remaining < tightest.remaining:
                    tightest = Quota(
                        item.amount, stats.remaining, reset, self._policies[route_class]
                    )
            return tightest
        except RateLimited:
            raise
        except Exception:
            now = time.monotonic()
            self._paused_until = now + PAUSE_SECONDS
            if now - self._warned_at >= WARN_EVERY_SECONDS:
                self._warned_at = now
                log.warning("rate limits cannot be counted: requests go through", exc_info=True)
            return None

    async def ready(self) -> bool:
        """Whether the counts' storage answers."""
        try:
            return bool(await self._storage.check())
        except Exception:
            return False

    async def close(self) -> None:
        """Drop the storage's connections (Redis)."""
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()


def _window(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return "second" if seconds == 1 else f"{seconds} seconds"
