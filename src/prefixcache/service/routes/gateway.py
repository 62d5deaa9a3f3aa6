"""The OpenAI-compatible gateway's routes: ``POST /v1/chat/completions`` and
``GET /v1/models`` (the work is ``service.gateway.Gateway``'s)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from ...llm.providers import SESSION_HEADER
from ..gateway import AGENT_HEADER, NEXT_AGENT_HEADER, Gateway
from ..stabilizer import STABILIZE_HEADER
from .deps import Caller, Convos, JsonBody, State

router = APIRouter(tags=["gateway"])


@router.post("/v1/chat/completions", dependencies=[JsonBody])
async def gateway_chat(
    request: Request,
    caller: Caller,
    state: State,
    convos: Convos,
    x_agent_type: Annotated[str | None, Header(alias=AGENT_HEADER)] = None,
    x_session_id: Annotated[str | None, Header(alias=SESSION_HEADER)] = None,
    x_next_agent: Annotated[str | None, Header(alias=NEXT_AGENT_HEADER)] = None,
    x_stabilize: Annotated[str | None, Header(alias=STABILIZE_HEADER)] = None,
) -> Response:
    """vLLM's chat completions for the fields on the gateway's allowlist, with the
    tenant's cache salt; the answer unchanged. ``X-Next-Agent: a,b`` prefills those
    agents' prefixes for the caller after the answer. ``X-Prefixcache-Stabilize:
    off|shadow|on`` lowers the tenant's stabilizer mode for this request; a rewritten
    request's answer carries ``X-Prefixcache-Stabilized: lines=N; tools=...``."""
    return await Gateway(state, convos).handle(
        caller,
        await request.body(),
        agent_header=x_agent_type,
        session_header=x_session_id,
        next_agents=x_next_agent,
        stabilize=x_stabilize,
    )


@router.get("/v1/models")
async def gateway_models(caller: Caller, state: State, convos: Convos) -> Response:
    answer = await Gateway(state, convos).models()
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )
