"""``GET /stats`` (the caller's tenant's measured figures) and ``GET /metrics``
(Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..protocol import StatsResponse
from ..stats import tenant_stats
from .deps import Caller, State

router = APIRouter(tags=["figures"])


@router.get("/stats", response_model=StatsResponse)
async def stats(caller: Caller, state: State) -> StatsResponse:
    """Measured hit rate, cached tokens and TTFT p50/p95 per agent and per tier (the
    caller's tenant), beside each tier's expected hit rate."""
    return await tenant_stats(state, caller.tenant)


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.recorder.exposition(), media_type="text/plain; version=0.0.4")
