"""``Idempotency-Key`` on the routes that create things.

A client that did not get an answer (a timeout, a dropped connection) sends the same
request again with the same key: it gets the first answer, with
``Idempotent-Replayed: true``, and nothing is written twice.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from quart import Quart, Response, request
from quart_schema import document_response

from chat_service import metrics
from chat_service.model import cancel_safe
from chat_service.model.database import idempotency_claim
from chat_service.routes.state import app_state
from chat_service.services import idempotency
from chat_service.services.access import Principal
from chat_service.transport.problems import Problem

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
IDEMPOTENT_ATTRIBUTE = "_chat_service_idempotent"
# What an answer is replayed with; the rest (request id, rate limits) is the retry's own.
_KEPT_HEADERS = ("Content-Type", "Location", "Preference-Applied", "Vary", "Cache-Control")
PARAMETER = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "Makes the create safe to retry: the same key with the same request "
    "within `idempotency.ttl_seconds` (a day) answers what the first one did, with "
    "`Idempotent-Replayed: true`, and writes nothing. The same key with another body "
    "answers 422; while the first request runs, 409. Keys are per credential; a UUID "
    "is a good key.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.KEY_MAX_CHARS,
        "pattern": r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$",
    },
}
Handler = Callable[..., Awaitable[Response]]


def idempotent(handler: Handler) -> Handler:
    """Honour ``Idempotency-Key`` on a create (below ``authenticated`` and the body).

    Only answers below 400 are kept: a retry of a failed request runs again.
    """

    @functools.wraps(handler)
    async def wrapper(*args: Any, principal: Principal, **kwargs: Any) -> Response:
        if HEADER not in request.headers:
            return await handler(*args, principal=principal, **kwargs)
        key = idempotency.check_key(request.headers.getlist(HEADER))
        return await _keyed(key, handler, args, principal=principal, **kwargs)

    setattr(wrapper, IDEMPOTENT_ATTRIBUTE, True)
    for status in (400, 409, 422):
        wrapper = document_response(Problem, status)(wrapper)
    return wrapper


# The claim, the request and the keeping of its answer go on if the client hangs up:
# its retry then finds the answer instead of a claim that runs out.
@cancel_safe
async def _keyed(
    key: str, handler: Handler, args: tuple[Any, ...], *, principal: Principal, **kwargs: Any
) -> Response:
    data = kwargs.get("data")
    # Compared as validated: the same fields in another order are the same request.
    body = data.model_dump_json() if isinstance(data, BaseModel) else ""
    keys = app_state().idempotency
    started = await keys.begin(principal, key, request.method, request.path, body)
    if isinstance(started, idempotency.Answer):
        return _replay(started)
    claim = started
    # Every write transaction of this request marks the claim committed with it.
    idempotency_claim.set(claim.ref)
    try:
        response = await handler(*args, principal=principal, **kwargs)
    except BaseException:
        idempotency_claim.set(None)
        await _release(keys, claim)
        raise
    idempotency_claim.set(None)
    if response.status_code >= 400:
        await _release(keys, claim)
        return response
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    answer = idempotency.Answer(
        response.status_code, headers, await response.get_data(as_text=False)
    )
    try:
        await keys.finish(claim, answer)
    except Exception:
        # The write is done and answered; a retry will say the answer was lost.
        log.warning("the answer to an idempotent request could not be kept", exc_info=True)
    return response


async def _release(keys: idempotency.Idempotency, claim: idempotency.Claim) -> None:
    try:
        await keys.release(claim)
    except Exception:
        # The claim runs out at the end of its lease instead.
        log.warning("an idempotency key could not be released", exc_info=True)


def register(app: Quart) -> None:
    """Start the replay count of every route that takes a key at 0 (after its blueprint)."""
    for rule in app.url_map.iter_rules():
        if getattr(app.view_functions[rule.endpoint], IDEMPOTENT_ATTRIBUTE, False):
            metrics.IDEMPOTENT_REPLAYS.labels(route=rule.rule)


def _replay(answer: idempotency.Answer) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else ""
    metrics.IDEMPOTENT_REPLAYS.labels(route=rule).inc()
    response = Response(answer.body, status=answer.status, headers=answer.headers)
    response.headers[REPLAYED] = "true"
    return response
