"""The async LLM interface: ``chat_completion`` against vLLM (or Ollama), streamed
internally to measure time to first token, with the server's cached-token figures."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from ._engine_config import VLLMConfig
from ._exceptions import (
    ConfigError,
    PrefixCacheError,
    PromptTooLongError,
    ProviderError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from ._models import (
    LLMRequest,
    LLMResponse,
    Message,
    ResponseMetadata,
    Usage,
    describe_cache,
    hit_rate,
)

if TYPE_CHECKING:
    from ._metrics import CacheMetricsRecorder

logger = logging.getLogger("prefixcache")

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


class CacheReportingWarning(UserWarning):
    """The server does not report cached tokens (vLLM without --enable-prompt-tokens-details)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for connection errors and HTTP 5xx only; 4xx is never retried."""

    max_retries: int = 3
    backoff_s: float = 0.5

    def delay(self, attempt: int) -> float:
        return float(self.backoff_s * (2**attempt))


class _Retryable(Exception):
    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body


class Provider(Protocol):
    name: str
    base_url: str

    async def complete(self, http: httpx.AsyncClient, request: LLMRequest) -> LLMResponse: ...


_CONTEXT_RE = re.compile(r"maximum context length is (\d+) tokens.*?contains at least (\d+)", re.S)
_MAXTOK_RE = re.compile(r"max_tokens=(\d+) cannot be greater than max_model_len=(\d+)")


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _raise_for_client_error(status: int, body: str, url: str, model: str) -> None:
    message = _error_message(body)
    if status == 400:
        if m := _CONTEXT_RE.search(message):
            limit, count = int(m.group(1)), int(m.group(2))
            raise PromptTooLongError(
                f"Prompt too long for {model}: at least {count} prompt tokens, context length "
                f"{limit}. Shorten the recent context or the prompt, or raise "
                f"llm.vllm.max_model_len. (server: {message})",
                url=url,
                prompt_tokens=count,
                max_context=limit,
            )
        if m := _MAXTOK_RE.search(message):
            asked, limit = int(m.group(1)), int(m.group(2))
            raise PromptTooLongError(
                f"max_tokens={asked} does not fit the context length {limit} of {model}. "
                f"Ask for fewer tokens. (server: {message})",
                url=url,
                max_context=limit,
            )
    raise ProviderRequestError(
        f"The server at {url} rejected the request (HTTP {status}): {message}",
        url=url,
        status=status,
    )


def cached_tokens_from_usage(usage: Mapping[str, Any]) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens``; ``None`` (unknown) when not reported."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, Mapping) or details.get("cached_tokens") is None:
        return None
    return int(details["cached_tokens"])


class VLLMProvider:
    """Any OpenAI-compatible vLLM server: embedded, remote, or a router in front of replicas."""

    name = "vllm"

    def __init__(self, base_url: str, model: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self._warned_no_cache_report = False

    def body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [dict(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.cache_salt is not None:
            body["cache_salt"] = request.cache_salt
        body.update(request.params)
        return body

    async def complete(self, http: httpx.AsyncClient, request: LLMRequest) -> LLMResponse:
        url = f"{self.base_url}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = self.body(request)
        started = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        finish: str | None = None
        usage: Mapping[str, Any] | None = None
        request_id: str | None = None
        async with http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")
                if response.status_code >= 500:
                    raise _Retryable(response.status_code, text)
                _raise_for_client_error(response.status_code, text, self.base_url, body["model"])
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                request_id = request_id or chunk.get("id")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        parts.append(delta)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                        if ttft is None:
                            ttft = time.perf_counter() - started
        elapsed = time.perf_counter() - started
        if usage is None:
            raise ProviderRequestError(
                f"The server at {self.base_url} sent no usage in its stream; it is not a vLLM "
                "OpenAI-compatible server, or it ignores stream_options.include_usage.",
                url=self.base_url,
            )
        cached = cached_tokens_from_usage(usage)
        if cached is None and not self._warned_no_cache_report:
            self._warned_no_cache_report = True
            warnings.warn(
                f"The vLLM server at {self.base_url} does not report cached tokens; start it with "
                "--enable-prompt-tokens-details (prefixcache engine start always does).",
                CacheReportingWarning,
                stacklevel=4,
            )
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        return _response(
            content="".join(parts),
            prompt_tokens=prompt_tokens,
            completion_tokens=int(usage.get("completion_tokens", 0)),
            cached=cached,
            ttft=ttft,
            elapsed=elapsed,
            finish=finish,
            provider=self.name,
            model=str(body["model"]),
            request_id=request_id,
        )


class OllamaProvider:
    """Ollama's native chat API (``POST /api/chat``). Ollama reports no cached tokens."""

    name = "ollama"

    def __init__(self, base_url: str = DEFAULT_OLLAMA_URL, model: str = "llama3.2") -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model

    async def complete(self, http: httpx.AsyncClient, request: LLMRequest) -> LLMResponse:
        model = request.model or self.model
        options: dict[str, Any] = {
            "num_predict": request.max_tokens,
            "temperature": request.temperature,
        }
        options.update(request.params.get("options", {}))
        body = {
            "model": model,
            "messages": [dict(m) for m in request.messages],
            "stream": True,
            "options": options,
        }
        started = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        final: Mapping[str, Any] = {}
        async with http.stream("POST", f"{self.base_url}/api/chat", json=body) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")
                if response.status_code >= 500:
                    raise _Retryable(response.status_code, text)
                _raise_for_client_error(response.status_code, text, self.base_url, model)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if chunk.get("error"):
                    raise ProviderRequestError(f"Ollama error: {chunk['error']}", url=self.base_url)
                content = (chunk.get("message") or {}).get("content")
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(content)
                if chunk.get("done"):
                    final = chunk
                    break
        return _response(
            content="".join(parts),
            prompt_tokens=int(final.get("prompt_eval_count", 0)),
            completion_tokens=int(final.get("eval_count", 0)),
            cached=None,
            ttft=ttft,
            elapsed=time.perf_counter() - started,
            finish=final.get("done_reason"),
            provider=self.name,
            model=model,
            request_id=None,
        )


