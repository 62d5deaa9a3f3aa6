"""The JSONL trace format: what is accepted, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefixcache.traces.records import TraceError, TraceRecord, TraceWriter, read_trace


def _write(path: Path, *lines: object) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_plain_batch_and_response_forms(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    path = _write(
        tmp_path / "t.jsonl",
        {
            "messages": msgs,
            "model": "m",
            "cache_salt": "t1",
            "agent": "a",
            "usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 4}},
        },
        "",
        {
            "custom_id": "x",
            "body": {"messages": msgs, "metadata": {"agent": "b"}},
            "response": {"usage": {"prompt_tokens": 7, "completion_tokens": 2}},
        },
        {"request": {"messages": msgs, "user": "c"}, "labels": {"arm": "naive"}},
    )
    a, b, c = read_trace(path)
    assert (a.agent, a.cache_salt, a.prompt_tokens, a.cached_tokens, a.line) == (
        "a",
        "t1",
        10,
        4,
        1,
    )
    assert (b.agent, b.prompt_tokens, b.cached_tokens, b.completion_tokens, b.line) == (
        "b",
        7,
        None,
        2,
        3,
    )
    assert c.agent == "c" and c.labels == {"arm": "naive"}


def test_round_trip(tmp_path: Path) -> None:
    record = TraceRecord(
        messages=({"role": "system", "content": "s"},),
        model="m",
        cache_salt="x",
        agent="a",
        session="s1",
        time=1.5,
        prompt_tokens=9,
        cached_tokens=0,
        completion_tokens=3,
        ttft=0.2,
        prompt_token_ids=(1, 2, 3),
        labels={"k": "v"},
    )
    with TraceWriter(tmp_path / "out" / "t.jsonl") as writer:
        writer.write(record)
    (back,) = read_trace(tmp_path / "out" / "t.jsonl")
    assert back == TraceRecord(**{**record.__dict__, "line": 1})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: not JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"model": "m"}', "no 'messages' list"),
        ('{"messages": ["hi"]}', "messages[0] is not a message"),
        ('{"messages": [{"role": "user"}], "usage": {"prompt_tokens": -1}}', "whole number"),
        ('{"messages": [{"role": "user"}], "ttft": "fast"}', "'ttft' must be a number"),
        ('{"messages": [{"role": "user"}], "prompt_token_ids": [1, "a"]}', "list of integers"),
        ('{"messages": [{"role": "user"}], "labels": {"a": 1}}', "'labels'"),
    ],
)
def test_bad_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TraceError, match=r"bad\.jsonl") as info:
        read_trace(path)
    assert message in str(info.value)


def test_missing_empty_and_folder(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace file"):
        read_trace(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(TraceError, match="holds no requests"):
        read_trace(tmp_path / "empty.jsonl")
    with pytest.raises(TraceError, match="is a folder"):
        read_trace(tmp_path)
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TraceError, match="not UTF-8"):
        read_trace(tmp_path / "bin.jsonl")
