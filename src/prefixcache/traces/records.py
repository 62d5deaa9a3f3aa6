"""Request traces: chat requests as an OpenAI-compatible server receives them, one JSON
object per line (JSONL), with what the server answered about its cache.

The format ``prefixcache explain`` and ``prefixcache simulate`` read, and that the
benchmark (``trace.jsonl`` in its run folder) and the service (``prefixcache service
trace``) write. A line is either the request body itself or an object with the body
under ``body`` (the OpenAI batch format) or ``request``::

    {"messages": [...], "model": "m", "cache_salt": "t1", "agent": "code-reviewer",
     "session": "s-1", "time": 1764260000.1,
     "usage": {"prompt_tokens": 4120, "prompt_tokens_details": {"cached_tokens": 3968},
               "completion_tokens": 32},
     "ttft": 0.21}

Only ``messages`` is required. ``agent`` may also be given as ``metadata.agent`` or
``user``; ``usage`` may also sit under ``response.usage``.
"""

from __future__ import annotations

import json
import math
import time as clock
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import PrefixCacheError
from ..llm.models import LLMResponse, Message


class TraceError(PrefixCacheError, ValueError):
    """A trace file that cannot be read: names the file, the line and what is wrong."""


@dataclass(frozen=True)
class TraceRecord:
    """One chat request of a trace, and (when the trace has them) its measured figures."""

    messages: tuple[Message, ...]
    model: str | None = None
    cache_salt: str | None = None
    agent: str | None = None
    session: str | None = None
    time: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    ttft: float | None = None
    #: the prompt's token ids, when the trace carries them (no tokenizer needed then)
    prompt_token_ids: tuple[int, ...] | None = None
    #: free-form labels (the benchmark writes scenario, arm, pass); ``--label k=v`` filters
    labels: Mapping[str, str] | None = None
    #: 1-based line in the trace file (0: built in memory)
    line: int = 0

    @classmethod
    def from_response(
        cls,
        messages: Sequence[Message],
        response: LLMResponse,
        *,
        cache_salt: str | None,
        agent: str | None,
        session: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> TraceRecord:
        """A request just answered, with the server's figures, stamped now."""
        return cls(
            messages=tuple(messages),
            model=response.served_model,
            cache_salt=cache_salt,
            agent=agent,
            session=session,
            time=clock.time(),
            prompt_tokens=response.prompt_tokens,
            cached_tokens=response.cached_tokens,
            completion_tokens=response.usage["completion_tokens"],
            ttft=response.ttft,
            labels=labels,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"messages": [dict(m) for m in self.messages]}
        for key in ("model", "cache_salt", "agent", "session", "time", "ttft"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.prompt_tokens is not None:
            usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens}
            if self.cached_tokens is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            if self.completion_tokens is not None:
                usage["completion_tokens"] = self.completion_tokens
            data["usage"] = usage
        if self.labels:
            data["labels"] = dict(self.labels)
        if self.prompt_token_ids is not None:
            data["prompt_token_ids"] = list(self.prompt_token_ids)
        return data


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TraceError(f"{where} must be a whole number >= 0 (got {value!r})")
    return value


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise TraceError(f"{where} must be a string (got {type(value).__name__})")
    return value


def parse_record(data: Any, where: str = "trace record", line: int = 0) -> TraceRecord:
    """One trace line's object as a record; a ``TraceError`` naming ``where`` otherwise."""
    if not isinstance(data, Mapping):
        raise TraceError(f"{where}: expected a JSON object, got {type(data).__name__}")
    body: Any = data.get("body", data.get("request", data))
    if not isinstance(body, Mapping):
        raise TraceError(f"{where}: 'body' must be an object (the chat request)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TraceError(
            f"{where}: no 'messages' list; each line must hold a chat request "
            '(e.g. {"messages": [{"role": "system", "content": "..."}]})'
        )
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise TraceError(f"{where}: messages[{i}] is not a message with a 'role'")
    response = data.get("response")
    usage: Any = data.get("usage")
    if usage is None and isinstance(response, Mapping):
        usage = response.get("usage", response.get("body", {}).get("usage"))
    if usage is not None and not isinstance(usage, Mapping):
        raise TraceError(f"{where}: 'usage' must be an object")
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    meta: Any = body.get("metadata")
    metadata: Mapping[str, Any] = meta if isinstance(meta, Mapping) else {}
    agent = data.get("agent", body.get("agent", metadata.get("agent", body.get("user"))))
    ttft = data.get("ttft")
    stamp = data.get("time")
    for name, value in (("ttft", ttft), ("time", stamp)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise TraceError(f"{where}: '{name}' must be a number of seconds (got {value!r})")
    ids = data.get("prompt_token_ids", body.get("prompt_token_ids"))
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(t, int) for t in ids)):
        raise TraceError(f"{where}: 'prompt_token_ids' must be a list of integers")
    labels = data.get("labels")
    if labels is not None and (
        not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values())
    ):
        raise TraceError(f"{where}: 'labels' must be an object of strings")
    record = TraceRecord(
        messages=tuple(messages),
        model=_text(body.get("model"), f"{where}: 'model'"),
        cache_salt=_text(body.get("cache_salt", data.get("cache_salt")), f"{where}: 'cache_salt'"),
        agent=_text(agent, f"{where}: 'agent'"),
        session=_text(data.get("session", body.get("session_id")), f"{where}: 'session'"),
        time=float(stamp) if stamp is not None else None,
        prompt_tokens=_int(usage.get("prompt_tokens"), f"{where}: usage.prompt_tokens"),
        cached_tokens=_int(cached, f"{where}: usage.prompt_tokens_details.cached_tokens"),
        completion_tokens=_int(usage.get("completion_tokens"), f"{where}: usage.completion_tokens"),
        ttft=float(ttft) if ttft is not None else None,
        prompt_token_ids=tuple(ids) if ids is not None else None,
        labels=dict(labels) if labels else None,
        line=line,
    )
    return record


def iter_trace(lines: Iterable[str], name: str = "trace") -> Iterator[TraceRecord]:
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(
                f"{name} line {number}: not JSON ({exc.msg} at column {exc.colno}); "
                "a trace has one JSON object per line"
            ) from None
        yield parse_record(data, f"{name} line {number}", number)


def read_trace(path: str | Path) -> list[TraceRecord]:
    """Every record of a JSONL trace file (``-`` is not accepted: give a file)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            records = list(iter_trace(handle, str(path)))
    except FileNotFoundError:
        raise TraceError(f"{path}: no such trace file") from None
    except IsADirectoryError:
        raise TraceError(f"{path} is a folder; give the trace's .jsonl file") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text (byte {exc.start}); is it a trace?") from None
    if not records:
        raise TraceError(f"{path}: the trace holds no requests")
    return records


def _line(record: TraceRecord) -> str:
    return json.dumps(record.to_json(), ensure_ascii=False) + "\n"


def write_trace(records: Sequence[TraceRecord], out: IO[str]) -> None:
    for record in records:
        out.write(_line(record))


def save_trace(path: str | Path, records: Sequence[TraceRecord]) -> Path:
    """Write ``records`` as a JSONL trace file (its folder created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        write_trace(records, out)
    return path


class TraceWriter:
    """Append records to a JSONL file as they happen (flushed per line, so a stopped run
    keeps what it sent)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = self.path.open("a", encoding="utf-8")

    def write(self, record: TraceRecord) -> None:
        if self._handle is None:
            raise TraceError(f"{self.path}: the trace writer is closed")
        self._handle.write(_line(record))
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
