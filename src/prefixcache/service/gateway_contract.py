"""What the gateway forwards: an allowlist of request fields, each with its type and its
limits, and the settings (``service.gateway``) that widen it.

vLLM's chat endpoint accepts far more than a tenant should be able to ask of a shared
engine: ``n`` and ``ignore_eos`` with a huge ``max_tokens`` hold the engine for minutes,
``priority`` jumps the queue, ``chat_template``/``vllm_xargs``/``kv_transfer_params``
reach into the server, media URLs make the engine fetch from the network. The gateway
forwards only the fields below, checked strictly (``"stream": "yes"`` is not ``true``,
``NaN`` is not a temperature); anything else answers 422 naming the field and, where one
exists, the setting that would allow it. ``docs/service.md`` has the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from ..settings import GatewaySettings
from .errors import Unprocessable

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
MEDIA_PARTS = frozenset({"image_url", "input_audio", "audio_url", "video_url", "file"})
#: JSON nested deeper than this is refused before anything reads it
MAX_DEPTH = 64
MAX_MESSAGES = 4096
MAX_TOOLS = 128
MAX_STOP = 16

#: fields vLLM accepts that the gateway never forwards, with the reason
NEVER = {
    "cache_salt": "the service sets the tenant's cache salt; a caller cannot choose it",
    "priority": "it would let one caller jump the engine's queue",
    "prompt_logprobs": "it makes the engine compute logprobs over the whole prompt",
    "chat_template": "the server's chat template is fixed",
    "chat_template_kwargs": "the server's chat template is fixed",
    "vllm_xargs": "it passes arbitrary arguments to the engine",
    "kv_transfer_params": "it reaches into the engine's KV transfer",
    "mm_processor_kwargs": "it reaches into the engine's media processing",
    "request_id": "the service names its own requests",
    "echo": "the prompt is the caller's own",
    "add_generation_prompt": "the server's chat template is fixed",
    "continue_final_message": "the server's chat template is fixed",
    "documents": "the server's chat template is fixed",
    "use_beam_search": "beam search multiplies the engine's work",
    "logits_processors": "it runs code in the engine",
}
STRUCTURED = frozenset(
    {
        "structured_outputs",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "guided_decoding_backend",
        "guided_whitespace_pattern",
    }
)


def _where(field: str) -> str:
    return f"'{field}'"


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise Unprocessable(f"{_where(field)} must be true or false (got {_show(value)}).")
    return value


def _number(field: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unprocessable(f"{_where(field)} must be a finite number (got {_show(value)}).")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise Unprocessable(f"{_where(field)} must be in {bracket}{low}, {high}] (got {value}).")
    return float(value)


def _int(field: str, value: Any, low: int, high: int, setting: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unprocessable(f"{_where(field)} must be an integer (got {_show(value)}).")
    if value < low or value > high:
        hint = f" ({setting})" if setting else ""
        raise Unprocessable(f"{_where(field)} must be {low}..{high}{hint}; got {value}.")
    return value


def _string(field: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise Unprocessable(f"{_where(field)} must be a string (got {_show(value)}).")
    if len(value) > limit:
        raise Unprocessable(f"{_where(field)} is over {limit} characters.")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_json(raw: bytes) -> Any:
    """The body as JSON: 422 for bad JSON, ``NaN``/``Infinity``, nesting deeper than
    ``MAX_DEPTH``, or text that is not valid Unicode (a lone surrogate escape)."""

    def constant(name: str) -> Any:
        raise Unprocessable(f"The request body has {name}, which JSON does not allow.")

    try:
        data = json.loads(raw, parse_constant=constant)
    except RecursionError:
        raise Unprocessable(f"The request body nests JSON over {MAX_DEPTH} deep.") from None
    except UnicodeDecodeError:
        raise Unprocessable("The request body is not UTF-8.") from None
    except ValueError as exc:
        if isinstance(exc, Unprocessable):
            raise
        raise Unprocessable(f"The request body is not JSON: {exc}.") from None
    if _deeper_than(data, MAX_DEPTH):
        raise Unprocessable(f"The request body nests JSON over {MAX_DEPTH} deep.")
    # raw UTF-8 cannot hold a surrogate: only a \uD800-\uDFFF escape can make one
    if b"\\ud" in raw or b"\\uD" in raw:
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Unprocessable(
                "The request body has a lone surrogate escape (\\ud800-\\udfff without its "
                "pair): send valid Unicode text."
            ) from None
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether ``data`` nests lists/objects deeper than ``limit`` (iterative)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class GatewayContract:
    """Checks a gateway request against the allowlist; returns the body to forward."""

    def __init__(self, settings: GatewaySettings, served_model: str, max_model_len: int) -> None:
        self.settings = settings
        self.models = {served_model, *settings.models}
        self.served_model = served_model
        self.max_tokens = min(settings.max_tokens or max_model_len, max_model_len)
        s = settings
        self.fields: dict[str, Callable[[str, Any], Any]] = {
            "model": self._model,
            "messages": self._messages,
            "stream": _bool,
            "stream_options": self._stream_options,
            "max_tokens": self._max_tokens,
            "max_completion_tokens": self._max_tokens,
            "min_tokens": lambda f, v: _int(f, v, 0, self.max_tokens),
            "n": lambda f, v: _int(f, v, 1, s.max_n, "service.gateway.max_n"),
            "temperature": lambda f, v: _number(f, v, 0, 2),
            "top_p": lambda f, v: _number(f, v, 0, 1, low_open=True),
            "top_k": lambda f, v: _int(f, v, -1, 100_000),
            "min_p": lambda f, v: _number(f, v, 0, 1),
            "frequency_penalty": lambda f, v: _number(f, v, -2, 2),
            "presence_penalty": lambda f, v: _number(f, v, -2, 2),
            "repetition_penalty": lambda f, v: _number(f, v, 0, 2, low_open=True),
            "seed": lambda f, v: _int(f, v, -(2**63), 2**63 - 1),
            "stop": self._stop,
            "stop_token_ids": self._stop_token_ids,
            "include_stop_str_in_output": _bool,
            "skip_special_tokens": _bool,
            "spaces_between_special_tokens": _bool,
            "logprobs": _bool,
            "top_logprobs": lambda f, v: _int(
                f, v, 0, s.max_top_logprobs, "service.gateway.max_top_logprobs"
            ),
            "ignore_eos": self._ignore_eos,
            "logit_bias": self._logit_bias,
            "response_format": self._response_format,
            "tools": self._tools,
            "tool_choice": self._tool_choice,
            "parallel_tool_calls": _bool,
            "user": lambda f, v: _string(f, v, 256),
        }
        for name in STRUCTURED:
            self.fields[name] = self._structured

    # -- the whole body -----------------------------------------------------------------
    def check(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Unprocessable("The request body must be a JSON object.")
        if "messages" not in body:
            raise Unprocessable("'messages' is required: a non-empty list of chat messages.")
        out: dict[str, Any] = {}
        for name, value in body.items():
            check = self.fields.get(name)
            if check is None:
                raise Unprocessable(self._refusal(name))
            if value is None and name not in ("messages", "model"):
                continue  # an explicit null is the default (the SDKs send some)
            check(name, value)
            out[name] = value
        out.setdefault("model", self.served_model)
        return out

    @staticmethod
    def _refusal(name: str) -> str:
        reason = NEVER.get(name)
        if reason is not None:
            return f"'{name}' is not accepted by the gateway: {reason}."
        return (
            f"'{name}' is not a field the gateway forwards (OpenAI's chat fields and vLLM's "
            "safe sampling extras only; the table is in docs/service.md, 'Gateway contract')."
        )

    # -- fields -------------------------------------------------------------------------
    def _model(self, field: str, value: Any) -> None:
        if not isinstance(value, str) or value not in self.models:
            served = ", ".join(sorted(self.models))
            raise Unprocessable(
                f"'model' {_show(value)} is not served here; use one of: {served} "
                "(GET /v1/models; more with service.gateway.models)."
            )

    def _max_tokens(self, field: str, value: Any) -> None:
        _int(field, value, 1, self.max_tokens, "service.gateway.max_tokens")

    def _ignore_eos(self, field: str, value: Any) -> None:
        if _bool(field, value) and not self.settings.allow_ignore_eos:
            raise Unprocessable(
                "'ignore_eos' is off for this service (set service.gateway.allow_ignore_eos)."
            )

    def _logit_bias(self, field: str, value: Any) -> None:
        if not self.settings.allow_logit_bias:
            raise Unprocessable(
                "'logit_bias' is off for this service (set service.gateway.allow_logit_bias)."
            )
        if not isinstance(value, dict) or len(value) > 300:
            raise Unprocessable("'logit_bias' must be an object of at most 300 token ids.")
        for token, bias in value.items():
            if not str(token).isdigit():
                raise Unprocessable(f"'logit_bias' key {_show(token)} is not a token id.")
            _number(f"logit_bias.{token}", bias, -100, 100)

    def _structured(self, field: str, value: Any) -> None:
        if not self.settings.allow_structured_output:
            raise Unprocessable(
                f"'{field}' (structured output) is off for this service (set "
                "service.gateway.allow_structured_output)."
            )

    def _response_format(self, field: str, value: Any) -> None:
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise Unprocessable("'response_format' must be an object with a 'type'.")
        kind = value["type"]
        if kind == "text":
            return
        if kind not in ("json_object", "json_schema", "structural_tag"):
            raise Unprocessable(f"'response_format.type' {_show(kind)} is not known.")
        self._structured(f"response_format.type={kind}", value)

    def _stream_options(self, field: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise Unprocessable(
                f"'stream_options' must be an object like {{\"include_usage\": true}} "
                f"(got {_show(value)})."
            )
        for key, option in value.items():
            if key not in ("include_usage", "continuous_usage_stats"):
                raise Unprocessable(f"'stream_options.{key}' is not a known stream option.")
            if option is not None:
                _bool(f"stream_options.{key}", option)

    def _stop(self, field: str, value: Any) -> None:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or len(items) > MAX_STOP:
            raise Unprocessable(f"'stop' must be a string or a list of at most {MAX_STOP}.")
        for i, item in enumerate(items):
            _string(f"stop[{i}]", item, 1000)

    def _stop_token_ids(self, field: str, value: Any) -> None:
        if not isinstance(value, list) or len(value) > 64:
            raise Unprocessable("'stop_token_ids' must be a list of at most 64 token ids.")
        for i, item in enumerate(value):
            _int(f"stop_token_ids[{i}]", item, 0, 2**31 - 1)

    def _tools(self, field: str, value: Any) -> None:
        if not isinstance(value, list) or len(value) > MAX_TOOLS:
            raise Unprocessable(f"'tools' must be a list of at most {MAX_TOOLS} tools.")
        for i, tool in enumerate(value):
            function = tool.get("function") if isinstance(tool, dict) else None
            if (
                not isinstance(tool, dict)
                or tool.get("type") != "function"
                or not isinstance(function, dict)
                or not isinstance(function.get("name"), str)
            ):
                raise Unprocessable(
                    f'\'tools[{i}]\' must be {{"type": "function", "function": '
                    '{"name": ..., "parameters": {...}}}.'
                )

    def _tool_choice(self, field: str, value: Any) -> None:
        if value in ("none", "auto", "required"):
            return
        function = value.get("function") if isinstance(value, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise Unprocessable(
                "'tool_choice' must be 'none', 'auto', 'required' or "
                '{"type": "function", "function": {"name": ...}}.'
            )

    def _messages(self, field: str, value: Any) -> None:
        if not isinstance(value, list) or not value:
            raise Unprocessable("'messages' must be a non-empty list of chat messages.")
        if len(value) > MAX_MESSAGES:
            raise Unprocessable(
                f"'messages' has {len(value)} messages; the limit is {MAX_MESSAGES}."
            )
        for i, message in enumerate(value):
            self._message(f"messages[{i}]", message)

    def _message(self, where: str, message: Any) -> None:
        if not isinstance(message, dict):
            raise Unprocessable(f"'{where}' must be an object with 'role' and 'content'.")
        role = message.get("role")
        if role not in ROLES:
            raise Unprocessable(
                f"'{where}.role' is {_show(role)}; it must be one of: {', '.join(sorted(ROLES))}."
            )
        for key in message:
            if key not in MESSAGE_KEYS:
                raise Unprocessable(
                    f"'{where}.{key}' is not a message field the gateway forwards "
                    f"({', '.join(sorted(MESSAGE_KEYS))})."
                )
        content = message.get("content")
        if content is None:
            if role != "assistant":
                raise Unprocessable(f"'{where}.content' is required for a {role} message.")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                self._part(f"{where}.content[{j}]", part)
        elif not isinstance(content, str):
            raise Unprocessable(f"'{where}.content' must be a string or a list of parts.")
        if "name" in message:
            _string(f"{where}.name", message["name"], 256)
        if "tool_call_id" in message:
            _string(f"{where}.tool_call_id", message["tool_call_id"], 256)
        if "tool_calls" in message and not isinstance(message["tool_calls"], list):
            raise Unprocessable(f"'{where}.tool_calls' must be a list.")

    def _part(self, where: str, part: Any) -> None:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            _string(f"{where}.text", part.get("text"), 10_000_000)
            return
        if kind in MEDIA_PARTS:
            if not self.settings.allow_media:
                raise Unprocessable(
                    f"'{where}' is an {kind} part; media inputs are off for this service "
                    "(set service.gateway.allow_media)."
                )
            return
        raise Unprocessable(f"'{where}' must be a part with type 'text' (got {_show(kind)}).")


def header_value(name: str, value: str | None, pattern: Any) -> str | None:
    """A routing or label header checked against ``pattern`` (422 otherwise)."""
    if value is None:
        return None
    if not pattern.match(value):
        raise Unprocessable(
            f"The {name} header {value!r} must be 1-64 ASCII letters, digits, '_', '.' or "
            "'-', starting with a letter or digit."
        )
    return value
