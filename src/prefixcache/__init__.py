"""prefixcache: cache-stable prompts for vLLM automatic prefix caching."""

from ._client import CacheReportingWarning, LLMInterface, RetryPolicy
from ._compose import DYNAMIC_HEADER, OptimizedPrompt, PromptComposer, StaticLayers
from ._config import Settings, load_settings
from ._engine import EngineStatus, LocalEngine
from ._engine_config import VLLMConfig
from ._exceptions import (
    AgentError,
    ConfigError,
    EngineError,
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
from ._inspect import EngineCacheStats, EngineInspector, predicted_cached_tokens
from ._library import (
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
from ._metrics import Aggregate, CacheMetricsRecorder, RequestRecord
from ._models import LLMRequest, LLMResponse, describe_cache
from ._registry import PromptRegistry
from ._tiers import AgentProfile, AgentTier, AgentTierMap, TierInfo

__version__ = "0.1.0"

__all__ = [
    "DYNAMIC_HEADER",
    "AgentError",
    "AgentProfile",
    "AgentTier",
    "AgentTierMap",
    "Aggregate",
    "CacheMetricsRecorder",
    "CacheReportingWarning",
    "ConfigError",
    "EngineCacheStats",
    "EngineError",
    "EngineInspector",
    "EngineStatus",
    "LLMInterface",
    "LLMRequest",
    "LLMResponse",
    "LocalEngine",
    "OptimizedPrompt",
    "PrefixCacheError",
    "PromptComposer",
    "PromptError",
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
    "reload",
    "set_default_library",
]
