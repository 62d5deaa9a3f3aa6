"""The hardened service against the real engine: parallel turns replay each question
with its own answer, a session keeps its agent, the hostile batch reaches nothing, and
the README's service steps work on a brand-new PREFIXCACHE_HOME."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefixcache import LocalEngine

from ..service_support import make_key
from ..test_service_hardening import hostile_gateway_cases
from .service_process import COMPACT_PROMPTS, ServiceProcess

pytestmark = pytest.mark.integration


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_parallel_turns_replay_each_question_with_its_own_answer(
    engine: LocalEngine, tmp_path: Path
) -> None:
    """10 turns sent at once to one session, then 3 more: every later prompt holds each
    earlier question followed by the very reply stored for it."""
    proc = ServiceProcess(
        tmp_path,
        engine.base_url,
        rate_limit_per_minute=0,
        record_prompts="true",
        default_max_tokens=6,
    )
    key = proc.key("para", "u")
    proc.start()
    try:

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=180) as http:
                answers = await asyncio.gather(
                    *(
                        http.post(
                            f"{proc.url}/chat",
                            headers=auth(key),
                            json={
                                "message": f"Question {i}: name a colour.",
                                "session_id": "shared",
                                "temperature": 0.7 + i / 100,
                            },
                        )
                        for i in range(10)
                    )
                )
            return [a.status_code for a in answers]

        assert asyncio.run(burst()) == [200] * 10
        for i in range(10, 13):
            later = httpx.post(
                f"{proc.url}/chat",
                headers=auth(key),
                timeout=180,
                json={"message": f"Question {i}: and now?", "session_id": "shared"},
            )
            assert later.status_code == 200, later.text
        time.sleep(1.5)  # records are written in batches
    finally:
        proc.stop()
    with sqlite3.connect(proc.db) as db:
        rows = db.execute("select id, role, content, reply_to from messages order by id").fetchall()
        prompts = [
            json.loads(p)
            for (p,) in db.execute(
                "select prompt from cache_records where endpoint = 'chat' order by id"
            )
        ]
    question = {i: c for i, r, c, _ in rows if r == "user"}
    answer_of = {question[to]: c for _, r, c, to in rows if r == "assistant"}
    assert len(answer_of) == 13
    checked = 0
    for messages in prompts:
        turns = messages[1:-1]  # the system prompt first, the new question last
        assert len(turns) % 2 == 0
        for user, reply in zip(turns[::2], turns[1::2], strict=True):
            assert user["role"] == "user" and reply["role"] == "assistant"
            assert reply["content"] == answer_of[user["content"]], user["content"]
            checked += 1
    # the 3 later prompts replay 10, 11 and 12 earlier exchanges
    assert checked >= 10 + 11 + 12
    print(f"\nparallel turns: {checked} replayed exchanges checked, each with its own answer")


def test_a_session_keeps_its_agent(service: ServiceProcess) -> None:
    key = service.key("acme", "keeper")
    first = httpx.post(
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={"message": "Plan the API.", "agent_type": "backend-engineer"},
    ).json()
    session = first["session_id"]
    follow = httpx.post(
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={"message": "Go on.", "session_id": session},
    ).json()
    assert follow["agent_type"] == "backend-engineer"
    switched = httpx.post(
        f"{service.url}/chat",
        headers=auth(key),
        timeout=120,
        json={
            "message": "Review it.",
            "session_id": session,
            "agent_type": "code-reviewer",
        },
    ).json()
    assert switched["agent_type"] == "code-reviewer"
    detail = httpx.get(f"{service.url}/sessions/{session}", headers=auth(key)).json()
    assert detail["agent_type"] == "code-reviewer"


def _engine_prompt_tokens(engine: LocalEngine) -> float:
    text = httpx.get(f"{engine.base_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:prompt_tokens_total")
    )


def test_the_hostile_batch_reaches_nothing(engine: LocalEngine, service: ServiceProcess) -> None:
    key = service.key("hostile", "mallory")
    before = _engine_prompt_tokens(engine)
    statuses = {}
    with httpx.Client(base_url=service.url, timeout=60) as http:
        for name, body, headers in hostile_gateway_cases():
            if name == "oversized chunked body":
                content: Any = iter([b"x" * 700_000, b"x" * 700_000])  # over 1 MiB, no length
            else:
                content = body if isinstance(body, bytes) else json.dumps(body)
            merged = {**auth(key), "content-type": "application/json", **headers}
            answer = http.post("/v1/chat/completions", headers=merged, content=content)
            statuses[name] = answer.status_code
            assert set(answer.json()) == {"error"}, name
    after = _engine_prompt_tokens(engine)
    print("\nhostile batch, live: " + ", ".join(f"{s}" for s in statuses.values()))
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    assert after == before  # not one prompt token reached the engine


def test_a_gateway_stream_past_its_deadline_ends_with_an_error_event(
    engine: LocalEngine, tmp_path: Path
) -> None:
    proc = ServiceProcess(
        tmp_path, engine.base_url, rate_limit_per_minute=0, gateway="{stream_deadline_s: 0.3}"
    )
    key = proc.key("slow", "u")
    proc.start()
    try:
        body = {
            "messages": [{"role": "user", "content": "Tell a very long story."}],
            "max_tokens": 2000,
            "stream": True,
        }
        with httpx.stream(
            "POST", f"{proc.url}/v1/chat/completions", headers=auth(key), json=body, timeout=120
        ) as answer:
            assert answer.status_code == 200
            lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
        errors = [json.loads(line[6:]) for line in lines if '"error"' in line]
        assert lines[-1] == "data: [DONE]" and len(errors) == 1
        assert "stream_deadline_s" in errors[0]["error"]["message"]
        deadline = time.monotonic() + 10
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = httpx.get(f"{proc.url}/stats", headers=auth(key)).json()
            if stats["requests"]:
                break
            time.sleep(0.3)
        assert stats["requests"] == 1  # the cut stream is recorded
    finally:
        proc.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_readme_service_steps_on_a_brand_new_home(engine: LocalEngine, tmp_path: Path) -> None:
    """`keys create` then `serve` with PREFIXCACHE_HOME pointing at a folder that does not
    exist yet, no config file: the folder is created private, the key works."""
    home = tmp_path / "brand" / "new"
    port = _free_port()
    env = {
        **os.environ,
        "PREFIXCACHE_HOME": str(home),
        "PREFIXCACHE_LLM__VLLM__BASE_URL": engine.base_url,
        "PREFIXCACHE_SERVICE__PORT": str(port),
        # the steps, not the warm-up (tested in test_warm_live): 20 s less of the suite
        "PREFIXCACHE_SERVICE__WARM__ENABLED": "false",
        "PREFIXCACHE_PROMPTS__DIRECTORIES": f"[{COMPACT_PROMPTS}]",
    }
    env.pop("PREFIXCACHE_CONFIG", None)
    run = [sys.executable, "-m", "prefixcache"]
    created = subprocess.run(
        [*run, "keys", "create", "--tenant", "acme", "--user", "alice"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    folder = home / "service"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "service.db").stat().st_mode) == 0o600
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*run, "serve"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        answer = httpx.post(
            f"{url}/chat",
            headers=auth(key),
            timeout=120,
            json={
                "message": "Add a dark mode toggle.",
                "agent_type": "frontend-engineer",
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["cache"]["prompt_tokens"] > 500  # the compact prompts
        assert stat.S_IMODE((folder / "service.secret").stat().st_mode) == 0o600
        for name in ("service.db-wal", "service.db-shm"):
            if (folder / name).exists():
                assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_two_instances_on_one_postgresql(
    engine: LocalEngine, postgres: Any, tmp_path: Path
) -> None:
    """Two `prefixcache serve` on one real PostgreSQL: sessions continue across them,
    the per-minute limit is one limit, and one instance SIGKILLed mid-load leaves the
    other answering with every acknowledged turn in the database."""
    url = postgres.create_database(f"two_{uuid.uuid4().hex[:8]}")
    common = {
        "database_url": url,
        "secret": "two-instances-share-this-secret-0123456789",
        "rate_limit_per_minute": 90,
        "default_max_tokens": 2,
    }
    a = ServiceProcess(tmp_path / "a", engine.base_url, **common)
    b = ServiceProcess(tmp_path / "b", engine.base_url, **common)
    a.key("duo", "user0")  # one through the CLI (it creates the schema); the rest in process
    keys = [make_key(url, "duo", f"user{i}") for i in range(4)]
    limited = make_key(url, "duo", "limited")
    a.start()
    b.start()
    results: list[tuple[str, int, str]] = []  # (instance, status, session/turn)
    killed_at: list[int] = []
    try:
        instances = {"a": a.url, "b": b.url}

        async def client(number: int) -> None:
            key = keys[number % 4]
            session = f"duo-{number}"
            async with httpx.AsyncClient(timeout=180) as http:
                for turn in range(5):
                    # a load balancer alternates; a dead instance's requests go to the other
                    name = "ab"[(number + turn) % 2]
                    if killed_at and name == "b":
                        name = "a"
                    try:
                        answer = await http.post(
                            f"{instances[name]}/chat",
                            headers=auth(key),
                            json={
                                "message": f"turn {turn}",
                                "session_id": session,
                            },
                        )
                    except httpx.HTTPError:
                        answer = await http.post(
                            f"{instances['a']}/chat",
                            headers=auth(key),
                            json={
                                "message": f"turn {turn}",
                                "session_id": session,
                            },
                        )
                        name = "a"
                    results.append((name, answer.status_code, f"{session}/{turn}"))

        async def load_then_kill() -> None:
            tasks = [asyncio.create_task(client(n)) for n in range(20)]
            while len(results) < 40:
                await asyncio.sleep(0.05)
            b.kill()
            killed_at.append(len(results))
            await asyncio.gather(*tasks)

        started = time.perf_counter()
        asyncio.run(asyncio.wait_for(load_then_kill(), timeout=600))
        wall = time.perf_counter() - started
        codes = [status for _, status, _ in results]
        assert len(results) == 100 and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
        after_kill = [r for r in results[killed_at[0] :] if r[0] == "a"]
        assert len(after_kill) >= 50  # the survivor kept answering

        # every acknowledged turn is in the database, with its reply
        import psycopg

        sync = url.replace("postgresql+asyncpg://", "postgresql://")
        with psycopg.connect(sync) as db:
            stored = {
                f"{sid.rsplit('/', 1)[-1]}/{content.split()[-1]}"
                for sid, content in db.execute(
                    "select m.session_id, m.content from messages m where m.role = 'user' "
                    "and m.status = 'complete' and exists (select 1 from messages r where "
                    "r.reply_to = m.id and r.role = 'assistant')"
                )
            }
        assert {turn for _, _, turn in results} <= stored

        # a session started on one instance continues on the other: all turns in order
        detail = httpx.get(f"{a.url}/sessions/duo-0", headers=auth(keys[0])).json()
        assert [
            m["content"]
            for m in detail["history"]
            if m["role"] == "user" and m["status"] == "complete"
        ] == [f"turn {t}" for t in range(5)]

        # the per-minute limit is one limit across both (b restarted on the same database)
        b.start()
        ok = 0
        with httpx.Client(timeout=30) as http:
            for i in range(120):
                target = (a.url, b.url)[i % 2]
                ok += http.get(f"{target}/sessions", headers=auth(limited)).status_code == 200
        assert 90 <= ok <= 91, ok  # 90 per minute in all, not 90 per instance
        assert "two-instances" not in a.log.read_text()  # the secret is never printed
        assert postgres.password not in a.log.read_text() + b.log.read_text()
        print(
            f"\ntwo instances on PostgreSQL: 100 /chat from 20 clients in {wall:.1f} s, 0 x 5xx, "
            f"instance b SIGKILLed after {killed_at[0]} answers, {len(after_kill)} answered by "
            f"a after it; every acknowledged turn stored; shared limit: {ok} of 120 in a minute"
        )
    finally:
        a.stop()
        if b.proc is not None:
            b.stop()
