"""Prefix lint: find what would break prefix caching inside static prompts.

Each rule is a small pure function over one line (or the whole file, for line endings).
A finding prints as ``file:line: rule: text``. Dynamic templates (files whose name
ends in ``dynamic_context.md``) are skipped: they are rendered per request by design.

Every rule runs in time linear in the line's length (no regex that can backtrack over a
whole line from every position), so an 80 KB line lints in milliseconds.

Files that cannot be linted are findings too (rule ``unreadable``): not UTF-8 (UTF-16
with a byte-order mark is decoded and linted, and reported), binary, unreadable,
dangling or looping symlinks, FIFOs and other special files, folders named ``*.md``.
A lint run over paths that hold no prompt file at all raises ``NothingToLintError``.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import PromptError
from .registry import PROMPT_SUFFIX, entry_problem, os_problem

DYNAMIC_TEMPLATE_SUFFIX = "dynamic_context.md"


class NothingToLintError(PromptError):
    """The paths given to lint hold no prompt file: "clean" would be a false pass."""


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.text}"


_VOLATILE_CALL = re.compile(
    r"\b(now|utcnow|today|random|randint|choice|shuffle|uuid\d?|time|datetime|date)\s*\(",
    re.IGNORECASE,
)
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
# An ISO 8601 timestamp (2025-04-29T18:25:00, with optional fraction and zone): one
# finding, as a date, and its time part is not reported again.
_ISO_STAMP = re.compile(
    r"(?<![0-9A-Za-z])\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?(?![0-9A-Za-z])"
)
_DATE = re.compile(
    r"(?<![0-9A-Za-z])\d{4}-\d{2}-\d{2}(?![0-9A-Za-z])|"
    r"(?<![0-9A-Za-z/])\d{1,2}/\d{1,2}/\d{2,4}(?![0-9A-Za-z/])|"
    rf"\b{_MONTH} \d{{1,2}},? \d{{4}}\b|"
    rf"\b\d{{1,2}} {_MONTH} \d{{4}}\b",
    re.IGNORECASE,
)
_TIME = re.compile(
    r"(?<![0-9A-Za-z:])\d{1,2}:\d{2}(?::\d{2})?(?:\s*(?:am|pm|utc|z))?(?![0-9A-Za-z:])",
    re.IGNORECASE,
)
# Starting only where no hex digit precedes keeps these linear on long hex runs.
_UUID = re.compile(
    r"(?<![0-9A-Za-z])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9A-Za-z])",
    re.IGNORECASE,
)
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{16,}(?![0-9A-Za-z])", re.IGNORECASE)
_PHRASE = re.compile(
    r"\b(today|tonight|yesterday|tomorrow|current (?:date|time|day|year|month)|"
    r"right now|as of now|this (?:morning|afternoon|evening|week))\b",
    re.IGNORECASE,
)


def _delimited(line: str, start: str, end: str) -> Iterator[str]:
    """``start ... end`` spans, left to right, in one linear scan (no regex backtracking)."""
    i = 0
    while True:
        a = line.find(start, i)
        if a < 0:
            return
        b = line.find(end, a + len(start))
        if b < 0:
            return  # no closer anywhere to the right: no later opener can close either
        yield line[a : b + len(end)]
        i = b + len(end)


def check_line(line: str) -> Iterator[tuple[str, str]]:
    """Yield ``(rule, text)`` for one line of a static prompt."""
    expressions = list(_delimited(line, "{{", "}}"))
    for expression in expressions:
        yield "template-variable", f"{expression} is rendered per call, not at load"
    for block in (*expressions, *_delimited(line, "{%", "%}")):
        for match in _VOLATILE_CALL.finditer(block):
            yield "volatile-call", f"{match.group(0).strip()} changes between requests"
    for match in _UUID.finditer(line):
        yield "uuid", match.group(0)
    for match in _HEX_RUN.finditer(line):
        text = match.group(0)
        if any(c.isdigit() for c in text) and any(c.isalpha() for c in text):
            yield "hex-id", text
    stamps = [m.span() for m in _ISO_STAMP.finditer(line)]
    for a, b in stamps:
        yield "date", line[a:b]

    def inside_stamp(span: tuple[int, int]) -> bool:
        return any(a <= span[0] and span[1] <= b for a, b in stamps)

    for match in _DATE.finditer(line):
        if not inside_stamp(match.span()):
            yield "date", match.group(0)
    for match in _TIME.finditer(line):
        if not inside_stamp(match.span()):
            yield "time", match.group(0)
    for match in _PHRASE.finditer(line):
        yield "volatile-phrase", f"{match.group(0)!r} implies text that changes over time"
    stripped = line.rstrip("\r\n")
    if stripped != stripped.rstrip():
        yield "trailing-whitespace", repr(stripped[len(stripped.rstrip()) :])


def _ending(line: str) -> str:
    if line.endswith("\r\n"):
        return "\r\n"
    if line.endswith(("\n", "\r")):
        return line[-1]
    return ""


def _lines(text: str) -> list[str]:
    """Lines split at ``\\n``, ``\\r\\n`` and a lone ``\\r`` only (what Markdown and
    tokenizers treat as line ends), endings kept."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text)


