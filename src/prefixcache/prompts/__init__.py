"""The prompt library: registry, agent tiers, composition, lint and size analysis.

Pure: no network and no heavy imports (jinja2, pyyaml and pydantic only).
"""

from .compose import DYNAMIC_HEADER, OptimizedPrompt, PromptComposer, StaticLayers
from .library import (
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
from .registry import PromptRegistry
from .tiers import AgentProfile, AgentTier, AgentTierMap, TierInfo

__all__ = [
    "DYNAMIC_HEADER",
    "AgentProfile",
    "AgentTier",
    "AgentTierMap",
    "OptimizedPrompt",
    "PromptComposer",
    "PromptLibrary",
    "PromptRegistry",
    "StaticLayers",
    "TierInfo",
    "compose_prompt",
    "default_library",
    "get_agent_tier",
    "get_base_prompt_for_agent",
    "get_cache_hit_expectation",
    "get_optimized_prompt",
    "get_prompt",
    "get_tier_statistics",
    "list_agents_by_tier",
    "reload",
    "set_default_library",
]
