"""The OpenAI-compatible gateway: ``POST /v1/chat/completions`` and ``GET /v1/models``.

It authenticates, sets the tenant's ``cache_salt`` (a caller's own salt is replaced: a
caller must not choose whose cache it shares), forwards to vLLM, and records the
request's cache figures under an agent label: the ``X-Agent-Type`` header, or else the
hash of the system prompt's static part (``prefix-<16 hex>``, the client's routing key). Answers pass through
unchanged, ``usage.prompt_tokens_details.cached_tokens`` included. To measure a stream
the gateway asks vLLM for the usage chunk; when the caller did not ask for it, that one
chunk is not passed on.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx

from ..errors import ProviderRequestError, ProviderTimeoutError, ProviderUnavailableError
from ..llm.models import LLMResponse
from ..llm.providers import SESSION_HEADER, _response, cached_tokens_from_usage, prefix_key
from .auth import Principal
from .conversations import Conversations
from .errors import RETRY_AFTER_S, Unprocessable
from .state import ServiceState

AGENT_HEADER = "x-agent-type"


def agent_label(body: Mapping[str, Any], header: str | None) -> str:
    """The agent a gateway request is recorded under: the header, else the prefix hash
    (the same key the client would route by)."""
    if header:
        return header.strip().lower()[:64]
    messages = body.get("messages")
    return (prefix_key(messages) if isinstance(messages, list) else None) or "unlabelled"


@contextlib.contextmanager
def upstream_errors(url: str) -> Iterator[None]:
    """httpx's failures reaching vLLM as the library's typed errors (503 / 504)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ProviderTimeoutError(f"vLLM at {url} timed out") from exc
    except httpx.TransportError as exc:
        raise _down(url, exc) from exc


class Gateway:
    def __init__(self, state: ServiceState, conversations: Conversations) -> None:
        self.state = state
        self.conversations = conversations

    def _upstream(self, path: str) -> str:
        return f"{self.state.vllm_url}{path}"

    def _headers(
        self, body: Mapping[str, Any] | None = None, session: str | None = None
    ) -> dict[str, str]:
        key = self.state.settings.llm.vllm.api_key
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # the router's session key: the caller's x-session-id, else the prompt's prefix
        routing = session or (prefix_key(body.get("messages") or []) if body else None)
        if routing:
            headers[SESSION_HEADER] = routing
        return headers

    def prepare(self, principal: Principal, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The body sent upstream, and whether the caller asked for the usage chunk."""
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise Unprocessable("'messages' must be a non-empty list of chat messages.")
        out = dict(body)
        out.pop("cache_salt", None)
        salt = self.state.salt_for(principal)
        if salt is not None:
            out["cache_salt"] = salt
        out.setdefault("model", self.state.settings.llm.vllm.model_name())
        asked_usage = False
        if out.get("stream"):
            options = dict(out.get("stream_options") or {})
            asked_usage = bool(options.get("include_usage"))
            options["include_usage"] = True
            out["stream_options"] = options
        return out, asked_usage

    async def models(self) -> httpx.Response:
        with upstream_errors(self.state.vllm_url):
            return await self.state.http.get(self._upstream("/v1/models"), headers=self._headers())

    async def complete(
        self,
        principal: Principal,
        body: dict[str, Any],
        agent_header: str | None,
        session: str | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """A non-streaming request: vLLM's status, body and content type, unchanged."""
        upstream, _ = self.prepare(principal, body)
        started = time.perf_counter()
        with upstream_errors(self.state.vllm_url):
            answer = await self.state.http.post(
                self._upstream("/v1/chat/completions"),
                json=upstream,
                headers=self._headers(upstream, session),
            )
        elapsed = time.perf_counter() - started
        if answer.status_code >= 500:
            raise ProviderRequestError(
                f"vLLM at {self.state.vllm_url} failed (HTTP {answer.status_code})",
                status=answer.status_code,
            )
        if answer.status_code < 400:
            try:
                data = answer.json()
                usage = data.get("usage") or {}
                response = _record_response(data.get("model"), upstream, usage, None, elapsed)
                await self._record(principal, body, agent_header, response)
            except (ValueError, AttributeError, TypeError):
                pass  # an answer we cannot read is still passed on unchanged
        content_type = answer.headers.get("content-type", "application/json")
        return answer.status_code, answer.content, {"content-type": content_type}

    async def open_stream(
        self,
        principal: Principal,
        body: dict[str, Any],
        agent_header: str | None,
        session: str | None = None,
    ) -> tuple[httpx.Response, bool, dict[str, Any]]:
        """Open the upstream stream (errors surface here, before any byte is sent)."""
        upstream, asked_usage = self.prepare(principal, body)
        request = self.state.http.build_request(
            "POST",
            self._upstream("/v1/chat/completions"),
            json=upstream,
            headers=self._headers(upstream, session),
        )
        with upstream_errors(self.state.vllm_url):
            answer = await self.state.http.send(request, stream=True)
        return answer, asked_usage, upstream

    async def relay(
        self,
        principal: Principal,
        body: dict[str, Any],
        agent_header: str | None,
        answer: httpx.Response,
        asked_usage: bool,
    ) -> AsyncIterator[bytes]:
        """The stream, passed through line by line; its usage chunk read on the way."""
        started = time.perf_counter()
        ttft: float | None = None
        usage: dict[str, Any] | None = None
        model: str | None = None
        try:
            async for line in answer.aiter_lines():
                if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                    try:
                        chunk = json.loads(line[5:])
                    except ValueError:
                        chunk = None
                    if isinstance(chunk, dict):
                        model = model or chunk.get("model")
                        if ttft is None and chunk.get("choices"):
                            ttft = time.perf_counter() - started
                        if chunk.get("usage") and not chunk.get("choices"):
                            usage = chunk["usage"]
                            if not asked_usage:
                                continue  # the caller did not ask for it: not passed on
                yield (line + "\n").encode()
        finally:
            await answer.aclose()
            if usage is not None:
                # a task of its own: the client may close the stream right after its last
                # byte, which cancels this generator before an await here could finish
                response = _record_response(model, body, usage, ttft, time.perf_counter() - started)
                self.state.later(self._record(principal, body, agent_header, response))

    async def _record(
        self, principal: Principal, body: Mapping[str, Any], agent_header: str | None,
        response: LLMResponse,
    ) -> None:  # fmt: skip
        agent = agent_label(body, agent_header)
        tiers = self.state.library.tiers
        tier = tiers.profile(agent).tier.value if agent in tiers.agents() else "unknown"
        self.state.recorder.record(response, agent_type=agent if tier != "unknown" else None)
        await self.conversations.record(
            principal, "gateway", agent, tier, response, body.get("messages")
        )


def _record_response(
    model: object, body: Mapping[str, Any], usage: Mapping[str, Any], ttft: float | None,
    elapsed: float,
) -> LLMResponse:  # fmt: skip
    prompt = int(usage.get("prompt_tokens") or 0)
    return _response(
        content="", prompt_tokens=prompt,
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached=cached_tokens_from_usage(usage), ttft=ttft, elapsed=elapsed, finish=None,
        provider="vllm", model=str(body.get("model")),
        served_model=model if isinstance(model, str) else None, request_id=None,
    )  # fmt: skip


def _down(url: str, exc: Exception) -> ProviderUnavailableError:
    return ProviderUnavailableError(
        f"vLLM at {url} is not reachable ({type(exc).__name__}); retry in {RETRY_AFTER_S} s.",
        url=url,
    )
