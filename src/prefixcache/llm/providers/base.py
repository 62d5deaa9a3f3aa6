"""What every provider shares: the routing key, retries, and the server's HTTP errors as
typed errors."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ...errors import PromptTooLongError, ProviderRequestError
from ...prompts.compose import DYNAMIC_HEADER
from ..models import LLMRequest, LLMResponse

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


class RetryableError(Exception):
    """A 5xx answer: the interface retries it (``RetryPolicy``), then reports it."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body


class Provider(Protocol):
    name: str
    base_url: str

    async def complete(self, http: httpx.AsyncClient, request: LLMRequest) -> LLMResponse: ...


_CONTEXT_RE = re.compile(r"maximum context length is (\d+) tokens.*?contains at least (\d+)", re.S)
_MAXTOK_RE = re.compile(r"max_tokens=(\d+) cannot be greater than max_model_len=(\d+)")


def error_message(body: str) -> str:
    """The message of an OpenAI-style error body (or the body's start)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def raise_for_client_error(status: int, body: str, url: str, model: str) -> None:
    """A 4xx answer as ``PromptTooLongError`` (context or max_tokens) or ``ProviderRequestError``."""
    message = error_message(body)
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


async def check_status(response: httpx.Response, url: str, model: str) -> None:
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
            raise RetryableError(status, text)
        raise_for_client_error(status, text, url, model)
