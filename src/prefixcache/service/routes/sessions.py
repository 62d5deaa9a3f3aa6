"""``/sessions``: the caller's chat sessions, one session's history, and deleting one."""

from __future__ import annotations

from fastapi import APIRouter, Response

from .. import sessions as store
from ..protocol import SessionDetail, SessionSummary
from .deps import Caller, SessionId, State

router = APIRouter(tags=["sessions"])


@router.get("/sessions", response_model=list[SessionSummary])
async def list_sessions(caller: Caller, state: State) -> list[SessionSummary]:
    """The caller's sessions, most recently used first."""
    return await store.list_sessions(state, caller)


@router.get("/sessions/{session_id}", response_model=SessionDetail)
async def get_session(session_id: SessionId, caller: Caller, state: State) -> SessionDetail:
    """One of the caller's sessions with its messages and their cache figures."""
    return await store.session_detail(state, caller, session_id)


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: SessionId, caller: Caller, state: State) -> Response:
    """The session, its messages, its tasks and its cache records (prompt text too)."""
    await store.delete_session(state, caller, session_id)
    return Response(status_code=204)
