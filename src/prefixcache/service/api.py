"""The service's routes. Dependencies (the state, the caller) are injected; the user and
tenant always come from the API key, never from a request body."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from ..llm.inspector import EngineInspector
from ..llm.providers import SESSION_HEADER
from .auth import Principal, authenticate
from .conversations import Conversations, session_messages
from .db import ChatSession
from .db import Message as MessageRow
from .errors import NotFound, TooManyRequests, Unauthorized, Unprocessable
from .gateway import AGENT_HEADER, Gateway
from .protocol import (
    CacheFigures,
    ChatRequest,
    ChatResponse,
    MessageOut,
    ReadyResponse,
    SessionDetail,
    SessionSummary,
    StatsResponse,
    TaskRequest,
    TaskResponse,
)
from .state import ServiceState
from .stats import tenant_stats

router = APIRouter()

#: a verified key is trusted this long without a database lookup (revocation delay)
AUTH_TTL_S = 10.0


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]


async def get_principal(
    state: State, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized(
            "Send an API key as 'Authorization: Bearer <key>' (create one with "
            "`prefixcache keys create --tenant T --user U`).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = authorization[7:].strip()
    cached = state.auth_cache.get(key)
    now = time.monotonic()
    if cached is not None and cached[1] > now:
        principal: Principal | None = cached[0]
    else:
        async with state.sessions() as db:
            principal = await authenticate(db, key)
        if principal is not None:
            if len(state.auth_cache) > 10_000:
                state.auth_cache.clear()
            state.auth_cache[key] = (principal, now + AUTH_TTL_S)
    if principal is None:
        raise Unauthorized(
            "The API key is not valid (unknown, revoked or malformed).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    wait = state.limiter.check(principal.key_id)
    if wait > 0:
        limit = state.settings.service.rate_limit_per_minute
        raise TooManyRequests(
            f"More than {limit} requests per minute with this API key "
            "(service.rate_limit_per_minute); retry after the Retry-After seconds.",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    return principal


Caller = Annotated[Principal, Depends(get_principal)]


def conversations(state: State) -> Conversations:
    return Conversations(state)


Convos = Annotated[Conversations, Depends(conversations)]


# -- the guide's endpoints ------------------------------------------------------------


@router.post("/chat", response_model=ChatResponse, tags=["chat"])
async def chat(body: ChatRequest, caller: Caller, convos: Convos) -> Any:
    """One chat turn: the agent's optimized prompt, the session's history, the reply and
    its cache figures. ``stream: true`` answers with server-sent events."""
    if body.stream:
        prepared = await convos.prepare(caller, body)
        return StreamingResponse(
            convos.chat_stream(caller, body, prepared), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Session-Id": prepared.session.id},
        )  # fmt: skip
    return await convos.chat(caller, body)


@router.post("/tasks", response_model=TaskResponse, tags=["tasks"])
async def create_task(body: TaskRequest, caller: Caller, convos: Convos) -> TaskResponse:
    """The guide's task execution; chain tasks with ``previous_task_id``."""
    return await convos.run_task(caller, body)


@router.get("/tasks/{task_id}", response_model=TaskResponse, tags=["tasks"])
async def get_task(task_id: str, caller: Caller, convos: Convos) -> TaskResponse:
    return await convos.get_task(caller, task_id)


# -- sessions -------------------------------------------------------------------------


@router.get("/sessions", response_model=list[SessionSummary], tags=["sessions"])
async def list_sessions(caller: Caller, state: State) -> list[SessionSummary]:
    async with state.sessions() as db:
        counts = (
            select(MessageRow.session_id, func.count().label("n"))
            .group_by(MessageRow.session_id)
            .subquery()
        )
        rows = (
            await db.execute(
                select(ChatSession, counts.c.n)
                .outerjoin(counts, counts.c.session_id == ChatSession.id)
                .where(ChatSession.user_id == caller.user_id)
                .order_by(ChatSession.updated_at.desc())
            )
        ).all()
    return [
        SessionSummary(
            id=s.id,
            agent_type=s.agent_type,
            messages=n or 0,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )
        for s, n in rows
    ]


async def _own_session(state: ServiceState, caller: Principal, session_id: str) -> ChatSession:
    async with state.sessions() as db:
        found = await db.get(ChatSession, session_id)
    if found is None or found.user_id != caller.user_id:
        raise NotFound(f"No session {session_id!r} for this API key.")
    return found


