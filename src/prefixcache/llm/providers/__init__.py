"""Providers: how one chat request travels to a server and back, one module per server
kind (like httpx's transports).

- ``vllm``: ``VLLMProvider``, vLLM's OpenAI-compatible API (embedded, remote, a router);
- ``ollama``: ``OllamaProvider``, Ollama's native API;
- ``base``: what they share (routing keys, retries, HTTP errors as typed errors).

The stream reader both the client and the gateway use is ``prefixcache.llm.sse``.
"""

from ..sse import cached_tokens_from_usage
from .base import (
    SESSION_HEADER,
    CacheReportingWarning,
    Provider,
    RetryableError,
    RetryPolicy,
    error_message,
    prefix_key,
    raise_for_client_error,
    routing_key,
)
from .ollama import DEFAULT_OLLAMA_URL, OllamaProvider
from .vllm import VLLMProvider

__all__ = [
    "DEFAULT_OLLAMA_URL",
    "SESSION_HEADER",
    "CacheReportingWarning",
    "OllamaProvider",
    "Provider",
    "RetryPolicy",
    "RetryableError",
    "VLLMProvider",
    "cached_tokens_from_usage",
    "error_message",
    "prefix_key",
    "raise_for_client_error",
    "routing_key",
]
