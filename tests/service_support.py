"""The service in process for the unit tests: a config on a real database (SQLite or
PostgreSQL), keys created through the real code, vLLM down (a closed loopback port)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from fastapi.testclient import TestClient

from prefixcache.service.auth import create_key
from prefixcache.service.db import create_engine, session_factory
from prefixcache.service.migrate import upgrade_database


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def write_config(tmp_path: Path, db_url: str | None = None, **service: object) -> Path:
    url = db_url or f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}"
    lines = [
        "llm:",
        "  vllm:",
        f"    base_url: http://127.0.0.1:{closed_port()}",
        "    max_retries: 0",
        "    max_model_len: 8192",
        "service:",
        f"  database_url: {url}",
        "  secret: unit-test-secret-0123456789abcdef0123456789",
    ]
    lines += [f"  {k}: {v}" for k, v in service.items()]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_key(
    url: str, tenant: str, user: str, tools: list[str] | None = None, admin: bool = False
) -> str:
    async def go() -> str:
        upgrade_database(url)
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as db:
                return await create_key(db, tenant, user, tools, admin)
        finally:
            await engine.dispose()

    return asyncio.run(go())


Client = tuple[TestClient, dict[str, str], str]
