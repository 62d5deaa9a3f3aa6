"""Schema migrations (Alembic): the database is upgraded to the newest revision once per
start, before the service answers; revisions only add, so an upgrade never loses data.

Two processes may start together (two instances, or ``keys create`` beside ``serve``):
the upgrade runs under a lock, a file lock beside a SQLite file (and SQLite's own write
lock, ``BEGIN IMMEDIATE``) or a PostgreSQL advisory lock, and in one transaction, so the
second process waits, then finds the schema current and does nothing. A database already
at the newest revision is only read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from .db import prepare_sqlite_file, sync_url

MIGRATIONS = Path(__file__).parent / "migrations"
#: the PostgreSQL advisory lock key of schema upgrades (any constant bigint)
ADVISORY_LOCK_KEY = 0x70726566  # "pref"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def sync_engine(url: str) -> sa.Engine:
    """A synchronous engine for migrations: SQLite in transactional-DDL mode (every
    statement in one ``BEGIN IMMEDIATE`` transaction), parameters never logged."""
    prepare_sqlite_file(url)  # its folder (0700) and the file (0600) before SQLite opens it
    engine = sa.create_engine(sync_url(url), poolclass=NullPool, hide_parameters=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            dbapi_connection.execute("PRAGMA busy_timeout=30000")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: sa.Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def current_revision(url: str) -> str | None:
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _file_lock(url: str) -> Iterator[None]:
    path = prepare_sqlite_file(url)
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".migrate-lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def upgrade_database(url: str) -> bool:
    """Create or upgrade the schema at ``url`` to the newest revision; True if it changed
    anything. Safe to call from several processes at once."""
    head = head_revision()
    if current_revision(url) == head:
        return False
    with _file_lock(url):
        engine = sync_engine(url)
        try:
            with engine.connect() as connection:
                config = alembic_config(url)
                config.attributes["connection"] = connection
                config.attributes["advisory_lock"] = ADVISORY_LOCK_KEY
                command.upgrade(config, "head")
                connection.commit()
        finally:
            engine.dispose()
    return True


def schema_is_current(url: str) -> bool:
    """The database exists and is at the newest revision (for commands that only read)."""
    return current_revision(url) == head_revision()
