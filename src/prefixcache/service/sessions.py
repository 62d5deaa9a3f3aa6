"""The caller's chat sessions in the database: listed, read with their history, deleted."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from ..llm.models import hit_rate
from .auth import Principal
from .conversations import session_messages
from .db import CacheRecord, ChatSession, session_key
from .db import Message as MessageRow
from .errors import NotFound
from .protocol import CacheFigures, MessageOut, SessionDetail, SessionSummary
from .state import ServiceState


async def list_sessions(state: ServiceState, caller: Principal) -> list[SessionSummary]:
    """The caller's sessions with their message counts, most recently used first."""
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


async def own_session(state: ServiceState, caller: Principal, session_id: str) -> ChatSession:
    """The caller's session; another user's or tenant's id is as absent as a made-up one
    (ids are scoped by user, so it is not even looked at)."""
    async with state.sessions() as db:
        found = await db.get(ChatSession, session_key(caller.user_id, session_id))
    if found is None:
        raise NotFound(f"No session {session_id!r} for this API key.")
    return found


async def session_detail(state: ServiceState, caller: Principal, session_id: str) -> SessionDetail:
    """One of the caller's sessions: its messages, each answer with its cache figures."""
    session = await own_session(state, caller, session_id)
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


async def delete_session(state: ServiceState, caller: Principal, session_id: str) -> None:
    """The session, its messages, its tasks and its cache records (prompt text too)."""
    session = await own_session(state, caller, session_id)
    async with state.sessions() as db:
        await db.execute(delete(CacheRecord).where(CacheRecord.session_id == session.id))
        await db.execute(delete(ChatSession).where(ChatSession.id == session.id))
        await db.commit()
