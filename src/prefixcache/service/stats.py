"""``GET /stats``: the caller's tenant's measured cache figures per agent and per tier,
beside each tier's expected hit rate (from the recorded requests in the database)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from ..llm.metrics import percentile
from ..llm.models import hit_rate
from ..prompts.tiers import AgentTierMap, parse_hit_range
from .db import CacheRecord
from .protocol import GroupStats, StatsResponse
from .state import ServiceState


def _group(key: str, rows: Sequence[CacheRecord], expected: str | None) -> GroupStats:
    prompt = sum(r.prompt_tokens for r in rows)
    known = [r.cached_tokens for r in rows if r.cached_tokens is not None]
    cached = sum(known) if len(known) == len(rows) and rows else None
    ttfts = [r.ttft for r in rows if r.ttft is not None]
    rate = hit_rate(cached, prompt)
    verdict = "n/a"
    if rate is not None and expected:
        low, high = parse_hit_range(expected)
        verdict = "below" if rate < low else ("above" if rate > high else "within")
    return GroupStats(
        key=key, requests=len(rows), prompt_tokens=prompt, cached_tokens=cached, hit_rate=rate,
        ttft_p50=percentile(ttfts, 50), ttft_p95=percentile(ttfts, 95),
        expected_hit_rate=expected, versus_expected=verdict,
    )  # fmt: skip


def summarize(tenant: str, rows: Sequence[CacheRecord], tiers: AgentTierMap) -> StatsResponse:
    by_agent: dict[str, list[CacheRecord]] = {}
    by_tier: dict[str, list[CacheRecord]] = {}
    for row in rows:
        by_agent.setdefault(row.agent_type, []).append(row)
        by_tier.setdefault(row.tier, []).append(row)
    expected = {info.tier.value: info.expected_hit_rate for info in tiers.tiers()}
    known = set(tiers.agents())

    def agent_expectation(agent: str) -> str | None:
        return tiers.get_cache_hit_expectation(agent) if agent in known else None

    total = _group("all", rows, None)
    return StatsResponse(
        tenant=tenant,
        requests=len(rows),
        hit_rate=total.hit_rate,
        by_agent=[_group(a, r, agent_expectation(a)) for a, r in sorted(by_agent.items())],
        by_tier=[_group(t, r, expected.get(t)) for t, r in sorted(by_tier.items())],
    )


async def tenant_stats(state: ServiceState, tenant: str) -> StatsResponse:
    async with state.sessions() as db:
        rows = list(
            (await db.execute(select(CacheRecord).where(CacheRecord.tenant_id == tenant))).scalars()
        )
    return summarize(tenant, rows, state.library.tiers)