def _response(
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
) -> LLMResponse:
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
        "model": model,
        "request_id": request_id,
    }
    return LLMResponse(content, usage, metadata, elapsed, finish)


class LLMInterface:
    """``await llm.chat_completion(messages, provider="vllm")`` -> ``LLMResponse``.

    Every response passes through ``recorder`` (if given) and is logged at debug level
    the way the guide shows it.
    """

    def __init__(
        self,
        vllm: VLLMConfig | None = None,
        *,
        ollama_url: str = DEFAULT_OLLAMA_URL,
        ollama_model: str = "llama3.2",
        recorder: CacheMetricsRecorder | None = None,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        cfg = vllm or VLLMConfig()
        self.providers: dict[str, Provider] = {
            "vllm": VLLMProvider(cfg.url, cfg.model_name(), cfg.api_key),
            "ollama": OllamaProvider(ollama_url, ollama_model),
        }
        if providers:
            self.providers.update(providers)
        self.vllm_enabled = cfg.enabled
        self.recorder = recorder
        self.timeout_s = timeout_s if timeout_s is not None else cfg.request_timeout_s
        self.retry = retry or RetryPolicy(cfg.max_retries, cfg.retry_backoff_s)
        self._http: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._http is not None:
            yield self._http
            return
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            yield http

    async def __aenter__(self) -> LLMInterface:
        self._http = httpx.AsyncClient(
            timeout=self.timeout_s, limits=httpx.Limits(max_connections=64)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def chat_completion(
        self,
        messages: Sequence[Message] | LLMRequest,
        provider: str = "vllm",
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        cache_salt: str | None = None,
        *,
        agent_type: str | None = None,
        base_prompt_key: str | None = None,
        **params: Any,
    ) -> LLMResponse:
        if isinstance(messages, LLMRequest):
            request = messages
        else:
            request = LLMRequest(
                messages=list(messages),
                provider=provider,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                cache_salt=cache_salt,
                params=params,
                agent_type=agent_type,
                base_prompt_key=base_prompt_key,
            )
        if request.provider == "vllm" and not self.vllm_enabled:
            raise ConfigError(
                "llm.vllm.enabled is false in the config: set it to true to use provider='vllm'."
            )
        chosen = self.providers.get(request.provider)
        if chosen is None:
            raise PrefixCacheError(
                f"Unknown provider {request.provider!r}; use one of {', '.join(self.providers)}."
            )
        response = await self._send(chosen, request)
        logger.debug(describe_cache(response))
        if self.recorder is not None:
            self.recorder.record(
                response, agent_type=request.agent_type, base_prompt_key=request.base_prompt_key
            )
        return response

    async def _send(self, provider: Provider, request: LLMRequest) -> LLMResponse:
        attempt = 0
        while True:
            try:
                async with self._client() as http:
                    return await provider.complete(http, request)
            except (httpx.ConnectError, httpx.ConnectTimeout, _Retryable) as exc:
                if attempt >= self.retry.max_retries:
                    raise self._final_error(provider, exc) from exc
                delay = self.retry.delay(attempt)
                logger.info("retrying %s in %.1fs after %s", provider.base_url, delay, exc)
                attempt += 1
                await asyncio.sleep(delay)
            except httpx.TimeoutException as exc:
                raise ProviderTimeoutError(
                    f"The {provider.name} server at {provider.base_url} did not answer within "
                    f"{self.timeout_s:.0f} s. Raise llm.vllm.request_timeout_s, lower max_tokens, "
                    "or check the server's load.",
                    url=provider.base_url,
                ) from exc
            except httpx.HTTPError as exc:
                raise ProviderError(
                    f"HTTP error talking to {provider.base_url}: {exc!r}", url=provider.base_url
                ) from exc

    def _final_error(self, provider: Provider, exc: Exception) -> ProviderError:
        tries = self.retry.max_retries + 1
        if isinstance(exc, _Retryable):
            return ProviderRequestError(
                f"The {provider.name} server at {provider.base_url} failed with HTTP {exc.status} "
                f"{tries} time(s): {_error_message(exc.body)}. Check its log "
                "(`prefixcache engine logs`).",
                url=provider.base_url,
                status=exc.status,
            )
        hint = (
            "Start one with `prefixcache engine start`, or point llm.vllm.base_url at a running server."
            if provider.name == "vllm"
            else "Start Ollama (`ollama serve`) or fix the Ollama URL."
        )
        return ProviderUnavailableError(
            f"Cannot reach the {provider.name} server at {provider.base_url} ({type(exc).__name__} "
            f"after {tries} attempt(s)). {hint}",
            url=provider.base_url,
        )
