"""The fleet without engines: replica settings, the router's command line, figures from
metric deltas, and the routing key the client sends (over httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from prefixcache import ClientSettings, LLMInterface, PromptLibrary, VLLMConfig
from prefixcache.engine.fleet import Fleet, fleet_figures
from prefixcache.llm.inspector import EngineCacheStats
from prefixcache.llm.providers import SESSION_HEADER
from prefixcache.settings import FleetSettings


def make_fleet(tmp_path: Path, **fleet: object) -> Fleet:
    config = VLLMConfig(device="cpu", state_dir=tmp_path, model_cache_dir=tmp_path / "m")
    return Fleet(config, FleetSettings(**fleet))  # type: ignore[arg-type]


def test_replicas_get_their_own_port_state_core_and_kv(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, replicas=2, replica_base_port=9301, kv_space_gib=1, dev_mode=True)
    a, b = fleet.replicas
    assert (a.config.port, b.config.port) == (9301, 9302)
    assert a.state_dir != b.state_dir and a.state_dir.parent == tmp_path / "fleet"
    env_a, env_b = a.environment(tmp_path / "ra"), b.environment(tmp_path / "rb")
    assert env_a["VLLM_CPU_KVCACHE_SPACE"] == "1" and env_a["VLLM_SERVER_DEV_MODE"] == "1"
    assert (env_a["VLLM_CPU_OMP_THREADS_BIND"], env_b["VLLM_CPU_OMP_THREADS_BIND"]) == ("0", "1")
    assert env_a["TMPDIR"] != env_b["TMPDIR"]


def test_router_command_line(tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path, replicas=2, replica_base_port=9301, router_port=9300, prometheus_port=9390
    )
    command = fleet.router_command("consistent_hash")
    joined = " ".join(command)
    assert command[0].endswith("vllm-router")
    assert "--port 9300 --prometheus-port 9390" in joined
    assert "--worker-urls http://127.0.0.1:9301 http://127.0.0.1:9302" in joined
    assert "--policy consistent_hash" in joined
    assert "--cb-failure-threshold 2" in joined and "--health-check-interval-secs 2" in joined
    assert fleet.stop() is False  # nothing running: a no-op


def stats(queries: float, hits: float, requests: float, tokens: float) -> EngineCacheStats:
    return EngineCacheStats(queries, hits, 128, True, requests=requests, prompt_tokens=tokens)


def test_fleet_figures_from_metric_deltas() -> None:
    before = [stats(100, 50, 1, 100), stats(0, 0, 0, 0)]
    after = [stats(1100, 950, 11, 1100), stats(500, 400, 5, 500)]
    figures = fleet_figures(before, after)
    assert figures.hit_rate == (900 + 400) / (1000 + 500)
    assert figures.balance_requests == 10 / 7.5
    assert figures.replicas[1] == {"queries": 500, "hits": 400, "requests": 5, "prompt_tokens": 500}
    missing = fleet_figures(before, [after[0], None])
    assert missing.replicas[1] is None and missing.hit_rate == 0.9


def _sent_headers(affinity: str, session_id: str | None) -> dict[str, str]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        usage = {
            "prompt_tokens": 5,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        lines = [
            json.dumps({"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]}),
            json.dumps({"choices": [], "usage": usage}),
            "[DONE]",
        ]
        return httpx.Response(200, content="".join(f"data: {x}\n\n" for x in lines).encode())

    system = PromptLibrary().compose_prompt(agent_type="code-reviewer", session_id="s").text

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            settings = ClientSettings.model_validate(
                {"base_url": "http://r.test", "affinity": affinity}
            )
            llm = LLMInterface(settings, http=http)
            await llm.chat_completion(
                [{"role": "system", "content": system}, {"role": "user", "content": "hi"}],
                session_id=session_id,
            )

    asyncio.run(go())
    return dict(seen[0].headers)


def test_the_router_key_is_the_session_or_the_prefix() -> None:
    assert _sent_headers("session", "sess-42")[SESSION_HEADER] == "sess-42"
    by_prefix = _sent_headers("prefix", "sess-42")[SESSION_HEADER]
    assert by_prefix.startswith("prefix-")
    # without a session the prefix hash, the same for every request of the agent
    assert _sent_headers("session", None)[SESSION_HEADER] == by_prefix


def test_a_fleet_is_healthy_degraded_or_down() -> None:
    from prefixcache.engine.fleet import FleetStatus, ReplicaStatus

    def status(router_health: bool, serving: bool, *up: bool) -> str:
        replicas = tuple(ReplicaStatus(i, f"u{i}", 1, h, None) for i, h in enumerate(up))
        return FleetStatus("r", 1, router_health, "p", replicas, serving).state

    assert status(True, True, True, True) == "healthy"
    # vllm-router's /health is 503 as soon as one worker is down, while it still serves
    assert status(False, True, True, False) == "degraded"
    assert status(False, False, True, False) == "down"  # the router itself does not serve
    assert status(False, True, False, False) == "down"  # nothing to serve with


def test_restarting_a_replica_names_the_ones_there_are(tmp_path: Path) -> None:
    import pytest

    from prefixcache.errors import EngineError

    fleet = make_fleet(tmp_path, replicas=2)
    with pytest.raises(EngineError, match=r"no replica 2: the fleet has 2 \(0-1\)"):
        fleet.restart_replica(2)
