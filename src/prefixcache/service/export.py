"""The requests the service recorded, as a trace for ``prefixcache explain`` and
``prefixcache simulate``. Only records with prompt text are exported (the text is kept
only with ``service.record_prompts``, for ``service.record_prompts_days`` days).

The trace's ``cache_salt`` is a label for the cache the request shared (the tenant, the
user, or none, by ``service.cache_isolation``), not the secret salt the engine saw:
requests share a label exactly when they shared a salt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..traces.records import TraceRecord
from .db import CacheRecord


def salt_label(record: CacheRecord, isolation: str) -> str | None:
    if isolation == "shared":
        return None
    return record.user_id if isolation == "user" else record.tenant_id


def labels_of(row: CacheRecord) -> dict[str, str]:
    """The record's labels; a gateway request the stabilizer saw also carries its mode and
    family, and a rewritten one what moved (the messages are the ones sent upstream)."""
    labels = {"tenant": row.tenant_id, "endpoint": row.endpoint, "tier": row.tier}
    if row.stabilize:
        labels["stabilize"] = row.stabilize
    if row.family:
        labels["family"] = row.family
    if row.rewritten:
        tools = "sorted" if row.tools_sorted else "unchanged"
        labels["stabilized"] = f"lines={row.moved_lines or 0}; tools={tools}"
    return labels


def to_trace(rows: Sequence[CacheRecord], isolation: str) -> list[TraceRecord]:
    out = []
    for row in rows:
        if not row.prompt:
            continue
        out.append(
            TraceRecord(
                messages=tuple(json.loads(row.prompt)),
                model=row.model,
                cache_salt=salt_label(row, isolation),
                agent=row.agent_type,
                time=row.created_at.timestamp(),
                prompt_tokens=row.prompt_tokens,
                cached_tokens=row.cached_tokens,
                ttft=row.ttft,
                labels=labels_of(row),
                line=row.id,  # the record's id (not written to a file)
            )
        )
    return out


async def recorded_trace(
    db: AsyncSession, isolation: str, tenant: str | None = None, limit: int | None = None
) -> list[TraceRecord]:
    """The latest ``limit`` recorded requests (of ``tenant``), oldest first."""
    query = select(CacheRecord).where(CacheRecord.prompt.is_not(None))
    if tenant is not None:
        query = query.where(CacheRecord.tenant_id == tenant)
    query = query.order_by(CacheRecord.id.desc())
    if limit is not None:
        query = query.limit(limit)
    rows = list((await db.execute(query)).scalars())
    return to_trace(rows[::-1], isolation)
