"""Liveness and readiness probes."""

from __future__ import annotations

import dataclasses

from quart import Blueprint, Response
from quart_schema import document_response, tag_blueprint, validate_response

from chat_service.routes.problems import RETRY_AFTER_SECONDS, problem
from chat_service.routes.state import app_state
from chat_service.services import health as health_checks
from chat_service.transport.health import CheckOut, HealthOut, ReadyOut
from chat_service.transport.problems import Problem

blueprint = Blueprint("health", __name__)
tag_blueprint(blueprint, ["health"])


@blueprint.get("/health")
@validate_response(HealthOut, 200)
async def health() -> HealthOut:
    """Tell whether the process is alive.

    Liveness only: answers without touching the database, so a slow database never
    gets a healthy process restarted.
    """
    return HealthOut(status="ok")


@blueprint.get("/health/ready")
@document_response(ReadyOut, 200)
@document_response(Problem, 503)
async def readiness() -> Response:
    """Tell whether the service can serve, and how each dependency is.

    503 (a problem document with the same `checks`) when the database does not
    answer or does not hold the schema this version needs. The event bus and the
    rate limits' Redis are reported, and make the status `degraded`, not 503: the
    service still serves without them.
    """
    state = app_state()
    limiter_kind = state.settings.rate_limits.storage
    checks = await health_checks.readiness(
        state.db, state.live.bus, state.settings.live_bus, state.rate_limits, limiter_kind
    )
    out = {
        name: CheckOut.model_validate(dataclasses.asdict(check)) for name, check in checks.items()
    }
    database = checks["database"]
    if database.status != "ok":
        response = problem(
            503,
            "Service temporarily unavailable",
            kind="unavailable",
            detail=database.detail or "the database is not ready",
            checks={name: check.model_dump(exclude_none=True) for name, check in out.items()},
        )
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    status = "ok" if all(check.status == "ok" for check in checks.values()) else "degraded"
    body = ReadyOut(status=status, checks=out).model_dump_json(exclude_none=True)
    return Response(body, content_type="application/json")
