"""The service: ``prefixcache serve``. The guide's chat and task endpoints, an
OpenAI-compatible gateway, sessions in a real database, API keys, per-tenant cache
isolation, measured cache figures. Needs the ``service`` extra (FastAPI, uvicorn,
SQLAlchemy, aiosqlite, Alembic). Design: ``docs/service.md``."""

from .._extras import require

require("service", "prefixcache.service (the HTTP service)")

from .app import create_app  # noqa: E402
from .auth import Principal  # noqa: E402
from .state import ServiceState, build_state  # noqa: E402

__all__ = ["Principal", "ServiceState", "build_state", "create_app"]
