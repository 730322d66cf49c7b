"""Agents and API keys: managed by the tenant's admins."""

from __future__ import annotations

import uuid

from quart import Blueprint, Response, request
from quart_schema import document_response, tag_blueprint

from chat_service.model import Role
from chat_service.routes.auth import authenticated
from chat_service.routes.bodies import json_body, page_limit, query_args
from chat_service.routes.idempotency import idempotent
from chat_service.routes.openapi import empty_response
from chat_service.routes.responses import json_response, no_content
from chat_service.routes.state import app_state
from chat_service.services import agents as agent_service
from chat_service.services import api_keys as key_service
from chat_service.services.access import Principal, Scope
from chat_service.transport.messages import PageQuery
from chat_service.transport.people import (
    AgentListOut,
    AgentOut,
    AgentPatch,
    ApiKeyListOut,
    ApiKeyOut,
    NewAgent,
    NewApiKey,
)
from chat_service.transport.problems import Problem

blueprint = Blueprint("admin", __name__)
tag_blueprint(blueprint, ["admin"])


@blueprint.post("/agents")
@authenticated
@json_body(NewAgent)
@idempotent
@document_response(AgentOut, 201)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def create_agent(data: NewAgent, principal: Principal) -> Response:
    """Add an agent or admin to the tenant (admins only)."""
    agent = await agent_service.create_agent(
        app_state().db, principal, name=data.name, email=data.email, role=Role(data.role)
    )
    location = f"{request.root_path}/agents/{agent.id}"
    return json_response(
        AgentOut.model_validate(agent, from_attributes=True), 201, {"Location": location}
    )


@blueprint.get("/agents")
@authenticated
@query_args(PageQuery)
@document_response(AgentListOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def agents(query_args: PageQuery, principal: Principal) -> Response:
    """List the tenant's agents, oldest first (admins only)."""
    state = app_state()
    page = await agent_service.list_agents(
        state.db,
        state.cursors,
        principal,
        limit=page_limit(query_args.limit, state.settings.limits),
        after=query_args.after,
    )
    return json_response(AgentListOut.model_validate(page, from_attributes=True))


@blueprint.get("/agents/<uuid:agent_id>")
@authenticated
@document_response(AgentOut, 200)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def agent(agent_id: uuid.UUID, principal: Principal) -> Response:
    """Get one agent of the tenant (admins only)."""
    found = await agent_service.get_agent(app_state().db, principal, agent_id)
    return json_response(AgentOut.model_validate(found, from_attributes=True))


@blueprint.patch("/agents/<uuid:agent_id>")
@authenticated
@json_body(AgentPatch)
@document_response(AgentOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 409)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def update_agent(agent_id: uuid.UUID, data: AgentPatch, principal: Principal) -> Response:
    """Rename, change the role of, or deactivate an agent (admins only).

    A deactivated agent's keys and tokens stop working at once.
    """
    # null clears the email; for the other fields it means "unchanged".
    changes = {
        name: value
        for name, value in data.model_dump(exclude_unset=True).items()
        if value is not None or name == "email"
    }
    if "role" in changes:
        changes["role"] = Role(changes["role"])
    found = await agent_service.update_agent(app_state().db, principal, agent_id, changes)
    return json_response(AgentOut.model_validate(found, from_attributes=True))


@blueprint.post("/api-keys")
@authenticated
@json_body(NewApiKey)
@idempotent
@document_response(ApiKeyOut, 201)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 413)
@document_response(Problem, 415)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def create_api_key(data: NewApiKey, principal: Principal) -> Response:
    """Create an API key (admins only); the key is shown this once."""
    key = await key_service.create_api_key(
        app_state().db,
        principal,
        name=data.name,
        scopes=[Scope(scope) for scope in data.scopes],
        agent_id=data.agent_id,
    )
    location = f"{request.root_path}/api-keys/{key.id}"
    return json_response(
        ApiKeyOut.model_validate(key, from_attributes=True), 201, {"Location": location}
    )


@blueprint.get("/api-keys")
@authenticated
@query_args(PageQuery)
@document_response(ApiKeyListOut, 200)
@document_response(Problem, 400)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 422)
@document_response(Problem, 503)
async def api_keys(query_args: PageQuery, principal: Principal) -> Response:
    """List the tenant's API keys, revoked ones included (admins only)."""
    state = app_state()
    page = await key_service.list_api_keys(
        state.db,
        state.cursors,
        principal,
        limit=page_limit(query_args.limit, state.settings.limits),
        after=query_args.after,
    )
    return json_response(ApiKeyListOut.model_validate(page, from_attributes=True))


@blueprint.get("/api-keys/<uuid:key_id>")
@authenticated
@document_response(ApiKeyOut, 200)
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def api_key(key_id: uuid.UUID, principal: Principal) -> Response:
    """Get one API key of the tenant, without the key itself (admins only)."""
    found = await key_service.get_api_key(app_state().db, principal, key_id)
    return json_response(ApiKeyOut.model_validate(found, from_attributes=True))


@blueprint.delete("/api-keys/<uuid:key_id>")
@authenticated
@empty_response(204, "Revoked (or revoked before).")
@document_response(Problem, 401)
@document_response(Problem, 403)
@document_response(Problem, 404)
@document_response(Problem, 503)
async def revoke_api_key(key_id: uuid.UUID, principal: Principal) -> Response:
    """Revoke an API key at once (admins only).

    Answers 204, again when the key was already revoked.
    """
    await key_service.revoke_api_key(app_state().db, principal, key_id)
    return no_content()
