"""What every request handler needs, built once at startup and injected (FastAPI
dependencies), never imported as globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ..llm.interface import LLMInterface
from ..llm.metrics import CacheMetricsRecorder
from ..prompts.library import PromptLibrary
from ..settings import Settings, default_home
from .admission import Admission, Limits
from .auth import Principal
from .db import (
    CacheRecord,
    ChatSession,
    Instance,
    Message,
    Task,
    TaskStatus,
    TurnStatus,
    create_engine,
    session_factory,
    sqlite_path,
    utcnow,
)
from .isolation import cache_salt, load_or_create_secret
from .ratelimit import SharedRateLimiter
from .stabilizer import GatewayStabilizer
from .warmup import Warmer

if TYPE_CHECKING:
    from .readiness import EngineFacts

logger = logging.getLogger("prefixcache.service")

#: cache records are written in batches, at most this long after their request
RECORD_FLUSH_S = 0.5
#: recorded prompt text and sessions past their retention are removed this often
PRUNE_EVERY_S = 3600.0
#: an instance writes its heartbeat this often; one silent for DEAD_AFTER_S is dead
HEARTBEAT_S = 10.0
DEAD_AFTER_S = 30.0


@dataclass
class ServiceState:
    settings: Settings
    library: PromptLibrary
    llm: LLMInterface
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    secret: str
    limiter: SharedRateLimiter
    admission: Admission
    recorder: CacheMetricsRecorder
    http: httpx.AsyncClient  # the gateway's client to vLLM
    #: this process, in the service_instances table (pending turns carry it)
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: tokens of each static prefix, counted once with the server's /tokenize
    prefix_tokens: dict[str, int] = field(default_factory=dict)
    #: cache records being written after their response went out
    background: set[asyncio.Task[None]] = field(default_factory=set)
    #: cache records waiting for the next batched write (one transaction per batch)
    pending_records: list[CacheRecord] = field(default_factory=list)
    _writer: asyncio.Task[None] | None = None
    _maintenance: asyncio.Task[None] | None = None
    #: warm-up at start and after engine restarts, prefetch of the next agents
    warmer: Warmer | None = None
    #: monotonic time of the last removal of expired text (0: never)
    pruned_at: float = 0.0
    #: the gateway's stabilizer (learned families, predictions)
    stabilizer: GatewayStabilizer | None = None
    #: what vLLM's /metrics said at the last /ready that reached it
    engine_facts: EngineFacts | None = None

    def add_record(self, record: CacheRecord) -> None:
        """Queue a cache record; a writer commits the queue every RECORD_FLUSH_S."""
        self.pending_records.append(record)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_records())

    async def _write_records(self) -> None:
        # until the queue is empty: a record queued while a batch was being committed
        # would otherwise wait for the next request's writer (or for shutdown)
        while self.pending_records:
            await asyncio.sleep(RECORD_FLUSH_S)
            await self.flush_records()

    async def flush_records(self) -> None:
        batch, self.pending_records = self.pending_records, []
        if not batch:
            return
        async with self.sessions() as db:
            db.add_all(batch)
            await db.commit()

    async def prune_prompts(self) -> int:
        """Forget recorded prompt text older than ``service.record_prompts_days`` (the
        figures stay)."""
        cutoff = utcnow() - timedelta(days=self.settings.service.record_prompts_days)
        async with self.sessions() as db:
            result = await db.execute(
                update(CacheRecord)
                .where(CacheRecord.prompt.is_not(None), CacheRecord.created_at < cutoff)
                .values(prompt=None)
            )
            await db.commit()
        return int(getattr(result, "rowcount", 0) or 0)

    async def prune_sessions(self) -> int:
        """Delete sessions untouched for ``service.retention_days``, with their messages,
        tasks (the database cascades) and cache records."""
        days = self.settings.service.retention_days
        if days is None:
            return 0
        old = select(ChatSession.id).where(ChatSession.updated_at < utcnow() - timedelta(days=days))
        async with self.sessions() as db:
            await db.execute(delete(CacheRecord).where(CacheRecord.session_id.in_(old)))
            result = await db.execute(delete(ChatSession).where(ChatSession.id.in_(old)))
            await db.commit()
        return int(getattr(result, "rowcount", 0) or 0)

    async def prune(self) -> None:
        """Everything past its retention, and rate windows no limit reads any more."""
        self.pruned_at = time.monotonic()
        await self.prune_prompts()
        await self.prune_sessions()
        async with self.sessions() as db:
            await SharedRateLimiter.forget_old(db)

    async def heartbeat(self) -> None:
        """Say this instance is alive; mark the turns and tasks that dead instances (or a
        crash of this one's predecessor) left waiting as ``interrupted``."""
        now = utcnow()
        async with self.sessions() as db:
            row = await db.get(Instance, self.instance_id)
            if row is None:
                db.add(Instance(id=self.instance_id, started_at=now, seen_at=now))
            else:
                row.seen_at = now
            await db.commit()
            alive = select(Instance.id).where(
                Instance.seen_at >= now - timedelta(seconds=DEAD_AFTER_S)
            )
            orphan = or_(Message.instance_id.is_(None), Message.instance_id.not_in(alive))
            await db.execute(
                update(Message)
                .where(Message.status == TurnStatus.PENDING, orphan)
                .values(
                    status=TurnStatus.INTERRUPTED,
                    instance_id=None,
                    error="the service instance handling this turn stopped before the reply",
                )
            )
            orphan_task = or_(Task.instance_id.is_(None), Task.instance_id.not_in(alive))
            await db.execute(
                update(Task)
                .where(Task.status == TaskStatus.RUNNING, orphan_task)
                .values(
                    status=TaskStatus.INTERRUPTED,
                    instance_id=None,
                    finished_at=now,
                    error="the service instance running this task stopped before the result",
                )
            )
            await db.execute(delete(Instance).where(Instance.seen_at < now - timedelta(days=1)))
            await db.commit()

    async def start(self) -> None:
        """At startup: register, sweep, prune; then keep doing it in the background."""
        await self.heartbeat()
        await self.prune()
        self._maintenance = asyncio.create_task(self._maintain())
        self.warmer = Warmer(self)
        self.warmer.start()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.heartbeat()
                if time.monotonic() - self.pruned_at > PRUNE_EVERY_S:
                    await self.prune()
            except Exception:  # the database may be briefly unreachable: try next time
                logger.warning("service maintenance failed; retrying", exc_info=True)

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
        if self.warmer is not None:
            await self.warmer.stop()
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.flush_records()
        await self.llm.__aexit__()
        await self.http.aclose()
        with contextlib.suppress(Exception):  # a clean stop: the others need not wait
            async with self.sessions() as db:
                await db.execute(delete(Instance).where(Instance.id == self.instance_id))
                await db.commit()
        await self.engine.dispose()


def build_state(settings: Settings) -> ServiceState:
    service = settings.service
    url = service.resolved_database_url()
    secret = service.secret
    if secret is None:
        db_file = sqlite_path(url)
        folder = db_file.parent if db_file is not None else default_home() / "service"
        secret = load_or_create_secret(folder / "service.secret")
    library = PromptLibrary(settings)
    recorder = CacheMetricsRecorder(library.tiers)
    cfg = settings.llm.vllm
    llm = LLMInterface(cfg.client(), recorder=recorder, ollama=settings.llm.ollama)
    engine = create_engine(url)
    timeout = httpx.Timeout(cfg.request_timeout_s, connect=10.0)
    limits = Limits(
        per_key=service.max_concurrent_per_key,
        per_tenant=service.tenant_limit(),
        inflight=service.max_inflight,
        queue_timeout_s=service.queue_timeout_s,
    )
    http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256))
    return ServiceState(
        settings=settings,
        library=library,
        llm=llm,
        engine=engine,
        sessions=session_factory(engine),
        secret=secret,
        limiter=SharedRateLimiter(service.rate_limit_per_minute),
        admission=Admission(limits, recorder.registry),
        recorder=recorder,
        http=http,
        stabilizer=GatewayStabilizer(service.stabilize, http, cfg.url, cfg.model_name()),
    )
