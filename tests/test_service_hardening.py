"""The service under hostile callers, in process, on SQLite and on PostgreSQL, with vLLM
down (a closed loopback port): a request that reached the engine would answer 503, so a
4xx here also proves it was refused before anything was sent."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from prefixcache import load_settings
from prefixcache.errors import ConfigError
from prefixcache.service.admission import Admission, Limits
from prefixcache.service.app import create_app
from prefixcache.service.db import (
    CacheRecord,
    ChatSession,
    Instance,
    Message,
    Task,
    create_engine,
    session_factory,
    utcnow,
)
from prefixcache.service.errors import TooManyRequests, Unavailable
from prefixcache.service.gateway_contract import MAX_DEPTH, GatewayContract, parse_json
from prefixcache.service.isolation import load_or_create_secret
from prefixcache.service.migrate import head_revision
from prefixcache.settings import GatewaySettings

from .service_support import Client, make_key, write_config

MSG = [{"role": "user", "content": "hi"}]


def hostile_gateway_cases() -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, body or raw bytes, extra headers): what a hostile key holder sends."""
    deep = b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    return [
        ("n=64", {"messages": MSG, "n": 64}, {}),
        ("max_tokens=32000", {"messages": MSG, "max_tokens": 32000}, {}),
        ("ignore_eos", {"messages": MSG, "ignore_eos": True, "max_tokens": 16}, {}),
        ("priority=-100", {"messages": MSG, "priority": -100}, {}),
        ("logit_bias", {"messages": MSG, "logit_bias": {"50256": -100}}, {}),
        ("prompt_logprobs", {"messages": MSG, "prompt_logprobs": 20}, {}),
        ("guided_json", {"messages": MSG, "guided_json": {"type": "object"}}, {}),
        (
            "response_format json_schema",
            {"messages": MSG, "response_format": {"type": "json_schema", "json_schema": {}}},
            {},
        ),
        ("chat_template", {"messages": MSG, "chat_template": "{{ 'x' }}"}, {}),
        ("vllm_xargs", {"messages": MSG, "vllm_xargs": {"a": 1}}, {}),
        ("kv_transfer_params", {"messages": MSG, "kv_transfer_params": {}}, {}),
        ("cache_salt", {"messages": MSG, "cache_salt": "guess"}, {}),
        ("model=other (LoRA)", {"messages": MSG, "model": "someone-elses-lora"}, {}),
        (
            "image_url part",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}
                        ],
                    }
                ]
            },
            {},
        ),
        ("role=hacker", {"messages": [{"role": "hacker", "content": "x"}]}, {}),
        ("unknown message key", {"messages": [{"role": "user", "content": "x", "x": 1}]}, {}),
        ("stream='yes'", {"messages": MSG, "stream": "yes"}, {}),
        (
            "temperature=NaN",
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
            {},
        ),
        (
            "temperature=1e999",
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}',
            {},
        ),
        ("lone surrogate", b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}', {}),
        ("JSON 10,000 deep", deep, {}),
        ("JSON 100 deep", b'{"messages": ' + b"[" * 100 + b"]" * 100 + b"}", {}),
        ("stream_options=1", {"messages": MSG, "stream": True, "stream_options": 1}, {}),
        ("stream_options list", {"messages": MSG, "stream": True, "stream_options": []}, {}),
        ("messages not a list", {"messages": "hi"}, {}),
        ("body not an object", [1, 2], {}),
        ("non-ASCII x-session-id", {"messages": MSG}, {"x-session-id": "séance".encode()}),
        ("x-session-id with '/'", {"messages": MSG}, {"x-session-id": "a/b"}),
        ("non-JSON content type", b"messages=hi", {"content-type": "text/plain"}),
        ("oversized chunked body", b"x" * 5000, {}),
    ]


def _send(test_client: TestClient, auth: dict[str, str], body: Any, headers: dict[str, Any]) -> Any:
    merged = {**auth, "content-type": "application/json", **headers}
    if isinstance(body, bytes):
        if len(body) > 4096 and not body.startswith(b"{"):  # streamed with no length
            return test_client.post(
                "/v1/chat/completions", headers=merged, content=iter([body[:2000], body[2000:]])
            )
        return test_client.post("/v1/chat/completions", headers=merged, content=body)
    return test_client.post("/v1/chat/completions", headers=merged, content=json.dumps(body))


@pytest.fixture
def roomy(tmp_path: Path, db_url: str) -> Iterator[Client]:
    """The app with a body limit large enough for the 10,000-deep case to be parsed."""
    settings = load_settings(
        write_config(tmp_path, db_url, max_body_bytes=65536, rate_limit_per_minute=0)
    )
    url = settings.service.resolved_database_url()
    key = make_key(url, "acme", "alice")
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client, {"Authorization": f"Bearer {key}"}, url


def test_the_hostile_batch_gets_4xx_naming_the_field(roomy: Client, client: Client) -> None:
    test_client, auth, url = roomy
    rows = []
    for name, body, headers in hostile_gateway_cases():
        target, who = (
            (client[0], client[1]) if name == "oversized chunked body" else (test_client, auth)
        )
        answer = _send(target, who, body, headers)
        payload = answer.json()
        assert set(payload) == {"error"}, (name, payload)  # one error shape everywhere
        rows.append((name, answer.status_code, payload["error"]["message"][:90]))
    revoked_key = make_key(url, "acme", "mallory")
    key_id = revoked_key.split("_")[1]
    asyncio.run(_revoke(url, key_id))
    gone = test_client.post(
        "/v1/chat/completions",
        json={"messages": MSG},
        headers={"Authorization": f"Bearer {revoked_key}"},
    )
    rows.append(("revoked key (at once)", gone.status_code, gone.json()["error"]["message"][:70]))
    print("\nhostile batch (gateway, engine down: any forwarded request would be 503)")
    print(f"{'case':<30} {'status':>6}  message")
    for name, status, message in rows:
        print(f"{name:<30} {status:>6}  {message}")
    statuses = {name: status for name, status, _ in rows}
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    assert statuses["non-JSON content type"] == 415
    assert statuses["oversized chunked body"] == 413
    assert statuses["revoked key (at once)"] == 401
    messages = {name: message for name, _, message in rows}
    assert "service.gateway.max_n" in messages["n=64"]
    assert "service.gateway.allow_ignore_eos" in messages["ignore_eos"]
    assert "'priority'" in messages["priority=-100"]
    assert "role" in messages["role=hacker"]


async def _revoke(url: str, key_id: str) -> None:
    from prefixcache.service.auth import revoke_key

    engine = create_engine(url)
    try:
        async with session_factory(engine)() as db:
            assert await revoke_key(db, key_id)
    finally:
        await engine.dispose()


def test_the_contract_forwards_only_the_allowlist() -> None:
    contract = GatewayContract(GatewaySettings(), "served", 8192)
    body = {
        "messages": [
            {"role": "developer", "content": "d"},
            {"role": "user", "content": [{"type": "text", "text": "x"}]},
        ],
        "temperature": 0,
        "top_k": 5,
        "min_p": 0.1,
        "stop": ["\n"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 1,
        "max_tokens": 16,
        "n": 1,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "auto",
        "user": "u1",
        "logprobs": True,
        "top_logprobs": 2,
        "response_format": {"type": "text"},
        "stop_token_ids": [2],
        "repetition_penalty": 1.1,
        "include_stop_str_in_output": False,
    }
    out = contract.check(body)
    assert out == {**body, "model": "served"}
    wide = GatewayContract(
        GatewaySettings(
            max_n=4,
            allow_ignore_eos=True,
            allow_structured_output=True,
            allow_media=True,
            models=["lora-a"],
        ),
        "served",
        8192,
    )
    assert (
        wide.check(
            {
                "messages": MSG,
                "n": 4,
                "ignore_eos": True,
                "model": "lora-a",
                "response_format": {"type": "json_object"},
            }
        )["n"]
        == 4
    )
    with pytest.raises(Exception, match="max_tokens"):
        contract.check({"messages": MSG, "max_tokens": 5000})  # over the 4096 default


def test_parse_json_refuses_what_python_would_accept() -> None:
    for raw in (
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b'"\\udc00"',
        b"\xff\xfe",
    ):
        with pytest.raises(Exception) as caught:
            parse_json(raw)
        assert type(caught.value).__name__ == "Unprocessable", raw
    assert parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a real pair is fine


def test_chat_input_errors_are_4xx(client: Client) -> None:
    test_client, auth, _ = client
    as_json = {**auth, "Content-Type": "application/json"}
    cases = {
        "stream yes": json.dumps({"message": "x", "stream": "yes"}).encode(),
        "NaN": b'{"message": "x", "temperature": NaN}',
        "surrogate": b'{"message": "a\\ud800"}',
        "deep": b'{"message": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        "session non-ASCII": json.dumps({"message": "x", "session_id": "séance"}).encode(),
        "session slash": json.dumps({"message": "x", "session_id": "a/b"}).encode(),
        "max_tokens string": json.dumps({"message": "x", "max_tokens": "5"}).encode(),
    }
    for name, raw in cases.items():
        answer = test_client.post("/chat", headers=as_json, content=raw)
        assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)
        assert set(answer.json()) == {"error"}, name
    assert test_client.post("/chat", headers=auth, content=b"message=x").status_code == 415
    # Starlette's own errors in the same shape
    for method, path, status in (("GET", "/nope", 404), ("PUT", "/chat", 405)):
        answer = test_client.request(method, path, headers=auth)
        assert answer.status_code == status and set(answer.json()) == {"error"}
    assert test_client.get("/sessions/a%2Fb", headers=auth).status_code in (404, 422)