@router.get("/sessions/{session_id}", response_model=SessionDetail, tags=["sessions"])
async def get_session(session_id: str, caller: Caller, state: State) -> SessionDetail:
    session = await _own_session(state, caller, session_id)
    async with state.sessions() as db:
        rows = await session_messages(db, session_id)
    history = []
    for m in rows:
        cache = None
        if m.prompt_tokens is not None and m.role == "assistant":
            rate = (
                m.cached_tokens / m.prompt_tokens
                if m.cached_tokens is not None and m.prompt_tokens
                else None
            )
            cache = CacheFigures(
                prompt_tokens=m.prompt_tokens, cached_tokens=m.cached_tokens, hit_rate=rate,
                ttft=m.ttft,
            )  # fmt: skip
        history.append(
            MessageOut(
                role=m.role,
                content=m.content,
                status=m.status,
                error=m.error,
                created_at=m.created_at,
                cache=cache,
            )
        )
    return SessionDetail(
        id=session.id, agent_type=session.agent_type, messages=len(rows),
        created_at=session.created_at, updated_at=session.updated_at, history=history,
    )  # fmt: skip


@router.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
async def delete_session(session_id: str, caller: Caller, state: State) -> Response:
    session = await _own_session(state, caller, session_id)
    async with state.sessions() as db:
        await db.delete(await db.merge(session))
        await db.commit()
    return Response(status_code=204)


# -- the OpenAI-compatible gateway ----------------------------------------------------


@router.post("/v1/chat/completions", tags=["gateway"])
async def gateway_chat(
    request: Request,
    caller: Caller,
    state: State,
    convos: Convos,
    x_agent_type: Annotated[str | None, Header(alias=AGENT_HEADER)] = None,
    x_session_id: Annotated[str | None, Header(alias=SESSION_HEADER)] = None,
) -> Any:
    """vLLM's chat completions, with the tenant's cache salt; the answer unchanged."""
    try:
        body = await request.json()
    except ValueError:
        raise Unprocessable("The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise Unprocessable("The request body must be a JSON object.")
    gateway = Gateway(state, convos)
    if body.get("stream"):
        answer, asked_usage, _ = await gateway.open_stream(caller, body, x_agent_type, x_session_id)
        if answer.status_code >= 400:
            content = await answer.aread()
            await answer.aclose()
            return Response(content, status_code=answer.status_code,
                            media_type=answer.headers.get("content-type"))  # fmt: skip
        return StreamingResponse(
            gateway.relay(caller, body, x_agent_type, answer, asked_usage),
            media_type="text/event-stream",
        )
    status, content, headers = await gateway.complete(caller, body, x_agent_type, x_session_id)
    return Response(content, status_code=status, media_type=headers["content-type"])


@router.get("/v1/models", tags=["gateway"])
async def gateway_models(caller: Caller, state: State, convos: Convos) -> Response:
    answer = await Gateway(state, convos).models()
    return Response(
        answer.content, status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )  # fmt: skip


# -- figures and health ---------------------------------------------------------------


@router.get("/stats", response_model=StatsResponse, tags=["figures"])
async def stats(caller: Caller, state: State) -> StatsResponse:
    """Measured hit rate, cached tokens and TTFT p50/p95 per agent and per tier (the
    caller's tenant), beside each tier's expected hit rate."""
    return await tenant_stats(state, caller.tenant)


@router.get("/metrics", tags=["figures"])
async def metrics(state: State) -> Response:
    return Response(state.recorder.exposition(), media_type="text/plain; version=0.0.4")


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    """The service is alive (says nothing about vLLM: see /ready)."""
    return {"status": "ok"}


@router.get("/ready", response_model=ReadyResponse, tags=["health"])
async def ready(state: State, response: Response) -> ReadyResponse:
    """vLLM reachable, prefix caching on, block size known."""
    cfg = state.settings.llm.vllm

    def check() -> ReadyResponse:
        with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key, timeout=5) as inspector:
            stats = inspector.cache_stats()
        problem = None
        if stats.prefix_caching_enabled is False:
            problem = "prefix caching is off: start vLLM with --enable-prefix-caching"
        elif stats.block_size is None:
            problem = "vLLM's /metrics has no block size (is it vLLM, or a router?)"
        return ReadyResponse(
            ready=problem is None, vllm_url=cfg.url, prefix_caching=stats.prefix_caching_enabled,
            block_size=stats.block_size, problem=problem,
        )  # fmt: skip

    try:
        result = await asyncio.to_thread(check)
    except Exception as exc:  # any failure to reach vLLM means: not ready
        result = ReadyResponse(ready=False, vllm_url=cfg.url, problem=str(exc).splitlines()[0])
    if not result.ready:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return result


@router.get("/agents", tags=["chat"])
async def agents(state: State) -> dict[str, list[str]]:
    """The agent types, by tier."""
    tiers = state.library.tiers
    return {info.tier.value: list(info.agents) for info in tiers.tiers()}
