"""prefixcache: cache-stable prompts for vLLM automatic prefix caching."""

from ._compose import DYNAMIC_HEADER, OptimizedPrompt, PromptComposer, StaticLayers
from ._config import Settings, load_settings
from ._exceptions import (
    AgentError,
    ConfigError,
    PrefixCacheError,
    PromptError,
    PromptNotFoundError,
    PromptRenderError,
    UnknownAgentError,
    UnknownAgentWarning,
)
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
from ._registry import PromptRegistry
from ._tiers import AgentProfile, AgentTier, AgentTierMap, TierInfo

__version__ = "0.1.0"

__all__ = [
    "DYNAMIC_HEADER",
    "AgentError",
    "AgentProfile",
    "AgentTier",
    "AgentTierMap",
    "ConfigError",
    "OptimizedPrompt",
    "PrefixCacheError",
    "PromptComposer",
    "PromptError",
    "PromptLibrary",
    "PromptNotFoundError",
    "PromptRegistry",
    "PromptRenderError",
    "Settings",
    "StaticLayers",
    "TierInfo",
    "UnknownAgentError",
    "UnknownAgentWarning",
    "__version__",
    "compose_prompt",
    "default_library",
    "get_agent_tier",
    "get_base_prompt_for_agent",
    "get_cache_hit_expectation",
    "get_optimized_prompt",
    "get_prompt",
    "get_tier_statistics",
    "list_agents_by_tier",
    "load_settings",
    "reload",
    "set_default_library",
]
