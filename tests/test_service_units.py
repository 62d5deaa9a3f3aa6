"""The service without an engine: a real SQLite database, the real app in process
(Starlette's TestClient), and vLLM down (a closed loopback port). The live suite covers
the service against the real engine."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from prefixcache import load_settings
from prefixcache.service.app import create_app
from prefixcache.service.auth import Principal, authenticate, revoke_key
from prefixcache.service.db import Message, create_engine, session_factory
from prefixcache.service.isolation import cache_salt, load_or_create_secret
from prefixcache.service.migrate import upgrade_database
from prefixcache.service.ratelimit import SharedRateLimiter

from .service_support import Client, make_key, write_config


def test_keys_are_hashed_checked_and_revocable(db_url: str) -> None:
    url = db_url
    key = make_key(url, "acme", "alice", ["file_read"])
    assert key.startswith("pc_") and len(key) > 50

    async def go() -> tuple[Principal | None, Principal | None, Principal | None, str]:
        engine = create_engine(url)
        async with session_factory(engine)() as db:
            ok = await authenticate(db, key)
            wrong = await authenticate(db, key[:-3] + "xyz")
            assert ok is not None and await revoke_key(db, ok.key_id)
            revoked = await authenticate(db, key)
            stored = str((await db.execute(text("select secret_hash from api_keys"))).scalar())
        await engine.dispose()
        return ok, wrong, revoked, stored

    ok, wrong, revoked, stored = asyncio.run(go())
    assert ok is not None and (ok.tenant, ok.user, ok.tools) == ("acme", "alice", ("file_read",))
    assert wrong is None and revoked is None
    assert key.split("_", 2)[2] not in stored  # only the hash is kept


def test_salts_isolate_tenants_and_cannot_be_guessed(tmp_path: Path) -> None:
    a = Principal("k1", "acme", "alice", None)
    a2 = Principal("k2", "acme", "bob", None)
    b = Principal("k3", "globex", "alice", None)
    s = "secret-" * 6
    assert cache_salt(s, a, "tenant") == cache_salt(s, a2, "tenant") != cache_salt(s, b, "tenant")
    assert cache_salt(s, a, "user") != cache_salt(s, a2, "user")
    assert cache_salt(s, a, "shared") is None
    assert cache_salt("another-secret" * 3, a, "tenant") != cache_salt(s, a, "tenant")
    secret = load_or_create_secret(tmp_path / "service.secret")
    assert secret == load_or_create_secret(tmp_path / "service.secret")  # created once, kept
    assert oct((tmp_path / "service.secret").stat().st_mode)[-3:] == "600"


def test_the_rate_limit_is_one_sliding_window_in_the_database(db_url: str) -> None:
    """Two limiters (two instances) on one database share one count per key."""
    upgrade_database(db_url)

    async def go() -> tuple[list[float], float, float, float]:
        engine = create_engine(db_url)
        one, two = SharedRateLimiter(4), SharedRateLimiter(4)
        t0 = 1_800_000_000.0  # the start of a minute
        try:
            async with session_factory(engine)() as db:
                waits = [await (one if i % 2 else two).check(db, "k", t0 + i) for i in range(5)]
                other = await one.check(db, "other-key", t0 + 5)
                # next minute, 30 s in: half of the previous minute's 5 still counts
                later = await one.check(db, "k", t0 + 90)
                await SharedRateLimiter.forget_old(db, t0 + 200)
                left = (await db.execute(text("select count(*) from rate_windows"))).scalar()
        finally:
            await engine.dispose()
        return waits, other, later, float(left or 0)

    waits, other, later, left = asyncio.run(go())
    assert waits[:4] == [0.0] * 4 and waits[4] > 0  # the 5th within a minute waits
    assert other == 0.0 and later == 0.0  # 2.5 + 1 <= 4
    assert left == 0  # old windows are dropped


def test_every_route_but_health_needs_a_key(client: Client) -> None:
    test_client, _auth, _ = client
    assert test_client.get("/health").status_code == 200
    assert test_client.get("/metrics").status_code == 200
    for method, path in (
        ("GET", "/sessions"),
        ("POST", "/chat"),
        ("GET", "/stats"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/tasks/t_x"),
    ):
        response = test_client.request(method, path, json={})
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert "keys create" in response.json()["error"]["message"]
    bad = test_client.get(
        "/sessions", headers={"Authorization": "Bearer pc_0000000000000000_" + "x" * 40}
    )
    assert bad.status_code == 401


def test_vllm_down_is_503_and_the_turn_is_kept(
    client: Client,
) -> None:
    test_client, auth, _url = client
    response = test_client.post(
        "/chat", headers=auth, json={"message": "hello", "session_id": "s1"}
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "llm_unavailable"
    detail = test_client.get("/sessions/s1", headers=auth).json()
    assert [(m["role"], m["status"]) for m in detail["history"]] == [("user", "failed")]
    assert "Cannot reach" in detail["history"][0]["error"]
    ready = test_client.get("/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert ready.json()["warming"] == "waiting for the engine"
    assert ready.json()["vllm_url"] is None  # not shown without an admin key
    assert (
        test_client.post(
            "/v1/chat/completions",
            headers=auth,
            json={"messages": [{"role": "user", "content": "x"}]},
        ).status_code
        == 503
    )


def test_known_bad_input_is_4xx_naming_the_limit(
    client: Client,
) -> None:
    test_client, auth, _ = client
    big = test_client.post("/chat", headers=auth, content=b'{"message": "' + b"x" * 5000 + b'"}')
    assert big.status_code == 413 and "max_body_bytes" in big.json()["error"]["message"]
    long = test_client.post("/chat", headers=auth, json={"message": "y" * 600})
    assert long.status_code == 413 and "max_message_chars" in long.json()["error"]["message"]
    unknown = test_client.post(
        "/chat", headers=auth, json={"message": "hi", "agent_type": "frontend-enginer"}
    )
    assert unknown.status_code == 422 and "frontend-engineer" in unknown.json()["error"]["message"]
    extra = test_client.post("/chat", headers=auth, json={"message": "hi", "user": "mallory"})
    assert extra.status_code == 422 and "user" in extra.json()["error"]["message"]
    as_json = {**auth, "Content-Type": "application/json"}
    not_json = test_client.post("/v1/chat/completions", headers=as_json, content=b"{nope")
    assert not_json.status_code == 422 and "not JSON" in not_json.json()["error"]["message"]
    no_type = test_client.post("/v1/chat/completions", headers=auth, content=b"{}")
    assert no_type.status_code == 415 and "application/json" in no_type.json()["error"]["message"]
    assert test_client.get("/sessions/nope", headers=auth).status_code == 404
    assert test_client.get("/tasks/nope", headers=auth).status_code == 404


def test_too_many_requests_is_429_with_retry_after(
    client: Client,
) -> None:
    test_client, auth, _ = client
    codes = [test_client.get("/sessions", headers=auth).status_code for _ in range(40)]
    assert codes[:30] == [200] * 30 and 429 in codes[30:]
    limited = test_client.get("/sessions", headers=auth)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_session_ids_are_scoped_by_user_and_tenant(client: Client) -> None:
    """A caller's session id names only its own session: another user's (or tenant's)
    identical id is a different session, and asking for an id that exists elsewhere
    answers exactly as for one that exists nowhere."""
    test_client, alice, url = client
    bob = {"Authorization": f"Bearer {make_key(url, 'acme', 'bob')}"}
    carol = {"Authorization": f"Bearer {make_key(url, 'globex', 'carol')}"}
    test_client.post("/chat", headers=alice, json={"message": "hello", "session_id": "support-42"})
    assert test_client.get("/sessions/support-42", headers=alice).status_code == 200
    for other in (bob, carol):
        foreign = test_client.get("/sessions/support-42", headers=other)
        absent = test_client.get("/sessions/support-43", headers=other)
        assert foreign.status_code == absent.status_code == 404
        assert (
            foreign.json()["error"]["message"].replace("42", "43")
            == absent.json()["error"]["message"]
        )
        assert test_client.delete("/sessions/support-42", headers=other).status_code == 404
    # carol's own "support-42": her turn only, alice's session untouched
    mine = test_client.post(
        "/chat", headers=carol, json={"message": "mine", "session_id": "support-42"}
    )
    assert mine.status_code == 503  # the engine is down; the session is hers
    carol_view = test_client.get("/sessions/support-42", headers=carol).json()
    assert [m["content"] for m in carol_view["history"]] == ["mine"]
    alice_view = test_client.get("/sessions/support-42", headers=alice).json()
    assert [m["content"] for m in alice_view["history"]] == ["hello"]
    assert [s["id"] for s in test_client.get("/sessions", headers=bob).json()] == []
    assert test_client.delete("/sessions/support-42", headers=alice).status_code == 204
    assert test_client.get("/sessions/support-42", headers=alice).status_code == 404
    assert test_client.get("/sessions/support-42", headers=carol).status_code == 200


def test_an_unexpected_error_is_500_with_a_request_id(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(write_config(tmp_path, db_url))
    key = make_key(settings.service.resolved_database_url(), "acme", "alice")
    # one client for the app's whole life: a second would run its database connections
    # on another event loop, which asyncpg does not survive
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        state = test_client.app.state.service  # type: ignore[attr-defined]

        def boom(*args: object, **kwargs: object) -> object:
            raise RuntimeError("a bug")

        state.library.compose_prompt = boom  # a fault the service does not know
        response = test_client.post(
            "/chat", headers={"Authorization": f"Bearer {key}"}, json={"message": "hi"}
        )
    assert response.status_code == 500
    rid = response.json()["error"]["request_id"]
    assert rid and response.headers["x-request-id"] == rid
    assert any(rid in record.getMessage() for record in caplog.records)


def test_migrations_create_every_table(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    assert upgrade_database(url) is True
    assert upgrade_database(url) is False  # current: only read

    async def tables() -> set[str]:
        engine = create_engine(url)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("select name from sqlite_master where type='table'"))
            ).all()
            mode = (await conn.execute(text("pragma journal_mode"))).scalar()
        await engine.dispose()
        assert mode == "wal"
        return {r[0] for r in rows}

    assert {
        "tenants",
        "users",
        "api_keys",
        "sessions",
        "messages",
        "tasks",
        "cache_records",
        "alembic_version",
    } <= asyncio.run(tables())
    assert Message.__tablename__ == "messages"


def _add_records(url: str, rows: list[tuple[str, str | None, int]]) -> None:
    """(tenant, prompt JSON, age in days) cache records, written straight to the database."""
    from datetime import timedelta

    from prefixcache.service.db import CacheRecord, utcnow

    async def go() -> None:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as db:
                for tenant, prompt, days in rows:
                    db.add(
                        CacheRecord(
                            tenant_id=tenant,
                            user_id=f"{tenant}/u",
                            endpoint="gateway",
                            agent_type="release-bot",
                            tier="unknown",
                            prompt_tokens=100,
                            cached_tokens=0,
                            ttft=0.1,
                            prompt=prompt,
                            created_at=utcnow() - timedelta(days=days),
                        )
                    )
                await db.commit()
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_recorded_prompts_expire_and_export_as_a_trace(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from prefixcache.cli.app import app
    from prefixcache.traces.records import read_trace

    config = write_config(tmp_path, record_prompts="true", record_prompts_days=3)
    settings = load_settings(config)
    url = settings.service.resolved_database_url()
    make_key(url, "acme", "alice")
    prompt = json.dumps([{"role": "user", "content": "hi"}])
    _add_records(url, [("acme", prompt, 10), ("acme", prompt, 1), ("other", prompt, 0)])
    with TestClient(create_app(settings)):  # startup removes text past its retention
        pass
    out = tmp_path / "t.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        app, ["--config", str(config), "export-trace", "--out", str(out), "--tenant", "acme"]
    )
    assert result.exit_code == 0, result.output
    (record,) = read_trace(out)  # the 10-day-old text is gone, its figures stay
    assert record.cache_salt == "acme" and record.agent == "release-bot"
    assert record.labels == {"tenant": "acme", "endpoint": "gateway", "tier": "unknown"}
    result = runner.invoke(
        app, ["--config", str(config), "export-trace", "--out", str(out), "--tenant", "nobody"]
    )
    assert result.exit_code == 1 and "no recorded prompts" in result.output


def test_dashboard_with_the_engine_down(client: Client) -> None:
    test_client, auth, url = client
    page = test_client.get("/dashboard", headers=auth)
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]
    assert 'id="total-requests" data-value="0"' in page.text
    # engine-wide counters and replica addresses: admins only
    assert 'id="replicas-note"' in page.text and "127.0.0.1" not in page.text
    admin = {"Authorization": f"Bearer {make_key(url, 'acme', 'root', admin=True)}"}
    admin_page = test_client.get("/dashboard", headers=admin).text
    assert "/metrics: ConnectError" in admin_page  # the replica is shown as unreachable
    assert 'id="replicas-note"' not in admin_page
    assert "set service.record_prompts: true" in page.text
    login = test_client.post("/dashboard/login", data={"key": "nope"}, follow_redirects=False)
    assert login.status_code == 401 and "not valid" in login.text
    key = auth["Authorization"][7:]
    login = test_client.post("/dashboard/login", data={"key": key}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/dashboard"
    assert test_client.get("/dashboard").status_code == 200  # the cookie signs in
    test_client.post("/dashboard/logout")
    assert test_client.get("/dashboard").status_code == 401


def test_the_models_match_the_migrations(db_url: str) -> None:
    """A database built by the migrations has exactly the tables, columns and indexes the
    ORM models declare (alembic's autogenerate finds nothing to change), on SQLite and on
    PostgreSQL: a model changed without its migration fails here."""
    import sqlalchemy
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from prefixcache.service.db import Base, sync_url

    upgrade_database(db_url)
    engine = sqlalchemy.create_engine(sync_url(db_url))
    # column types are compared on PostgreSQL, which enforces a VARCHAR's length; SQLite
    # keeps the widened session ids in its original VARCHAR(64) (migration 0002)
    postgres = engine.dialect.name == "postgresql"
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": postgres})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], diff


def test_ready_answers_in_time_when_vllm_is_too_busy_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM accepts the connection but answers nothing (as when it is starved of CPU):
    /ready still answers, within its deadline, naming what happened."""
    from prefixcache.service import readiness

    monkeypatch.setattr(readiness, "PROBE_DEADLINE_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are queued, never accepted or answered
        config = write_config(tmp_path)
        text_ = config.read_text()
        config.write_text(
            re.sub(
                r"(?m)^    base_url: \S+$",
                f"    base_url: http://127.0.0.1:{silent.getsockname()[1]}",
                text_,
            )
        )
        with TestClient(create_app(load_settings(config))) as test_client:
            started = time.monotonic()
            ready = test_client.get("/ready")
            waited = time.monotonic() - started
    assert ready.status_code == 503 and waited < 3, waited
    assert ready.json()["problem"] == "vLLM did not answer /metrics within 0.5 s (busy?)"


def test_recent_engine_facts_stand_in_for_a_busy_engine() -> None:
    from prefixcache.service.readiness import KNOWN_FOR_S, EngineFacts, stand_in

    facts = EngineFacts(prefix_caching=True, block_size=16, at=100.0)
    recent = stand_in(facts, 100.0 + 12.34)
    assert recent is not None and recent.ready and recent.block_size == 16
    assert recent.checked_s_ago == 12.3
    assert stand_in(facts, 100.0 + KNOWN_FOR_S + 1) is None  # too old to stand in
    assert stand_in(None, 100.0) is None
    off = stand_in(EngineFacts(prefix_caching=False, block_size=16, at=100.0), 101.0)
    assert off is not None and not off.ready and "--enable-prefix-caching" in str(off.problem)
