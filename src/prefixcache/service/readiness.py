"""Whether the service can answer: vLLM reachable, prefix caching on, block size known,
and how far the warm-up has got (which never makes it unready).

``/ready`` always answers within about ``PROBE_DEADLINE_S``: a load balancer polling it
must not time out because vLLM is busy prefilling. When vLLM does not answer its
``/metrics`` in time but answered within the last ``KNOWN_FOR_S`` seconds, those facts
still stand (a busy engine still serves) and ``checked_s_ago`` says how old they are."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from ..llm.inspector import parse_engine_metrics
from .auth import authenticate, bearer_key
from .protocol import ReadyResponse
from .state import ServiceState

#: how long /ready waits for vLLM's /metrics
PROBE_DEADLINE_S = 4.0
#: facts from a /metrics answer this recent stand in when vLLM is too busy to answer
KNOWN_FOR_S = 60.0


@dataclass(frozen=True)
class EngineFacts:
    """What vLLM's ``/metrics`` said, and when (monotonic seconds)."""

    prefix_caching: bool | None
    block_size: int | None
    at: float

    def answer(self) -> ReadyResponse:
        problem = None
        if self.prefix_caching is False:
            problem = "prefix caching is off: start vLLM with --enable-prefix-caching"
        elif self.block_size is None:
            problem = "vLLM's /metrics has no block size (is it vLLM, or a router?)"
        return ReadyResponse(
            ready=problem is None,
            prefix_caching=self.prefix_caching,
            block_size=self.block_size,
            problem=problem,
        )


async def probe_engine(
    http: httpx.AsyncClient, url: str, api_key: str | None, deadline: float = PROBE_DEADLINE_S
) -> EngineFacts:
    """One ``GET /metrics``, over within ``deadline`` seconds in all (``TimeoutError``
    past it; ``httpx.HTTPError`` or ``ValueError`` if vLLM cannot be read)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with asyncio.timeout(deadline):
        answer = await http.get(f"{url}/metrics", headers=headers, timeout=deadline)
    answer.raise_for_status()
    stats = parse_engine_metrics(answer.text)
    return EngineFacts(stats.prefix_caching_enabled, stats.block_size, time.monotonic())


def stand_in(
    last: EngineFacts | None, now: float, known_for: float = KNOWN_FOR_S
) -> ReadyResponse | None:
    """The answer from recent facts when vLLM was too slow this time (None: none recent)."""
    if last is None or now - last.at > known_for:
        return None
    result = last.answer()
    result.checked_s_ago = round(now - last.at, 1)
    return result


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

    try:
        facts = await probe_engine(state.http, cfg.url, cfg.api_key, PROBE_DEADLINE_S)
        state.engine_facts = facts
        result = facts.answer()
    except (TimeoutError, httpx.TimeoutException):
        slow = f"vLLM did not answer /metrics within {PROBE_DEADLINE_S:g} s (busy?)"
        result = stand_in(state.engine_facts, time.monotonic()) or ReadyResponse(
            ready=False, problem=slow
        )
    except (httpx.HTTPError, ValueError) as exc:  # unreachable or not vLLM: not ready
        detail = str(exc).splitlines()[0] if admin else "the engine is not reachable"
        result = ReadyResponse(ready=False, problem=detail)
    if admin:
        result.vllm_url = cfg.url
    if state.warmer is not None:
        result.warming = state.warmer.progress()  # warming does not make it unready
    return result
