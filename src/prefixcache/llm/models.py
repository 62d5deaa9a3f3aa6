"""Request and response models of the LLM interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

Message = Mapping[str, Any]


class Usage(TypedDict):
    """Token counts as the server reported them. ``cached_tokens`` is ``None`` when the
    server did not report it (unknown), never a made-up 0."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None


class ResponseMetadata(TypedDict):
    cached_tokens: int | None
    cache_hit_rate: float | None
    ttft: float | None
    provider: str
    #: The model that answered, as the server named it (what the guide's platform reads
    #: from ``response.metadata["model"]``; a router or an alias may answer under another
    #: name than the one requested).
    model: str
    #: The same name (kept for 0.2 callers).
    served_model: str
    #: The model name sent in the request.
    requested_model: str
    request_id: str | None


@dataclass(frozen=True)
class LLMRequest:
    """The request-object form of ``chat_completion`` (as in the guide's examples)."""

    messages: Sequence[Message]
    provider: str = "vllm"
    model: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    cache_salt: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    # labels for the metrics recorder; never sent to the server
    agent_type: str | None = None
    base_prompt_key: str | None = None
    #: the routing key sent as the ``x-session-id`` header (a router keeps a session on
    #: its replica); None: by ClientSettings.affinity
    session_id: str | None = None


@dataclass(frozen=True)
class LLMResponse:
    """One completed chat request, with the server's cache figures."""

    content: str
    usage: Usage
    metadata: ResponseMetadata
    processing_time: float
    finish_reason: str | None

    @property
    def prompt_tokens(self) -> int:
        return self.usage["prompt_tokens"]

    @property
    def cached_tokens(self) -> int | None:
        return self.usage["cached_tokens"]

    @property
    def cache_hit_rate(self) -> float | None:
        return self.metadata["cache_hit_rate"]

    @property
    def ttft(self) -> float | None:
        return self.metadata["ttft"]

    @property
    def served_model(self) -> str:
        return self.metadata["served_model"]

    @classmethod
    def build(
        cls,
        *,
        content: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached: int | None,
        ttft: float | None,
        elapsed: float,
        finish: str | None,
        provider: str,
        model: str,
        request_id: str | None,
        served_model: str | None = None,
    ) -> LLMResponse:
        """A response from the figures a provider (or the gateway) read: ``model`` is the
        model asked for, ``served_model`` the one that answered (``metadata["model"]``)."""
        usage: Usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cached_tokens": cached,
        }
        metadata: ResponseMetadata = {
            "cached_tokens": cached,
            "cache_hit_rate": hit_rate(cached, prompt_tokens),
            "ttft": ttft,
            "provider": provider,
            "model": served_model or model,
            "served_model": served_model or model,
            "requested_model": model,
            "request_id": request_id,
        }
        return cls(content, usage, metadata, elapsed, finish)


def hit_rate(cached_tokens: int | None, prompt_tokens: int) -> float | None:
    """cached / prompt as a fraction, ``None`` when unknown."""
    if cached_tokens is None or prompt_tokens <= 0:
        return None
    return cached_tokens / prompt_tokens


def describe_cache(response: LLMResponse) -> str:
    """The guide's log line: ``Cache Performance: 98.7% hit rate (4845/4911 tokens cached)``."""
    rate = response.cache_hit_rate
    if rate is None:
        return f"Cache Performance: unknown ({response.prompt_tokens} prompt tokens, cached not reported)"
    return (
        f"Cache Performance: {rate * 100:.1f}% hit rate "
        f"({response.cached_tokens}/{response.prompt_tokens} tokens cached)"
    )
