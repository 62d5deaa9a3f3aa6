"""Bad bytes from a server and bad requests from a caller: typed errors, never a raw
``JSONDecodeError`` / ``AttributeError`` / ``TypeError`` and never a hang."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from prefixcache import (
    ClientSettings,
    LLMInterface,
    ProviderRequestError,
    ProviderTimeoutError,
    RetryPolicy,
)
from prefixcache.errors import InvalidRequestError, InvalidRequestTypeError, ProviderProtocolError

URL = "http://vllm.test:8000"
MESSAGES = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 0}}


def sse(*lines: str) -> bytes:
    return "".join(f"data: {line}\n\n" for line in lines).encode()


def good_chunk(**usage: Any) -> str:
    return json.dumps({"id": "c", "choices": [], "usage": {**USAGE, **usage}})


def ask(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            llm = LLMInterface(ClientSettings(base_url=URL), http=http, retry=RetryPolicy(0, 0))
            return await llm.chat_completion(kwargs.pop("messages", MESSAGES), **kwargs)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (sse("{not json"), "not JSON"),
        (sse("[1, 2]"), "a chunk of the wrong shape"),
        (sse('{"choices": {"a": 1}}'), "choices of the wrong shape"),
        (sse('{"choices": ["x"]}'), "a choice of the wrong shape"),
        (sse('{"choices": [{"delta": "x"}]}'), "a delta of the wrong shape"),
        (sse('{"choices": [{"delta": {"content": 5}}]}'), "delta.content of the wrong shape"),
        (sse('{"usage": "lots"}'), "usage of the wrong shape"),
        (sse(good_chunk(prompt_tokens=None)), "usage.prompt_tokens=None"),
        (sse(good_chunk(prompt_tokens="ten")), "usage.prompt_tokens='ten'"),
        (sse(good_chunk(prompt_tokens=-3)), "negative usage.prompt_tokens"),
        (sse(good_chunk(prompt_tokens=1.5)), "usage.prompt_tokens=1.5"),
        (
            sse(good_chunk(prompt_tokens_details={"cached_tokens": "x"})),
            "usage.cached_tokens='x'",
        ),
        (
            sse(good_chunk(prompt_tokens_details={"cached_tokens": 64})),
            "reported 64 cached tokens for a prompt of 10",
        ),
        (sse('{"error": {"message": "engine died"}}'), "failed mid-stream: engine died"),
    ],
)
def test_malformed_streams_are_protocol_errors(body: bytes, fragment: str) -> None:
    with pytest.raises(ProviderRequestError) as info:
        ask(lambda r: httpx.Response(200, content=body))
    assert fragment in str(info.value) and URL in str(info.value)


def test_wrong_shapes_are_protocol_errors_specifically() -> None:
    with pytest.raises(ProviderProtocolError):
        ask(lambda r: httpx.Response(200, content=sse("{not json")))


def test_a_redirect_is_named_as_a_redirect() -> None:
    redirect = httpx.Response(307, headers={"location": "https://elsewhere.test/v1/chat"})
    with pytest.raises(
        ProviderRequestError,
        match=r"redirected the request \(HTTP 307\) to https://elsewhere\.test",
    ):
        ask(lambda r: redirect)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"temperature": float("nan")}, InvalidRequestError, "temperature"),
        ({"temperature": "hot"}, InvalidRequestTypeError, "temperature"),
        ({"max_tokens": 0}, InvalidRequestError, "max_tokens"),
        ({"max_tokens": True}, InvalidRequestTypeError, "max_tokens"),
        ({"messages": "hello"}, InvalidRequestTypeError, "messages must be a list"),
        ({"messages": []}, InvalidRequestError, "messages is empty"),
        ({"messages": ["hi"]}, InvalidRequestTypeError, "messages[0]"),
        ({"messages": [{"content": "x"}]}, InvalidRequestError, "messages[0] needs a 'role'"),
        ({"messages": [{"role": "user", "content": 5}]}, InvalidRequestTypeError, "content"),
        ({"messages": [{"role": "user", "content": "a\ud800b"}]}, InvalidRequestError, "surrogate"),
        ({"cache_salt": ""}, InvalidRequestError, "cache_salt"),
        ({"top_p": float("inf")}, InvalidRequestError, "'top_p'"),
        ({"logit_bias": {1: object()}}, InvalidRequestError, "'logit_bias'"),
    ],
)
def test_invalid_requests_fail_before_sending(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    with pytest.raises(error) as info:
        ask(handler, **kwargs)
    assert fragment in str(info.value)
    assert sent == []  # nothing reached the server


# -- a misbehaving server on loopback (a stand-in: real sockets, scripted answers) -------


class MisbehavingServerStandIn:
    """A stand-in HTTP server on 127.0.0.1 that answers every request with a scripted
    behaviour: ``keepalive`` sends headers then only SSE comments, forever (until the
    test ends); ``trickle`` sends one valid byte at a time, slowly."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1)
            try:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                payload = b": keep-alive\n\n" if self.behaviour == "keepalive" else b"d"
                deadline = time.monotonic() + 30  # bounded: never more than 30 s
                while not self.stop.is_set() and time.monotonic() < deadline:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
                    time.sleep(0.2)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(params=["keepalive", "trickle"])
def misbehaving(request: pytest.FixtureRequest) -> Iterator[str]:
    server = MisbehavingServerStandIn(request.param)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()


def test_a_total_deadline_ends_a_stream_that_never_finishes(misbehaving: str) -> None:
    """Each read gets bytes in time, so a per-read timeout never fires; the total
    deadline (request_timeout_s) does."""

    async def go() -> None:
        cfg = ClientSettings(base_url=misbehaving, request_timeout_s=1.5, max_retries=0)
        async with LLMInterface(cfg) as llm:
            await llm.chat_completion(MESSAGES, max_tokens=1)

    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match=r"within 1\.5 s"):
        asyncio.run(go())
    assert time.monotonic() - started < 10