def lint_text(text: str, path: str) -> list[Finding]:
    """All findings of one file's text."""
    findings: list[Finding] = []
    lines = _lines(text)
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


# -- files ---------------------------------------------------------------------------


def decode_prompt(data: bytes) -> tuple[str | None, str | None]:
    """``(text, problem)``: UTF-8 text; UTF-16/32 with a BOM is decoded but reported;
    binary data (NUL bytes) and other encodings are problems without text."""
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                return None, f"starts with a {encoding.upper()} byte-order mark but does not decode"
            return text, f"is {encoding.upper()}, not UTF-8: prompts must be UTF-8 (re-save it)"
    if b"\0" in data:
        return None, "is binary (holds NUL bytes), not a prompt"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
    if text.startswith("\ufeff"):
        return text[1:], "starts with a UTF-8 byte-order mark (an invisible first token)"
    return text, None


def _walk(path: Path, problems: list[Finding], seen: set[tuple[int, int]]) -> Iterator[Path]:
    """Prompt files under a folder, without following a symlink into a folder twice."""
    try:
        info = path.stat()
    except OSError as exc:
        problems.append(Finding(str(path), 0, "unreadable", os_problem(exc)))
        return
    identity = (info.st_dev, info.st_ino)
    if identity in seen:
        problems.append(
            Finding(str(path), 0, "unreadable", "is a symlink loop (folder seen before)")
        )
        return
    seen.add(identity)
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        problems.append(Finding(str(path), 0, "unreadable", os_problem(exc)))
        return
    for entry in entries:
        child = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if is_dir and not entry.name.endswith(PROMPT_SUFFIX):
            yield from _walk(child, problems, seen)
        elif entry.name.endswith(PROMPT_SUFFIX) and not entry.name.endswith(
            DYNAMIC_TEMPLATE_SUFFIX
        ):
            yield child


def iter_prompt_files(
    paths: Iterable[Path], problems: list[Finding] | None = None
) -> Iterator[Path]:
    """Markdown files under ``paths`` (files given directly are taken as they are).

    A path that does not exist raises ``FileNotFoundError``; other problems met while
    walking go to ``problems`` (when given)."""
    sink: list[Finding] = problems if problems is not None else []
    seen: set[tuple[int, int]] = set()
    for path in paths:
        if not os.path.lexists(path):
            raise FileNotFoundError(f"No such file or directory: {path}")
        try:
            is_dir = path.is_dir() and not path.name.endswith(PROMPT_SUFFIX)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(path, sink, seen)
        else:
            yield path


def lint_file(path: Path) -> list[Finding]:
    """Findings of one file; a file that cannot be linted is an ``unreadable`` finding."""
    name = str(path)
    problem = entry_problem(path)
    if problem is not None:
        return [Finding(name, 0, "unreadable", problem)]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [Finding(name, 0, "unreadable", os_problem(exc, path))]
    text, decode_problem = decode_prompt(data)
    findings = [Finding(name, 0, "unreadable", decode_problem)] if decode_problem else []
    if text is not None:
        findings += lint_text(text, name)
    return findings


def lint_paths(paths: Iterable[Path]) -> list[Finding]:
    """Findings of every prompt file under ``paths``, sorted.

    Raises ``FileNotFoundError`` for a path that does not exist and
    ``NothingToLintError`` when the paths hold no prompt file at all."""
    findings: list[Finding] = []
    paths = list(paths)
    files = list(iter_prompt_files(paths, findings))
    if not files and not findings:
        raise NothingToLintError(
            f"Nothing to lint: no *{PROMPT_SUFFIX} prompt file under "
            f"{', '.join(map(str, paths)) or 'the given paths'}."
        )
    for file in files:
        findings.extend(lint_file(file))
    return sorted(findings)
