"""``GET /stats``: the caller's tenant's measured cache figures per agent and per tier,
beside each tier's expected hit rate.

Computed in the database, never by loading a tenant's records: one GROUP BY for the
counts and sums, then per group the two rows each of p50 and p95 interpolates between
(the same linear interpolation as ``llm.metrics.percentile``), read through an index on
(tenant, agent or tier, ttft).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from ..llm.models import hit_rate
from ..prompts.tiers import AgentTierMap, parse_hit_range
from .db import CacheRecord
from .protocol import FamilyStats, GroupStats, StatsResponse
from .state import ServiceState


@dataclass(frozen=True)
class GroupFigures:
    key: str
    requests: int
    prompt_tokens: int
    cached_tokens: int | None  # None when any request came without a cached figure
    ttft_p50: float | None
    ttft_p95: float | None


def _interpolate(ranked: dict[int, float], n: int, q: int) -> float | None:
    if n == 0:
        return None
    low = (n - 1) * q // 100
    pos = (n - 1) * q / 100
    high = min(low + 1, n - 1)
    a, b = ranked.get(low), ranked.get(high)
    if a is None or b is None:
        return None
    return a + (b - a) * (pos - low)


async def group_figures(
    db: AsyncSession, column: InstrumentedAttribute[str], *where: ColumnElement[bool]
) -> list[GroupFigures]:
    """Figures per value of ``column`` over the records matching ``where``: one GROUP BY,
    then per group and percentile one ``ORDER BY ttft LIMIT 2 OFFSET rank`` that walks
    the (tenant, group, ttft) index."""
    sums = (
        await db.execute(
            select(
                column,
                func.count(),
                func.coalesce(func.sum(CacheRecord.prompt_tokens), 0),
                func.coalesce(func.sum(CacheRecord.cached_tokens), 0),
                func.count(CacheRecord.cached_tokens),
                func.count(CacheRecord.ttft),
            )
            .where(*where)
            .group_by(column)
        )
    ).all()
    out = []
    for group, requests, prompt, cached, known, timed in sums:
        points: list[float | None] = []
        for q in (50, 95):
            ranked: dict[int, float] = {}
            if timed:
                low = (timed - 1) * q // 100
                values = (
                    await db.execute(
                        select(CacheRecord.ttft)
                        .where(*where, column == group, CacheRecord.ttft.is_not(None))
                        .order_by(CacheRecord.ttft)
                        .limit(2)
                        .offset(low)
                    )
                ).scalars()
                ranked = {low + i: float(v) for i, v in enumerate(values) if v is not None}
            points.append(_interpolate(ranked, int(timed), q))
        out.append(
            GroupFigures(
                key=group,
                requests=int(requests),
                prompt_tokens=int(prompt or 0),
                cached_tokens=int(cached or 0) if known == requests and requests else None,
                ttft_p50=points[0],
                ttft_p95=points[1],
            )
        )
    return sorted(out, key=lambda g: g.key)


def _stats(figures: GroupFigures, expected: str | None) -> GroupStats:
    rate = hit_rate(figures.cached_tokens, figures.prompt_tokens)
    verdict = "n/a"
    if rate is not None and expected:
        low, high = parse_hit_range(expected)
        verdict = "below" if rate < low else ("above" if rate > high else "within")
    return GroupStats(
        key=figures.key,
        requests=figures.requests,
        prompt_tokens=figures.prompt_tokens,
        cached_tokens=figures.cached_tokens,
        hit_rate=rate,
        ttft_p50=figures.ttft_p50,
        ttft_p95=figures.ttft_p95,
        expected_hit_rate=expected,
        versus_expected=verdict,
    )


def summarize(
    tenant: str,
    by_agent: Sequence[GroupFigures],
    by_tier: Sequence[GroupFigures],
    tiers: AgentTierMap,
) -> StatsResponse:
    expected = {info.tier.value: info.expected_hit_rate for info in tiers.tiers()}
    known = set(tiers.agents())

    def agent_expectation(agent: str) -> str | None:
        return tiers.get_cache_hit_expectation(agent) if agent in known else None

    requests = sum(g.requests for g in by_agent)
    prompt = sum(g.prompt_tokens for g in by_agent)
    cached = [g.cached_tokens for g in by_agent]
    total = sum(c for c in cached if c is not None) if None not in cached and cached else None
    return StatsResponse(
        tenant=tenant,
        requests=requests,
        hit_rate=hit_rate(total, prompt),
        by_agent=[_stats(g, agent_expectation(g.key)) for g in by_agent],
        by_tier=[_stats(g, expected.get(g.key)) for g in by_tier],
    )


async def family_figures(db: AsyncSession, tenant: str, limit: int = 50) -> list[FamilyStats]:
    """Per gateway family the stabilizer saw: measured and predicted hit rates (one
    GROUP BY on the (tenant, family) index), and what moves in its latest request that
    moved anything."""
    r = CacheRecord
    predicted = r.predicted_original.is_not(None)
    rows = (
        await db.execute(
            select(
                r.family,
                func.count(),
                func.coalesce(func.sum(r.prompt_tokens), 0),
                func.sum(r.cached_tokens),
                func.count(r.cached_tokens),
                func.sum(func.cast(r.rewritten, Integer)),
                func.sum(r.predicted_original),
                func.sum(r.predicted_stabilized),
                func.coalesce(func.sum(case((predicted, r.prompt_tokens), else_=0)), 0),
                func.max(case((r.moved_shapes.is_not(None), r.id))),
            )
            .where(r.tenant_id == tenant, r.family.is_not(None))
            .group_by(r.family)
            .order_by(func.count().desc())
            .limit(limit)
        )
    ).all()
    shapes_of: dict[int, list[str]] = {}
    latest = [row[9] for row in rows if row[9] is not None]
    if latest:
        found = await db.execute(select(r.id, r.moved_shapes).where(r.id.in_(latest)))
        shapes_of = {i: json.loads(text) for i, text in found if text}
    out = []
    for family, n, prompt, cached, known, rewritten, p_orig, p_stab, p_prompt, last in rows:
        out.append(
            FamilyStats(
                family=family,
                requests=int(n),
                rewritten=int(rewritten or 0),
                hit_rate=hit_rate(int(cached or 0) if known == n else None, int(prompt)),
                predicted_hit_rate=hit_rate(None if p_orig is None else int(p_orig), int(p_prompt)),
                stabilized_hit_rate=hit_rate(
                    None if p_stab is None else int(p_stab), int(p_prompt)
                ),
                moves=shapes_of.get(last, []) if last is not None else [],
            )
        )
    return out


async def tenant_stats(state: ServiceState, tenant: str) -> StatsResponse:
    mine = CacheRecord.tenant_id == tenant
    async with state.sessions() as db:
        by_agent = await group_figures(db, CacheRecord.agent_type, mine)
        by_tier = await group_figures(db, CacheRecord.tier, mine)
        families = await family_figures(db, tenant)
    out = summarize(tenant, by_agent, by_tier, state.library.tiers)
    return out.model_copy(update={"families": families})
