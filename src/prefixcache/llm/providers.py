"""Providers: how one chat request travels to a server and back.

``VLLMProvider`` speaks the OpenAI-compatible API of vLLM (embedded, remote, or a router
in front of replicas), streaming so that time to first token can be measured, and reads
the server's cached-token figures. ``OllamaProvider`` speaks Ollama's native API.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ..errors import (
    PromptTooLongError,
    ProviderProtocolError,
    ProviderRequestError,
    ProviderTimeoutError,
)
from ..prompts.compose import DYNAMIC_HEADER
from .models import LLMRequest, LLMResponse, ResponseMetadata, Usage, hit_rate
from .validation import count, encode_body

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"

#: vllm-router's hash and sticky policies read the session key from the first header
#: present among x-session-id, x-user-id, x-tenant-id, x-correlation-id, x-request-id,
#: x-trace-id (router 0.1.17); body fields are not used for chat completions. Without
#: a header every request gets the same key and lands on one replica.
SESSION_HEADER = "x-session-id"


def prefix_key(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """A key for "the same agent": the hash of the first system prompt's static part
    (the text before the dynamic suffix's header); None without a system message."""
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "system":
            content = message.get("content")
            text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
            static = text.split(DYNAMIC_HEADER, 1)[0]
            return "prefix-" + hashlib.sha256(static.encode("utf-8", "replace")).hexdigest()[:16]
    return None


def routing_key(request: LLMRequest, affinity: str) -> str | None:
    """The x-session-id to send: the session (conversation affinity), else the prompt's
    prefix hash (agent affinity); never a per-request id, which would scatter a session."""
    if affinity == "session" and request.session_id:
        return request.session_id
    return prefix_key(request.messages)


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


def cached_tokens_from_usage(usage: Mapping[str, Any], url: str = "the server") -> int | None:
    """``usage.prompt_tokens_details.cached_tokens``; ``None`` (unknown) when not reported."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, Mapping) or details.get("cached_tokens") is None:
        return None
    return count(details, "cached_tokens", url)


def _shape(url: str, what: str, value: object) -> ProviderProtocolError:
    return ProviderProtocolError(
        f"The server at {url} sent {what} of the wrong shape ({type(value).__name__}: "
        f"{str(value)[:80]!r}); it is not a vLLM OpenAI-compatible server, or a proxy changed "
        "its answer.",
        url=url,
    )


async def _check_status(response: httpx.Response, url: str, model: str) -> None:
    """HTTP errors as typed errors; 5xx as a retry signal; a redirect named as one."""
    status = response.status_code
    if 300 <= status < 400:
        target = response.headers.get("location", "?")
        raise ProviderRequestError(
            f"The server at {url} redirected the request (HTTP {status}) to {target}. Point "
            "llm.vllm.base_url (or --base-url) at the final address: requests are not "
            "followed across redirects.",
            url=url,
            status=status,
        )
    if status >= 400:
        text = (await response.aread()).decode(errors="replace")
        if status >= 500:
            raise _Retryable(status, text)
        _raise_for_client_error(status, text, url, model)


class VLLMProvider:
    """Any OpenAI-compatible vLLM server: embedded, remote, or a router in front of replicas."""

    name = "vllm"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        affinity: str = "session",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.affinity = affinity
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
        response: LLMResponse | None = None
        async for event in self.events(http, request):
            if isinstance(event, LLMResponse):
                response = event
        assert response is not None
        return response

    async def events(
        self, http: httpx.AsyncClient, request: LLMRequest, deadline: float | None = None
    ) -> AsyncIterator[str | LLMResponse]:
        """The reply's text deltas as they arrive, then the ``LLMResponse``.

        ``deadline`` (a ``time.monotonic()`` value) ends a stream that is still running
        then with ``ProviderTimeoutError``, also while the server sends only keep-alives."""
        url = f"{self.base_url}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        key = routing_key(request, self.affinity)
        if key is not None:
            headers[SESSION_HEADER] = key
        body = self.body(request)
        started = time.perf_counter()
        stream = StreamState()
        payload = encode_body(body)
        headers = {**headers, "Content-Type": "application/json"}
        async with http.stream("POST", url, content=payload, headers=headers) as response:
            await _check_status(response, self.base_url, str(body["model"]))
            async for line in response.aiter_lines():
                seen = len(stream.parts)
                done = stream.feed(line, time.perf_counter() - started, self.base_url)
                for delta in stream.parts[seen:]:
                    yield delta
                if done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise ProviderTimeoutError(
                        f"The vLLM server at {self.base_url} did not finish the stream before "
                        "the deadline (llm.vllm.request_timeout_s).",
                        url=self.base_url,
                    )
        elapsed = time.perf_counter() - started
        if stream.usage is None:
            raise ProviderRequestError(
                f"The server at {self.base_url} sent no usage in its stream; it is not a vLLM "
                "OpenAI-compatible server, or it ignores stream_options.include_usage.",
                url=self.base_url,
            )
        usage = stream.usage
        prompt_tokens = count(usage, "prompt_tokens", self.base_url)
        completion_tokens = count(usage, "completion_tokens", self.base_url, required=False)
        cached = cached_tokens_from_usage(usage, self.base_url)
        if cached is not None and cached > prompt_tokens:
            raise ProviderProtocolError(
                f"The server at {self.base_url} reported {cached} cached tokens for a prompt of "
                f"{prompt_tokens} tokens; its figures cannot be trusted.",
                url=self.base_url,
            )
        if cached is None and not self._warned_no_cache_report:
            self._warned_no_cache_report = True
            warnings.warn(
                f"The vLLM server at {self.base_url} does not report cached tokens; start it with "
                "--enable-prompt-tokens-details (prefixcache engine start always does).",
                CacheReportingWarning,
                stacklevel=4,
            )
        yield _response(
            content="".join(stream.parts),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached=cached,
            ttft=stream.ttft,
            elapsed=elapsed,
            finish=stream.finish,
            provider=self.name,
            model=str(body["model"]),
            served_model=stream.model,
            request_id=stream.request_id,
        )


@dataclass
class StreamState:
    """What an OpenAI-compatible server-sent-event stream has said so far."""

    parts: list[str] = field(default_factory=list)
    ttft: float | None = None
    finish: str | None = None
    usage: Mapping[str, Any] | None = None
    request_id: str | None = None
    model: str | None = None

    def feed(self, line: str, elapsed: float, url: str = "the server") -> bool:
        """Take one line of the stream; True at ``data: [DONE]``. A line of the wrong
        shape raises ``ProviderProtocolError`` naming the server."""
        if not line.startswith("data:"):
            return False  # comments (keep-alives), blank separators, other SSE fields
        data = line[5:].strip()
        if data == "[DONE]":
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderProtocolError(
                f"The server at {url} sent a stream line that is not JSON: {data[:120]!r}",
                url=url,
            ) from None
        if not isinstance(chunk, dict):
            raise _shape(url, "a chunk", chunk)
        if isinstance(chunk.get("error"), dict | str):
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ProviderRequestError(f"The server at {url} failed mid-stream: {message}", url=url)
        request_id, model = chunk.get("id"), chunk.get("model")
        self.request_id = self.request_id or (request_id if isinstance(request_id, str) else None)
        self.model = self.model or (model if isinstance(model, str) else None)
        usage = chunk.get("usage")
        if usage:
            if not isinstance(usage, dict):
                raise _shape(url, "usage", usage)
            self.usage = usage
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise _shape(url, "choices", choices)
        for choice in choices:
            if not isinstance(choice, dict):
                raise _shape(url, "a choice", choice)
            delta_obj = choice.get("delta") or {}
            if not isinstance(delta_obj, dict):
                raise _shape(url, "a delta", delta_obj)
            delta = delta_obj.get("content")
            if delta is not None and not isinstance(delta, str):
                raise _shape(url, "delta.content", delta)
            if delta:
                if self.ttft is None:
                    self.ttft = elapsed
                self.parts.append(delta)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
                if self.ttft is None:
                    self.ttft = elapsed
        return False


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
        payload = encode_body(body)
        headers = {"Content-Type": "application/json"}
        async with http.stream(
            "POST", f"{self.base_url}/api/chat", content=payload, headers=headers
        ) as response:
            await _check_status(response, self.base_url, model)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    chunk = json.loads(line)
                except ValueError:
                    raise ProviderProtocolError(
                        f"Ollama at {self.base_url} sent a line that is not JSON: {line[:120]!r}",
                        url=self.base_url,
                    ) from None
                if not isinstance(chunk, dict):
                    raise _shape(self.base_url, "a chunk", chunk)
                if chunk.get("error"):
                    raise ProviderRequestError(f"Ollama error: {chunk['error']}", url=self.base_url)
                message = chunk.get("message") or {}
                content = message.get("content") if isinstance(message, dict) else None
                if content is not None and not isinstance(content, str):
                    raise _shape(self.base_url, "message.content", content)
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(content)
                if chunk.get("done"):
                    final = chunk
                    break
        return _response(
            content="".join(parts),
            prompt_tokens=count(final, "prompt_eval_count", self.base_url, required=False),
            completion_tokens=count(final, "eval_count", self.base_url, required=False),
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
    served_model: str | None = None,
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
        "model": served_model or model,
        "served_model": served_model or model,
        "requested_model": model,
        "request_id": request_id,
    }
    return LLMResponse(content, usage, metadata, elapsed, finish)
