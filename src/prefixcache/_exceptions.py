"""The exception hierarchy: catch ``PrefixCacheError`` for everything this library raises."""

from __future__ import annotations

from collections.abc import Sequence


class PrefixCacheError(Exception):
    """Base class of every error raised by prefixcache."""


class ConfigError(PrefixCacheError):
    """The configuration file is missing, unreadable or has a wrong value."""


class PromptError(PrefixCacheError):
    """Base class of prompt registry errors."""


class PromptNotFoundError(PromptError, KeyError):
    """No prompt file exists for a dotted key."""

    def __init__(self, key: str, suggestions: Sequence[str], searched: Sequence[str]) -> None:
        self.key = key
        self.suggestions = list(suggestions)
        self.searched = list(searched)
        hint = (
            f" Did you mean: {', '.join(self.suggestions)}?"
            if self.suggestions
            else " Run `prefixcache prompts list` to see the available keys."
        )
        super().__init__(
            f"Unknown prompt key {key!r} (searched {', '.join(self.searched) or 'no directories'})."
            + hint
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class PromptRenderError(PromptError):
    """A prompt template failed to render (syntax error, undefined variable, bad include)."""


class AgentError(PrefixCacheError):
    """Base class of agent tier errors."""


class UnknownAgentError(AgentError, KeyError):
    """An agent type is not in the tier map (raised in strict mode only)."""

    def __init__(self, agent_type: str, suggestions: Sequence[str]) -> None:
        self.agent_type = agent_type
        self.suggestions = list(suggestions)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(
            f"Unknown agent type {agent_type!r}.{hint} Add it under `agents.tiers` in "
            "config/config.yaml, or turn strict mode off to fall back to tier 1."
        )

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownAgentWarning(UserWarning):
    """An unknown agent type fell back to tier 1 (non-strict mode)."""
