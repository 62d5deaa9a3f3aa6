"""Read-only views of a running vLLM server: its tokenizer (``/tokenize``,
``/detokenize``) and its own Prometheus metrics (``/metrics``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ._exceptions import ProviderRequestError, ProviderUnavailableError
from ._models import Message


@dataclass(frozen=True)
class EngineCacheStats:
    """Engine-wide prefix cache counters (tokens) and cache configuration."""

    queries: float
    hits: float
    block_size: int | None
    prefix_caching_enabled: bool | None
    version: str | None = None

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None


def parse_engine_metrics(text: str) -> EngineCacheStats:
    """Sum ``vllm:prefix_cache_{queries,hits}_total`` over engines; read ``cache_config_info``."""
    queries = hits = 0.0
    block_size: int | None = None
    enabled: bool | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:prefix_cache_queries_total":
                queries += sample.value
            elif sample.name == "vllm:prefix_cache_hits_total":
                hits += sample.value
            elif sample.name == "vllm:cache_config_info":
                labels = sample.labels
                if labels.get("block_size", "").isdigit():
                    block_size = int(labels["block_size"])
                if "enable_prefix_caching" in labels:
                    enabled = labels["enable_prefix_caching"].lower() == "true"
    return EngineCacheStats(queries, hits, block_size, enabled)


class EngineInspector:
    """Synchronous helper for the tokenizer and metrics endpoints of one server."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EngineInspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ProviderUnavailableError(
                f"Cannot reach the vLLM server at {self.base_url}. Start one with "
                "`prefixcache engine start` or pass --base-url.",
                url=self.base_url,
            ) from exc
        if response.status_code >= 400:
            raise ProviderRequestError(
                f"{method} {self.base_url}{path} failed (HTTP {response.status_code}): "
                f"{response.text[:300]}",
                url=self.base_url,
                status=response.status_code,
            )
        return response

    def tokenize_messages(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of the chat request exactly as the server builds it (chat template applied)."""
        body = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
        }
        tokens: list[int] = self._request("POST", "/tokenize", json=body).json()["tokens"]
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        body = {"model": self.model, "tokens": list(tokens)}
        text: str = self._request("POST", "/detokenize", json=body).json()["prompt"]
        return text

    def version(self) -> str | None:
        try:
            value = self._request("GET", "/version").json().get("version")
        except (ProviderRequestError, ValueError):
            return None
        return str(value) if value is not None else None

    def cache_stats(self) -> EngineCacheStats:
        stats = parse_engine_metrics(self._request("GET", "/metrics").text)
        return EngineCacheStats(
            stats.queries,
            stats.hits,
            stats.block_size,
            stats.prefix_caching_enabled,
            self.version(),
        )


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def predicted_cached_tokens(prompt_tokens: int, shared_tokens: int, block_size: int) -> int:
    """What vLLM can reuse: full blocks only, never the last prompt token, never past the
    first differing token: ``min(floor(shared/B)*B, floor((prompt_tokens-1)/B)*B)``."""
    if prompt_tokens <= 0 or block_size <= 0:
        return 0
    return min(
        (shared_tokens // block_size) * block_size,
        ((prompt_tokens - 1) // block_size) * block_size,
    )
