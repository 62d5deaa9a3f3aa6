"""The service arm's client, config and table, without a server (the live run is in
``tests/integration/test_bench_live.py``)."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from prefixcache.bench.report import service_grid
from prefixcache.bench.results import ArmRun, RequestResult
from prefixcache.bench.scenarios import USERS
from prefixcache.bench.service import (
    ServiceClient,
    ServiceHandle,
    ServiceLauncher,
    sse_events,
)
from prefixcache.errors import PrefixCacheError, ProviderUnavailableError
from prefixcache.prompts.sizes import DEFAULT_TOOLS, TOOLS
from prefixcache.settings import Settings, load_settings

HANDLE = ServiceHandle("http://svc", {"Alice": "pc_k_secret"}, 12.5, 22, "warm 22/22")


def sse(*events: tuple[str, dict[str, object]]) -> bytes:
    return "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()


def run_client(handler: httpx.MockTransport, go: object) -> object:
    async def main() -> object:
        async with httpx.AsyncClient(transport=handler) as http:
            return await go(ServiceClient(HANDLE, http))  # type: ignore[operator]

    return asyncio.run(main())


def test_sse_events_parse_the_services_stream() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in ["event: start", 'data: {"a": 1}', "", "data: {", 'data: "b": 2}', ""]:
            yield line

    async def collect() -> list[tuple[str, dict[str, object]]]:
        return [pair async for pair in sse_events(lines())]

    assert asyncio.run(collect()) == [("start", {"a": 1}), ("message", {"b": 2})]


def test_chat_reports_the_client_ttft_and_the_services_own_time() -> None:
    seen: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        assert request.headers["authorization"] == "Bearer pc_k_secret"
        cache = {
            "prompt_tokens": 4300,
            "cached_tokens": 4224,
            "hit_rate": 0.98,
            "ttft": 0.1,
            "processing_time": 0.0,
            "completion_tokens": 2,
        }
        body = sse(
            ("start", {"session_id": "s"}),
            ("token", {"delta": "Hel"}),
            ("token", {"delta": "lo"}),
            ("done", {"finish_reason": "length", "cache": cache}),
        )
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async def go(client: ServiceClient) -> object:
        return await client.chat(
            "Alice",
            message="hi",
            agent_type="frontend-engineer",
            session_id="b1-x",
            max_tokens=2,
            additional_params={"task_number": 1},
            next_agent_types=["orchestrator"],
        )

    reply = run_client(httpx.MockTransport(answer), go)
    assert seen[0]["stream"] is True and seen[0]["next_agent_types"] == ["orchestrator"]
    assert seen[0]["additional_params"] == {"task_number": 1}
    response = reply.response  # type: ignore[attr-defined]
    assert response.content == "Hello" and response.cached_tokens == 4224
    assert response.usage["completion_tokens"] == 2
    ttft = response.ttft
    assert ttft is not None and 0 <= ttft <= reply.client_time  # type: ignore[attr-defined]
    # no engine time reported: no overhead figure made up
    assert reply.overhead == 0.0  # type: ignore[attr-defined]


def test_task_ttft_is_the_engines_plus_all_of_the_services_time() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["plan"] == ["orchestrator", "prd-writer"] and "previous_task_id" not in body
        cache = {
            "prompt_tokens": 10,
            "cached_tokens": 0,
            "hit_rate": 0.0,
            "ttft": 1e-9,
            "processing_time": 2e-9,
        }
        return httpx.Response(
            200, json={"id": "t_1", "status": "completed", "result": "ok", "cache": cache}
        )

    async def go(client: ServiceClient) -> object:
        return await client.task(
            "Alice",
            description="plan",
            agent_type="orchestrator",
            max_tokens=2,
            plan=["orchestrator", "prd-writer"],
        )

    reply = run_client(httpx.MockTransport(answer), go)
    assert reply.task_id == "t_1"  # type: ignore[attr-defined]
    overhead = reply.overhead  # type: ignore[attr-defined]
    assert overhead == pytest.approx(reply.client_time - 2e-9)  # type: ignore[attr-defined]
    assert reply.response.ttft == pytest.approx(1e-9 + overhead)  # type: ignore[attr-defined]


def test_service_errors_become_failed_rows_with_the_services_message() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "vLLM is not answering"}})

    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "t", "status": "failed", "error": "boom"})

    async def chat(client: ServiceClient) -> object:
        return await client.chat("Alice", message="m", agent_type="a", session_id="s", max_tokens=1)

    async def task(client: ServiceClient) -> object:
        return await client.task("Alice", description="d", agent_type="a", max_tokens=1)

    with pytest.raises(ProviderUnavailableError, match="vLLM is not answering"):
        run_client(httpx.MockTransport(down), chat)
    with pytest.raises(PrefixCacheError, match="failed: boom"):
        run_client(httpx.MockTransport(refused), task)
    with pytest.raises(PrefixCacheError, match="no service key for user 'Zed'"):
        run_client(
            httpx.MockTransport(down),
            lambda c: c.chat("Zed", message="m", agent_type="a", session_id="s", max_tokens=1),
        )


def test_launcher_config_is_a_valid_private_service_config(tmp_path: Path) -> None:
    launcher = ServiceLauncher(
        Settings(), "http://127.0.0.1:8123", tmp_path, USERS, TOOLS, DEFAULT_TOOLS
    )
    first, second = launcher.config(9001), launcher.config(9002)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600  # it holds the secret
    settings = load_settings(second)
    assert settings.llm.vllm.base_url == "http://127.0.0.1:8123"
    assert settings.service.port == 9002 and settings.service.warm.enabled
    assert settings.service.agent_tools["orchestrator"] == list(TOOLS["orchestrator"])
    assert settings.service.secret != load_settings(first).service.secret  # new salts


def _row(arm: str, index: int, time: float, cached: int, overhead: float | None) -> RequestResult:
    return RequestResult(
        scenario="single",
        arm=arm,
        repeat=1,
        max_tokens=32,
        index=index,
        agent_type="frontend-engineer",
        tier="TIER_1_DEFAULT",
        warmup=False,
        prompt_tokens=4000,
        cached_tokens=cached,
        predicted_cached=None,
        completion_tokens=32,
        ttft=time / 4,
        processing_time=time,
        overhead=overhead,
    )


def test_service_grid_puts_the_service_beside_the_reference() -> None:
    def run(arm: str, time: float, cached: int, overhead: float | None = None) -> ArmRun:
        rows = tuple(_row(arm, i, time, cached, overhead) for i in (1, 2))
        warm = (12.5, 22) if arm == "service" else (0.0, 0)
        return ArmRun("single", arm, 1, 32, rows, warm[0], 1.0, 2, warmed_prefixes=warm[1])

    runs = [
        run("no-reuse", 4.0, 0),
        run("reference", 2.0, 3800),
        run("optimized", 1.8, 3900),
        run("warmed", 1.9, 3900),
        run("service", 1.6, 3950, 0.004),
    ]
    grid = service_grid(runs, 32)
    assert grid is not None
    assert [r[2] for r in grid.rows] == ["service", "reference", "optimized", "no-reuse"]
    service = grid.rows[0]
    assert service[5] == "3.2" and service[6] == "1.25x" and service[7] == "2.50x"
    assert service[12] == "4.0" and service[14] == "22 in 12.5 s"
    assert service_grid([r for r in runs if r.arm != "service"], 32) is None


def test_the_apps_scenario_sends_every_arm_its_own_way_and_reads_the_shadow_figures() -> None:
    """`unmodified-apps` over MockTransport: each request to its arm (the engine with the
    arm's salt, or the gateway with the arm's tenant key), the app as X-Agent-Type, the
    hand-fixed arm the fixed layout; then the shadow tenant's /stats. (Live:
    tests/integration/test_stabilize_live.py and `make demo`.)"""
    from prefixcache.bench.apps import APPS_BY_NAME
    from prefixcache.bench.report import apps_grid
    from prefixcache.bench.unmodified import TENANTS, run_apps

    apps = [APPS_BY_NAME["timestamp-first"], APPS_BY_NAME["already-stable"]]
    handle = ServiceHandle(
        "http://svc", {}, 0.0, 0, "off", {t: f"key-{t}" for t in TENANTS.values()}
    )
    sent: list[tuple[str, str | None, str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/stats":
            families = [
                {
                    "family": a.name,
                    "requests": 2,
                    "predicted_hit_rate": 0.1,
                    "stabilized_hit_rate": 0.9,
                    "moves": ["Current time: #-#-# …"],
                }
                for a in apps
            ]
            return httpx.Response(200, json={"families": families})
        body = json.loads(request.content)
        salt = body.get("cache_salt")
        sent.append(
            (
                request.url.host,
                salt or request.headers.get("authorization"),
                request.headers["x-agent-type"],
                body["messages"][0]["content"],
            )
        )
        usage = {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 50}}
        chunks = [{"choices": [{"delta": {"content": "x"}}]}, {"choices": [], "usage": usage}]
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        headers = {"x-prefixcache-stabilized": "lines=1; tools=unchanged"}
        return httpx.Response(200, content=text.encode(), headers=headers)

    async def go() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            return await run_apps(
                http,
                engine_url="http://engine",
                model="m",
                service=handle,
                static="S\n" * 300,
                salt="s1",
                apps=apps,
                requests=2,
            )

    run = asyncio.run(go())
    results = run.results  # type: ignore[attr-defined]
    assert len(results) == 2 * 2 * 5 and all(r.success and r.cached_tokens == 50 for r in results)
    who = {(host, auth) for host, auth, _, _ in sent}
    assert who == {("engine", "s1-direct"), ("engine", "s1-hand-fixed")} | {
        ("svc", f"Bearer key-{t}") for t in TENANTS.values()
    }
    fixed = [
        text
        for host, auth, app, text in sent
        if auth == "s1-hand-fixed" and app == "timestamp-first"
    ]
    assert all(t.splitlines()[-1].startswith("Current time:") for t in fixed)
    assert run.predictions["timestamp-first"].stabilized == 0.9  # type: ignore[attr-defined]
    grid = apps_grid(run)  # type: ignore[arg-type]
    assert [row[0] for row in grid.rows] == ["timestamp-first", "already-stable"]


def test_plain_progress_lines_name_each_stage_and_estimate_what_is_left() -> None:
    from rich.console import Console

    from prefixcache.bench.session import PlainLines

    console = Console(record=True, width=200, force_terminal=False)
    lines = PlainLines(console, total=25, began=0.0)
    messages = [f"single reference #{i} frontend-engineer" for i in range(1, 11)]
    messages += [f"single pass 2 reference #{i} frontend-engineer" for i in range(1, 11)]
    messages += [f"workflow reference #{i} prd-writer" for i in range(1, 6)]
    for message in messages:
        lines.tick(message)
    out = console.export_text().splitlines()
    stages = [line.split(" (at")[0] for line in out if line.startswith("== ")]
    assert stages == ["== single", "== single pass 2", "== workflow"]
    counted = [line for line in out if line.startswith("[")]
    assert [line.split("]")[0] for line in counted] == ["[10/25", "[20/25", "[25/25"]
    assert "s left)" in counted[0] and "left" not in counted[-1]
