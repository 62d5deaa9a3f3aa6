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

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
from fastapi import Response

from ..errors import ProviderRequestError, ProviderTimeoutError, ProviderUnavailableError
from ..llm.models import LLMResponse
from ..llm.providers import SESSION_HEADER, prefix_key
from ..llm.sse import Line, StreamState, cached_tokens_from_usage
from .auth import NAME_PATTERN, Principal
from .conversations import Conversations
from .errors import RETRY_AFTER_S
from .gateway_contract import GatewayContract, header_value, parse_json
from .stabilizer import STABILIZED_HEADER, Stabilized
from .state import ServiceState
from .streaming import GuardedStreamingResponse

AGENT_HEADER = "x-agent-type"
#: the agents that come next, comma-separated: prefilled for the caller after the answer
NEXT_AGENT_HEADER = "x-next-agent"
logger = logging.getLogger("prefixcache.service")


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
        cfg = state.settings.llm.vllm
        self.contract = GatewayContract(
            state.settings.service.gateway, cfg.model_name(), cfg.max_model_len
        )

    def _upstream(self, path: str) -> str:
        return f"{self.state.vllm_url}{path}"

    def _headers(
        self,
        body: Mapping[str, Any] | None = None,
        session: str | None = None,
        principal: Principal | None = None,
    ) -> dict[str, str]:
        key = self.state.settings.llm.vllm.api_key
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # the router's session key: the caller's x-session-id (scoped by tenant, so two
        # tenants' ids never share a route), else the prompt's prefix
        if session and principal is not None:
            headers[SESSION_HEADER] = f"{principal.tenant}/{session}"
        else:
            routing = prefix_key(body.get("messages") or []) if body else None
            if routing:
                headers[SESSION_HEADER] = routing
        return headers

    def prepare(
        self,
        principal: Principal,
        body: Any,
        stabilize: str | None = None,
        agent: str | None = None,
    ) -> tuple[dict[str, Any], bool, Stabilized | None]:
        """The body sent upstream (only the allowlisted fields, checked; stabilized when
        the tenant's mode is ``on``; the tenant's salt), whether the caller asked for the
        usage chunk, and what the stabilizer learned."""
        out = self.contract.check(body)
        note: Stabilized | None = None
        if self.state.stabilizer is not None:
            out, note = self.state.stabilizer.apply(principal, out, stabilize, agent)
        salt = self.state.salt_for(principal)
        if salt is not None:
            out["cache_salt"] = salt
        asked_usage = False
        if out.get("stream"):
            options = dict(out.get("stream_options") or {})
            asked_usage = options.get("include_usage") is True
            options["include_usage"] = True
            out["stream_options"] = options
        return out, asked_usage, note

    async def handle(
        self,
        caller: Principal,
        raw: bytes,
        *,
        agent_header: str | None = None,
        session_header: str | None = None,
        next_agents: str | None = None,
        stabilize: str | None = None,
    ) -> Response:
        """One ``POST /v1/chat/completions``: the allowlisted body with the tenant's salt,
        through admission, to vLLM; the answer unchanged (streamed or not), then the
        prefetch of the next agents' prefixes."""
        body = parse_json(raw)
        agent = header_value(AGENT_HEADER, agent_header, NAME_PATTERN)
        session = header_value(SESSION_HEADER, session_header, NAME_PATTERN)
        upcoming = self.conversations.next_agents(
            [a.strip() for a in next_agents.split(",") if a.strip()] if next_agents else None
        )
        routed = f"{caller.tenant}/{session}" if session else None
        upstream, asked_usage, note = self.prepare(caller, body, stabilize, agent)
        stabilized = {STABILIZED_HEADER: note.rewrite.header()} if note and note.applied else {}
        release = await self.state.admission.acquire(caller.key_id, caller.tenant)
        try:
            if upstream.get("stream"):
                answer = await self.open_stream(upstream, session, caller)
                if answer.status_code >= 400:
                    content = await answer.aread()
                    await answer.aclose()
                    release()
                    return Response(
                        content,
                        status_code=answer.status_code,
                        media_type=answer.headers.get("content-type"),
                    )
                stream = self.relay(caller, body, agent, answer, asked_usage, note)

                async def close() -> None:  # however the response ended (or never began)
                    release()
                    await answer.aclose()
                    self.conversations.prefetch(caller, upcoming, routed)

                return GuardedStreamingResponse(
                    stream, media_type="text/event-stream", on_close=close, headers=stabilized
                )
            status, content, headers = await self.complete(
                caller, body, upstream, agent, session, note
            )
        except BaseException:
            release()
            raise
        release()
        if status < 400:
            self.conversations.prefetch(caller, upcoming, routed)
        return Response(
            content,
            status_code=status,
            media_type=headers["content-type"],
            headers=stabilized if status < 400 else None,
        )

    async def models(self) -> httpx.Response:
        with upstream_errors(self.state.vllm_url):
            return await self.state.http.get(self._upstream("/v1/models"), headers=self._headers())

    async def complete(
        self,
        principal: Principal,
        body: dict[str, Any],
        upstream: dict[str, Any],
        agent_header: str | None,
        session: str | None = None,
        note: Stabilized | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """A non-streaming request: vLLM's status, body and content type, unchanged."""
        started = time.perf_counter()
        with upstream_errors(self.state.vllm_url):
            answer = await self.state.http.post(
                self._upstream("/v1/chat/completions"),
                json=upstream,
                headers=self._headers(upstream, session, principal),
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
                if note is None:
                    await self._record(principal, body, agent_header, response)
                else:  # the predictions ask the engine's tokenizer: after the response
                    self.state.later(self._record(principal, body, agent_header, response, note))
            except (ValueError, AttributeError, TypeError):
                pass  # an answer we cannot read is still passed on unchanged
        content_type = answer.headers.get("content-type", "application/json")
        return answer.status_code, answer.content, {"content-type": content_type}

    async def open_stream(
        self, upstream: dict[str, Any], session: str | None, principal: Principal
    ) -> httpx.Response:
        """Open the upstream stream (errors surface here, before any byte is sent)."""
        request = self.state.http.build_request(
            "POST",
            self._upstream("/v1/chat/completions"),
            json=upstream,
            headers=self._headers(upstream, session, principal),
        )
        with upstream_errors(self.state.vllm_url):
            return await self.state.http.send(request, stream=True)

    async def relay(
        self,
        principal: Principal,
        body: dict[str, Any],
        agent_header: str | None,
        answer: httpx.Response,
        asked_usage: bool,
        note: Stabilized | None = None,
    ) -> AsyncIterator[bytes]:
        """The stream, passed through line by line; its usage chunk read on the way.

        The whole stream has a deadline (``service.gateway.stream_deadline_s``). If the
        engine fails or the deadline passes mid-stream, the caller gets an SSE ``error``
        event (OpenAI's error object) and ``[DONE]``, and the request is recorded with
        what was measured."""
        started = time.perf_counter()
        deadline = self.state.settings.service.gateway.stream_deadline_s
        stream = StreamState()
        failure: str | None = None
        lines = answer.aiter_lines()
        try:
            while True:
                left = deadline - (time.perf_counter() - started)
                try:
                    line = await asyncio.wait_for(anext(lines), timeout=max(left, 0.001))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    failure = f"the stream passed its {deadline:g} s deadline (service.gateway.stream_deadline_s)"
                    break
                except httpx.HTTPError as exc:
                    failure = f"the engine's stream broke ({type(exc).__name__})"
                    break
                kind = stream.feed_lenient(line, time.perf_counter() - started)
                if kind is Line.USAGE and not asked_usage:
                    continue  # the caller did not ask for it: not passed on
                yield (line + "\n").encode()
            if failure is not None:
                error = {
                    "error": {
                        "message": failure,
                        "type": "upstream_error",
                        "code": 504 if "deadline" in failure else 502,
                    }
                }
                yield f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
        finally:
            await answer.aclose()
            if stream.usage is not None or failure is not None:
                # a task of its own: the client may close the stream right after its last
                # byte, which cancels this generator before an await here could finish
                response = _record_response(
                    stream.model,
                    body,
                    stream.usage or {},
                    stream.ttft,
                    time.perf_counter() - started,
                )
                self.state.later(self._record(principal, body, agent_header, response, note))
            if failure is not None:
                logger.warning("gateway stream for %s ended early: %s", principal.tenant, failure)

    async def _record(
        self,
        principal: Principal,
        body: Mapping[str, Any],
        agent_header: str | None,
        response: LLMResponse,
        note: Stabilized | None = None,
    ) -> None:
        """The request's figures (and, from the stabilizer, its family, what moved and
        the cached tokens predicted with and without the rewrite). The prompt kept (with
        ``record_prompts``) is the one sent upstream: the rewrite, when there was one."""
        agent = agent_label(body, agent_header)
        tiers = self.state.library.tiers
        tier = tiers.profile(agent).tier.value if agent in tiers.agents() else "unknown"
        self.state.recorder.record(response, agent_type=agent if tier != "unknown" else None)
        sent = note.rewrite.messages if note is not None and note.applied else body.get("messages")
        extra: dict[str, Any] = {}
        if note is not None and self.state.stabilizer is not None:
            original, stabilized = await self.state.stabilizer.predict(
                note, self.state.salt_for(principal)
            )
            plan = note.rewrite.plan
            extra = {
                "stabilize": note.mode,
                "family": note.rewrite.family[:200],
                "rewritten": note.applied,
                "moved_lines": plan.moves if plan is not None else 0,
                "tools_sorted": bool(plan is not None and plan.sort_tools),
                "moved_shapes": note.shapes_json(),
                "predicted_original": original,
                "predicted_stabilized": stabilized,
            }
        await self.conversations.record(
            principal, "gateway", agent, tier, response, sent, extra=extra
        )


def _record_response(
    model: object,
    body: Mapping[str, Any],
    usage: Mapping[str, Any],
    ttft: float | None,
    elapsed: float,
) -> LLMResponse:
    prompt = int(usage.get("prompt_tokens") or 0)
    return LLMResponse.build(
        content="",
        prompt_tokens=prompt,
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached=cached_tokens_from_usage(usage),
        ttft=ttft,
        elapsed=elapsed,
        finish=None,
        provider="vllm",
        model=str(body.get("model")),
        served_model=model if isinstance(model, str) else None,
        request_id=None,
    )


def _down(url: str, exc: Exception) -> ProviderUnavailableError:
    return ProviderUnavailableError(
        f"vLLM at {url} is not reachable ({type(exc).__name__}); retry in {RETRY_AFTER_S} s.",
        url=url,
    )
