"""The service's database: SQLAlchemy 2 (async) models and the engine.

SQLite in WAL mode by default (one file, concurrent readers, crash-safe commits);
PostgreSQL by changing the URL. The schema is versioned with Alembic
(``service/migrations``): ``open_database`` upgrades it to the newest revision before
the service answers, so an upgrade never loses data.
"""

from __future__ import annotations

import enum
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    pass


class TurnStatus(enum.StrEnum):
    PENDING = "pending"  # the user's turn, committed before the LLM call
    COMPLETE = "complete"
    FAILED = "failed"  # the LLM call failed: the turn is kept, marked
    INCOMPLETE = "incomplete"  # a stream cut short (client gone, engine died)
    INTERRUPTED = "interrupted"  # left pending by an instance that died mid-call


class TaskStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # left running by an instance that died mid-call


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(140), primary_key=True)  # "<tenant>/<user>"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key: its public id and the SHA-256 of its secret part, never the secret."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    #: the tools this key's user may use (None: every tool of the agent)
    tools: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    #: an admin key sees every user's prompt text and the engine-wide figures
    admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


#: a stored session id: "<tenant>/<user>/<the caller's id>" (tenants, users and session
#: ids are each at most 64 characters without '/')
SESSION_KEY_LEN = 200


class ChatSession(Base):
    """A chat session. ``id`` is scoped by its user (``<tenant>/<user>/<id>``); callers
    only ever see and send the last part (``public_id``)."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(SESSION_KEY_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent_type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def public_id(self) -> str:
        return public_session_id(self.id)


def session_key(user_id: str, session_id: str) -> str:
    """The stored id of a caller's session (``user_id`` is ``<tenant>/<user>``)."""
    return f"{user_id}/{session_id}"


def public_session_id(key: str) -> str:
    return key.rsplit("/", 1)[-1]


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(SESSION_KEY_LEN), ForeignKey("sessions.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=TurnStatus.COMPLETE)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(nullable=True)
    cached_tokens: Mapped[int | None] = mapped_column(nullable=True)
    ttft: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: an assistant turn: the id of the user turn it answers (history pairs by it)
    reply_to: Mapped[int | None] = mapped_column(nullable=True)
    #: a pending user turn: the instance waiting for its reply
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ix_messages_session", "session_id", "id"),)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    session_id: Mapped[str] = mapped_column(
        String(SESSION_KEY_LEN), ForeignKey("sessions.id", ondelete="CASCADE")
    )
    agent_type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    required_tools: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    priority: Mapped[str | None] = mapped_column(String(32), nullable=True)
    deadline: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.RUNNING)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(nullable=True)
    cached_tokens: Mapped[int | None] = mapped_column(nullable=True)
    ttft: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the engine request's whole time and its output tokens (the task's cache figures)
    processing_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: a running task: the instance waiting for its result
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: the workflow's agents in order (declared on its first task) and this task's step
    plan: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    step: Mapped[int] = mapped_column(default=0)


def figures_index(group: str) -> tuple[str, ...]:
    """The columns of an index that covers /stats for one grouping (agent or tier)."""
    return ("tenant_id", group, "ttft", "prompt_tokens", "cached_tokens")


class CacheRecord(Base):
    """One LLM request's cache figures (every endpoint)."""

    __tablename__ = "cache_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(140))
    endpoint: Mapped[str] = mapped_column(String(32))
    agent_type: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int | None] = mapped_column(nullable=True)
    ttft: Mapped[float | None] = mapped_column(Float, nullable=True)
    processing_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the request's messages as JSON, only when service.record_prompts is on
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: the session of a /chat or /tasks request (deleted with it)
    session_id: Mapped[str | None] = mapped_column(String(SESSION_KEY_LEN), nullable=True)
    #: gateway requests, the stabilizer (``service/stabilizer.py``): the mode applied,
    #: the request's family, whether it was rewritten and what moved (line shapes as a
    #: JSON list, never the text), and the cached tokens predicted (block-exact, from the
    #: engine's tokenizer) for the prompt as the caller wrote it and as stabilized
    stabilize: Mapped[str | None] = mapped_column(String(8), nullable=True)
    family: Mapped[str | None] = mapped_column(String(200), nullable=True)
    rewritten: Mapped[bool | None] = mapped_column(nullable=True)
    moved_lines: Mapped[int | None] = mapped_column(nullable=True)
    tools_sorted: Mapped[bool | None] = mapped_column(nullable=True)
    moved_shapes: Mapped[str | None] = mapped_column(Text, nullable=True)
    predicted_original: Mapped[int | None] = mapped_column(nullable=True)
    predicted_stabilized: Mapped[int | None] = mapped_column(nullable=True)

    __table_args__ = (
        # /stats and the dashboard: sums per group and percentiles in ttft order, read
        # from the index alone (it covers every column they use)
        Index("ix_cache_records_tenant_agent_ttft", *figures_index("agent_type")),
        Index("ix_cache_records_tenant_tier_ttft", *figures_index("tier")),
        Index("ix_cache_records_session", "session_id"),
        Index("ix_cache_records_tenant_family", "tenant_id", "family"),
    )


class RateWindow(Base):
    """Requests of one key in one minute: the rate limit, shared by every instance."""

    __tablename__ = "rate_windows"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    window: Mapped[int] = mapped_column(Integer, primary_key=True)  # unix minute
    count: Mapped[int] = mapped_column(Integer, default=0)


class Instance(Base):
    """A running ``prefixcache serve``: its heartbeat tells the others it is alive."""

    __tablename__ = "service_instances"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


def sync_url(url: str) -> str:
    """The same database through a synchronous driver (for migrations)."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}.get(parsed.get_backend_name())
    return parsed.set(drivername=driver or parsed.get_backend_name()).render_as_string(
        hide_password=False
    )


def display_url(url: str) -> str:
    """The URL to print or log: its password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show none of it
        return "<unparseable database URL>"


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def prepare_sqlite_file(url: str) -> Path | None:
    """For a SQLite URL: its folder (created mode 0700) and the file itself, created
    mode 0600 before SQLite opens it (SQLite gives its WAL and shared-memory files the
    database file's mode). Every command that opens the database calls this first."""
    path = sqlite_path(url)
    if path is None:
        return None
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    return path


def create_engine(url: str) -> AsyncEngine:
    """The async engine. Bound parameters (message text, keys' hashes) are never put into
    error messages or logs (``hide_parameters``). A server database's connections are
    checked before use (a restarted PostgreSQL); a SQLite file's need no such round trip
    (four per ``/chat``)."""
    path = prepare_sqlite_file(url)
    engine = create_async_engine(url, pool_pre_ping=path is None, hide_parameters=True)
    if path is not None:

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
