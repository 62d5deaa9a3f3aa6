"""``GET /health`` (the process is alive) and ``GET /ready`` (it can answer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from ..protocol import ReadyResponse
from ..readiness import readiness
from .deps import State

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The service is alive (says nothing about vLLM: see /ready)."""
    return {"status": "ok"}


@router.get("/ready", response_model=ReadyResponse)
async def ready(
    state: State, response: Response, authorization: Annotated[str | None, Header()] = None
) -> ReadyResponse:
    """vLLM reachable, prefix caching on, block size known (503 with Retry-After if not);
    the warm-up's progress. The engine's URL and the raw error only for an admin key."""
    result = await readiness(state, authorization)
    if not result.ready:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return result
