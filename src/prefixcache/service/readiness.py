"""Whether the service can answer: vLLM reachable, prefix caching on, block size known,
and how far the warm-up has got (which never makes it unready)."""

from __future__ import annotations

import asyncio

from ..llm.inspector import EngineInspector
from .auth import authenticate, bearer_key
from .protocol import ReadyResponse
from .state import ServiceState


async def readiness(state: ServiceState, authorization: str | None) -> ReadyResponse:
    """The ``/ready`` answer. The engine's URL and the raw error are shown only to an
    admin key (``keys create --admin``)."""
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
    return result
