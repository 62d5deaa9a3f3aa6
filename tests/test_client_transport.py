"""The client's parsing, retries and errors over ``httpx.MockTransport``.

A transport, not a mocked LLM: these bytes are what a vLLM server sends (as recorded from
vLLM 0.32); the live suite (tests/integration) covers the real server.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable

import httpx
import pytest

from prefixcache import (
    CacheReportingWarning,
    ClientSettings,
    EngineInspector,
    LLMInterface,
    PromptTooLongError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RetryPolicy,
)

URL = "http://vllm.test:8000"
CFG = ClientSettings(base_url=URL, served_model_name="smollm2")
MESSAGES = [{"role": "user", "content": "hi"}]


def sse(*chunks: object) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def chunk(content: str | None = None, finish: str | None = None, **extra: object) -> dict:  # type: ignore[type-arg]
    delta = {"content": content} if content is not None else {}
    data: dict = {  # type: ignore[type-arg]
        "id": "chatcmpl-1",
        "model": "smollm2",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    data.update(extra)
    return data


USAGE = {
    "prompt_tokens": 300,
    "completion_tokens": 2,
    "total_tokens": 302,
    "prompt_tokens_details": {"cached_tokens": 256},
}
GOOD_STREAM = sse(
    chunk("Hel"),
    chunk("lo", finish="length"),
    {"id": "chatcmpl-1", "model": "smollm2", "choices": [], "usage": USAGE},
)


def run(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    retry: RetryPolicy | None = None,
    **kwargs: object,
) -> object:
    async def go() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            llm = LLMInterface(CFG, http=http, retry=retry or RetryPolicy(2, 0.0))
            return await llm.chat_completion(MESSAGES, max_tokens=2, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_a_stream_is_parsed_with_cache_figures() -> None:
    seen: list[dict] = []  # type: ignore[type-arg]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=GOOD_STREAM)

    response = run(handler, cache_salt="tenant-a")
    assert response.content == "Hello"  # type: ignore[attr-defined]
    assert response.cached_tokens == 256 and response.prompt_tokens == 300  # type: ignore[attr-defined]
    assert response.cache_hit_rate == pytest.approx(256 / 300)  # type: ignore[attr-defined]
    assert response.finish_reason == "length" and response.ttft is not None  # type: ignore[attr-defined]
    body = seen[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["cache_salt"] == "tenant-a" and body["model"] == "smollm2"


def test_the_model_the_server_answered_with_is_recorded() -> None:
    """A router or an alias may answer under another name than the one requested."""
    stream = sse(
        {**chunk("x", finish="stop"), "model": "replica-model"},
        {"id": "c", "model": "replica-model", "choices": [], "usage": USAGE},
    )
    response = run(lambda r: httpx.Response(200, content=stream))
    # the guide's platform reads the answering model from metadata["model"]
    assert response.metadata["model"] == "replica-model"  # type: ignore[attr-defined]
    assert response.served_model == "replica-model"  # type: ignore[attr-defined]
    assert response.metadata["requested_model"] == "smollm2"  # type: ignore[attr-defined]


def test_keep_alive_comments_and_blank_lines_are_skipped() -> None:
    stream = b": keep-alive\n\n" + GOOD_STREAM.replace(b"\n\n", b"\n\n: ping\n\n", 1)
    assert run(lambda r: httpx.Response(200, content=stream)).content == "Hello"  # type: ignore[attr-defined]


def test_no_cached_tokens_reported_warns_once_and_says_unknown() -> None:
    usage = {k: v for k, v in USAGE.items() if k != "prompt_tokens_details"}
    stream = sse(chunk("x", finish="stop"), {"id": "c", "choices": [], "usage": usage})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = run(lambda r: httpx.Response(200, content=stream))
    assert response.cached_tokens is None and response.cache_hit_rate is None  # type: ignore[attr-defined]
    messages = [str(w.message) for w in caught if w.category is CacheReportingWarning]
    assert len(messages) == 1 and "--enable-prompt-tokens-details" in messages[0]


def test_5xx_is_retried_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(503, json={"error": {"message": "loading"}})
        return httpx.Response(200, content=GOOD_STREAM)

    assert run(handler, retry=RetryPolicy(3, 0.0)).content == "Hello"  # type: ignore[attr-defined]
    assert len(calls) == 3


def test_5xx_after_the_retries_is_a_typed_error() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500, json={"error": {"message": "engine dead"}})

    with pytest.raises(ProviderRequestError, match=r"HTTP 500 3 time.*engine dead") as info:
        run(handler, retry=RetryPolicy(2, 0.0))
    assert info.value.status == 500 and len(calls) == 3


def test_4xx_is_never_retried() -> None:
    calls = []
    body = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "prompt contains at least 9000 input tokens."
        }
    }

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json=body)

    with pytest.raises(PromptTooLongError) as info:
        run(handler)
    assert (info.value.prompt_tokens, info.value.max_context) == (9000, 8192)
    assert len(calls) == 1


def test_connection_errors_are_retried_then_unavailable() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ProviderUnavailableError, match="after 3 attempt"):
        run(handler, retry=RetryPolicy(2, 0.0))
    assert len(calls) == 3


def test_a_read_timeout_is_a_typed_error_and_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ProviderTimeoutError, match="request_timeout_s"):
        run(handler)
    assert len(calls) == 1


def test_a_stream_without_usage_is_a_clear_error() -> None:
    stream = sse(chunk("x", finish="stop"))
    with pytest.raises(ProviderRequestError, match="sent no usage"):
        run(lambda r: httpx.Response(200, content=stream))


# -- the inspector ----------------------------------------------------------------------


def inspector(handler: Callable[[httpx.Request], httpx.Response]) -> EngineInspector:
    return EngineInspector(
        URL, "smollm2", http=httpx.Client(transport=httpx.MockTransport(handler))
    )


def test_inspector_tokenize_and_metrics() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tokenize":
            assert json.loads(request.content)["add_generation_prompt"] is True
            return httpx.Response(200, json={"tokens": [1, 2, 3], "count": 3})
        if request.url.path == "/metrics":
            return httpx.Response(
                200,
                text='vllm:cache_config_info{block_size="16",enable_prefix_caching="True"} 1.0\n'
                'vllm:prefix_cache_queries_total{engine="0"} 10.0\n',
            )
        return httpx.Response(200, json={"version": "0.32.0"})

    with inspector(handler) as ins:
        assert ins.tokenize_messages(MESSAGES) == [1, 2, 3]
        stats = ins.cache_stats()
    assert (stats.block_size, stats.queries, stats.version) == (16, 10.0, "0.32.0")


def test_inspector_timeouts_and_refusals_are_typed() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ProviderTimeoutError, match="did not answer within"):
        inspector(slow).cache_stats()
    with pytest.raises(ProviderUnavailableError, match="Cannot reach"):
        inspector(refused).tokenize_messages(MESSAGES)


def test_inspector_rejects_answers_that_are_not_vllms() -> None:
    html = inspector(lambda r: httpx.Response(200, text="<html>router</html>"))
    with pytest.raises(ProviderRequestError, match="did not answer JSON"):
        html.tokenize_messages(MESSAGES)
    with pytest.raises(ProviderRequestError, match="HTTP 404"):
        inspector(lambda r: httpx.Response(404, text="no")).cache_stats()
