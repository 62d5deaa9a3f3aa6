"""The dynamic inputs of a prompt: which types are accepted, and how each renders.

Every accepted value renders to the same text in every process (no ``repr``, no memory
addresses, no iteration order of a ``set`` that depends on ``PYTHONHASHSEED``); anything
else is rejected with ``PromptInputError`` (a ``TypeError`` for a wrong type, a
``ValueError`` for a wrong value) that names the parameter.

=====================  ==================================================================
parameter              accepted
=====================  ==================================================================
``session_id``,        ``str``, ``int`` (not ``bool``), ``uuid.UUID``, or ``None`` (left
``user_name``,         out). Line breaks become spaces: a value cannot start a line of its
``user_role``          own.
``available_tools``    one ``str``, or a list / tuple / set / frozenset / other iterable of
                       ``str`` (``None`` items are dropped). De-duplicated and sorted.
                       ``bytes`` are rejected (they would iterate as numbers).
``recent_context``     a ``str``; one message (a mapping with ``content`` and optional
                       ``role`` / ``name``); or a list / tuple of strings and messages.
                       ``content`` may be a string or a list of OpenAI content parts (their
                       ``text`` joined). Every line is fenced with ``> ``.
``additional_params``  a mapping with ``str`` keys. Values: JSON-like data (``str``,
                       ``int``, finite ``float``, ``bool``, lists, tuples, mappings with
                       ``str`` keys), ``set`` / ``frozenset`` (sorted), ``datetime`` /
                       ``date`` / ``time`` (ISO 8601), ``Decimal``, ``UUID``, ``Enum`` (its
                       value), ``pathlib`` paths. ``None`` values are left out. Nested
                       containers render as canonical JSON (sorted keys), at most 32 levels
                       deep and without cycles. Sorted by key.
=====================  ==================================================================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Literal

from ..errors import PromptInputError, PromptInputTypeError

#: Multi-line dynamic text (recent context) is fenced: each line gets this prefix, so no
#: dynamic line can start like one of the suffix's own labels or headers.
QUOTE_PREFIX = "> "
MAX_DEPTH = 32

#: Every character ``str.splitlines`` treats as a line boundary.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")

RecentContext = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]
ClockGranularity = Literal["date", "hour", "minute", "second"]
_CLOCK_FORMATS: dict[str, str] = {
    "date": "%Y-%m-%d",
    "hour": "%Y-%m-%d %H:00 UTC",
    "minute": "%Y-%m-%d %H:%M UTC",
    "second": "%Y-%m-%d %H:%M:%S UTC",
}


@dataclasses.dataclass(frozen=True, slots=True)
class PromptInputs:
    """The dynamic inputs of one prompt, as the caller gave them (checked when rendered).

    Every composer, the guide's reference layout and the benchmark's steps take one of
    these; the guide's keyword functions (``get_optimized_prompt`` ...) build it from
    their arguments. The field names are the guide's keyword names; the table at the top
    of this module says which values each accepts. ``clock`` adds the date (and time, to
    the granularity asked for) taken from ``now`` or, without it, the current time.
    """

    session_id: str | int | uuid.UUID | None = None
    user_name: str | None = None
    user_role: str | None = None
    available_tools: Iterable[str] | None = None
    recent_context: RecentContext | None = None
    additional_params: Mapping[str, Any] | None = None
    clock: ClockGranularity | None = None
    now: dt.datetime | None = None

    def replace(self, **changes: Any) -> PromptInputs:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: A prompt without dynamic inputs (the static prefix and the fixed suffix header).
NO_INPUTS = PromptInputs()


def format_clock(granularity: object, now: dt.datetime | None = None) -> str:
    """The date (and time) line's text at ``granularity``, always in UTC."""
    if not isinstance(granularity, str) or granularity not in _CLOCK_FORMATS:
        raise PromptInputError(
            f"clock must be one of {', '.join(_CLOCK_FORMATS)} (or None), got {granularity!r}"
        )
    if now is not None and not isinstance(now, dt.datetime):
        raise PromptInputTypeError(f"now must be a datetime, got {type(now).__name__}")
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.strftime(_CLOCK_FORMATS[granularity])


def _type_name(value: object) -> str:
    return type(value).__name__


def _flat(text: str) -> str:
    # the common case (no control or line-break character at all) skips the regex
    if text.isprintable():
        return text.strip()
    return _LINE_BREAKS.sub(" ", text).strip()


