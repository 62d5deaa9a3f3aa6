"""Read-only views of a running vLLM server: its tokenizer (``/tokenize``,
``/detokenize``) and its own Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..errors import ProviderRequestError, ProviderTimeoutError, ProviderUnavailableError
from .models import Message


@dataclass(frozen=True)
class EngineCacheStats:
    """Engine-wide prefix cache counters (tokens) and cache configuration."""

    queries: float
    hits: float
    block_size: int | None
    prefix_caching_enabled: bool | None
    version: str | None = None
    #: requests finished and prompt tokens seen (for a fleet's balance)
    requests: float = 0.0
    prompt_tokens: float = 0.0
    #: KV cache blocks of the engine (``num_gpu_blocks``, also on the CPU backend)
    num_blocks: int | None = None
    #: the server process's start (``process_start_time_seconds``): a new value means
    #: the counters started again from zero
    started_at: float | None = None

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None


def parse_engine_metrics(text: str) -> EngineCacheStats:
    """Sum ``vllm:prefix_cache_{queries,hits}_total`` over engines; read ``cache_config_info``
    and the process's start time."""
    queries = hits = requests = prompt_tokens = 0.0
    started_at: float | None = None
    block_size: int | None = None
    num_blocks: int | None = None
    enabled: bool | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:prefix_cache_queries_total":
                queries += sample.value
            elif sample.name == "vllm:prefix_cache_hits_total":
                hits += sample.value
            elif sample.name == "vllm:request_success_total":
                requests += sample.value
            elif sample.name == "vllm:prompt_tokens_total":
                prompt_tokens += sample.value
            elif sample.name == "process_start_time_seconds":
                started_at = sample.value
            elif sample.name == "vllm:cache_config_info":
                labels = sample.labels
                if labels.get("block_size", "").isdigit():
                    block_size = int(labels["block_size"])
                if labels.get("num_gpu_blocks", "").isdigit():
                    num_blocks = int(labels["num_gpu_blocks"])
                if "enable_prefix_caching" in labels:
                    enabled = labels["enable_prefix_caching"].lower() == "true"
    return EngineCacheStats(
        queries,
        hits,
        block_size,
        enabled,
        requests=requests,
        prompt_tokens=prompt_tokens,
        num_blocks=num_blocks,
        started_at=started_at,
    )


class EngineInspector:
    """Synchronous helper for the tokenizer and metrics endpoints of one server.

    ``http``: an ``httpx.Client`` to use (e.g. with a ``MockTransport`` in tests); by
    default one is made with ``timeout``. An injected client is not closed by ``close``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60,
        *,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> EngineInspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self._http.request(method, url, headers=self._headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(
                f"{method} {url} did not answer within {self.timeout:.0f} s. Check the server's "
                "load, or raise llm.vllm.request_timeout_s.",
                url=self.base_url,
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"Cannot reach the vLLM server at {self.base_url} ({type(exc).__name__}). Start "
                "one with `prefixcache engine start` or pass --base-url.",
                url=self.base_url,
            ) from exc
        if response.status_code >= 400:
            raise ProviderRequestError(
                f"{method} {url} failed (HTTP {response.status_code}): {response.text[:300]}",
                url=self.base_url,
                status=response.status_code,
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderRequestError(
                f"{method} {self.base_url}{path} did not answer JSON "
                f"({response.text[:120]!r}); is this a vLLM server?",
                url=self.base_url,
            ) from exc

    def tokenize_messages(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of the chat request exactly as the server builds it (chat template applied)."""
        body = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
        }
        data = self._json("POST", "/tokenize", json=body)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise ProviderRequestError(
                f"POST {self.base_url}/tokenize answered without a list of token ids; "
                "is this a vLLM server?",
                url=self.base_url,
            )
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        body = {"model": self.model, "tokens": list(tokens)}
        data = self._json("POST", "/detokenize", json=body)
        text = data.get("prompt") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise ProviderRequestError(
                f"POST {self.base_url}/detokenize answered without a prompt string.",
                url=self.base_url,
            )
        return text

    def version(self) -> str | None:
        try:
            data = self._json("GET", "/version")
        except ProviderRequestError:
            return None
        value = data.get("version") if isinstance(data, dict) else None
        return str(value) if value is not None else None

    def cache_stats(self) -> EngineCacheStats:
        """The server's prefix cache counters and block size, from its ``/metrics``."""
        text = self._request("GET", "/metrics").text
        try:
            stats = parse_engine_metrics(text)
        except ValueError as exc:
            raise ProviderRequestError(
                f"GET {self.base_url}/metrics is not Prometheus text ({exc}); is this a vLLM "
                "server?",
                url=self.base_url,
            ) from exc
        return replace(stats, version=self.version())


# -- probes shared by the engine, the fleet and the doctor -----------------------------


def answers_ok(url: str, path: str = "/health", timeout: float = 2.0) -> bool:
    """``GET url+path`` answers 200 within ``timeout`` seconds (any failure: False)."""
    try:
        return httpx.get(f"{url.rstrip('/')}{path}", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# -- vllm-router ------------------------------------------------------------------
def workers_in(answer: httpx.Response) -> list[str]:
    """The worker URLs in an answer to ``GET /list_workers`` ([] if it is not vllm-router's)."""
    if answer.status_code != 200 or "json" not in answer.headers.get("content-type", ""):
        return []
    return sorted(set(re.findall(r"https?://[A-Za-z0-9.\-\[\]:]+", answer.text)))


def router_workers(url: str) -> list[str]:
    """The worker URLs if ``url`` is vllm-router (its /list_workers), else []."""
    try:
        return workers_in(httpx.get(f"{url}/list_workers", timeout=3))
    except httpx.HTTPError:
        return []
