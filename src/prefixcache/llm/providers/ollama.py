"""``OllamaProvider``: Ollama's native chat API (``/api/chat``, streamed)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from ...errors import ProviderProtocolError, ProviderRequestError
from ..models import LLMRequest, LLMResponse
from ..sse import shape_error
from ..validation import count, encode_body
from .base import check_status

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


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
            await check_status(response, self.base_url, model)
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
                    raise shape_error(self.base_url, "a chunk", chunk)
                if chunk.get("error"):
                    raise ProviderRequestError(f"Ollama error: {chunk['error']}", url=self.base_url)
                message = chunk.get("message") or {}
                content = message.get("content") if isinstance(message, dict) else None
                if content is not None and not isinstance(content, str):
                    raise shape_error(self.base_url, "message.content", content)
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(content)
                if chunk.get("done"):
                    final = chunk
                    break
        return LLMResponse.build(
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