def test_a_rejected_request_stores_nothing(client: Client) -> None:
    test_client, auth, _ = client
    answer = test_client.post(
        "/chat", headers=auth, json={"message": "x", "agent_type": "no-such", "session_id": "new-1"}
    )
    assert answer.status_code == 422
    assert test_client.get("/sessions/new-1", headers=auth).status_code == 404
    assert test_client.get("/sessions", headers=auth).json() == []


def test_admission_limits_keys_and_shares_between_tenants() -> None:
    async def go() -> None:
        admission = Admission(Limits(per_key=2, per_tenant=2, inflight=3, queue_timeout_s=0.3))
        a1 = await admission.acquire("ka", "A")
        a2 = await admission.acquire("ka", "A")
        with pytest.raises(TooManyRequests):
            await admission.acquire("ka", "A")  # the key's third
        # tenant A holds its share (2 of 3): A's next waits, B still gets the last slot
        waiting_a = asyncio.create_task(admission.acquire("ka2", "A"))
        await asyncio.sleep(0.01)
        b1 = await admission.acquire("kb", "B")
        assert admission.inflight == 3 and not waiting_a.done()
        waiting_b = asyncio.create_task(admission.acquire("kb", "B"))
        await asyncio.sleep(0.01)
        a1()  # a slot of A's comes free: A is below its share again, and first in turn
        a3 = await asyncio.wait_for(waiting_a, 1)
        assert not waiting_b.done()
        b1()  # B's own slot passes to B's waiter
        b2 = await asyncio.wait_for(waiting_b, 1)
        with pytest.raises(Unavailable):
            await admission.acquire("kc", "C")  # every slot stays busy past the timeout
        for release in (a2, a3, b2, b2):
            release()  # twice is harmless
        assert admission.inflight == 0 and admission.by_key == {} and admission.by_tenant == {}

    asyncio.run(go())


def test_two_processes_migrate_at_once(db_url: str) -> None:
    code = (
        "import sys; from prefixcache.service.migrate import upgrade_database as u; u(sys.argv[1])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    from prefixcache.service.migrate import current_revision

    assert current_revision(db_url) == head_revision()


def test_files_are_private_and_the_secret_checked(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    url = f"sqlite+aiosqlite:///{home / 'service' / 'service.db'}"
    make_key(url, "acme", "alice")  # creates the folder and the file
    folder = home / "service"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("service.db", "service.db-wal"):
        if (folder / name).exists():
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    secret = folder / "service.secret"
    load_or_create_secret(secret)
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_secret(secret)
    os.chmod(secret, 0o600)
    secret.write_text("short\n")
    with pytest.raises(ConfigError, match="at least"):
        load_or_create_secret(secret)
    config = tmp_path / "c.yaml"
    config.write_text("service:\n  secret: too-short\n")
    with pytest.raises(ConfigError, match=r"service\.secret.*32"):
        load_settings(config)


def _write(url: str, rows: list[Any]) -> None:
    async def go() -> None:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as db:
                for row in rows:
                    db.add(row)
                    await db.flush()
                await db.commit()
        finally:
            await engine.dispose()

    asyncio.run(go())


def _query(url: str, sql: str) -> list[Any]:
    async def go() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql))).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_startup_marks_orphans_interrupted_and_applies_retention(
    tmp_path: Path, db_url: str
) -> None:
    settings = load_settings(write_config(tmp_path, db_url, retention_days=30))
    url = settings.service.resolved_database_url()
    make_key(url, "acme", "alice")
    old = utcnow() - timedelta(days=40)
    _write(
        url,
        [
            Instance(id="dead", started_at=old, seen_at=utcnow() - timedelta(minutes=5)),
            ChatSession(
                id="acme/alice/live",
                user_id="acme/alice",
                tenant_id="acme",
                agent_type="orchestrator",
            ),
            Message(
                session_id="acme/alice/live",
                role="user",
                content="q",
                status="pending",
                instance_id="dead",
            ),
            Task(
                id="t_1",
                user_id="acme/alice",
                session_id="acme/alice/live",
                agent_type="x",
                description="d",
                status="running",
                instance_id="dead",
            ),
            ChatSession(
                id="acme/alice/old",
                user_id="acme/alice",
                tenant_id="acme",
                agent_type="orchestrator",
                updated_at=old,
                created_at=old,
            ),
            Message(
                session_id="acme/alice/old", role="user", content="old text", status="complete"
            ),
            CacheRecord(
                tenant_id="acme",
                user_id="acme/alice",
                endpoint="chat",
                agent_type="x",
                tier="t",
                prompt_tokens=1,
                prompt="old prompt",
                session_id="acme/alice/old",
            ),
        ],
    )
    with TestClient(create_app(settings)):
        pass
    assert _query(url, "select status from messages") == [("interrupted",)]
    assert _query(url, "select status from tasks") == [("interrupted",)]
    assert _query(url, "select id from sessions") == [("acme/alice/live",)]
    assert _query(url, "select count(*) from cache_records") == [(0,)]
    # a clean stop removes its own row; the dead one stays until a day has passed
    assert _query(url, "select id from service_instances") == [("dead",)]


