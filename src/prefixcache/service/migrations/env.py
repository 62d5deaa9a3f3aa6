"""Alembic environment for the service's schema (run by ``upgrade_database``, which
passes its connection and the advisory lock key in ``config.attributes``).

Every revision runs in one transaction (``transactional_ddl``: SQLite and PostgreSQL both
roll DDL back), and on PostgreSQL under a transaction-scoped advisory lock taken before
Alembic reads the current revision, so two instances starting together upgrade once."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from prefixcache.service.db import Base

config = context.config
connection = config.attributes.get("connection")
assert connection is not None, "upgrade_database passes its connection"
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        key = int(config.attributes.get("advisory_lock", 0))
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    context.run_migrations()
