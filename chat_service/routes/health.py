"""Liveness and readiness probes."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import document_response, tag_blueprint, validate_response

from chat_service.routes.state import app_state
from chat_service.services import health as health_checks
from chat_service.transport.health import HealthOut
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
@validate_response(HealthOut, 200)
@document_response(Problem, 503)
async def readiness() -> HealthOut:
    """Tell whether the service can serve requests.

    Checks that the database answers and holds the schema this version needs;
    503 when it does not.
    """
    await health_checks.check_database(app_state().db)
    return HealthOut(status="ok")
