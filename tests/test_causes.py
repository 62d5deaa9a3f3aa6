"""Cause classification of the first difference between two prompts (text only)."""

from __future__ import annotations

import pytest

from prefixcache.traces.causes import Cause, classify

STATIC = "You are a careful reviewer. Follow the checklist below.\n" * 3


def _offset(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize(
    ("a", "b", "cause"),
    [
        (
            "Now: 2026-11-27T10:00:01\n" + STATIC,
            "Now: 2026-11-27T10:00:07\n" + STATIC,
            Cause.DATE_TIME,
        ),
        ("Date: 27 Nov 2026\n" + STATIC, "Date: 28 Nov 2026\n" + STATIC, Cause.DATE_TIME),
        ("At 10:42 UTC\n" + STATIC, "At 11:03 UTC\n" + STATIC, Cause.DATE_TIME),
        (
            "Session 3f2a9c1e-1111-4d2b-9c3e-0123456789ab\n" + STATIC,
            "Session 7b1d0e2f-2222-4d2b-9c3e-0123456789ab\n" + STATIC,
            Cause.ID,
        ),
        (
            "req: deadbeefcafe0123456789\n" + STATIC,
            "req: 0123456789abcdefabcd\n" + STATIC,
            Cause.ID,
        ),
        ("session=session-91c2\n" + STATIC, "session=session-7a0f\n" + STATIC, Cause.ID),
        ("You have 12 open tasks.\n" + STATIC, "You have 3 open tasks.\n" + STATIC, Cause.NUMBER),
        (
            "Tools: search, file_read, run_tests\n" + STATIC,
            "Tools: file_read, run_tests, search\n" + STATIC,
            Cause.REORDERED,
        ),
        ("- a\n- b\n- c\n" + STATIC, "- b\n- a\n- c\n" + STATIC, Cause.REORDERED),
        (STATIC.replace("\n", "\r\n"), STATIC, Cause.WHITESPACE),
        ("Hello  there\n" + STATIC, "Hello there\n" + STATIC, Cause.WHITESPACE),
        ("User: Alice\n" + STATIC, "User: Bob\n" + STATIC, Cause.OTHER),
        # prefixcache's own layout: the slip or the reorder in the static part, a dynamic
        # tail after it that differs too (it must not hide the cause)
        (
            STATIC + "Rules:  be brief.\n" + STATIC + "Time: 10:00:01",
            STATIC + "Rules: be brief.\n" + STATIC + "Time: 10:00:07",
            Cause.WHITESPACE,
        ),
        (
            STATIC + "Rules: be brief.\r\n" + STATIC + "Session: s-1",
            STATIC + "Rules: be brief.\n" + STATIC + "Session: s-2",
            Cause.WHITESPACE,
        ),
        (
            STATIC + "\n\nRules: be brief.\n" + "User: Alice",
            STATIC + "\nRules: be brief.\n" + "User: Bob",
            Cause.WHITESPACE,
        ),
        (
            STATIC + "Tools:\n- file_read\n- run_tests\n- search\n" + STATIC + "User: Alice",
            STATIC + "Tools:\n- search\n- file_read\n- run_tests\n" + STATIC + "User: Bob",
            Cause.REORDERED,
        ),
        (
            STATIC + "- a.b\n- c:d\n" + "User: Alice",
            STATIC + "- c:d\n- a.b\n" + "User: Bob",
            Cause.REORDERED,
        ),
    ],
)
def test_cause(a: str, b: str, cause: Cause) -> None:
    found = classify(a, b, _offset(a, b))
    assert found.cause is cause, (found, a[:40], b[:40])
    assert found.ours != found.theirs or cause is Cause.WHITESPACE


def test_changed_spans_are_whole_words() -> None:
    a, b = "Now: 2026-11-27T10:00:01 go", "Now: 2026-11-27T10:00:07 go"
    found = classify(a, b, _offset(a, b))
    assert (found.ours, found.theirs) == ("2026-11-27T10:00:01", "2026-11-27T10:00:07")


def test_every_cause_has_advice() -> None:
    assert all(c.advice for c in Cause)
