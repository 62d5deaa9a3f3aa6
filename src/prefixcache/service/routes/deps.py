"""What the routes are given (FastAPI dependencies): the service state, the caller (an
API key checked and rate-limited), a JSON body check, and the conversations."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi import Path as PathParam

from ..auth import Principal, authenticate, bearer_key
from ..conversations import Conversations
from ..errors import TooManyRequests, Unauthorized, UnsupportedMediaType
from ..protocol import ID_PATTERN
from ..state import ServiceState


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]


async def get_principal(
    state: State, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller, from its API key, checked in the database on every request (a revoked
    key stops at once, on every instance), and counted against the per-minute limit that
    every instance shares."""
    key = bearer_key(authorization)
    if key is None:
        raise Unauthorized(
            "Send an API key as 'Authorization: Bearer <key>' (create one with "
            "`prefixcache keys create --tenant T --user U`).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    async with state.sessions() as db:
        principal = await authenticate(db, key)
        if principal is None:
            raise Unauthorized(
                "The API key is not valid (unknown, revoked or malformed).",
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = await state.limiter.check(db, principal.key_id)
    if wait > 0:
        limit = state.settings.service.rate_limit_per_minute
        raise TooManyRequests(
            f"More than {limit} requests per minute with this API key "
            "(service.rate_limit_per_minute); retry after the Retry-After seconds.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    if state.warmer is not None:
        state.warmer.tenant_seen(principal)  # a tenant without keys at start: warm it now
    return principal


def json_body(content_type: Annotated[str | None, Header()] = None) -> None:
    """415 unless the body says it is JSON (as vLLM answers)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(
            f"Send the body as JSON with 'Content-Type: application/json' (got "
            f"{content_type or 'no Content-Type'!r})."
        )


JsonBody = Depends(json_body)


Caller = Annotated[Principal, Depends(get_principal)]


def conversations(state: State) -> Conversations:
    return Conversations(state)


Convos = Annotated[Conversations, Depends(conversations)]


SessionId = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=64)]
TaskId = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=64)]
