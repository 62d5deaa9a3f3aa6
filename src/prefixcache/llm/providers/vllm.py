"""``VLLMProvider``: the OpenAI-compatible API of vLLM (embedded, remote, or vllm-router
in front of replicas), streamed so that time to first token is measured, with the
server's cached-token figures."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ...errors import ProviderProtocolError, ProviderRequestError, ProviderTimeoutError
from ..models import LLMRequest, LLMResponse
from ..sse import Line, StreamState, cached_tokens_from_usage
from ..validation import count, encode_body
from .base import SESSION_HEADER, CacheReportingWarning, check_status, routing_key


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
            await check_status(response, self.base_url, str(body["model"]))
            async for line in response.aiter_lines():
                seen = len(stream.parts)
                done = stream.feed(line, time.perf_counter() - started, self.base_url) is Line.DONE
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
        yield LLMResponse.build(
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
