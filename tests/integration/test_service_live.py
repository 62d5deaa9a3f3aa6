"""The service against the real engine: the guide's endpoints, the OpenAI SDK on the
gateway, per-tenant cache isolation, and a bounded load on loopback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from prefixcache import LocalEngine, PromptLibrary

from .service_process import ServiceProcess

pytestmark = pytest.mark.integration


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_chat_turns_reuse_the_session_prefix(service: ServiceProcess) -> None:
    key = service.key("acme", "alice")
    first = httpx.post(
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={"message": "Add a dark mode toggle.", "agent_type": "frontend-engineer"},
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["agent_type"] == "frontend-engineer" and body["tier"] == "TIER_1_DEFAULT"
    session = body["session_id"]
    second = httpx.post(
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={"message": "Remember the choice.", "session_id": session},
    ).json()
    # append-only history: the whole first exchange is a cached prefix of the second turn
    assert second["cache"]["cached_tokens"] >= body["cache"]["prompt_tokens"] - 128
    assert second["cache"]["hit_rate"] > 0.9 and second["cache"]["ttft"] > 0
    detail = httpx.get(f"{service.url}/sessions/{session}", headers=auth(key)).json()
    assert [(m["role"], m["status"]) for m in detail["history"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert detail["history"][1]["content"] == body["reply"]
    listed = httpx.get(f"{service.url}/sessions", headers=auth(key)).json()
    assert session in [s["id"] for s in listed]


def test_streamed_chat_sends_events_and_keeps_the_reply(service: ServiceProcess) -> None:
    key = service.key("acme", "streamer")
    events: list[tuple[str, dict[str, object]]] = []
    with httpx.stream(
        "POST",
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={"message": "Say hi.", "stream": True, "max_tokens": 6},
    ) as response:
        assert response.status_code == 200
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    kinds = [e for e, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("token") >= 1
    done = events[-1][1]
    reply = "".join(str(d["delta"]) for e, d in events if e == "token")
    session = str(done["session_id"])
    history = httpx.get(f"{service.url}/sessions/{session}", headers=auth(key)).json()["history"]
    assert history[-1]["content"] == reply and history[-1]["status"] == "complete"


def test_a_client_gone_mid_stream_leaves_an_incomplete_turn(service: ServiceProcess) -> None:
    key = service.key("acme", "leaver")
    session = f"leave-{uuid.uuid4().hex[:8]}"
    with httpx.stream(
        "POST",
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={
            "message": "Write a long story.",
            "stream": True,
            "max_tokens": 400,
            "session_id": session,
        },
    ) as response:
        for line in response.iter_lines():
            if line.startswith("event: token"):
                break  # the client goes away after the first token
    deadline = time.monotonic() + 30
    history: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        history = httpx.get(f"{service.url}/sessions/{session}", headers=auth(key)).json()[
            "history"
        ]
        if len(history) == 2:
            break
        time.sleep(0.3)
    assert [(m["role"], m["status"]) for m in history] == [
        ("user", "complete"),
        ("assistant", "incomplete"),
    ]
    # the session stays usable: the next turn works (the cut exchange is not replayed)
    again = httpx.post(
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={"message": "Short one.", "session_id": session},
    )
    assert again.status_code == 200


def test_tasks_chain_through_previous_results(service: ServiceProcess) -> None:
    key = service.key("acme", "planner", "--tools", "file_read,run_tests")
    first = httpx.post(
        f"{service.url}/tasks",
        headers=auth(key),
        timeout=120,
        json={
            "agent_type": "backend-engineer",
            "description": "Design the CSV export endpoint.",
            "priority": "high",
            "deadline": "2026-12-01",
            "required_tools": ["file_read", "shell"],
        },
    )
    assert first.status_code == 200, first.text
    task = first.json()
    assert task["status"] == "completed" and task["result"] and task["priority"] == "high"
    second = httpx.post(
        f"{service.url}/tasks",
        headers=auth(key),
        timeout=120,
        json={
            "agent_type": "testing-engineer",
            "description": "Test the export.",
            "previous_task_id": task["id"],
        },
    ).json()
    assert second["previous_task_id"] == task["id"] and second["session_id"] == task["session_id"]
    assert second["status"] == "completed" and second["cache"]["cached_tokens"] > 0
    fetched = httpx.get(f"{service.url}/tasks/{second['id']}", headers=auth(key)).json()
    assert fetched == second
    other = service.key("acme", "someone-else")
    assert httpx.get(f"{service.url}/tasks/{task['id']}", headers=auth(other)).status_code == 404


def test_the_openai_sdk_works_against_the_gateway(
    service: ServiceProcess, live_library: PromptLibrary
) -> None:
    key = service.key("sdk-tenant", "dev")
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0)
    [model] = [m.id for m in client.models.list().data]
    system = live_library.compose_prompt(agent_type="code-reviewer", session_id="sdk").text
    messages: list[Any] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Review my diff."},
    ]
    first = client.chat.completions.create(model=model, messages=messages, max_tokens=3)
    second = client.chat.completions.create(model=model, messages=messages, max_tokens=3)
    assert first.usage is not None and second.usage is not None
    assert (
        first.usage.prompt_tokens_details is not None
        and second.usage.prompt_tokens_details is not None
    )
    assert (
        second.usage.prompt_tokens_details.cached_tokens or 0
    ) > 0.9 * second.usage.prompt_tokens
    chunks: list[Any] = list(
        client.chat.completions.create(model=model, messages=messages, max_tokens=3, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)  # not asked for: the usage chunk stays out
    with_usage: list[Any] = list(
        client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage.prompt_tokens_details.cached_tokens > 0
    deadline = time.monotonic() + 10  # figures are recorded just after each answer
    stats = httpx.get(f"{service.url}/stats", headers=auth(key)).json()
    while stats["requests"] < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
        stats = httpx.get(f"{service.url}/stats", headers=auth(key)).json()
    assert stats["tenant"] == "sdk-tenant" and stats["requests"] == 4
    assert next(a["key"] for a in stats["by_agent"]).startswith("prefix-")  # labelled by hash
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{service.url}/v1", api_key="pc_wrong", max_retries=0).models.list()


def test_tenants_do_not_share_the_cache(
    service: ServiceProcess, live_library: PromptLibrary
) -> None:
    """CVE-2025-46570: tenant B's request right after tenant A's identical one gets no
    cached tokens; A's repeat gets its hits."""
    a = service.key(f"tenant-a-{uuid.uuid4().hex[:6]}", "u")
    b = service.key(f"tenant-b-{uuid.uuid4().hex[:6]}", "u")
    system = live_library.compose_prompt(agent_type="security-auditor", session_id="iso").text
    body = {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Audit the export."},
        ],
        "max_tokens": 2,
    }

    def cached(key: str) -> int:
        answer = httpx.post(
            f"{service.url}/v1/chat/completions", headers=auth(key), json=body, timeout=120
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"])

    assert cached(a) == 0
    assert cached(b) == 0  # the same prompt, another tenant: nothing to time
    assert cached(a) >= 768  # A's own repeat hits (6 of its 862 tokens' blocks)
    # a caller cannot pick a salt: a cache_salt in the body is refused, never forwarded
    chosen = httpx.post(
        f"{service.url}/v1/chat/completions",
        headers=auth(b),
        timeout=120,
        json={**body, "cache_salt": "guess"},
    )
    assert chosen.status_code == 422 and "cache_salt" in chosen.json()["error"]["message"]


def test_prompt_beyond_the_context_is_413_with_counts(service: ServiceProcess) -> None:
    key = service.key("acme", "verbose")
    answer = httpx.post(
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={"message": "word " * 16000, "max_tokens": 100, "session_id": "too-long"},
    )
    assert answer.status_code == 413
    message = answer.json()["error"]["message"]
    assert "tokens" in message and "context of 8192" in message
    # rejected: nothing was stored, not even the session it named
    assert httpx.get(f"{service.url}/sessions/too-long", headers=auth(key)).status_code == 404


def test_load_100_chats_from_20_clients(service: ServiceProcess) -> None:
    """Bounded load on loopback: 100 /chat requests, 20 concurrent clients, several agents
    and sessions. Zero 5xx, every turn persisted, the hit rate reported."""
    keys = [service.key("load", f"user{i}") for i in range(4)]
    agents = [
        "frontend-engineer",
        "backend-engineer",
        "code-reviewer",
        "prd-writer",
        "orchestrator",
    ]
    results: list[tuple[int, float, dict[str, Any]]] = []

    async def client(number: int) -> None:
        key = keys[number % len(keys)]
        session = f"load-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(timeout=300) as http:
            for turn in range(5):
                started = time.perf_counter()
                answer = await http.post(
                    f"{service.url}/chat",
                    headers=auth(key),
                    json={
                        "message": f"Step {turn}: continue the work.",
                        "session_id": session,
                        "agent_type": agents[number % len(agents)],
                        "max_tokens": 2,
                    },
                )
                body = answer.json() if answer.status_code == 200 else {}
                results.append((answer.status_code, time.perf_counter() - started, body))

    started = time.perf_counter()

    async def everyone() -> None:
        await asyncio.gather(*(client(n) for n in range(20)))

    asyncio.run(everyone())
    wall = time.perf_counter() - started
    codes = [code for code, _, _ in results]
    assert len(results) == 100 and codes.count(200) == 100, {c: codes.count(c) for c in set(codes)}
    with sqlite3.connect(service.db) as db:
        turns = db.execute(
            "select count(*) from messages m join sessions s on s.id = m.session_id "
            "where s.tenant_id = 'load' and m.status = 'complete'"
        ).fetchone()[0]
    assert turns == 200  # every user turn and every reply
    prompt = sum(int(b["cache"]["prompt_tokens"]) for _, _, b in results)
    cached = sum(int(b["cache"]["cached_tokens"]) for _, _, b in results)
    latencies = sorted(t for _, t, _ in results)
    print(
        f"\nload: 100 /chat, 20 clients, {wall:.1f} s wall, {100 / wall:.1f} req/s, "
        f"p50 {statistics.median(latencies):.2f} s, p95 {latencies[94]:.2f} s, 0 errors, "
        f"hit rate {cached / prompt:.1%}"
    )
    assert cached / prompt > 0.8


def test_the_service_survives_sigkill_mid_load(engine: LocalEngine, tmp_path: Path) -> None:
    """SIGKILL during load, then a restart: the database is consistent and every turn
    the clients saw answered is there, complete."""
    proc = ServiceProcess(tmp_path, engine.base_url, rate_limit_per_minute=0)
    key = proc.key("crash", "u")
    proc.start()
    answered: list[str] = []

    async def client(number: int) -> None:
        session = f"crash-{number}"
        async with httpx.AsyncClient(timeout=60) as http:
            for turn in range(20):
                try:
                    answer = await http.post(
                        f"{proc.url}/chat",
                        headers=auth(key),
                        json={
                            "message": f"turn {turn}",
                            "session_id": session,
                            "max_tokens": 2,
                        },
                    )
                except httpx.HTTPError:
                    return  # the service is gone
                if answer.status_code == 200:
                    answered.append(f"{session}/{turn}")

    async def load_then_kill() -> None:
        tasks = [asyncio.create_task(client(n)) for n in range(8)]
        while len(answered) < 12:
            await asyncio.sleep(0.05)
        proc.kill()
        await asyncio.gather(*tasks)

    try:
        asyncio.run(asyncio.wait_for(load_then_kill(), timeout=180))
        proc.start()  # the same database, after a crash
        with sqlite3.connect(proc.db) as db:
            assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
            rows = db.execute(
                "select session_id, role, content, status from messages order by id"
            ).fetchall()
        complete_user_turns = {
            f"{s.rsplit('/', 1)[-1]}/{c.split()[-1]}"
            for s, r, c, st in rows
            if r == "user" and st == "complete"
        }
        assert set(answered) <= complete_user_turns
        states = ("pending", "complete", "failed", "incomplete", "interrupted")
        assert all(st in states for *_, st in rows)
        # and the service answers again on the recovered database
        again = httpx.post(
            f"{proc.url}/chat",
            headers=auth(key),
            timeout=60,
            json={"message": "after", "session_id": "crash-0", "max_tokens": 2},
        )
        assert again.status_code == 200
    finally:
        proc.stop()
