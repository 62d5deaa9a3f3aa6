"""HTTP errors of the service: every fault it knows has a status and a message that names
the problem and the fix. Only an unexpected error answers 500 (with a request id that is
in the log)."""

from __future__ import annotations

from ..errors import (
    ConfigError,
    InvalidRequestError,
    PrefixCacheError,
    PromptError,
    PromptInputError,
    PromptNotFoundError,
    PromptTooLongError,
    ProviderError,
    ProviderProtocolError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnknownAgentError,
)


class ServiceError(PrefixCacheError):
    """An error with an HTTP status (and headers, e.g. Retry-After)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        self.headers = headers or {}
        super().__init__(message)


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(ServiceError):
    status, code = 422, "unprocessable"


class TooManyRequests(ServiceError):
    status, code = 429, "rate_limited"


class Unavailable(ServiceError):
    status, code = 503, "llm_unavailable"


class GatewayTimeout(ServiceError):
    status, code = 504, "llm_timeout"


RETRY_AFTER_S = 5


def to_http(exc: PrefixCacheError) -> tuple[int, str, dict[str, str]]:
    """(status, code, headers) for a library error."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.code, exc.headers
    if isinstance(exc, PromptTooLongError):
        return 413, "prompt_too_long", {}
    if isinstance(exc, UnknownAgentError | PromptInputError | InvalidRequestError):
        return 422, "invalid_input", {}
    if isinstance(exc, PromptNotFoundError):
        return 422, "unknown_prompt", {}
    if isinstance(exc, ProviderUnavailableError):
        return 503, "llm_unavailable", {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(exc, ProviderTimeoutError):
        return 504, "llm_timeout", {}
    if isinstance(exc, ProviderProtocolError):
        return 502, "llm_bad_answer", {}
    if isinstance(exc, ProviderRequestError):
        status = exc.status or 502
        if status >= 500:  # vLLM failed after retries (restarting, overloaded)
            return 503, "llm_unavailable", {"Retry-After": str(RETRY_AFTER_S)}
        return status, "llm_rejected", {}
    if isinstance(exc, ProviderError):
        return 503, "llm_unavailable", {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(exc, PromptError | ConfigError):
        return 500, "server_misconfigured", {}
    return 500, "internal_error", {}