def one_line(value: object, parameter: str = "value") -> str:
    """A single-line field (str, int or UUID): line breaks become spaces."""
    if isinstance(value, str):
        return _flat(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise PromptInputTypeError(
        f"{parameter} must be a str (or an int or UUID), got {_type_name(value)}: "
        f"{_preview(value)}. Convert it to the text the prompt should show."
    )


def normalize_tools(tools: object, parameter: str = "available_tools") -> list[str]:
    """De-duplicated, sorted, single-line tool names; empty names and ``None`` dropped."""
    if tools is None:
        return []
    if isinstance(tools, str):
        items: Iterable[object] = [tools]
    elif isinstance(tools, bytes | bytearray | memoryview):
        raise PromptInputTypeError(
            f"{parameter} must be a list of tool names (str), got {_type_name(tools)}. "
            f"Decode it first: {parameter}=[{bytes(tools).decode(errors='replace')!r}]."
        )
    elif isinstance(tools, Mapping):
        raise PromptInputTypeError(
            f"{parameter} must be a list of tool names (str), got a mapping. Pass "
            f"list(...) of the names you mean."
        )
    elif isinstance(tools, Iterable):
        items = tools
    else:
        raise PromptInputTypeError(
            f"{parameter} must be a list of tool names (str), got {_type_name(tools)}."
        )
    names: set[str] = set()
    for i, item in enumerate(items):
        if item is None:
            continue
        if not isinstance(item, str):
            raise PromptInputTypeError(
                f"{parameter}[{i}] must be a str (a tool name), got {_type_name(item)}: "
                f"{_preview(item)}."
            )
        name = _flat(item)
        if name:
            names.add(name)
    return sorted(names)


def normalize_params(params: object, parameter: str = "additional_params") -> list[tuple[str, str]]:
    """Sorted ``(key, value)`` pairs; ``None`` values omitted; every value one line."""
    if params is None:
        return []
    if not isinstance(params, Mapping):
        raise PromptInputTypeError(
            f"{parameter} must be a mapping of str keys to values, got {_type_name(params)}."
        )
    pairs: dict[str, str] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise PromptInputTypeError(
                f"{parameter} keys must be str, got {_type_name(key)} key {key!r}. Use "
                f"str({key!r}) if that is the name you mean."
            )
        if value is None:
            continue
        name = _flat(key)
        if not name:
            continue
        if name in pairs:
            raise PromptInputError(
                f"{parameter} keys {key!r} and another key both render as {name!r} (line "
                "breaks become spaces); rename one."
            )
        pairs[name] = _flat(render_value(value, f"{parameter}[{key!r}]"))
    return sorted(pairs.items())


def render_value(value: object, where: str) -> str:
    """One parameter value as text: scalars as themselves, containers as canonical JSON."""
    if isinstance(value, str):
        return value
    if type(value) is int:  # not bool: JSON spells those true/false
        return str(value)
    plain = _plain(value, where, 0, set())
    if isinstance(plain, str):
        return plain
    return json.dumps(plain, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _plain(value: object, where: str, depth: int, active: set[int]) -> Any:
    """``value`` as plain JSON data (str, int, float, bool, None, list, dict)."""
    if depth > MAX_DEPTH:
        raise PromptInputError(
            f"{where} is nested more than {MAX_DEPTH} levels deep; flatten it or pass a summary."
        )
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PromptInputError(f"{where} is {value!r}; only finite numbers are accepted.")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise PromptInputError(f"{where} is {value!r}; only finite numbers are accepted.")
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, where, depth + 1, active)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | PurePath):
        return str(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        marker = id(value)
        if marker in active:
            raise PromptInputError(f"{where} contains itself (a cycle); it cannot be rendered.")
        active.add(marker)
        try:
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise PromptInputTypeError(
                            f"{where} has a {_type_name(key)} key {key!r}; keys must be str."
                        )
                    out[key] = _plain(item, f"{where}[{key!r}]", depth + 1, active)
                return out
            items = [
                _plain(item, f"{where}[{i}]", depth + 1, active) for i, item in enumerate(value)
            ]
            if isinstance(value, set | frozenset):
                # canonical order, independent of PYTHONHASHSEED
                items.sort(key=lambda x: json.dumps(x, sort_keys=True, ensure_ascii=False))
            return items
        finally:
            active.discard(marker)
    raise PromptInputTypeError(
        f"{where} is a {_type_name(value)}, which has no stable text form (its str() may hold "
        "a memory address). Pass str, numbers, bools, lists, dicts, sets, dates or UUIDs."
    )


def fence(text: str) -> str:
    """Quote every line of multi-line dynamic text (see ``QUOTE_PREFIX``)."""
    return "\n".join(QUOTE_PREFIX + line for line in text.splitlines())


def normalize_recent_context(context: object, parameter: str = "recent_context") -> str:
    if context is None:
        return ""
    if isinstance(context, str):
        text = context
    elif isinstance(context, Mapping):
        text = _message_line(context, parameter)
    elif isinstance(context, bytes | bytearray | memoryview):
        raise PromptInputTypeError(
            f"{parameter} must be text, a message or a list of them, got {_type_name(context)}; "
            "decode it first."
        )
    elif isinstance(context, Sequence):
        lines = []
        for i, item in enumerate(context):
            where = f"{parameter}[{i}]"
            if item is None:
                continue
            if isinstance(item, str):
                lines.append(item)
            elif isinstance(item, Mapping):
                lines.append(_message_line(item, where))
            else:
                raise PromptInputTypeError(
                    f"{where} must be a str or a message mapping, got {_type_name(item)}: "
                    f"{_preview(item)}."
                )
        text = "\n".join(lines)
    else:
        raise PromptInputTypeError(
            f"{parameter} must be a str, a message mapping or a list of them, got "
            f"{_type_name(context)}."
        )
    text = text.strip("\r\n")
    return fence(text) if text.strip() else ""


def _message_line(message: Mapping[Any, Any], where: str) -> str:
    if "content" not in message:
        raise PromptInputError(
            f"{where} is a mapping without 'content'; a message looks like "
            "{'role': 'user', 'content': '...'}."
        )
    content = message["content"]
    if isinstance(content, str):
        text = content
    elif content is None:
        text = ""
    elif isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, Mapping):
                parts.append(
                    f"[{one_line(part.get('type', 'part'), f'{where}.content[{j}].type')}]"
                )
            else:
                raise PromptInputTypeError(
                    f"{where}.content[{j}] must be a str or a content part, got {_type_name(part)}."
                )
        text = " ".join(parts)
    else:
        raise PromptInputTypeError(
            f"{where}.content must be a str or a list of content parts, got {_type_name(content)}."
        )
    role = message.get("role")
    if role is None:
        return text
    return f"{one_line(role, f'{where}.role')}: {text}"


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
