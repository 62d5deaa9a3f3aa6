"""The one reader of an OpenAI-compatible server-sent-event stream: the text deltas, the
time to first token, the finish reason, the answering model and the usage (with its
cached tokens). The client (``providers.vllm``) reads strictly, a malformed line is a
``ProviderProtocolError``; the gateway passes a stream through and reads it leniently."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import ProviderProtocolError, ProviderRequestError
from .validation import count


class Line(Enum):
    """What one line of a stream was."""

    OTHER = "other"  # a comment (keep-alive), a blank separator, another SSE field
    CHUNK = "chunk"  # a chunk with choices (text, a finish reason)
    USAGE = "usage"  # the usage-only chunk at the end (stream_options.include_usage)
    DONE = "done"  # data: [DONE]


def cached_tokens_from_usage(usage: Mapping[str, Any], url: str = "the server") -> int | None:
    """``usage.prompt_tokens_details.cached_tokens``; ``None`` (unknown) when not reported."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, Mapping) or details.get("cached_tokens") is None:
        return None
    return count(details, "cached_tokens", url)


def shape_error(url: str, what: str, value: object) -> ProviderProtocolError:
    return ProviderProtocolError(
        f"The server at {url} sent {what} of the wrong shape ({type(value).__name__}: "
        f"{str(value)[:80]!r}); it is not a vLLM OpenAI-compatible server, or a proxy changed "
        "its answer.",
        url=url,
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

    def feed(self, line: str, elapsed: float, url: str = "the server") -> Line:
        """Take one line of the stream (``elapsed``: seconds since the request was sent).
        A line of the wrong shape raises ``ProviderProtocolError`` naming the server; an
        error event, ``ProviderRequestError``."""
        if not line.startswith("data:"):
            return Line.OTHER
        data = line[5:].strip()
        if data == "[DONE]":
            return Line.DONE
        if not data:
            return Line.OTHER
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderProtocolError(
                f"The server at {url} sent a stream line that is not JSON: {data[:120]!r}",
                url=url,
            ) from None
        if not isinstance(chunk, dict):
            raise shape_error(url, "a chunk", chunk)
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
                raise shape_error(url, "usage", usage)
            self.usage = usage
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise shape_error(url, "choices", choices)
        for choice in choices:
            if not isinstance(choice, dict):
                raise shape_error(url, "a choice", choice)
            delta_obj = choice.get("delta") or {}
            if not isinstance(delta_obj, dict):
                raise shape_error(url, "a delta", delta_obj)
            delta = delta_obj.get("content")
            if delta is not None and not isinstance(delta, str):
                raise shape_error(url, "delta.content", delta)
            if delta:
                if self.ttft is None:
                    self.ttft = elapsed
                self.parts.append(delta)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
                if self.ttft is None:
                    self.ttft = elapsed
        return Line.USAGE if usage and not choices else Line.CHUNK

    def feed_lenient(self, line: str, elapsed: float) -> Line:
        """``feed`` for a stream passed through as it is: a malformed line or an error
        event counts as ``OTHER`` (the caller sees it as it came)."""
        try:
            return self.feed(line, elapsed)
        except (ProviderProtocolError, ProviderRequestError):
            return Line.OTHER
