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


class PromptFileError(PromptError):
    """A prompt file or folder cannot be used (unreadable, not UTF-8, a loop, missing)."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class PromptInputError(PromptError, ValueError):
    """A dynamic input (session id, tools, context, parameters) has a value that cannot be
    rendered; the message names the parameter."""


class PromptInputTypeError(PromptInputError, TypeError):
    """A dynamic input has a type that is not accepted; the message names the parameter."""


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


class EngineError(PrefixCacheError):
    """The local vLLM engine could not be prepared, started or stopped."""

    def __init__(self, message: str, log_tail: str | None = None) -> None:
        self.log_tail = log_tail
        super().__init__(
            message + (f"\n--- last lines of the server log ---\n{log_tail}" if log_tail else "")
        )


class ProviderError(PrefixCacheError):
    """Base class of errors talking to an LLM server."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class ProviderUnavailableError(ProviderError):
    """The server could not be reached (connection refused, DNS, reset)."""


class ProviderTimeoutError(ProviderError):
    """The server did not answer within the configured timeout."""


class ProviderRequestError(ProviderError):
    """The server rejected the request (HTTP 4xx) or failed (HTTP 5xx after retries)."""


class ProviderProtocolError(ProviderRequestError):
    """The server's answer has the wrong shape (invalid JSON, a usage count that is not a
    number, more cached than prompt tokens): it is not the server it claims to be."""


class InvalidRequestError(PrefixCacheError, ValueError):
    """A request cannot be sent as it is (checked before sending); names the field."""


class InvalidRequestTypeError(InvalidRequestError, TypeError):
    """A request field has the wrong type; names the field."""


class PromptTooLongError(ProviderRequestError):
    """The prompt (plus max_tokens) does not fit the model's context length."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = 400,
        prompt_tokens: int | None = None,
        max_context: int | None = None,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context
        super().__init__(message, url=url, status=status)


class MissingExtraError(PrefixCacheError, ImportError):
    """A feature needs an optional extra that is not installed."""

    def __init__(self, extra: str, feature: str, missing: str) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{feature} needs the '{extra}' extra ({missing} is not installed). Install it "
            f"with: pip install 'prefixcache[{extra}]'"
        )
