"""Warming and prefetching in the service: every cache lever the benchmark measured,
on the serving path.

At start, once the engine answers (every replica of a fleet, directly), the service:

1. pads its prompts' static layers to the engine's KV block boundaries (``align``:
   shared layers always, the agent's own layer when the padding is under half a block,
   the policy the benchmark measured best);
2. tokenizes each agent's prefix once (so a request never waits on ``/tokenize`` for its
   context check), and hashes its full blocks;
3. warms the static prefix of each agent under each tenant salt that has keys, in the
   background, most used (tenant, agent) pairs first, within ``kv_fraction`` of the
   engine's KV blocks (blocks shared between a tenant's agents counted once); what does
   not fit is left cold and logged. ``/ready`` says ``warming n/m`` and stays 200.

A tenant without keys at start is warmed at its first request. When the engine goes down
and comes back (a restart, an OOM kill), everything is warmed again. ``prefetch`` warms
the agents a caller says come next, under its salt, on the replica its session is routed
to; a failed prefetch is logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select

from ..layout.alignment import align_to_blocks
from ..layout.cache_model import block_hashes
from ..layout.warming import warm_messages
from ..llm.inspector import EngineInspector, workers_in
from ..llm.interface import LLMInterface
from ..prompts.library import PromptLibrary
from .auth import Principal
from .db import ApiKey, CacheRecord, User

if TYPE_CHECKING:
    from .state import ServiceState

logger = logging.getLogger("prefixcache.service")

#: a prefetched or warmed prefix is taken as still cached this long (vLLM may evict it)
WARM_TTL_S = 600.0
#: how often the engine's health is checked (a down -> up change re-warms)
HEALTH_EVERY_S = 5.0
#: the one warm-up scope of a shared cache (cache_isolation "shared": no salt)
SHARED = "(shared)"


@dataclass(frozen=True)
class WarmItem:
    tenant: str
    agent: str
    #: blocks of this agent's prefix not already planned for this tenant
    new_blocks: int


def plan_warmup(
    tenants: Sequence[str],
    agents: Sequence[str],
    prefix_blocks: Mapping[str, Sequence[int]],
    usage: Mapping[tuple[str, str], int],
    kv_blocks: int | None,
    fraction: float,
) -> tuple[list[WarmItem], list[WarmItem]]:
    """(to warm, left cold): the (tenant, agent) pairs in order of use (most requests
    first; then tenants and agents in the given order), each taken while the tenant's
    distinct blocks so far fit ``fraction`` of ``kv_blocks``. ``prefix_blocks`` holds each
    agent's block hashes (salt-free: tenants never share blocks, agents of one tenant
    share their common layers). No ``kv_blocks``: everything is warmed."""
    budget = None if kv_blocks is None else int(kv_blocks * fraction)
    order = {(t, a): (i, j) for i, t in enumerate(tenants) for j, a in enumerate(agents)}
    pairs = sorted(order, key=lambda p: (-usage.get(p, 0), order[p]))
    seen: dict[str, set[int]] = {t: set() for t in tenants}
    used = 0
    warm: list[WarmItem] = []
    cold: list[WarmItem] = []
    for tenant, agent in pairs:
        hashes = prefix_blocks.get(agent, ())
        new = [h for h in hashes if h not in seen[tenant]]
        item = WarmItem(tenant, agent, len(new))
        if budget is not None and used + len(new) > budget:
            cold.append(item)
            continue
        seen[tenant].update(new)
        used += len(new)
        warm.append(item)
    return warm, cold


@dataclass
class Warmer:
    state: ServiceState
    #: "off", "waiting for the engine", "aligning", "warming", "warm"
    phase: str = "waiting for the engine"
    done: int = 0
    total: int = 0
    cold: list[WarmItem] = field(default_factory=list)
    #: (salt, agent) -> monotonic time it was last warmed or prefetched
    warmed: dict[tuple[str | None, str], float] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)
    prefix_blocks: dict[str, list[int]] = field(default_factory=dict)
    kv_blocks: int | None = None
    aligned: bool = False
    _task: asyncio.Task[None] | None = None
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def progress(self) -> str | None:
        """For /ready: ``warming 12/22``, ``warm 22/22 (3 left cold)``, or None when off."""
        if not self.state.settings.service.warm.enabled:
            return None
        if self.phase in ("warming", "warm"):
            cold = f" ({len(self.cold)} left cold)" if self.cold else ""
            return f"{self.phase} {self.done}/{self.total}{cold}"
        return self.phase

    def start(self) -> None:
        if self.state.settings.service.warm.enabled:
            self._task = asyncio.create_task(self._watch())
        else:
            self.phase = "off"

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the engine's health, and a warm-up after every down -> up ----------------------
    async def _watch(self) -> None:
        up = False
        while True:
            healthy = await self._healthy()
            if healthy and not up:
                self.warmed.clear()  # a fresh engine has nothing cached
                try:
                    await self.warm_all()
                except Exception:  # the engine went away mid-way: the next check retries
                    logger.warning(
                        "warm-up failed; retrying when the engine answers", exc_info=True
                    )
                    healthy = False
            if not healthy:
                self.phase = "waiting for the engine"
            up = healthy
            await asyncio.sleep(HEALTH_EVERY_S)

    async def _healthy(self) -> bool:
        try:
            answer = await self.state.http.get(f"{self.state.vllm_url}/health", timeout=3)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    async def _targets(self) -> list[str]:
        """Every replica behind a router (warmed directly), else the engine itself."""
        try:
            answer = await self.state.http.get(f"{self.state.vllm_url}/list_workers", timeout=3)
        except httpx.HTTPError:
            return [self.state.vllm_url]
        return workers_in(answer) or [self.state.vllm_url]

    # -- the warm-up --------------------------------------------------------------------
    async def prepare(self) -> None:
        """Align (once), tokenize each agent's warm prompt, read the KV capacity."""
        library = self.state.library
        cfg = self.state.settings.llm.vllm
        agents = library.tiers.agents()
        target = (await self._targets())[0]

        def measure() -> tuple[int | None, int | None, dict[str, list[int]], dict[str, int]]:
            with EngineInspector(target, cfg.model_name(), cfg.api_key, timeout=60) as inspector:
                stats = inspector.cache_stats()
                size = stats.block_size
                if size and not self.aligned and self.state.settings.service.warm.align:
                    self.phase = "aligning"
                    # computed on a copy, then swapped in at once: a request composed
                    # meanwhile never sees half of the padding
                    scratch = PromptLibrary(self.state.settings)
                    padding = align_to_blocks(
                        scratch.composer, inspector, size, agents, own_layer="auto"
                    )
                    library.composer.set_padding(padding)
                    self.aligned = True
                hashes: dict[str, list[int]] = {}
                prefix_tokens: dict[str, int] = {}
                for agent in agents:
                    tokens = inspector.tokenize_messages(warm_messages(library, agent))
                    hashes[agent] = block_hashes(tokens, size or 16)
                    prefix = library.compose_prompt(agent_type=agent).prefix
                    prefix_tokens[prefix] = len(
                        inspector.tokenize_messages([{"role": "system", "content": prefix}])
                    )
                return stats.num_blocks, size, hashes, prefix_tokens

        kv, _, hashes, prefix_tokens = await asyncio.to_thread(measure)
        self.kv_blocks, self.prefix_blocks = kv, hashes
        self.state.prefix_tokens.update(prefix_tokens)  # the context check needs no /tokenize

    async def warm_all(self) -> None:
        await self.prepare()
        await self._warm_tenants(await self._scopes(), await self._usage())

    async def _scopes(self) -> list[str]:
        """Whose prefixes to warm: each tenant with keys; one scope when the cache is
        shared (every tenant has the same salt: warmed once); none when each user has a
        salt of their own (a prefix warmed per tenant would never be reused)."""
        isolation = self.state.settings.service.cache_isolation
        if isolation == "user":
            return []
        if isolation == "shared":
            return [SHARED]
        return await self._tenants_with_keys()

    async def _warm_tenants(
        self, tenants: Sequence[str], usage: Mapping[tuple[str, str], int]
    ) -> None:
        agents = self.state.library.tiers.agents()
        fraction = self.state.settings.service.warm.kv_fraction
        plan, cold = plan_warmup(
            tenants, agents, self.prefix_blocks, usage, self.kv_blocks, fraction
        )
        self.tenants.update(tenants)
        self.cold = cold
        self.total, self.done = len(plan), 0
        self.phase = "warming"
        started = time.perf_counter()
        if cold:
            logger.info(
                "warm-up: %d (tenant, agent) prefixes fit %.0f%% of the engine's %s KV blocks; "
                "left cold: %s",
                len(plan),
                fraction * 100,
                self.kv_blocks,
                ", ".join(f"{c.tenant}/{c.agent}" for c in cold[:20])
                + (" ..." if len(cold) > 20 else ""),
            )
        targets = await self._targets()
        for item in plan:
            salt = self.salt_of(item.tenant)
            for url in targets:
                await self._warm_one(url, salt, item.agent, None)
            self.warmed[(salt, item.agent)] = time.monotonic()
            self.done += 1
        self.phase = "warm"
        logger.info(
            "warm-up: %d prefixes on %d engine(s) in %.1f s",
            len(plan),
            len(targets),
            time.perf_counter() - started,
        )

    async def _warm_one(self, url: str, salt: str | None, agent: str, session: str | None) -> None:
        """One ``max_tokens=1`` prefill of the agent's prefix, through a client of its own
        (its figures are not the tenants' traffic: they stay out of /metrics)."""
        cfg = self.state.settings.llm.vllm
        async with LLMInterface(cfg.client().model_copy(update={"base_url": url})) as llm:
            await llm.chat_completion(
                warm_messages(self.state.library, agent),
                max_tokens=1,
                cache_salt=salt,
                agent_type=agent,
                session_id=session,
            )

    def salt_of(self, tenant: str) -> str | None:
        """The tenant's salt (None for the shared cache)."""
        return self.state.salt_for(Principal("warm", tenant, "warm", None))

    async def _tenants_with_keys(self) -> list[str]:
        async with self.state.sessions() as db:
            rows = await db.execute(
                select(User.tenant_id)
                .join(ApiKey, ApiKey.user_id == User.id)
                .where(ApiKey.revoked_at.is_(None))
                .distinct()
                .order_by(User.tenant_id)
            )
            return [r[0] for r in rows]

    async def _usage(self) -> dict[tuple[str, str], int]:
        async with self.state.sessions() as db:
            rows = await db.execute(
                select(CacheRecord.tenant_id, CacheRecord.agent_type, func.count()).group_by(
                    CacheRecord.tenant_id, CacheRecord.agent_type
                )
            )
            return {(t, a): int(n) for t, a, n in rows}

    # -- at a request -------------------------------------------------------------------
    def tenant_seen(self, principal: Principal) -> None:
        """A tenant that had no key at start: warm it in the background, once (only
        under per-tenant salts: a shared cache is warm already, per-user salts are not
        warmed)."""
        if (
            self.state.settings.service.cache_isolation != "tenant"
            or self.phase != "warm"
            or principal.tenant in self.tenants
        ):
            return
        self.tenants.add(principal.tenant)
        self._spawn(self._warm_tenants([principal.tenant], {}), "a new tenant's warm-up")

    def prefetch(self, principal: Principal, agents: Sequence[str], session: str | None) -> None:
        """Warm these agents' prefixes under the caller's salt, on the replica its
        session is routed to, unless warmed lately; in the background."""
        if not self.state.settings.service.warm.enabled:
            return
        salt = self.state.salt_for(principal)
        now = time.monotonic()
        todo = [
            a
            for a in dict.fromkeys(agents)
            if now - self.warmed.get((salt, a), -WARM_TTL_S) >= WARM_TTL_S
        ]
        for agent in todo:
            self.warmed[(salt, agent)] = now
            self._spawn(
                self._warm_one(self.state.vllm_url, salt, agent, session), f"prefetch of {agent}"
            )

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:  # a missed optimisation, never the caller's failure
                logger.warning("%s failed: %s", what, exc)

        task = asyncio.create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
