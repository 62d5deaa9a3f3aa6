"""A streaming response that always cleans up.

Starlette runs a streaming body's ``finally`` only once the generator has started: a
client that goes away before the first byte (the response start fails to send) leaves
an unstarted generator that is simply dropped. Work held for the stream (an engine slot,
a pending turn, the upstream connection) is then released by ``on_close``, which runs
however the response ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class GuardedStreamingResponse(StreamingResponse):
    def __init__(
        self, content: Any, *, on_close: Callable[[], Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.on_close()
