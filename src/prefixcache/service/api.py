"""The service's routes. Dependencies (the state, the caller) are injected; the user and
tenant always come from the API key, never from a request body."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi import Path as PathParam
from sqlalchemy import delete, func, select

from ..llm.inspector import EngineInspector
from ..llm.models import hit_rate
from ..llm.providers import SESSION_HEADER
from .auth import NAME_PATTERN, Principal, authenticate, bearer_key
from .conversations import Conversations, session_messages
from .db import CacheRecord, ChatSession, session_key
from .db import Message as MessageRow
from .errors import NotFound, TooManyRequests, Unauthorized, UnsupportedMediaType
from .gateway import AGENT_HEADER, NEXT_AGENT_HEADER, Gateway
from .gateway_contract import header_value, parse_json
from .protocol import (
    ID_PATTERN,
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
from .stabilizer import STABILIZE_HEADER, STABILIZED_HEADER
from .state import ServiceState
from .stats import tenant_stats
from .streaming import GuardedStreamingResponse

router = APIRouter()


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


# -- the guide's endpoints ------------------------------------------------------------

SessionId = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=64)]
TaskId = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=64)]


@router.post("/chat", response_model=ChatResponse, tags=["chat"], dependencies=[JsonBody])
async def chat(body: ChatRequest, caller: Caller, convos: Convos) -> Any:
    """One chat turn: the agent's optimized prompt, the session's history, the reply and
    its cache figures. ``stream: true`` answers with server-sent events."""
    if body.stream:
        prepared = await convos.prepare(caller, body)
        return GuardedStreamingResponse(
            convos.chat_stream(caller, body, prepared),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Session-Id": prepared.session_id},
            on_close=lambda: convos.settle(prepared),
        )
    return await convos.chat(caller, body)


@router.post("/tasks", response_model=TaskResponse, tags=["tasks"], dependencies=[JsonBody])
async def create_task(body: TaskRequest, caller: Caller, convos: Convos) -> TaskResponse:
    """The guide's task execution; chain tasks with ``previous_task_id``."""
    return await convos.run_task(caller, body)


@router.get("/tasks/{task_id}", response_model=TaskResponse, tags=["tasks"])
async def get_task(task_id: TaskId, caller: Caller, convos: Convos) -> TaskResponse:
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
            id=s.public_id,
            agent_type=s.agent_type,
            messages=n or 0,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )
        for s, n in rows
    ]


async def _own_session(state: ServiceState, caller: Principal, session_id: str) -> ChatSession:
    """The caller's session; another user's or tenant's id is as absent as a made-up one
    (ids are scoped by user, so it is not even looked at)."""
    async with state.sessions() as db:
        found = await db.get(ChatSession, session_key(caller.user_id, session_id))
    if found is None:
        raise NotFound(f"No session {session_id!r} for this API key.")
    return found


@router.get("/sessions/{session_id}", response_model=SessionDetail, tags=["sessions"])
async def get_session(session_id: SessionId, caller: Caller, state: State) -> SessionDetail:
    session = await _own_session(state, caller, session_id)
    async with state.sessions() as db:
        rows = await session_messages(db, session.id)
    history = []
    for m in rows:
        cache = None
        if m.prompt_tokens is not None and m.role == "assistant":
            cache = CacheFigures(
                prompt_tokens=m.prompt_tokens,
                cached_tokens=m.cached_tokens,
                hit_rate=hit_rate(m.cached_tokens, m.prompt_tokens),
                ttft=m.ttft,
            )
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
        id=session.public_id,
        agent_type=session.agent_type,
        messages=len(rows),
        created_at=session.created_at,
        updated_at=session.updated_at,
        history=history,
    )


@router.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
async def delete_session(session_id: SessionId, caller: Caller, state: State) -> Response:
    """The session, its messages, its tasks and its cache records (prompt text too)."""
    session = await _own_session(state, caller, session_id)
    async with state.sessions() as db:
        await db.execute(delete(CacheRecord).where(CacheRecord.session_id == session.id))
        await db.execute(delete(ChatSession).where(ChatSession.id == session.id))
        await db.commit()
    return Response(status_code=204)


# -- the OpenAI-compatible gateway ----------------------------------------------------


