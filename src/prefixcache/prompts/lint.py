"""Prefix lint: find what would break prefix caching inside static prompts.

Each rule is a small pure function over one line (or the whole file, for line endings).
A finding prints as ``file:line: rule: text``. Dynamic templates (files whose name
ends in ``dynamic_context.md``) are skipped: they are rendered per request by design.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DYNAMIC_TEMPLATE_SUFFIX = "dynamic_context.md"


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.text}"


_EXPRESSION = re.compile(r"\{\{.*?\}\}")
_VOLATILE_CALL = re.compile(
    r"\b(now|utcnow|today|random|randint|choice|shuffle|uuid\d?|time|datetime|date)\s*\(",
    re.IGNORECASE,
)
_STATEMENT = re.compile(r"\{%.*?%\}")
_DATE = re.compile(
    r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b|"
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d{1,2},? \d{4}\b|"
    r"\b\d{1,2} (?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d{4}\b",
    re.IGNORECASE,
)
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*(?:am|pm|utc|z)?\b", re.IGNORECASE)
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX_ID = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{16,}\b", re.IGNORECASE)
_PHRASE = re.compile(
    r"\b(today|tonight|yesterday|tomorrow|current (?:date|time|day|year|month)|"
    r"right now|as of now|this (?:morning|afternoon|evening|week))\b",
    re.IGNORECASE,
)


def check_line(line: str) -> Iterator[tuple[str, str]]:
    """Yield ``(rule, text)`` for one line of a static prompt."""
    for match in _EXPRESSION.finditer(line):
        yield "template-variable", f"{match.group(0)} is rendered per call, not at load"
    for block in (*_EXPRESSION.findall(line), *_STATEMENT.findall(line)):
        for match in _VOLATILE_CALL.finditer(block):
            yield "volatile-call", f"{match.group(0).strip()} changes between requests"
    for match in _UUID.finditer(line):
        yield "uuid", match.group(0)
    for match in _HEX_ID.finditer(line):
        if not _UUID.search(match.group(0)):
            yield "hex-id", match.group(0)
    for match in _DATE.finditer(line):
        yield "date", match.group(0)
    for match in _TIME.finditer(line):
        yield "time", match.group(0)
    for match in _PHRASE.finditer(line):
        yield "volatile-phrase", f"{match.group(0)!r} implies text that changes over time"
    stripped = line.rstrip("\r\n")
    if stripped != stripped.rstrip():
        yield "trailing-whitespace", repr(stripped[len(stripped.rstrip()) :])


def lint_text(text: str, path: str) -> list[Finding]:
    """All findings of one file's text."""
    findings: list[Finding] = []
    lines = text.splitlines(keepends=True)
    endings = {_ending(line) for line in lines} - {""}
    if len(endings) > 1:
        # the first line whose ending differs from the file's first ending
        first = next(_ending(line) for line in lines if _ending(line))
        where = next(i for i, line in enumerate(lines, 1) if _ending(line) not in ("", first))
        findings.append(
            Finding(
                path,
                where,
                "mixed-line-endings",
                f"uses {' and '.join(sorted(map(repr, endings)))}",
            )
        )
    for number, line in enumerate(lines, 1):
        findings.extend(Finding(path, number, rule, msg) for rule, msg in check_line(line))
    return findings


def _ending(line: str) -> str:
    if line.endswith("\r\n"):
        return "\r\n"
    if line.endswith(("\n", "\r")):
        return line[-1]
    return ""


def iter_prompt_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Markdown files under ``paths`` (files given directly are taken as they are)."""
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*.md")):
                if not file.name.endswith(DYNAMIC_TEMPLATE_SUFFIX):
                    yield file
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"No such file or directory: {path}")


def lint_paths(paths: Iterable[Path]) -> list[Finding]:
    findings: list[Finding] = []
    for file in iter_prompt_files(paths):
        text = file.read_bytes().decode("utf-8", errors="replace")
        findings.extend(lint_text(text, str(file)))
    return sorted(findings)
