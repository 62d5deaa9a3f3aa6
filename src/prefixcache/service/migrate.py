"""Schema migrations (Alembic): the database is upgraded to the newest revision before
the service answers; revisions only add, so an upgrade never loses data."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from .db import sync_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return config


def upgrade_database(url: str) -> None:
    """Create or upgrade the schema at ``url`` to the newest revision."""
    command.upgrade(alembic_config(url), "head")