def test_stats_in_sql_match_the_percentiles_of_every_row(tmp_path: Path, db_url: str) -> None:
    from prefixcache.llm.metrics import percentile

    settings = load_settings(write_config(tmp_path, db_url))
    url = settings.service.resolved_database_url()
    key = make_key(url, "acme", "alice")
    ttfts: dict[str, list[float | None]] = {
        "a": [0.5, 0.1, 0.3, 0.2, 0.9, 0.4, None],
        "b": [1.0],
        "c": [None],
    }
    _write(
        url,
        [
            CacheRecord(
                tenant_id="acme",
                user_id="acme/alice",
                endpoint="chat",
                agent_type=agent,
                tier=f"tier-{agent}",
                prompt_tokens=100,
                cached_tokens=None if agent == "c" else 40,
                ttft=t,
            )
            for agent, values in ttfts.items()
            for t in values
        ]
        + [
            CacheRecord(
                tenant_id="other",
                user_id="other/x",
                endpoint="chat",
                agent_type="a",
                tier="tier-a",
                prompt_tokens=5,
                cached_tokens=5,
                ttft=9.0,
            )
        ],
    )
    with TestClient(create_app(settings)) as test_client:
        stats = test_client.get("/stats", headers={"Authorization": f"Bearer {key}"}).json()
    by_agent = {g["key"]: g for g in stats["by_agent"]}
    for agent, values in ttfts.items():
        known = [v for v in values if v is not None]
        assert by_agent[agent]["requests"] == len(values)
        assert by_agent[agent]["ttft_p50"] == pytest.approx(percentile(known, 50))
        assert by_agent[agent]["ttft_p95"] == pytest.approx(percentile(known, 95))
    assert by_agent["a"]["hit_rate"] == pytest.approx(0.4) and by_agent["c"]["hit_rate"] is None
    assert stats["requests"] == 9 and stats["hit_rate"] is None  # c reported no cached figure


def test_the_recorder_keeps_bounded_memory() -> None:
    from prefixcache.llm.metrics import RECENT, CacheMetricsRecorder
    from prefixcache.llm.models import LLMResponse
    from prefixcache.prompts.tiers import AgentTierMap

    recorder = CacheMetricsRecorder(AgentTierMap())
    response = LLMResponse(
        "ok",
        {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101, "cached_tokens": 90},
        {
            "cached_tokens": 90,
            "cache_hit_rate": 0.9,
            "ttft": 0.1,
            "provider": "vllm",
            "model": "m",
            "served_model": "m",
            "requested_model": "m",
            "request_id": "r",
        },
        0.2,
        "length",
    )
    for _ in range(3 * RECENT):
        recorder.record(response, agent_type="frontend-engineer")
    assert len(recorder.records) == RECENT
    (agent,) = recorder.by_agent()
    assert (agent.requests, agent.prompt_tokens, agent.cached_tokens) == (
        3 * RECENT,
        300 * RECENT,
        270 * RECENT,
    )


def test_a_stream_whose_client_left_before_it_began_still_cleans_up() -> None:
    from starlette.requests import ClientDisconnect

    from prefixcache.service.streaming import GuardedStreamingResponse

    started: list[bool] = []
    closed: list[bool] = []

    async def body() -> Any:
        started.append(True)
        yield b"data: x\n\n"

    async def on_close() -> None:
        closed.append(True)

    async def send(message: Any) -> None:
        raise OSError("the client is gone")

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    async def go() -> None:
        response = GuardedStreamingResponse(body(), on_close=on_close)
        with pytest.raises(ClientDisconnect):  # Starlette's word for the OSError
            await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)

    asyncio.run(go())
    assert started == [] and closed == [True]  # the body never ran; the cleanup did


def test_work_the_engine_could_not_take_is_kept_marked_failed(client: Client) -> None:
    """vLLM down: the turn and the task answer 503 and are stored, marked failed; a
    rejected one (unknown agent) stores nothing."""
    test_client, auth, url = client
    task = test_client.post(
        "/tasks", headers=auth, json={"agent_type": "backend-engineer", "description": "Plan it."}
    )
    assert task.status_code == 503
    bad = test_client.post(
        "/tasks", headers=auth, json={"agent_type": "no-such", "description": "x", "plan": ["a"]}
    )
    assert bad.status_code == 422
    assert _query(url, "select status, description from tasks") == [("failed", "Plan it.")]
