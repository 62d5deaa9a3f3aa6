"""``POST /chat`` (one turn, streamed or not) and ``GET /agents``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..protocol import ChatRequest, ChatResponse
from ..streaming import GuardedStreamingResponse
from .deps import Caller, Convos, JsonBody, State

router = APIRouter(tags=["chat"])


@router.post("/chat", response_model=ChatResponse, dependencies=[JsonBody])
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


@router.get("/agents")
async def agents(state: State) -> dict[str, list[str]]:
    """The agent types, by tier."""
    tiers = state.library.tiers
    return {info.tier.value: list(info.agents) for info in tiers.tiers()}
