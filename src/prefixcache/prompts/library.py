"""The default library: settings, registry, tier map and composer built once, on first use.

Applications that want explicit wiring build a ``PromptLibrary`` themselves and pass it
around; the module-level functions in ``prefixcache`` use the default one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ..errors import ConfigError
from ..settings import Settings, load_settings
from .compose import OptimizedPrompt, PromptComposer
from .inputs import NO_INPUTS, ClockGranularity, PromptInputs, RecentContext
from .registry import PromptRegistry
from .tiers import AgentTier, AgentTierMap


class PromptLibrary:
    """Registry + tier map + composer, configured from one ``Settings``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        for directory in self.settings.prompt_dirs:
            if not directory.is_dir():
                problem = "does not exist" if not directory.exists() else "is not a folder"
                raise ConfigError(
                    f"prompts.directories in {self.settings.source}: {directory} {problem}. "
                    "Fix the path (relative paths are relative to the config file's folder) "
                    "or remove it."
                )
        self.registry = PromptRegistry(self.settings.prompt_dirs)
        self.tiers = AgentTierMap(
            extra=self.settings.extra_agents, strict=self.settings.agents_strict
        )
        self.composer = PromptComposer(self.registry, self.tiers)
        if self.settings.extra_agents:
            # a key the config refers to must exist: fail at load, not at the first request
            for where, key in self.tiers.prompt_keys():
                if not self.registry.has(key):
                    raise ConfigError(
                        f"agents.tiers in {self.settings.source}: {where} refers to prompt "
                        f"{key!r}, which no prompt directory has. Add the file "
                        f"({key.replace('.', '/', 1)}.md) or fix the key."
                    )

    def get_prompt(self, key: str, /, **variables: Any) -> str:
        return self.registry.render(key, **variables)

    def compose(
        self,
        inputs: PromptInputs = NO_INPUTS,
        *,
        agent_type: str | None = None,
        base_prompt_key: str | None = None,
    ) -> OptimizedPrompt:
        """The agent's static prefix, then ``inputs`` as the dynamic suffix."""
        return self.composer.compose(inputs, agent_type=agent_type, base_prompt_key=base_prompt_key)

    def compose_prompt(
        self,
        base_prompt_key: str | None = None,
        session_id: str | None = None,
        user_name: str | None = None,
        user_role: str | None = None,
        available_tools: Iterable[str] | None = None,
        recent_context: RecentContext | None = None,
        additional_params: Mapping[str, Any] | None = None,
        *,
        agent_type: str | None = None,
        clock: ClockGranularity | None = None,
        now: datetime | None = None,
    ) -> OptimizedPrompt:
        """The guide's keyword form of ``compose``."""
        inputs = PromptInputs(
            session_id,
            user_name,
            user_role,
            available_tools,
            recent_context,
            additional_params,
            clock,
            now,
        )
        return self.composer.compose(inputs, agent_type=agent_type, base_prompt_key=base_prompt_key)

    def reload(self) -> None:
        self.composer.reload()
        self.registry = self.composer.registry


_default: PromptLibrary | None = None
_lock = threading.Lock()


def default_library() -> PromptLibrary:
    """The process-wide library, built from the config file on first use."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = PromptLibrary(load_settings())
    return _default


def set_default_library(library: PromptLibrary | None) -> None:
    """Replace (or with ``None`` forget) the process-wide library."""
    global _default
    with _lock:
        _default = library


# -- the guide's module-level API ----------------------------------------------


def get_prompt(key: str, /, **variables: Any) -> str:
    """Render the prompt ``key`` (``PromptNotFoundError`` / ``PromptRenderError`` on failure)."""
    return default_library().get_prompt(key, **variables)


def compose_prompt(
    base_prompt_key: str | None = None,
    session_id: str | None = None,
    user_name: str | None = None,
    user_role: str | None = None,
    available_tools: Iterable[str] | None = None,
    recent_context: RecentContext | None = None,
    additional_params: Mapping[str, Any] | None = None,
    *,
    agent_type: str | None = None,
    clock: ClockGranularity | None = None,
    now: datetime | None = None,
) -> OptimizedPrompt:
    """Static prefix + dynamic suffix, as an ``OptimizedPrompt`` (the guide's keywords;
    ``PromptLibrary.compose`` takes a ``PromptInputs``)."""
    inputs = PromptInputs(
        session_id,
        user_name,
        user_role,
        available_tools,
        recent_context,
        additional_params,
        clock,
        now,
    )
    return default_library().compose(inputs, agent_type=agent_type, base_prompt_key=base_prompt_key)


def get_optimized_prompt(
    base_prompt_key: str | None = None,
    session_id: str | None = None,
    user_name: str | None = None,
    user_role: str | None = None,
    available_tools: Iterable[str] | None = None,
    recent_context: RecentContext | None = None,
    additional_params: Mapping[str, Any] | None = None,
    *,
    agent_type: str | None = None,
    clock: ClockGranularity | None = None,
    now: datetime | None = None,
) -> str:
    """Static prefix + dynamic suffix, as one string (the guide's call)."""
    inputs = PromptInputs(
        session_id,
        user_name,
        user_role,
        available_tools,
        recent_context,
        additional_params,
        clock,
        now,
    )
    return (
        default_library()
        .compose(inputs, agent_type=agent_type, base_prompt_key=base_prompt_key)
        .text
    )


def reload() -> None:
    """Re-read prompt files: memoised prefixes are rendered again on next use."""
    default_library().reload()


def get_agent_tier(agent_type: str) -> AgentTier:
    """The agent's tier (the guide's function; unknown agents: tier 1, or an error with
    ``agents.strict``)."""
    return default_library().tiers.get_agent_tier(agent_type)


def get_base_prompt_for_agent(agent_type: str) -> str:
    """The prompt key of the agent's tier (the guide's function), for
    ``get_optimized_prompt(base_prompt_key=...)``."""
    return default_library().tiers.get_base_prompt_for_agent(agent_type)


def get_cache_hit_expectation(agent_type: str) -> str:
    """The guide's expected hit rate for the agent's tier, e.g. ``"90-95%"`` (unmeasured:
    ``get_tier_statistics()`` has the measured figures)."""
    return default_library().tiers.get_cache_hit_expectation(agent_type)


def list_agents_by_tier(tier: AgentTier) -> list[str]:
    """The agents of one tier, in the configured order."""
    return default_library().tiers.list_agents_by_tier(tier)


def get_tier_statistics() -> dict[str, dict[str, Any]]:
    """Per tier: its agents, the guide's expected hit rate and the measured one."""
    return default_library().tiers.get_tier_statistics()
