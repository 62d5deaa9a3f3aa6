"""prefixcache: cache-stable prompts for vLLM automatic prefix caching.

The prompt library (registry, tiers, composition) imports eagerly and needs only the
core dependencies. The client, engine and metrics names import on first use, so that
``import prefixcache`` stays light; a missing extra then names what to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AgentError,
    ConfigError,
    EngineError,
    MissingExtraError,
    PrefixCacheError,
    PromptError,
    PromptNotFoundError,
    PromptRenderError,
    PromptTooLongError,
    ProviderError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnknownAgentError,
    UnknownAgentWarning,
)
from .prompts.compose import DYNAMIC_HEADER, OptimizedPrompt, PromptComposer, StaticLayers
from .prompts.inputs import PromptInputs
from .prompts.library import (
    PromptLibrary,
    compose_prompt,
    default_library,
    get_agent_tier,
    get_base_prompt_for_agent,
    get_cache_hit_expectation,
    get_optimized_prompt,
    get_prompt,
    get_tier_statistics,
    list_agents_by_tier,
    reload,
    set_default_library,
)
from .prompts.reference import reference_prompt
from .prompts.registry import PromptRegistry
from .prompts.tiers import AgentProfile, AgentTier, AgentTierMap, TierInfo
from .settings import ClientSettings, EngineSettings, Settings, VLLMConfig, load_settings

if TYPE_CHECKING:
    from .engine.local import EngineStatus, LocalEngine
    from .layout.alignment import align_to_blocks
    from .layout.cache_model import predicted_cached_tokens
    from .layout.warming import Prefetcher, warm_prefixes
    from .llm.inspector import EngineCacheStats, EngineInspector
    from .llm.interface import LLMInterface
    from .llm.metrics import Aggregate, CacheMetricsRecorder, RequestRecord
    from .llm.models import LLMRequest, LLMResponse, describe_cache
    from .llm.providers import CacheReportingWarning, RetryPolicy

#: name -> (module, extra): imported on first use
_LAZY: dict[str, tuple[str, str]] = {
    "CacheReportingWarning": ("prefixcache.llm.providers", "llm"),
    "RetryPolicy": ("prefixcache.llm.providers", "llm"),
    "LLMInterface": ("prefixcache.llm.interface", "llm"),
    "EngineCacheStats": ("prefixcache.llm.inspector", "llm"),
    "EngineInspector": ("prefixcache.llm.inspector", "llm"),
    "predicted_cached_tokens": ("prefixcache.layout.cache_model", "llm"),
    "Aggregate": ("prefixcache.llm.metrics", "llm"),
    "CacheMetricsRecorder": ("prefixcache.llm.metrics", "llm"),
    "RequestRecord": ("prefixcache.llm.metrics", "llm"),
    "LLMRequest": ("prefixcache.llm.models", "llm"),
    "LLMResponse": ("prefixcache.llm.models", "llm"),
    "describe_cache": ("prefixcache.llm.models", "llm"),
    "EngineStatus": ("prefixcache.engine.local", "llm"),
    "Prefetcher": ("prefixcache.layout.warming", "llm"),
    "warm_prefixes": ("prefixcache.layout.warming", "llm"),
    "align_to_blocks": ("prefixcache.layout.alignment", "llm"),
    "LocalEngine": ("prefixcache.engine.local", "llm"),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'prefixcache' has no attribute {name!r}")
    module_name, extra = target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise MissingExtraError(extra, f"prefixcache.{name}", exc.name or "a module") from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DYNAMIC_HEADER",
    "AgentError",
    "AgentProfile",
    "AgentTier",
    "AgentTierMap",
    "Aggregate",
    "CacheMetricsRecorder",
    "CacheReportingWarning",
    "ClientSettings",
    "ConfigError",
    "EngineCacheStats",
    "EngineError",
    "EngineInspector",
    "EngineSettings",
    "EngineStatus",
    "LLMInterface",
    "LLMRequest",
    "LLMResponse",
    "LocalEngine",
    "MissingExtraError",
    "OptimizedPrompt",
    "Prefetcher",
    "PrefixCacheError",
    "PromptComposer",
    "PromptError",
    "PromptInputs",
    "PromptLibrary",
    "PromptNotFoundError",
    "PromptRegistry",
    "PromptRenderError",
    "PromptTooLongError",
    "ProviderError",
    "ProviderRequestError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RequestRecord",
    "RetryPolicy",
    "Settings",
    "StaticLayers",
    "TierInfo",
    "UnknownAgentError",
    "UnknownAgentWarning",
    "VLLMConfig",
    "__version__",
    "align_to_blocks",
    "compose_prompt",
    "default_library",
    "describe_cache",
    "get_agent_tier",
    "get_base_prompt_for_agent",
    "get_cache_hit_expectation",
    "get_optimized_prompt",
    "get_prompt",
    "get_tier_statistics",
    "list_agents_by_tier",
    "load_settings",
    "predicted_cached_tokens",
    "reference_prompt",
    "reload",
    "set_default_library",
    "warm_prefixes",
]
