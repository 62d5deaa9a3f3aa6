"""Two real vLLM replicas behind the real vllm-router: sessions stay on their replica,
warming reaches every replica, a stopped replica's sessions move without client errors,
and a restarted replica is taken back. Loopback only, bounded."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prefixcache import ClientSettings, LLMInterface, PromptLibrary, Settings, warm_prefixes
from prefixcache.engine.fleet import Fleet, fleet_figures
from prefixcache.llm.models import Message
from prefixcache.settings import FleetSettings, VLLMConfig, default_home

from ..ports import free_ports
from .service_process import COMPACT_PROMPTS, ServiceProcess
from .token_ledger import LEDGER

pytestmark = [pytest.mark.integration, pytest.mark.runs_last]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # outside the kernel's ephemeral range: nothing can take them before the servers start
    router, prometheus, base = free_ports(3, span=2)
    config = VLLMConfig(
        device="cpu",
        state_dir=tmp_path_factory.mktemp("fleet-state"),
        model_cache_dir=default_home() / "models",
        request_timeout_s=300,
    )
    settings = FleetSettings(
        replicas=2,
        router_port=router,
        prometheus_port=prometheus,
        replica_base_port=base,
        kv_space_gib=1,
    )
    local = Fleet(config, settings, progress=print)
    with local:
        for replica in local.replicas:
            LEDGER.watch(replica.base_url)
        yield local
        LEDGER.account()  # before the replicas stop
    assert local.router_pid() is None
    assert all(r.recorded_pid() is None for r in local.replicas)


async def _sessions(
    url: str, library: PromptLibrary, names: list[str], turns: int, salt: str
) -> dict[str, list[tuple[int, int]]]:
    """Sessions at once; per session, (prompt, cached) tokens of each turn."""
    out: dict[str, list[tuple[int, int]]] = {}
    cfg = ClientSettings(base_url=url, served_model_name="smollm2-135m-instruct", max_retries=2)

    async def one(name: str, agent: str) -> None:
        history: list[Message] = [
            {
                "role": "system",
                "content": library.compose_prompt(agent_type=agent, session_id=name).text,
            }
        ]
        async with LLMInterface(cfg) as llm:
            for turn in range(turns):
                messages = [*history, {"role": "user", "content": f"Step {turn} of {name}."}]
                response = await llm.chat_completion(
                    messages, max_tokens=2, cache_salt=salt, session_id=name, ignore_eos=True
                )
                out.setdefault(name, []).append(
                    (response.prompt_tokens, response.cached_tokens or 0)
                )
                history = [*messages, {"role": "assistant", "content": response.content}]

    agents = ["frontend-engineer", "code-reviewer", "backend-engineer", "prd-writer"]
    await asyncio.gather(*(one(n, agents[i % len(agents)]) for i, n in enumerate(names)))
    return out


def test_sessions_stay_on_their_replica_and_warming_reaches_all(fleet: Fleet) -> None:
    library = PromptLibrary(Settings(prompt_dirs=[COMPACT_PROMPTS]))
    status = fleet.status()
    assert status.router_healthy and all(r.healthy for r in status.replicas)
    assert status.policy == "sticky_least_loaded"

    async def warm_all() -> None:
        for replica in fleet.replicas:
            async with LLMInterface(
                ClientSettings(base_url=replica.base_url, served_model_name="smollm2-135m-instruct")
            ) as llm:
                await warm_prefixes(
                    llm, library, ["frontend-engineer", "code-reviewer"], cache_salt="t1"
                )

    asyncio.run(warm_all())
    before = fleet.replica_stats()
    names = [f"s{i}" for i in range(4)]
    turns = asyncio.run(_sessions(fleet.router_url, library, names, 3, "t1"))
    figures = fleet_figures(before, fleet.replica_stats())
    # sticky on x-session-id: every later turn of a session reuses its whole history
    for name, rows in turns.items():
        for (prev_prompt, _), (_, cached) in itertools.pairwise(rows):
            assert cached >= prev_prompt - 128, (name, rows)
    # warmed on every replica: even the first turn of a warmed agent hits the shared base
    assert all(rows[0][1] >= 256 for rows in turns.values())  # the base's 2 full blocks
    assert all(r is not None and r["requests"] > 0 for r in figures.replicas)  # both used
    # (measured 0.79 on the compact prompts: a cold turn costs a larger share of them)
    assert figures.hit_rate is not None and figures.hit_rate > 0.7
    assert figures.balance_requests is not None and figures.balance_requests <= 1.5


def test_the_dashboard_shows_each_replica_behind_the_router(fleet: Fleet, tmp_path: Path) -> None:
    """A service in front of the router: /dashboard lists both replicas (found through
    vllm-router's /list_workers) with each one's own prefix cache counters."""
    proc = ServiceProcess(tmp_path, fleet.router_url, rate_limit_per_minute=0)
    proc.start()
    try:
        key = proc.key("fleet", "ops", "--admin")  # replicas are shown to admins only
        page = httpx.get(
            f"{proc.url}/dashboard?refresh=0",
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        )
        stats = fleet.replica_stats()  # no traffic in between: the same counters
    finally:
        proc.stop()
    assert page.status_code == 200, page.text[:500]
    assert "replicas behind vllm-router" in page.text
    rows = dict(
        re.findall(
            r'<tr class="replica" data-key="([^"]+)">.*?<td class="replica-hits">([^<]+)</td>',
            page.text,
        )
    )
    assert sorted(rows) == sorted(r.base_url for r in fleet.replicas)
    for replica, figures in zip(fleet.replicas, stats, strict=True):
        assert figures is not None and figures.hits > 0
        assert rows[replica.base_url] == f"{figures.hits:,.0f}"


def test_a_stopped_replica_moves_its_sessions_without_errors(fleet: Fleet) -> None:
    library = PromptLibrary(Settings(prompt_dirs=[COMPACT_PROMPTS]))
    names = [f"m{i}" for i in range(4)]
    asyncio.run(_sessions(fleet.router_url, library, names, 1, "t2"))
    victim = fleet.replicas[1]
    LEDGER.account()  # before the stop: what it prefilled is charged
    victim.stop()  # by PID, its process group
    # the router notices within seconds (health checks every 2 s, breaker after 2 failures)
    started = time.monotonic()
    after = asyncio.run(_sessions(fleet.router_url, library, names, 2, "t2"))
    assert all(len(rows) == 2 for rows in after.values())  # no client error
    for rows in after.values():  # the moved sessions: cold once (the base aside), then hit
        assert rows[1][1] >= rows[0][0] - 128
    # the router still serves: degraded, not down
    status = fleet.status()
    assert status.state == "degraded" and status.up == 1, status
    fleet.restart_replica(1)  # in place: the router and replica 0 untouched
    assert victim.healthy()
    # the router takes it back after its health checks: new sessions reach it again
    before = fleet.replica_stats()
    deadline = time.monotonic() + 90
    number = 0
    back: dict[str, float] | None = None
    while time.monotonic() < deadline:
        fresh = [f"n{number}", f"n{number + 1}"]
        number += 2
        asyncio.run(_sessions(fleet.router_url, library, fresh, 1, "t3"))
        back = fleet_figures(before, fleet.replica_stats()).replicas[1]
        if back is not None and back["requests"] > 0:
            break
        time.sleep(2)
    assert back is not None and back["requests"] > 0, "the restarted replica got no request"
    assert fleet.router_healthy()
    print(f"\nfleet: failover and return in {time.monotonic() - started:.0f} s")


def test_status_and_stop_by_pid(fleet: Fleet, tmp_path: Path) -> None:
    status = fleet.status()
    assert status.router_pid is not None and len(status.replicas) == 2
    assert all(r.stats is not None and r.stats.block_size == 128 for r in status.replicas)
