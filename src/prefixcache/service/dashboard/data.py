"""The figures the dashboard shows, gathered for one tenant.

- per agent and per tier: the same summary as ``GET /stats`` (one function computes
  both, so the page and the API cannot disagree), beside each tier's expected range;
- TTFT p50/p95 per minute over the last hour of the tenant's requests;
- per replica: hits and queries from each replica's own ``/metrics`` (vllm-router's
  ``/list_workers`` gives the replicas; a single engine is one replica). These are
  engine-wide counters, every tenant's traffic together, and the page says so;
- the latest cache breaks: ``prefixcache explain`` over the tenant's recorded prompts
  (``service.record_prompts``), tokenized by the engine's own ``/tokenize``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from ...errors import PrefixCacheError
from ...llm.inspector import parse_engine_metrics, workers_in
from ...llm.metrics import percentile
from ...traces.explain import Break, explain
from ...traces.tokenize import ServerTokenizer
from ..auth import Principal
from ..db import CacheRecord, utcnow
from ..export import to_trace
from ..protocol import StatsResponse
from ..state import ServiceState
from ..stats import family_figures, group_figures, summarize

#: recorded prompts explained per page view (the latest ones)
BREAK_WINDOW = 200
#: token lists kept between page views (by record id)
TOKEN_CACHE = 2000
SERIES_MINUTES = 60
#: the TTFT chart reads at most this many of the last hour's requests (the latest)
SERIES_REQUESTS = 5000


@dataclass(frozen=True)
class TtftPoint:
    minute: datetime
    requests: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class ReplicaFigures:
    url: str
    hits: float | None
    queries: float | None
    requests: float | None
    problem: str | None = None

    @property
    def hit_rate(self) -> float | None:
        if self.hits is None or not self.queries:
            return None
        return self.hits / self.queries


@dataclass
class DashboardData:
    tenant: str
    stats: StatsResponse
    series: list[TtftPoint]
    replicas: list[ReplicaFigures]
    router: bool
    breaks: list[tuple[Break, CacheRecord]]
    breaks_note: str | None
    #: the viewer holds an admin key (sees the replicas and every user's breaks)
    admin: bool = False
    generated_at: datetime = field(default_factory=utcnow)


def ttft_series(rows: Sequence[tuple[datetime, float | None]], now: datetime) -> list[TtftPoint]:
    """TTFT p50/p95 per minute from (time, ttft) pairs, the last ``SERIES_MINUTES``
    minutes that had requests."""
    since = now - timedelta(minutes=SERIES_MINUTES)
    buckets: dict[datetime, list[float]] = {}
    counts: dict[datetime, int] = {}
    for created_at, ttft in rows:
        if created_at < since:
            continue
        minute = created_at.replace(second=0, microsecond=0)
        counts[minute] = counts.get(minute, 0) + 1
        if ttft is not None:
            buckets.setdefault(minute, []).append(ttft)
    return [
        TtftPoint(
            m, counts[m], percentile(buckets.get(m, []), 50), percentile(buckets.get(m, []), 95)
        )
        for m in sorted(counts)
    ]


async def replica_figures(http: httpx.AsyncClient, url: str) -> tuple[bool, list[ReplicaFigures]]:
    """(is a router, figures per replica) from the engine's or the router's workers'
    ``/metrics``."""
    try:
        workers = workers_in(await http.get(f"{url}/list_workers", timeout=3))
    except httpx.HTTPError:
        workers = []
    targets = workers or [url]

    async def one(target: str) -> ReplicaFigures:
        try:
            reply = await http.get(f"{target}/metrics", timeout=3)
            reply.raise_for_status()
            stats = parse_engine_metrics(reply.text)
        except (httpx.HTTPError, ValueError) as exc:
            return ReplicaFigures(target, None, None, None, f"/metrics: {type(exc).__name__}")
        return ReplicaFigures(target, stats.hits, stats.queries, stats.requests)

    return bool(workers), list(await asyncio.gather(*(one(t) for t in targets)))


class BreakExplainer:
    """Explains a tenant's latest recorded prompts; token lists are kept between views."""

    def __init__(self, state: ServiceState) -> None:
        cfg = state.settings.llm.vllm
        self.tokenizer = ServerTokenizer(
            cfg.url, cfg.model_name(), api_key=cfg.api_key, concurrency=4, timeout_s=30
        )
        self.block_size: int | None = None
        self.state = state
        self._tokens: OrderedDict[int, list[int]] = OrderedDict()

    async def _block_size(self) -> int:
        if self.block_size is None:
            reply = await self.state.http.get(f"{self.state.vllm_url}/metrics", timeout=5)
            reply.raise_for_status()
            self.block_size = parse_engine_metrics(reply.text).block_size or 16
        return self.block_size

    async def latest(
        self, rows: Sequence[CacheRecord], n: int = 8
    ) -> list[tuple[Break, CacheRecord]]:
        recorded = [r for r in rows if r.prompt][-BREAK_WINDOW:]
        if not recorded:
            return []
        records = to_trace(recorded, self.state.settings.service.cache_isolation)
        todo = [i for i, r in enumerate(recorded) if r.id not in self._tokens]
        if todo:
            encoded = await self.tokenizer.encode_chats_async([records[i].messages for i in todo])
            for i, ids in zip(todo, encoded, strict=True):
                self._tokens[recorded[i].id] = ids
            while len(self._tokens) > TOKEN_CACHE:
                self._tokens.popitem(last=False)
        tokens = [self._tokens[r.id] for r in recorded]
        report = explain(records, tokens, await self._block_size())
        latest = sorted(report.breaks, key=lambda b: -b.request)[:n]
        return [(b, recorded[b.request]) for b in latest]


