"""The service's routes, one module per resource; the work is done by the service's
modules (``conversations``, ``gateway``, ``sessions``, ``readiness``, ``stats``), the
routes only bind HTTP to it. ``deps`` holds what routes are given (FastAPI dependencies).
"""

from fastapi import APIRouter

from . import chat, figures, gateway, health, sessions, tasks

router = APIRouter()
for module in (chat, tasks, sessions, gateway, figures, health):
    router.include_router(module.router)

__all__ = ["router"]
