"""Checks on a chat request before it is sent, and on what a server sends back.

A request that cannot be encoded (a ``NaN`` temperature, ``messages`` that are not a list
of messages, a lone surrogate in a string) fails here with ``InvalidRequestError``
naming the field, instead of deep inside the JSON encoder. A server answer of the wrong
shape (invalid JSON, a usage count that is not a number, more cached tokens than prompt
tokens) fails with ``ProviderProtocolError`` naming the server and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidRequestError, InvalidRequestTypeError, ProviderProtocolError
from .models import LLMRequest


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{where} holds a character that is not valid Unicode text (a lone surrogate "
            f"{value[exc.start]!r} at offset {exc.start}); fix how the text was decoded."
        ) from None


def validate_messages(messages: object) -> None:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidRequestTypeError(
            f"messages must be a list of messages ({{'role': ..., 'content': ...}}), got "
            f"{type(messages).__name__}."
        )
    if not messages:
        raise InvalidRequestError("messages is empty; send at least one message.")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidRequestTypeError(
                f"{where} must be a mapping with 'role' and 'content', got "
                f"{type(message).__name__}."
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequestError(f"{where} needs a 'role' (a non-empty str), got {role!r}.")
        _check_text(role, f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            _check_text(content, f"{where}.content")
        elif content is None:
            if role != "assistant":
                raise InvalidRequestError(f"{where} ({role}) has no 'content'.")
        elif isinstance(content, Sequence) and not isinstance(content, bytes):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping):
                    raise InvalidRequestTypeError(
                        f"{where}.content[{j}] must be a content part mapping, got "
                        f"{type(part).__name__}."
                    )
        else:
            raise InvalidRequestTypeError(
                f"{where}.content must be a str or a list of content parts, got "
                f"{type(content).__name__}."
            )


def validate_request(request: LLMRequest) -> None:
    validate_messages(request.messages)
    max_tokens = request.max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequestTypeError(f"max_tokens must be an int, got {max_tokens!r}.")
    if max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be at least 1, got {max_tokens}.")
    temperature = request.temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise InvalidRequestTypeError(f"temperature must be a number, got {temperature!r}.")
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidRequestError(f"temperature must be a finite number >= 0, got {temperature!r}.")
    if request.cache_salt is not None:
        if not isinstance(request.cache_salt, str) or not request.cache_salt:
            raise InvalidRequestError(
                f"cache_salt must be a non-empty str (or None), got {request.cache_salt!r}."
            )
        _check_text(request.cache_salt, "cache_salt")
    if request.model is not None and not isinstance(request.model, str):
        raise InvalidRequestTypeError(f"model must be a str, got {request.model!r}.")


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The request body as JSON; what cannot be encoded is named."""
    try:
        return json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        for key, value in body.items():
            try:
                json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
            except (TypeError, ValueError, UnicodeEncodeError):
                raise InvalidRequestError(
                    f"request field {key!r} cannot be sent as JSON ({exc}): use str, numbers "
                    "(finite), bools, lists and dicts."
                ) from None
        raise InvalidRequestError(f"the request cannot be sent as JSON: {exc}") from None


def count(usage: Mapping[str, Any], key: str, url: str, *, required: bool = True) -> int:
    """A usage count: a non-negative int (a float with no fraction is accepted)."""
    value = usage.get(key)
    if value is None and not required:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderProtocolError(
            f"The server at {url} sent usage.{key}={value!r}, not a number; it is not a "
            "vLLM OpenAI-compatible server, or a proxy changed its answer.",
            url=url,
        )
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise ProviderProtocolError(f"The server at {url} sent usage.{key}={value!r}.", url=url)
    if value < 0:
        raise ProviderProtocolError(f"The server at {url} sent a negative usage.{key}.", url=url)
    return int(value)
