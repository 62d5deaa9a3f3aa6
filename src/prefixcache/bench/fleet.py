"""The ``fleet`` benchmark: the same agent sessions through vllm-router under each policy,
with fresh replica caches and a fresh router per policy, beside one replica (the
ceiling) and unique salts (the floor).

Figures per run: the fleet's hit rate from the replicas' own ``/metrics`` deltas, the
clients' cached / prompt tokens as a cross-check, balance (max / mean requests and
prompt tokens per replica), TTFT p50/p95, requests/s and client errors.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine.fleet import Fleet, FleetFigures, fleet_figures
from ..errors import PrefixCacheError
from ..layout.warming import warm_prefixes
from ..llm.interface import LLMInterface
from ..llm.metrics import percentile
from ..llm.models import Message
from ..prompts.library import PromptLibrary
from ..traces.records import TraceRecord
from .report import Grid
from .scenarios import CONCURRENT_AGENTS, MIXED_TASKS, USERS

POLICIES = ("round_robin", "cache_aware", "consistent_hash", "sticky_least_loaded")


@dataclass
class FleetRun:
    name: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    wall: float = 0.0
    figures: FleetFigures | None = None
    warmup_s: float | None = None
    #: every answered request, for `prefixcache simulate` (labels: run = this run's name)
    records: list[TraceRecord] = field(default_factory=list)

    @property
    def client_hit_rate(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


def session_plan(sessions: int, turns: int) -> list[tuple[str, str, list[str]]]:
    """(session id, agent, the user's turns) per session: agents differ, one base prompt."""
    tasks = [t for _, t in MIXED_TASKS]
    plan = []
    for s in range(sessions):
        agent = CONCURRENT_AGENTS[s % len(CONCURRENT_AGENTS)]
        plan.append((f"fleet-{s:02d}", agent, [tasks[(s + t) % len(tasks)] for t in range(turns)]))
    return plan


async def run_sessions(
    llm: LLMInterface,
    library: PromptLibrary,
    plan: list[tuple[str, str, list[str]]],
    run: FleetRun,
    *,
    salt: str | None,
    unique_salts: bool = False,
    max_tokens: int = 4,
) -> None:
    """Every session at once, its turns in order, append-only history."""

    async def session(session_id: str, agent: str, turns: list[str], number: int) -> None:
        system = library.compose_prompt(
            agent_type=agent, session_id=session_id, user_name=USERS[number % len(USERS)]
        ).text
        history: list[Message] = [{"role": "system", "content": system}]
        for turn in turns:
            messages = [*history, {"role": "user", "content": turn}]
            request_salt = f"floor-{uuid.uuid4().hex}" if unique_salts else salt
            try:
                response = await llm.chat_completion(
                    messages,
                    max_tokens=max_tokens,
                    cache_salt=request_salt,
                    agent_type=agent,
                    session_id=session_id,
                    ignore_eos=True,
                )
            except PrefixCacheError:
                run.errors += 1
                continue
            run.requests += 1
            run.records.append(
                TraceRecord.from_response(
                    messages,
                    response,
                    cache_salt=request_salt,
                    agent=agent,
                    session=session_id,
                    labels={"run": run.name},
                )
            )
            run.prompt_tokens += response.prompt_tokens
            run.cached_tokens += response.cached_tokens or 0
            if response.ttft is not None:
                run.ttfts.append(response.ttft)
            history = [*messages, {"role": "assistant", "content": response.content}]

    started = time.perf_counter()
    await asyncio.gather(*(session(s, a, t, n) for n, (s, a, t) in enumerate(plan)))
    run.wall = time.perf_counter() - started


def fleet_benchmark(
    fleet: Fleet,
    library: PromptLibrary,
    *,
    sessions: int = 8,
    turns: int = 4,
    max_tokens: int = 4,
    policies: tuple[str, ...] = POLICIES,
    progress: Callable[[str], None] | None = None,
) -> list[FleetRun]:
    """Run every policy on the running replicas (fleet.dev_mode for fresh caches)."""
    say = progress or (lambda _m: None)
    plan = session_plan(sessions, turns)
    agents = [a for _, a, _ in plan]
    runs: list[FleetRun] = []
    cfg = fleet.config.client()

    def measure(name: str, url: str, **kwargs: object) -> FleetRun:
        fleet.reset_caches()
        run = FleetRun(name)
        salt = f"fleet-{uuid.uuid4().hex[:8]}"
        client = cfg.model_copy(update={"base_url": url, "affinity": "session"})

        async def warm_every_replica() -> None:
            started = time.perf_counter()
            for replica in fleet.replicas:  # every replica, directly (not via the router)
                direct = cfg.model_copy(update={"base_url": replica.base_url})
                async with LLMInterface(direct) as llm:
                    await warm_prefixes(llm, library, agents, cache_salt=salt)
            run.warmup_s = time.perf_counter() - started

        async def go() -> None:
            async with LLMInterface(client) as llm:
                await run_sessions(
                    llm,
                    library,
                    plan,
                    run,
                    salt=salt,
                    max_tokens=max_tokens,
                    unique_salts=bool(kwargs.get("unique")),
                )

        if kwargs.get("warm"):
            asyncio.run(warm_every_replica())
        before = fleet.replica_stats()  # after warming: the fleet's figures are the sessions'
        asyncio.run(go())
        run.figures = fleet_figures(before, fleet.replica_stats())
        say(f"{name}: {run.requests} requests, fleet hit rate {run.figures.hit_rate}")
        runs.append(run)
        return run

    fleet.stop_router()
    measure("single replica (ceiling)", fleet.replicas[0].base_url)
    for policy in policies:
        fleet.start_router(policy)
        try:
            measure(policy, fleet.router_url)
        finally:
            fleet.stop_router()
    fleet.start_router("sticky_least_loaded")
    try:
        measure("sticky_least_loaded + warming", fleet.router_url, warm=True)
        measure("unique salts (floor)", fleet.router_url, unique=True)
    finally:
        fleet.stop_router()
    return runs


def fleet_grid(runs: list[FleetRun], replicas: int) -> Grid:
    rows = []

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    def num(value: float | None, fmt: str = "{:.2f}") -> str:
        return "-" if value is None else fmt.format(value)

    for run in runs:
        f = run.figures
        per = "/".join(f"{r['requests']:.0f}" if r else "-" for r in f.replicas) if f else "-"
        rows.append(
            [
                run.name,
                pct(f.hit_rate if f else None),
                pct(run.client_hit_rate),
                per,
                num(f.balance_requests if f else None),
                num(f.balance_prompt_tokens if f else None),
                num(percentile(run.ttfts, 50)),
                num(percentile(run.ttfts, 95)),
                num(run.requests / run.wall if run.wall else None),
                str(run.errors),
                num(run.warmup_s, "{:.1f}"),
            ]
        )
    return Grid(
        f"Fleet: {replicas} replicas behind vllm-router, the same sessions per policy",
        [
            "run",
            "fleet hit rate",
            "client hit rate",
            "requests per replica",
            "balance (req)",
            "balance (tokens)",
            "TTFT p50 s",
            "TTFT p95 s",
            "req/s",
            "errors",
            "warm-up s",
        ],
        rows,
        "fleet hit rate = sum of the replicas' vllm:prefix_cache_hits_total deltas / "
        "queries deltas; client hit rate = cached / prompt tokens the clients got; balance = "
        "max / mean per replica. Caches reset (/reset_prefix_cache) and a fresh router per run.",
    )
