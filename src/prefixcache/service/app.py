"""``create_app(settings)``: the FastAPI application, its middleware and error handlers.

Every fault the service knows answers with its own status and a message naming the
problem and the fix (``errors.to_http``); anything else answers 500 with a request id,
and the same id is in the log with the traceback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._version import __version__
from ..errors import PrefixCacheError
from ..settings import Settings
from .dashboard import router as dashboard_router
from .errors import to_http
from .migrate import upgrade_database
from .routes import router
from .state import ServiceState, build_state

logger = logging.getLogger("prefixcache.service")


def _error(
    status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "request_id": request_id}},
        status_code=status,
        headers={**(headers or {}), "X-Request-Id": request_id},
    )


class RequestId:
    """Every request gets an id (the caller's ``X-Request-Id``, or a new one), kept in
    ``request.state.request_id`` and sent back as ``X-Request-Id``. Plain ASGI: Starlette's
    ``@app.middleware("http")`` costs about a millisecond per request on this machine."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers") or [] if k == b"x-request-id"), None)
        rid = given.decode("latin-1")[:128] if given else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimit:
    """413 for a body over ``limit`` bytes, whether it declares its length or streams
    (chunked). The body is read up to the limit before the app sees it, so no route ever
    meets a half-read body."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body was complete
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        response = _error(
            413,
            "payload_too_large",
            f"The request body is over {self.limit} bytes (service.max_body_bytes).",
            uuid.uuid4().hex[:16],
        )
        await response({"type": "http", **scope}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def create_app(
    settings: Settings, state: ServiceState | None = None, *, migrate: bool = True
) -> FastAPI:
    """The service for these settings (the state is built at startup unless given; the
    schema is upgraded at startup unless ``migrate`` is off because the caller did it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            upgrade_database(settings.service.resolved_database_url())
        service = state or build_state(settings)
        await service.llm.__aenter__()
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="prefixcache",
        version=__version__,
        description="Cache-stable agent prompts on vLLM: the guide's chat and task endpoints, "
        "an OpenAI-compatible gateway, per-tenant cache isolation, measured cache figures.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(dashboard_router)

    @app.exception_handler(PrefixCacheError)
    async def known(request: Request, exc: PrefixCacheError) -> JSONResponse:
        status, code, headers = to_http(exc)
        rid = getattr(request.state, "request_id", uuid.uuid4().hex[:16])
        if status >= 500:
            logger.error("request %s: %s: %s", rid, code, exc)
        return _error(status, code, str(exc), rid, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own errors (404 path, 405 method, an unreadable body) in the
        service's one error shape."""
        rid = getattr(request.state, "request_id", uuid.uuid4().hex[:16])
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"No route {request.method} {request.url.path}; see /docs."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs."
        elif exc.status_code == 400:
            message = f"The request body could not be read as JSON ({exc.detail})."
        return _error(exc.status_code, code, message, rid, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        rid = getattr(request.state, "request_id", uuid.uuid4().hex[:16])
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, "invalid_request", f"Invalid request: {problems}", rid)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", uuid.uuid4().hex[:16])
        logger.exception("request %s failed unexpectedly", rid)
        return _error(
            500,
            "internal_error",
            f"An unexpected error; it is in the service log under request id {rid}.",
            rid,
        )

    app.add_middleware(RequestId)
    app.add_middleware(BodyLimit, limit=settings.service.max_body_bytes)
    return app
