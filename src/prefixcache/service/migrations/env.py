"""Alembic environment for the service's schema (run by ``upgrade_database``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from prefixcache.service.db import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "upgrade_database sets sqlalchemy.url"
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
