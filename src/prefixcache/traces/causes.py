"""Why two prompts part: classify the first difference between a request and the one it
should have matched, from the text on both sides.

The causes, in the order they are tested (the first that fits is reported):

- ``whitespace``: only whitespace or line endings differ there (``\\r\\n`` vs ``\\n``,
  trailing spaces, an extra blank line);
- ``reordered``: the same lines, list items or messages in another order (a tool list
  built from a set or a dict);
- ``date-time``: a date or a time (the prompt lint's ``date`` and ``time`` rules);
- ``id``: a UUID, a hex id (the lint's ``uuid`` and ``hex-id`` rules) or a short token
  of letters and digits such as ``session-91c2`` or ``req_8f3a``;
- ``number``: a number (a counter, a price, a count of items);
- ``other``: any other changed text (another user's name, an edited instruction).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from ..prompts.lint import check_line


class Cause(StrEnum):
    WHITESPACE = "whitespace"
    REORDERED = "reordered"
    DATE_TIME = "date-time"
    ID = "id"
    NUMBER = "number"
    OTHER = "other"

    @property
    def advice(self) -> str:
        return _ADVICE[self]


_ADVICE = {
    Cause.WHITESPACE: "normalise whitespace and line endings (\\n) before sending",
    Cause.REORDERED: "sort the list (tools, items, keys) before rendering it",
    Cause.DATE_TIME: "move the date or time to the end of the prompt, after the static text",
    Cause.ID: "move the id (session, request, user) out of the prefix, to the end",
    Cause.NUMBER: "move the changing number out of the prefix, to the end",
    Cause.OTHER: "move the text that changes per request after the text that does not",
}

#: a token that looks like an identifier: letters and digits mixed, e.g. session-91c2
_ID_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9][A-Za-z0-9_\-.:]{3,}$")
_NUMBER = re.compile(r"^[+-]?\d[\d,._]*$")
_WORD_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/+T")
_LIST_SPLIT = re.compile(r"\s*[,;|]\s*")
_LABEL = re.compile(r"^[^,;|:\[{(]{0,80}:\s*")

#: lint rules -> causes
_LINT_CAUSE = {
    "date": Cause.DATE_TIME,
    "time": Cause.DATE_TIME,
    "uuid": Cause.ID,
    "hex-id": Cause.ID,
}


@dataclass(frozen=True)
class Difference:
    """The first difference between two texts, as seen from both sides."""

    cause: Cause
    #: the changed text in the request explained, and in the one it should have matched
    ours: str
    theirs: str


def _word_start(text: str, offset: int) -> int:
    while offset > 0 and text[offset - 1] in _WORD_CHARS:
        offset -= 1
    return offset


def _line_at(text: str, offset: int) -> tuple[str, int]:
    """The line holding ``offset`` and the offset's column in it."""
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start : end if end >= 0 else len(text)], offset - start


def _changed_spans(a: str, b: str, offset: int) -> tuple[str, str]:
    """The first changed span on each side, from the start of the word at ``offset``."""
    start = _word_start(a, offset)
    wa, wb = a[start : offset + 240], b[start : offset + 240]
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            # widen to whole words on both sides
            i0, j0 = _word_start(wa, i1), _word_start(wb, j1)
            while i2 < len(wa) and wa[i2] in _WORD_CHARS:
                i2 += 1
            while j2 < len(wb) and wb[j2] in _WORD_CHARS:
                j2 += 1
            return wa[i0:i2], wb[j0:j2]
    return wa[:40], wb[:40]


def _lint_cause(text: str, offset: int) -> Cause | None:
    """A lint finding of ``text``'s line that covers ``offset``."""
    line, column = _line_at(text, offset)
    for rule, found in check_line(line):
        cause = _LINT_CAUSE.get(rule)
        if cause is None:
            continue
        at = line.find(found)
        while at >= 0:
            if at <= column <= at + len(found):
                return cause
            at = line.find(found, at + 1)
    return None


#: lines after the break a reordered block (one item a line) may span
REORDER_WINDOW = 64


def _squash(text: str) -> str:
    return "".join(text.split())


def _line_from(text: str, offset: int) -> str:
    """The line holding ``offset`` (from its start); if that line is blank, the next line
    that is not (an extra blank line is a whitespace slip, not new content)."""
    start = text.rfind("\n", 0, offset) + 1
    while True:
        end = text.find("\n", start)
        line = text[start : end if end >= 0 else len(text)]
        if line.strip() or end < 0:
            return line
        start = end + 1


def _whitespace_only(a: str, b: str, offset: int) -> bool:
    """Only whitespace differs where the texts part: the line of the break is the same
    once spaces, tabs and ``\r`` are ignored (what comes later may differ: a dynamic tail)."""
    return _squash(_line_from(a, offset)) == _squash(_line_from(b, offset))


def _reordered(a: str, b: str, offset: int) -> bool:
    """Same lines in another order (the whole text, or a block of lines from the break's
    line on, such as a one-tool-a-line list before a dynamic tail), or the items of the
    break's line in another order."""
    if a != b and Counter(a.splitlines()) == Counter(b.splitlines()):
        return True
    first = a.count("\n", 0, offset)  # the break's line: the same index on both sides
    lines_a, lines_b = a.splitlines()[first:], b.splitlines()[first:]
    for width in range(2, min(len(lines_a), len(lines_b), REORDER_WINDOW) + 1):
        block_a, block_b = lines_a[:width], lines_b[:width]
        if block_a != block_b and Counter(block_a) == Counter(block_b):
            return True
    items_a, items_b = _items(_line_at(a, offset)[0]), _items(_line_at(b, offset)[0])
    return len(items_a) > 1 and items_a != items_b and Counter(items_a) == Counter(items_b)


def _items(line: str) -> list[str]:
    """A line's list items: after a ``label:``, split at , ; or |, brackets and quotes off."""
    label = _LABEL.match(line)
    body = line[label.end() :] if label else line
    return [item.strip("[](){}\"' ") for item in _LIST_SPLIT.split(body.strip())]


def classify(a: str, b: str, offset: int) -> Difference:
    """Why ``a`` (the request explained) parts from ``b`` at character ``offset``."""
    ours, theirs = _changed_spans(a, b, offset)
    if not ours.strip() and not theirs.strip():
        return Difference(Cause.WHITESPACE, ours, theirs)
    if _whitespace_only(a, b, offset):
        return Difference(Cause.WHITESPACE, ours, theirs)
    if _reordered(a, b, offset):
        return Difference(Cause.REORDERED, ours, theirs)
    for text in (a, b):
        cause = _lint_cause(text, offset)
        if cause is not None:
            return Difference(cause, ours, theirs)
    words = (ours.strip(), theirs.strip())
    if all(_NUMBER.match(w) for w in words if w) and any(words):
        return Difference(Cause.NUMBER, ours, theirs)
    if any(_ID_TOKEN.match(w) for w in words if w):
        return Difference(Cause.ID, ours, theirs)
    return Difference(Cause.OTHER, ours, theirs)


def classify_messages_order(ours: list[str], theirs: list[str]) -> bool:
    """The same messages (by text) in another order."""
    return ours != theirs and Counter(ours) == Counter(theirs)