async def gather(
    state: ServiceState, explainer: BreakExplainer, viewer: Principal
) -> DashboardData:
    """The viewer's tenant's figures. The latest breaks quote prompt text: a viewer sees
    only their own requests' text unless their key is an admin's; the per-replica
    counters (engine-wide, every tenant's traffic) and replica URLs are for admins only.
    Everything is read with bounded queries: aggregates in SQL, the last hour's TTFTs,
    the latest ``BREAK_WINDOW`` recorded prompts."""
    tenant = viewer.tenant
    mine = CacheRecord.tenant_id == tenant
    since = utcnow() - timedelta(minutes=SERIES_MINUTES)
    async with state.sessions() as db:
        by_agent = await group_figures(db, CacheRecord.agent_type, mine)
        by_tier = await group_figures(db, CacheRecord.tier, mine)
        families = await family_figures(db, tenant)
        recent = (
            await db.execute(
                select(CacheRecord.created_at, CacheRecord.ttft)
                .where(mine, CacheRecord.created_at >= since)
                .order_by(CacheRecord.id.desc())
                .limit(SERIES_REQUESTS)
            )
        ).all()
        prompts = select(CacheRecord).where(mine, CacheRecord.prompt.is_not(None))
        if not viewer.admin:
            prompts = prompts.where(CacheRecord.user_id == viewer.user_id)
        latest = list(
            (
                await db.execute(prompts.order_by(CacheRecord.id.desc()).limit(BREAK_WINDOW))
            ).scalars()
        )[::-1]
    stats = summarize(tenant, by_agent, by_tier, state.library.tiers).model_copy(
        update={"families": families}
    )
    router, replicas = False, list[ReplicaFigures]()
    if viewer.admin:
        router, replicas = await replica_figures(state.http, state.vllm_url)
    note: str | None = None
    breaks: list[tuple[Break, CacheRecord]] = []
    if not state.settings.service.record_prompts:
        note = (
            "Prompt text is not recorded, so breaks cannot be explained: set "
            "service.record_prompts: true (kept service.record_prompts_days days)."
        )
    else:
        try:
            breaks = await explainer.latest(latest)
        except (PrefixCacheError, httpx.HTTPError) as exc:
            note = f"Breaks could not be explained now: {exc}"
        if not breaks and note is None:
            note = "No cache breaks among the latest recorded requests."
    if not viewer.admin and note is None:
        note = "Breaks among your own requests (an admin key sees every user's)."
    return DashboardData(
        tenant=tenant,
        stats=stats,
        series=ttft_series(recent, utcnow()),
        replicas=replicas,
        router=router,
        breaks=breaks,
        breaks_note=note,
        admin=viewer.admin,
    )
