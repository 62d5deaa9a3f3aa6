"""``/dashboard``: live hit rates per agent and tier, TTFT over time, per-replica cache
figures and the latest cache breaks, as server-rendered HTML and SVG."""

from .api_router import router

__all__ = ["router"]
