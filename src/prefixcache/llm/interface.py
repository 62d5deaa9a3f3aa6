"""The async LLM interface: ``await llm.chat_completion(messages)`` against vLLM (or
Ollama), with retries for connection errors and HTTP 5xx, and every response recorded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import (
    ConfigError,
    PrefixCacheError,
    ProviderError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from ..settings import ClientSettings, OllamaSettings
from .models import LLMRequest, LLMResponse, Message, describe_cache
from .providers import (
    OllamaProvider,
    Provider,
    RetryableError,
    RetryPolicy,
    VLLMProvider,
    error_message,
)
from .validation import validate_messages, validate_request

if TYPE_CHECKING:
    from .metrics import CacheMetricsRecorder

logger = logging.getLogger("prefixcache")


class LLMInterface:
    """``await llm.chat_completion(messages, provider="vllm")`` -> ``LLMResponse``.

    Every response passes through ``recorder`` (if given) and is logged at debug level
    the way the guide shows it.
    """

    def __init__(
        self,
        vllm: ClientSettings | None = None,
        *,
        ollama_url: str | None = None,
        ollama_model: str | None = None,
        recorder: CacheMetricsRecorder | None = None,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        providers: Mapping[str, Provider] | None = None,
        http: httpx.AsyncClient | None = None,
        ollama: OllamaSettings | None = None,
    ) -> None:
        cfg = vllm or ClientSettings()
        olla = ollama or OllamaSettings()
        self.providers: dict[str, Provider] = {
            "vllm": VLLMProvider(cfg.url, cfg.model_name(), cfg.api_key, cfg.affinity),
            "ollama": OllamaProvider(ollama_url or olla.base_url, ollama_model or olla.model),
        }
        if providers:
            self.providers.update(providers)
        self.vllm_enabled = cfg.enabled
        self.recorder = recorder
        self.timeout_s = timeout_s if timeout_s is not None else cfg.request_timeout_s
        self.retry = retry or RetryPolicy(cfg.max_retries, cfg.retry_backoff_s)
        # An injected client (e.g. over httpx.MockTransport in tests) is used as it is and
        # never closed here; otherwise one is made per `async with` block (or per request).
        self._injected = http
        self._http: httpx.AsyncClient | None = http

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._http is not None:
            yield self._http
            return
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            yield http

    async def __aenter__(self) -> LLMInterface:
        if self._injected is None:
            self._http = httpx.AsyncClient(
                timeout=self.timeout_s, limits=httpx.Limits(max_connections=64)
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None and self._injected is None:
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
        session_id: str | None = None,
        **params: Any,
    ) -> LLMResponse:
        if isinstance(messages, LLMRequest):
            request = messages
        else:
            validate_messages(messages)
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
                session_id=session_id,
            )
        if request.provider == "vllm" and not self.vllm_enabled:
            raise ConfigError(
                "llm.vllm.enabled is false in the config: set it to true to use provider='vllm'."
            )
        validate_request(request)
        chosen = self.providers.get(request.provider)
        if chosen is None:
            raise PrefixCacheError(
                f"Unknown provider {request.provider!r}; use one of {', '.join(self.providers)}."
            )
        response = await self._send(chosen, request)
        self._observe(response, request)
        return response

    def _observe(self, response: LLMResponse, request: LLMRequest) -> None:
        """The guide's log line, and the recorder (if any), for every response."""
        logger.debug(describe_cache(response))
        if self.recorder is not None:
            self.recorder.record(
                response, agent_type=request.agent_type, base_prompt_key=request.base_prompt_key
            )

    async def stream_completion(
        self,
        messages: Sequence[Message],
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        cache_salt: str | None = None,
        *,
        agent_type: str | None = None,
        base_prompt_key: str | None = None,
        session_id: str | None = None,
        **params: Any,
    ) -> AsyncIterator[str | LLMResponse]:
        """vLLM only: the reply's text deltas as they arrive, then the ``LLMResponse``
        (recorded like ``chat_completion``'s). Not retried: a stream that has begun cannot
        be replayed. The total deadline is ``request_timeout_s``."""
        validate_messages(messages)
        request = LLMRequest(
            messages=list(messages),
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            cache_salt=cache_salt,
            params=params,
            agent_type=agent_type,
            base_prompt_key=base_prompt_key,
            session_id=session_id,
        )
        validate_request(request)
        if not self.vllm_enabled:
            raise ConfigError(
                "llm.vllm.enabled is false in the config: set it to true to use provider='vllm'."
            )
        provider = self.providers["vllm"]
        if not isinstance(provider, VLLMProvider):
            raise PrefixCacheError("streaming needs the vLLM provider")
        deadline = time.monotonic() + self.timeout_s
        async with self._client() as http:
            try:
                async for event in provider.events(http, request, deadline):
                    if isinstance(event, LLMResponse):
                        self._observe(event, request)
                    yield event
            except RetryableError as exc:
                raise self._final_error(provider, exc) from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise self._final_error(provider, exc) from exc
            except httpx.TimeoutException as exc:
                raise ProviderTimeoutError(
                    f"The vLLM server at {provider.base_url} did not answer within "
                    f"{self.timeout_s:g} s.",
                    url=provider.base_url,
                ) from exc
            except httpx.HTTPError as exc:
                raise ProviderUnavailableError(
                    f"The stream from {provider.base_url} broke off ({type(exc).__name__}); "
                    "the reply is incomplete.",
                    url=provider.base_url,
                ) from exc

    async def _send(self, provider: Provider, request: LLMRequest) -> LLMResponse:
        attempt = 0
        while True:
            try:
                async with self._client() as http:
                    # the total deadline: a server that only sends keep-alives, or trickles
                    # bytes, cannot hold a request past it (httpx's timeout bounds each read)
                    async with asyncio.timeout(self.timeout_s):
                        return await provider.complete(http, request)
            except TimeoutError as exc:
                raise ProviderTimeoutError(
                    f"The {provider.name} server at {provider.base_url} did not finish the "
                    f"request within {self.timeout_s:g} s (the total deadline). Raise "
                    "llm.vllm.request_timeout_s, lower max_tokens, or check the server's load.",
                    url=provider.base_url,
                ) from exc
            except (httpx.ConnectError, httpx.ConnectTimeout, RetryableError) as exc:
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
            except httpx.TransportError as exc:  # the connection broke mid-request
                raise ProviderUnavailableError(
                    f"The connection to the {provider.name} server at {provider.base_url} broke "
                    f"off mid-request ({type(exc).__name__}); it stopped or restarted.",
                    url=provider.base_url,
                ) from exc
            except httpx.HTTPError as exc:
                raise ProviderError(
                    f"HTTP error talking to {provider.base_url}: {exc!r}", url=provider.base_url
                ) from exc

    def _final_error(self, provider: Provider, exc: Exception) -> ProviderError:
        tries = self.retry.max_retries + 1
        if isinstance(exc, RetryableError):
            return ProviderRequestError(
                f"The {provider.name} server at {provider.base_url} failed with HTTP {exc.status} "
                f"{tries} time(s): {error_message(exc.body)}. Check its log "
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