@router.post("/v1/chat/completions", tags=["gateway"], dependencies=[JsonBody])
async def gateway_chat(
    request: Request,
    caller: Caller,
    state: State,
    convos: Convos,
    x_agent_type: Annotated[str | None, Header(alias=AGENT_HEADER)] = None,
    x_session_id: Annotated[str | None, Header(alias=SESSION_HEADER)] = None,
    x_next_agent: Annotated[str | None, Header(alias=NEXT_AGENT_HEADER)] = None,
    x_stabilize: Annotated[str | None, Header(alias=STABILIZE_HEADER)] = None,
) -> Any:
    """vLLM's chat completions for the fields on the gateway's allowlist, with the
    tenant's cache salt; the answer unchanged. ``X-Next-Agent: a,b`` prefills those
    agents' prefixes for the caller after the answer. ``X-Prefixcache-Stabilize:
    off|shadow|on`` lowers the tenant's stabilizer mode for this request; a rewritten
    request's answer carries ``X-Prefixcache-Stabilized: lines=N; tools=...``."""
    body = parse_json(await request.body())
    gateway = Gateway(state, convos)
    agent = header_value(AGENT_HEADER, x_agent_type, NAME_PATTERN)
    session = header_value(SESSION_HEADER, x_session_id, NAME_PATTERN)
    upcoming = convos.next_agents(
        [a.strip() for a in x_next_agent.split(",") if a.strip()] if x_next_agent else None
    )
    routed = f"{caller.tenant}/{session}" if session else None
    upstream, asked_usage, note = gateway.prepare(caller, body, x_stabilize, agent)
    stabilized = {STABILIZED_HEADER: note.rewrite.header()} if note and note.applied else {}
    release = await state.admission.acquire(caller.key_id, caller.tenant)
    try:
        if upstream.get("stream"):
            answer = await gateway.open_stream(upstream, session, caller)
            if answer.status_code >= 400:
                content = await answer.aread()
                await answer.aclose()
                release()
                return Response(
                    content,
                    status_code=answer.status_code,
                    media_type=answer.headers.get("content-type"),
                )
            stream = gateway.relay(caller, body, agent, answer, asked_usage, note)

            async def close() -> None:  # however the response ended (or never began)
                release()
                await answer.aclose()
                convos.prefetch(caller, upcoming, routed)

            return GuardedStreamingResponse(
                stream, media_type="text/event-stream", on_close=close, headers=stabilized
            )
        status, content, headers = await gateway.complete(
            caller, body, upstream, agent, session, note
        )
    except BaseException:
        release()
        raise
    release()
    if status < 400:
        convos.prefetch(caller, upcoming, routed)
    return Response(
        content,
        status_code=status,
        media_type=headers["content-type"],
        headers=stabilized if status < 400 else None,
    )


@router.get("/v1/models", tags=["gateway"])
async def gateway_models(caller: Caller, state: State, convos: Convos) -> Response:
    answer = await Gateway(state, convos).models()
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )


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
async def ready(
    state: State, response: Response, authorization: Annotated[str | None, Header()] = None
) -> ReadyResponse:
    """vLLM reachable, prefix caching on, block size known. The engine's URL and the raw
    error are shown only to an admin key (``keys create --admin``)."""
    cfg = state.settings.llm.vllm
    admin = False
    key = bearer_key(authorization)
    if key is not None:
        async with state.sessions() as db:
            who = await authenticate(db, key)
        admin = who is not None and who.admin

    def check() -> ReadyResponse:
        with EngineInspector(cfg.url, cfg.model_name(), cfg.api_key, timeout=5) as inspector:
            stats = inspector.cache_stats()
        problem = None
        if stats.prefix_caching_enabled is False:
            problem = "prefix caching is off: start vLLM with --enable-prefix-caching"
        elif stats.block_size is None:
            problem = "vLLM's /metrics has no block size (is it vLLM, or a router?)"
        return ReadyResponse(
            ready=problem is None,
            prefix_caching=stats.prefix_caching_enabled,
            block_size=stats.block_size,
            problem=problem,
        )

    try:
        result = await asyncio.to_thread(check)
    except Exception as exc:  # any failure to reach vLLM means: not ready
        detail = str(exc).splitlines()[0] if admin else "the engine is not reachable"
        result = ReadyResponse(ready=False, problem=detail)
    if admin:
        result.vllm_url = cfg.url
    if state.warmer is not None:
        result.warming = state.warmer.progress()  # warming does not make it unready
    if not result.ready:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return result


@router.get("/agents", tags=["chat"])
async def agents(state: State) -> dict[str, list[str]]:
    """The agent types, by tier."""
    tiers = state.library.tiers
    return {info.tier.value: list(info.agents) for info in tiers.tiers()}
