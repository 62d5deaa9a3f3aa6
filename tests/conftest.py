"""Shared fixtures. Tests that need an LLM use the real embedded vLLM engine (see
``tests/integration/conftest.py``); nothing here is mocked."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from prefixcache import PromptLibrary, Settings, set_default_library

from .postgres_server import PostgresServer
from .service_support import Client, make_key, write_config


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, a stopped `make`) ends the session as Ctrl-C does: pytest
    then tears down every fixture, so the PostgreSQL and vLLM servers the tests started
    are stopped by PID instead of left running."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}: stopping, servers are torn down")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture
def library() -> PromptLibrary:
    """A library with the built-in prompts only, independent of any config file."""
    return PromptLibrary(Settings())


@pytest.fixture(autouse=True)
def _isolated_default_library() -> Iterator[None]:
    """Each test starts with a fresh default library (no memoised state leaks between tests)."""
    set_default_library(None)
    yield
    set_default_library(None)


@pytest.fixture
def user_prompt_dir(tmp_path: Path) -> Path:
    """A user prompt directory that overrides one built-in prompt and adds one."""
    (tmp_path / "default").mkdir()
    (tmp_path / "custom").mkdir()
    (tmp_path / "default" / "agent.system.main.tips.md").write_text("# Tips\n\nUser tips.\n")
    (tmp_path / "custom" / "greeting.md").write_text("Hello {{ name }}!\n")
    return tmp_path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the test session (stopped by PID at the end)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty service database: a SQLite file, or a database on the session's
    PostgreSQL server. Tests taking it run once on each."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[Client]:
    """The service app in process on a real database (SQLite, then PostgreSQL), vLLM
    down; a key of acme/alice."""
    from fastapi.testclient import TestClient

    from prefixcache import load_settings
    from prefixcache.service.app import create_app

    settings = load_settings(
        write_config(
            tmp_path, db_url, max_body_bytes=4096, max_message_chars=500, rate_limit_per_minute=30
        )
    )
    url = settings.service.resolved_database_url()
    key = make_key(url, "acme", "alice")
    with TestClient(create_app(settings)) as test_client:
        yield test_client, {"Authorization": f"Bearer {key}"}, url
