"""What every request handler needs, built once at startup and injected (FastAPI
dependencies), never imported as globals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ..llm.interface import LLMInterface
from ..llm.metrics import CacheMetricsRecorder
from ..prompts.library import PromptLibrary
from ..settings import Settings
from .auth import Principal
from .db import CacheRecord, create_engine, session_factory, sqlite_path, utcnow
from .isolation import cache_salt, load_or_create_secret
from .ratelimit import RateLimiter

#: cache records are written in batches, at most this long after their request
RECORD_FLUSH_S = 0.5
#: recorded prompt text past its retention is removed at most this often
PRUNE_EVERY_S = 3600.0


@dataclass
class ServiceState:
    settings: Settings
    library: PromptLibrary
    llm: LLMInterface
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    secret: str
    limiter: RateLimiter
    recorder: CacheMetricsRecorder
    http: httpx.AsyncClient  # the gateway's client to vLLM
    #: tokens of each static prefix, counted once with the server's /tokenize
    prefix_tokens: dict[str, int] = field(default_factory=dict)
    #: verified keys -> (principal, expiry): a revoked key stops working within AUTH_TTL_S
    auth_cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)
    #: cache records being written after their response went out
    background: set[asyncio.Task[None]] = field(default_factory=set)
    #: cache records waiting for the next batched write (one transaction per batch)
    pending_records: list[CacheRecord] = field(default_factory=list)
    _writer: asyncio.Task[None] | None = None
    #: monotonic time of the last removal of expired prompt text (0: never)
    pruned_at: float = 0.0

    def add_record(self, record: CacheRecord) -> None:
        """Queue a cache record; a writer commits the queue every RECORD_FLUSH_S."""
        self.pending_records.append(record)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_records())

    async def _write_records(self) -> None:
        await asyncio.sleep(RECORD_FLUSH_S)
        await self.flush_records()

    async def flush_records(self) -> None:
        batch, self.pending_records = self.pending_records, []
        if not batch:
            return
        async with self.sessions() as db:
            db.add_all(batch)
            await db.commit()
        if time.monotonic() - self.pruned_at > PRUNE_EVERY_S:
            await self.prune_prompts()

    async def prune_prompts(self) -> int:
        """Forget recorded prompt text older than ``service.record_prompts_days`` (the
        figures stay). Run at startup and at most hourly after that."""
        self.pruned_at = time.monotonic()
        cutoff = utcnow() - timedelta(days=self.settings.service.record_prompts_days)
        async with self.sessions() as db:
            result = await db.execute(
                update(CacheRecord)
                .where(CacheRecord.prompt.is_not(None), CacheRecord.created_at < cutoff)
                .values(prompt=None)
            )
            await db.commit()
        return int(getattr(result, "rowcount", 0) or 0)

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the response (a record of figures); kept until done."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    @property
    def vllm_url(self) -> str:
        return self.settings.llm.vllm.url

    def salt_for(self, principal: Principal) -> str | None:
        return cache_salt(self.secret, principal, self.settings.service.cache_isolation)

    async def close(self) -> None:
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.flush_records()
        await self.llm.__aexit__()
        await self.http.aclose()
        await self.engine.dispose()


def build_state(settings: Settings) -> ServiceState:
    service = settings.service
    url = service.resolved_database_url()
    secret = service.secret
    if secret is None:
        db_file = sqlite_path(url)
        folder = db_file.parent if db_file is not None else Path.home() / ".cache" / "prefixcache"
        secret = load_or_create_secret(folder / "service.secret")
    library = PromptLibrary(settings)
    recorder = CacheMetricsRecorder(library.tiers)
    cfg = settings.llm.vllm
    llm = LLMInterface(cfg.client(), recorder=recorder, ollama=settings.llm.ollama)
    engine = create_engine(url)
    timeout = httpx.Timeout(cfg.request_timeout_s, connect=10.0)
    return ServiceState(
        settings=settings,
        library=library,
        llm=llm,
        engine=engine,
        sessions=session_factory(engine),
        secret=secret,
        limiter=RateLimiter(service.rate_limit_per_minute),
        recorder=recorder,
        http=httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256)),
    )
