"""Requests per minute per API key.

``SharedRateLimiter`` keeps the count in the database (``rate_windows``: one row per key
and minute), so every instance of the service behind a load balancer enforces one limit:
a sliding window made of the current minute's count plus the previous minute's, weighted
by how much of it is still inside the last 60 s. The increment is one atomic upsert.
"""

from __future__ import annotations

import time

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .db import RateWindow


def _wait(previous: int, current: int, limit: int, fraction: float) -> float:
    """Seconds until the sliding count falls below ``limit`` (0: may go now)."""
    count = previous * (1 - fraction) + current
    if count <= limit:
        return 0.0
    if current > limit or previous == 0:
        return (1 - fraction) * 60 + 1  # only the next minute brings relief
    # the previous minute's weight falls by previous/60 per second
    return min((count - limit) / previous * 60, (1 - fraction) * 60 + 1)


class SharedRateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute

    async def check(self, db: AsyncSession, key: str, now: float | None = None) -> float:
        """Count this request; 0 if it may go, else the seconds to wait (Retry-After)."""
        if self.per_minute <= 0:
            return 0.0
        now = time.time() if now is None else now
        window = int(now // 60)
        fraction = (now % 60) / 60
        table = RateWindow.__table__
        assert isinstance(table, Table)
        dialect = db.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(table)
            .values(key_id=key, window=window, count=1)
            .on_conflict_do_update(
                index_elements=["key_id", "window"], set_={"count": table.c.count + 1}
            )
            .returning(table.c.count)
        )
        current = int((await db.execute(statement)).scalar_one())
        previous = (
            await db.execute(
                select(RateWindow.count).where(
                    RateWindow.key_id == key, RateWindow.window == window - 1
                )
            )
        ).scalar()
        await db.commit()
        return _wait(int(previous or 0), current, self.per_minute, fraction)

    @staticmethod
    async def forget_old(db: AsyncSession, now: float | None = None) -> None:
        """Drop the windows no limit looks at any more."""
        window = int((time.time() if now is None else now) // 60)
        await db.execute(delete(RateWindow).where(RateWindow.window < window - 1))
        await db.commit()
